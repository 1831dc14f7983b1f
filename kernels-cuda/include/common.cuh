// Small device helpers shared by every kernel family: bf16 <-> f32, warp and block reductions,
// typed views of the u64 device addresses in params.h.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

#include "params.h"

// Dynamic shared memory of the launch, as an array of T (the CPU emulator defines its own).
#ifndef ROOFLAB_DYNAMIC_SHARED
#define ROOFLAB_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

namespace rl {

constexpr unsigned FULL_MASK = 0xffffffffu;
constexpr int WARP = 32;

// ---- addresses ------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T* ptr(unsigned long long addr) {
    return reinterpret_cast<T*>(addr);
}

// ---- bf16 -----------------------------------------------------------------------------------

// bf16 is the top half of an f32, so widening is a shift (exact, NaN-preserving).
__device__ __forceinline__ float bf16_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ __nv_bfloat16 f32_to_bf16(float v) { return __float2bfloat16_rn(v); }

// The low and high bf16 of a 32-bit word (the low one comes first in memory).
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Eight consecutive bf16 values loaded as one 16-byte word, widened to f32.
__device__ __forceinline__ void bf16x8_to_f32(const uint4 raw, float out[8]) {
    out[0] = bf16_lo(raw.x);
    out[1] = bf16_hi(raw.x);
    out[2] = bf16_lo(raw.y);
    out[3] = bf16_hi(raw.y);
    out[4] = bf16_lo(raw.z);
    out[5] = bf16_hi(raw.z);
    out[6] = bf16_lo(raw.w);
    out[7] = bf16_hi(raw.w);
}

// Eight consecutive f32 values starting at element i of v, as two 16-byte loads (v + i 16-byte aligned).
__device__ __forceinline__ void load_f32x8(const float* v, unsigned i, float out[8]) {
    const float4 a = *reinterpret_cast<const float4*>(v + i);
    const float4 b = *reinterpret_cast<const float4*>(v + i + 4);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

// Read-only 16-byte load through the non-coherent cache (weights and KV are never written by
// the kernel that reads them).
__device__ __forceinline__ uint4 load_ro_16(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// ---- reductions ------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds one float per warp
// (at least blockDim.x / 32); the function synchronises twice, so every thread of the block must
// call it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int warps = (blockDim.x + WARP - 1) / WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by an earlier call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

__device__ __forceinline__ unsigned ceil_div(unsigned a, unsigned b) { return (a + b - 1) / b; }

}  // namespace rl

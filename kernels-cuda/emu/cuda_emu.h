// The CUDA C++ that rooflab's kernels use, on the CPU: the kernel sources in kernels-cuda/ compile
// unchanged with a host C++ compiler when this header is force-included (-include cuda_emu.h
// -DROOFLAB_EMU, with kernels-cuda/emu/shim first on the include path).
//
// Every CUDA thread is a fiber (its own stack, switched cooperatively); a block's fibers run on one
// OS thread and blocks are spread over a few OS threads. A fiber runs until it reaches a barrier, a
// warp/warpgroup-wide instruction (shuffle, ldmatrix, mma, wgmma) or a wait (mbarrier, named barrier),
// so collective instructions see every participating lane's operands at once and are computed by the
// last lane to arrive. The tensor-core, copy and synchronisation instructions are modelled from the
// PTX ISA in emu.cpp (SIMT era), hopper.cpp (mbarrier, TMA, named barriers, setmaxnreg) and wgmma.cpp
// (asynchronous warpgroup MMA); ptx.cuh maps each to its model.
//
// What this catches: index and layout errors, out-of-range shared-memory addresses, lanes that diverge
// at a warp-wide instruction, deadlocks (each waiting thread named with what it waits for), cp.async
// and TMA data read before their wait, wgmma accumulators read before or written during their
// wait_group, misused mbarriers, reads of uninitialised dynamic shared memory (it is filled with NaN
// bytes per block). What it does not: real timing, memory-model and proxy subtleties, and whether the
// hardware reads shared memory the way the ISA text says (README.md).
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// ---- language keywords -------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread; a block runs start to end on one OS thread, so it is the block's own.
#define __shared__ static thread_local
#define ROOFLAB_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::rl_emu::dynamic_shared())

// ---- vector types ------------------------------------------------------------------------------

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
// Plain (not dim3) so the thread-local `current` below needs no initialiser call on every access.
struct uint3 {
    unsigned x, y, z;
};
struct __align__(16) uint4 { unsigned x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) float2 { float x, y; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }

namespace rl_emu {

// ---- the fiber that is running --------------------------------------------------------------------

struct Lane;
struct BlockState;

// Read by threadIdx and friends; set by the scheduler before it switches to a lane.
struct Current {
    uint3 thread_idx, block_idx, block_dim, grid_dim;
    Lane* lane;
    BlockState* block;
};
extern thread_local Current current;

// ---- bit-exact conversions ---------------------------------------------------------------------

inline float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
// f32 -> bf16, round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t bf16_bits(float f) {
    const uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
inline float bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }
// f32 <-> IEEE half through the compiler's _Float16 (round to nearest even, subnormals, inf, NaN).
inline uint16_t f16_bits(float f) {
    const _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
inline float f16_to_f32(uint16_t u) {
    _Float16 h;
    memcpy(&h, &u, 2);
    return (float)h;
}

// ---- runtime services (emu.cpp) ------------------------------------------------------------------

[[noreturn]] void fail(const char* what);
void* dynamic_shared();
uint32_t shared_offset(const void* p);  // __cvta_generic_to_shared
void sync_block();
void sync_warp(unsigned mask);
uint32_t shfl(unsigned mask, uint32_t value, int src_or_xor, bool xor_mode, int width);

// Instruction models (see ptx.cuh for the instruction each one stands for).
enum class Elem { Bf16, F16 };
void cp_async(uint32_t dst, const void* src, int bytes, int src_size);
void cp_async_commit_group();
void cp_async_wait_group(int n);
void ldmatrix_x4(uint32_t r[4], uint32_t addr, bool trans);
void mma_m16n8k16(Elem elem, float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
float ex2_approx_ftz(float x);
void wgmma_fence();
void wgmma_commit_group();
void wgmma_wait_group(int n);
// wgmma.mma_async.m64n{n}k16.f32.elem.elem: A from shared memory (a_desc) or registers (a_regs),
// B from shared memory; operands after b as in the instruction (scale-d, imm-scale-a/b, imm-trans-a/b).
void wgmma(Elem elem, int n, float* d, uint64_t a_desc, const uint32_t* a_regs, uint64_t b_desc, bool scale_d,
           int scale_a, int scale_b, int trans_a, int trans_b);
// mbarrier.init / arrive[.expect_tx] (tx_bytes 0: a plain arrive) / try_wait.parity (blocks the
// thread until the phase of that parity has completed, then true).
void mbarrier_init(uint32_t bar, uint32_t count);
void mbarrier_arrive(uint32_t bar, uint32_t tx_bytes);
bool mbarrier_try_wait_parity(uint32_t bar, uint32_t parity);
// cp.async.bulk.tensor.3d...mbarrier::complete_tx::bytes with a map made by rl_emu_encode_tensor_map.
void tma_load_3d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2);
// bar.sync (wait = true) / bar.arrive (wait = false) id, threads.
void named_barrier(uint32_t id, uint32_t threads, bool wait);
// setmaxnreg.{inc,dec}.sync.aligned: checked for a valid count, no other effect.
void setmaxnreg(int n, bool inc);

}  // namespace rl_emu

// ---- built-in variables and functions -------------------------------------------------------------

#define threadIdx (::rl_emu::current.thread_idx)
#define blockIdx (::rl_emu::current.block_idx)
#define blockDim (::rl_emu::current.block_dim)
#define gridDim (::rl_emu::current.grid_dim)

inline void __syncthreads() { rl_emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { rl_emu::sync_warp(mask); }
[[noreturn]] inline void __trap() { rl_emu::fail("__trap()"); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    uint32_t u;
    memcpy(&u, &v, 4);
    u = rl_emu::shfl(mask, u, lane_mask, true, width);
    memcpy(&v, &u, 4);
    return v;
}

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    uint32_t u;
    memcpy(&u, &v, 4);
    u = rl_emu::shfl(mask, u, src_lane, false, width);
    memcpy(&v, &u, 4);
    return v;
}

template <typename T>
inline T __ldg(const T* p) {
    return *p;
}

inline size_t __cvta_generic_to_shared(const void* p) { return rl_emu::shared_offset(p); }

inline float __int_as_float(int i) { return rl_emu::bits_to_f32((uint32_t)i); }
inline float __uint_as_float(unsigned u) { return rl_emu::bits_to_f32(u); }
inline int __float_as_int(float f) { return (int)rl_emu::f32_to_bits(f); }
inline unsigned __float_as_uint(float f) { return rl_emu::f32_to_bits(f); }

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Round-to-nearest products and sums that nvcc never contracts into an FMA (nor does GCC here: x86-64's
// baseline has no FMA instruction).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

// CUDA's min/max overloads (the kernels call them unqualified on unsigned and int).
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---- 16-bit float types (what cuda_bf16.h / cuda_fp16.h provide) ---------------------------------

struct __nv_bfloat16 {
    uint16_t __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(rl_emu::bf16_bits(f)) {}
    operator float() const { return rl_emu::bf16_to_f32(__x); }
};
struct __half {
    uint16_t __x;
    __half() = default;
    __half(float f) : __x(rl_emu::f16_bits(f)) {}
    operator float() const { return rl_emu::f16_to_f32(__x); }
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return rl_emu::bf16_to_f32(h.__x); }
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __float2half(float f) { return __half(f); }
inline float __half2float(__half h) { return rl_emu::f16_to_f32(h.__x); }

// ---- math_constants.h ----------------------------------------------------------------------------

#define CUDART_INF_F __builtin_inff()
#define CUDART_NAN_F __builtin_nanf("")

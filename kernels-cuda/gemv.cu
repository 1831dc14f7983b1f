// Matrix products against a bf16 weight W [n][k] (row-major, the layout of every Llama
// projection), f32 accumulation:
//
//   gemv_bf16_naive   one thread per output row, scalar loads: the baseline. Lanes of a warp read
//                     32 different rows, so every load is a separate 32-byte sector.
//   gemv_bf16         one warp per output row, 16-byte loads (8 bf16) striding along the row so a
//                     warp reads 512 contiguous bytes per step; shuffle reduction. f32 activations.
//   gemv_bf16_bf16x   the same with bf16 activations.
//   gemm_bf16_tiled   several tokens (prefill without cuBLAS): 64x64 output tiles, 16-deep k
//                     slices staged in shared memory as f32, 4x4 outputs per thread.
//
// Every entry takes GemvParams/GemmParams by value; `accumulate` adds into y (fused residual add).
// CPU oracle: engine/src/reference/matmul.rs; wrappers: engine/src/kernels/gemv.rs.

#include "common.cuh"

using namespace rl;

constexpr int GEMV_WARPS = 8;  // rows per block of the warp-per-row kernels

extern "C" __global__ void gemv_bf16_naive(const GemvParams p) {
    const unsigned row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= p.n) return;
    const __nv_bfloat16* w = ptr<const __nv_bfloat16>(p.w) + (size_t)row * p.k;
    const float* x = ptr<const float>(p.x);
    float acc = 0.0f;
    for (unsigned i = 0; i < p.k; ++i) acc += bf16_to_f32(w[i]) * x[i];
    float* y = ptr<float>(p.y);
    y[row] = (p.accumulate ? y[row] : 0.0f) + acc;
}

// Eight activations starting at element i (16-byte aligned when k % 8 == 0).
__device__ __forceinline__ void load_x8(const float* x, unsigned i, float out[8]) { load_f32x8(x, i, out); }

__device__ __forceinline__ void load_x8(const __nv_bfloat16* x, unsigned i, float out[8]) {
    bf16x8_to_f32(*reinterpret_cast<const uint4*>(x + i), out);
}

__device__ __forceinline__ float load_x1(const float* x, unsigned i) { return x[i]; }
__device__ __forceinline__ float load_x1(const __nv_bfloat16* x, unsigned i) { return bf16_to_f32(x[i]); }

template <typename XT>
__device__ __forceinline__ void gemv_warp_per_row(const GemvParams& p) {
    const unsigned lane = threadIdx.x % WARP;
    const unsigned row = blockIdx.x * GEMV_WARPS + threadIdx.x / WARP;
    if (row >= p.n) return;
    const __nv_bfloat16* w = ptr<const __nv_bfloat16>(p.w) + (size_t)row * p.k;
    const XT* x = ptr<const XT>(p.x);
    float acc = 0.0f;
    if (p.k % 8 == 0) {
        const unsigned chunks = p.k / 8;
#pragma unroll 4
        for (unsigned c = lane; c < chunks; c += WARP) {
            float wf[8], xf[8];
            bf16x8_to_f32(load_ro_16(w + (size_t)c * 8), wf);
            load_x8(x, c * 8, xf);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc = fmaf(wf[e], xf[e], acc);
        }
    } else {
        // Rows are not 16-byte aligned: plain loads (still coalesced across the warp).
        for (unsigned i = lane; i < p.k; i += WARP) acc = fmaf(bf16_to_f32(w[i]), load_x1(x, i), acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        float* y = ptr<float>(p.y);
        y[row] = (p.accumulate ? y[row] : 0.0f) + acc;
    }
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP) gemv_bf16(const GemvParams p) {
    gemv_warp_per_row<float>(p);
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP) gemv_bf16_bf16x(const GemvParams p) {
    gemv_warp_per_row<__nv_bfloat16>(p);
}

// ---- tiled GEMM: y[m][n] = x[m][k] . w[n][k]^T ----------------------------------------------

constexpr int GEMM_BM = 64;
constexpr int GEMM_BN = 64;
constexpr int GEMM_BK = 16;
constexpr int GEMM_THREADS = 256;  // 16 x 16 threads, 4 x 4 outputs each
constexpr int GEMM_PAD = 4;        // keeps the transposed stores off one bank

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm_bf16_tiled(const GemmParams p) {
    // Tiles stored k-major so the inner loop reads 4 consecutive rows/columns per thread.
    __shared__ float xs[GEMM_BK][GEMM_BM + GEMM_PAD];
    __shared__ float ws[GEMM_BK][GEMM_BN + GEMM_PAD];
    const float* x = ptr<const float>(p.x);
    const __nv_bfloat16* w = ptr<const __nv_bfloat16>(p.w);
    const unsigned m0 = blockIdx.y * GEMM_BM;
    const unsigned n0 = blockIdx.x * GEMM_BN;
    const unsigned tid = threadIdx.x;
    const unsigned ty = tid / 16;  // output rows ty*4 .. +4
    const unsigned tx = tid % 16;  // output cols tx*4 .. +4
    float acc[4][4] = {};

    for (unsigned k0 = 0; k0 < p.k; k0 += GEMM_BK) {
        // Each tile has 64 x 16 = 1024 elements: 4 per thread; out-of-range elements are zero.
#pragma unroll
        for (int e = 0; e < (GEMM_BM * GEMM_BK) / GEMM_THREADS; ++e) {
            const unsigned idx = tid + e * GEMM_THREADS;
            const unsigned r = idx / GEMM_BK;
            const unsigned c = idx % GEMM_BK;
            const unsigned kk = k0 + c;
            const unsigned xm = m0 + r;
            const unsigned wn = n0 + r;
            xs[c][r] = (xm < p.m && kk < p.k) ? x[(size_t)xm * p.k + kk] : 0.0f;
            ws[c][r] = (wn < p.n && kk < p.k) ? bf16_to_f32(w[(size_t)wn * p.k + kk]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int c = 0; c < GEMM_BK; ++c) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = xs[c][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = ws[c][tx * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    float* y = ptr<float>(p.y);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const unsigned row = m0 + ty * 4 + i;
        if (row >= p.m) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const unsigned col = n0 + tx * 4 + j;
            if (col >= p.n) continue;
            float* out = y + (size_t)row * p.n + col;
            *out = (p.accumulate ? *out : 0.0f) + acc[i][j];
        }
    }
}

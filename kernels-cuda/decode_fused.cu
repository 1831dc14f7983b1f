// The one-token decode step with the small layers folded into the GEMVs around them, so a decoder
// layer takes 6 launches instead of 14 (the split-KV attention, its combine, and the o and down
// GEMVs of gemv.cu stay as they are):
//
//   decode_qkv_bf16      RMSNorm -> q, k, v GEMVs -> RoPE on q and k -> k and v into the bf16 KV cache
//                        (replaces rmsnorm_f32, gemv_bf16 x3, rope_f32 and kv_append_bf16)
//   decode_gate_up_bf16  RMSNorm -> gate and up GEMVs -> silu(gate) * up
//                        (replaces rmsnorm_f32, gemv_bf16 x2 and silu_mul_f32)
//   gemv_rmsnorm_bf16    RMSNorm -> one GEMV: the final norm and the output head
//                        (replaces rmsnorm_f32 and gemv_bf16)
//
// The baseline is that unfused sequence of layers.cu and gemv.cu kernels (the model runs it with
// GpuOptions::decode = Unfused), which is also how the CPU reference computes it.
//
// Why: a small model's decode step is launch-bound. SmolLM2-135M reads 270 MB of bf16 weights per
// token, 90 us at the H100's copy rate, but launches 14 kernels per layer x 30 layers; even replayed
// from a CUDA graph each costs a few microseconds of launch gap and ramp-up. See notes/decode_fused.md.
//
// How the norm folds in: rmsnorm(x) * g = r * (g . x) elementwise, with r = 1 / sqrt(mean(x^2) + eps)
// one scalar, so W * rmsnorm(x) = r * (W * (g . x)). Every warp reads all of x for its dot product
// anyway; it sums x^2 over the same loads and scales its results by r at the end. The norm costs
// FMAs and reads of g (from L1), not a launch and a round trip of x through memory.
//
// RoPE (the rotate-half form) pairs element i of a head with element i + head_dim/2, so a warp
// computes both rows of a pair and rotates them in registers before storing.
//
// CPU oracle: the unfused composition in engine/src/reference (rmsnorm_rows, matmul_nt, rope_rows,
// silu_mul); wrappers: engine/src/kernels/decode_fused.rs.

#include "common.cuh"

using namespace rl;

constexpr int FUSED_WARPS = 8;  // warps (work units) per block

// The dot products of R weight rows (bf16, k long) with g . x, and sum(x^2), each reduced over the
// warp (every lane returns the totals). With k % 8 == 0 the rows, x and g must be 16-byte aligned:
// a lane reads 16 bytes of each row per step, so the warp reads 512 contiguous bytes of each.
template <int R>
__device__ __forceinline__ void normed_dots(const __nv_bfloat16* const (&rows)[R], const float* x, const float* g,
                                            unsigned k, float (&dots)[R], float& sum_sq) {
    const unsigned lane = threadIdx.x % WARP;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    float squares = 0.0f;
    if (k % 8 == 0) {
        const unsigned chunks = k / 8;
#pragma unroll 4
        for (unsigned c = lane; c < chunks; c += WARP) {
            uint4 raw[R];
#pragma unroll
            for (int r = 0; r < R; ++r) raw[r] = load_ro_16(rows[r] + (size_t)c * 8);
            float xf[8], gf[8];
            load_f32x8(x, c * 8, xf);
            load_f32x8(g, c * 8, gf);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float wf[8];
                bf16x8_to_f32(raw[r], wf);
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[r] = fmaf(wf[e], gf[e] * xf[e], acc[r]);
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) squares = fmaf(xf[e], xf[e], squares);
        }
    } else {
        // Rows are not 16-byte aligned: plain loads (still coalesced across the warp).
        for (unsigned i = lane; i < k; i += WARP) {
            const float xi = x[i];
            const float gx = g[i] * xi;
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] = fmaf(bf16_to_f32(rows[r][i]), gx, acc[r]);
            squares = fmaf(xi, xi, squares);
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) dots[r] = warp_sum(acc[r]);
    sum_sq = warp_sum(squares);
}

// 1 / rms(x), as rmsnorm_f32 computes it.
__device__ __forceinline__ float inv_rms(float sum_sq, unsigned k, float eps) {
    return rsqrtf(sum_sq / (float)k + eps);
}

// One warp per rotary pair (rows i and i + head_dim/2 of one head): q's heads first, then k's, then
// v's (whose pairs are just two rows, not rotated).
extern "C" __global__ void __launch_bounds__(FUSED_WARPS* WARP) decode_qkv_bf16(const DecodeQkvParams p) {
    const unsigned half = p.head_dim / 2;
    const unsigned q_pairs = p.num_heads * half;
    const unsigned kv_pairs = p.num_kv_heads * half;
    const unsigned pair = blockIdx.x * FUSED_WARPS + threadIdx.x / WARP;
    if (pair >= q_pairs + 2 * kv_pairs) return;
    // The token's position: read first, so its latency hides behind the dot products.
    const unsigned pos = __ldg(ptr<const unsigned>(p.position));

    // Which product the pair belongs to (0 q, 1 k, 2 v); uniform across the warp.
    unsigned product = 0, idx = pair;
    const __nv_bfloat16* w = ptr<const __nv_bfloat16>(p.wq);
    if (idx >= q_pairs) {
        idx -= q_pairs;
        product = 1;
        w = ptr<const __nv_bfloat16>(p.wk);
        if (idx >= kv_pairs) {
            idx -= kv_pairs;
            product = 2;
            w = ptr<const __nv_bfloat16>(p.wv);
        }
    }
    const unsigned i = idx % half;
    const unsigned row = (idx / half) * p.head_dim + i;  // the pair's first row, and its output element
    const __nv_bfloat16* const rows[2] = {w + (size_t)row * p.hidden, w + (size_t)(row + half) * p.hidden};
    float dots[2], sum_sq;
    normed_dots<2>(rows, ptr<const float>(p.x), ptr<const float>(p.norm_weight), p.hidden, dots, sum_sq);
    if (threadIdx.x % WARP != 0) return;

    const float r = inv_rms(sum_sq, p.hidden, p.eps);
    float a = dots[0] * r, b = dots[1] * r;
    const bool bad = pos >= p.cache_len;  // the host checks positions; this keeps a bad one visible
    if (product < 2 && !bad) {
        const float c = ptr<const float>(p.cos)[(size_t)pos * half + i];
        const float s = ptr<const float>(p.sin)[(size_t)pos * half + i];
        const float rotated_a = a * c - b * s;
        b = b * c + a * s;
        a = rotated_a;
    }
    if (product == 0) {
        float* q = ptr<float>(p.q);
        q[row] = bad ? __int_as_float(0x7fc00000) : a;
        q[row + half] = bad ? __int_as_float(0x7fc00000) : b;
        return;
    }
    if (bad) return;
    const size_t kv_dim = (size_t)p.num_kv_heads * p.head_dim;
    __nv_bfloat16* cache = ptr<__nv_bfloat16>(product == 1 ? p.k_cache : p.v_cache) + (size_t)pos * kv_dim;
    cache[row] = f32_to_bf16(a);
    cache[row + half] = f32_to_bf16(b);
}

// One warp per row j of the FFN: gate and up share the normed input, and only silu(gate) * up leaves
// the warp.
extern "C" __global__ void __launch_bounds__(FUSED_WARPS* WARP) decode_gate_up_bf16(const DecodeGateUpParams p) {
    const unsigned j = blockIdx.x * FUSED_WARPS + threadIdx.x / WARP;
    if (j >= p.intermediate) return;
    const __nv_bfloat16* const rows[2] = {ptr<const __nv_bfloat16>(p.w_gate) + (size_t)j * p.hidden,
                                          ptr<const __nv_bfloat16>(p.w_up) + (size_t)j * p.hidden};
    float dots[2], sum_sq;
    normed_dots<2>(rows, ptr<const float>(p.x), ptr<const float>(p.norm_weight), p.hidden, dots, sum_sq);
    if (threadIdx.x % WARP != 0) return;
    const float r = inv_rms(sum_sq, p.hidden, p.eps);
    const float gate = dots[0] * r, up = dots[1] * r;
    ptr<float>(p.out)[j] = gate / (1.0f + expf(-gate)) * up;
}

// One warp per output row.
extern "C" __global__ void __launch_bounds__(FUSED_WARPS* WARP) gemv_rmsnorm_bf16(const GemvRmsNormParams p) {
    const unsigned j = blockIdx.x * FUSED_WARPS + threadIdx.x / WARP;
    if (j >= p.n) return;
    const __nv_bfloat16* const rows[1] = {ptr<const __nv_bfloat16>(p.w) + (size_t)j * p.k};
    float dots[1], sum_sq;
    normed_dots<1>(rows, ptr<const float>(p.x), ptr<const float>(p.norm_weight), p.k, dots, sum_sq);
    if (threadIdx.x % WARP != 0) return;
    ptr<float>(p.y)[j] = dots[0] * inv_rms(sum_sq, p.k, p.eps);
}

// Prefill attention (several query tokens per sequence, varlen batch) against the contiguous bf16
// KV cache, causal or not, any GQA ratio, f32 online softmax, optional LSE output.
//
//   attn_prefill_naive   one block per (query row, head, sequence), head_dim threads; a block-wide
//                        dot product per key and an online-softmax update: the baseline.
//   attn_prefill_hd64,   one block per (16-row query tile, head, sequence), 4 warps x 4 rows. Per
//   attn_prefill_hd128   32-key tile the block stages K (padded) and V in shared memory as f32;
//                        each lane scores one key for the warp's row, the warp updates the row's
//                        running (max, sum) with two shuffle reductions, and each lane accumulates
//                        head_dim/32 output dimensions. Simple and correct; a FlashAttention-style
//                        tensor-core kernel replaces it later behind the same Rust interface.
//
// CPU oracle: engine/src/reference/attention.rs; wrappers: engine/src/kernels/attention_prefill.rs.

#include <math_constants.h>

#include "common.cuh"

using namespace rl;

constexpr int PF_WARPS = 4;
constexpr int PF_THREADS = PF_WARPS * WARP;
constexpr int PF_ROWS_PER_WARP = 4;
constexpr int PF_BQ = PF_WARPS * PF_ROWS_PER_WARP;  // query rows per block
constexpr int PF_BK = WARP;                          // keys per tile: one per lane

// What one sequence of the batch looks like (all read from device buffers).
struct SeqView {
    unsigned q_begin, q_len, kv_len, q_offset, total_q;
};

__device__ __forceinline__ SeqView seq_view(const AttnPrefillParams& p, unsigned b) {
    const unsigned* cu = ptr<const unsigned>(p.cu_seqlens_q);
    SeqView s;
    s.q_begin = cu[b];
    s.q_len = cu[b + 1] - cu[b];
    s.kv_len = min(ptr<const unsigned>(p.seq_lens_k)[b], p.cache_len);
    s.q_offset = ptr<const unsigned>(p.q_offsets)[b];
    s.total_q = cu[p.batch];
    return s;
}

// Keys row `row` of the sequence may see.
__device__ __forceinline__ unsigned visible_keys(const AttnPrefillParams& p, const SeqView& s, unsigned row) {
    return p.causal ? min(s.kv_len, s.q_offset + row + 1) : s.kv_len;
}

// ---- naive baseline -------------------------------------------------------------------------

template <int D>
__device__ __forceinline__ void prefill_naive(const AttnPrefillParams& p) {
    __shared__ float scratch[32];
    const unsigned row = blockIdx.x, h = blockIdx.y, b = blockIdx.z, d = threadIdx.x;
    const SeqView s = seq_view(p, b);
    if (row >= s.q_len) return;
    const unsigned kvh = h / (p.num_heads / p.num_kv_heads);
    const size_t row_stride = (size_t)p.num_kv_heads * D;
    const __nv_bfloat16* k = ptr<const __nv_bfloat16>(p.k_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const __nv_bfloat16* v = ptr<const __nv_bfloat16>(p.v_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const size_t q_index = ((size_t)(s.q_begin + row) * p.num_heads + h) * D + d;
    const float q = ptr<const float>(p.q)[q_index] * p.scale;
    const unsigned n_keys = visible_keys(p, s, row);
    float m = -CUDART_INF_F, l = 0.0f, acc = 0.0f;
    for (unsigned t = 0; t < n_keys; ++t) {
        const float score = block_sum(q * bf16_to_f32(k[t * row_stride + d]), scratch);
        const float m_new = fmaxf(m, score);
        const float alpha = expf(m - m_new);
        const float w = expf(score - m_new);
        l = l * alpha + w;
        acc = acc * alpha + w * bf16_to_f32(v[t * row_stride + d]);
        m = m_new;
    }
    ptr<float>(p.out)[q_index] = l > 0.0f ? acc / l : 0.0f;
    if (p.lse && d == 0) ptr<float>(p.lse)[(size_t)h * s.total_q + s.q_begin + row] = l > 0.0f ? m + logf(l) : -CUDART_INF_F;
}

// grid (max q_len, num_heads, batch), block head_dim threads.
extern "C" __global__ void attn_prefill_naive(const AttnPrefillParams p) {
    if (p.head_dim == 64) prefill_naive<64>(p);
    else if (p.head_dim == 128) prefill_naive<128>(p);
}

// ---- tiled kernel ---------------------------------------------------------------------------

template <int D>
__device__ __forceinline__ void prefill_tiled(const AttnPrefillParams& p) {
    constexpr int DPL = D / WARP;  // output dimensions per lane
    __shared__ float qs[PF_BQ][D];
    __shared__ float ks[PF_BK][D + 1];  // +1: lane j reads row j, so rows must not share a bank
    __shared__ float vs[PF_BK][D];

    const unsigned h = blockIdx.y, b = blockIdx.z;
    const unsigned tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const SeqView s = seq_view(p, b);
    const unsigned row0 = blockIdx.x * PF_BQ;
    if (row0 >= s.q_len) return;  // whole block, before any barrier
    const unsigned kvh = h / (p.num_heads / p.num_kv_heads);
    const size_t row_stride = (size_t)p.num_kv_heads * D;
    const __nv_bfloat16* k = ptr<const __nv_bfloat16>(p.k_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const __nv_bfloat16* v = ptr<const __nv_bfloat16>(p.v_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const float* q = ptr<const float>(p.q);

    for (unsigned idx = tid; idx < PF_BQ * D; idx += PF_THREADS) {
        const unsigned r = idx / D, d = idx % D;
        const unsigned row = row0 + r;
        qs[r][d] = row < s.q_len ? q[((size_t)(s.q_begin + row) * p.num_heads + h) * D + d] * p.scale : 0.0f;
    }
    const unsigned last_row = min(row0 + PF_BQ, s.q_len) - 1;
    const unsigned kv_end = visible_keys(p, s, last_row);  // keys any row of this block sees

    float m[PF_ROWS_PER_WARP], l[PF_ROWS_PER_WARP], acc[PF_ROWS_PER_WARP][DPL];
#pragma unroll
    for (int r = 0; r < PF_ROWS_PER_WARP; ++r) {
        m[r] = -CUDART_INF_F;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[r][i] = 0.0f;
    }

    for (unsigned t0 = 0; t0 < kv_end; t0 += PF_BK) {
        __syncthreads();  // previous tile fully consumed (and qs written, on the first pass)
        for (unsigned idx = tid; idx < PF_BK * D; idx += PF_THREADS) {
            const unsigned j = idx / D, d = idx % D;
            const unsigned key = t0 + j;
            const bool ok = key < kv_end;
            ks[j][d] = ok ? bf16_to_f32(k[key * row_stride + d]) : 0.0f;
            vs[j][d] = ok ? bf16_to_f32(v[key * row_stride + d]) : 0.0f;
        }
        __syncthreads();

#pragma unroll
        for (int r = 0; r < PF_ROWS_PER_WARP; ++r) {
            const unsigned local = warp * PF_ROWS_PER_WARP + r;
            const unsigned row = row0 + local;
            if (row >= s.q_len) continue;  // warp-uniform
            const unsigned key = t0 + lane;
            const bool valid = key < visible_keys(p, s, row);
            float score = -CUDART_INF_F;
            if (valid) {
                float dot = 0.0f;
#pragma unroll 16
                for (int d = 0; d < D; ++d) dot = fmaf(qs[local][d], ks[lane][d], dot);
                score = dot;
            }
            const float tile_max = warp_max(score);
            if (tile_max == -CUDART_INF_F) continue;  // row sees no key of this tile (warp-uniform)
            const float m_new = fmaxf(m[r], tile_max);
            const float alpha = expf(m[r] - m_new);
            const float prob = valid ? expf(score - m_new) : 0.0f;
            l[r] = l[r] * alpha + warp_sum(prob);
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < DPL; ++i) acc[r][i] *= alpha;
#pragma unroll 8
            for (int j = 0; j < PF_BK; ++j) {
                const float pj = __shfl_sync(FULL_MASK, prob, j);
#pragma unroll
                for (int i = 0; i < DPL; ++i) acc[r][i] = fmaf(pj, vs[j][lane + i * WARP], acc[r][i]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < PF_ROWS_PER_WARP; ++r) {
        const unsigned row = row0 + warp * PF_ROWS_PER_WARP + r;
        if (row >= s.q_len) continue;
        float* out = ptr<float>(p.out) + ((size_t)(s.q_begin + row) * p.num_heads + h) * D;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; ++i) out[lane + i * WARP] = acc[r][i] * inv;
        if (p.lse && lane == 0)
            ptr<float>(p.lse)[(size_t)h * s.total_q + s.q_begin + row] = l[r] > 0.0f ? m[r] + logf(l[r]) : -CUDART_INF_F;
    }
}

// grid (ceil(max q_len / 16), num_heads, batch), block 128 threads. One entry per head_dim:
// shared arrays of both sizes in one kernel would add up past the 48 KB static limit.
extern "C" __global__ void __launch_bounds__(PF_THREADS) attn_prefill_hd64(const AttnPrefillParams p) {
    if (p.head_dim == 64) prefill_tiled<64>(p);
}

extern "C" __global__ void __launch_bounds__(PF_THREADS) attn_prefill_hd128(const AttnPrefillParams p) {
    if (p.head_dim == 128) prefill_tiled<128>(p);
}

// Decode attention: one query token per sequence against its contiguous bf16 KV cache, f32 softmax.
//
//   attn_decode_naive        one block per (query head, sequence), head_dim threads; for every key
//                            a block-wide dot product (two barriers) and an online-softmax update.
//                            Reads the KV of a head once per QUERY head (GQA re-reads it).
//   attn_decode_split_hd64,  split-KV ("flash decoding"): grid (num_splits, kv head, sequence).
//   attn_decode_split_hd128  Each block takes one slice of the context and ALL query heads of its
//                            KV group, so K and V are read once per KV head. Per 64-key tile:
//                            threads 0..63 score one key each against every query head of the
//                            group while threads 64..127 stage the tile's V rows in shared memory;
//                            one warp per head updates the running max/sum; every thread then
//                            accumulates its (head, dim) outputs.
//   attn_decode_combine      merges the splits of each (head, sequence) by their (max, sum).
//
// The slice length is computed on the device from seq_lens (rounded up to the tile), so the launch
// shape depends only on num_splits and a captured CUDA graph stays valid as the context grows.
// CPU oracle: engine/src/reference/attention.rs; wrappers: engine/src/kernels/attention_decode.rs.

#include <math_constants.h>

#include "common.cuh"

using namespace rl;

constexpr int DEC_THREADS = 128;
constexpr int DEC_WARPS = DEC_THREADS / WARP;
constexpr int DEC_TILE = 64;    // keys per tile
constexpr int MAX_GROUP = 16;   // query heads per KV head (host rejects more)

// ---- naive baseline -------------------------------------------------------------------------

template <int D>
__device__ __forceinline__ void decode_naive(const AttnDecodeParams& p) {
    __shared__ float scratch[32];
    const unsigned h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
    const unsigned group = p.num_heads / p.num_kv_heads;
    const unsigned kvh = h / group;
    const unsigned seq_len = min(ptr<const unsigned>(p.seq_lens)[b], p.cache_len);
    const size_t row_stride = (size_t)p.num_kv_heads * D;
    const __nv_bfloat16* k = ptr<const __nv_bfloat16>(p.k_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const __nv_bfloat16* v = ptr<const __nv_bfloat16>(p.v_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const float q = ptr<const float>(p.q)[((size_t)b * p.num_heads + h) * D + d] * p.scale;
    float m = -CUDART_INF_F, l = 0.0f, acc = 0.0f;
    for (unsigned t = 0; t < seq_len; ++t) {
        const float s = block_sum(q * bf16_to_f32(k[t * row_stride + d]), scratch);
        const float m_new = fmaxf(m, s);
        const float alpha = expf(m - m_new);
        const float w = expf(s - m_new);
        l = l * alpha + w;
        acc = acc * alpha + w * bf16_to_f32(v[t * row_stride + d]);
        m = m_new;
    }
    ptr<float>(p.out)[((size_t)b * p.num_heads + h) * D + d] = l > 0.0f ? acc / l : 0.0f;
}

// grid (num_heads, batch), block head_dim threads.
extern "C" __global__ void attn_decode_naive(const AttnDecodeParams p) {
    if (p.head_dim == 64) decode_naive<64>(p);
    else if (p.head_dim == 128) decode_naive<128>(p);
}

// ---- split-KV kernel ------------------------------------------------------------------------

template <int D>
__device__ __forceinline__ void decode_split(const AttnDecodeParams& p) {
    constexpr int ACC_PER_THREAD = MAX_GROUP * D / DEC_THREADS;  // (head, dim) outputs per thread
    __shared__ float qs[MAX_GROUP][D];              // scaled queries of the group
    __shared__ float scores[MAX_GROUP][DEC_TILE];   // scores, then probabilities, of one tile
    __shared__ __align__(16) __nv_bfloat16 vs[DEC_TILE][D];
    __shared__ float m_s[MAX_GROUP], l_s[MAX_GROUP], alpha_s[MAX_GROUP];

    const unsigned split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const unsigned tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const unsigned group = p.num_heads / p.num_kv_heads;
    const unsigned seq_len = min(ptr<const unsigned>(p.seq_lens)[b], p.cache_len);
    const unsigned chunk = ceil_div(ceil_div(seq_len, p.num_splits), DEC_TILE) * DEC_TILE;
    const unsigned begin = min(split * chunk, seq_len);
    const unsigned end = min(begin + chunk, seq_len);
    const size_t row_stride = (size_t)p.num_kv_heads * D;
    const __nv_bfloat16* k_base = ptr<const __nv_bfloat16>(p.k_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const __nv_bfloat16* v_base = ptr<const __nv_bfloat16>(p.v_cache) + (size_t)b * p.cache_len * row_stride + kvh * D;
    const float* q = ptr<const float>(p.q) + ((size_t)b * p.num_heads + kvh * group) * D;

    for (unsigned idx = tid; idx < group * D; idx += DEC_THREADS) qs[idx / D][idx % D] = q[idx] * p.scale;
    if (tid < group) {
        m_s[tid] = -CUDART_INF_F;
        l_s[tid] = 0.0f;
    }
    float acc[ACC_PER_THREAD];
#pragma unroll
    for (int r = 0; r < ACC_PER_THREAD; ++r) acc[r] = 0.0f;
    __syncthreads();

    for (unsigned t0 = begin; t0 < end; t0 += DEC_TILE) {
        if (tid < DEC_TILE) {
            // Score key t0 + tid against every query head of the group.
            const unsigned key = t0 + tid;
            float s[MAX_GROUP];
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) s[g] = 0.0f;
            if (key < end) {
                const __nv_bfloat16* krow = k_base + (size_t)key * row_stride;
#pragma unroll 2
                for (int c = 0; c < D / 8; ++c) {
                    float kf[8];
                    bf16x8_to_f32(load_ro_16(krow + c * 8), kf);
#pragma unroll
                    for (int g = 0; g < MAX_GROUP; ++g) {
                        if (g < (int)group) {
#pragma unroll
                            for (int e = 0; e < 8; ++e) s[g] = fmaf(qs[g][c * 8 + e], kf[e], s[g]);
                        }
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g)
                if (g < (int)group) scores[g][tid] = key < end ? s[g] : -CUDART_INF_F;
        } else {
            // Stage V row t0 + j (zeros past the end: their probability is 0, and 0 * NaN is NaN).
            const unsigned j = tid - DEC_TILE;
            const unsigned key = t0 + j;
            uint4* dst = reinterpret_cast<uint4*>(&vs[j][0]);
            const __nv_bfloat16* vrow = v_base + (size_t)key * row_stride;
#pragma unroll
            for (int c = 0; c < D / 8; ++c) dst[c] = key < end ? load_ro_16(vrow + c * 8) : make_uint4(0, 0, 0, 0);
        }
        __syncthreads();

        // One warp per query head: tile max, probabilities, running (max, sum). Key t0 is always
        // valid, so the new max is finite.
        for (unsigned g = warp; g < group; g += DEC_WARPS) {
            const float s0 = scores[g][lane];
            const float s1 = scores[g][lane + WARP];
            const float m_old = m_s[g];
            const float m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
            const float p0 = expf(s0 - m_new);
            const float p1 = expf(s1 - m_new);
            scores[g][lane] = p0;
            scores[g][lane + WARP] = p1;
            const float tile_sum = warp_sum(p0 + p1);
            if (lane == 0) {
                const float alpha = expf(m_old - m_new);
                alpha_s[g] = alpha;
                l_s[g] = l_s[g] * alpha + tile_sum;
                m_s[g] = m_new;
            }
        }
        __syncthreads();

        // Thread owns outputs idx = tid + r * DEC_THREADS, i.e. (head idx / D, dim idx % D).
#pragma unroll
        for (int r = 0; r < ACC_PER_THREAD; ++r) {
            const unsigned idx = tid + r * DEC_THREADS;
            const unsigned g = idx / D, d = idx % D;
            if (g < group) {
                float a = acc[r] * alpha_s[g];
#pragma unroll 8
                for (int j = 0; j < DEC_TILE; ++j) a = fmaf(scores[g][j], bf16_to_f32(vs[j][d]), a);
                acc[r] = a;
            }
        }
        __syncthreads();  // scores and vs are overwritten by the next tile
    }

    const size_t head0 = (size_t)b * p.num_heads + kvh * group;
#pragma unroll
    for (int r = 0; r < ACC_PER_THREAD; ++r) {
        const unsigned idx = tid + r * DEC_THREADS;
        const unsigned g = idx / D, d = idx % D;
        if (g < group) {
            const float l = l_s[g];
            ptr<float>(p.partial_out)[((head0 + g) * p.num_splits + split) * D + d] = l > 0.0f ? acc[r] / l : 0.0f;
        }
    }
    if (tid < group) {
        float* ml = ptr<float>(p.partial_ml) + ((head0 + tid) * p.num_splits + split) * 2;
        ml[0] = m_s[tid];
        ml[1] = l_s[tid];
    }
}

// grid (num_splits, num_kv_heads, batch), block DEC_THREADS. One entry per head_dim: shared
// arrays of both sizes in one kernel would add up past the 48 KB static limit.
extern "C" __global__ void __launch_bounds__(DEC_THREADS, 4) attn_decode_split_hd64(const AttnDecodeParams p) {
    if (p.head_dim == 64) decode_split<64>(p);
}

extern "C" __global__ void __launch_bounds__(DEC_THREADS, 4) attn_decode_split_hd128(const AttnDecodeParams p) {
    if (p.head_dim == 128) decode_split<128>(p);
}

// grid (num_heads, batch), block head_dim threads. Empty splits carry (max -inf, sum 0) and
// weigh nothing.
extern "C" __global__ void attn_decode_combine(const AttnDecodeParams p) {
    const unsigned h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
    if (d >= p.head_dim) return;
    const size_t head = (size_t)b * p.num_heads + h;
    const float* ml = ptr<const float>(p.partial_ml) + head * p.num_splits * 2;
    const float* part = ptr<const float>(p.partial_out) + head * p.num_splits * p.head_dim;
    float m = -CUDART_INF_F;
    for (unsigned s = 0; s < p.num_splits; ++s) m = fmaxf(m, ml[2 * s]);
    float total = 0.0f, acc = 0.0f;
    if (m > -CUDART_INF_F) {
        for (unsigned s = 0; s < p.num_splits; ++s) {
            const float w = ml[2 * s + 1] * expf(ml[2 * s] - m);
            total += w;
            acc += w * part[(size_t)s * p.head_dim + d];
        }
    }
    ptr<float>(p.out)[head * p.head_dim + d] = total > 0.0f ? acc / total : 0.0f;
}

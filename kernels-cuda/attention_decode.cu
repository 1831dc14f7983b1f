// Decode attention: one query token per sequence against its contiguous bf16 KV cache, f32 softmax.
//
//   attn_decode_naive        one block per (query head, sequence), head_dim threads; for every key
//                            a block-wide dot product (two barriers) and an online-softmax update.
//                            Reads the KV of a head once per QUERY head (GQA re-reads it).
//   attn_decode_split_hd64,  split-KV ("flash decoding"): grid (num_splits, kv head, sequence).
//   attn_decode_split_hd128  Each block takes one slice of the context and ALL query heads of its
//                            KV group, so K and V are read once per KV head. 32-key K and V tiles
//                            go through cp.async into two shared-memory stages, the next tile's
//                            copy in flight while this one is computed: 4 lanes score each key
//                            against every query head of the group, one warp per head updates the
//                            running max/sum, every thread accumulates its (head, dim) outputs.
//   attn_decode_combine      merges the splits of each (head, sequence) by their (max, sum).
//
// The slice length is computed on the device from seq_lens (rounded up to the tile), so the launch
// shape depends only on num_splits and a captured CUDA graph stays valid as the context grows.
// CPU oracle: engine/src/reference/attention.rs; wrappers: engine/src/kernels/attention_decode.rs.

#include <math_constants.h>

#include "common.cuh"
#include "ptx.cuh"

using namespace rl;

constexpr int DEC_THREADS = 128;
constexpr int DEC_WARPS = DEC_THREADS / WARP;
constexpr int DEC_TILE = 32;    // keys per tile of the split kernel: 8 per warp
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

// The split kernel's dynamic shared memory (the host's split_shared_bytes: 45248 bytes at D = 128,
// 24768 at D = 64, under the 48 KB needing no opt-in). K and V of one tile, two stages; a row is
// padded by 8 elements so consecutive rows start 16 bytes apart modulo 128: the 8 lanes of a
// quarter-warp (one 16-byte load phase) read 8 different rows at the same column without a bank
// conflict.
constexpr int KV_PAD = 8;

template <int D>
struct SplitShared {
    float qs[MAX_GROUP][D];             // scaled queries of the group
    float probs[MAX_GROUP][DEC_TILE];   // scores, then probabilities, of one tile
    float m[MAX_GROUP], l[MAX_GROUP], alpha[MAX_GROUP];
    __align__(16) __nv_bfloat16 k[2][DEC_TILE][D + KV_PAD];
    __align__(16) __nv_bfloat16 v[2][DEC_TILE][D + KV_PAD];
};

// cp.async of keys t0 .. t0 + DEC_TILE - 1 of K and V into `stage` (16-byte chunks, consecutive
// threads along a row); rows at or past `end` are zero-filled without being read (an unwritten cache
// tail may hold NaN, and 0 * NaN is NaN).
template <int D>
__device__ __forceinline__ void load_kv_tile(SplitShared<D>& sm, int stage, const __nv_bfloat16* k_base,
                                             const __nv_bfloat16* v_base, size_t row_stride, unsigned t0,
                                             unsigned end, unsigned tid) {
    constexpr int CHUNKS = D / 8;
    static_assert(DEC_TILE * CHUNKS % DEC_THREADS == 0, "the tile must split evenly over the threads");
#pragma unroll
    for (int n = 0; n < DEC_TILE * CHUNKS / DEC_THREADS; ++n) {
        const unsigned i = tid + n * DEC_THREADS, r = i / CHUNKS, c = i % CHUNKS, key = t0 + r;
        const bool ok = key < end;
        const size_t off = ok ? (size_t)key * row_stride + c * 8 : 0;
        ptx::cp_async_cg_16(ptx::shared_addr(&sm.k[stage][r][c * 8]), k_base + off, ok ? 16 : 0);
        ptx::cp_async_cg_16(ptx::shared_addr(&sm.v[stage][r][c * 8]), v_base + off, ok ? 16 : 0);
    }
    ptx::cp_async_commit_group();
}

template <int D>
__device__ __forceinline__ void decode_split(const AttnDecodeParams& p) {
    constexpr int ACC_PER_THREAD = MAX_GROUP * D / DEC_THREADS;  // (head, dim) outputs per thread
    // Scoring: 4 lanes per key, lane / 8 picks every 4th 16-byte chunk of the row, so a quarter-warp
    // reads 8 rows at one column (conflict-free) and one query address (a broadcast).
    constexpr int CHUNKS_PER_LANE = D / 8 / 4;
    ROOFLAB_DYNAMIC_SHARED(uint4, smem_raw);
    SplitShared<D>& sm = *reinterpret_cast<SplitShared<D>*>(smem_raw);

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

    if (begin < end) load_kv_tile<D>(sm, 0, k_base, v_base, row_stride, begin, end, tid);
    for (unsigned idx = tid; idx < group * D; idx += DEC_THREADS) sm.qs[idx / D][idx % D] = q[idx] * p.scale;
    if (tid < group) {
        sm.m[tid] = -CUDART_INF_F;
        sm.l[tid] = 0.0f;
    }
    float acc[ACC_PER_THREAD];
#pragma unroll
    for (int r = 0; r < ACC_PER_THREAD; ++r) acc[r] = 0.0f;

    const unsigned my_key = warp * 8 + lane % 8, quarter = lane / 8;
    for (unsigned t0 = begin, stage = 0; t0 < end; t0 += DEC_TILE, stage ^= 1) {
        // Tile t0 has landed for every thread, and every thread is done with the other stage (the
        // previous tile's P V): the next tile goes there while this one is computed.
        ptx::cp_async_wait_group<0>();
        __syncthreads();
        if (t0 + DEC_TILE < end) load_kv_tile<D>(sm, stage ^ 1, k_base, v_base, row_stride, t0 + DEC_TILE, end, tid);

        float s[MAX_GROUP];
#pragma unroll
        for (int g = 0; g < MAX_GROUP; ++g) s[g] = 0.0f;
#pragma unroll
        for (int i = 0; i < CHUNKS_PER_LANE; ++i) {
            const int c = i * 4 + quarter;
            float kf[8];
            bf16x8_to_f32(*reinterpret_cast<const uint4*>(&sm.k[stage][my_key][c * 8]), kf);
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g)
                if (g < (int)group)
#pragma unroll
                    for (int e = 0; e < 8; ++e) s[g] = fmaf(sm.qs[g][c * 8 + e], kf[e], s[g]);
        }
#pragma unroll
        for (int g = 0; g < MAX_GROUP; ++g) {
            if (g < (int)group) {
                s[g] += __shfl_xor_sync(FULL_MASK, s[g], 8);
                s[g] += __shfl_xor_sync(FULL_MASK, s[g], 16);
                if (quarter == 0) sm.probs[g][my_key] = t0 + my_key < end ? s[g] : -CUDART_INF_F;
            }
        }
        __syncthreads();

        // One warp per query head: tile max, probabilities, running (max, sum). Key t0 is always
        // valid, so the new max is finite.
        for (unsigned g = warp; g < group; g += DEC_WARPS) {
            const float score = sm.probs[g][lane];
            const float m_old = sm.m[g];
            const float m_new = fmaxf(m_old, warp_max(score));
            const float prob = expf(score - m_new);
            sm.probs[g][lane] = prob;
            const float tile_sum = warp_sum(prob);
            if (lane == 0) {
                const float alpha = expf(m_old - m_new);
                sm.alpha[g] = alpha;
                sm.l[g] = sm.l[g] * alpha + tile_sum;
                sm.m[g] = m_new;
            }
        }
        __syncthreads();

        // Thread owns outputs idx = tid + r * DEC_THREADS, i.e. (head idx / D, dim idx % D).
#pragma unroll
        for (int r = 0; r < ACC_PER_THREAD; ++r) {
            const unsigned idx = tid + r * DEC_THREADS;
            const unsigned g = idx / D, d = idx % D;
            if (g < group) {
                float a = acc[r] * sm.alpha[g];
#pragma unroll 8
                for (int j = 0; j < DEC_TILE; ++j) a = fmaf(sm.probs[g][j], bf16_to_f32(sm.v[stage][j][d]), a);
                acc[r] = a;
            }
        }
    }
    __syncthreads();  // m and l come from other threads (the last softmax, or the initial values)

    const size_t head0 = (size_t)b * p.num_heads + kvh * group;
#pragma unroll
    for (int r = 0; r < ACC_PER_THREAD; ++r) {
        const unsigned idx = tid + r * DEC_THREADS;
        const unsigned g = idx / D, d = idx % D;
        if (g < group) {
            const float l = sm.l[g];
            ptr<float>(p.partial_out)[((head0 + g) * p.num_splits + split) * D + d] = l > 0.0f ? acc[r] / l : 0.0f;
        }
    }
    if (tid < group) {
        float* ml = ptr<float>(p.partial_ml) + ((head0 + tid) * p.num_splits + split) * 2;
        ml[0] = sm.m[tid];
        ml[1] = sm.l[tid];
    }
}

// grid (num_splits, num_kv_heads, batch), block DEC_THREADS, dynamic shared memory
// sizeof(SplitShared<D>). One entry per head_dim.
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

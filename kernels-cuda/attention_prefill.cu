// Prefill attention: several query tokens per sequence, varlen batch, causal or not, any GQA ratio,
// a query offset into the keys (chunked prefill), f32 softmax, optional LSE output. Numbered from
// naive to fast, each version beside the one it improves (llm.c style); all take AttnPrefillParams.
//
//   v0a  attn_prefill_naive_scores   S = scale * Q K^T written to global memory (f32), one thread per
//        attn_prefill_naive_softmax  score; a block-wide softmax per row in place (and the LSE); one
//        attn_prefill_naive_pv       thread per output element for P V. Three launches, S*S*H*4 bytes
//                                    of scratch: the textbook baseline.
//   v0b  attn_prefill_naive_row      one thread per query row: online softmax over every key, q and
//                                    the accumulator in shared memory (so nothing spills).
//   v1   attn_prefill_tiled_hd{64,128}  16 query rows per block, 32-key tiles staged as f32 in shared
//                                    memory, one lane per key, online softmax with warp shuffles (SIMT,
//                                    no tensor cores).
//   v2   attn_prefill_flash_{bf16,f16}_hd{64,128}  FlashAttention-2 structure on mma.sync: 128 query
//                                    rows per block (4 warps x 32 rows), K/V tiles of BN keys through
//                                    cp.async into padded shared memory, ldmatrix (.trans for V) feeding
//                                    m16n8k16 MMAs with f32 accumulators, the online softmax in registers
//                                    in log2 space, P kept in registers as the A operand of P V, causal
//                                    tiles past the diagonal skipped and only the boundary tiles masked.
//   v3   attn_prefill_wgmma_{bf16,f16}_hd{64,128}  sm_90a: 2 warpgroups, wgmma from shared memory
//                                    (no-swizzle layout), K/V double-buffered through cp.async.
//   v4   attn_prefill_tma_{bf16,f16}_hd{64,128}  sm_90a, FlashAttention-3 structure: a producer
//                                    warpgroup loads 128-byte-swizzled tiles with TMA into an
//                                    mbarrier ring, two consumer warpgroups run wgmma and the softmax in
//                                    ping-pong (named barriers), setmaxnreg gives them the registers.
//
// The element type of q/k/v/out (bf16 or f16) is a template parameter of v2-v4 (one entry each) and a
// run-time field (p.elem) of the others; q may be f32 (p.q_f32) and out f32 (p.out_f32), which is
// what the model's prefill uses (f32 activations, bf16 KV cache) without extra cast kernels.
//
// CPU oracle: engine/src/reference/attention.rs; wrappers: engine/src/kernels/attention_prefill.rs;
// design, FLOP and byte counts and measurements: kernels-cuda/notes/attention_prefill.md.

#include <cuda_fp16.h>
#include <math_constants.h>

#include "common.cuh"
#include "ptx.cuh"

using namespace rl;

constexpr unsigned ELEM_F16 = 1;  // p.elem: 0 = bf16, 1 = f16
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

// ---- the batch ------------------------------------------------------------------------------

// What one sequence of the batch looks like (read from the device buffers of the params).
struct Seq {
    unsigned q_begin;   // first row of q/out
    unsigned q_len;     // query rows
    unsigned total_q;   // rows of q/out in the whole batch (the LSE row length)
    unsigned k_begin;   // first row of k/v
    unsigned kv_len;    // keys the sequence has
    unsigned q_offset;  // position of its first query among its keys
};

__device__ __forceinline__ Seq seq_view(const AttnPrefillParams& p, unsigned b) {
    const unsigned* cu = ptr<const unsigned>(p.cu_seqlens_q);
    Seq s;
    s.q_begin = cu[b];
    s.q_len = cu[b + 1] - cu[b];
    s.total_q = cu[p.batch];
    if (p.cu_seqlens_k) {
        const unsigned* ck = ptr<const unsigned>(p.cu_seqlens_k);
        s.k_begin = ck[b];
        s.kv_len = ck[b + 1] - ck[b];
    } else {
        s.k_begin = b * p.cache_len;
        s.kv_len = min(ptr<const unsigned>(p.seq_lens_k)[b], p.cache_len);
    }
    s.q_offset = p.q_offsets ? ptr<const unsigned>(p.q_offsets)[b] : 0u;
    return s;
}

// Keys query row `row` of the sequence sees: 0 .. visible_keys - 1.
__device__ __forceinline__ unsigned visible_keys(const AttnPrefillParams& p, const Seq& s, unsigned row) {
    return p.causal ? min(s.kv_len, s.q_offset + row + 1) : s.kv_len;
}

__device__ __forceinline__ unsigned kv_head_of(const AttnPrefillParams& p, unsigned h) {
    return h / (p.num_heads / p.num_kv_heads);
}

// The query rows one block of a flash kernel (v2-v4) owns, BM rows of one (sequence, head) with the
// sequence in grid z, and the BN-key tiles it visits.
struct BlockTiles {
    Seq s;
    unsigned m0;         // the block's first query row in the sequence
    unsigned rows_here;  // its query rows (<= BM); 0: the block lies past the sequence and exits
    unsigned n_tiles;    // key tiles any of its rows sees
    unsigned mask_from;  // the first tile that needs a per-element mask
};

template <int BM, int BN>
__device__ __forceinline__ BlockTiles block_tiles(const AttnPrefillParams& p) {
    BlockTiles t;
    t.s = seq_view(p, blockIdx.z);
    // Causal blocks further down the sequence have more tiles: start those first.
    t.m0 = (p.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * BM;
    t.rows_here = t.m0 < t.s.q_len ? min((unsigned)BM, t.s.q_len - t.m0) : 0u;
    unsigned n_end = t.s.kv_len;
    t.mask_from = t.s.kv_len / BN;  // tiles from here hold keys >= kv_len
    if (p.causal) {
        n_end = min(n_end, t.s.q_offset + t.m0 + t.rows_here);
        t.mask_from = min(t.mask_from, (t.s.q_offset + t.m0 + 1) / BN);  // tiles from here cross the diagonal
    }
    t.n_tiles = (n_end + BN - 1) / BN;
    return t;
}

// ---- element access for the run-time typed versions (v0, v1) ------------------------------

__device__ __forceinline__ float load_elem(unsigned long long base, size_t i, unsigned elem) {
    if (elem == ELEM_F16) return __half2float(ptr<const __half>(base)[i]);
    return __bfloat162float(ptr<const __nv_bfloat16>(base)[i]);
}

__device__ __forceinline__ float load_q(const AttnPrefillParams& p, size_t i) {
    return p.q_f32 ? ptr<const float>(p.q)[i] : load_elem(p.q, i, p.elem);
}

__device__ __forceinline__ void store_out(const AttnPrefillParams& p, size_t i, float v) {
    if (p.out_f32) ptr<float>(p.out)[i] = v;
    else if (p.elem == ELEM_F16) ptr<__half>(p.out)[i] = __float2half_rn(v);
    else ptr<__nv_bfloat16>(p.out)[i] = __float2bfloat16_rn(v);
}

__device__ __forceinline__ void store_lse(const AttnPrefillParams& p, const Seq& s, unsigned h, unsigned row, float v) {
    if (p.lse) ptr<float>(p.lse)[(size_t)h * s.total_q + s.q_begin + row] = v;
}

// ---- v0a: materialised scores -------------------------------------------------------------

// scores[(q_row * H + h) * max_kv_len + j] = scale * q . k_j for the visible keys j of each row.
// grid (ceil(max_kv_len / 128), max_q_len, batch * H), block 128 threads.
extern "C" __global__ void attn_prefill_naive_scores(const AttnPrefillParams p) {
    const unsigned j = blockIdx.x * blockDim.x + threadIdx.x, row = blockIdx.y;
    const unsigned h = blockIdx.z % p.num_heads, b = blockIdx.z / p.num_heads;
    const Seq s = seq_view(p, b);
    if (row >= s.q_len) return;
    const unsigned n = visible_keys(p, s, row);
    if (j >= n || j >= p.max_kv_len) return;
    const unsigned d_len = p.head_dim;
    const size_t qi = ((size_t)(s.q_begin + row) * p.num_heads + h) * d_len;
    const size_t ki = ((size_t)(s.k_begin + j) * p.num_kv_heads + kv_head_of(p, h)) * d_len;
    float dot = 0.0f;
    for (unsigned d = 0; d < d_len; ++d) dot = fmaf(load_q(p, qi + d), load_elem(p.k, ki + d, p.elem), dot);
    ptr<float>(p.scores)[((size_t)(s.q_begin + row) * p.num_heads + h) * p.max_kv_len + j] = dot * p.scale;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = -CUDART_INF_F;
    for (int w = 0; w < warps; ++w) m = fmaxf(m, scratch[w]);
    return m;
}

// Softmax of each score row in place (probabilities, f32) and its LSE.
// grid (max_q_len, H, batch), block 256 threads.
extern "C" __global__ void __launch_bounds__(256) attn_prefill_naive_softmax(const AttnPrefillParams p) {
    __shared__ float scratch[32];
    const unsigned row = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const Seq s = seq_view(p, b);
    if (row >= s.q_len) return;  // whole block
    const unsigned n = visible_keys(p, s, row);
    if (n > p.max_kv_len) return;  // the P V kernel writes NaN for this row
    float* srow = ptr<float>(p.scores) + ((size_t)(s.q_begin + row) * p.num_heads + h) * p.max_kv_len;
    float m = -CUDART_INF_F;
    for (unsigned j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, srow[j]);
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (unsigned j = threadIdx.x; j < n; j += blockDim.x) sum += expf(srow[j] - m);
    sum = block_sum(sum, scratch);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (unsigned j = threadIdx.x; j < n; j += blockDim.x) srow[j] = expf(srow[j] - m) * inv;
    if (threadIdx.x == 0) store_lse(p, s, h, row, n > 0 ? m + logf(sum) : -CUDART_INF_F);
}

// out[row][h][d] = sum_j P[row][h][j] * v[j][kv_head][d]. grid (max_q_len, H, batch), block head_dim.
extern "C" __global__ void attn_prefill_naive_pv(const AttnPrefillParams p) {
    const unsigned row = blockIdx.x, h = blockIdx.y, b = blockIdx.z, d = threadIdx.x;
    const Seq s = seq_view(p, b);
    if (row >= s.q_len) return;
    const unsigned n = visible_keys(p, s, row);
    const size_t oi = ((size_t)(s.q_begin + row) * p.num_heads + h) * p.head_dim + d;
    if (n > p.max_kv_len) {  // scratch too short for this row: say so loudly
        store_out(p, oi, CUDART_NAN_F);
        if (d == 0) store_lse(p, s, h, row, CUDART_NAN_F);
        return;
    }
    const float* prow = ptr<const float>(p.scores) + ((size_t)(s.q_begin + row) * p.num_heads + h) * p.max_kv_len;
    const size_t stride = (size_t)p.num_kv_heads * p.head_dim;
    const size_t vi = ((size_t)s.k_begin * p.num_kv_heads + kv_head_of(p, h)) * p.head_dim + d;
    float acc = 0.0f;
    for (unsigned j = 0; j < n; ++j) acc = fmaf(prow[j], load_elem(p.v, vi + j * stride, p.elem), acc);
    store_out(p, oi, acc);
}

// ---- v0b: one thread per query row --------------------------------------------------------

constexpr int NR_THREADS = 32;
constexpr int NR_MAX_D = 128;

// grid (ceil(max_q_len / 32), H, batch), block 32 threads. Column t of the shared arrays belongs
// to thread t (bank t), so the threads never share data and need no barrier.
extern "C" __global__ void __launch_bounds__(NR_THREADS) attn_prefill_naive_row(const AttnPrefillParams p) {
    __shared__ float qs[NR_MAX_D][NR_THREADS];
    __shared__ float acc[NR_MAX_D][NR_THREADS];
    const unsigned t = threadIdx.x, row = blockIdx.x * NR_THREADS + t, h = blockIdx.y, b = blockIdx.z;
    const Seq s = seq_view(p, b);
    if (row >= s.q_len) return;
    const unsigned d_len = min(p.head_dim, (unsigned)NR_MAX_D);
    const size_t qi = ((size_t)(s.q_begin + row) * p.num_heads + h) * d_len;
    for (unsigned d = 0; d < d_len; ++d) {
        qs[d][t] = load_q(p, qi + d) * p.scale;
        acc[d][t] = 0.0f;
    }
    const size_t stride = (size_t)p.num_kv_heads * d_len;
    const size_t kv0 = ((size_t)s.k_begin * p.num_kv_heads + kv_head_of(p, h)) * d_len;
    const unsigned n = visible_keys(p, s, row);
    float m = -CUDART_INF_F, l = 0.0f;
    for (unsigned j = 0; j < n; ++j) {
        float score = 0.0f;
        for (unsigned d = 0; d < d_len; ++d) score = fmaf(qs[d][t], load_elem(p.k, kv0 + j * stride + d, p.elem), score);
        const float m_new = fmaxf(m, score);
        const float alpha = expf(m - m_new);
        const float w = expf(score - m_new);
        l = l * alpha + w;
        for (unsigned d = 0; d < d_len; ++d)
            acc[d][t] = fmaf(acc[d][t], alpha, w * load_elem(p.v, kv0 + j * stride + d, p.elem));
        m = m_new;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const size_t oi = ((size_t)(s.q_begin + row) * p.num_heads + h) * d_len;
    for (unsigned d = 0; d < d_len; ++d) store_out(p, oi + d, acc[d][t] * inv);
    store_lse(p, s, h, row, l > 0.0f ? m + logf(l) : -CUDART_INF_F);
}

// ---- v1: tiled SIMT -----------------------------------------------------------------------

constexpr int TL_WARPS = 4;
constexpr int TL_THREADS = TL_WARPS * WARP;
constexpr int TL_ROWS_PER_WARP = 4;
constexpr int TL_BQ = TL_WARPS * TL_ROWS_PER_WARP;  // query rows per block
constexpr int TL_BK = WARP;                          // keys per tile: one per lane

template <int D>
__device__ __forceinline__ void prefill_tiled(const AttnPrefillParams& p) {
    constexpr int DPL = D / WARP;  // output dimensions per lane
    __shared__ float qs[TL_BQ][D];
    __shared__ float ks[TL_BK][D + 1];  // +1: lane j reads row j, so rows must not share a bank
    __shared__ float vs[TL_BK][D];

    const unsigned h = blockIdx.y, b = blockIdx.z;
    const unsigned tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const Seq s = seq_view(p, b);
    const unsigned row0 = blockIdx.x * TL_BQ;
    if (row0 >= s.q_len) return;  // whole block, before any barrier
    const size_t stride = (size_t)p.num_kv_heads * D;
    const size_t kv0 = ((size_t)s.k_begin * p.num_kv_heads + kv_head_of(p, h)) * D;

    for (unsigned idx = tid; idx < TL_BQ * D; idx += TL_THREADS) {
        const unsigned r = idx / D, d = idx % D, row = row0 + r;
        qs[r][d] = row < s.q_len ? load_q(p, ((size_t)(s.q_begin + row) * p.num_heads + h) * D + d) * p.scale : 0.0f;
    }
    const unsigned last_row = min(row0 + TL_BQ, s.q_len) - 1;
    const unsigned kv_end = visible_keys(p, s, last_row);  // keys any row of this block sees

    float m[TL_ROWS_PER_WARP], l[TL_ROWS_PER_WARP], acc[TL_ROWS_PER_WARP][DPL];
#pragma unroll
    for (int r = 0; r < TL_ROWS_PER_WARP; ++r) {
        m[r] = -CUDART_INF_F;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[r][i] = 0.0f;
    }

    for (unsigned t0 = 0; t0 < kv_end; t0 += TL_BK) {
        __syncthreads();  // previous tile fully consumed (and qs written, on the first pass)
        for (unsigned idx = tid; idx < TL_BK * D; idx += TL_THREADS) {
            const unsigned j = idx / D, d = idx % D, key = t0 + j;
            const bool ok = key < kv_end;
            ks[j][d] = ok ? load_elem(p.k, kv0 + key * stride + d, p.elem) : 0.0f;
            vs[j][d] = ok ? load_elem(p.v, kv0 + key * stride + d, p.elem) : 0.0f;
        }
        __syncthreads();

#pragma unroll
        for (int r = 0; r < TL_ROWS_PER_WARP; ++r) {
            const unsigned local = warp * TL_ROWS_PER_WARP + r, row = row0 + local;
            if (row >= s.q_len) continue;  // warp-uniform
            const bool valid = t0 + lane < visible_keys(p, s, row);
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
            for (int j = 0; j < TL_BK; ++j) {
                const float pj = __shfl_sync(FULL_MASK, prob, j);
#pragma unroll
                for (int i = 0; i < DPL; ++i) acc[r][i] = fmaf(pj, vs[j][lane + i * WARP], acc[r][i]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < TL_ROWS_PER_WARP; ++r) {
        const unsigned row = row0 + warp * TL_ROWS_PER_WARP + r;
        if (row >= s.q_len) continue;
        const size_t oi = ((size_t)(s.q_begin + row) * p.num_heads + h) * D;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; ++i) store_out(p, oi + lane + i * WARP, acc[r][i] * inv);
        if (lane == 0) store_lse(p, s, h, row, l[r] > 0.0f ? m[r] + logf(l[r]) : -CUDART_INF_F);
    }
}

// grid (ceil(max_q_len / 16), H, batch), block 128 threads. One entry per head_dim: shared arrays
// of both sizes in one kernel would add up past the 48 KB static limit.
extern "C" __global__ void __launch_bounds__(TL_THREADS) attn_prefill_tiled_hd64(const AttnPrefillParams p) {
    if (p.head_dim == 64) prefill_tiled<64>(p);
}

extern "C" __global__ void __launch_bounds__(TL_THREADS) attn_prefill_tiled_hd128(const AttnPrefillParams p) {
    if (p.head_dim == 128) prefill_tiled<128>(p);
}

// ---- v2: FlashAttention-2 on mma.sync -----------------------------------------------------
//
// Block: 4 warps, BM = 128 query rows of one (sequence, head); warp w owns rows 32w .. 32w + 31 as
// two m16 tiles. Per K/V tile of BN keys (FA2's pipeline, one buffer each for K and V):
//
//   wait K[j]; barrier          K[j] landed, every warp done with V[j-1]
//   issue V[j] (cp.async)       overlaps S = Q K[j]^T
//   S = Q K^T                   ldmatrix Q (smem) and K, m16n8k16 MMAs, f32 accumulators
//   mask                        only tiles that cross the causal diagonal or the end of the keys
//   wait V[j]; barrier          V[j] landed, every warp done with K[j]
//   issue K[j+1]                overlaps the softmax and P V
//   online softmax              row max over the quad (2 shuffles), exp2 with the scale folded in,
//                               O rescaled; the row sum stays per thread until the end
//   O += P V                    P converted to bf16/f16 in registers is the A operand (the C
//                               layout of two n8 tiles is the A layout of one k16 step); V through
//                               ldmatrix.trans
//
// Shared memory rows are padded by 8 elements (16 bytes): the 8 row addresses of an ldmatrix
// phase then fall in 8 different 16-byte bank groups, so reads are conflict-free without a swizzle.
// Out-of-range rows are zero-filled by cp.async (src-size 0) and their scores masked, so any
// sequence length works and nothing outside the sequence is read.

namespace flash {

constexpr int WARPS = 4;
constexpr int THREADS = WARPS * WARP;
constexpr int BM = 128;            // query rows per block
constexpr int ROWS_PER_WARP = 32;  // two m16 tiles
constexpr int MT = ROWS_PER_WARP / 16;
constexpr int PAD = 8;  // elements of padding per shared-memory row

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return ptx::shared_addr(p); }

// One 16-byte cp.async; !valid: nothing is read and the 16 bytes are zero-filled.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
    ptx::cp_async_cg_16(dst, src, valid ? 16 : 0);
}

__device__ __forceinline__ void cp_async_commit() { ptx::cp_async_commit_group(); }

__device__ __forceinline__ void cp_async_wait_all() { ptx::cp_async_wait_group<0>(); }

using ptx::ldmatrix_x4;
using ptx::ldmatrix_x4_trans;
using ptx::opaque;

__device__ __forceinline__ float fast_exp2(float x) { return ptx::ex2_approx_ftz(x); }

// Per element type: the MMA and the f32 -> 2 x 16-bit packing (the first value in the low half).
template <typename T>
struct Ops;

template <>
struct Ops<__nv_bfloat16> {
    static __device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        ptx::mma_m16n8k16_bf16(c, a, b0, b1);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return ptx::cvt_rn_bf16x2_f32(hi, lo); }
};

template <>
struct Ops<__half> {
    static __device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        ptx::mma_m16n8k16_f16(c, a, b0, b1);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return ptx::cvt_rn_f16x2_f32(hi, lo); }
};

// Shared-memory bytes of one configuration (the host computes the same: flash_shared_bytes).
template <int D, int BN>
constexpr int smem_bytes() {
    return (BM + 2 * BN) * (D + PAD) * 2;
}

// Copies rows 0 .. ROWS-1 of a tile (row r at g + r * g_stride elements) into shared memory with row
// stride D + PAD; rows >= valid (>= 1) are zero-filled without touching global memory. Thread t copies
// chunk t % CHUNKS of rows t / CHUNKS + i * ROW_STEP, so its addresses are one base plus constant steps
// (few live registers across the main loop).
template <typename T, int ROWS, int D>
__device__ __forceinline__ void load_tile(T* s, const T* g, size_t g_stride, unsigned valid, unsigned tid) {
    constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    constexpr int ROW_STEP = THREADS / CHUNKS;
    static_assert(THREADS % CHUNKS == 0 && ROWS % ROW_STEP == 0, "tile must split evenly over the block");
    // Opaque copies: recomputing these addresses per tile costs a few integer ops, while letting the
    // compiler hoist one 64-bit address per chunk out of the main loop costs ~30 registers (spills).
    const unsigned r0 = opaque(tid) / CHUNKS, ch = tid % CHUNKS;
    g_stride = opaque(g_stride);
    const T* src = g + (size_t)r0 * g_stride + ch * 8;
    const uint32_t dst = smem_addr(s + r0 * (D + PAD) + ch * 8);
#pragma unroll
    for (int i = 0; i < ROWS / ROW_STEP; ++i) {
        const bool ok = r0 + i * ROW_STEP < valid;
        cp_async_16(dst + i * ROW_STEP * (D + PAD) * 2, ok ? src + (size_t)i * ROW_STEP * g_stride : g, ok);
    }
}

// A Q tile (ROWS rows) from f32, the model's activations: converted to T while staged, with plain shared
// stores (not cp.async). 16-byte chunk c of row r goes to byte `offset(r, c)` of `s` (each kernel has its
// own shared layout); rows >= valid are zero. Shared by the three flash kernels.
template <typename T, int D, int NTHREADS, typename Offset, int ROWS = BM>
__device__ __forceinline__ void load_q_f32(T* s, const float* g, size_t g_stride, unsigned valid, unsigned tid,
                                           Offset offset) {
    constexpr int CHUNKS = D / 8;
    static_assert(ROWS * CHUNKS % NTHREADS == 0, "the tile must split evenly over the threads");
#pragma unroll 4
    for (int i = 0; i < ROWS * CHUNKS / NTHREADS; ++i) {
        const unsigned idx = tid + i * NTHREADS, r = idx / CHUNKS, c = idx % CHUNKS;
        uint4 packed = make_uint4(0, 0, 0, 0);
        if (r < valid) {
            const float4* src = reinterpret_cast<const float4*>(g + (size_t)r * g_stride + c * 8);
            const float4 a = __ldg(src), b = __ldg(src + 1);
            packed = make_uint4(Ops<T>::pack(a.x, a.y), Ops<T>::pack(a.z, a.w), Ops<T>::pack(b.x, b.y),
                                Ops<T>::pack(b.z, b.w));
        }
        *reinterpret_cast<uint4*>(reinterpret_cast<char*>(s) + offset(r, c)) = packed;
    }
}

// The epilogue of one query row of a tensor-core kernel (v2-v4): the row sum completed over the quad of
// lanes that holds the row (every lane must call this), O / l written as f32 or T from the thread's
// accumulator pairs `acc(dt, e)` (columns col + 8 dt + e), the LSE by the quad's first lane. Rows past
// the sequence are not stored.
template <typename T, int D, typename Acc>
__device__ __forceinline__ void store_row(const AttnPrefillParams& p, const Seq& s, unsigned h, unsigned row,
                                          unsigned col, float l_part, float m, float sl2, Acc acc) {
    float l = l_part;
    l += __shfl_xor_sync(FULL_MASK, l, 1);
    l += __shfl_xor_sync(FULL_MASK, l, 2);
    if (row >= s.q_len) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const size_t oi = ((size_t)(s.q_begin + row) * p.num_heads + h) * D + col;
    if (p.out_f32) {
        float* out = ptr<float>(p.out) + oi;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt)
            *reinterpret_cast<float2*>(out + dt * 8) = make_float2(acc(dt, 0) * inv, acc(dt, 1) * inv);
    } else {
        T* out = ptr<T>(p.out) + oi;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt)
            *reinterpret_cast<uint32_t*>(out + dt * 8) = Ops<T>::pack(acc(dt, 0) * inv, acc(dt, 1) * inv);
    }
    if (col == 0) store_lse(p, s, h, row, l > 0.0f ? (m * sl2 + log2f(l)) * LN2 : -CUDART_INF_F);
}

template <typename T, int D, int BN>
__device__ __forceinline__ void forward(const AttnPrefillParams& p) {
    constexpr int SD = D + PAD;   // shared row stride, elements
    constexpr int NT = BN / 8;    // n8 tiles of S per m16 tile
    constexpr int DT = D / 8;     // n8 tiles of O per m16 tile
    static_assert(D % 16 == 0 && BN % 16 == 0, "tile sizes");
    ROOFLAB_DYNAMIC_SHARED(uint4, smem_raw);
    T* sQ = reinterpret_cast<T*>(smem_raw);
    T* sK = sQ + BM * SD;
    T* sV = sK + BN * SD;

    const unsigned tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const unsigned h = blockIdx.y;
    const BlockTiles tiles = block_tiles<BM, BN>(p);
    if (tiles.rows_here == 0) return;  // whole block, before any barrier
    const Seq s = tiles.s;
    const unsigned m0 = tiles.m0, rows_here = tiles.rows_here, n_tiles = tiles.n_tiles, mask_from = tiles.mask_from;

    const size_t q_stride = (size_t)p.num_heads * D, kv_stride = (size_t)p.num_kv_heads * D;
    const size_t q_first = (size_t)(s.q_begin + m0) * q_stride + (size_t)h * D;
    const T* gK = ptr<const T>(p.k) + (size_t)s.k_begin * kv_stride + (size_t)kv_head_of(p, h) * D;
    const T* gV = ptr<const T>(p.v) + (size_t)s.k_begin * kv_stride + (size_t)kv_head_of(p, h) * D;

    const auto padded_row = [](unsigned r, unsigned c) { return (r * SD + c * 8) * 2; };
    if (p.q_f32)
        load_q_f32<T, D, THREADS>(sQ, ptr<const float>(p.q) + q_first, q_stride, rows_here, tid, padded_row);
    else load_tile<T, BM, D>(sQ, ptr<const T>(p.q) + q_first, q_stride, rows_here, tid);
    if (n_tiles > 0) load_tile<T, BN, D>(sK, gK, kv_stride, min((unsigned)BN, s.kv_len), tid);
    cp_async_commit();

    // Per-thread ldmatrix addresses (bytes), tile offsets added as immediates in the loops.
    // A (Q, 16x16): lanes 0-15 rows 0-15 at k 0, lanes 16-31 rows 0-15 at k 8.
    const uint32_t q_addr = smem_addr(sQ + (warp * ROWS_PER_WARP + lane % 16) * SD + (lane / 16) * 8);
    // B of Q K^T (K rows = keys, 16 keys x 16 dims): matrices (keys 0-7, d 0), (keys 0-7, d 8), (keys 8-15, d 0), (keys 8-15, d 8).
    const uint32_t k_addr = smem_addr(sK + (lane % 8 + (lane / 16) * 8) * SD + ((lane / 8) % 2) * 8);
    // B of P V through .trans (16 keys x 16 dims): (keys 0-7, d 0), (keys 8-15, d 0), (keys 0-7, d 8), (keys 8-15, d 8).
    const uint32_t v_addr = smem_addr(sV + (lane % 8 + ((lane / 8) % 2) * 8) * SD + (lane / 16) * 8);
    constexpr uint32_t ROW_BYTES = SD * 2;

    // The rows this thread holds: (lane / 4) and (lane / 4 + 8) of each m16 tile; its S/O columns
    // are 2 * (lane % 4) and the next one of each n8 tile.
    const unsigned row_in_block = warp * ROWS_PER_WARP + lane / 4;
    const unsigned col_in_tile = 2 * (lane % 4);
    const float sl2 = p.scale * LOG2E;

    float o[MT][DT][4];
    float m_run[MT][2], l_run[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            m_run[mt][hf] = -CUDART_INF_F;
            l_run[mt][hf] = 0.0f;
        }
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
#pragma unroll
            for (int i = 0; i < 4; ++i) o[mt][dt][i] = 0.0f;
    }

    for (unsigned j = 0; j < n_tiles; ++j) {
        const unsigned t0 = j * BN;
        const unsigned keys_here = min((unsigned)BN, s.kv_len - t0);
        cp_async_wait_all();
        __syncthreads();  // K[j] (and Q) visible; every warp is done reading V[j-1]
        load_tile<T, BN, D>(sV, gV + (size_t)t0 * kv_stride, kv_stride, keys_here, tid);
        cp_async_commit();

        // S = Q K^T
        float sacc[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int i = 0; i < 4; ++i) sacc[mt][nt][i] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(qa[mt], q_addr + mt * 16 * ROW_BYTES + kk * 32);
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                uint32_t kb[4];
                ldmatrix_x4(kb, k_addr + np * 16 * ROW_BYTES + kk * 32);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    Ops<T>::mma(sacc[mt][2 * np], qa[mt], kb[0], kb[1]);
                    Ops<T>::mma(sacc[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
                }
            }
        }

        if (j >= mask_from) {  // block-uniform: only tiles at the diagonal or the end of the keys
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int hf = 0; hf < 2; ++hf) {
                    const unsigned row = m0 + row_in_block + mt * 16 + hf * 8;
                    const unsigned limit = p.causal ? min(s.kv_len, s.q_offset + row + 1) : s.kv_len;
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                        for (int e = 0; e < 2; ++e)
                            if (t0 + nt * 8 + col_in_tile + e >= limit) sacc[mt][nt][2 * hf + e] = -CUDART_INF_F;
                }
        }

        cp_async_wait_all();
        __syncthreads();  // V[j] visible; every warp is done reading K[j]
        if (j + 1 < n_tiles) {
            const unsigned t1 = t0 + BN;
            load_tile<T, BN, D>(sK, gK + (size_t)t1 * kv_stride, kv_stride, min((unsigned)BN, s.kv_len - t1), tid);
            cp_async_commit();
        }

        // Online softmax in log2 space: p = 2^(s * scale * log2(e) - m * scale * log2(e)). P is packed
        // to 16-bit pairs as it is made, in the A layout of P V: the C layout of n8 tiles 2k and 2k+1
        // is the A layout of k16 step k (rows g / g+8, columns 2t, 2t+1 and 8+2t, 8+2t+1).
        uint32_t pa[MT][BN / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                float mx = m_run[mt][hf];
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(sacc[mt][nt][2 * hf], sacc[mt][nt][2 * hf + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
                // A row that has seen no key yet keeps max -inf: subtract 0 instead (no inf - inf).
                const float m_scaled = mx == -CUDART_INF_F ? 0.0f : mx * sl2;
                const float alpha = fast_exp2(m_run[mt][hf] * sl2 - m_scaled);
                m_run[mt][hf] = mx;
                float row_sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    const float p0 = fast_exp2(fmaf(sacc[mt][nt][2 * hf], sl2, -m_scaled));
                    const float p1 = fast_exp2(fmaf(sacc[mt][nt][2 * hf + 1], sl2, -m_scaled));
                    row_sum += p0 + p1;
                    pa[mt][nt / 2][(nt % 2) * 2 + hf] = Ops<T>::pack(p0, p1);
                }
                l_run[mt][hf] = l_run[mt][hf] * alpha + row_sum;
#pragma unroll
                for (int dt = 0; dt < DT; ++dt) {
                    o[mt][dt][2 * hf] *= alpha;
                    o[mt][dt][2 * hf + 1] *= alpha;
                }
            }

        // O += P V
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                uint32_t vb[4];
                ldmatrix_x4_trans(vb, v_addr + kk * 16 * ROW_BYTES + dp * 32);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    Ops<T>::mma(o[mt][2 * dp], pa[mt][kk], vb[0], vb[1]);
                    Ops<T>::mma(o[mt][2 * dp + 1], pa[mt][kk], vb[2], vb[3]);
                }
            }
        }
    }
    // With no key tile (kv_len 0) the Q copies are still in flight: drain them before the block can exit
    // (free otherwise: every group has been waited for).
    cp_async_wait_all();

    // Epilogue: full row sums over the quad, normalise once, write O (and the LSE).
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf)
            store_row<T, D>(p, s, h, m0 + row_in_block + mt * 16 + hf * 8, col_in_tile, l_run[mt][hf], m_run[mt][hf],
                            sl2, [&](int dt, int e) { return o[mt][dt][2 * hf + e]; });
}

}  // namespace flash

// grid (ceil(max_q_len / 128), H, batch), block 128 threads, dynamic shared memory
// flash::smem_bytes<D, BN>() (above 48 KB: the host raises the function's limit first).
// D = 128 uses 64-key tiles, D = 64 128-key tiles (FA2's choice for the H100): 192 f32 accumulators
// per thread either way.
#define ROOFLAB_FLASH_ENTRY(NAME, T, D, BN)                                                   \
    extern "C" __global__ void __launch_bounds__(flash::THREADS) NAME(const AttnPrefillParams p) { \
        if (p.head_dim == D) flash::forward<T, D, BN>(p);                                     \
    }

ROOFLAB_FLASH_ENTRY(attn_prefill_flash_bf16_hd64, __nv_bfloat16, 64, 64)
ROOFLAB_FLASH_ENTRY(attn_prefill_flash_bf16_hd128, __nv_bfloat16, 128, 32)
ROOFLAB_FLASH_ENTRY(attn_prefill_flash_f16_hd64, __half, 64, 64)
ROOFLAB_FLASH_ENTRY(attn_prefill_flash_f16_hd128, __half, 128, 32)

// ---- v3: sm_90a, warpgroup MMA (wgmma) --------------------------------------------------------
//
// UNVERIFIED: written without a Hopper GPU (kernels-cuda/notes/attention_prefill.md says what was and
// was not checked). The host selects it on compute capability 9.x unless ROOFLAB_PREFILL_FLASH=mma.
//
// Block: 2 warpgroups (8 warps), BM = 128 query rows, warpgroup g owning rows 64g .. 64g + 63, which
// is the M = 64 of one wgmma. Per key tile of BN = 128:
//   S = Q K^T      wgmma m64n128k16 x D/16, A (Q) and B (K) read by the tensor cores from shared memory
//   softmax        as in v2 (each thread holds rows g and g + 8 of its warp's 16 and 2 columns per n8)
//   O += P V       wgmma m64nDk16 x BN/16, A = P from registers (the accumulator layout of S is the
//                  A-fragment layout), B = V read N-major (transposed) from shared memory
// K/V tiles are double-buffered: the cp.async copies of tile j+2 run while tile j+1 is computed.
// Shared tiles use the no-swizzle ("interleaved") canonical layout: 8-row x 16-byte core matrices of
// 128 contiguous bytes, 128 bytes apart along the rows and rows * 16 bytes apart along the 16-byte
// chunks, so one formula (tile_offset) serves Q and K (K-major operands: SBO 128, LBO rows * 16) and
// V (N-major operand: LBO 128 along the keys, SBO rows * 16 along the head dim).
// No mbarrier, no TMA: every wait is a cp.async or wgmma group wait, so a mistake here gives wrong
// numbers or a launch error, never a hang.

namespace wg {

constexpr int WARPGROUPS = 2;
constexpr int THREADS = WARPGROUPS * 128;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

constexpr int BM = 64 * WARPGROUPS;
static_assert(BM == flash::BM, "the Q staging (flash::load_q_f32) assumes both kernels' BM");
constexpr int BN = 128;  // dynamic shared memory: (BM + 4 BN) * D * 2 bytes (Q, two stages of K and V)

using ptx::wgmma_rs_n128_bf16;
using ptx::wgmma_rs_n128_f16;
using ptx::wgmma_rs_n64_bf16;
using ptx::wgmma_rs_n64_f16;
using ptx::wgmma_ss_n128_bf16;
using ptx::wgmma_ss_n128_f16;


// Byte offset of 16-byte chunk `c` of row `r` in a tile of `rows` rows (the no-swizzle core-matrix layout).
__device__ __forceinline__ uint32_t tile_offset(uint32_t r, uint32_t c, uint32_t rows) {
    return c * rows * 16 + (r / 8) * 128 + (r % 8) * 16;
}

// A shared-memory matrix descriptor, no swizzle: start address, leading (K-direction) and stride
// (M/N-direction) byte offsets between core matrices, each encoded as (x & 0x3FFFF) >> 4.
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32);
}

using ptx::wgmma_fence;
__device__ __forceinline__ void wgmma_commit() { ptx::wgmma_commit_group(); }
__device__ __forceinline__ void wgmma_wait_all() { ptx::wgmma_wait_group_0(); }
__device__ __forceinline__ void fence_proxy_async() { ptx::fence_proxy_async_shared_cta(); }
__device__ __forceinline__ void cp_async_wait_one() { ptx::cp_async_wait_group<1>(); }

// Keeps the compiler from moving reads or writes of accumulator registers across the asynchronous
// wgmma region (wgmma.wait_group carries no register operands).
template <typename R, int N>
__device__ __forceinline__ void fence_registers(R (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) ptx::register_fence(r[i]);
}

template <typename T>
constexpr bool is_half = false;
template <>
constexpr bool is_half<__half> = true;

template <typename T>
__device__ __forceinline__ void mma_qk(float (&s)[BN / 2], uint64_t a, uint64_t b, int accumulate) {
    if constexpr (is_half<T>) wgmma_ss_n128_f16(s, a, b, accumulate);
    else wgmma_ss_n128_bf16(s, a, b, accumulate);
}

template <typename T, int D>
__device__ __forceinline__ void mma_pv(float (&o)[D / 2], const uint32_t (&a)[4], uint64_t b) {
    if constexpr (D == 64) {
        if constexpr (is_half<T>) wgmma_rs_n64_f16(o, a, b);
        else wgmma_rs_n64_bf16(o, a, b);
    } else {
        if constexpr (is_half<T>) wgmma_rs_n128_f16(o, a, b);
        else wgmma_rs_n128_bf16(o, a, b);
    }
}

// cp.async of a ROWS x D tile (row r at g + r * g_stride) into the core-matrix layout. Each warp
// instruction covers 8 rows x 4 chunks: 64 contiguous global bytes per row, and 4 whole core matrices
// (conflict-free) in shared memory. Rows >= valid (>= 1) are zero-filled.
template <typename T, int ROWS, int D>
__device__ __forceinline__ void load_tile(uint32_t s, const T* g, size_t g_stride, unsigned valid, unsigned tid) {
    constexpr int CHUNKS = D / 8, CHUNK_BLOCKS = CHUNKS / 4, GROUPS = ROWS / 8 * CHUNK_BLOCKS;
    constexpr int WARPS = THREADS / WARP;
    static_assert(CHUNKS % 4 == 0 && GROUPS % WARPS == 0, "tile must split evenly over the warps");
    const unsigned lane = tid % WARP, warp = flash::opaque(tid) / WARP;
    g_stride = flash::opaque(g_stride);
#pragma unroll
    for (int i = 0; i < GROUPS / WARPS; ++i) {
        const unsigned group = warp + i * WARPS;
        const unsigned r = (group / CHUNK_BLOCKS) * 8 + lane % 8, c = (group % CHUNK_BLOCKS) * 4 + lane / 8;
        const bool ok = r < valid;
        flash::cp_async_16(s + tile_offset(r, c, ROWS), ok ? g + (size_t)r * g_stride + c * 8 : g, ok);
    }
}

// S tile masking of a thread's accumulator fragment (m64nBN layout: rows `row` and row + 8 of the
// sequence, columns key + 8 nt + e): keys past the row's visible keys become -inf.
__device__ __forceinline__ void mask_tile(float (&sacc)[BN / 2], const AttnPrefillParams& p, const Seq& s,
                                          unsigned row, unsigned key) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        const unsigned limit = visible_keys(p, s, row + hf * 8);
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e)
                if (key + nt * 8 + e >= limit) sacc[nt * 4 + hf * 2 + e] = -CUDART_INF_F;
    }
}

// The online softmax of one S tile in registers (log2 space, the scale folded into one FFMA per score),
// in two halves so that v4 can run the first while its previous P V product is still in flight:
//   softmax_exp: row maxima over the quad, S replaced in place by P = 2^(s * sl2 - m * sl2), the running
//     maxima and sums updated; alpha gets each row's rescale factor for O. A row with no visible key yet
//     keeps max -inf and subtracts 0 (no -inf - -inf).
//   rescale_pack: O *= alpha, P packed into A fragments (the S accumulator layout of n8 tiles 2k, 2k+1 is
//     the A-fragment layout of k16 step k). Touches O, so it waits for any P V product on O.
__device__ __forceinline__ void softmax_exp(float (&sacc)[BN / 2], float (&m_run)[2], float (&l_run)[2],
                                            float (&alpha)[2], float sl2) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        float mx = m_run[hf];
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(sacc[nt * 4 + hf * 2], sacc[nt * 4 + hf * 2 + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        const float m_scaled = mx == -CUDART_INF_F ? 0.0f : mx * sl2;
        alpha[hf] = flash::fast_exp2(m_run[hf] * sl2 - m_scaled);
        m_run[hf] = mx;
        float row_sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
            float &p0 = sacc[nt * 4 + hf * 2], &p1 = sacc[nt * 4 + hf * 2 + 1];
            p0 = flash::fast_exp2(fmaf(p0, sl2, -m_scaled));
            p1 = flash::fast_exp2(fmaf(p1, sl2, -m_scaled));
            row_sum += p0 + p1;
        }
        l_run[hf] = l_run[hf] * alpha[hf] + row_sum;
    }
}

template <typename T, int D>
__device__ __forceinline__ void rescale_pack(const float (&sacc)[BN / 2], uint32_t (&pa)[BN / 16][4],
                                             float (&o)[D / 2], const float (&alpha)[2]) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt)
            pa[nt / 2][(nt % 2) * 2 + hf] = flash::Ops<T>::pack(sacc[nt * 4 + hf * 2], sacc[nt * 4 + hf * 2 + 1]);
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
            o[dt * 4 + hf * 2] *= alpha[hf];
            o[dt * 4 + hf * 2 + 1] *= alpha[hf];
        }
    }
}

template <typename T, int D>
__device__ __forceinline__ void softmax_tile(float (&sacc)[BN / 2], uint32_t (&pa)[BN / 16][4], float (&o)[D / 2],
                                             float (&m_run)[2], float (&l_run)[2], float sl2) {
    float alpha[2];
    softmax_exp(sacc, m_run, l_run, alpha, sl2);
    rescale_pack<T, D>(sacc, pa, o, alpha);
}

// The epilogue of a warpgroup's rows: O / l to out (rows past the sequence are not stored) and the LSE.
// `row` is the sequence row of the thread's first accumulator row (the other is row + 8), `col` its
// first column in each n8 tile.
template <typename T, int D>
__device__ __forceinline__ void store_rows(const AttnPrefillParams& p, const Seq& s, unsigned h, unsigned row0,
                                           unsigned col, const float (&o)[D / 2], const float (&m_run)[2],
                                           const float (&l_run)[2], float sl2) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf)
        flash::store_row<T, D>(p, s, h, row0 + hf * 8, col, l_run[hf], m_run[hf], sl2,
                               [&](int dt, int e) { return o[dt * 4 + hf * 2 + e]; });
}

template <typename T, int D>
__device__ __forceinline__ void forward(const AttnPrefillParams& p) {
    constexpr uint32_t Q_BYTES = BM * D * 2, KV_BYTES = BN * D * 2;
    ROOFLAB_DYNAMIC_SHARED(uint4, smem_raw);
    T* sQ = reinterpret_cast<T*>(smem_raw);
    const uint32_t q_smem = flash::smem_addr(sQ), k_smem = q_smem + Q_BYTES, v_smem = k_smem + 2 * KV_BYTES;

    const unsigned tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP, group = warp / 4;
    const unsigned h = blockIdx.y;
    const BlockTiles tiles = block_tiles<BM, BN>(p);
    if (tiles.rows_here == 0) return;  // whole block, before any barrier
    const Seq s = tiles.s;
    const unsigned m0 = tiles.m0, rows_here = tiles.rows_here, n_tiles = tiles.n_tiles, mask_from = tiles.mask_from;

    const size_t q_stride = (size_t)p.num_heads * D, kv_stride = (size_t)p.num_kv_heads * D;
    const size_t q_first = (size_t)(s.q_begin + m0) * q_stride + (size_t)h * D;
    const T* gK = ptr<const T>(p.k) + (size_t)s.k_begin * kv_stride + (size_t)kv_head_of(p, h) * D;
    const T* gV = ptr<const T>(p.v) + (size_t)s.k_begin * kv_stride + (size_t)kv_head_of(p, h) * D;

    // Group 0: Q and tile 0; group 1: tile 1 (possibly empty). Every iteration commits one more group,
    // so "all but the newest group done" always means "tile j landed".
    // f32 Q: plain stores into the core-matrix layout (fenced for the async proxy before the barrier).
    const auto core_matrices = [](unsigned r, unsigned c) { return tile_offset(r, c, BM); };
    if (p.q_f32)
        flash::load_q_f32<T, D, THREADS>(sQ, ptr<const float>(p.q) + q_first, q_stride, rows_here, tid, core_matrices);
    else load_tile<T, BM, D>(q_smem, ptr<const T>(p.q) + q_first, q_stride, rows_here, tid);
    for (unsigned t = 0; t < 2; ++t) {
        if (t < n_tiles) {
            const unsigned keys = min((unsigned)BN, s.kv_len - t * BN);
            load_tile<T, BN, D>(k_smem + t * KV_BYTES, gK + (size_t)t * BN * kv_stride, kv_stride, keys, tid);
            load_tile<T, BN, D>(v_smem + t * KV_BYTES, gV + (size_t)t * BN * kv_stride, kv_stride, keys, tid);
        }
        flash::cp_async_commit();
    }

    const unsigned row_in_block = group * 64 + (warp % 4) * 16 + lane / 4;
    const unsigned col_in_tile = 2 * (lane % 4);
    const float sl2 = p.scale * LOG2E;
    const uint32_t q_rows = q_smem + group * 8 * 128;  // this warpgroup's 64 rows: 8 core-matrix rows

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
    float m_run[2] = {-CUDART_INF_F, -CUDART_INF_F}, l_run[2] = {0.0f, 0.0f};

    for (unsigned j = 0; j < n_tiles; ++j) {
        const unsigned t0 = j * BN, stage = j % 2;
        cp_async_wait_one();
        fence_proxy_async();  // this thread's copies (and Q stores) visible to the tensor cores
        __syncthreads();

        // S = Q K^T over D / 16 k-steps (K-major A and B).
        float sacc[BN / 2];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            const uint64_t a = make_desc(q_rows + kk * 2 * BM * 16, BM * 16, 128);
            const uint64_t bd = make_desc(k_smem + stage * KV_BYTES + kk * 2 * BN * 16, BN * 16, 128);
            mma_qk<T>(sacc, a, bd, kk > 0);
        }
        wgmma_commit();
        wgmma_wait_all();
        fence_registers(sacc);

        if (j >= mask_from) mask_tile(sacc, p, s, m0 + row_in_block, t0 + col_in_tile);

        uint32_t pa[BN / 16][4];
        softmax_tile<T, D>(sacc, pa, o, m_run, l_run, sl2);

        // O += P V over BN / 16 k-steps (A from registers, B = V read N-major). O and P are written by
        // this thread before the fence: pinned here so no edit can let nvcc sink the P packing below it.
        fence_registers(o);
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) fence_registers(pa[kk]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
            mma_pv<T, D>(o, pa[kk], make_desc(v_smem + stage * KV_BYTES + kk * 2 * 128, 128, BN * 16));
        wgmma_commit();
        wgmma_wait_all();
        fence_registers(o);

        __syncthreads();  // both warpgroups are done with this stage
        if (j + 2 < n_tiles) {
            const unsigned t2 = t0 + 2 * BN, keys = min((unsigned)BN, s.kv_len - t2);
            load_tile<T, BN, D>(k_smem + stage * KV_BYTES, gK + (size_t)t2 * kv_stride, kv_stride, keys, tid);
            load_tile<T, BN, D>(v_smem + stage * KV_BYTES, gV + (size_t)t2 * kv_stride, kv_stride, keys, tid);
        }
        flash::cp_async_commit();
    }
    // With no key tile (kv_len 0) the Q copies are still in flight: drain them before the block
    // can exit (otherwise only empty groups are left).
    flash::cp_async_wait_all();

    store_rows<T, D>(p, s, h, m0 + row_in_block, col_in_tile, o, m_run, l_run, sl2);
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace wg

// grid (ceil(max_q_len / 128), H, batch), block 256 threads, dynamic shared memory (128 + 4 * 128) * D * 2.
// In the sm_80 PTX these entries exist (the ABI table lists every entry in both sets) but trap.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ROOFLAB_WG_BODY(T, D) \
    if (p.head_dim == D) wg::forward<T, D>(p);
#else
#define ROOFLAB_WG_BODY(T, D) __trap();
#endif

#define ROOFLAB_WG_ENTRY(NAME, T, D)                                                                \
    extern "C" __global__ void __launch_bounds__(wg::THREADS, 1) NAME(const AttnPrefillParams p) { \
        ROOFLAB_WG_BODY(T, D)                                                                        \
    }

ROOFLAB_WG_ENTRY(attn_prefill_wgmma_bf16_hd64, __nv_bfloat16, 64)
ROOFLAB_WG_ENTRY(attn_prefill_wgmma_bf16_hd128, __nv_bfloat16, 128)
ROOFLAB_WG_ENTRY(attn_prefill_wgmma_f16_hd64, __half, 64)
ROOFLAB_WG_ENTRY(attn_prefill_wgmma_f16_hd128, __half, 128)

// ---- v4: sm_90a, TMA + warp specialisation (FlashAttention-3 structure) -------------------------
//
// UNVERIFIED: written without a Hopper GPU, like v3 (kernels-cuda/notes/attention_prefill.md).
//
// Block: 3 warpgroups, BM = 128 query rows of one (sequence, head).
//   producer (warpgroup 0, one thread): TMA copies of Q and of each K and V tile into a ring of STAGES
//     shared-memory stages; per stage a `full` mbarrier for K and one for V (the copies' bytes complete
//     them), and an `empty` one for each that the consumers arrive at when their products have read it.
//   consumers (warpgroups 1 and 2, 64 query rows each, the M of one wgmma), per key tile j:
//     wait K[j]; [my turn]  S = Q K[j]^T (wgmma, both from shared memory); O += P[j-1] V[j-1] (wgmma, P
//     from registers); [your turn]  wait S, release K[j]; mask; online softmax of S in place (P[j], f32);
//     wait P V, release V[j-1]; rescale O; pack P[j] into A fragments. After the last tile: O += P V.
//   The turn (two named barriers) makes the consumers issue their tensor-core work alternately, so the
//   softmax of one runs while the other's products occupy the tensor cores (FA3's ping-pong), and the
//   softmax also runs while the warpgroup's own P[j-1] V[j-1] is in flight (FA3's intra-warpgroup
//   overlap). K and V go back separately so the producer can refill K[j] while P V still reads V[j-1].
//   setmaxnreg moves registers from the producer (40 per thread) to the consumers (232).
// Tiles are 128-byte swizzled, which the TMA writes and the wgmma descriptors read: a tile of R rows is
// D/64 panels of R x 128 bytes; row r of a panel at r * 128 bytes, its 16-byte chunk c at (c ^ r % 8) * 16.
// Keys of the last tile past the sequence's end hold whatever follows it (the next sequence, an unwritten
// cache tail that may be NaN): their scores are masked, and the producer zeroes those V rows before the
// consumers' last P V (0 * NaN would poison the output).
// Every mbarrier wait traps after MAX_POLLS polls: a protocol mistake is a launch error, not a hung GPU.

namespace tma {

constexpr int CONSUMERS = 2;
constexpr int THREADS = (CONSUMERS + 1) * 128;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

constexpr int BM = 64 * CONSUMERS;
constexpr int BN = 128;
static_assert(BN == wg::BN, "the masking and the S fragments are v3's");
constexpr int PANEL = 64;                      // elements of one 128-byte swizzled row
constexpr uint32_t PANEL_ROW_BYTES = PANEL * 2;
constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;  // 128 x 40 + 256 x 232 <= 64 K registers
constexpr unsigned MAX_POLLS = 1u << 26;
constexpr uint64_t SWIZZLE_128B = 1ull << 62;  // descriptor layout type 1
// Named barriers (0 is __syncthreads): the consumers' turns, and each consumer's f32-Q staging.
constexpr uint32_t TURN = 1, Q_STAGED = 3;
// FA3's intra-warpgroup overlap: P[j-1] V[j-1] stays in flight while the softmax of tile j runs. Built
// with -DROOFLAB_TMA_OVERLAP=0 it is off (the product is waited for before S is issued): the ablation,
// loaded through ROOFLAB_PTX_DIR (notes/attention_prefill.md says how).
#ifndef ROOFLAB_TMA_OVERLAP
#define ROOFLAB_TMA_OVERLAP 1
#endif
constexpr bool INTRA_WG_OVERLAP = ROOFLAB_TMA_OVERLAP != 0;

// Shared memory, byte offsets from the 1024-aligned base (the host adds 1024 bytes of slack).
template <int D>
struct Layout {
    static constexpr int STAGES = D == 128 ? 2 : 3;
    static constexpr uint32_t Q_BYTES = BM * D * 2, TILE_BYTES = BN * D * 2;
    static constexpr uint32_t Q = 0, K = Q_BYTES, V = K + STAGES * TILE_BYTES;
    // mbarriers, 8 bytes each: q_full, v_fixed, then k_full, v_full, k_empty and v_empty per stage.
    static constexpr uint32_t BARRIERS = V + STAGES * TILE_BYTES;
    static constexpr uint32_t BYTES = BARRIERS + (2 + 4 * STAGES) * 8;
    static __device__ uint32_t q_full(uint32_t base) { return base + BARRIERS; }
    static __device__ uint32_t v_fixed(uint32_t base) { return base + BARRIERS + 8; }
    static __device__ uint32_t k_full(uint32_t base, unsigned st) { return base + BARRIERS + 16 + st * 8; }
    static __device__ uint32_t v_full(uint32_t base, unsigned st) { return k_full(base, st) + STAGES * 8; }
    static __device__ uint32_t k_empty(uint32_t base, unsigned st) { return k_full(base, st) + 2 * STAGES * 8; }
    static __device__ uint32_t v_empty(uint32_t base, unsigned st) { return k_full(base, st) + 3 * STAGES * 8; }
};

// Out of line: an inlined trap in the consumers' waits kept ptxas from giving them the registers
// setmaxnreg provides (it then spilled within the launch's 168).
__device__ __noinline__ void die() { __trap(); }

__device__ __forceinline__ void wait(uint32_t bar, uint32_t parity) {
    for (unsigned polls = 0; !ptx::mbarrier_try_wait_parity(bar, parity);)
        if (++polls == MAX_POLLS) die();
}

// ptxas moves a wgmma.wait_group to the top of its basic block (the instruction names no registers), so
// the wait for P V would land before the softmax it is meant to overlap. A branch on a value the softmax
// produced ends the block there. It is never taken (running sums are not negative).
__device__ __forceinline__ void end_block_after(float v) {
    if (v < 0.0f) die();
}

// Byte offset of 16-byte chunk c (0 .. D/8 - 1) of row r in a swizzled tile of `rows` rows.
__device__ __forceinline__ uint32_t swizzled(uint32_t r, uint32_t c, uint32_t rows) {
    return (c / 8) * rows * PANEL_ROW_BYTES + r * PANEL_ROW_BYTES + ((c % 8) ^ (r % 8)) * 16;
}

// What the producer and the consumers both derive from the block's place in the batch.
struct Work : BlockTiles {
    unsigned h;
    bool ragged;  // the last tile holds rows past the keys (their V rows are zeroed)
};

template <int D>
__device__ __forceinline__ void produce(const AttnPrefillTmaParams& P, const Work& w, uint32_t base, char* smem) {
    using L = Layout<D>;
    const unsigned lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    if (warp != 0) return;
    if (lane == 0) {
        if (!P.p.q_f32) {
            ptx::mbarrier_arrive_expect_tx(L::q_full(base), L::Q_BYTES);
#pragma unroll
            for (int pn = 0; pn < D / PANEL; ++pn)
                ptx::tma_load_3d(base + L::Q + pn * BM * PANEL_ROW_BYTES, &P.q, L::q_full(base), pn * PANEL, w.h,
                                 w.s.q_begin + w.m0);
        }
        const int kv_head = kv_head_of(P.p, w.h);
        for (unsigned j = 0; j < w.n_tiles; ++j) {
            const unsigned st = j % L::STAGES, parity = (j / L::STAGES - 1) % 2;
            const int row = w.s.k_begin + j * BN;
            if (j >= L::STAGES) wait(L::k_empty(base, st), parity);
            ptx::mbarrier_arrive_expect_tx(L::k_full(base, st), L::TILE_BYTES);
#pragma unroll
            for (int pn = 0; pn < D / PANEL; ++pn)
                ptx::tma_load_3d(base + L::K + st * L::TILE_BYTES + pn * BN * PANEL_ROW_BYTES, &P.k,
                                 L::k_full(base, st), pn * PANEL, kv_head, row);
            if (j >= L::STAGES) wait(L::v_empty(base, st), parity);
            ptx::mbarrier_arrive_expect_tx(L::v_full(base, st), L::TILE_BYTES);
#pragma unroll
            for (int pn = 0; pn < D / PANEL; ++pn)
                ptx::tma_load_3d(base + L::V + st * L::TILE_BYTES + pn * BN * PANEL_ROW_BYTES, &P.v,
                                 L::v_full(base, st), pn * PANEL, kv_head, row);
        }
    }
    __syncwarp();
    if (!w.ragged) return;
    // Zero the V rows of the last tile past the keys (whole 128-byte rows: the swizzle permutes chunks
    // within a row only), then hand the tile over through v_fixed.
    const unsigned last = w.n_tiles - 1, st = last % L::STAGES, first_row = w.s.kv_len - last * BN;
    wait(L::v_full(base, st), last / L::STAGES % 2);
    char* v = smem + L::V + st * L::TILE_BYTES;
    for (unsigned i = first_row * 8 + lane; i < BN * 8; i += WARP)
#pragma unroll
        for (int pn = 0; pn < D / PANEL; ++pn)
            *reinterpret_cast<uint4*>(v + pn * BN * PANEL_ROW_BYTES + i * 16) = make_uint4(0, 0, 0, 0);
    ptx::fence_proxy_async_shared_cta();  // the generic-proxy stores, visible to the tensor cores
    __syncwarp();
    if (lane == 0) ptx::mbarrier_arrive(L::v_fixed(base));
}

template <typename T, int D>
__device__ __forceinline__ void consume(const AttnPrefillTmaParams& P, const Work& w, uint32_t base, char* smem,
                                        unsigned c) {
    using L = Layout<D>;
    constexpr int S = L::STAGES;
    const AttnPrefillParams& p = P.p;
    const unsigned t = threadIdx.x % 128, lane = t % WARP, warp = t / WARP;
    const unsigned row_in_block = c * 64 + warp * 16 + lane / 4, col_in_tile = 2 * (lane % 4);

    if (p.q_f32) {  // this warpgroup's 64 rows, converted while staged
        const unsigned first = c * 64, valid = w.rows_here > first ? w.rows_here - first : 0;
        const size_t q_stride = (size_t)p.num_heads * D;
        const float* g = ptr<const float>(p.q) + (size_t)(w.s.q_begin + w.m0 + first) * q_stride + (size_t)w.h * D;
        const auto offset = [first](unsigned r, unsigned ch) { return swizzled(first + r, ch, BM); };
        flash::load_q_f32<T, D, 128, decltype(offset), 64>(reinterpret_cast<T*>(smem + L::Q), g, q_stride, valid, t,
                                                            offset);
        ptx::fence_proxy_async_shared_cta();
        ptx::named_barrier_sync(Q_STAGED + c, 128);
    } else {
        wait(L::q_full(base), 0);
    }

    const float sl2 = p.scale * LOG2E;
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
    float m_run[2] = {-CUDART_INF_F, -CUDART_INF_F}, l_run[2] = {0.0f, 0.0f};
    uint32_t pa[BN / 16][4];

    // K-major operands (Q, K): 8-row groups 1024 bytes apart (SBO); a k16 step is 32 bytes into the
    // 128-byte row, a new panel every 4 steps. V (N-major): 64-column panels LBO apart, 8-key groups
    // 1024 bytes apart, a k16 step is 16 keys (2048 bytes).
    const uint32_t q_rows = base + L::Q + c * 64 * PANEL_ROW_BYTES;
    const auto k_desc = [&](uint32_t tile, int kk) {
        return wg::make_desc(tile + (kk / 4) * BN * PANEL_ROW_BYTES + (kk % 4) * 32, 16, 1024) | SWIZZLE_128B;
    };
    const auto q_desc = [&](int kk) {
        return wg::make_desc(q_rows + (kk / 4) * BM * PANEL_ROW_BYTES + (kk % 4) * 32, 16, 1024) | SWIZZLE_128B;
    };
    const auto v_desc = [&](uint32_t tile, int kk) {
        return wg::make_desc(tile + kk * 16 * PANEL_ROW_BYTES, BN * PANEL_ROW_BYTES, 1024) | SWIZZLE_128B;
    };

    const auto fence_operands = [&] {  // O and P written by this thread before the wgmmas read them
        wg::fence_registers(o);
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) wg::fence_registers(pa[kk]);
    };
    const auto issue_pv = [&](unsigned j) {  // O += P[j] V[j], not committed
        const uint32_t tile = base + L::V + (j % S) * L::TILE_BYTES;
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) wg::mma_pv<T, D>(o, pa[kk], v_desc(tile, kk));
    };
    // A K or V tile handed back to the producer once this warp's products have read it (one arrival
    // per consumer warp).
    const auto release = [&](uint32_t empty) {
        __syncwarp();
        if (lane == 0) ptx::mbarrier_arrive(empty);
    };
    // After the wait for P[j] V[j]: O is this thread's again, and V[j] goes back.
    const auto release_v = [&](unsigned j) {
        wg::fence_registers(o);
        release(L::v_empty(base, j % S));
    };
    const auto pv = [&](unsigned j) {  // O += P[j] V[j], waited for
        fence_operands();
        wg::wgmma_fence();
        issue_pv(j);
        wg::wgmma_commit();
        ptx::wgmma_wait_group_0();
        release_v(j);
    };
    // One tile. [my turn] S = Q K[j]^T, and O += P[j-1] V[j-1] [your turn]; wait S; mask; softmax_exp
    // (S becomes P[j]) while P[j-1] V[j-1] is still in flight (with INTRA_WG_OVERLAP; otherwise that
    // product is waited for before S is issued); wait P V, release V[j-1]; rescale O and pack P[j].
    // Consumer 1 passed the turn once before the first tile, so it skips its last pass (every bar.sync is
    // matched).
    const uint32_t my_turn = TURN + c, their_turn = TURN + 1 - c;
    const auto step = [&](unsigned j, bool with_pv) {
        wait(L::k_full(base, j % S), j / S % 2);
        if (with_pv) wait(L::v_full(base, (j - 1) % S), (j - 1) / S % 2);
        ptx::named_barrier_sync(my_turn, 256);
        if (with_pv && !INTRA_WG_OVERLAP) pv(j - 1);
        const bool overlapped = with_pv && INTRA_WG_OVERLAP;
        float sacc[BN / 2];
        if (overlapped) fence_operands();
        wg::wgmma_fence();
        const uint32_t k_tile = base + L::K + (j % S) * L::TILE_BYTES;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) wg::mma_qk<T>(sacc, q_desc(kk), k_desc(k_tile, kk), kk > 0);
        wg::wgmma_commit();
        if (overlapped) {
            issue_pv(j - 1);
            wg::wgmma_commit();
        }
        if (c == 0 || j + 1 < w.n_tiles) ptx::named_barrier_arrive(their_turn, 256);
        if (overlapped) ptx::wgmma_wait_group_1();  // S only: groups retire in order
        else ptx::wgmma_wait_group_0();
        wg::fence_registers(sacc);
        release(L::k_empty(base, j % S));

        if (j >= w.mask_from) wg::mask_tile(sacc, p, w.s, w.m0 + row_in_block, j * BN + col_in_tile);
        float alpha[2];
        wg::softmax_exp(sacc, m_run, l_run, alpha, sl2);
        if (overlapped) {
            end_block_after(l_run[0] + l_run[1]);
            ptx::wgmma_wait_group_0();
            release_v(j - 1);
        }
        wg::rescale_pack<T, D>(sacc, pa, o, alpha);
    };

    // The first tile on its own, so that no wgmma sits under a data-dependent branch (ptxas would
    // serialise them all).
    if (w.n_tiles > 0) {
        if (c == 1) ptx::named_barrier_arrive(TURN, 256);  // consumer 0 goes first
        step(0, false);
    }
    for (unsigned j = 1; j < w.n_tiles; ++j) step(j, true);
    if (w.n_tiles > 0) {
        const unsigned last = w.n_tiles - 1;
        wait(L::v_full(base, last % S), last / S % 2);
        if (w.ragged) wait(L::v_fixed(base), 0);
        pv(last);
    }
    wg::store_rows<T, D>(p, w.s, w.h, w.m0 + row_in_block, col_in_tile, o, m_run, l_run, sl2);
}

template <typename T, int D>
__device__ __forceinline__ void forward(const AttnPrefillTmaParams& P) {
    using L = Layout<D>;
    const AttnPrefillParams& p = P.p;
    Work w;
    static_cast<BlockTiles&>(w) = block_tiles<BM, BN>(p);
    if (w.rows_here == 0) return;  // whole block, before any barrier
    w.h = blockIdx.y;
    w.ragged = w.n_tiles * BN > w.s.kv_len;

    ROOFLAB_DYNAMIC_SHARED(uint4, smem_raw);
    const uint32_t raw = ptx::shared_addr(smem_raw), base = (raw + 1023) & ~1023u;
    char* smem = reinterpret_cast<char*>(smem_raw) + (base - raw);
    if (threadIdx.x == 0) {
        ptx::mbarrier_init(L::q_full(base), 1);
        ptx::mbarrier_init(L::v_fixed(base), 1);
        for (int st = 0; st < L::STAGES; ++st) {
            ptx::mbarrier_init(L::k_full(base, st), 1);
            ptx::mbarrier_init(L::v_full(base, st), 1);
            ptx::mbarrier_init(L::k_empty(base, st), CONSUMERS * 4);  // one arrival per consumer warp
            ptx::mbarrier_init(L::v_empty(base, st), CONSUMERS * 4);
        }
        ptx::fence_mbarrier_init();
    }
    __syncthreads();

    // The warpgroup index through a shuffle: visibly warp-uniform to the compiler, which otherwise treats
    // the roles as divergent code (serialising the wgmmas and keeping every role at the launch's 168
    // registers).
    const unsigned role = __shfl_sync(FULL_MASK, threadIdx.x / 128, 0);
    if (role == 0) {
        ptx::setmaxnreg_dec<PRODUCER_REGS>();
        produce<D>(P, w, base, smem);
    } else {
        ptx::setmaxnreg_inc<CONSUMER_REGS>();
        consume<T, D>(P, w, base, smem, role - 1);
    }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace tma

// grid (ceil(max_q_len / 128), H, batch), block 384 threads, dynamic shared memory 1024 + Layout<D>::BYTES
// (the host's tma_shared_bytes). Trapping entries in the sm_80 PTX, as v3's.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ROOFLAB_TMA_BODY(T, D) \
    if (P.p.head_dim == D) tma::forward<T, D>(P);
#else
#define ROOFLAB_TMA_BODY(T, D) __trap();
#endif

#define ROOFLAB_TMA_ENTRY(NAME, T, D)                                                                 \
    extern "C" __global__ void __launch_bounds__(tma::THREADS, 1)                                     \
        NAME(const __grid_constant__ AttnPrefillTmaParams P) {                                        \
        ROOFLAB_TMA_BODY(T, D)                                                                        \
    }

ROOFLAB_TMA_ENTRY(attn_prefill_tma_bf16_hd64, __nv_bfloat16, 64)
ROOFLAB_TMA_ENTRY(attn_prefill_tma_bf16_hd128, __nv_bfloat16, 128)
ROOFLAB_TMA_ENTRY(attn_prefill_tma_f16_hd64, __half, 64)
ROOFLAB_TMA_ENTRY(attn_prefill_tma_f16_hd128, __half, 128)

/* Parameter structs passed BY VALUE to every rooflab kernel (one struct per kernel family).
 *
 * This header is read three ways: by nvcc (C++17) when building the PTX, by bindgen (as C) to make
 * engine/src/ffi/params.rs, and by humans. Device buffers are plain `unsigned long long` device
 * addresses so bindgen turns them into u64 fields and the Rust side can pass any sub-range of an
 * allocation; each field's comment says what it points to (dtype and row-major shape).
 *
 * The layout is pinned twice: the static_asserts below (size and offsets, checked by nvcc and by
 * clang when bindgen runs) and tests/cpu_abi.rs (the `.param .align A .b8 NAME[SIZE]` of every
 * kernel entry in the committed PTX against the Rust size/alignment). Add fields only at the end
 * and keep every struct a multiple of 8 bytes, with explicit padding.
 *
 * Values that change between decode steps (token ids, positions, sequence lengths) are read from
 * small device buffers, never passed here, so a captured CUDA graph can be replayed unchanged.
 */
#ifndef ROOFLAB_PARAMS_H
#define ROOFLAB_PARAMS_H

#ifdef __cplusplus
#include <cstddef>
#define ROOFLAB_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#include <stddef.h>
#define ROOFLAB_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* ---- layers.cu ------------------------------------------------------------------------------ */

/* out[t][i] = table[tokens[t]][i]; a token id >= vocab writes NaN (the host checks ids first). */
typedef struct EmbeddingParams {
    unsigned long long table;  /* bf16 [vocab][hidden] */
    unsigned long long tokens; /* u32 [n_tokens] (device) */
    unsigned long long out;    /* f32 [n_tokens][hidden] */
    unsigned int n_tokens;
    unsigned int hidden;
    unsigned int vocab;
    unsigned int pad0;
} EmbeddingParams;

/* out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight; out may equal x. */
typedef struct RmsNormParams {
    unsigned long long x;      /* f32 [rows][hidden] */
    unsigned long long weight; /* f32 [hidden] */
    unsigned long long out;    /* f32 [rows][hidden] */
    unsigned int rows;
    unsigned int hidden;
    float eps;
    unsigned int pad0;
} RmsNormParams;

/* Rotates q and k in place by positions[t] (HF rotate-half: dimension i pairs with i + head_dim/2).
 * A position >= table_len writes NaN into that token's rows (the host checks positions first). */
typedef struct RopeParams {
    unsigned long long q;         /* f32 [n_tokens][num_heads][head_dim] */
    unsigned long long k;         /* f32 [n_tokens][num_kv_heads][head_dim] */
    unsigned long long cos;       /* f32 [table_len][head_dim/2] */
    unsigned long long sin;       /* f32 [table_len][head_dim/2] */
    unsigned long long positions; /* u32 [n_tokens] (device) */
    unsigned int n_tokens;
    unsigned int num_heads;
    unsigned int num_kv_heads;
    unsigned int head_dim;
    unsigned int table_len;
    unsigned int pad0;
} RopeParams;

/* out[i] = silu(gate[i]) * up[i]; out may equal gate or up. */
typedef struct SiluMulParams {
    unsigned long long gate; /* f32 [n] */
    unsigned long long up;   /* f32 [n] */
    unsigned long long out;  /* f32 [n] */
    unsigned int n;
    unsigned int pad0;
} SiluMulParams;

/* acc[i] += x[i]. */
typedef struct ResidualAddParams {
    unsigned long long acc; /* f32 [n] */
    unsigned long long x;   /* f32 [n] */
    unsigned int n;
    unsigned int pad0;
} ResidualAddParams;

/* dst[i] = bf16(src[i]) (round to nearest even); feeds cuBLAS, whose A and B share one dtype. */
typedef struct CastParams {
    unsigned long long src; /* f32 [n] */
    unsigned long long dst; /* bf16 [n] */
    unsigned int n;
    unsigned int pad0;
} CastParams;

/* k_cache[positions[t]][:] = bf16(k[t][:]), same for v. A position >= cache_len is skipped. */
typedef struct KvAppendParams {
    unsigned long long k;         /* f32 [n_tokens][kv_dim] */
    unsigned long long v;         /* f32 [n_tokens][kv_dim] */
    unsigned long long k_cache;   /* bf16 [cache_len][kv_dim] (one layer of one sequence) */
    unsigned long long v_cache;   /* bf16 [cache_len][kv_dim] */
    unsigned long long positions; /* u32 [n_tokens] (device) */
    unsigned int n_tokens;
    unsigned int kv_dim; /* num_kv_heads * head_dim */
    unsigned int cache_len;
    unsigned int pad0;
} KvAppendParams;

/* dst[i] = bf16(centre + half_width * (2 u_i - 1)), with u_i = (r_i >> 41 + 0.5) / 2^23 and r_i the (i+1)-th
 * SplitMix64 output from state `seed`: the random weights of a model, made on the device. Value for value
 * what engine/src/sample/rng.rs's uniform_at gives on the CPU. */
typedef struct FillUniformParams {
    unsigned long long dst;  /* bf16 [n] */
    unsigned long long n;
    unsigned long long seed;
    float centre;
    float half_width;
} FillUniformParams;

/* ---- gemv.cu -------------------------------------------------------------------------------- */

/* y[j] = (accumulate ? y[j] : 0) + sum_i w[j][i] * x[i]   (f32 accumulation).
 * When k % 8 == 0, w and x must be 16-byte aligned (the kernels use 16-byte loads). */
typedef struct GemvParams {
    unsigned long long w; /* bf16 [n][k] */
    unsigned long long x; /* f32 or bf16 [k] (per entry point) */
    unsigned long long y; /* f32 [n]; must not overlap x */
    unsigned int n;
    unsigned int k;
    unsigned int accumulate;
    unsigned int pad0;
} GemvParams;

/* y[r][j] = (accumulate ? y[r][j] : 0) + sum_i x[r][i] * w[j][i]   (f32 accumulation). */
typedef struct GemmParams {
    unsigned long long w; /* bf16 [n][k] */
    unsigned long long x; /* f32 [m][k] */
    unsigned long long y; /* f32 [m][n]; must not overlap x */
    unsigned int m;
    unsigned int n;
    unsigned int k;
    unsigned int accumulate;
} GemmParams;

/* ---- decode_fused.cu ------------------------------------------------------------------------ */

/* One token's attention inputs: xn = rmsnorm(x) * norm_weight; q = wq xn, k = wk xn, v = wv xn;
 * q and k rotated (rotate-half RoPE) by the token's position `*position`; q written to `q`, k and v
 * rounded to bf16 into cache row `*position`. A position >= cache_len writes NaN into q and leaves
 * the caches alone (the host checks positions first). When hidden % 8 == 0, x, norm_weight and the
 * weights must be 16-byte aligned. */
typedef struct DecodeQkvParams {
    unsigned long long x;           /* f32 [hidden] */
    unsigned long long norm_weight; /* f32 [hidden] */
    unsigned long long wq;          /* bf16 [num_heads * head_dim][hidden] */
    unsigned long long wk;          /* bf16 [num_kv_heads * head_dim][hidden] */
    unsigned long long wv;          /* bf16 [num_kv_heads * head_dim][hidden] */
    unsigned long long q;           /* f32 [num_heads][head_dim] */
    unsigned long long k_cache;     /* bf16 [cache_len][num_kv_heads * head_dim] (one layer) */
    unsigned long long v_cache;     /* bf16 [cache_len][num_kv_heads * head_dim] */
    unsigned long long cos;         /* f32 [cache_len][head_dim / 2] */
    unsigned long long sin;         /* f32 [cache_len][head_dim / 2] */
    unsigned long long position;    /* u32 [1] (device) */
    unsigned int hidden;
    unsigned int num_heads;
    unsigned int num_kv_heads;
    unsigned int head_dim; /* even */
    unsigned int cache_len;
    float eps;
} DecodeQkvParams;

/* out[j] = silu(g) * u with g = w_gate[j] . xn, u = w_up[j] . xn, xn = rmsnorm(x) * norm_weight. */
typedef struct DecodeGateUpParams {
    unsigned long long x;           /* f32 [hidden] */
    unsigned long long norm_weight; /* f32 [hidden] */
    unsigned long long w_gate;      /* bf16 [intermediate][hidden] */
    unsigned long long w_up;        /* bf16 [intermediate][hidden] */
    unsigned long long out;         /* f32 [intermediate]; must not overlap x */
    unsigned int hidden;
    unsigned int intermediate;
    float eps;
    unsigned int pad0;
} DecodeGateUpParams;

/* y[j] = w[j] . (rmsnorm(x) * norm_weight): the final norm and the output head of one token. */
typedef struct GemvRmsNormParams {
    unsigned long long w;           /* bf16 [n][k] */
    unsigned long long x;           /* f32 [k] */
    unsigned long long norm_weight; /* f32 [k] */
    unsigned long long y;           /* f32 [n]; must not overlap x */
    unsigned int n;
    unsigned int k;
    float eps;
    unsigned int pad0;
} GemvRmsNormParams;

/* ---- attention_decode.cu -------------------------------------------------------------------- */

/* One query token per sequence against its contiguous KV cache. Sequence b sees cache rows
 * 0 .. seq_lens[b] (its query sits at position seq_lens[b] - 1, so no causal mask is needed).
 * Query head h uses KV head h / (num_heads / num_kv_heads). The split kernel writes one partial
 * (normalised output, running max, running sum) per split; the combine kernel merges them. */
typedef struct AttnDecodeParams {
    unsigned long long q;           /* f32 [batch][num_heads][head_dim] */
    unsigned long long k_cache;     /* bf16 [batch][cache_len][num_kv_heads][head_dim] */
    unsigned long long v_cache;     /* bf16 [batch][cache_len][num_kv_heads][head_dim] */
    unsigned long long seq_lens;    /* u32 [batch] (device), each in 1 ..= cache_len */
    unsigned long long out;         /* f32 [batch][num_heads][head_dim] */
    unsigned long long partial_out; /* f32 [batch][num_heads][num_splits][head_dim] */
    unsigned long long partial_ml;  /* f32 [batch][num_heads][num_splits][2] (max, sum) */
    unsigned int batch;
    unsigned int num_heads;
    unsigned int num_kv_heads;
    unsigned int head_dim;
    unsigned int num_splits;
    unsigned int cache_len;
    float scale;
    unsigned int pad0;
} AttnDecodeParams;

/* ---- attention_prefill.cu ------------------------------------------------------------------- */

/* Prefill attention over a varlen batch. Sequence b owns query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]
 * of q/out; its keys are
 *   varlen layout (cu_seqlens_k != 0): rows cu_seqlens_k[b] .. cu_seqlens_k[b+1] of k/v (FlashAttention's
 *     layout, k/v [total_k][num_kv_heads][head_dim]);
 *   cache layout (cu_seqlens_k == 0): the first min(seq_lens_k[b], cache_len) rows of k/v [batch][cache_len]
 *     [num_kv_heads][head_dim] (the model's contiguous KV cache).
 * Query i of sequence b sits at position q_offsets[b] + i among its keys (0 when q_offsets is 0) and, when
 * causal, sees keys 0 ..= q_offsets[b] + i (chunked prefill: new tokens attend to the cached ones).
 * Query head h reads KV head h / (num_heads / num_kv_heads). q, k, v and out hold `elem` values (0 bf16,
 * 1 f16) unless q_f32 / out_f32 make q / out f32. lse (optional, 0 = not written) is the natural-log
 * log-sum-exp of the scaled scores, f32 [num_heads][total_q] with total_q = cu_seqlens_q[batch]; -inf
 * (and a zero output row) for a query that sees no key. `scores` is the f32 scratch of the materialising
 * baseline, [total_q][num_heads][max_kv_len]; the other kernels ignore it and max_kv_len. */
typedef struct AttnPrefillParams {
    unsigned long long q;            /* elem or f32 [total_q][num_heads][head_dim], 16-byte aligned */
    unsigned long long k;            /* elem [rows][num_kv_heads][head_dim] (see above), 16-byte aligned */
    unsigned long long v;            /* elem, same layout as k */
    unsigned long long out;          /* elem or f32 [total_q][num_heads][head_dim] */
    unsigned long long lse;          /* f32 [num_heads][total_q], or 0 */
    unsigned long long cu_seqlens_q; /* u32 [batch + 1] (device) */
    unsigned long long cu_seqlens_k; /* u32 [batch + 1] (device), or 0 for the cache layout */
    unsigned long long seq_lens_k;   /* u32 [batch] (device), cache layout only */
    unsigned long long q_offsets;    /* u32 [batch] (device), or 0 (all zero) */
    unsigned long long scores;       /* f32 [total_q][num_heads][max_kv_len], materialising baseline only */
    unsigned int batch;
    unsigned int num_heads;
    unsigned int num_kv_heads;
    unsigned int head_dim;
    unsigned int cache_len;  /* rows per sequence of the cache layout (0 for varlen) */
    unsigned int max_kv_len; /* row length of `scores`: at least every sequence's key count */
    unsigned int causal;
    unsigned int elem;    /* 0 = bf16, 1 = f16 */
    unsigned int q_f32;   /* 1: q is f32 */
    unsigned int out_f32; /* 1: out is f32 */
    float scale;          /* softmax scale, > 0 */
    unsigned int pad0;
} AttnPrefillParams;

/* A TMA tensor map: CUDA's CUtensorMap (128 opaque bytes, 64-byte aligned), encoded on the host by
 * cuTensorMapEncodeTiled (or the CPU emulator's encoder) for one device buffer, and read by the TMA unit
 * from the kernel's parameter space (the kernel takes its parameters as `const __grid_constant__`). */
typedef struct __attribute__((aligned(64))) RlTensorMap {
    unsigned long long opaque[16];
} RlTensorMap;

/* The TMA prefill kernel (attn_prefill_tma_*): the same parameters plus one tensor map per operand it
 * loads with TMA, each a 3-D view {head_dim, heads, rows} (innermost first) of its buffer with 128-byte
 * swizzled boxes of {64, 1, rows per tile}. `q` is unused (zero) when p.q_f32 (the kernel stages f32
 * queries itself). */
typedef struct __attribute__((aligned(64))) AttnPrefillTmaParams {
    AttnPrefillParams p;
    RlTensorMap q; /* q [total_q][num_heads][head_dim] */
    RlTensorMap k; /* k [rows][num_kv_heads][head_dim] */
    RlTensorMap v; /* v, same layout as k */
} AttnPrefillTmaParams;

/* kernels-cuda/layout_probe.cu, the wgmma probes: one product over k_steps k16 steps (4 or 8) on f16
 * operands the host laid out. The images go to shared memory as they are: A's (ss only) at a 1024-byte
 * aligned base, B's at the next 1024-byte boundary after it; a_bytes + b_bytes at most 96 KB. */
typedef struct LayoutProbeMmaParams {
    unsigned long long a;         /* ss: A's shared-memory image; rs: A f16 [64][16 * k_steps], row-major */
    unsigned long long b;         /* B's shared-memory image */
    unsigned long long out;       /* f32 [64][n], row-major */
    unsigned long long a_desc[8]; /* per k16 step: A's matrix descriptor, start address relative to its image (ss) */
    unsigned long long b_desc[8]; /* per k16 step: B's, relative to its image */
    unsigned int a_bytes;         /* image sizes, multiples of 16 (a_bytes 0 for rs) */
    unsigned int b_bytes;
    unsigned int k_steps;
    unsigned int pad0;
} LayoutProbeMmaParams;

/* The TMA probe: one box of `map` at coordinates (x, y, z), innermost first, into shared memory at a
 * 1024-byte aligned base; its bytes (at most 32 KB) then copied to `out` as they landed. */
typedef struct __attribute__((aligned(64))) LayoutProbeTmaParams {
    RlTensorMap map;
    unsigned long long out;
    int x, y, z;
    unsigned int bytes;
} LayoutProbeTmaParams;

/* ---- layout pins ---------------------------------------------------------------------------- */

ROOFLAB_STATIC_ASSERT(sizeof(EmbeddingParams) == 40, "EmbeddingParams size");
ROOFLAB_STATIC_ASSERT(offsetof(EmbeddingParams, n_tokens) == 24, "EmbeddingParams.n_tokens");
ROOFLAB_STATIC_ASSERT(offsetof(EmbeddingParams, vocab) == 32, "EmbeddingParams.vocab");

ROOFLAB_STATIC_ASSERT(sizeof(RmsNormParams) == 40, "RmsNormParams size");
ROOFLAB_STATIC_ASSERT(offsetof(RmsNormParams, rows) == 24, "RmsNormParams.rows");
ROOFLAB_STATIC_ASSERT(offsetof(RmsNormParams, eps) == 32, "RmsNormParams.eps");

ROOFLAB_STATIC_ASSERT(sizeof(RopeParams) == 64, "RopeParams size");
ROOFLAB_STATIC_ASSERT(offsetof(RopeParams, positions) == 32, "RopeParams.positions");
ROOFLAB_STATIC_ASSERT(offsetof(RopeParams, n_tokens) == 40, "RopeParams.n_tokens");
ROOFLAB_STATIC_ASSERT(offsetof(RopeParams, table_len) == 56, "RopeParams.table_len");

ROOFLAB_STATIC_ASSERT(sizeof(SiluMulParams) == 32, "SiluMulParams size");
ROOFLAB_STATIC_ASSERT(offsetof(SiluMulParams, n) == 24, "SiluMulParams.n");

ROOFLAB_STATIC_ASSERT(sizeof(ResidualAddParams) == 24, "ResidualAddParams size");
ROOFLAB_STATIC_ASSERT(offsetof(ResidualAddParams, n) == 16, "ResidualAddParams.n");

ROOFLAB_STATIC_ASSERT(sizeof(CastParams) == 24, "CastParams size");
ROOFLAB_STATIC_ASSERT(offsetof(CastParams, n) == 16, "CastParams.n");

ROOFLAB_STATIC_ASSERT(sizeof(FillUniformParams) == 32, "FillUniformParams size");
ROOFLAB_STATIC_ASSERT(offsetof(FillUniformParams, seed) == 16, "FillUniformParams.seed");
ROOFLAB_STATIC_ASSERT(offsetof(FillUniformParams, half_width) == 28, "FillUniformParams.half_width");

ROOFLAB_STATIC_ASSERT(sizeof(KvAppendParams) == 56, "KvAppendParams size");
ROOFLAB_STATIC_ASSERT(offsetof(KvAppendParams, positions) == 32, "KvAppendParams.positions");
ROOFLAB_STATIC_ASSERT(offsetof(KvAppendParams, n_tokens) == 40, "KvAppendParams.n_tokens");
ROOFLAB_STATIC_ASSERT(offsetof(KvAppendParams, cache_len) == 48, "KvAppendParams.cache_len");

ROOFLAB_STATIC_ASSERT(sizeof(GemvParams) == 40, "GemvParams size");
ROOFLAB_STATIC_ASSERT(offsetof(GemvParams, n) == 24, "GemvParams.n");
ROOFLAB_STATIC_ASSERT(offsetof(GemvParams, accumulate) == 32, "GemvParams.accumulate");

ROOFLAB_STATIC_ASSERT(sizeof(GemmParams) == 40, "GemmParams size");
ROOFLAB_STATIC_ASSERT(offsetof(GemmParams, m) == 24, "GemmParams.m");
ROOFLAB_STATIC_ASSERT(offsetof(GemmParams, accumulate) == 36, "GemmParams.accumulate");

ROOFLAB_STATIC_ASSERT(sizeof(DecodeQkvParams) == 112, "DecodeQkvParams size");
ROOFLAB_STATIC_ASSERT(offsetof(DecodeQkvParams, position) == 80, "DecodeQkvParams.position");
ROOFLAB_STATIC_ASSERT(offsetof(DecodeQkvParams, hidden) == 88, "DecodeQkvParams.hidden");
ROOFLAB_STATIC_ASSERT(offsetof(DecodeQkvParams, eps) == 108, "DecodeQkvParams.eps");

ROOFLAB_STATIC_ASSERT(sizeof(DecodeGateUpParams) == 56, "DecodeGateUpParams size");
ROOFLAB_STATIC_ASSERT(offsetof(DecodeGateUpParams, hidden) == 40, "DecodeGateUpParams.hidden");
ROOFLAB_STATIC_ASSERT(offsetof(DecodeGateUpParams, eps) == 48, "DecodeGateUpParams.eps");

ROOFLAB_STATIC_ASSERT(sizeof(GemvRmsNormParams) == 48, "GemvRmsNormParams size");
ROOFLAB_STATIC_ASSERT(offsetof(GemvRmsNormParams, n) == 32, "GemvRmsNormParams.n");
ROOFLAB_STATIC_ASSERT(offsetof(GemvRmsNormParams, eps) == 40, "GemvRmsNormParams.eps");

ROOFLAB_STATIC_ASSERT(sizeof(AttnDecodeParams) == 88, "AttnDecodeParams size");
ROOFLAB_STATIC_ASSERT(offsetof(AttnDecodeParams, partial_ml) == 48, "AttnDecodeParams.partial_ml");
ROOFLAB_STATIC_ASSERT(offsetof(AttnDecodeParams, batch) == 56, "AttnDecodeParams.batch");
ROOFLAB_STATIC_ASSERT(offsetof(AttnDecodeParams, scale) == 80, "AttnDecodeParams.scale");

ROOFLAB_STATIC_ASSERT(sizeof(AttnPrefillParams) == 128, "AttnPrefillParams size");
ROOFLAB_STATIC_ASSERT(offsetof(AttnPrefillParams, q_offsets) == 64, "AttnPrefillParams.q_offsets");
ROOFLAB_STATIC_ASSERT(offsetof(AttnPrefillParams, batch) == 80, "AttnPrefillParams.batch");
ROOFLAB_STATIC_ASSERT(offsetof(AttnPrefillParams, causal) == 104, "AttnPrefillParams.causal");
ROOFLAB_STATIC_ASSERT(offsetof(AttnPrefillParams, scale) == 120, "AttnPrefillParams.scale");

ROOFLAB_STATIC_ASSERT(sizeof(RlTensorMap) == 128, "RlTensorMap size");
ROOFLAB_STATIC_ASSERT(sizeof(AttnPrefillTmaParams) == 512, "AttnPrefillTmaParams size");
ROOFLAB_STATIC_ASSERT(offsetof(AttnPrefillTmaParams, q) == 128, "AttnPrefillTmaParams.q");
ROOFLAB_STATIC_ASSERT(offsetof(AttnPrefillTmaParams, v) == 384, "AttnPrefillTmaParams.v");

ROOFLAB_STATIC_ASSERT(sizeof(LayoutProbeMmaParams) == 168, "LayoutProbeMmaParams size");
ROOFLAB_STATIC_ASSERT(offsetof(LayoutProbeMmaParams, b_desc) == 88, "LayoutProbeMmaParams.b_desc");
ROOFLAB_STATIC_ASSERT(offsetof(LayoutProbeMmaParams, k_steps) == 160, "LayoutProbeMmaParams.k_steps");
ROOFLAB_STATIC_ASSERT(sizeof(LayoutProbeTmaParams) == 192, "LayoutProbeTmaParams size");
ROOFLAB_STATIC_ASSERT(offsetof(LayoutProbeTmaParams, bytes) == 148, "LayoutProbeTmaParams.bytes");

#endif /* ROOFLAB_PARAMS_H */

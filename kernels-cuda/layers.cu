// Per-token layers of a Llama decoder: embedding lookup, RMSNorm, rotary embedding (in place on q
// and k), SwiGLU silu(gate) * up, residual add, f32 -> bf16 cast and KV-cache append; and the fill
// that makes a random model's weights where they are used.
//
// All of these are memory-bound and tiny next to the matrix products, so each is written the
// plainest way that reads its input once: one block per row (or a grid-stride loop), f32 math.
// The CPU oracle is engine/src/reference/layers.rs; the Rust wrappers are engine/src/kernels/layers.rs.

#include "common.cuh"

using namespace rl;

// One block per token; threads stride over the hidden dimension.
extern "C" __global__ void embedding_bf16(const EmbeddingParams p) {
    const unsigned t = blockIdx.x;
    if (t >= p.n_tokens) return;
    const unsigned token = ptr<const unsigned>(p.tokens)[t];
    float* out = ptr<float>(p.out) + (size_t)t * p.hidden;
    if (token >= p.vocab) {
        for (unsigned i = threadIdx.x; i < p.hidden; i += blockDim.x) out[i] = __int_as_float(0x7fc00000);
        return;
    }
    const __nv_bfloat16* row = ptr<const __nv_bfloat16>(p.table) + (size_t)token * p.hidden;
    for (unsigned i = threadIdx.x; i < p.hidden; i += blockDim.x) out[i] = bf16_to_f32(row[i]);
}

// One block per row: sum of squares (f32, block reduction), then scale. Each thread writes only
// elements it read itself after the reduction, so out == x is safe.
extern "C" __global__ void rmsnorm_f32(const RmsNormParams p) {
    __shared__ float scratch[32];
    const unsigned r = blockIdx.x;
    if (r >= p.rows) return;
    const float* x = ptr<const float>(p.x) + (size_t)r * p.hidden;
    const float* w = ptr<const float>(p.weight);
    float* out = ptr<float>(p.out) + (size_t)r * p.hidden;
    float sum_sq = 0.0f;
    for (unsigned i = threadIdx.x; i < p.hidden; i += blockDim.x) sum_sq += x[i] * x[i];
    sum_sq = block_sum(sum_sq, scratch);
    const float inv_rms = rsqrtf(sum_sq / (float)p.hidden + p.eps);
    for (unsigned i = threadIdx.x; i < p.hidden; i += blockDim.x) out[i] = w[i] * (x[i] * inv_rms);
}

// One block per token; threads stride over (head, pair) for the q heads then the k heads.
extern "C" __global__ void rope_f32(const RopeParams p) {
    const unsigned t = blockIdx.x;
    if (t >= p.n_tokens) return;
    const unsigned half = p.head_dim / 2;
    const unsigned pos = ptr<const unsigned>(p.positions)[t];
    const bool bad = pos >= p.table_len;
    const float* cos_row = ptr<const float>(p.cos) + (size_t)(bad ? 0 : pos) * half;
    const float* sin_row = ptr<const float>(p.sin) + (size_t)(bad ? 0 : pos) * half;
    float* q = ptr<float>(p.q) + (size_t)t * p.num_heads * p.head_dim;
    float* k = ptr<float>(p.k) + (size_t)t * p.num_kv_heads * p.head_dim;
    const unsigned pairs = (p.num_heads + p.num_kv_heads) * half;
    for (unsigned idx = threadIdx.x; idx < pairs; idx += blockDim.x) {
        const unsigned head = idx / half;
        const unsigned i = idx % half;
        float* x = head < p.num_heads ? q + (size_t)head * p.head_dim : k + (size_t)(head - p.num_heads) * p.head_dim;
        const float a = x[i];
        const float b = x[i + half];
        if (bad) {
            x[i] = x[i + half] = __int_as_float(0x7fc00000);
        } else {
            const float c = cos_row[i];
            const float s = sin_row[i];
            x[i] = a * c - b * s;
            x[i + half] = b * c + a * s;
        }
    }
}

// Grid-stride loops over n elements.
extern "C" __global__ void silu_mul_f32(const SiluMulParams p) {
    const float* gate = ptr<const float>(p.gate);
    const float* up = ptr<const float>(p.up);
    float* out = ptr<float>(p.out);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void residual_add_f32(const ResidualAddParams p) {
    float* acc = ptr<float>(p.acc);
    const float* x = ptr<const float>(p.x);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (size_t)gridDim.x * blockDim.x)
        acc[i] += x[i];
}

extern "C" __global__ void cast_f32_to_bf16(const CastParams p) {
    const float* src = ptr<const float>(p.src);
    __nv_bfloat16* dst = ptr<__nv_bfloat16>(p.dst);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f32_to_bf16(src[i]);
}

// One block per token: writes its k and v rows (rounded to bf16) at the token's cache position.
extern "C" __global__ void kv_append_bf16(const KvAppendParams p) {
    const unsigned t = blockIdx.x;
    if (t >= p.n_tokens) return;
    const unsigned pos = ptr<const unsigned>(p.positions)[t];
    if (pos >= p.cache_len) return;
    const float* k = ptr<const float>(p.k) + (size_t)t * p.kv_dim;
    const float* v = ptr<const float>(p.v) + (size_t)t * p.kv_dim;
    __nv_bfloat16* kc = ptr<__nv_bfloat16>(p.k_cache) + (size_t)pos * p.kv_dim;
    __nv_bfloat16* vc = ptr<__nv_bfloat16>(p.v_cache) + (size_t)pos * p.kv_dim;
    for (unsigned i = threadIdx.x; i < p.kv_dim; i += blockDim.x) {
        kc[i] = f32_to_bf16(k[i]);
        vc[i] = f32_to_bf16(v[i]);
    }
}

// The (i+1)-th output of SplitMix64 from state `seed` (engine/src/sample/rng.rs, Rng::next_u64): a
// counter-based stream, so any thread computes any element.
__device__ __forceinline__ unsigned long long splitmix64_at(unsigned long long seed, unsigned long long i) {
    unsigned long long z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Grid-stride. The arithmetic is spelled with the _rn intrinsics so that nvcc cannot contract it into an
// FMA: each step rounds as the CPU's does (uniform_at), and the values match bit for bit.
extern "C" __global__ void fill_uniform_bf16(const FillUniformParams p) {
    __nv_bfloat16* dst = ptr<__nv_bfloat16>(p.dst);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (size_t)gridDim.x * blockDim.x) {
        // 23 random bits plus a half, over 2^23: exact, in (0, 1); so 2u - 1 is exact too, and never 0.
        const float u = __fmul_rn((float)(splitmix64_at(p.seed, i) >> 41) + 0.5f, 1.0f / 8388608.0f);
        const float centred = __fadd_rn(__fmul_rn(2.0f, u), -1.0f);
        dst[i] = f32_to_bf16(__fadd_rn(p.centre, __fmul_rn(p.half_width, centred)));
    }
}

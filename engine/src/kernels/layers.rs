//! Wrappers of kernels-cuda/layers.cu: embedding, RMSNorm, RoPE, SwiGLU, residual add, f32 -> bf16
//! cast, KV-cache append, and the random fill of a model's weights. Row kernels run one block per row;
//! element-wise ones grid-stride.

use half::bf16;

use super::{as_u32, positive, DevSpan, Launcher, LAYERS};
use crate::cuda::{elementwise_grid, grid};
use crate::ffi::params::{
    CastParams, EmbeddingParams, FillUniformParams, KvAppendParams, ResidualAddParams, RmsNormParams, RopeParams,
    SiluMulParams,
};
use crate::sample::uniform_half_width;
use crate::{Error, Result};

const ROW_THREADS: u32 = 256;
const ELEMENTWISE_THREADS: u32 = 256;
const MAX_ELEMENTWISE_BLOCKS: u32 = 4096;

/// `out[t] = table[tokens[t]]` widened to f32. Token ids are read on the device; an id `>= vocab`
/// gives a NaN row (check ids on the host before uploading them).
pub fn embedding(
    k: &impl Launcher,
    table: DevSpan<bf16>,
    vocab: usize,
    hidden: usize,
    tokens: DevSpan<u32>,
    n_tokens: usize,
    out: DevSpan<f32>,
) -> Result<()> {
    positive("embedding hidden size", hidden)?;
    if n_tokens == 0 {
        return Ok(());
    }
    table.expect_len("embedding table", vocab * hidden)?;
    tokens.expect_len("embedding token ids", n_tokens)?;
    out.expect_len("embedding output", n_tokens * hidden)?;
    let params = EmbeddingParams {
        table: table.addr(),
        tokens: tokens.addr(),
        out: out.addr(),
        n_tokens: as_u32("n_tokens", n_tokens)?,
        hidden: as_u32("hidden", hidden)?,
        vocab: as_u32("vocab", vocab)?,
        pad0: 0,
    };
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(LAYERS, "embedding_bf16", grid((params.n_tokens, 1, 1), ROW_THREADS), params) }
}

/// `out = x / rms(x) * weight` for each of `rows` rows of `hidden`; `out` may be `x`.
pub fn rmsnorm(
    k: &impl Launcher,
    x: DevSpan<f32>,
    weight: DevSpan<f32>,
    out: DevSpan<f32>,
    rows: usize,
    hidden: usize,
    eps: f32,
) -> Result<()> {
    positive("rmsnorm hidden size", hidden)?;
    if rows == 0 {
        return Ok(());
    }
    x.expect_len("rmsnorm input", rows * hidden)?;
    weight.expect_len("rmsnorm weight", hidden)?;
    out.expect_len("rmsnorm output", rows * hidden)?;
    let params = RmsNormParams {
        x: x.addr(),
        weight: weight.addr(),
        out: out.addr(),
        rows: as_u32("rows", rows)?,
        hidden: as_u32("hidden", hidden)?,
        eps,
        pad0: 0,
    };
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(LAYERS, "rmsnorm_f32", grid((params.rows, 1, 1), ROW_THREADS), params) }
}

/// Head layout of the q and k rows RoPE rotates.
#[derive(Debug, Clone, Copy)]
pub struct RopeShape {
    pub n_tokens: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Rotates `q [n][num_heads][head_dim]` and `k [n][num_kv_heads][head_dim]` in place by the
/// positions in `positions` (device), with `cos`/`sin` tables `[table_len][head_dim / 2]`.
/// A position `>= table_len` gives NaN rows (check positions on the host).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    k: &impl Launcher,
    q: DevSpan<f32>,
    kk: DevSpan<f32>,
    cos: DevSpan<f32>,
    sin: DevSpan<f32>,
    table_len: usize,
    positions: DevSpan<u32>,
    shape: RopeShape,
) -> Result<()> {
    let RopeShape { n_tokens, num_heads, num_kv_heads, head_dim } = shape;
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(Error::Invalid(format!("rope needs an even positive head_dim, got {head_dim}")));
    }
    if n_tokens == 0 {
        return Ok(());
    }
    q.expect_len("rope q", n_tokens * num_heads * head_dim)?;
    kk.expect_len("rope k", n_tokens * num_kv_heads * head_dim)?;
    cos.expect_len("rope cos table", table_len * head_dim / 2)?;
    sin.expect_len("rope sin table", table_len * head_dim / 2)?;
    positions.expect_len("rope positions", n_tokens)?;
    let params = RopeParams {
        q: q.addr(),
        k: kk.addr(),
        cos: cos.addr(),
        sin: sin.addr(),
        positions: positions.addr(),
        n_tokens: as_u32("n_tokens", n_tokens)?,
        num_heads: as_u32("num_heads", num_heads)?,
        num_kv_heads: as_u32("num_kv_heads", num_kv_heads)?,
        head_dim: as_u32("head_dim", head_dim)?,
        table_len: as_u32("table_len", table_len)?,
        pad0: 0,
    };
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(LAYERS, "rope_f32", grid((params.n_tokens, 1, 1), 128), params) }
}

/// `out = silu(gate) * up` over `n` elements; `out` may be `gate` or `up`.
pub fn silu_mul(k: &impl Launcher, gate: DevSpan<f32>, up: DevSpan<f32>, out: DevSpan<f32>, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    gate.expect_len("silu_mul gate", n)?;
    up.expect_len("silu_mul up", n)?;
    out.expect_len("silu_mul output", n)?;
    let params = SiluMulParams { gate: gate.addr(), up: up.addr(), out: out.addr(), n: as_u32("n", n)?, pad0: 0 };
    let config = elementwise_grid(n, ELEMENTWISE_THREADS, MAX_ELEMENTWISE_BLOCKS);
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(LAYERS, "silu_mul_f32", config, params) }
}

/// `acc += x` over `n` elements.
pub fn residual_add(k: &impl Launcher, acc: DevSpan<f32>, x: DevSpan<f32>, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    acc.expect_len("residual accumulator", n)?;
    x.expect_len("residual input", n)?;
    let params = ResidualAddParams { acc: acc.addr(), x: x.addr(), n: as_u32("n", n)?, pad0: 0 };
    let config = elementwise_grid(n, ELEMENTWISE_THREADS, MAX_ELEMENTWISE_BLOCKS);
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(LAYERS, "residual_add_f32", config, params) }
}

/// `dst = bf16(src)` (round to nearest even) over `n` elements.
pub fn cast_to_bf16(k: &impl Launcher, src: DevSpan<f32>, dst: DevSpan<bf16>, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    src.expect_len("cast input", n)?;
    dst.expect_len("cast output", n)?;
    let params = CastParams { src: src.addr(), dst: dst.addr(), n: as_u32("n", n)?, pad0: 0 };
    let config = elementwise_grid(n, ELEMENTWISE_THREADS, MAX_ELEMENTWISE_BLOCKS);
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(LAYERS, "cast_f32_to_bf16", config, params) }
}

/// Fills `dst` with bf16 values uniform around `centre` with standard deviation `spread`: element `i` is
/// `bf16(`[`crate::sample::uniform_at`]`(seed, i, centre, uniform_half_width(spread)))`, bit for bit what
/// [`crate::sample::uniform_values`] makes on the host, without the host making or copying any of it.
pub fn fill_uniform(k: &impl Launcher, dst: DevSpan<bf16>, seed: u64, centre: f32, spread: f32) -> Result<()> {
    if dst.is_empty() {
        return Ok(());
    }
    let params = FillUniformParams {
        dst: dst.addr(),
        n: dst.len() as u64,
        seed,
        centre,
        half_width: uniform_half_width(spread),
    };
    let config = elementwise_grid(dst.len(), ELEMENTWISE_THREADS, MAX_ELEMENTWISE_BLOCKS);
    // SAFETY: the kernel writes elements 0 .. dst.len() of dst and reads nothing.
    unsafe { k.launch(LAYERS, "fill_uniform_bf16", config, params) }
}

/// Writes the `n_tokens` rows of `k`/`v` (`[n][kv_dim]` f32) into one sequence's caches
/// (`[cache_len][kv_dim]` bf16) at the rows given by `positions` (device). Positions
/// `>= cache_len` are skipped (check them on the host).
#[allow(clippy::too_many_arguments)]
pub fn kv_append(
    k: &impl Launcher,
    keys: DevSpan<f32>,
    values: DevSpan<f32>,
    k_cache: DevSpan<bf16>,
    v_cache: DevSpan<bf16>,
    cache_len: usize,
    positions: DevSpan<u32>,
    n_tokens: usize,
    kv_dim: usize,
) -> Result<()> {
    positive("kv_dim", kv_dim)?;
    if n_tokens == 0 {
        return Ok(());
    }
    keys.expect_len("kv_append keys", n_tokens * kv_dim)?;
    values.expect_len("kv_append values", n_tokens * kv_dim)?;
    k_cache.expect_len("key cache", cache_len * kv_dim)?;
    v_cache.expect_len("value cache", cache_len * kv_dim)?;
    positions.expect_len("kv_append positions", n_tokens)?;
    let params = KvAppendParams {
        k: keys.addr(),
        v: values.addr(),
        k_cache: k_cache.addr(),
        v_cache: v_cache.addr(),
        positions: positions.addr(),
        n_tokens: as_u32("n_tokens", n_tokens)?,
        kv_dim: as_u32("kv_dim", kv_dim)?,
        cache_len: as_u32("cache_len", cache_len)?,
        pad0: 0,
    };
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(LAYERS, "kv_append_bf16", grid((params.n_tokens, 1, 1), 128), params) }
}

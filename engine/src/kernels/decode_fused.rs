//! Wrappers of kernels-cuda/decode_fused.cu: the one-token GEMVs of a decode step with the RMSNorm,
//! RoPE, KV-cache append and SwiGLU around them folded in (6 launches per layer instead of 14). The
//! unfused sequence (layers.rs and gemv.rs) computes the same thing and is the baseline.

use half::bf16;

use super::{as_u32, positive, DevSpan, Launcher, DECODE_FUSED};
use crate::cuda::grid;
use crate::ffi::params::{DecodeGateUpParams, DecodeQkvParams, GemvRmsNormParams};
use crate::{Error, Result};

/// Warps per block (FUSED_WARPS in decode_fused.cu); each warp is one work unit.
const WARPS_PER_BLOCK: usize = 8;

fn launch_grid(units: usize) -> Result<cudarc::driver::LaunchConfig> {
    let blocks = as_u32("fused decode blocks", units.div_ceil(WARPS_PER_BLOCK))?;
    Ok(grid((blocks, 1, 1), 32 * WARPS_PER_BLOCK as u32))
}

/// The normed input of a fused GEMV: `rmsnorm(x) * norm` is what the weights multiply. With `hidden`
/// a multiple of 8 the kernels read 16 bytes at a time, so `x` and `norm` must be 16-byte aligned.
#[derive(Clone, Copy)]
pub struct NormedInput<'a> {
    pub x: DevSpan<'a, f32>,
    pub norm: DevSpan<'a, f32>,
    pub hidden: usize,
    pub eps: f32,
}

impl NormedInput<'_> {
    fn check(&self, what: &str) -> Result<u32> {
        positive(&format!("{what} hidden size"), self.hidden)?;
        self.x.expect_len(&format!("{what} input"), self.hidden)?;
        self.norm.expect_len(&format!("{what} norm weight"), self.hidden)?;
        if self.hidden.is_multiple_of(8) {
            self.x.expect_aligned(&format!("{what} input"), 16)?;
            self.norm.expect_aligned(&format!("{what} norm weight"), 16)?;
        }
        as_u32("hidden", self.hidden)
    }

    /// A weight `[rows][hidden]` this input multiplies.
    fn check_weight(&self, what: &str, w: DevSpan<bf16>, rows: usize) -> Result<()> {
        w.expect_len(what, rows * self.hidden)?;
        if self.hidden.is_multiple_of(8) {
            w.expect_aligned(what, 16)?;
        }
        Ok(())
    }

    /// An output the kernel writes while every warp still reads `x` and `norm`.
    fn check_output<T>(&self, what: &str, out: DevSpan<T>) -> Result<()> {
        if out.overlaps(&self.x) || out.overlaps(&self.norm) {
            return Err(Error::Invalid(format!("{what} overlaps the input or the norm weight")));
        }
        Ok(())
    }
}

/// One layer's attention projections.
#[derive(Clone, Copy)]
pub struct QkvWeights<'a> {
    pub q: DevSpan<'a, bf16>,
    pub k: DevSpan<'a, bf16>,
    pub v: DevSpan<'a, bf16>,
}

/// Where the token's q, k and v go: `q [num_heads][head_dim]`, and row `*position` of one layer's
/// caches `[cache_len][num_kv_heads * head_dim]` (bf16), rotated by the RoPE tables
/// `[cache_len][head_dim / 2]`.
#[derive(Clone, Copy)]
pub struct QkvOutputs<'a> {
    pub q: DevSpan<'a, f32>,
    pub k_cache: DevSpan<'a, bf16>,
    pub v_cache: DevSpan<'a, bf16>,
    pub cache_len: usize,
    pub rope_cos: DevSpan<'a, f32>,
    pub rope_sin: DevSpan<'a, f32>,
    /// One u32 on the device: the token's position (a position `>= cache_len` gives a NaN q and
    /// leaves the caches alone; check it on the host).
    pub position: DevSpan<'a, u32>,
}

/// Head layout of [`decode_qkv`].
#[derive(Debug, Clone, Copy)]
pub struct QkvHeads {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// `rmsnorm(x) * norm` through the q, k and v projections, RoPE on q and k, q into `out.q` and k, v
/// (bf16) into the caches at the token's position: what `rmsnorm`, three `gemv`s, `rope` and
/// `kv_append` do for one token, in one launch.
pub fn decode_qkv(
    kern: &impl Launcher,
    input: NormedInput,
    w: QkvWeights,
    out: QkvOutputs,
    heads: QkvHeads,
) -> Result<()> {
    let QkvHeads { num_heads, num_kv_heads, head_dim } = heads;
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(Error::Invalid(format!("fused qkv needs an even positive head_dim, got {head_dim}")));
    }
    positive("fused qkv query heads", num_heads)?;
    positive("fused qkv KV heads", num_kv_heads)?;
    positive("fused qkv cache length", out.cache_len)?;
    let hidden = input.check("fused qkv")?;
    let (q_dim, kv_dim) = (num_heads * head_dim, num_kv_heads * head_dim);
    input.check_weight("fused qkv q weight", w.q, q_dim)?;
    input.check_weight("fused qkv k weight", w.k, kv_dim)?;
    input.check_weight("fused qkv v weight", w.v, kv_dim)?;
    out.q.expect_len("fused qkv q output", q_dim)?;
    out.k_cache.expect_len("key cache", out.cache_len * kv_dim)?;
    out.v_cache.expect_len("value cache", out.cache_len * kv_dim)?;
    out.rope_cos.expect_len("rope cos table", out.cache_len * head_dim / 2)?;
    out.rope_sin.expect_len("rope sin table", out.cache_len * head_dim / 2)?;
    out.position.expect_len("fused qkv position", 1)?;
    input.check_output("fused qkv q output", out.q)?;
    let params = DecodeQkvParams {
        x: input.x.addr(),
        norm_weight: input.norm.addr(),
        wq: w.q.addr(),
        wk: w.k.addr(),
        wv: w.v.addr(),
        q: out.q.addr(),
        k_cache: out.k_cache.addr(),
        v_cache: out.v_cache.addr(),
        cos: out.rope_cos.addr(),
        sin: out.rope_sin.addr(),
        position: out.position.addr(),
        hidden,
        num_heads: as_u32("num_heads", num_heads)?,
        num_kv_heads: as_u32("num_kv_heads", num_kv_heads)?,
        head_dim: as_u32("head_dim", head_dim)?,
        cache_len: as_u32("cache_len", out.cache_len)?,
        eps: input.eps,
    };
    // One warp per rotary pair of q, k and v rows.
    let config = launch_grid((q_dim + 2 * kv_dim) / 2)?;
    // SAFETY: every span was checked against the shapes above.
    unsafe { kern.launch(DECODE_FUSED, "decode_qkv_bf16", config, params) }
}

/// `out[j] = silu(gate[j]) * up[j]` with `gate = W_gate · (rmsnorm(x) * norm)` and the same for up:
/// `rmsnorm`, two `gemv`s and `silu_mul` for one token, in one launch.
pub fn decode_gate_up(
    kern: &impl Launcher,
    input: NormedInput,
    w_gate: DevSpan<bf16>,
    w_up: DevSpan<bf16>,
    out: DevSpan<f32>,
    intermediate: usize,
) -> Result<()> {
    let hidden = input.check("fused gate/up")?;
    if intermediate == 0 {
        return Ok(());
    }
    input.check_weight("fused gate weight", w_gate, intermediate)?;
    input.check_weight("fused up weight", w_up, intermediate)?;
    out.expect_len("fused gate/up output", intermediate)?;
    input.check_output("fused gate/up output", out)?;
    let params = DecodeGateUpParams {
        x: input.x.addr(),
        norm_weight: input.norm.addr(),
        w_gate: w_gate.addr(),
        w_up: w_up.addr(),
        out: out.addr(),
        hidden,
        intermediate: as_u32("intermediate", intermediate)?,
        eps: input.eps,
        pad0: 0,
    };
    // SAFETY: every span was checked against the shapes above.
    unsafe { kern.launch(DECODE_FUSED, "decode_gate_up_bf16", launch_grid(intermediate)?, params) }
}

/// `y = W · (rmsnorm(x) * norm)` for one token, `W [n][hidden]`: the final norm and the output head
/// in one launch.
pub fn gemv_rmsnorm(
    kern: &impl Launcher,
    input: NormedInput,
    w: DevSpan<bf16>,
    y: DevSpan<f32>,
    n: usize,
) -> Result<()> {
    let k = input.check("gemv_rmsnorm")?;
    if n == 0 {
        return Ok(());
    }
    input.check_weight("gemv_rmsnorm weight", w, n)?;
    y.expect_len("gemv_rmsnorm output", n)?;
    input.check_output("gemv_rmsnorm output", y)?;
    let params = GemvRmsNormParams {
        w: w.addr(),
        x: input.x.addr(),
        norm_weight: input.norm.addr(),
        y: y.addr(),
        n: as_u32("n", n)?,
        k,
        eps: input.eps,
        pad0: 0,
    };
    // SAFETY: every span was checked against the shapes above.
    unsafe { kern.launch(DECODE_FUSED, "gemv_rmsnorm_bf16", launch_grid(n)?, params) }
}

//! The Llama forward pass as a sequence of kernel launches, written once for every device that runs
//! the kernels: the GPU ([`super::GpuModel`]) and, in tests, the CPU emulator
//! (`super::emulated::EmulatedGpuModel`). Both hand it a [`ForwardSpans`] view of their buffers and a
//! [`Launcher`]; everything that changes from one decode step to the next is read from the step
//! buffer, so `queue_layers(.., 1)` then `queue_last_logits(.., 1)` is exactly what the decode CUDA
//! graph captures. [`forward_chunks`] is the prefill/decode loop on top, over [`ForwardDevice`].

use half::bf16;

use super::buffers::{StepSpans, LOGIT_ROWS};
use crate::cuda::{Blas, DevSpan};
use crate::kernels::attention_decode::{attention_decode, DecodeScratch, DecodeShape};
use crate::kernels::attention_prefill::{self as prefill, KvLayout, Operand, PrefillIo, PrefillShape};
use crate::kernels::decode_fused::{self as fused, NormedInput, QkvHeads, QkvOutputs, QkvWeights};
use crate::kernels::gemv::{gemm_tiled, gemv, GemvKernel};
use crate::kernels::layers::{self, RopeShape};
use crate::kernels::Launcher;
use crate::model::{check_context, LlamaConfig, Logits};
use crate::{Error, Result};

/// One decoder layer's weights.
pub(super) struct LayerSpans<'a> {
    pub attn_norm: DevSpan<'a, f32>,
    pub q: DevSpan<'a, bf16>,
    pub k: DevSpan<'a, bf16>,
    pub v: DevSpan<'a, bf16>,
    pub o: DevSpan<'a, bf16>,
    pub mlp_norm: DevSpan<'a, f32>,
    pub gate: DevSpan<'a, bf16>,
    pub up: DevSpan<'a, bf16>,
    pub down: DevSpan<'a, bf16>,
}

/// How products of several rows run: cuBLAS on a bf16 copy of the input (the scratch), or the tiled
/// GEMM kernel on the f32 input.
pub(super) enum Gemm<'a> {
    Cublas(&'a Blas, DevSpan<'a, bf16>),
    Tiled,
}

/// Which kernels run the one-token decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeKernels {
    /// [`DECODE_KERNELS_ENV`] (`fused` or `unfused`) when it is set, else [`DecodeKernels::Fused`]: the
    /// switch works on a machine that can run rooflab's binaries but not rebuild them (the GPU machine).
    #[default]
    Auto,
    /// decode_fused.cu: the norms, RoPE, KV append and SwiGLU folded into the GEMVs (6 launches per
    /// layer).
    Fused,
    /// One kernel per operation (14 launches per layer): the baseline, and what prefill runs.
    Unfused,
}

/// Environment variable that picks the kernels behind [`DecodeKernels::Auto`]: `fused` or `unfused`.
pub const DECODE_KERNELS_ENV: &str = "ROOFLAB_DECODE";

impl DecodeKernels {
    /// The kernels `self` stands for: `Auto` resolved through [`DECODE_KERNELS_ENV`] (an unknown value is
    /// an error that names it), the others as they are.
    pub fn resolve(self) -> Result<DecodeKernels> {
        self.resolve_with(std::env::var(DECODE_KERNELS_ENV).ok().as_deref())
    }

    /// [`DecodeKernels::resolve`] with `choice` as the variable's value.
    fn resolve_with(self, choice: Option<&str>) -> Result<DecodeKernels> {
        if self != DecodeKernels::Auto {
            return Ok(self);
        }
        match choice {
            None | Some("") | Some("fused") => Ok(DecodeKernels::Fused),
            Some("unfused") => Ok(DecodeKernels::Unfused),
            Some(other) => Err(Error::Invalid(format!("{DECODE_KERNELS_ENV}={other:?}: expected fused or unfused"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DecodeKernels::Auto => "auto",
            DecodeKernels::Fused => "fused",
            DecodeKernels::Unfused => "unfused",
        }
    }
}

/// Every buffer the forward pass reads or writes, as spans (whole buffers; the pass takes the rows
/// it needs). Activations hold `chunk` rows; the KV caches are `[layer][context][kv_dim]`.
pub(super) struct ForwardSpans<'a> {
    pub config: &'a LlamaConfig,
    pub embed: DevSpan<'a, bf16>,
    /// The output head (the embedding table when tied).
    pub head: DevSpan<'a, bf16>,
    pub final_norm: DevSpan<'a, f32>,
    pub layers: Vec<LayerSpans<'a>>,
    pub k_cache: DevSpan<'a, bf16>,
    pub v_cache: DevSpan<'a, bf16>,
    pub context: usize,
    pub rope_cos: DevSpan<'a, f32>,
    pub rope_sin: DevSpan<'a, f32>,
    pub x: DevSpan<'a, f32>,
    pub xn: DevSpan<'a, f32>,
    pub q: DevSpan<'a, f32>,
    pub k: DevSpan<'a, f32>,
    pub v: DevSpan<'a, f32>,
    pub attn: DevSpan<'a, f32>,
    pub gate: DevSpan<'a, f32>,
    pub up: DevSpan<'a, f32>,
    /// `[min(LOGIT_ROWS, chunk)][vocab]`.
    pub logits: DevSpan<'a, f32>,
    pub decode_partial_out: DevSpan<'a, f32>,
    pub decode_partial_ml: DevSpan<'a, f32>,
    pub num_splits: usize,
    pub step: StepSpans<'a>,
    pub gemm: Gemm<'a>,
    pub decode: DecodeKernels,
}

/// One matrix product of a projection: weight `[n][k]`, output `[rows][n]`, add into it or not.
struct Product<'a> {
    w: DevSpan<'a, bf16>,
    y: DevSpan<'a, f32>,
    n: usize,
    accumulate: bool,
}

/// `y = input · Wᵀ` for each product, `input` being `[rows][k]` f32: GEMV for one row, else cuBLAS
/// (on a bf16 copy of the input, made once) or the tiled GEMM.
fn project(
    kern: &impl Launcher,
    m: &ForwardSpans,
    input: DevSpan<f32>,
    rows: usize,
    k: usize,
    products: &[Product],
) -> Result<()> {
    if rows == 1 {
        for p in products {
            gemv(kern, GemvKernel::WarpPerRow, p.w, input, p.y, p.n, k, p.accumulate)?;
        }
        return Ok(());
    }
    match &m.gemm {
        Gemm::Cublas(blas, scratch) => {
            let x16 = scratch.slice(0..rows * k)?;
            layers::cast_to_bf16(kern, input, x16, rows * k)?;
            for p in products {
                blas.gemm_bf16(p.w, x16, p.y, rows, p.n, k, p.accumulate)?;
            }
        }
        Gemm::Tiled => {
            for p in products {
                gemm_tiled(kern, p.w, input, p.y, rows, p.n, k, p.accumulate)?;
            }
        }
    }
    Ok(())
}

/// Queues embedding and every decoder layer for the `n` tokens described by the step buffer,
/// leaving the final residual stream in `m.x`.
pub(super) fn queue_layers(kern: &impl Launcher, m: &ForwardSpans, n: usize) -> Result<()> {
    debug_assert_ne!(m.decode, DecodeKernels::Auto, "the models resolve Auto when they load");
    if n == 1 && m.decode == DecodeKernels::Fused {
        return queue_fused_decode_layers(kern, m);
    }
    let c = m.config;
    let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let ctx = m.context;
    let (x, xn, attn) = (m.x.rows(0..n, h)?, m.xn.rows(0..n, h)?, m.attn.rows(0..n, qd)?);
    let (q, k, v) = (m.q.rows(0..n, qd)?, m.k.rows(0..n, kvd)?, m.v.rows(0..n, kvd)?);
    let (gate, up) = (m.gate.rows(0..n, f)?, m.up.rows(0..n, f)?);
    let step = &m.step;
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    let rope_shape =
        RopeShape { n_tokens: n, num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim };

    layers::embedding(kern, m.embed, c.vocab_size, h, step.tokens, n, x)?;
    for (i, l) in m.layers.iter().enumerate() {
        layers::rmsnorm(kern, x, l.attn_norm, xn, n, h, c.rms_norm_eps)?;
        let qkv = [
            Product { w: l.q, y: q, n: qd, accumulate: false },
            Product { w: l.k, y: k, n: kvd, accumulate: false },
            Product { w: l.v, y: v, n: kvd, accumulate: false },
        ];
        project(kern, m, xn, n, h, &qkv)?;
        layers::rope(kern, q, k, m.rope_cos, m.rope_sin, ctx, step.positions, rope_shape)?;
        let layer_rows = i * ctx..(i + 1) * ctx;
        let (k_cache, v_cache) = (m.k_cache.rows(layer_rows.clone(), kvd)?, m.v_cache.rows(layer_rows, kvd)?);
        layers::kv_append(kern, k, v, k_cache, v_cache, ctx, step.positions, n, kvd)?;
        if n == 1 {
            decode_attention(kern, m, q, k_cache, v_cache, attn)?;
        } else {
            // The flash kernel reads the f32 queries and writes the f32 output itself (converted
            // while staged / stored), against the bf16 cache; the chunk's queries sit at
            // positions q_offset.. and see the cache up to themselves.
            let io = PrefillIo {
                q: Operand::F32(q),
                k: Operand::Bf16(k_cache),
                v: Operand::Bf16(v_cache),
                out: Operand::F32(attn),
                lse: None,
                cu_seqlens_q: step.cu_seqlens_q,
                q_offsets: Some(step.q_offset),
                kv: KvLayout::Cache { seq_lens_k: step.seq_len, cache_len: ctx },
            };
            let shape = PrefillShape {
                batch: 1,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                total_q: n,
                max_q_len: n,
                max_kv_len: ctx,
                causal: true,
                scale,
            };
            prefill::flash(kern, &io, &shape)?;
        }
        project(kern, m, attn, n, qd, &[Product { w: l.o, y: x, n: h, accumulate: true }])?;

        layers::rmsnorm(kern, x, l.mlp_norm, xn, n, h, c.rms_norm_eps)?;
        let gate_up = [
            Product { w: l.gate, y: gate, n: f, accumulate: false },
            Product { w: l.up, y: up, n: f, accumulate: false },
        ];
        project(kern, m, xn, n, h, &gate_up)?;
        layers::silu_mul(kern, gate, up, gate, n * f)?;
        project(kern, m, gate, n, f, &[Product { w: l.down, y: x, n: h, accumulate: true }])?;
    }
    Ok(())
}

/// Split-KV attention of the one token in `q` against one layer's cache, into `attn`.
fn decode_attention(
    kern: &impl Launcher,
    m: &ForwardSpans,
    q: DevSpan<f32>,
    k_cache: DevSpan<bf16>,
    v_cache: DevSpan<bf16>,
    attn: DevSpan<f32>,
) -> Result<()> {
    let c = m.config;
    let shape = DecodeShape {
        batch: 1,
        num_heads: c.num_heads,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        cache_len: m.context,
        scale: 1.0 / (c.head_dim as f32).sqrt(),
    };
    let scratch =
        DecodeScratch { partial_out: m.decode_partial_out, partial_ml: m.decode_partial_ml, num_splits: m.num_splits };
    attention_decode(kern, q, k_cache, v_cache, m.step.seq_len, attn, scratch, shape)
}

/// [`queue_layers`] for one token with decode_fused.cu: per layer the fused norm + q/k/v + RoPE +
/// cache append, the attention (split and combine), the o GEMV adding into the residual stream, the
/// fused norm + gate/up + SwiGLU, and the down GEMV adding into it.
fn queue_fused_decode_layers(kern: &impl Launcher, m: &ForwardSpans) -> Result<()> {
    let c = m.config;
    let (h, qd, kvd, f, ctx) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, m.context);
    let (x, q, attn, act) = (m.x.rows(0..1, h)?, m.q.rows(0..1, qd)?, m.attn.rows(0..1, qd)?, m.gate.rows(0..1, f)?);
    let heads = QkvHeads { num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim };
    layers::embedding(kern, m.embed, c.vocab_size, h, m.step.tokens, 1, x)?;
    for (i, l) in m.layers.iter().enumerate() {
        let layer_rows = i * ctx..(i + 1) * ctx;
        let (k_cache, v_cache) = (m.k_cache.rows(layer_rows.clone(), kvd)?, m.v_cache.rows(layer_rows, kvd)?);
        let out = QkvOutputs {
            q,
            k_cache,
            v_cache,
            cache_len: ctx,
            rope_cos: m.rope_cos,
            rope_sin: m.rope_sin,
            position: m.step.positions,
        };
        let attn_input = NormedInput { x, norm: l.attn_norm, hidden: h, eps: c.rms_norm_eps };
        fused::decode_qkv(kern, attn_input, QkvWeights { q: l.q, k: l.k, v: l.v }, out, heads)?;
        decode_attention(kern, m, q, k_cache, v_cache, attn)?;
        gemv(kern, GemvKernel::WarpPerRow, l.o, attn, x, h, qd, true)?;
        let mlp_input = NormedInput { x, norm: l.mlp_norm, hidden: h, eps: c.rms_norm_eps };
        fused::decode_gate_up(kern, mlp_input, l.gate, l.up, act, f)?;
        gemv(kern, GemvKernel::WarpPerRow, l.down, act, x, h, f, true)?;
    }
    Ok(())
}

/// Queues the final norm and head for row `n - 1` of the residual stream into logits row 0.
pub(super) fn queue_last_logits(kern: &impl Launcher, m: &ForwardSpans, n: usize) -> Result<()> {
    let c = m.config;
    let h = c.hidden_size;
    let (x, xn) = (m.x.rows(n - 1..n, h)?, m.xn.rows(n - 1..n, h)?);
    if m.decode == DecodeKernels::Fused {
        let input = NormedInput { x, norm: m.final_norm, hidden: h, eps: c.rms_norm_eps };
        return fused::gemv_rmsnorm(kern, input, m.head, m.logits.slice(0..c.vocab_size)?, c.vocab_size);
    }
    layers::rmsnorm(kern, x, m.final_norm, xn, 1, h, c.rms_norm_eps)?;
    let logits = m.logits.slice(0..c.vocab_size)?;
    project(kern, m, xn, 1, h, &[Product { w: m.head, y: logits, n: c.vocab_size, accumulate: false }])
}

/// What [`forward_chunks`] needs from a device: its forward view and launcher, the step buffer and
/// the logits buffer, and how it runs a decode step (the GPU replays a captured graph).
pub(super) trait ForwardDevice {
    fn config(&self) -> &LlamaConfig;
    /// Rows of the activation buffers: the most tokens one pass takes.
    fn chunk(&self) -> usize;
    fn context(&self) -> usize;
    /// Positions `0 .. cached` of the KV cache hold keys and values.
    fn cached(&self) -> usize;
    fn set_cached(&mut self, cached: usize);
    /// Writes the token ids, positions and lengths of a chunk to the step buffer.
    fn write_step(&mut self, tokens: &[u32], start: usize) -> Result<()>;
    /// Queues `n` tokens through the layers ([`queue_layers`] on this device's spans).
    fn queue_layers(&mut self, n: usize) -> Result<()>;
    /// Queues the last row's logits ([`queue_last_logits`]).
    fn queue_last_logits(&mut self, n: usize) -> Result<()>;
    /// Queues the final norm of rows `0..n` and the head of rows `r0..r1` into logits rows `0..r1-r0`.
    fn queue_logit_rows(&mut self, n: usize, r0: usize, r1: usize) -> Result<()>;
    /// One token through the layers and the head (what the step buffer says); the GPU replays a graph.
    fn decode_step(&mut self) -> Result<()> {
        self.queue_layers(1)?;
        self.queue_last_logits(1)
    }
    /// Appends the first `rows` rows of the logits buffer to `out`, after the queued work.
    fn read_logits(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()>;
}

/// Queues the final norm of rows `0..n` (when `r0` is 0) and the head of rows `r0..r1`.
pub(super) fn queue_logit_rows(kern: &impl Launcher, m: &ForwardSpans, n: usize, r0: usize, r1: usize) -> Result<()> {
    let c = m.config;
    let (h, vocab) = (c.hidden_size, c.vocab_size);
    let xn = m.xn.rows(0..n, h)?;
    if r0 == 0 {
        layers::rmsnorm(kern, m.x.rows(0..n, h)?, m.final_norm, xn, n, h, c.rms_norm_eps)?;
    }
    let logits = m.logits.rows(0..r1 - r0, vocab)?;
    let head = Product { w: m.head, y: logits, n: vocab, accumulate: false };
    project(kern, m, xn.rows(r0..r1, h)?, r1 - r0, h, &[head])
}

/// The model's forward: `tokens` at positions `start ..` (the cache must hold `0 .. start`), in
/// chunks of at most `chunk()` tokens (later chunks attend to earlier ones through the cache), one
/// token as a decode step; the logits of the last token or of all of them.
pub(super) fn forward_chunks(
    d: &mut impl ForwardDevice,
    tokens: &[u32],
    start: usize,
    logits: Logits,
) -> Result<Vec<f32>> {
    let vocab = d.config().vocab_size;
    check_context(start, tokens.len(), d.context())?;
    if start > d.cached() {
        return Err(Error::Invalid(format!(
            "forward at position {start}, but the cache holds only {} positions",
            d.cached()
        )));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary of {vocab}")));
    }
    if tokens.is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::with_capacity(vocab * if logits == Logits::All { tokens.len() } else { 1 });
    if tokens.len() == 1 {
        d.write_step(tokens, start)?;
        d.decode_step()?;
        d.set_cached(start + 1);
        d.read_logits(1, &mut out)?;
        return Ok(out);
    }
    let chunk = d.chunk();
    for (i, piece) in tokens.chunks(chunk).enumerate() {
        let pos = start + i * chunk;
        let n = piece.len();
        d.write_step(piece, pos)?;
        d.queue_layers(n)?;
        // Later chunks attend to this one: the cache now holds it.
        d.set_cached(pos + n);
        match logits {
            Logits::All => {
                let rows = LOGIT_ROWS.min(chunk);
                for r0 in (0..n).step_by(rows) {
                    let r1 = (r0 + rows).min(n);
                    d.queue_logit_rows(n, r0, r1)?;
                    d.read_logits(r1 - r0, &mut out)?;
                }
            }
            Logits::Last if pos + n == start + tokens.len() => {
                d.queue_last_logits(n)?;
                d.read_logits(1, &mut out)?;
            }
            Logits::Last => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::DecodeKernels::{Auto, Fused, Unfused};

    #[test]
    fn auto_decode_kernels_follow_the_variable_and_name_a_bad_value() {
        assert_eq!(Auto.resolve_with(None).unwrap(), Fused);
        assert_eq!(Auto.resolve_with(Some("")).unwrap(), Fused);
        assert_eq!(Auto.resolve_with(Some("unfused")).unwrap(), Unfused);
        // An explicit choice is never overridden.
        assert_eq!(Fused.resolve_with(Some("unfused")).unwrap(), Fused);
        assert_eq!(Unfused.resolve_with(Some("fused")).unwrap(), Unfused);
        let err = Auto.resolve_with(Some("fast")).unwrap_err().to_string();
        assert!(err.contains("ROOFLAB_DECODE=\"fast\"") && err.contains("fused or unfused"), "{err}");
    }
}

//! The Llama forward pass as a sequence of kernel launches on the model's stream. Everything that
//! changes from one decode step to the next is read from the step buffer, so `queue_layers(1)`
//! followed by `queue_last_logits(1)` is exactly what the decode CUDA graph captures.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::buffers::LOGIT_ROWS;
use super::GpuModel;
use crate::cuda::DevSpan;
use crate::kernels::attention_decode::{attention_decode, DecodeScratch, DecodeShape};
use crate::kernels::attention_prefill::{self as prefill, KvLayout, Operand, PrefillIo, PrefillShape};
use crate::kernels::gemv::{gemm_tiled, gemv, GemvKernel};
use crate::kernels::layers::{self, RopeShape};
use crate::Result;

/// One matrix product of a projection: weight `[n][k]`, output `[rows][n]`, add into it or not.
pub(super) struct Product<'a> {
    pub w: &'a CudaSlice<bf16>,
    pub y: DevSpan<'a, f32>,
    pub n: usize,
    pub accumulate: bool,
}

/// The first `n` rows of a row-major activation buffer.
fn rows(buf: &CudaSlice<f32>, n: usize, width: usize) -> Result<DevSpan<'_, f32>> {
    DevSpan::of(buf).rows(0..n, width)
}

impl GpuModel {
    /// `y = input · Wᵀ` for each product, `input` being `[rows][k]` f32: GEMV for one row, else
    /// cuBLAS (on a bf16 copy of the input, made once) or the tiled GEMM.
    pub(super) fn project(&self, input: DevSpan<f32>, rows: usize, k: usize, products: &[Product]) -> Result<()> {
        let kern = &self.kernels;
        if rows == 1 {
            for p in products {
                gemv(kern, GemvKernel::WarpPerRow, DevSpan::of(p.w), input, p.y, p.n, k, p.accumulate)?;
            }
            return Ok(());
        }
        match (&self.blas, &self.acts.x_bf16) {
            (Some(blas), Some(scratch)) => {
                let x16 = DevSpan::of(scratch).slice(0..rows * k)?;
                layers::cast_to_bf16(kern, input, x16, rows * k)?;
                for p in products {
                    blas.gemm_bf16(DevSpan::of(p.w), x16, p.y, rows, p.n, k, p.accumulate)?;
                }
            }
            _ => {
                for p in products {
                    gemm_tiled(kern, DevSpan::of(p.w), input, p.y, rows, p.n, k, p.accumulate)?;
                }
            }
        }
        Ok(())
    }

    /// Queues embedding and every decoder layer for the `n` tokens described by the step buffer,
    /// leaving the final residual stream in `acts.x`.
    pub(super) fn queue_layers(&self, n: usize) -> Result<()> {
        let c = &self.config;
        let kern = &self.kernels;
        let a = &self.acts;
        let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let ctx = self.cache.context;
        let (x, xn, attn) = (rows(&a.x, n, h)?, rows(&a.xn, n, h)?, rows(&a.attn, n, qd)?);
        let (q, k, v) = (rows(&a.q, n, qd)?, rows(&a.k, n, kvd)?, rows(&a.v, n, kvd)?);
        let (gate, up) = (rows(&a.gate, n, f)?, rows(&a.up, n, f)?);
        let step = a.step_spans()?;
        let (cos, sin) = (DevSpan::of(&self.rope_cos), DevSpan::of(&self.rope_sin));
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let rope_shape =
            RopeShape { n_tokens: n, num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim };

        layers::embedding(kern, DevSpan::of(&self.weights.embed), c.vocab_size, h, step.tokens, n, x)?;
        for (i, l) in self.weights.layers.iter().enumerate() {
            layers::rmsnorm(kern, x, DevSpan::of(&l.attn_norm), xn, n, h, c.rms_norm_eps)?;
            let qkv = [
                Product { w: &l.q, y: q, n: qd, accumulate: false },
                Product { w: &l.k, y: k, n: kvd, accumulate: false },
                Product { w: &l.v, y: v, n: kvd, accumulate: false },
            ];
            self.project(xn, n, h, &qkv)?;
            layers::rope(kern, q, k, cos, sin, ctx, step.positions, rope_shape)?;
            let (k_cache, v_cache) = self.cache.layer(i)?;
            layers::kv_append(kern, k, v, k_cache, v_cache, ctx, step.positions, n, kvd)?;
            if n == 1 {
                let shape = DecodeShape {
                    batch: 1,
                    num_heads: c.num_heads,
                    num_kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                    cache_len: ctx,
                    scale,
                };
                let scratch = DecodeScratch {
                    partial_out: DevSpan::of(&a.decode_partial_out),
                    partial_ml: DevSpan::of(&a.decode_partial_ml),
                    num_splits: a.num_splits,
                };
                attention_decode(kern, q, k_cache, v_cache, step.seq_len, attn, scratch, shape)?;
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
            self.project(attn, n, qd, &[Product { w: &l.o, y: x, n: h, accumulate: true }])?;

            layers::rmsnorm(kern, x, DevSpan::of(&l.mlp_norm), xn, n, h, c.rms_norm_eps)?;
            let gate_up = [
                Product { w: &l.gate, y: gate, n: f, accumulate: false },
                Product { w: &l.up, y: up, n: f, accumulate: false },
            ];
            self.project(xn, n, h, &gate_up)?;
            layers::silu_mul(kern, gate, up, gate, n * f)?;
            self.project(gate, n, f, &[Product { w: &l.down, y: x, n: h, accumulate: true }])?;
        }
        Ok(())
    }

    /// Queues the final norm and head for row `n - 1` of the residual stream into logits row 0.
    pub(super) fn queue_last_logits(&self, n: usize) -> Result<()> {
        let c = &self.config;
        let h = c.hidden_size;
        let x = DevSpan::of(&self.acts.x).rows(n - 1..n, h)?;
        let xn = DevSpan::of(&self.acts.xn).rows(n - 1..n, h)?;
        layers::rmsnorm(&self.kernels, x, DevSpan::of(&self.weights.final_norm), xn, 1, h, c.rms_norm_eps)?;
        let logits = DevSpan::of(&self.acts.logits).slice(0..c.vocab_size)?;
        self.project(xn, 1, h, &[Product { w: self.weights.head(), y: logits, n: c.vocab_size, accumulate: false }])
    }

    /// Logits of all `n` rows of the residual stream, `LOGIT_ROWS` rows at a time, appended to `out`.
    pub(super) fn all_logits(&self, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let c = &self.config;
        let (h, vocab) = (c.hidden_size, c.vocab_size);
        let x = DevSpan::of(&self.acts.x).rows(0..n, h)?;
        let xn = DevSpan::of(&self.acts.xn).rows(0..n, h)?;
        layers::rmsnorm(&self.kernels, x, DevSpan::of(&self.weights.final_norm), xn, n, h, c.rms_norm_eps)?;
        let step = LOGIT_ROWS.min(self.acts.chunk);
        for r0 in (0..n).step_by(step) {
            let r1 = (r0 + step).min(n);
            let logits = DevSpan::of(&self.acts.logits).rows(0..r1 - r0, vocab)?;
            let head = Product { w: self.weights.head(), y: logits, n: vocab, accumulate: false };
            self.project(xn.rows(r0..r1, h)?, r1 - r0, h, &[head])?;
            self.read_logits(r1 - r0, out)?;
        }
        Ok(())
    }

    /// Copies the first `rows` rows of the logits buffer to the end of `out` (waits for the stream).
    pub(super) fn read_logits(&self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let len = rows * self.config.vocab_size;
        let start = out.len();
        out.resize(start + len, 0.0);
        self.gpu
            .stream()
            .memcpy_dtoh(&self.acts.logits.slice(0..len), &mut out[start..])
            .map_err(|e| crate::Error::Cuda(format!("copying logits to the host: {e}")))?;
        self.gpu.synchronize()
    }
}

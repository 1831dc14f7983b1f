//! Device buffers of the GPU model besides the weights: the contiguous bf16 KV cache
//! `[layer][pos][kv_head][dim]`, the RoPE tables, the activations of the largest prefill chunk,
//! and the small "step" buffer that holds what changes between decode steps (token ids,
//! positions, lengths), so a captured decode graph can be replayed unchanged.

use cudarc::driver::CudaSlice;
use half::bf16;

use crate::cuda::{DevSpan, MemoryLedger};
use crate::kernels::attention_decode::DecodeShape;
use crate::model::LlamaConfig;
use crate::Result;

/// Rows of the logits buffer: `Logits::All` is produced this many rows at a time.
pub(super) const LOGIT_ROWS: usize = 64;

pub(super) struct KvCache {
    pub k: CudaSlice<bf16>,
    pub v: CudaSlice<bf16>,
    pub context: usize,
}

impl KvCache {
    pub fn new(c: &LlamaConfig, context: usize, ledger: &mut MemoryLedger) -> Result<Self> {
        let len = c.num_layers * context * c.kv_dim();
        Ok(KvCache {
            k: ledger.alloc_zeros("kv cache", "key cache", len)?,
            v: ledger.alloc_zeros("kv cache", "value cache", len)?,
            context,
        })
    }

    pub fn bytes(c: &LlamaConfig, context: usize) -> usize {
        2 * 2 * c.num_layers * context * c.kv_dim()
    }
}

/// Layout of the u32 step buffer for chunks of up to `chunk` tokens:
/// `[tokens; chunk] [positions; chunk] [seq_len] [cu_seqlens_q; 2] [q_offset]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepLayout {
    pub chunk: usize,
}

impl StepLayout {
    pub fn len(&self) -> usize {
        2 * self.chunk + 4
    }

    /// The fields of a step buffer `all` laid out this way.
    pub fn spans<'a>(&self, all: DevSpan<'a, u32>) -> Result<StepSpans<'a>> {
        let c = self.chunk;
        Ok(StepSpans {
            tokens: all.slice(0..c)?,
            positions: all.slice(c..2 * c)?,
            seq_len: all.slice(2 * c..2 * c + 1)?,
            cu_seqlens_q: all.slice(2 * c + 1..2 * c + 3)?,
            q_offset: all.slice(2 * c + 3..2 * c + 4)?,
        })
    }

    /// Host contents for `tokens` at positions `start ..`.
    pub fn fill(&self, tokens: &[u32], start: usize) -> Vec<u32> {
        let (n, c) = (tokens.len(), self.chunk);
        let mut host = vec![0u32; self.len()];
        host[..n].copy_from_slice(tokens);
        for (i, p) in host[c..c + n].iter_mut().enumerate() {
            *p = (start + i) as u32;
        }
        host[2 * c] = (start + n) as u32;
        host[2 * c + 1] = 0;
        host[2 * c + 2] = n as u32;
        host[2 * c + 3] = start as u32;
        host
    }
}

/// Spans of the step buffer's fields.
pub(super) struct StepSpans<'a> {
    pub tokens: DevSpan<'a, u32>,
    pub positions: DevSpan<'a, u32>,
    pub seq_len: DevSpan<'a, u32>,
    pub cu_seqlens_q: DevSpan<'a, u32>,
    pub q_offset: DevSpan<'a, u32>,
}

pub(super) struct Activations {
    pub chunk: usize,
    /// Residual stream `[chunk][hidden]` f32.
    pub x: CudaSlice<f32>,
    /// Normalised residual `[chunk][hidden]`.
    pub xn: CudaSlice<f32>,
    pub q: CudaSlice<f32>,
    pub k: CudaSlice<f32>,
    pub v: CudaSlice<f32>,
    pub attn: CudaSlice<f32>,
    pub gate: CudaSlice<f32>,
    pub up: CudaSlice<f32>,
    /// bf16 copy of a matmul input for cuBLAS (`[chunk][max(hidden, q_dim, intermediate)]`).
    pub x_bf16: Option<CudaSlice<bf16>>,
    /// `[LOGIT_ROWS][vocab]`.
    pub logits: CudaSlice<f32>,
    pub decode_partial_out: CudaSlice<f32>,
    pub decode_partial_ml: CudaSlice<f32>,
    pub num_splits: usize,
    pub step: CudaSlice<u32>,
    pub step_layout: StepLayout,
}

impl Activations {
    pub fn new(
        c: &LlamaConfig,
        chunk: usize,
        decode: &DecodeShape,
        num_splits: usize,
        with_bf16: bool,
        ledger: &mut MemoryLedger,
    ) -> Result<Self> {
        let mut f32_buf = |what: &str, len: usize| ledger.alloc_zeros::<f32>("activations", what, len);
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let (partial_out, partial_ml) = decode.scratch_len(num_splits);
        let x = f32_buf("residual stream", chunk * h)?;
        let xn = f32_buf("normalised activations", chunk * h)?;
        let q = f32_buf("queries", chunk * c.q_dim())?;
        let k = f32_buf("keys", chunk * c.kv_dim())?;
        let v = f32_buf("values", chunk * c.kv_dim())?;
        let attn = f32_buf("attention output", chunk * c.q_dim())?;
        let gate = f32_buf("gate activations", chunk * f)?;
        let up = f32_buf("up activations", chunk * f)?;
        let logits = f32_buf("logits", LOGIT_ROWS.min(chunk) * c.vocab_size)?;
        let decode_partial_out = f32_buf("decode attention partials", partial_out)?;
        let decode_partial_ml = f32_buf("decode attention partials", partial_ml)?;
        let step_layout = StepLayout { chunk };
        let step = ledger.alloc_zeros::<u32>("activations", "step buffer", step_layout.len())?;
        let x_bf16 = if with_bf16 {
            Some(ledger.alloc_zeros::<bf16>("activations", "bf16 matmul input", chunk * max_input(c))?)
        } else {
            None
        };
        Ok(Activations {
            chunk,
            x,
            xn,
            q,
            k,
            v,
            attn,
            gate,
            up,
            x_bf16,
            logits,
            decode_partial_out,
            decode_partial_ml,
            num_splits,
            step,
            step_layout,
        })
    }

    /// Upper bound of the bytes [`Activations::new`] allocates.
    pub fn bytes(c: &LlamaConfig, chunk: usize, decode: &DecodeShape, num_splits: usize) -> usize {
        let (po, pml) = decode.scratch_len(num_splits);
        let f32s = chunk * (2 * c.hidden_size + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.intermediate_size)
            + LOGIT_ROWS.min(chunk) * c.vocab_size
            + po
            + pml;
        4 * f32s + 2 * chunk * max_input(c) + 4 * (2 * chunk + 4)
    }

    pub fn step_spans(&self) -> Result<StepSpans<'_>> {
        self.step_layout.spans(DevSpan::of(&self.step))
    }
}

/// Widest matmul input: hidden (q/k/v, gate/up, head), q_dim (o) or intermediate (down).
fn max_input(c: &LlamaConfig) -> usize {
    c.hidden_size.max(c.q_dim()).max(c.intermediate_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_buffer_holds_tokens_positions_and_lengths() {
        let layout = StepLayout { chunk: 4 };
        let host = layout.fill(&[7, 8, 9], 10);
        assert_eq!(host, vec![7, 8, 9, 0, 10, 11, 12, 0, 13, 0, 3, 10]);
    }
}

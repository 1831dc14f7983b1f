//! The model's weights on the device: every matrix as bf16 (converted on the host one tensor at a
//! time, so the host never holds a second copy of the model), norm vectors as f32 (tiny, and the
//! kernels take them in f32), the embedding table once when the head is tied to it.

use cudarc::driver::CudaSlice;
use half::bf16;

use crate::cuda::{DevSpan, MemoryLedger};
use crate::kernels::layers::fill_uniform;
use crate::kernels::Kernels;
use crate::model::weights::LlamaTensors;
use crate::model::{LlamaConfig, Tensor};
use crate::sample::uniform_values;
use crate::Result;

pub(super) const PURPOSE: &str = "weights";

pub(super) struct LayerWeights {
    pub attn_norm: CudaSlice<f32>,
    pub q: CudaSlice<bf16>,
    pub k: CudaSlice<bf16>,
    pub v: CudaSlice<bf16>,
    pub o: CudaSlice<bf16>,
    pub mlp_norm: CudaSlice<f32>,
    pub gate: CudaSlice<bf16>,
    pub up: CudaSlice<bf16>,
    pub down: CudaSlice<bf16>,
}

pub(super) struct GpuWeights {
    pub embed: CudaSlice<bf16>,
    /// `None` when the head is tied to the embedding table.
    pub lm_head: Option<CudaSlice<bf16>>,
    pub final_norm: CudaSlice<f32>,
    pub layers: Vec<LayerWeights>,
}

impl GpuWeights {
    /// Uploads every tensor of `t` once.
    pub fn upload(t: &LlamaTensors, ledger: &mut MemoryLedger) -> Result<Self> {
        let mut matrix = |t: &Tensor| ledger.upload(PURPOSE, &t.name, &t.to_bf16_vec());
        let embed = matrix(&t.embed)?;
        let lm_head = if t.lm_head.name == t.embed.name { None } else { Some(matrix(&t.lm_head)?) };
        let mut layers = Vec::with_capacity(t.layers.len());
        for l in &t.layers {
            let mut matrix = |t: &Tensor| ledger.upload(PURPOSE, &t.name, &t.to_bf16_vec());
            let (q, k, v, o) = (matrix(&l.q)?, matrix(&l.k)?, matrix(&l.v)?, matrix(&l.o)?);
            let (gate, up, down) = (matrix(&l.gate)?, matrix(&l.up)?, matrix(&l.down)?);
            let attn_norm = ledger.upload(PURPOSE, &l.attn_norm.name, &l.attn_norm.to_f32_vec())?;
            let mlp_norm = ledger.upload(PURPOSE, &l.mlp_norm.name, &l.mlp_norm.to_f32_vec())?;
            layers.push(LayerWeights { attn_norm, q, k, v, o, mlp_norm, gate, up, down });
        }
        let final_norm = ledger.upload(PURPOSE, &t.final_norm.name, &t.final_norm.to_f32_vec())?;
        Ok(GpuWeights { embed, lm_head, final_norm, layers })
    }

    /// Random weights of `c`'s shape, scaled as [`crate::model::random`] scales a checkpoint's
    /// (projections ~ 1/sqrt(fan-in), embedding rows of RMS 0.1, norms near 1). The matrices are filled
    /// on the device (`fill_uniform_bf16`: Llama-3-8B's 16 GB would otherwise be made on the host and
    /// copied over), the norm vectors, a few KB, on the host; both are [`uniform_values`]' values.
    pub fn random(c: &LlamaConfig, seed: u64, ledger: &mut MemoryLedger, kernels: &Kernels) -> Result<Self> {
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let fan_in = |k: usize| 1.0 / (k as f32).sqrt();
        let mut index = 0u64;
        let mut next_seed = || {
            index += 1;
            seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        };
        let matrix = |ledger: &mut MemoryLedger, what: &str, len: usize, spread: f32, seed: u64| {
            // SAFETY: fill_uniform writes every element before anything reads the buffer.
            let buffer = unsafe { ledger.alloc_uninit::<bf16>(PURPOSE, what, len)? };
            fill_uniform(kernels, DevSpan::of(&buffer), seed, 0.0, spread)?;
            Ok::<_, crate::Error>(buffer)
        };
        let norm = |ledger: &mut MemoryLedger, what: &str, seed: u64| {
            ledger.upload(PURPOSE, what, &uniform_values(h, seed, 1.0, 0.1, |v| v))
        };
        let embed = matrix(ledger, "random embedding", v * h, 0.1, next_seed())?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(matrix(ledger, "random lm_head", v * h, fan_in(h), next_seed())?)
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for _ in 0..c.num_layers {
            layers.push(LayerWeights {
                attn_norm: norm(ledger, "random attention norm", next_seed())?,
                q: matrix(ledger, "random q_proj", c.q_dim() * h, fan_in(h), next_seed())?,
                k: matrix(ledger, "random k_proj", c.kv_dim() * h, fan_in(h), next_seed())?,
                v: matrix(ledger, "random v_proj", c.kv_dim() * h, fan_in(h), next_seed())?,
                o: matrix(ledger, "random o_proj", h * c.q_dim(), fan_in(c.q_dim()), next_seed())?,
                mlp_norm: norm(ledger, "random mlp norm", next_seed())?,
                gate: matrix(ledger, "random gate_proj", f * h, fan_in(h), next_seed())?,
                up: matrix(ledger, "random up_proj", f * h, fan_in(h), next_seed())?,
                down: matrix(ledger, "random down_proj", h * f, fan_in(f), next_seed())?,
            });
        }
        let final_norm = norm(ledger, "random final norm", next_seed())?;
        Ok(GpuWeights { embed, lm_head, final_norm, layers })
    }

    /// The output head (the embedding table when tied).
    pub fn head(&self) -> &CudaSlice<bf16> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// Device bytes of the weights as uploaded (bf16 matrices, f32 norms, tied table once).
pub(super) fn device_bytes(c: &LlamaConfig) -> usize {
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let per_layer = 2 * (2 * c.q_dim() * h + 2 * c.kv_dim() * h + 3 * h * f) + 4 * 2 * h;
    let tables = 2 * c.vocab_size * h * if c.tie_word_embeddings { 1 } else { 2 };
    c.num_layers * per_layer + tables + 4 * h
}

/// Bytes one decode step reads: every layer, the final norm, the head and one embedding row.
pub(super) fn decode_read_bytes(c: &LlamaConfig) -> usize {
    let h = c.hidden_size;
    let untied_embedding = if c.tie_word_embeddings { 0 } else { 2 * c.vocab_size * h };
    device_bytes(c) - untied_embedding + 2 * h
}

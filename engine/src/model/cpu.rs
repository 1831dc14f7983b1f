//! The CPU reference model: the Llama forward pass in f32 over the checkpoint's own weights, read
//! in place from the memory map (so loading costs no copy), built from [`crate::reference`]. It is
//! the oracle for the GPU path and a usable fallback on machines without one.

use std::path::Path;

use super::weights::{LayerTensors, LlamaTensors};
use super::{check_context, CausalLm, Checkpoint, DType, LlamaConfig, Logits, Tensor};
use crate::reference::{self as r, AttnShape, WeightRows};
use crate::Result;

pub struct CpuModel {
    config: LlamaConfig,
    tensors: LlamaTensors,
    norms: Vec<(Vec<f32>, Vec<f32>)>,
    final_norm: Vec<f32>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    context: usize,
    /// Per layer, keys and values of every cached position, `[pos, kv_heads * head_dim]`.
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
}

fn weight(t: &Tensor) -> WeightRows<'_> {
    WeightRows { dtype: t.dtype, bytes: t.bytes(), n: t.shape[0], k: t.shape[1] }
}

impl CpuModel {
    /// Loads `dir` (config.json + safetensors), checking every tensor's shape and dtype.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        Self::new(config, &checkpoint, None)
    }

    /// `context` caps the positions the cache may hold (default: the config's maximum).
    pub fn new(config: LlamaConfig, checkpoint: &Checkpoint, context: Option<usize>) -> Result<Self> {
        let tensors = LlamaTensors::gather(checkpoint, &config)?;
        tensors.check_dtypes(&[DType::F32, DType::F16, DType::BF16])?;
        let norms = tensors.layers.iter().map(|l| (l.attn_norm.to_f32_vec(), l.mlp_norm.to_f32_vec())).collect();
        let final_norm = tensors.final_norm.to_f32_vec();
        let context = context.unwrap_or(config.max_position_embeddings).min(config.max_position_embeddings);
        let n = config.num_layers;
        Ok(CpuModel {
            config,
            tensors,
            norms,
            final_norm,
            rope_cos: vec![],
            rope_sin: vec![],
            context,
            k_cache: vec![vec![]; n],
            v_cache: vec![vec![]; n],
        })
    }

    /// RoPE tables cover at least `positions` (grown in doublings, never recomputed per token).
    fn ensure_rope(&mut self, positions: usize) {
        let half = self.config.head_dim / 2;
        if self.rope_cos.len() >= positions * half {
            return;
        }
        let want = positions.next_power_of_two().max(256).min(self.context.max(positions));
        (self.rope_cos, self.rope_sin) = self.config.rope_tables(want);
    }

    fn layer(&mut self, i: usize, x: &mut [f32], start: usize, n: usize) {
        let c = &self.config;
        let l: &LayerTensors = &self.tensors.layers[i];
        let (attn_norm, mlp_norm) = &self.norms[i];
        let positions: Vec<usize> = (start..start + n).collect();

        let h = r::rmsnorm_rows(x, attn_norm, c.rms_norm_eps);
        let mut q = r::matmul_nt_weights(&h, n, weight(&l.q));
        let mut k = r::matmul_nt_weights(&h, n, weight(&l.k));
        let v = r::matmul_nt_weights(&h, n, weight(&l.v));
        r::rope_rows(&mut q, c.num_heads, c.head_dim, &positions, &self.rope_cos, &self.rope_sin);
        r::rope_rows(&mut k, c.num_kv_heads, c.head_dim, &positions, &self.rope_cos, &self.rope_sin);
        let kv = c.kv_dim();
        self.k_cache[i].truncate(start * kv);
        self.v_cache[i].truncate(start * kv);
        self.k_cache[i].extend_from_slice(&k);
        self.v_cache[i].extend_from_slice(&v);
        let shape = AttnShape {
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            q_len: n,
            kv_len: start + n,
            q_offset: start,
            causal: true,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        };
        let (attn, _) = r::attention(&q, &self.k_cache[i], &self.v_cache[i], &shape);
        r::add_in_place(x, &r::matmul_nt_weights(&attn, n, weight(&l.o)));

        let h = r::rmsnorm_rows(x, mlp_norm, c.rms_norm_eps);
        let gate = r::matmul_nt_weights(&h, n, weight(&l.gate));
        let up = r::matmul_nt_weights(&h, n, weight(&l.up));
        r::add_in_place(x, &r::matmul_nt_weights(&r::silu_mul(&gate, &up), n, weight(&l.down)));
    }
}

impl CausalLm for CpuModel {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn context_len(&self) -> usize {
        self.context
    }

    fn forward(&mut self, tokens: &[u32], start: usize, logits: Logits) -> Result<Vec<f32>> {
        let (hidden, vocab) = (self.config.hidden_size, self.config.vocab_size);
        check_context(start, tokens.len(), self.context)?;
        if start > self.k_cache[0].len() / self.config.kv_dim() {
            return Err(crate::Error::Invalid(format!(
                "forward at position {start}, but the cache holds only {} positions",
                self.k_cache[0].len() / self.config.kv_dim()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(crate::Error::Invalid(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        if tokens.is_empty() {
            return Ok(vec![]);
        }
        let n = tokens.len();
        self.ensure_rope(start + n);
        let mut x: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| {
                let row = hidden * t as usize;
                (row..row + hidden).map(|i| self.tensors.embed.get_f32(i))
            })
            .collect();
        for i in 0..self.config.num_layers {
            self.layer(i, &mut x, start, n);
        }
        let rows = match logits {
            Logits::Last => &x[(n - 1) * hidden..],
            Logits::All => &x[..],
        };
        let normed = r::rmsnorm_rows(rows, &self.final_norm, self.config.rms_norm_eps);
        Ok(r::matmul_nt_weights(&normed, normed.len() / hidden, weight(&self.tensors.lm_head)))
    }

    fn device_name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn weight_bytes(&self) -> usize {
        self.tensors.decode_weight_bytes()
    }
}

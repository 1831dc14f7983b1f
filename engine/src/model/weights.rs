//! Tensor names of an HF Llama checkpoint and the shapes the config implies.

use super::{Checkpoint, DType, LlamaConfig, Tensor};
use crate::{Error, Result};

pub const EMBED: &str = "model.embed_tokens.weight";
pub const FINAL_NORM: &str = "model.norm.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// Names of one decoder layer's tensors.
pub struct LayerNames {
    pub attn_norm: String,
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub mlp_norm: String,
    pub gate: String,
    pub up: String,
    pub down: String,
}

pub fn layer_names(i: usize) -> LayerNames {
    let p = format!("model.layers.{i}");
    LayerNames {
        attn_norm: format!("{p}.input_layernorm.weight"),
        q: format!("{p}.self_attn.q_proj.weight"),
        k: format!("{p}.self_attn.k_proj.weight"),
        v: format!("{p}.self_attn.v_proj.weight"),
        o: format!("{p}.self_attn.o_proj.weight"),
        mlp_norm: format!("{p}.post_attention_layernorm.weight"),
        gate: format!("{p}.mlp.gate_proj.weight"),
        up: format!("{p}.mlp.up_proj.weight"),
        down: format!("{p}.mlp.down_proj.weight"),
    }
}

/// One layer's tensors, shape-checked.
pub struct LayerTensors {
    pub attn_norm: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
    pub mlp_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// All tensors of a Llama checkpoint, shape-checked against its config. `lm_head` is the
/// embedding table when the embeddings are tied.
pub struct LlamaTensors {
    pub embed: Tensor,
    pub layers: Vec<LayerTensors>,
    pub final_norm: Tensor,
    pub lm_head: Tensor,
}

impl LlamaTensors {
    pub fn gather(ck: &Checkpoint, c: &LlamaConfig) -> Result<Self> {
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let w = |name: &str, shape: &[usize]| ck.weight(name, shape).cloned();
        let layers = (0..c.num_layers)
            .map(|i| {
                let n = layer_names(i);
                Ok(LayerTensors {
                    attn_norm: w(&n.attn_norm, &[h])?,
                    q: w(&n.q, &[c.q_dim(), h])?,
                    k: w(&n.k, &[c.kv_dim(), h])?,
                    v: w(&n.v, &[c.kv_dim(), h])?,
                    o: w(&n.o, &[h, c.q_dim()])?,
                    mlp_norm: w(&n.mlp_norm, &[h])?,
                    gate: w(&n.gate, &[f, h])?,
                    up: w(&n.up, &[f, h])?,
                    down: w(&n.down, &[h, f])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = w(EMBED, &[v, h])?;
        let lm_head = if c.tie_word_embeddings {
            embed.clone()
        } else if ck.contains(LM_HEAD) {
            w(LM_HEAD, &[v, h])?
        } else {
            return Err(Error::MissingTensor(format!("{LM_HEAD} (config says the embeddings are not tied)")));
        };
        Ok(LlamaTensors { embed, layers, final_norm: w(FINAL_NORM, &[h])?, lm_head })
    }

    /// Every tensor once (the tied head is not counted twice).
    pub fn all(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.embed, &self.final_norm];
        if self.lm_head.name != self.embed.name {
            out.push(&self.lm_head);
        }
        for l in &self.layers {
            out.extend([&l.attn_norm, &l.q, &l.k, &l.v, &l.o, &l.mlp_norm, &l.gate, &l.up, &l.down]);
        }
        out
    }

    /// Bytes one decode step reads: every matrix once, plus the one embedding row.
    pub fn decode_weight_bytes(&self) -> usize {
        let embed_row = self.embed.bytes().len() / self.embed.shape[0];
        let tied = self.lm_head.name == self.embed.name;
        self.all().iter().map(|t| t.bytes().len()).sum::<usize>() - if tied { 0 } else { self.embed.bytes().len() }
            + embed_row
    }

    /// Fails unless every tensor has one of `allowed` dtypes.
    pub fn check_dtypes(&self, allowed: &[DType]) -> Result<()> {
        for t in self.all() {
            if !allowed.contains(&t.dtype) {
                return Err(Error::BadDtype {
                    name: t.name.clone(),
                    found: format!("{:?}", t.dtype),
                    expected: format!("{allowed:?}"),
                });
            }
        }
        Ok(())
    }
}

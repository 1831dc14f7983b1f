//! `config.json` of an HF-style Llama checkpoint, checked for what this engine supports.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// llama3-style rotary scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// The shape and constants of a Llama-style decoder, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f32>,
    rope_theta: Option<f32>,
    rope_scaling: Option<serde_json::Value>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Invalid(m) => Error::bad_file(path, m),
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
        let arch_ok = raw.architectures.as_ref().is_none_or(|a| a.iter().any(|a| a == "LlamaForCausalLM"));
        let type_ok = raw.model_type.as_deref().is_none_or(|t| t == "llama");
        if !arch_ok || !type_ok {
            return Err(Error::Unsupported(format!(
                "architecture {:?} (model_type {:?}); only LlamaForCausalLM is supported",
                raw.architectures.unwrap_or_default(),
                raw.model_type.unwrap_or_default()
            )));
        }
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(Error::Unsupported(format!("hidden_act `{act}`; only silu is supported")));
        }
        if raw.attention_bias == Some(true) || raw.mlp_bias == Some(true) {
            return Err(Error::Unsupported("attention_bias/mlp_bias; Llama projections have no bias".into()));
        }
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.num_attention_heads > 0 => raw.hidden_size / raw.num_attention_heads,
            None => 0,
        };
        let eos_token_ids = match raw.eos_token_id {
            None | Some(serde_json::Value::Null) => vec![],
            Some(v) => serde_json::from_value::<OneOrMany>(v)
                .map_err(|e| Error::Invalid(format!("config.json: eos_token_id: {e}")))?
                .into_vec(),
        };
        let config = LlamaConfig {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.unwrap_or(10000.0),
            rope_scaling: parse_rope_scaling(raw.rope_scaling)?,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Invalid(format!("config.json: {name} must be positive")));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::Unsupported(format!(
                "{} attention heads are not a multiple of {} KV heads",
                self.num_heads, self.num_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::Unsupported(format!("odd head_dim {} (rotary embedding needs pairs)", self.head_dim)));
        }
        // A negative theta or eps turns every logit into NaN, far from where it was set.
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return Err(Error::Invalid(format!("config.json: rope_theta must be positive, not {}", self.rope_theta)));
        }
        if !(self.rms_norm_eps >= 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(Error::Invalid(format!("config.json: rms_norm_eps must be >= 0, not {}", self.rms_norm_eps)));
        }
        if let Some(s) = &self.rope_scaling {
            let factors = [
                ("factor", s.factor),
                ("low_freq_factor", s.low_freq_factor),
                ("high_freq_factor", s.high_freq_factor),
            ];
            if let Some((name, v)) = factors.iter().find(|(_, v)| !(*v > 0.0 && v.is_finite())) {
                return Err(Error::Invalid(format!("config.json: rope_scaling.{name} must be positive, not {v}")));
            }
            if s.original_max_position_embeddings == 0 {
                return Err(Error::Invalid(
                    "config.json: rope_scaling.original_max_position_embeddings must be positive".into(),
                ));
            }
        }
        // Every size derived from the config is at most the parameter count: if that fits, no later product overflows.
        if self.checked_parameter_count().and_then(|n| n.checked_mul(4)).is_none() {
            return Err(Error::Invalid(
                "config.json: the sizes give more parameters than this machine can address".into(),
            ));
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Query heads that share one KV head.
    pub fn gqa_group(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Parameters that take part in a decode step (the embedding table counts once when tied).
    pub fn parameter_count(&self) -> usize {
        self.checked_parameter_count().expect("validate() checked that the parameter count fits")
    }

    fn checked_parameter_count(&self) -> Option<usize> {
        let mul = |factors: &[usize]| factors.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let h = self.hidden_size;
        let q_dim = mul(&[self.num_heads, self.head_dim])?;
        let kv_dim = mul(&[self.num_kv_heads, self.head_dim])?;
        let attn = mul(&[h, q_dim.checked_add(mul(&[2, kv_dim])?)?])?.checked_add(mul(&[q_dim, h])?)?;
        let mlp = mul(&[3, h, self.intermediate_size])?;
        let layer = attn.checked_add(mlp)?.checked_add(mul(&[2, h])?)?;
        let embed = mul(&[self.vocab_size, h, if self.tie_word_embeddings { 1 } else { 2 }])?;
        mul(&[self.num_layers, layer])?.checked_add(embed)?.checked_add(h)
    }

    /// Rotary inverse frequencies, one per pair of dimensions, computed the way HF transformers
    /// does (in f32), with llama3 scaling applied when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f32> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f32 / d as f32)).collect();
        let Some(s) = &self.rope_scaling else { return base };
        let old_len = s.original_max_position_embeddings as f32;
        let low_freq_wavelen = old_len / s.low_freq_factor;
        let high_freq_wavelen = old_len / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_freq_wavelen {
                    f
                } else if wavelen > low_freq_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }

    /// cos and sin tables, `[positions][head_dim / 2]` each, row-major.
    pub fn rope_tables(&self, positions: usize) -> (Vec<f32>, Vec<f32>) {
        let inv = self.rope_inv_freq();
        let mut cos = Vec::with_capacity(positions * inv.len());
        let mut sin = Vec::with_capacity(positions * inv.len());
        for p in 0..positions {
            for f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            OneOrMany::One(x) => vec![x],
            OneOrMany::Many(v) => v,
        }
    }
}

fn parse_rope_scaling(value: Option<serde_json::Value>) -> Result<Option<Llama3RopeScaling>> {
    let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(None) };
    let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).unwrap_or("");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let num = |key: &str| -> Result<f64> {
                v.get(key)
                    .and_then(|x| x.as_f64())
                    .ok_or_else(|| Error::Invalid(format!("config.json: rope_scaling.{key} is missing")))
            };
            Ok(Some(Llama3RopeScaling {
                factor: num("factor")? as f32,
                low_freq_factor: num("low_freq_factor")? as f32,
                high_freq_factor: num("high_freq_factor")? as f32,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            }))
        }
        other => Err(Error::Unsupported(format!("rope_scaling type `{other}`; only llama3 is supported"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
        "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
        "vocab_size":49152,"max_position_embeddings":8192,"rms_norm_eps":1e-5,"rope_theta":100000,
        "tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":2}"#;

    #[test]
    fn parses_smollm2_shape() {
        let c = LlamaConfig::from_json(SMOL).unwrap();
        assert_eq!((c.head_dim, c.gqa_group(), c.eos_token_ids.clone()), (64, 3, vec![2]));
        assert!(c.tie_word_embeddings);
        assert!((c.parameter_count() as f64 - 134.5e6).abs() < 1e6, "{}", c.parameter_count());
    }

    #[test]
    fn rejects_other_architectures_and_bad_gqa() {
        let mistral = SMOL.replace("LlamaForCausalLM", "MistralForCausalLM");
        assert!(matches!(LlamaConfig::from_json(&mistral), Err(Error::Unsupported(_))));
        let bad = SMOL.replace("\"num_key_value_heads\":3", "\"num_key_value_heads\":4");
        assert!(LlamaConfig::from_json(&bad).unwrap_err().to_string().contains("not a multiple"));
    }

    #[test]
    fn rejects_constants_that_would_make_nan_and_sizes_that_overflow() {
        let error = |from: &str, to: &str| {
            assert!(SMOL.contains(from), "{from}");
            LlamaConfig::from_json(&SMOL.replace(from, to)).unwrap_err().to_string()
        };
        assert!(error("\"rope_theta\":100000", "\"rope_theta\":-1").contains("rope_theta must be positive, not -1"));
        assert!(error("\"rope_theta\":100000", "\"rope_theta\":0").contains("rope_theta must be positive"));
        assert!(error("\"rms_norm_eps\":1e-5", "\"rms_norm_eps\":-1e-5").contains("rms_norm_eps must be >= 0"));
        let scaling = |factor: &str| {
            format!(
                r#""rope_scaling":{{"rope_type":"llama3","factor":{factor},"low_freq_factor":1.0,
                "high_freq_factor":4.0,"original_max_position_embeddings":8192}},"rope_theta":100000"#
            )
        };
        assert!(error("\"rope_theta\":100000", &scaling("0.0")).contains("rope_scaling.factor must be positive"));
        assert!(LlamaConfig::from_json(&SMOL.replace("\"rope_theta\":100000", &scaling("8.0"))).is_ok());
        let huge = format!("\"vocab_size\":{}", usize::MAX / 4);
        assert!(error("\"vocab_size\":49152", &huge).contains("more parameters than this machine can address"));
        let huge = format!("\"num_hidden_layers\":{}", usize::MAX / 1000);
        assert!(error("\"num_hidden_layers\":30", &huge).contains("more parameters"));
    }

    #[test]
    fn llama3_scaling_divides_low_frequencies_only() {
        let j = SMOL.replace(
            "\"tie_word_embeddings\":true",
            r#""tie_word_embeddings":true,"rope_scaling":{"rope_type":"llama3","factor":8.0,
               "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"#,
        );
        let scaled = LlamaConfig::from_json(&j).unwrap();
        let plain = LlamaConfig::from_json(SMOL).unwrap();
        let (a, b) = (scaled.rope_inv_freq(), plain.rope_inv_freq());
        assert_eq!(a[0], b[0]);
        assert!((a[31] - b[31] / 8.0).abs() < 1e-12);
    }
}

//! Random Llama-shaped checkpoints for tests and benchmarks: a `config.json` and a
//! `model.safetensors` whose weights are scaled like a trained model's (projections ~ 1/sqrt(fan-in),
//! norms near 1), so activations and logits have realistic magnitudes and greedy decoding does not
//! collapse onto one token.

use std::path::Path;

use half::bf16;

use super::checkpoint::{write_safetensors, DType};
use super::weights::{layer_names, EMBED, FINAL_NORM, LM_HEAD};
use super::LlamaConfig;
use crate::sample::Rng;
use crate::{Error, Result};

/// The shape of a Llama; [`LlamaShape::config_json`] fills in the other fields with common values.
#[derive(Debug, Clone, Copy)]
pub struct LlamaShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub tied: bool,
}

impl LlamaShape {
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim, "vocab_size": self.vocab,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": self.tied, "bos_token_id": 1, "eos_token_id": 2,
            "hidden_act": "silu", "torch_dtype": "bfloat16"
        })
    }
}

/// Writes `dir/config.json` and `dir/model.safetensors` (in `dtype`) with random weights from `seed`.
pub fn write_random_checkpoint(dir: &Path, config: &serde_json::Value, seed: u64, dtype: DType) -> Result<()> {
    let c = LlamaConfig::from_json(&config.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).map_err(|e| Error::io(&path, e))?;

    let mut rng = Rng::new(seed);
    let mut tensors = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, centre: f32, spread: f32| {
        let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| centre + spread * rng.normal()).collect();
        tensors.push((name, dtype, shape, encode(&values, dtype)));
    };
    let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let fan_in = |k: usize| 1.0 / (k as f32).sqrt();
    // Embedding rows of RMS 0.1 give tied logits a spread of about 0.1 * sqrt(hidden), as in trained models.
    add(EMBED.into(), vec![v, h], 0.0, 0.1);
    for i in 0..c.num_layers {
        let n = layer_names(i);
        add(n.attn_norm, vec![h], 1.0, 0.1);
        add(n.q, vec![c.q_dim(), h], 0.0, fan_in(h));
        add(n.k, vec![c.kv_dim(), h], 0.0, fan_in(h));
        add(n.v, vec![c.kv_dim(), h], 0.0, fan_in(h));
        add(n.o, vec![h, c.q_dim()], 0.0, fan_in(c.q_dim()));
        add(n.mlp_norm, vec![h], 1.0, 0.1);
        add(n.gate, vec![f, h], 0.0, fan_in(h));
        add(n.up, vec![f, h], 0.0, fan_in(h));
        add(n.down, vec![h, f], 0.0, fan_in(f));
    }
    add(FINAL_NORM.into(), vec![h], 1.0, 0.1);
    if !c.tie_word_embeddings {
        add(LM_HEAD.into(), vec![v, h], 0.0, fan_in(h));
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors)
}

/// Writes `dir/tokenizer.json` and `dir/tokenizer_config.json` for a byte-level BPE with no merges:
/// ids 0..3 are `<unk>`, `<s>`, `</s>` and the next 256 are the bytes, so any text encodes (one
/// token per byte) and random checkpoints run end to end through the CLI. Needs `vocab >= 259`.
pub fn write_byte_tokenizer(dir: &Path, vocab: usize) -> Result<()> {
    if vocab < 259 {
        return Err(Error::Invalid(format!("a byte tokenizer needs a vocabulary of at least 259, not {vocab}")));
    }
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let mut ids = serde_json::Map::new();
    for (i, special) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        ids.insert(special.to_string(), i.into());
    }
    for (i, c) in alphabet.iter().enumerate() {
        ids.insert(c.to_string(), (i + 3).into());
    }
    let added: Vec<_> = ["<unk>", "<s>", "</s>"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": ids, "merges": []}
    });
    let config = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}"
    });
    for (name, value) in [("tokenizer.json", tokenizer), ("tokenizer_config.json", config)] {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Little-endian bytes of `values` in `dtype` (round to nearest even).
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
    }
}

//! The CPU reference model on random Llama-shaped checkpoints: the KV cache gives the same logits
//! as a full recompute, shards and dtypes load alike, and every kind of bad checkpoint gets an
//! error that names the problem.

use std::path::{Path, PathBuf};

use rooflab::model::checkpoint::write_safetensors;
use rooflab::model::cpu::CpuModel;
use rooflab::model::random::{write_random_checkpoint, LlamaShape};
use rooflab::model::{CausalLm, Checkpoint, DType, Logits};
use rooflab::Error;

const SMALL: LlamaShape = LlamaShape {
    hidden: 96,
    intermediate: 160,
    layers: 2,
    heads: 6,
    kv_heads: 2,
    head_dim: 16,
    vocab: 211,
    tied: false,
};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rooflab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn random_model(name: &str, shape: LlamaShape, dtype: DType) -> (PathBuf, CpuModel) {
    let dir = temp_dir(name);
    write_random_checkpoint(&dir, &shape.config_json(), 42, dtype).unwrap();
    let model = CpuModel::load(&dir).unwrap();
    (dir, model)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn incremental_decode_matches_full_prefill() {
    for (i, shape) in [
        SMALL,
        LlamaShape { heads: 4, kv_heads: 4, tied: true, ..SMALL },
        LlamaShape { heads: 8, kv_heads: 1, head_dim: 8, ..SMALL },
    ]
    .into_iter()
    .enumerate()
    {
        let (_dir, mut model) = random_model(&format!("incr{i}"), shape, DType::BF16);
        let tokens: Vec<u32> = (0..13).map(|t| (t * 37 + 5) % shape.vocab as u32).collect();
        let full = model.forward(&tokens, 0, Logits::All).unwrap();
        assert_eq!(full.len(), tokens.len() * shape.vocab);
        // Prefill 5, then one token at a time: every row must equal the full pass's row.
        let mut rows = model.forward(&tokens[..5], 0, Logits::All).unwrap();
        for (p, &t) in tokens.iter().enumerate().skip(5) {
            rows.extend(model.forward(&[t], p, Logits::Last).unwrap());
        }
        assert!(max_rel_diff(&rows, &full) < 1e-5, "shape {i}: {}", max_rel_diff(&rows, &full));
        assert!(full.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn f32_and_bf16_checkpoints_agree_and_shards_load() {
    let (_d1, mut f32_model) = random_model("f32", SMALL, DType::F32);
    let (dir, mut bf16_model) = random_model("bf16", SMALL, DType::BF16);
    let tokens = [3u32, 17, 200, 9];
    let a = f32_model.forward(&tokens, 0, Logits::All).unwrap();
    let b = bf16_model.forward(&tokens, 0, Logits::All).unwrap();
    assert!(max_rel_diff(&b, &a) < 3e-2, "bf16 vs f32: {}", max_rel_diff(&b, &a));

    // Split the bf16 checkpoint into two shards with an index; logits must not change.
    let sharded = temp_dir("sharded");
    std::fs::copy(dir.join("config.json"), sharded.join("config.json")).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let mut names: Vec<&str> = ck.names().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (s, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", s + 1);
        let tensors: Vec<_> = part
            .iter()
            .map(|n| {
                let t = ck.get(n).unwrap();
                weight_map.insert(n.to_string(), file.clone().into());
                (n.to_string(), t.dtype, t.shape.clone(), t.bytes().to_vec())
            })
            .collect();
        write_safetensors(&sharded.join(&file), &tensors).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let c = CpuModel::load(&sharded).unwrap().forward(&tokens, 0, Logits::All).unwrap();
    assert_eq!(c, b);
}

/// Loads `dir` and returns the error's one-line message.
fn load_error(dir: &Path) -> String {
    let err = CpuModel::load(dir).err().expect("loading should fail");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    msg
}

/// Rewrites `dir/model.safetensors` after `edit` changes its tensor list.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, DType, Vec<usize>, Vec<u8>)>)) {
    let ck = Checkpoint::open(dir).unwrap();
    let mut tensors: Vec<_> = ck
        .names()
        .map(|n| ck.get(n).unwrap())
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec()))
        .collect();
    drop(ck);
    edit(&mut tensors);
    write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
}

#[test]
fn bad_checkpoints_get_errors_that_name_the_problem() {
    let dir = temp_dir("bad");
    write_random_checkpoint(&dir, &SMALL.config_json(), 1, DType::BF16).unwrap();
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();

    std::fs::write(&file, &bytes[..bytes.len() - 1000]).unwrap();
    assert!(load_error(&dir).contains("truncated safetensors file"));
    std::fs::write(&file, &bytes[..4]).unwrap();
    assert!(load_error(&dir).contains("truncated"));
    std::fs::write(&file, &bytes).unwrap();

    rewrite(&dir, |t| t.retain(|t| t.0 != "model.layers.1.mlp.up_proj.weight"));
    assert!(load_error(&dir).contains("no tensor `model.layers.1.mlp.up_proj.weight`"));
    std::fs::write(&file, &bytes).unwrap();

    rewrite(&dir, |t| {
        let q = t.iter_mut().find(|t| t.0 == "model.layers.0.self_attn.k_proj.weight").unwrap();
        q.2 = vec![q.2[1], q.2[0]];
    });
    let msg = load_error(&dir);
    assert!(msg.contains("`model.layers.0.self_attn.k_proj.weight` has shape [96, 32], expected [32, 96]"), "{msg}");
    std::fs::write(&file, &bytes).unwrap();

    // An integer tensor: safetensors allows it, a Llama weight must not be one.
    let mut raw = std::fs::read(&file).unwrap();
    let header_len = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(raw[8..8 + header_len].to_vec()).unwrap();
    let patched = header.replacen("\"BF16\"", "\"I16\" ", 1);
    raw.splice(8..8 + header_len, patched.bytes());
    std::fs::write(&file, &raw).unwrap();
    let msg = load_error(&dir);
    assert!(msg.contains("has dtype I16, expected one of F32, F16, BF16"), "{msg}");
    std::fs::write(&file, &bytes).unwrap();

    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("LlamaForCausalLM", "GPT2LMHeadModel")).unwrap();
    assert!(load_error(&dir).contains("unsupported model: architecture [\"GPT2LMHeadModel\"]"));
    std::fs::write(&config, "{ not json").unwrap();
    assert!(load_error(&dir).contains("config.json"));
    std::fs::remove_file(&config).unwrap();
    assert!(load_error(&dir).contains("config.json"));

    let empty = temp_dir("empty");
    std::fs::write(empty.join("config.json"), text).unwrap();
    assert!(load_error(&empty).contains("no model.safetensors"));
}

#[test]
fn positions_past_the_context_and_unknown_tokens_are_errors() {
    let dir = temp_dir("ctx");
    write_random_checkpoint(&dir, &SMALL.config_json(), 3, DType::BF16).unwrap();
    let config = rooflab::model::LlamaConfig::from_file(&dir.join("config.json")).unwrap();
    let mut model = CpuModel::new(config, &Checkpoint::open(&dir).unwrap(), Some(8)).unwrap();
    let err = model.forward(&[1; 9], 0, Logits::Last).unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { prompt: 9, context: 8, .. }), "{err}");
    assert!(model.forward(&[5000], 0, Logits::Last).unwrap_err().to_string().contains("outside the vocabulary"));
    assert!(model.forward(&[1], 3, Logits::Last).unwrap_err().to_string().contains("cache holds only 0"));
}

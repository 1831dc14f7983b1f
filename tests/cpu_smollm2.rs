//! The CPU reference on the real SmolLM2-135M-Instruct (imported from its GGUF by
//! `scripts/fetch-model`) against HF transformers' golden values on the same folder
//! (tests/fixtures/smollm2_golden.json, made by scripts/hf-golden.py; see results/golden/NOTES.md):
//! tokenizer ids, chat template text, logits at every prompt position, the full last-position row,
//! and 20 greedy tokens. Without the imported folder the tests say so and pass vacuously; the test
//! command (scripts/test) fetches it first, so CI always runs them.

use std::path::{Path, PathBuf};

use rooflab::model::cpu::CpuModel;
use rooflab::model::{CausalLm, Checkpoint, Logits};
use rooflab::sample::argmax;
use rooflab::tokenizer::{Message, Tokenizer};
use serde_json::Value;

/// Largest |logit difference| allowed against HF transformers in f32. Measured: 5.3e-5; HF's own noise is ~6e-5
/// (thread count, cache vs full prefill); a wrong layer moves logits by 0.05 or more.
const MAX_LOGIT_DIFF: f32 = 5e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ROOFLAB_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/SmolLM2-135M-Instruct"));
    if dir.join("config.json").exists() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} not found; run scripts/fetch-model", dir.display());
        None
    }
}

fn golden() -> Value {
    let path = root().join("tests/fixtures/smollm2_golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn logsumexp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

#[test]
fn tokenizer_and_chat_template_match_hf() {
    let Some(dir) = model_dir() else { return };
    let tok = Tokenizer::load(&dir).unwrap();
    let g = golden();
    for case in g["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids(&case["ids"]), "{text:?}");
    }
    for prompt in g["prompts"].as_array().unwrap().iter().filter(|p| p["kind"] == "chat") {
        let messages: Vec<Message> = prompt["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(tok.apply_chat_template(&messages).unwrap(), prompt["text"].as_str().unwrap());
    }
}

#[test]
fn logits_and_greedy_tokens_match_hf_transformers() {
    let Some(dir) = model_dir() else { return };
    let g = golden();
    let tok = Tokenizer::load(&dir).unwrap();
    let rows = Checkpoint::open_file(&root().join("tests/fixtures/smollm2_golden_rows.safetensors")).unwrap();
    let mut model = CpuModel::load(&dir).unwrap();
    let vocab = model.config().vocab_size;
    let mut worst = 0.0f32;
    for prompt in g["prompts"].as_array().unwrap() {
        let name = prompt["name"].as_str().unwrap();
        let add_special = prompt["add_special_tokens"].as_bool().unwrap();
        let prompt_ids = tok.encode(prompt["text"].as_str().unwrap(), add_special).unwrap();
        assert_eq!(prompt_ids, ids(&prompt["ids"]), "{name}: token ids");

        let all = model.forward(&prompt_ids, 0, Logits::All).unwrap();
        for (p, pos) in prompt["positions"].as_array().unwrap().iter().enumerate() {
            let row = &all[p * vocab..(p + 1) * vocab];
            for pair in pos["top"].as_array().unwrap() {
                let (id, want) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
                worst = worst.max((row[id] - want).abs());
            }
            worst = worst.max((logsumexp(row) - pos["logsumexp"].as_f64().unwrap()).abs() as f32);
        }
        let last = &all[(prompt_ids.len() - 1) * vocab..];
        let want = rows.get(&format!("{name}.last_logits")).unwrap().to_f32_vec();
        let diff = last.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < MAX_LOGIT_DIFF, "{name}: last-position logits differ from HF by up to {diff}");
        worst = worst.max(diff);

        // 20 greedy steps through the KV cache, not stopped at EOS, as the fixture was made.
        let mut context = prompt_ids.clone();
        let mut logits = last.to_vec();
        let mut greedy = vec![];
        for _ in 0..20 {
            let next = argmax(&logits);
            greedy.push(next);
            context.push(next);
            logits = model.forward(&[next], context.len() - 1, Logits::Last).unwrap();
        }
        assert_eq!(greedy, ids(&prompt["greedy"]["ids"]), "{name}: greedy tokens");
    }
    assert!(worst < MAX_LOGIT_DIFF, "logits differ from HF by up to {worst}");
    eprintln!("max |logit - HF| over the checked entries: {worst:.2e}");
}

#[test]
fn continues_the_capital_of_france_with_paris() {
    let Some(dir) = model_dir() else { return };
    let tok = Tokenizer::load(&dir).unwrap();
    let mut model = CpuModel::load(&dir).unwrap();
    let prompt = tok.encode("The capital of France is", true).unwrap();
    let logits = model.forward(&prompt, 0, Logits::Last).unwrap();
    assert_eq!(tok.decode(&[argmax(&logits)], true).unwrap(), " Paris");
}

/// Streaming the detokenised output token by token gives the text of one decode of all of it, on
/// SmolLM2's byte-level vocabulary (characters split across tokens, special tokens skipped).
#[test]
fn streamed_text_equals_one_decode_of_everything() {
    let Some(dir) = model_dir() else { return };
    let tok = Tokenizer::load(&dir).unwrap();
    let text = "Zürich — 東京 🦀🦀 naïve\n\tcode: `fn main() {}`<|im_end|> and more";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = tok.stream();
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert!(pieces.iter().any(String::is_empty), "some token must end inside a character: {pieces:?}");
    assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
    assert_eq!(stream.text().unwrap(), pieces.concat());
}

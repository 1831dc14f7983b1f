//! The `rooflab` command line end to end on a random checkpoint with a byte-level tokenizer, and
//! its one-line errors for bad input.

use std::path::PathBuf;
use std::process::Command;

use rooflab::model::random::{write_byte_tokenizer, write_random_checkpoint, LlamaShape};
use rooflab::model::DType;

const SHAPE: LlamaShape = LlamaShape {
    hidden: 128,
    intermediate: 192,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    head_dim: 64,
    vocab: 320,
    tied: true,
};

fn model_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rooflab-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_random_checkpoint(&dir, &SHAPE.config_json(), 5, DType::BF16).unwrap();
    write_byte_tokenizer(&dir, SHAPE.vocab).unwrap();
    dir
}

/// Runs `rooflab ARGS`; returns (success, stdout, stderr).
fn rooflab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rooflab")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn error_line(stderr: &str) -> &str {
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
    line
}

#[test]
fn generates_and_reports_latency_on_the_cpu() {
    let dir = model_dir("gen");
    let d = dir.to_str().unwrap();
    let (ok, stdout, stderr) =
        rooflab(&["generate", "--model", d, "--prompt", "hello", "--max-new-tokens", "6", "--device", "cpu"]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("hello"), "{stdout}");
    assert!(stderr.contains("TTFT") && stderr.contains("tokens/s") && stderr.contains("cpu ("), "{stderr}");
    // Greedy output is deterministic; seeded sampling too.
    let run = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", d, "--prompt", "abc", "--max-new-tokens", "8", "--device", "cpu"];
        args.extend_from_slice(extra);
        rooflab(&args).1
    };
    assert_eq!(run(&[]), run(&[]));
    let sampled = ["--temperature", "0.9", "--top-p", "0.95", "--seed", "11"];
    assert_eq!(run(&sampled), run(&sampled));
    let (ok, _, stderr) =
        rooflab(&["generate", "--model", d, "--prompt", "hi", "--chat", "--max-new-tokens", "3", "--device", "cpu"]);
    assert!(ok, "{stderr}");
}

#[test]
fn bad_input_gets_one_line_errors() {
    let dir = model_dir("bad");
    let d = dir.to_str().unwrap();
    let long = "x".repeat(50);
    let (ok, _, stderr) = rooflab(&["generate", "--model", d, "--prompt", &long, "--context", "16", "--device", "cpu"]);
    assert!(!ok);
    assert!(error_line(&stderr).contains("prompt has 50 tokens but the context holds 16"), "{stderr}");

    let (ok, _, stderr) = rooflab(&["generate", "--model", "/nonexistent/model", "--prompt", "a"]);
    assert!(!ok && error_line(&stderr).contains("/nonexistent/model: no config.json"), "{stderr}");

    let (ok, _, stderr) = rooflab(&["generate", "--model", d, "--prompt", "a", "--top-p", "0", "--device", "cpu"]);
    assert!(!ok && error_line(&stderr).contains("top-p must be in (0, 1]"), "{stderr}");

    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let (ok, _, stderr) = rooflab(&["generate", "--model", d, "--prompt", "a", "--device", "cpu"]);
    assert!(!ok && error_line(&stderr).contains("tokenizer.json is missing"), "{stderr}");
}

#[test]
fn a_nan_in_the_weights_is_an_error_not_a_stream_of_one_token() {
    let dir = model_dir("nan");
    // The final norm's first weight becomes a bf16 NaN: every logit is NaN from the prompt on.
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let begin = 8 + header_len + metadata.info("model.norm.weight").unwrap().data_offsets.0;
    bytes[begin..begin + 2].copy_from_slice(&0x7fc0u16.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (ok, _, stderr) =
        rooflab(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "abc", "--device", "cpu"]);
    assert!(!ok);
    assert!(error_line(&stderr).contains("320 of the 320 logits at position 2 are NaN or infinite"), "{stderr}");
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if rooflab::cuda::gpu_available() {
        return; // this machine has a GPU: tests/gpu.rs covers it
    }
    let dir = model_dir("nogpu");
    let (ok, _, stderr) = rooflab(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "a", "--device", "cuda"]);
    assert!(!ok && error_line(&stderr).contains("no CUDA GPU"), "{stderr}");
    // auto falls back to the CPU reference with a note.
    let (ok, _, stderr) =
        rooflab(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "a", "--max-new-tokens", "2"]);
    assert!(ok && stderr.contains("running on the CPU reference"), "{stderr}");
}

#[test]
fn loading_and_decoding_stay_within_one_and_a_half_checkpoints_of_memory() {
    // ~90 MB of bf16 weights: large enough that a copy of the weights would show.
    let shape = LlamaShape {
        hidden: 512,
        intermediate: 1536,
        layers: 8,
        heads: 8,
        kv_heads: 2,
        head_dim: 64,
        vocab: 32000,
        tied: false,
    };
    let dir = std::env::temp_dir().join(format!("rooflab-cli-{}-mem", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_random_checkpoint(&dir, &shape.config_json(), 9, DType::BF16).unwrap();
    write_byte_tokenizer(&dir, shape.vocab).unwrap();
    let size = std::fs::metadata(dir.join("model.safetensors")).unwrap().len() as usize;
    let (ok, _, stderr) = rooflab(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "memory",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    // The CLI reports its own VmHWM (a child's rusage would include the test process's peak: a
    // vfork child shares its parent's memory until exec).
    let mb: f64 = stderr.split("peak host memory ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    let peak = (mb * 1e6) as usize;
    assert!(peak < size * 3 / 2, "peak RSS {peak} bytes for a {size}-byte checkpoint");
    let _ = std::fs::remove_dir_all(&dir);
}

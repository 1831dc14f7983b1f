//! The GPU model against the CPU model on random Llama-shaped checkpoints (GQA 1, 3, 4, 8; head_dim
//! 64 and 128; tied and untied), with the cuBLAS and the tiled prefill GEMM; CUDA-graph replay
//! against eager launches; SmolLM2 when models/SmolLM2-135M-Instruct exists; and what a machine
//! without a GPU (or with an unsupported model) gets.

use std::path::{Path, PathBuf};

use rooflab::cuda::driver_present;
use rooflab::model::cpu::CpuModel;
use rooflab::model::gpu::{GpuModel, GpuOptions, PrefillGemm};
use rooflab::model::random::{write_random_checkpoint, LlamaShape};
use rooflab::model::{CausalLm, DType, Logits};
use rooflab::Error;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rooflab-gpu-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn checkpoint(name: &str, shape: LlamaShape) -> PathBuf {
    let dir = temp_dir(name);
    write_random_checkpoint(&dir, &shape.config_json(), 7, DType::BF16).unwrap();
    dir
}

/// GQA 1 / 3 / 4 / 8, head_dim 64 and 128, tied and untied, vocab and widths not multiples of tiles.
const SHAPES: [LlamaShape; 4] = [
    LlamaShape {
        hidden: 256,
        intermediate: 520,
        layers: 2,
        heads: 4,
        kv_heads: 4,
        head_dim: 64,
        vocab: 300,
        tied: false,
    },
    LlamaShape {
        hidden: 576,
        intermediate: 1536,
        layers: 3,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        vocab: 1000,
        tied: true,
    },
    LlamaShape {
        hidden: 512,
        intermediate: 1000,
        layers: 2,
        heads: 8,
        kv_heads: 2,
        head_dim: 128,
        vocab: 517,
        tied: false,
    },
    LlamaShape {
        hidden: 384,
        intermediate: 768,
        layers: 2,
        heads: 16,
        kv_heads: 2,
        head_dim: 64,
        vocab: 257,
        tied: true,
    },
];

fn prompt(len: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Greedy tokens after `prompt`, decoding one token per forward call.
fn greedy(model: &mut dyn CausalLm, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut logits = model.forward(prompt, 0, Logits::Last).unwrap();
    let (mut tokens, mut rows) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let next = argmax(&logits) as u32;
        tokens.push(next);
        rows.push(logits);
        logits = model.forward(&[next], prompt.len() + step, Logits::Last).unwrap();
    }
    (tokens, rows)
}

/// Compares GPU and CPU: all prompt logits within 1e-2 relative, then 32 identical greedy tokens (up to
/// a near-tie, where the two runs may part).
fn compare_with_cpu(dir: &Path, options: GpuOptions, what: &str) {
    let mut cpu = CpuModel::load(dir).unwrap();
    let mut gpu = GpuModel::load(dir, options).unwrap();
    eprintln!("{what}: {}", gpu.device_name());
    let vocab = cpu.config().vocab_size;
    let tokens = prompt(37, vocab);
    let want = cpu.forward(&tokens, 0, Logits::All).unwrap();
    let got = gpu.forward(&tokens, 0, Logits::All).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: logits length");
    let err = max_rel_diff(&got, &want);
    assert!(err < 1e-2, "{what}: prompt logits differ by {err} (relative)");

    let (cpu_tokens, cpu_rows) = greedy(&mut cpu, &tokens, 32);
    let (gpu_tokens, gpu_rows) = greedy(&mut gpu, &tokens, 32);
    let mut compared = 32;
    if let Some(i) = (0..32).find(|&i| cpu_tokens[i] != gpu_tokens[i]) {
        // Random weights give near-ties: a swap of two tokens whose CPU logits are within the logit
        // bound is rounding, not a wrong kernel. The sequences diverge there, so rows 0..=i are compared.
        let row = &cpu_rows[i];
        let scale = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let gap = row[cpu_tokens[i] as usize] - row[gpu_tokens[i] as usize];
        if gap > 1e-2 * scale {
            let mut top: Vec<f32> = row.clone();
            top.sort_by(|a, b| b.total_cmp(a));
            panic!(
                "{what}: greedy token {i} differs: cpu {} gpu {} (cpu top-2 logits {} {}, gpu rel err {})",
                cpu_tokens[i],
                gpu_tokens[i],
                top[0],
                top[1],
                max_rel_diff(&gpu_rows[i], &cpu_rows[i])
            );
        }
        eprintln!("{what}: greedy token {i} is a near-tie (cpu logit gap {gap}); compared up to it");
        compared = i + 1;
    }
    for (i, (g, c)) in gpu_rows.iter().zip(&cpu_rows).take(compared).enumerate() {
        let err = max_rel_diff(g, c);
        assert!(err < 1e-2, "{what}: decode step {i} logits differ by {err}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_model_matches_cpu_model_on_random_checkpoints() {
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let dir = checkpoint(&format!("shape{i}"), shape);
        for gemm in [PrefillGemm::Tiled, PrefillGemm::Auto] {
            let options = GpuOptions { prefill_gemm: gemm, max_context: Some(256), ..GpuOptions::default() };
            compare_with_cpu(&dir, options, &format!("shape {i} {shape:?} {gemm:?}"));
        }
        // Prompts longer than the prefill chunk go in pieces that attend to the earlier ones.
        let options = GpuOptions { prefill_chunk: 16, max_context: Some(256), ..GpuOptions::default() };
        compare_with_cpu(&dir, options, &format!("shape {i} chunked prefill"));
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn graph_replay_gives_the_same_logits_as_eager_launches() {
    let dir = checkpoint("graph", SHAPES[1]);
    let mut model = GpuModel::load(&dir, GpuOptions::default()).unwrap();
    let tokens = prompt(11, SHAPES[1].vocab);
    let run = |model: &mut GpuModel, graphs: bool| {
        model.set_use_graphs(graphs);
        greedy(model, &tokens, 20)
    };
    let (graph_tokens, graph_rows) = run(&mut model, true);
    let (eager_tokens, eager_rows) = run(&mut model, false);
    assert_eq!(graph_tokens, eager_tokens);
    assert_eq!(graph_rows, eager_rows, "graph replay and eager launches run the same kernels: bit-identical logits");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn decode_rows_match_a_full_prefill_and_the_cache_can_rewind() {
    let shape = SHAPES[2];
    let dir = checkpoint("incremental", shape);
    let mut model =
        GpuModel::load(&dir, GpuOptions { prefill_gemm: PrefillGemm::Tiled, ..GpuOptions::default() }).unwrap();
    let tokens = prompt(40, shape.vocab);
    let full = model.forward(&tokens, 0, Logits::All).unwrap();
    // Rewind to 25 cached positions, then one token at a time.
    let mut rows = model.forward(&tokens[..25], 0, Logits::All).unwrap();
    for (p, &t) in tokens.iter().enumerate().skip(25) {
        rows.extend(model.forward(&[t], p, Logits::Last).unwrap());
    }
    // Prefill attention runs on tensor cores (q and the probabilities rounded to bf16), decode in f32:
    // the same bound as GPU against CPU. A wrong cache row or offset would be off by O(1).
    assert!(max_rel_diff(&rows, &full) < 1e-2, "{}", max_rel_diff(&rows, &full));
    let err = model.forward(&[1], 41, Logits::Last).unwrap_err();
    assert!(err.to_string().contains("cache holds only 40"), "{err}");
    assert!(model.memory_bandwidth().is_some_and(|b| b > 0.0));
    assert!(model.weight_bytes() > 0);
    eprintln!("memory: {}", model.memory_summary());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn smollm2_matches_the_cpu_model_when_present() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct");
    if !dir.join("config.json").exists() {
        eprintln!("SKIPPED: {} not found (scripts/fetch-model)", dir.display());
        return;
    }
    compare_with_cpu(&dir, GpuOptions::default(), "SmolLM2-135M-Instruct");
}

/// Runs on every machine: an unsupported head_dim is refused from config.json, before any GPU work.
#[test]
fn unsupported_head_dim_is_refused_by_name() {
    let dir = temp_dir("hd96");
    let shape = LlamaShape { head_dim: 96, ..SHAPES[0] };
    std::fs::write(dir.join("config.json"), shape.config_json().to_string()).unwrap();
    let err = GpuModel::load(&dir, GpuOptions::default()).err().expect("head_dim 96 must be refused");
    assert!(matches!(err, Error::Unsupported(_)) && err.to_string().contains("head_dim 96"), "{err}");
}

/// Runs on every machine: without a driver, loading a model is `Error::NoGpu`, never a panic.
#[test]
fn a_machine_without_a_gpu_gets_no_gpu() {
    if driver_present() {
        return;
    }
    let dir = checkpoint("nogpu", SHAPES[0]);
    let err = GpuModel::load(&dir, GpuOptions::default()).err().expect("no GPU here");
    assert!(matches!(err, Error::NoGpu(_)), "{err}");
}

/// max |a - b| / max |b|: the relative logit error the model tests bound.
fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

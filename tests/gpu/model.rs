//! The GPU model against the CPU model on random Llama-shaped checkpoints (GQA 1, 3, 4, 8; head_dim
//! 64 and 128; tied and untied), with the cuBLAS and the tiled prefill GEMM; CUDA-graph replay
//! against eager launches; SmolLM2 when models/SmolLM2-135M-Instruct exists; and what a machine
//! without a GPU (or with an unsupported model) gets.

use std::path::PathBuf;

use rooflab::cuda::driver_present;
use rooflab::model::gpu::{DecodeKernels, GpuModel, GpuOptions, PrefillGemm};
use rooflab::model::random::LlamaShape;
use rooflab::model::{CausalLm, Logits};
use rooflab::Error;

use crate::device::Gpu;
use crate::model_check::{checkpoint, compare_with_cpu, greedy, max_rel_diff, prompt, temp_dir, GREEDY_STEPS, SHAPES};

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_model_matches_cpu_model_on_random_checkpoints() {
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let dir = checkpoint(&format!("shape{i}"), shape);
        for gemm in [PrefillGemm::Tiled, PrefillGemm::Auto] {
            let options = GpuOptions { prefill_gemm: gemm, max_context: Some(256), ..GpuOptions::default() };
            compare_with_cpu(
                &dir,
                &mut GpuModel::load(&dir, options).unwrap(),
                &format!("shape {i} {shape:?} {gemm:?}"),
                GREEDY_STEPS,
            );
        }
        // Prompts longer than the prefill chunk go in pieces that attend to the earlier ones; this run
        // also decodes with the unfused kernels (the baseline of decode_fused.cu).
        let options = GpuOptions {
            prefill_chunk: 16,
            max_context: Some(256),
            decode: DecodeKernels::Unfused,
            ..GpuOptions::default()
        };
        compare_with_cpu(
            &dir,
            &mut GpuModel::load(&dir, options).unwrap(),
            &format!("shape {i} chunked prefill, unfused decode"),
            GREEDY_STEPS,
        );
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
fn fused_and_unfused_decode_agree() {
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let dir = checkpoint(&format!("fusion{i}"), shape);
        let mut model = GpuModel::load(&dir, GpuOptions { max_context: Some(256), ..GpuOptions::default() }).unwrap();
        crate::model_check::compare_decode_kernels(&mut model, shape.vocab, &format!("shape {i}"), |m, d| {
            m.set_decode_kernels(d).unwrap()
        });
    }
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
    // Both prefill paths: the tiled GEMM (f32 inputs) at the tight bound, the default (cuBLAS) at its own.
    // With small shapes (the mock rehearsal, whose every kernel runs on the CPU emulator) a few greedy
    // steps, as tests/emu.rs takes: there the host path is rehearsed, and a GPU runs all of them.
    let steps = if Gpu::small_shapes() { 3 } else { GREEDY_STEPS };
    for gemm in [PrefillGemm::Tiled, PrefillGemm::Auto] {
        let options = GpuOptions { prefill_gemm: gemm, ..GpuOptions::default() };
        let what = format!("SmolLM2-135M-Instruct {gemm:?}");
        compare_with_cpu(&dir, &mut GpuModel::load(&dir, options).unwrap(), &what, steps);
    }
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

//! The end-to-end suite: batch-1 greedy generation through the GPU model, timed with the host clock
//! around each `forward` call (which ends by copying the logits to the host, as generation does).
//!
//! - `prefill`: time to first token for prompts of 32 (the peers' shape) and 128 to 8192 tokens.
//! - `decode_step`: time per generated token after a 32-token prompt; `rooflab` replays the captured
//!   CUDA graph of the fused decode kernels (decode_fused.cu), `rooflab-eager` launches the same
//!   kernels one by one, `rooflab-unfused` replays a graph of the unfused ones (14 launches per layer
//!   instead of 6; at small models launch overhead decides). Its floor is reading every weight once
//!   per token, so `% of roof` is the fraction of the floor.
//!
//! Models: random-weight Llama-3.2-1B and Llama-3-8B shapes (built on the device by
//! `GpuModel::random`, no checkpoint file), and a checkpoint folder (SmolLM2-135M-Instruct by default)
//! when present. A model that does not fit the GPU is skipped with a note.
//!
//! Each model is loaded once with a KV cache for the longest prompt ([`context_for`]), so its decode
//! attention runs with the splits the engine picks for that cache length, as `rooflab generate
//! --context N` would.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use rooflab::model::config::Llama3RopeScaling;
use rooflab::model::gpu::{DecodeKernels, GpuModel, GpuOptions};
use rooflab::model::{CausalLm, LlamaConfig, Logits};
use rooflab::sample::{argmax, Rng};

use crate::bench::append::Existing;
use crate::bench::cases::{e2e_cases, Param, E2E_PROMPT};
use crate::bench::{measurement_row, Case, Measurement, Plan, OUT_OF_TIME};
use crate::report::model::{Ceilings, Failure};

/// The checkpoint `rooflab bench` uses when `--model` is not given and the folder exists.
pub const DEFAULT_MODEL_DIR: &str = "models/SmolLM2-135M-Instruct";
/// Prompt lengths of the TTFT measurements (besides the peers' 32).
pub const PROMPTS: [u64; 4] = [128, 512, 2048, 8192];
pub const QUICK_PROMPTS: [u64; 2] = [128, 1024];
/// Timed runs per measurement (after one untimed run), unless the budget runs out first (at least 2).
const RUNS: usize = 5;
const QUICK_RUNS: usize = 3;
const CASE_BUDGET_S: f64 = 20.0;
/// The decode-step variants: (name, CUDA graphs, decode kernels). The first two run the same kernels,
/// so their greedy tokens must be identical. `Auto` is the fused kernels unless `ROOFLAB_DECODE` says
/// otherwise (run.json records it).
const DECODE_VARIANTS: [(&str, bool, DecodeKernels); 3] = [
    ("rooflab", true, DecodeKernels::Auto),
    ("rooflab-eager", false, DecodeKernels::Auto),
    ("rooflab-unfused", true, DecodeKernels::Unfused),
];
const QUICK_CASE_BUDGET_S: f64 = 8.0;

/// Where a model's weights come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// Random bf16 weights of this shape, from this seed.
    Random { config: LlamaConfig, seed: u64 },
    /// An HF checkpoint folder.
    Folder(PathBuf),
}

#[derive(Debug, Clone)]
pub struct E2eModel {
    /// The `model=` value of the shape: the folder's name, or `random-<shape>`.
    pub name: String,
    pub source: ModelSource,
}

fn llama3_config(hidden: usize, intermediate: usize, layers: usize, kv_heads: usize, tied: bool) -> LlamaConfig {
    LlamaConfig {
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_layers: layers,
        num_heads: 32,
        num_kv_heads: kv_heads,
        head_dim: hidden / 32,
        vocab_size: 128_256,
        max_position_embeddings: 131_072,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: None,
        tie_word_embeddings: tied,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001],
    }
}

/// Llama-3.2-1B's shape: hidden 2048, 16 layers, GQA 32/8 with head_dim 64, FFN 8192, tied embeddings.
pub fn llama_3_2_1b() -> LlamaConfig {
    let scaling = Llama3RopeScaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    LlamaConfig { rope_scaling: Some(scaling), ..llama3_config(2048, 8192, 16, 8, true) }
}

/// Llama-3-8B's shape: hidden 4096, 32 layers, GQA 32/8 with head_dim 128, FFN 14336, untied head.
pub fn llama_3_8b() -> LlamaConfig {
    LlamaConfig { max_position_embeddings: 8192, ..llama3_config(4096, 14336, 32, 8, false) }
}

/// The e2e models: `explicit` (`--model`), else `default_dir` when it holds a checkpoint (a note says when
/// it does not), then the two random Llama shapes. The checkpoint goes first: it is the smallest, and on
/// the GPU machine it is there only while the machine that received it stays up, so a bench cut by its
/// time budget should lose a random shape (which any later call can measure) rather than it.
pub fn models(explicit: Option<&Path>, default_dir: &Path) -> Vec<E2eModel> {
    let mut out = Vec::new();
    let dir = explicit.unwrap_or(default_dir);
    if dir.join("config.json").is_file() {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        out.push(E2eModel { name, source: ModelSource::Folder(dir.to_path_buf()) });
    } else {
        eprintln!(
            "note: e2e: no checkpoint at {} (scripts/fetch-model), measuring the random models only",
            dir.display()
        );
    }
    out.push(E2eModel {
        name: "random-Llama-3.2-1B".into(),
        source: ModelSource::Random { config: llama_3_2_1b(), seed: 1 },
    });
    out.push(E2eModel {
        name: "random-Llama-3-8B".into(),
        source: ModelSource::Random { config: llama_3_8b(), seed: 8 },
    });
    out
}

/// FLOPs of a causal prefill of `n` tokens that returns the last token's logits: every layer's
/// projections for every token, attention over the visible keys (2·D·n·(n+1) per head and layer: QKᵀ
/// and PV), and the head for one token.
pub fn prefill_flops(c: &LlamaConfig, n: u64) -> f64 {
    let (h, f, nf) = (c.hidden_size as f64, c.intermediate_size as f64, n as f64);
    let (qd, kvd) = (c.q_dim() as f64, c.kv_dim() as f64);
    let per_token = 2.0 * c.num_layers as f64 * (h * (qd + 2.0 * kvd) + qd * h + 3.0 * h * f);
    let attention = c.num_layers as f64 * c.num_heads as f64 * 2.0 * c.head_dim as f64 * nf * (nf + 1.0);
    per_token * nf + attention + 2.0 * c.vocab_size as f64 * h
}

/// The cases of one model: `decode_step` and `prefill` at the peers' prompt, then `prefill` at every
/// prompt of [`PROMPTS`] (or [`QUICK_PROMPTS`]) that fits `context`.
pub fn model_cases(name: &str, c: &LlamaConfig, weight_bytes: u64, context: usize, quick: bool) -> Vec<Case> {
    let mut cases = e2e_cases(name, weight_bytes, c.parameter_count() as u64, quick);
    let prompts: &[u64] = if quick { &QUICK_PROMPTS } else { &PROMPTS };
    let Some(template) = cases.iter().find(|c| c.kernel == "prefill").cloned() else {
        return cases;
    };
    for &prompt in prompts.iter().filter(|&&p| p as usize <= context && p != E2E_PROMPT) {
        let mut case = template.clone();
        for (key, value) in &mut case.params {
            if key == "prompt" {
                *value = Param::Int(prompt);
            }
        }
        cases.push(case);
    }
    for case in cases.iter_mut().filter(|c| c.kernel == "prefill") {
        case.work.flops = prefill_flops(c, case.int("prompt").unwrap_or(E2E_PROMPT));
    }
    cases
}

/// Positions the model's cache needs: the longest prompt that fits the model, and the decode run.
pub fn context_for(c: &LlamaConfig, quick: bool) -> usize {
    let prompts: &[u64] = if quick { &QUICK_PROMPTS } else { &PROMPTS };
    let gen = crate::bench::cases::E2E_GEN as usize;
    let longest = prompts.iter().map(|&p| p as usize).filter(|&p| p <= c.max_position_embeddings).max();
    longest.unwrap_or(0).max(E2E_PROMPT as usize + gen).min(c.max_position_embeddings)
}

fn load(model: &E2eModel, context: usize) -> rooflab::Result<GpuModel> {
    let options = GpuOptions { max_context: Some(context), ..GpuOptions::default() };
    match &model.source {
        ModelSource::Random { config, seed } => GpuModel::random(config.clone(), *seed, options),
        ModelSource::Folder(dir) => GpuModel::load(dir, options),
    }
}

/// Measures every model: rows for summary.csv, and what failed (a model that would not load, a case
/// whose run or check failed); the other models and cases go on. Nothing starts after the plan's
/// deadline, and what `done` (the run being added to) has already is skipped.
pub fn measure(
    models: &[E2eModel],
    quick: bool,
    ceilings: &Ceilings,
    plan: &Plan,
    done: Option<&Existing>,
) -> Result<Measurement> {
    let mut m = Measurement::default();
    for model in models {
        if done.is_some_and(|run| run.has_model(&model.name)) {
            continue;
        }
        if plan.out_of_time() {
            m.failures.push(model_failure(&model.name, OUT_OF_TIME.to_string()));
            continue;
        }
        let config = match &model.source {
            ModelSource::Random { config, .. } => config.clone(),
            ModelSource::Folder(dir) => LlamaConfig::from_file(&dir.join("config.json"))?,
        };
        let context = context_for(&config, quick);
        eprintln!("  e2e {}: loading ({} positions of KV cache)", model.name, context);
        let started = Instant::now();
        let mut gpu_model = match load(model, context) {
            Ok(m) => m,
            Err(e @ rooflab::Error::OutOfGpuMemory { .. }) => {
                eprintln!("note: e2e {} skipped: {e}", model.name);
                continue;
            }
            Err(e) => {
                eprintln!("  e2e {}: FAILED to load: {e}", model.name);
                m.failures.push(model_failure(&model.name, e.to_string()));
                continue;
            }
        };
        eprintln!("    loaded in {:.1} s on {}", started.elapsed().as_secs_f64(), gpu_model.device_name());
        let weight_bytes = gpu_model.weight_bytes() as u64;
        for case in model_cases(&model.name, &config, weight_bytes, context, quick) {
            if done.is_some_and(|run| run.has(&case)) {
                continue;
            }
            if plan.out_of_time() {
                m.failures.push(case.failure("*", OUT_OF_TIME.to_string()));
                continue;
            }
            let what = format!("e2e {} [{}]", case.kernel, case.shape());
            eprintln!("  {what}");
            match time_case(&mut gpu_model, &case, quick) {
                Ok(timed) => {
                    for (variant, times_us) in timed {
                        m.rows.push(measurement_row(&case, &variant, &times_us, ceilings)?);
                    }
                }
                Err(e) => {
                    eprintln!("  {what}: FAILED: {e:#}");
                    m.failures.push(case.failure("*", format!("{e:#}")));
                }
            }
        }
    }
    Ok(m)
}

/// A model that was not measured at all (it would not load, or the time ran out first).
fn model_failure(name: &str, error: String) -> Failure {
    let shape = format!("model={name}");
    Failure { suite: "e2e".into(), kernel: "*".into(), dtype: "bf16".into(), variant: "*".into(), shape, error }
}

/// (variant, microseconds per measurement) of one e2e case.
fn time_case(model: &mut GpuModel, case: &Case, quick: bool) -> Result<Vec<(String, Vec<f64>)>> {
    let prompt_len = case.int("prompt").ok_or_else(|| anyhow!("e2e case has no prompt length"))? as usize;
    let gen = case.int("gen").ok_or_else(|| anyhow!("e2e case has no gen length"))? as usize;
    let vocab = model.config().vocab_size;
    let mut rng = Rng::new(prompt_len as u64);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
    let (runs, budget) = if quick { (QUICK_RUNS, QUICK_CASE_BUDGET_S) } else { (RUNS, CASE_BUDGET_S) };
    match case.kernel.as_str() {
        "prefill" => {
            let mut times = Vec::new();
            let started = Instant::now();
            for run in 0..=runs {
                if run >= 3 && started.elapsed().as_secs_f64() > budget {
                    break;
                }
                let t = Instant::now();
                let logits = model.forward(&prompt, 0, Logits::Last)?;
                let us = t.elapsed().as_secs_f64() * 1e6;
                check_model_logits(model, &logits, vocab)?;
                if run > 0 {
                    times.push(us);
                }
            }
            Ok(vec![("rooflab".into(), times)])
        }
        "decode_step" => {
            let mut out = Vec::new();
            let mut tokens_by_variant = Vec::new();
            for (variant, graphs, decode) in DECODE_VARIANTS {
                model.set_use_graphs(graphs);
                model.set_decode_kernels(decode)?;
                let mut times = Vec::new();
                let mut first_tokens = Vec::new();
                let started = Instant::now();
                for run in 0..=runs {
                    if run >= 3 && started.elapsed().as_secs_f64() > budget {
                        break;
                    }
                    let (step_us, tokens) = decode_run(model, &prompt, gen)?;
                    if run > 0 {
                        times.extend(step_us);
                    } else {
                        first_tokens = tokens;
                    }
                }
                out.push((variant.to_string(), times));
                tokens_by_variant.push(first_tokens);
            }
            model.set_use_graphs(true);
            model.set_decode_kernels(DecodeKernels::Auto)?;
            let (graph, eager, unfused) = (&tokens_by_variant[0], &tokens_by_variant[1], &tokens_by_variant[2]);
            if graph != eager {
                bail!(
                    "greedy tokens differ between the CUDA-graph and the eager decode ({:?} vs {:?}): \
                     the graph replays stale values",
                    &graph[..8.min(graph.len())],
                    &eager[..8.min(eager.len())]
                );
            }
            // The unfused kernels add in another order: a near-tie may go the other way, so a difference
            // is reported, not fatal (tests/gpu/model.rs bounds the logits themselves).
            if let Some(i) = graph.iter().zip(unfused).position(|(a, b)| a != b) {
                eprintln!("    note: fused and unfused decode part at generated token {i} (a near-tie of the logits)");
            }
            Ok(out)
        }
        other => bail!("unknown e2e kernel {other}"),
    }
}

/// Prefills `prompt`, then decodes `gen` tokens greedily: (µs per decode step, the tokens).
fn decode_run(model: &mut GpuModel, prompt: &[u32], gen: usize) -> Result<(Vec<f64>, Vec<u32>)> {
    let vocab = model.config().vocab_size;
    let mut logits = model.forward(prompt, 0, Logits::Last)?;
    let mut times = Vec::with_capacity(gen);
    let mut tokens = Vec::with_capacity(gen);
    for step in 0..gen {
        check_model_logits(model, &logits, vocab)?;
        let token = argmax(&logits);
        tokens.push(token);
        let t = Instant::now();
        logits = model.forward(&[token], prompt.len() + step, Logits::Last)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    check_model_logits(model, &logits, vocab)?;
    Ok((times, tokens))
}

/// [`check_logits`], except on the mock driver's launch-only mode, which computes nothing (a rehearsal).
fn check_model_logits(model: &GpuModel, logits: &[f32], vocab: usize) -> Result<()> {
    if model.gpu().mock_skips_kernels() {
        return Ok(());
    }
    check_logits(logits, vocab)
}

fn check_logits(logits: &[f32], vocab: usize) -> Result<()> {
    if logits.len() != vocab {
        bail!("expected {vocab} logits, got {}", logits.len());
    }
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        bail!("logit {i} is {} (the forward pass produced a non-finite value)", logits[i]);
    }
    if logits.iter().all(|&v| v == logits[0]) {
        bail!("all {vocab} logits are equal ({}): the forward pass wrote nothing useful", logits[0]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_shapes_match_the_published_ones() {
        let small = llama_3_2_1b();
        // Llama-3.2-1B has 1.24 B parameters (tied head), Llama-3-8B 8.03 B.
        assert!((small.parameter_count() as f64 / 1e9 - 1.236).abs() < 0.01, "{}", small.parameter_count());
        assert_eq!((small.head_dim, small.gqa_group()), (64, 4));
        let big = llama_3_8b();
        assert!((big.parameter_count() as f64 / 1e9 - 8.03).abs() < 0.01, "{}", big.parameter_count());
        assert_eq!((big.head_dim, big.kv_dim()), (128, 1024));
    }

    #[test]
    fn cases_cover_the_prompts_that_fit() {
        let c = llama_3_8b();
        assert_eq!(context_for(&c, false), 8192);
        assert_eq!(context_for(&LlamaConfig { max_position_embeddings: 2048, ..c.clone() }, false), 2048);
        let cases = model_cases("random-Llama-3-8B", &c, 16_000_000_000, 8192, false);
        let shapes: Vec<String> = cases.iter().map(|c| format!("{} {}", c.kernel, c.shape())).collect();
        assert_eq!(shapes[0], "decode_step model=random-Llama-3-8B B=1 prompt=32 gen=64");
        assert_eq!(shapes.len(), 2 + PROMPTS.len(), "{shapes:?}");
        assert!(shapes.contains(&"prefill model=random-Llama-3-8B B=1 prompt=8192 gen=64".to_string()));
        let short = model_cases("m", &c, 1, 600, true);
        assert_eq!(short.len(), 3, "only the 128-token prompt fits besides 32");
        // Prefill FLOPs: about 2 per parameter per token, plus attention that grows with n².
        let flops = |n| cases.iter().find(|k| k.int("prompt") == Some(n)).unwrap().work.flops;
        let matmul = 2.0 * 6.98e9;
        assert!((flops(128) / 128.0 / matmul - 1.0).abs() < 0.02, "{}", flops(128));
        // At 8192 tokens attention adds about 15% (2·H·D·n per token and layer).
        let long = flops(8192) / 8192.0 / matmul;
        assert!(long > 1.1 && long < 1.2, "{long}");
    }

    #[test]
    fn logits_checks() {
        assert!(check_logits(&[0.1, 0.3, -0.2], 3).is_ok());
        assert!(check_logits(&[0.1, f32::NAN, -0.2], 3).unwrap_err().to_string().contains("logit 1"));
        assert!(check_logits(&[0.5, 0.5], 2).is_err());
        assert!(check_logits(&[0.5], 2).is_err());
    }
}

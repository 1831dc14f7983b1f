//! `rooflab`: generate text from a Llama-style checkpoint, import GGUF files, and run the
//! benchmark harness. Every failure prints one line naming the problem and exits non-zero.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rooflab::generate::{generate, GenerateOptions};
use rooflab::model::{self, CausalLm, DType};
use rooflab::sample::SamplingParams;
use rooflab::tokenizer::{Message, Tokenizer};

#[derive(Parser)]
#[command(name = "rooflab", version, about = "GPU kernel research engine for LLM inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    /// The GPU when one is usable, else the CPU reference.
    Auto,
    Cuda,
    Cpu,
}

#[derive(Clone, Copy, ValueEnum)]
enum ImportDtype {
    Bf16,
    F16,
    F32,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it, then print latency and throughput.
    Generate {
        /// Checkpoint folder (config.json, tokenizer.json, model.safetensors or shards).
        #[arg(long, default_value = "models/SmolLM2-135M-Instruct")]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt as a user message in the checkpoint's chat template.
        #[arg(long)]
        chat: bool,
        /// System message for --chat (default: the template's own).
        #[arg(long, requires = "chat")]
        system: Option<String>,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0.0)]
        min_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop when the output contains this text (repeatable).
        #[arg(long = "stop")]
        stop: Vec<String>,
        #[arg(long, value_enum, default_value_t = Device::Auto)]
        device: Device,
        /// Positions the KV cache holds (default: the model's maximum, capped at 4096 on the GPU).
        #[arg(long)]
        context: Option<usize>,
    },
    /// Convert a GGUF file (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) into a checkpoint folder.
    ImportGguf {
        input: PathBuf,
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = ImportDtype::Bf16)]
        dtype: ImportDtype,
    },
    /// Measure the kernels and the model on the GPU against the measured roofline; writes
    /// <out>/<device>/<date>-<commit>/ and prints its path last. An implementation that fails its check
    /// is not timed and the run goes on; the folder lists it, and the exit status is then 3.
    Bench {
        /// attention, decode, gemv, spec, e2e, a comma-separated list, or all.
        #[arg(long, default_value = "all")]
        suite: String,
        /// A few shapes and fewer launches (a smoke run in minutes).
        #[arg(long)]
        quick: bool,
        /// Results root.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Checkpoint folder for the e2e suite (default: models/SmolLM2-135M-Instruct when present).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Start no case after this many seconds: the ones left are listed as not measured and the run
        /// is written with what was (a device call has a time limit; a killed bench writes nothing).
        #[arg(long, value_name = "SECONDS")]
        time_budget: Option<f64>,
        /// Add the cases of --suite that a run folder of this GPU and commit does not have yet to it (the
        /// rest of a run cut by --time-budget, or more suites), judged against its ceilings.
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
    },
    /// Run one kernel on tensors from a safetensors file and write its outputs, to cross-check it
    /// against another framework (attention-prefill: q, k, v [, cu_seqlens_q, cu_seqlens_k, q_offsets]
    /// in; o [, lse] out).
    RunKernel {
        /// The kernel: attention-prefill.
        kernel: String,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Causal mask (query i of a sequence sees keys 0 ..= q_offset + i).
        #[arg(long)]
        causal: bool,
        /// Softmax scale (default 1/sqrt(head_dim)).
        #[arg(long)]
        scale: Option<f32>,
        /// Also write the log-sum-exp of each query row (`lse`, f32 [heads, total_q]).
        #[arg(long)]
        lse: bool,
        /// flash (the fast kernel for this GPU), flash-tma, flash-mma, flash-wgmma, tiled, naive-row or naive-materialised.
        #[arg(long = "impl", default_value = "flash")]
        implementation: String,
    },
    /// Regenerate report.md and the figures of a results folder from its raw files (and merge the
    /// peers' JSON), then refresh results/README.md.
    Report {
        /// A run folder: results/<device>/<date>-<commit>.
        dir: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ImportGguf { input, output, dtype } => import(&input, &output, dtype),
        Command::Report { dir } => rooflab_harness::report::regenerate_with_index(&dir),
        Command::RunKernel { kernel, inputs, out, causal, scale, lse, implementation } => {
            let args =
                rooflab_harness::run_kernel::RunKernelArgs { kernel, inputs, out, causal, scale, lse, implementation };
            rooflab_harness::run_kernel::run(&args)
        }
        Command::Bench { suite, quick, out, model, time_budget, into } => {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let args = rooflab_harness::bench::gpu::BenchArgs {
                suite,
                quick,
                out,
                model,
                command,
                time_budget_s: time_budget,
                into,
            };
            match rooflab_harness::bench::gpu::run(&args) {
                Ok(outcome) if outcome.failures > 0 => {
                    // The run folder is written (and printed last); the failures are listed in it.
                    eprintln!(
                        "error: {} implementation(s) or case(s) were not measured (a failed check, a case that could \
                         not run, or the time budget): see run.json's failures and report.md in {}",
                        outcome.failures,
                        outcome.dir.display()
                    );
                    std::process::exit(rooflab_harness::bench::gpu::FAILED_CHECKS_EXIT);
                }
                outcome => outcome.map(|_| ()),
            }
        }
        Command::Generate {
            model,
            prompt,
            chat,
            system,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            seed,
            stop,
            device,
            context,
        } => {
            let sampling = SamplingParams { temperature, top_k, top_p, min_p, repetition_penalty, seed };
            let request = Request { prompt, chat, system, max_new_tokens, sampling, stop };
            run_generate(&model, device, context, request)
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn import(input: &Path, output: &Path, dtype: ImportDtype) -> Result<()> {
    let dtype = match dtype {
        ImportDtype::Bf16 => DType::BF16,
        ImportDtype::F16 => DType::F16,
        ImportDtype::F32 => DType::F32,
    };
    let summary = model::import::import_gguf(input, output, dtype, true)?;
    eprintln!("imported {} into {}: {summary}", input.display(), output.display());
    Ok(())
}

struct Request {
    prompt: String,
    chat: bool,
    system: Option<String>,
    max_new_tokens: usize,
    sampling: SamplingParams,
    stop: Vec<String>,
}

fn load_model(dir: &Path, device: Device, context: Option<usize>) -> Result<Box<dyn CausalLm>> {
    if device != Device::Cpu {
        match model::gpu::load(dir, context) {
            Ok(m) => return Ok(m),
            // auto: a machine without a usable GPU, or a model the GPU kernels don't cover, runs on the CPU.
            Err(e @ (rooflab::Error::NoGpu(_) | rooflab::Error::Unsupported(_))) if device == Device::Auto => {
                eprintln!("note: {e}; running on the CPU reference");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let config = model::LlamaConfig::from_file(&dir.join("config.json"))?;
    let checkpoint = model::Checkpoint::open(dir)?;
    Ok(Box::new(model::cpu::CpuModel::new(config, &checkpoint, context)?))
}

fn run_generate(dir: &Path, device: Device, context: Option<usize>, req: Request) -> Result<()> {
    if !dir.join("config.json").exists() {
        bail!("{}: no config.json (run scripts/fetch-model, or `rooflab import-gguf` a GGUF file)", dir.display());
    }
    let tokenizer = Tokenizer::load(dir)?;
    let load_start = std::time::Instant::now();
    let mut model = load_model(dir, device, context)?;
    let load_time = load_start.elapsed();

    let text = if req.chat {
        let mut messages = vec![];
        if let Some(system) = &req.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", &req.prompt));
        tokenizer.apply_chat_template(&messages)?
    } else {
        req.prompt.clone()
    };
    // A chat template writes its own special tokens; a plain prompt gets what the tokenizer adds.
    let prompt = tokenizer.encode(&text, !req.chat)?;
    let mut eos_ids = model.config().eos_token_ids.clone();
    eos_ids.extend(tokenizer.eos_id());
    let opts =
        GenerateOptions { max_new_tokens: req.max_new_tokens, sampling: req.sampling, stop_strings: req.stop, eos_ids };

    if !req.chat {
        print!("{}", req.prompt);
    }
    let mut stdout = std::io::stdout();
    let out = generate(model.as_mut(), &tokenizer, &prompt, &opts, &mut |piece| {
        print!("{piece}");
        let _ = stdout.flush();
    })
    .context("generation failed")?;
    println!();

    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let peak = peak_host_memory().map(|b| format!(" | peak host memory {:.0} MB", b as f64 / 1e6)).unwrap_or_default();
    eprintln!(
        "\n[{}] loaded in {:.0} ms{peak} | prompt {} tokens | {} new tokens, stopped by {:?}",
        model.device_name(),
        ms(load_time),
        out.prompt_tokens,
        out.tokens.len(),
        out.stop
    );
    let mut line = format!("TTFT {:.1} ms", ms(out.ttft));
    if let (Some(p50), Some(p99), Some(tps)) =
        (out.inter_token_percentile(50.0), out.inter_token_percentile(99.0), out.decode_tokens_per_s())
    {
        line += &format!(" | inter-token median {:.2} ms, p99 {:.2} ms | {tps:.1} tokens/s", ms(p50), ms(p99));
        if let Some(bw) = model.memory_bandwidth() {
            let pct = out.pct_of_bandwidth_floor(model.weight_bytes(), bw).unwrap_or(0.0);
            line += &format!(
                " | {pct:.1}% of the weight-bandwidth floor ({:.0} MB at {:.0} GB/s)",
                model.weight_bytes() as f64 / 1e6,
                bw / 1e9
            );
        }
    }
    eprintln!("{line}");
    Ok(())
}

/// This process's peak resident memory (Linux `VmHWM`), which includes the checkpoint pages mapped
/// and touched so far: the number to hold against the checkpoint's size.
fn peak_host_memory() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

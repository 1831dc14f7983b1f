//! Prefill attention (FlashAttention-style, engine/src/kernels/attention_prefill.rs) against its
//! baselines, in TFLOP/s and as a percentage of the bf16 GEMM rate cuBLAS reaches in the same run.
//!
//! Shapes: the FlashAttention papers' benchmark (batch x seqlen = 16k, heads x head_dim = 2048, seqlen
//! 512 to 16k, head_dim 64 and 128, causal and not) and Llama-3-8B prefill (32 query / 8 KV heads,
//! head_dim 128, 512 to 16k tokens, causal). FLOPs are 4·B·H·S²·D, halved when causal.
//!
//! One criterion group per shape holds every implementation: `rooflab` (the fast kernel for this GPU:
//! the TMA kernel on Hopper), `rooflab-wgmma` and `rooflab-mma` (the other flash versions, on Hopper),
//! `rooflab-tiled` (SIMT tiles), `naive` (one thread per query row; up to 8k tokens, beyond that one
//! launch takes seconds) and `naive_materialised` (S in global memory, softmax, P·V; up to 4k tokens and
//! 8 GiB of score scratch). Each is checked before it is timed. A table of medians, TFLOP/s, % of the
//! cuBLAS rate and speed-ups closes the run (also written as CSV to `$ROOFLAB_ATTENTION_CSV` when set).
//!
//! `ROOFLAB_BENCH_QUICK=1` keeps the shapes of the acceptance criterion (head_dim 128, causal, S >= 2048)
//! and Llama-3-8B. Without a GPU it prints a skip note and exits 0.

// This bench times its own groups (FLOP throughput), so some shared helpers go unused here.
#[allow(dead_code)]
mod common;

use std::fmt::Write as _;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use half::bf16;
use rooflab::cuda::{CudaSlice, DevSpan, GpuTimer};
use rooflab::kernels::attention_prefill::{self as prefill, KvLayout, Operand, PrefillIo, PrefillKernel, PrefillShape};
use rooflab_harness::bench::cases::{attention_prefill, flash_attention_paper_shapes};
use rooflab_harness::bench::gpu::attention::{PrefillArgs, PrefillWorkload};
use rooflab_harness::bench::gpu::timer::{budget_seconds, time_launches};
use rooflab_harness::bench::gpu::{ceilings, data, Device, Implementation, Workload};
use rooflab_harness::bench::{Case, Plan, TimeStats};

/// Longest sequence the materialising baseline is timed at, and its largest score scratch.
const MATERIALISED_MAX_SEQ: usize = 4096;
const MATERIALISED_MAX_SCRATCH: usize = 8 << 30;

fn shapes(quick: bool) -> Vec<Case> {
    let mut out = flash_attention_paper_shapes();
    out.extend([512, 1024, 2048, 4096, 8192, 16384].map(|s| attention_prefill(1, 32, 8, s, 128, true)));
    if quick {
        out.retain(|c| c.int("D") == Some(128) && c.flag("causal") && c.int("S").unwrap_or(0) >= 2048);
    }
    out
}

/// One line of the closing table.
struct Measured {
    shape: String,
    variant: String,
    median_us: f64,
    tflops: f64,
}

/// The implementation the shared workload does not have, the materialising baseline, on a copy of its
/// own bf16 inputs (the workload's are private), checked against the default flash kernel on the same
/// data. (The other flash versions are the workload's own `rooflab-wgmma` and `rooflab-mma`: naming
/// them here too would give criterion one benchmark ID twice, which it refuses with a panic.)
struct Extras {
    q: CudaSlice<bf16>,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    out: CudaSlice<bf16>,
    cu_seqlens: CudaSlice<u32>,
    /// Score scratch of the materialising baseline, when the shape is within its limits.
    scores: Option<CudaSlice<f32>>,
    kernels: Vec<PrefillKernel>,
    args: PrefillArgs,
}

impl Extras {
    fn new(device: &Device, args: PrefillArgs) -> anyhow::Result<Self> {
        let total = args.batch * args.seq;
        let scratch = total * args.num_heads * args.seq;
        let materialised = args.seq <= MATERIALISED_MAX_SEQ && scratch * 4 <= MATERIALISED_MAX_SCRATCH;
        let kernels = if materialised { vec![PrefillKernel::NaiveMaterialised] } else { Vec::new() };
        let stream = device.gpu.stream();
        let seed = data::seed_for("materialised");
        let q = stream.clone_htod(&data::random_bf16(total * args.num_heads * args.head_dim, seed, 1.0))?;
        let k = stream.clone_htod(&data::random_bf16(total * args.num_kv_heads * args.head_dim, seed ^ 1, 1.0))?;
        let v = stream.clone_htod(&data::random_bf16(total * args.num_kv_heads * args.head_dim, seed ^ 2, 1.0))?;
        let out = stream.alloc_zeros::<bf16>(total * args.num_heads * args.head_dim)?;
        let cu: Vec<u32> = (0..=args.batch).map(|i| (i * args.seq) as u32).collect();
        let cu_seqlens = stream.clone_htod(&cu)?;
        let scores = if materialised { Some(stream.alloc_zeros::<f32>(scratch)?) } else { None };
        Ok(Extras { q, k, v, out, cu_seqlens, scores, kernels, args })
    }

    fn shape(&self) -> PrefillShape {
        self.args.shape()
    }

    fn launch(&self, device: &Device, kernel: PrefillKernel) -> rooflab::Result<()> {
        let cu = DevSpan::of(&self.cu_seqlens);
        let io = PrefillIo {
            q: Operand::Bf16(DevSpan::of(&self.q)),
            k: Operand::Bf16(DevSpan::of(&self.k)),
            v: Operand::Bf16(DevSpan::of(&self.v)),
            out: Operand::Bf16(DevSpan::of(&self.out)),
            lse: None,
            cu_seqlens_q: cu,
            q_offsets: None,
            kv: KvLayout::Varlen { cu_seqlens_k: cu, total_k: self.args.batch * self.args.seq },
        };
        prefill::run(&device.kernels, kernel, &io, &self.shape(), self.scores.as_ref().map(DevSpan::of))
    }

    /// Keeps the extra implementations that agree with the default flash kernel on the same inputs (that
    /// one is checked against the CPU reference by the workload, and must have passed); each that does not
    /// is left out ([`common::check_failed`]).
    fn check(&mut self, device: &Device, case: &Case) {
        let stream = device.gpu.stream();
        let want = self
            .launch(device, PrefillKernel::Flash)
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(data::widen(&stream.clone_dtoh(&self.out)?)));
        let want = match want {
            Ok(want) => want,
            Err(e) => {
                common::check_failed(device, e.context(format!("{} flash (the extras' reference)", case.shape())));
                self.kernels.clear();
                return;
            }
        };
        let mut passed = Vec::new();
        for &kernel in &self.kernels {
            let checked = self.launch(device, kernel).map_err(anyhow::Error::from).and_then(|()| {
                let got = data::widen(&stream.clone_dtoh(&self.out)?);
                device.synchronize()?;
                data::check_close(&format!("{} vs flash", kernel.name()), &got, &want, data::BF16_OUTPUT_BOUND)
            });
            match checked {
                Ok(()) => passed.push(kernel),
                Err(e) => common::check_failed(device, e.context(format!("{} {}", case.shape(), kernel.name()))),
            }
        }
        self.kernels = passed;
    }
}

/// CUDA-event time of `iters` launches queued back to back.
fn time_iters(device: &Device, iters: u64, mut launch: impl FnMut(usize) -> anyhow::Result<()>) -> Duration {
    let mut run = || -> anyhow::Result<f32> {
        let events = GpuTimer::new(&device.gpu)?;
        device.synchronize()?;
        events.start(&device.gpu)?;
        for n in 0..iters as usize {
            launch(n)?;
        }
        events.stop(&device.gpu)?;
        device.synchronize()?;
        Ok(events.elapsed_ms()?)
    };
    match run() {
        Ok(ms) => Duration::from_secs_f64(ms as f64 / 1e3),
        Err(e) => common::fail(&format!("{e:#}")),
    }
}

/// Median microseconds per launch (the harness's schedule: warm-up, then batched event timings).
fn median_us(device: &Device, launch: impl FnMut(usize) -> anyhow::Result<()>) -> f64 {
    let plan = Plan::new(true);
    let times = time_launches(device, &plan, budget_seconds(true), launch)
        .and_then(|t| TimeStats::from_times(&t))
        .unwrap_or_else(|e| common::fail(&format!("{e:#}")));
    times.median_us
}

fn bench_case(c: &mut Criterion, device: &Device, case: &Case, table: &mut Vec<Measured>, notes: &mut Vec<String>) {
    let args = PrefillArgs::from_case(case).unwrap_or_else(|e| common::fail(&format!("{e:#}")));
    let mut workload = PrefillWorkload::new(device, args, common::rotation_bytes())
        .unwrap_or_else(|e| common::fail(&format!("{e:#}")));
    let all = workload.implementations().to_vec();
    let passed = common::checked_implementations(device, &mut workload);
    let implementations: Vec<(usize, Implementation)> =
        all.iter().copied().enumerate().filter(|(which, _)| passed.contains(which)).collect();
    let mut extras = Extras::new(device, args).unwrap_or_else(|e| common::fail(&format!("{e:#}")));
    if extras.kernels.is_empty() {
        notes.push(format!("naive_materialised skipped at {} (beyond its size limits)", case.shape()));
    } else if implementations.iter().any(|(_, i)| i.name == "rooflab") {
        // A failed check leaves it out and is listed at the end (common::check_failed).
        extras.check(device, case);
    } else {
        // Its reference failed its own check: nothing to compare it with.
        extras.kernels.clear();
        notes.push(format!(
            "naive_materialised not timed at {}: the default flash kernel failed its check",
            case.shape()
        ));
    }
    if !implementations.iter().any(|(_, i)| i.name == "naive") {
        notes.push(format!("naive (row) skipped at {}", case.shape()));
    }

    let copies = workload.copies().max(1);
    let mut group = c.benchmark_group(workload.label());
    group.throughput(Throughput::Elements(case.work.flops as u64));
    for &(which, implementation) in &implementations {
        group.bench_function(implementation.name, |b| {
            b.iter_custom(|iters| time_iters(device, iters, |n| workload.launch(which, n % copies)))
        });
    }
    for &kernel in &extras.kernels {
        group.bench_function(kernel.name(), |b| {
            b.iter_custom(|iters| time_iters(device, iters, |_| Ok(extras.launch(device, kernel)?)))
        });
    }
    group.finish();

    for &(which, implementation) in &implementations {
        let us = median_us(device, |n| workload.launch(which, n % copies));
        table.push(measured(case, implementation.name, us));
    }
    for &kernel in &extras.kernels {
        let us = median_us(device, |_| Ok(extras.launch(device, kernel)?));
        table.push(measured(case, kernel.name(), us));
    }
}

fn measured(case: &Case, variant: &str, median_us: f64) -> Measured {
    let tflops = case.work.flops / (median_us * 1e-6) / 1e12;
    Measured { shape: case.shape(), variant: variant.to_string(), median_us, tflops }
}

/// The closing table: per shape, each implementation's median, TFLOP/s, % of the cuBLAS rate and the
/// flash kernel's speed-up over it.
fn report(table: &[Measured], gemm_tflops: f64, notes: &[String]) -> String {
    let mut text = format!(
        "\nprefill attention, bf16 (cuBLAS bf16 GEMM 8192^3 in this run: {gemm_tflops:.0} TFLOP/s)\n{:<44} {:<20} \
         {:>12} {:>9} {:>8} {:>10}\n",
        "shape", "kernel", "median us", "TFLOP/s", "% GEMM", "flash is"
    );
    for m in table {
        let flash = table.iter().find(|f| f.shape == m.shape && f.variant == "rooflab");
        let speedup = flash.map_or(String::new(), |f| format!("{:.1}x", m.median_us / f.median_us));
        let _ = writeln!(
            text,
            "{:<44} {:<20} {:>12.1} {:>9.1} {:>7.1}% {:>10}",
            m.shape,
            m.variant,
            m.median_us,
            m.tflops,
            100.0 * m.tflops / gemm_tflops,
            speedup
        );
    }
    for note in notes {
        let _ = writeln!(text, "note: {note}");
    }
    text
}

fn csv(table: &[Measured], gemm_tflops: f64) -> String {
    let mut text = String::from("shape,variant,median_us,tflops,pct_of_cublas_bf16\n");
    for m in table {
        let pct = 100.0 * m.tflops / gemm_tflops;
        let _ = writeln!(text, "{},{},{:.2},{:.2},{:.2}", m.shape, m.variant, m.median_us, m.tflops, pct);
    }
    text
}

fn main() {
    let Some(device) = common::device_or_skip("attention") else {
        return;
    };
    let quick = std::env::var("ROOFLAB_BENCH_QUICK").is_ok_and(|v| v == "1");
    let gemm_tflops = ceilings::measure(&device, &Plan::new(true), true)
        .unwrap_or_else(|e| common::fail(&format!("measuring the cuBLAS bf16 rate: {e:#}")))
        .bf16_tflops;
    let mut c = common::criterion().sample_size(10);
    let (mut table, mut notes) = (Vec::new(), Vec::new());
    for case in shapes(quick) {
        bench_case(&mut c, &device, &case, &mut table, &mut notes);
    }
    c.final_summary();
    println!("{}", report(&table, gemm_tflops, &notes));
    if let Some(path) = std::env::var_os("ROOFLAB_ATTENTION_CSV") {
        if let Err(e) = std::fs::write(&path, csv(&table, gemm_tflops)) {
            common::fail(&format!("{}: {e}", std::path::Path::new(&path).display()));
        }
    }
    common::exit_if_checks_failed();
}

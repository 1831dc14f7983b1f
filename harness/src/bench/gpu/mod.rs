//! The GPU half of `rooflab bench`: the device, the measured ceilings ([`ceilings`]), the event
//! timer ([`timer::GpuTimer`]) and one workload module per kernel family, each holding random inputs
//! in rotated copies, every implementation of the kernel (rooflab's, its naive baseline, the vendor's
//! where cudarc reaches one) and a check against the CPU reference.
//!
//! The criterion benches (harness/benches/) use the same workloads, so `cargo bench` and
//! `rooflab bench` time the same launches on the same data.
//!
//! [`run`] is the command: GPU check first (nothing is written without one), ceilings, suites, e2e,
//! then the run folder through [`super::write_run`].

pub mod attention;
pub mod ceilings;
pub mod data;
pub mod decode;
pub mod decode_fused;
pub mod e2e;
pub mod gemv;
pub mod layers;
pub mod timer;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cudarc::cublas::CudaBlas;
use rooflab::cuda::GpuContext;
use rooflab::kernels::Kernels;

use super::append::Existing;
use super::Suite;
use super::{cases_for, detect_commit, host_kernel, measure, parse_suites, query_conditions, today_utc, Case, Plan};
use crate::report::model::{Appended, Gpu, Row, Run, NAIVE};

pub use super::PEER_PREFIX;

/// GPU 0 with rooflab's kernels loaded and cuBLAS when libcublas loads.
pub struct Device {
    pub gpu: GpuContext,
    pub kernels: Kernels,
    blas: std::result::Result<CudaBlas, String>,
}

impl Device {
    /// Opens GPU 0 and loads every kernel (the PTX JIT happens here, outside any timing). No GPU: the
    /// engine's one-line `no CUDA GPU: ...` error.
    pub fn open() -> Result<Device> {
        let gpu = GpuContext::new(0)?;
        let kernels = Kernels::load(&gpu)?;
        let blas = load_cublas(&gpu);
        Ok(Device { gpu, kernels, blas })
    }

    /// cuBLAS on the kernels' stream, if libcublas could be loaded.
    pub fn blas(&self) -> Option<&CudaBlas> {
        self.blas.as_ref().ok()
    }

    /// cuBLAS, or a one-line error saying which library names were tried and how to make it load.
    pub fn require_blas(&self, needed_for: &str) -> Result<&CudaBlas> {
        match &self.blas {
            Ok(blas) => Ok(blas),
            Err(why) => bail!("{needed_for} needs cuBLAS, but {why}"),
        }
    }

    /// Why cuBLAS is missing, if it is.
    pub fn blas_missing(&self) -> Option<&str> {
        self.blas.as_ref().err().map(String::as_str)
    }

    /// Waits for the stream and reports any deferred CUDA error.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.gpu.synchronize()?)
    }
}

/// cuBLAS bound to `gpu`'s stream, or why not (with the names cudarc looks for and the fix).
fn load_cublas(gpu: &GpuContext) -> std::result::Result<CudaBlas, String> {
    // SAFETY: only tries to dlopen the library names cudarc would use; nothing is called.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(cublas_missing("it is not on the library path"));
    }
    match catch_unwind(AssertUnwindSafe(|| CudaBlas::new(gpu.stream().clone()))) {
        Ok(Ok(blas)) => Ok(blas),
        Ok(Err(e)) => Err(format!("cublasCreate failed: {e}")),
        Err(_) => Err(cublas_missing("it could not be used (missing symbols?)")),
    }
}

/// The one-line explanation of a libcublas that would not load.
pub fn cublas_missing(reason: &str) -> String {
    let mut names = cudarc::get_lib_name_candidates("cublas");
    names.dedup();
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    format!(
        "libcublas could not be loaded: {reason} (tried {} on LD_LIBRARY_PATH={path:?}); put the folder holding \
         libcublas.so.13 on LD_LIBRARY_PATH: on the GPU machine torch's site-packages/nvidia/cu13/lib or \
         nvidia/cublas/lib, which scripts/gpu-run adds",
        names.join(", ")
    )
}

/// Who wrote an implementation: rooflab, its naive baseline, or a vendor library called through cudarc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Rooflab,
    Naive,
    Vendor,
}

/// One implementation of a workload's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Implementation {
    /// `rooflab` (or a named rooflab version such as `rooflab-bf16x`), `naive`, or the vendor's name.
    pub name: &'static str,
    pub role: Role,
}

impl Implementation {
    pub const fn rooflab(name: &'static str) -> Self {
        Implementation { name, role: Role::Rooflab }
    }

    pub const fn naive() -> Self {
        Implementation { name: NAIVE, role: Role::Naive }
    }

    pub const fn vendor(name: &'static str) -> Self {
        Implementation { name, role: Role::Vendor }
    }

    /// The [`super::Timed`] variant: the name, with [`PEER_PREFIX`] for vendor implementations.
    pub fn variant(&self) -> String {
        match self.role {
            Role::Vendor => format!("{PEER_PREFIX}{}", self.name),
            _ => self.name.to_string(),
        }
    }
}

/// cuBLAS through cudarc, as named in summary.csv (torch's cuBLAS rows are `cublas`).
pub const CUBLAS: Implementation = Implementation::vendor("cublas_cudarc");

/// One shape of one kernel family on the GPU: inputs in rotated copies and every implementation.
pub trait Workload {
    /// Kernel and shape, for messages: `gemv M=1 N=4096 K=4096`.
    fn label(&self) -> String;

    fn implementations(&self) -> &[Implementation];

    /// Input copies the launches rotate through.
    fn copies(&self) -> usize;

    /// Queues one launch of implementation `which` on input copy `copy` (does not wait).
    fn launch(&mut self, which: usize, copy: usize) -> Result<()>;

    /// Runs implementation `which` once on poisoned outputs and compares with the CPU reference; the
    /// error names the kernel, the implementation and the shape.
    fn check(&mut self, which: usize) -> Result<()>;
}

/// What `rooflab bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// `--suite`: attention, decode, gemv, spec, e2e, a comma-separated list, or all.
    pub suite: String,
    pub quick: bool,
    /// Results root (`results`): the run goes to `<out>/<device>/<date>-<commit>/`.
    pub out: PathBuf,
    /// A checkpoint folder for the e2e suite (default: models/SmolLM2-135M-Instruct when present).
    pub model: Option<PathBuf>,
    /// The command line, for run.json.
    pub command: String,
    /// `--time-budget`: start no case after this many seconds; the ones left are listed as not measured.
    pub time_budget_s: Option<f64>,
    /// `--into`: a run folder of this GPU and commit to add the suites' unmeasured cases to.
    pub into: Option<PathBuf>,
}

/// `rooflab bench`: measures and writes a run folder, prints a short table, the failures and, last,
/// the folder.
pub fn run(args: &BenchArgs) -> Result<BenchOutcome> {
    let started = Instant::now();
    let suites = parse_suites(&args.suite)?;
    if let Some(budget) = args.time_budget_s {
        if !(budget.is_finite() && budget > 0.0) {
            bail!("--time-budget {budget}: a positive number of seconds is expected");
        }
    }
    if let Some(dir) = &args.model {
        if !dir.join("config.json").is_file() {
            bail!("--model {}: no config.json there (an HF checkpoint folder is expected)", dir.display());
        }
    }
    // The GPU first: without one, fail before anything is measured or written.
    let device = Device::open()?;
    let under_results = match &args.into {
        Some(dir) => crate::report::results_root_of(dir).is_some(),
        None => args.out.file_name().is_some_and(|n| n == "results"),
    };
    if device.gpu.is_mock() && under_results {
        bail!(
            "{} is scripts/mock-gpu's rehearsal device: its times are made up, so its runs may not go under \
             results/; pass --out with a scratch folder",
            device.gpu.name(),
        );
    }
    let date = today_utc();
    let commit = detect_commit();
    let environment = rooflab_environment();
    let (before, driver) = query_conditions();
    let gpu = describe(&device.gpu, driver)?;
    let existing = match &args.into {
        Some(dir) => {
            let existing = Existing::load(dir)?;
            existing.check_compatible(&gpu.name, &commit, args.quick, &environment)?;
            Some(existing)
        }
        None => None,
    };
    let mut plan = Plan::new(args.quick);
    plan.deadline = args.time_budget_s.map(|budget| started + Duration::from_secs_f64(budget));
    eprintln!("rooflab bench on {} ({} SMs): measuring the ceilings", device.gpu.name(), device.gpu.sm_count());
    let measured_ceilings = ceilings::measure(&device, &plan, args.quick)?;
    eprintln!("  bandwidth {:.0} GB/s ({})", measured_ceilings.bandwidth_gbps, measured_ceilings.bandwidth_method);
    eprintln!("  bf16 tensor cores {:.0} TFLOP/s ({})", measured_ceilings.bf16_tflops, measured_ceilings.bf16_method);
    // Added to a run, every row is judged against the run's ceilings, which this call's must match.
    let ceilings = match &existing {
        Some(run) => {
            run.check_ceilings(&measured_ceilings)?;
            run.run.ceilings.clone()
        }
        None => measured_ceilings.clone(),
    };

    let mut cases = cases_for(&suites, args.quick);
    if let Some(run) = &existing {
        cases.retain(|case| !run.has(case));
    }
    let mut gpu_timer = timer::GpuTimer::new(&device, args.quick);
    let mut measured = measure(&mut gpu_timer, &cases, &plan, &ceilings)?;
    for note in gpu_timer.notes() {
        eprintln!("note: {note}");
    }
    // The e2e models open their own context (the same primary one) with their own cuBLAS handle.
    drop(device);
    if suites.contains(&Suite::E2e) {
        let models = e2e::models(args.model.as_deref(), Path::new(e2e::DEFAULT_MODEL_DIR));
        let e2e = e2e::measure(&models, args.quick, &ceilings, &plan, existing.as_ref())?;
        measured.rows.extend(e2e.rows);
        measured.failures.extend(e2e.failures);
    }
    let (after, _) = query_conditions();
    let suite_names: Vec<String> = suites.iter().map(|s| s.name().to_string()).collect();

    let (run, dir) = match existing {
        Some(existing) => {
            let dir = existing.dir.clone();
            let call = Appended {
                command: args.command.clone(),
                date,
                suites: suite_names.clone(),
                ceilings: measured_ceilings,
                before,
                host_kernel: host_kernel(),
            };
            let (run, rows) = existing.merged(measured, &cases, &suite_names, call, after);
            super::write_run_files(&dir, &run, &rows)?;
            if let Some(root) = crate::report::results_root_of(&dir) {
                crate::report::write_results_index(&root)?;
            }
            (run, dir)
        }
        None => {
            let run = Run {
                rooflab_version: env!("CARGO_PKG_VERSION").into(),
                commit,
                date,
                command: args.command.clone(),
                environment,
                suites: suite_names,
                quick: args.quick,
                gpu,
                host_kernel: host_kernel(),
                before,
                after,
                ceilings,
                failures: measured.failures,
                appended: Vec::new(),
            };
            let dir = super::write_run(&args.out, &run, &measured.rows)?;
            (run, dir)
        }
    };
    let written = crate::report::load_summary(&dir)?;
    print!("{}", short_table(&written));
    for f in &run.failures {
        println!("NOT MEASURED {} {} [{}] {}: {}", f.kernel, f.dtype, f.shape, f.variant, f.error);
    }
    println!("{}", dir.display());
    Ok(BenchOutcome { dir, failures: run.failures.len() })
}

/// Where [`run`] wrote, and how many implementations or cases it could not measure (listed in run.json
/// and report.md; `rooflab bench` then exits with [`FAILED_CHECKS_EXIT`]).
#[derive(Debug)]
pub struct BenchOutcome {
    pub dir: PathBuf,
    pub failures: usize,
}

/// Exit status of `rooflab bench` when the run folder was written but some checks failed (other errors:
/// 1). scripts/gpu-run still merges the peers into such a run.
pub const FAILED_CHECKS_EXIT: i32 = 3;

/// run.json's `environment`: every `ROOFLAB_*` variable set now, as `NAME=VALUE`, sorted.
fn rooflab_environment() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| k.starts_with("ROOFLAB_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    vars
}

/// run.json's `gpu`.
fn describe(gpu: &GpuContext, driver: Option<String>) -> Result<Gpu> {
    let (_, memory) = gpu.memory_info()?;
    let (major, minor) = gpu.compute_capability();
    Ok(Gpu {
        name: gpu.name().to_string(),
        sm_count: gpu.sm_count(),
        memory_bytes: memory as u64,
        compute_capability: format!("{major}.{minor}"),
        driver: driver.unwrap_or_else(|| "unknown".into()),
    })
}

/// The table `rooflab bench` prints: one line per row, the columns a reader checks first.
pub fn short_table(rows: &[Row]) -> String {
    let num = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let mut out = format!(
        "{:<9} {:<17} {:<16} {:<44} {:>10} {:>8} {:>8} {:>6} {:>8}\n",
        "suite", "kernel", "variant", "shape", "median_us", "GB/s", "TFLOP/s", "%roof", "vs_naive"
    );
    for r in rows {
        let variant = if r.is_peer() { format!("peer:{}", r.peer) } else { r.variant.clone() };
        out.push_str(&format!(
            "{:<9} {:<17} {:<16} {:<44} {:>10.2} {:>8} {:>8} {:>6} {:>8}\n",
            r.suite,
            r.kernel,
            variant,
            r.shape,
            r.median_us,
            num(r.gbps, 0),
            num(r.tflops, 1),
            num(r.pct_of_ceiling, 1),
            num(r.speedup_vs_naive, 2),
        ));
    }
    out
}

/// `suite kernel [shape]`: how errors and progress lines name a case.
pub(crate) fn case_context(case: &Case) -> String {
    format!("{} {} [{}]", case.suite, case.kernel, case.shape())
}

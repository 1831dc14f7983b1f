//! `rooflab bench` on a machine without a GPU, and the plumbing of the GPU timer that runs without one:
//! the bench refuses in one line and writes nothing; rows made from a (fake) timer's times carry the
//! vendor peer measured in-process as a `peer` row and land in a run folder with the comparisons
//! filled; the random-weight GPU model refuses unsupported shapes before touching a GPU.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use rooflab::model::gpu::{GpuModel, GpuOptions};
use rooflab::model::LlamaConfig;
use rooflab_harness::bench::gpu::{self, e2e, Implementation, PEER_PREFIX};
use rooflab_harness::bench::{self as bench, Case, Plan, Suite, Timed, Timer};
use rooflab_harness::report::model::{Ceilings, Conditions, Failure, Gpu, Run, NAIVE, PEER};

/// Runs `rooflab ARGS`; returns (success, stdout, stderr).
fn rooflab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rooflab")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The single `error: ...` line of a failed command.
fn error_line(stderr: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line in {stderr:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "expected nothing but the error line in {stderr:?}");
    errors[0].to_string()
}

fn is_empty_or_missing(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

#[test]
fn bench_without_a_gpu_fails_in_one_line_and_writes_nothing() {
    if rooflab::cuda::gpu_available() {
        eprintln!("skipped: this machine has a GPU (the bench would run)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("results");
    let (ok, stdout, stderr) = rooflab(&["bench", "--suite", "decode", "--quick", "--out", out.to_str().unwrap()]);
    assert!(!ok, "bench succeeded without a GPU: {stdout}");
    let line = error_line(&stderr);
    assert!(line.starts_with("error: no CUDA GPU: "), "{line}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(is_empty_or_missing(&out), "bench wrote into {}", out.display());
    assert!(is_empty_or_missing(root.path()) || !out.exists());
}

#[test]
fn bad_arguments_are_refused_before_the_gpu_is_touched() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("results");
    let out = out.to_str().unwrap();
    let (ok, _, stderr) = rooflab(&["bench", "--suite", "decode,mlp", "--out", out]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(line.contains("\"mlp\"") && line.contains("attention"), "{line}");
    let missing = root.path().join("no-model");
    let (ok, _, stderr) = rooflab(&["bench", "--suite", "e2e", "--model", missing.to_str().unwrap(), "--out", out]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(line.contains("no-model") && line.contains("config.json"), "{line}");
    let (ok, _, stderr) = rooflab(&["bench", "--time-budget=0", "--out", out]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(line.contains("--time-budget 0") && line.contains("positive"), "{line}");
    assert!(is_empty_or_missing(Path::new(out)));
}

/// A pretend GPU: rooflab at 80% of the bandwidth roof, naive at 20%, cuBLAS at 60%; nothing for spec.
struct FakeTimer {
    calls: usize,
}

impl Timer for FakeTimer {
    fn time(&mut self, case: &Case, plan: &Plan) -> Result<Vec<Timed>> {
        self.calls += 1;
        if case.suite == Suite::Spec {
            return Ok(Vec::new());
        }
        let ideal_us = case.work.bytes / 3000e9 * 1e6;
        let times = |fraction: f64| -> Vec<f64> {
            (0..plan.iterations).map(|k| ideal_us / fraction * (1.0 + 0.002 * (k % 3) as f64)).collect()
        };
        Ok(vec![
            Timed { variant: Implementation::rooflab("rooflab").variant(), times_us: times(0.8) },
            Timed { variant: Implementation::naive().variant(), times_us: times(0.2) },
            Timed { variant: gpu::CUBLAS.variant(), times_us: times(0.6) },
        ])
    }
}

fn ceilings() -> Ceilings {
    Ceilings {
        bandwidth_gbps: 3000.0,
        bandwidth_method: "2.00 GiB device-to-device copy".into(),
        bf16_tflops: 780.0,
        bf16_method: "cuBLAS bf16 GEMM 8192x8192x8192".into(),
    }
}

fn run_json(suites: &[Suite]) -> Run {
    Run {
        rooflab_version: "0.1.0".into(),
        commit: "fake0123".into(),
        date: "2026-11-25".into(),
        command: "rooflab bench --quick".into(),
        environment: vec![],
        suites: suites.iter().map(|s| s.name().to_string()).collect(),
        quick: true,
        gpu: Gpu {
            name: "NVIDIA H100 80GB HBM3".into(),
            sm_count: 132,
            memory_bytes: 85_520_809_984,
            compute_capability: "9.0".into(),
            driver: "580.95.05".into(),
        },
        host_kernel: None,
        before: Conditions::default(),
        after: Conditions::default(),
        ceilings: ceilings(),
        failures: vec![],
        appended: vec![],
    }
}

#[test]
fn timer_rows_carry_the_in_process_vendor_peer_into_the_run_folder() {
    assert_eq!(gpu::CUBLAS.variant(), format!("{PEER_PREFIX}cublas_cudarc"));
    let suites = bench::parse_suites("gemv,spec").unwrap();
    let cases = bench::cases_for(&suites, true);
    let mut timer = FakeTimer { calls: 0 };
    let rows = bench::measure(&mut timer, &cases, &Plan::new(true), &ceilings()).unwrap().rows;
    assert_eq!(timer.calls, cases.len());
    let timed_cases = cases.iter().filter(|c| c.suite != Suite::Spec).count();
    assert_eq!(rows.len(), 3 * timed_cases);

    let fast = rows.iter().find(|r| r.variant == "rooflab").unwrap();
    assert!((fast.speedup_vs_naive.unwrap() - 4.0).abs() < 0.01, "{fast:?}");
    assert_eq!(fast.peer, "cublas_cudarc");
    assert!((fast.ratio_vs_peer.unwrap() - 4.0 / 3.0).abs() < 0.01, "{fast:?}");
    assert!((fast.pct_of_ceiling.unwrap() - 80.0).abs() < 1.0, "{fast:?}");
    let peer = rows.iter().find(|r| r.is_peer()).unwrap();
    assert_eq!((peer.variant.as_str(), peer.peer.as_str()), (PEER, "cublas_cudarc"));
    assert_eq!(peer.speedup_vs_naive, None);
    assert!(rows.iter().any(|r| r.variant == NAIVE));

    let root = tempfile::tempdir().unwrap();
    let dir = bench::write_run(root.path(), &run_json(&suites), &rows).unwrap();
    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    assert!(summary.contains(",peer,") && summary.contains("cublas_cudarc"), "{summary}");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("cublas_cudarc"), "{report}");
    let table = gpu::short_table(&rows);
    assert!(table.lines().next().unwrap().contains("median_us") && table.contains("peer:cublas_cudarc"), "{table}");
    assert_eq!(table.lines().count(), rows.len() + 1);
}

/// A pretend GPU whose naive GEMV fails its check at the first case and which loses its context at the
/// third (a kernel that faulted).
struct FailingTimer {
    calls: usize,
    failures: Vec<Failure>,
}

impl Timer for FailingTimer {
    fn time(&mut self, case: &Case, plan: &Plan) -> Result<Vec<Timed>> {
        self.calls += 1;
        let rooflab = Timed { variant: "rooflab".into(), times_us: vec![10.0; plan.iterations] };
        let naive = Timed { variant: NAIVE.into(), times_us: vec![40.0; plan.iterations] };
        match self.calls {
            1 => {
                self.failures.push(case.failure(NAIVE, "output element 3 is 0.5\nbut want 0.25".into()));
                Ok(vec![rooflab])
            }
            3 => Err(anyhow::anyhow!("timing rooflab: CUDA_ERROR_ILLEGAL_ADDRESS")),
            _ => Ok(vec![rooflab, naive]),
        }
    }

    fn take_failures(&mut self) -> Vec<Failure> {
        std::mem::take(&mut self.failures)
    }
}

#[test]
fn a_failed_check_costs_its_implementation_and_a_lost_device_the_rest_and_the_run_says_so() {
    let suites = bench::parse_suites("gemv").unwrap();
    let cases = bench::cases_for(&suites, true);
    assert!(cases.len() > 3);
    let mut timer = FailingTimer { calls: 0, failures: Vec::new() };
    let measured = bench::measure(&mut timer, &cases, &Plan::new(true), &ceilings()).unwrap();
    assert_eq!(timer.calls, 3, "nothing is timed after the device is lost");
    let variants: Vec<(&str, &str)> = measured.rows.iter().map(|r| (r.shape.as_str(), r.variant.as_str())).collect();
    let (first, second) = (cases[0].shape(), cases[1].shape());
    assert_eq!(variants, [(first.as_str(), "rooflab"), (second.as_str(), "rooflab"), (second.as_str(), NAIVE)]);
    let failed: Vec<(&str, &str)> = measured.failures.iter().map(|f| (f.shape.as_str(), f.variant.as_str())).collect();
    assert_eq!(failed.len(), 2 + cases.len() - 3);
    assert_eq!(failed[0], (first.as_str(), NAIVE));
    assert_eq!(failed[1], (cases[2].shape().as_str(), "*"));
    assert_eq!(measured.failures[0].error, "output element 3 is 0.5 but want 0.25", "one line, for a table cell");
    assert!(measured.failures[1].error.contains("CUDA_ERROR_ILLEGAL_ADDRESS"));
    assert!(measured.failures[2..].iter().all(|f| f.error.starts_with("not measured: the device was lost at gemv")));

    // The run folder lists them in run.json and first thing in report.md, and the report regenerates
    // byte for byte from the files.
    let root = tempfile::tempdir().unwrap();
    let run = Run { failures: measured.failures.clone(), ..run_json(&suites) };
    let dir = bench::write_run(root.path(), &run, &measured.rows).unwrap();
    let stored: Run = serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(stored.failures, measured.failures);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let section = report.find("## Not measured").expect("a not-measured section");
    assert!(section < report.find("## How to read").unwrap(), "failures come before the tables");
    assert!(
        report.contains(&format!("| gemv | gemv | bf16 | {first} | naive | output element 3 is 0.5 but want 0.25 |"))
    );
    assert!(report.contains(&format!("| Not measured | {} implementation(s)", measured.failures.len())));
    rooflab_harness::report::regenerate(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("report.md")).unwrap(), report);

    // A run where everything passed keeps run.json as it was before failures were recorded.
    let clean = bench::write_run(root.path(), &run_json(&suites), &measured.rows).unwrap();
    assert!(!std::fs::read_to_string(clean.join("run.json")).unwrap().contains("failures"));
    assert!(!std::fs::read_to_string(clean.join("report.md")).unwrap().contains("Not measured"));
}

#[test]
fn random_gpu_model_refuses_unsupported_shapes_before_the_gpu() {
    let mut config = e2e::llama_3_2_1b();
    config.num_layers = 1;
    config.vocab_size = 512;
    config.head_dim = 96;
    let err = GpuModel::random(config.clone(), 0, GpuOptions::default()).err().expect("head_dim 96 must be refused");
    assert!(matches!(err, rooflab::Error::Unsupported(_)) && err.to_string().contains("head_dim 96"), "{err}");
    let wide_group = LlamaConfig { num_heads: 64, num_kv_heads: 2, head_dim: 64, ..config.clone() };
    assert!(matches!(GpuModel::random(wide_group, 0, GpuOptions::default()), Err(rooflab::Error::Unsupported(_))));
    if !rooflab::cuda::gpu_available() {
        let ok_shape = LlamaConfig { head_dim: 64, ..config };
        let err = GpuModel::random(ok_shape, 0, GpuOptions::default()).err().expect("no GPU here");
        assert!(matches!(err, rooflab::Error::NoGpu(_)), "{err}");
    }
}

#[test]
fn e2e_models_include_the_checkpoint_folder_only_when_present() {
    let root = tempfile::tempdir().unwrap();
    let names = |models: &[e2e::E2eModel]| models.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    let missing = e2e::models(None, &root.path().join("absent"));
    assert_eq!(names(&missing), ["random-Llama-3.2-1B", "random-Llama-3-8B"]);
    let dir = root.path().join("SmolLM2-135M-Instruct");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let found = e2e::models(None, &dir);
    assert_eq!(names(&found), ["SmolLM2-135M-Instruct", "random-Llama-3.2-1B", "random-Llama-3-8B"]);
    let explicit = e2e::models(Some(&dir), &root.path().join("absent"));
    assert_eq!(explicit.len(), 3);
}

#[test]
fn a_missing_cublas_is_explained_in_one_line() {
    let why = gpu::cublas_missing("it is not on the library path");
    assert!(!why.contains('\n'), "{why}");
    for needle in ["libcublas.so.13", "LD_LIBRARY_PATH", "scripts/gpu-run", "nvidia/cu13/lib"] {
        assert!(why.contains(needle), "{needle} missing from: {why}");
    }
}

/// FakeTimer's times, but the second case takes longer than the time budget.
struct SlowSecondCase {
    inner: FakeTimer,
    pause: std::time::Duration,
}

impl Timer for SlowSecondCase {
    fn time(&mut self, case: &Case, plan: &Plan) -> Result<Vec<Timed>> {
        if self.inner.calls == 1 {
            std::thread::sleep(self.pause);
        }
        self.inner.time(case, plan)
    }
}

/// A run cut by --time-budget lists what it left out; `--into` measures exactly that into the same folder
/// later (the run's ceilings kept, this call's recorded), and refuses a run it cannot be compared with.
#[test]
fn a_run_cut_by_its_time_budget_is_completed_into_the_same_folder() {
    use rooflab_harness::bench::append::{Appended, Existing};
    let suites = bench::parse_suites("gemv").unwrap();
    let cases = bench::cases_for(&suites, true);
    assert!(cases.len() > 3);
    let pause = std::time::Duration::from_millis(50);
    let mut plan = Plan::new(true);
    plan.deadline = Some(std::time::Instant::now() + pause / 2);
    let mut timer = SlowSecondCase { inner: FakeTimer { calls: 0 }, pause };
    let first = bench::measure(&mut timer, &cases, &plan, &ceilings()).unwrap();
    assert_eq!(timer.inner.calls, 2, "no case starts after the deadline");
    assert_eq!(first.failures.len(), cases.len() - 2);
    assert!(first.failures.iter().all(|f| f.error == bench::OUT_OF_TIME && f.variant == "*"));

    let root = tempfile::tempdir().unwrap();
    let run = Run { failures: first.failures.clone(), ..run_json(&suites) };
    let dir = bench::write_run(root.path(), &run, &first.rows).unwrap();

    // The next call: what is left, against the run's ceilings, into the same folder.
    let existing = Existing::load(&dir).unwrap();
    existing.check_compatible(&run.gpu.name, &run.commit, true, &[]).unwrap();
    let left: Vec<Case> = cases.iter().filter(|c| !existing.has(c)).cloned().collect();
    assert_eq!(left.len(), cases.len() - 2);
    let now = Ceilings { bandwidth_gbps: 2950.0, ..ceilings() };
    existing.check_ceilings(&now).unwrap();
    let second = bench::measure(&mut FakeTimer { calls: 0 }, &left, &Plan::new(true), &ceilings()).unwrap();
    let call = Appended {
        command: "rooflab bench --suite gemv --quick --into DIR".into(),
        date: "2026-11-25".into(),
        suites: vec!["gemv".into()],
        ceilings: now,
        before: Conditions::default(),
        host_kernel: Some("4.4.0".into()),
    };
    let (merged, rows) = existing.merged(second, &left, &["gemv".to_string()], call, Conditions::default());
    bench::write_run_files(&dir, &merged, &rows).unwrap();

    let stored: Run = serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert!(stored.failures.is_empty(), "the cut cases are measured now: {:?}", stored.failures);
    assert_eq!(stored.suites, ["gemv"]);
    assert_eq!(stored.appended.len(), 1);
    assert_eq!(stored.ceilings, ceilings(), "rows stay judged against the first call's ceilings");
    let summary = rooflab_harness::report::load_summary(&dir).unwrap();
    assert_eq!(summary.len(), 3 * cases.len(), "every case once, with its three implementations");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("| Added by | `rooflab bench --suite gemv --quick --into DIR` on 2026-11-25 (gemv;"));
    assert!(report.contains("TFLOP/s; host kernel 4.4.0) |"), "a call on another machine's kernel says so");
    rooflab_harness::report::regenerate(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("report.md")).unwrap(), report);

    // Runs it must not be added to.
    let existing = Existing::load(&dir).unwrap();
    let refused = |r: anyhow::Result<()>| r.unwrap_err().to_string();
    assert!(refused(existing.check_compatible("NVIDIA H200", &run.commit, true, &[])).contains("NVIDIA H200"));
    assert!(refused(existing.check_compatible(&run.gpu.name, "other", true, &[])).contains("commit"));
    assert!(refused(existing.check_compatible(&run.gpu.name, &run.commit, false, &[])).contains("--quick"));
    let env = ["ROOFLAB_DECODE=unfused".to_string()];
    assert!(refused(existing.check_compatible(&run.gpu.name, &run.commit, true, &env)).contains("ROOFLAB_DECODE"));
    let slower = Ceilings { bf16_tflops: 700.0, ..ceilings() };
    assert!(refused(existing.check_ceilings(&slower)).contains("start a new run"));
    let err = Existing::load(root.path()).err().unwrap().to_string();
    assert!(err.contains("not a rooflab run folder"), "{err}");
}

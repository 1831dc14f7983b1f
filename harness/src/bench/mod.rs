//! The GPU-independent half of `rooflab bench`.
//!
//! The command is assembled from these pieces (the GPU half plugs in through [`Timer`]):
//!
//! ```text
//! let suites = bench::parse_suites(&args.suite)?;                    // attention|decode|gemv|spec|e2e|all
//! let cases = bench::cases_for(&suites, args.quick);                  // + bench::e2e_cases(..) with a model
//! let date = bench::today_utc(); let (before, driver) = bench::query_conditions();
//! let ceilings = gpu.measure_ceilings()?;                             // device-to-device copy, cuBLAS GEMM
//! let measured = bench::measure(&mut gpu_timer, &cases, &bench::Plan::new(args.quick), &ceilings)?;
//! let (after, _) = bench::query_conditions();
//! let dir = bench::write_run(Path::new("results"), &run, &measured.rows)?; // run.failures: measured.failures
//! ```

pub mod append;
pub mod cases;
pub mod env;
pub mod gpu;
pub mod stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

pub use cases::{cases, e2e_cases, parse_suites, shapes_json, Case, Param, Suite, Work};
pub use env::{detect_commit, host_kernel, query_conditions, today_utc};
pub use stats::{measurement_row, TimeStats};

use crate::report::model::{Ceilings, Failure, Row, Run};
use crate::report::{self, compare};

/// How long to time each implementation: launches before timing, and timed launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub warmup: usize,
    pub iterations: usize,
    /// Rotate through enough input copies that the working set exceeds this many bytes (about 2x the
    /// L2 of an H100/H200), so every launch reads from HBM as it would in a model.
    pub rotation_bytes: u64,
    /// No case is started after this moment (`rooflab bench --time-budget`); the ones left are listed as
    /// not measured, and the run is written with what was.
    pub deadline: Option<Instant>,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        let (warmup, iterations) = if quick { (5, 20) } else { (25, 200) };
        Plan { warmup, iterations, rotation_bytes: 128 << 20, deadline: None }
    }

    /// Whether the deadline has passed (never, without one).
    pub fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// The reason given for the cases a spent time budget left out.
pub const OUT_OF_TIME: &str = "not measured: the --time-budget was spent before this case";

/// The event times of one implementation of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    /// `rooflab` (or a named rooflab version) or [`report::model::NAIVE`].
    pub variant: String,
    /// One CUDA-event time per timed launch, microseconds.
    pub times_us: Vec<f64>,
}

/// The GPU side of `rooflab bench`: launches every implementation it has of a case and times them.
pub trait Timer {
    /// Event times of each implementation of `case` (rooflab's kernel, its naive baseline, ...) that
    /// passed its check, or an empty list when the device side has no kernel for it (the case is then
    /// skipped). An error means the device can no longer be used: measuring stops there.
    fn time(&mut self, case: &Case, plan: &Plan) -> Result<Vec<Timed>>;

    /// What failed its check or could not run since the last call (left out of the times).
    fn take_failures(&mut self) -> Vec<Failure> {
        Vec::new()
    }
}

/// Variants a [`Timer`] names `PEER_PREFIX` + NAME are vendor libraries timed in the same process
/// (cuBLAS through cudarc): they become `peer` rows named NAME.
pub const PEER_PREFIX: &str = "peer:";

/// What [`measure`] got: the summary rows, and what could not be measured.
#[derive(Debug, Default)]
pub struct Measurement {
    pub rows: Vec<Row>,
    pub failures: Vec<Failure>,
}

/// Every case of the suites, in suite order (e2e cases need a model: add [`e2e_cases`]).
pub fn cases_for(suites: &[Suite], quick: bool) -> Vec<Case> {
    suites.iter().flat_map(|&suite| cases(suite, quick)).collect()
}

/// Times every case and turns the times into summary rows with the comparison columns filled, rounded
/// to what summary.csv stores ([`PEER_PREFIX`] variants become `peer` rows). A failed check costs only
/// its implementation; a lost device ends the measuring, and it and every case left are failures; so
/// does the plan's deadline ([`OUT_OF_TIME`]).
pub fn measure(timer: &mut dyn Timer, cases: &[Case], plan: &Plan, ceilings: &Ceilings) -> Result<Measurement> {
    let mut m = Measurement::default();
    for (i, case) in cases.iter().enumerate() {
        if plan.out_of_time() {
            m.failures.extend(cases[i..].iter().map(|c| c.failure("*", OUT_OF_TIME.to_string())));
            break;
        }
        let timed = timer.time(case, plan);
        m.failures.extend(timer.take_failures());
        let timed = match timed {
            Ok(timed) => timed,
            Err(e) => {
                m.failures.push(case.failure("*", format!("{e:#}")));
                let lost = format!("not measured: the device was lost at {} [{}]", case.kernel, case.shape());
                m.failures.extend(cases[i + 1..].iter().map(|c| c.failure("*", lost.clone())));
                break;
            }
        };
        for timed in timed {
            let row = match timed.variant.strip_prefix(PEER_PREFIX) {
                Some(name) => {
                    let mut row = measurement_row(case, report::model::PEER, &timed.times_us, ceilings)?;
                    row.peer = name.to_string();
                    row
                }
                None => measurement_row(case, &timed.variant, &timed.times_us, ceilings)?,
            };
            m.rows.push(row);
        }
    }
    m.rows = finish_rows(m.rows, ceilings)?;
    Ok(m)
}

/// Rounds rows as summary.csv will store them and fills the comparison columns.
pub fn finish_rows(rows: Vec<Row>, ceilings: &Ceilings) -> Result<Vec<Row>> {
    let mut rows = report::csv::round_trip(&rows)?;
    compare::fill_comparisons(&mut rows, ceilings);
    Ok(rows)
}

/// The folder a run goes to: `<root>/<device slug>/<date>-<commit>`, with `-2`, `-3`, ... when a run
/// of the same commit on the same day already exists (runs are never overwritten).
pub fn run_dir(root: &Path, run: &Run) -> PathBuf {
    let device = root.join(report::model::device_slug(&run.gpu.name));
    let base = format!("{}-{}", run.date, run.commit);
    let mut dir = device.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = device.join(format!("{base}-{n}"));
        n += 1;
    }
    dir
}

/// Writes a run: summary.csv, run.json and shapes/<suite>.json (the exact shapes, for the peer scripts),
/// then report.md and the figures ([`report::regenerate`]) and `<root>/README.md`. Returns the folder.
pub fn write_run(root: &Path, run: &Run, rows: &[Row]) -> Result<PathBuf> {
    run.check()?;
    let dir = run_dir(root, run);
    write_run_files(&dir, run, rows)?;
    report::write_results_index(root)?;
    Ok(dir)
}

/// Writes (or rewrites, for `rooflab bench --into`) the files of the run folder `dir`: summary.csv,
/// run.json, shapes/<suite>.json, report.md and the figures.
pub fn write_run_files(dir: &Path, run: &Run, rows: &[Row]) -> Result<()> {
    run.check()?;
    std::fs::create_dir_all(dir.join("shapes")).with_context(|| format!("cannot create {}", dir.display()))?;
    let rows = finish_rows(rows.to_vec(), &run.ceilings)?;
    let mut run_json = serde_json::to_string_pretty(run)?;
    run_json.push('\n');
    report::write_atomically(
        dir,
        &[(report::SUMMARY_FILE.to_string(), report::csv::to_csv(&rows)?), (report::RUN_FILE.to_string(), run_json)],
    )?;
    let mut shapes = Vec::new();
    for name in &run.suites {
        let Ok(suite) = name.parse::<Suite>() else {
            bail!("run.json lists suite {name:?}, which rooflab does not know");
        };
        shapes.push((format!("{name}.json"), shapes_json(suite, run.quick)));
    }
    report::write_atomically(&dir.join("shapes"), &shapes)?;
    report::regenerate(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Conditions, Gpu, NAIVE};

    /// A pretend GPU: rooflab runs at 80% of the bandwidth roof, naive at 20%.
    struct FakeTimer;

    impl Timer for FakeTimer {
        fn time(&mut self, case: &Case, plan: &Plan) -> Result<Vec<Timed>> {
            if case.suite != Suite::Decode {
                return Ok(Vec::new());
            }
            let ideal_us = case.work.bytes / 3016e9 * 1e6;
            let jitter = |k: usize| 1.0 + 0.01 * ((k * 7) % 5) as f64;
            let times = |fraction: f64| (0..plan.iterations).map(|k| ideal_us / fraction * jitter(k)).collect();
            Ok(vec![
                Timed { variant: "rooflab".into(), times_us: times(0.8) },
                Timed { variant: NAIVE.into(), times_us: times(0.2) },
            ])
        }
    }

    fn run() -> Run {
        Run {
            rooflab_version: env!("CARGO_PKG_VERSION").into(),
            commit: "0123abcd".into(),
            date: "2026-11-24".into(),
            command: "rooflab bench --suite decode --quick".into(),
            environment: vec![],
            suites: vec!["decode".into()],
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
            ceilings: Ceilings {
                bandwidth_gbps: 3016.0,
                bandwidth_method: "2 GiB device-to-device copy".into(),
                bf16_tflops: 786.0,
                bf16_method: "cuBLAS bf16 GEMM 8192x8192x8192".into(),
            },
            failures: vec![],
            appended: vec![],
        }
    }

    #[test]
    fn measure_and_write_a_run() {
        let run = run();
        let cases = cases_for(&parse_suites("decode,gemv").unwrap(), true);
        let rows = measure(&mut FakeTimer, &cases, &Plan::new(true), &run.ceilings).unwrap().rows;
        assert_eq!(rows.len(), 4);
        let fast = &rows[0];
        assert!((fast.pct_of_ceiling.unwrap() - 78.0).abs() < 3.0, "{fast:?}");
        assert!((fast.speedup_vs_naive.unwrap() - 4.0).abs() < 0.01, "{fast:?}");

        let root = tempfile::tempdir().unwrap();
        let dir = write_run(root.path(), &run, &rows).unwrap();
        assert!(dir.ends_with("nvidia-h100-80gb-hbm3/2026-11-24-0123abcd"));
        for file in ["summary.csv", "run.json", "report.md", "roofline.svg", "decode.svg", "shapes/decode.json"] {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        let index = std::fs::read_to_string(root.path().join("README.md")).unwrap();
        assert!(index.contains("nvidia-h100-80gb-hbm3/2026-11-24-0123abcd/report.md"), "{index}");
        // A second run of the same commit on the same day gets its own folder.
        let again = write_run(root.path(), &run, &rows).unwrap();
        assert!(again.ends_with("2026-11-24-0123abcd-2"));
    }
}

//! [`GpuTimer`], the [`Timer`] of `rooflab bench`: for each case it builds the workload, checks every
//! implementation against the CPU reference (all of them before any is timed), then times each that
//! passed with CUDA events: warm-up first, then `Plan::iterations` timed groups, rotating through the
//! input copies. One that fails its check is not timed and becomes a [`Failure`] of the run.
//!
//! Kernels shorter than [`MIN_TIMED_SECONDS`] are timed in batches of back-to-back launches between one
//! pair of events and the time divided, so event overhead does not dominate; very slow ones (the naive
//! baselines at long sequences) get fewer iterations, so one implementation never takes much more than
//! its time budget.

use anyhow::{Context, Result};
use rooflab::cuda::GpuTimer as EventPair;

use super::{attention, case_context, decode, gemv, Device, Workload};
use crate::bench::{Case, Plan, Suite, Timed, Timer};
use crate::report::model::Failure;

/// A timed group of launches should last at least this long (event resolution is about 0.5 µs).
pub const MIN_TIMED_SECONDS: f64 = 50e-6;
/// Most launches batched between one pair of events.
pub const MAX_BATCH: usize = 64;
/// Warm up for at least this long (clocks ramp up, caches and TLBs fill)...
pub const MIN_WARMUP_SECONDS: f64 = 0.1;
/// ...and at most this long, beyond the first launch.
pub const MAX_WARMUP_SECONDS: f64 = 1.0;
/// Fewest timed groups, however slow the kernel (when the plan asks for at least this many).
pub const MIN_ITERATIONS: usize = 3;

/// Seconds of timed launches per implementation: `Plan::iterations` is cut down to fit.
pub fn budget_seconds(quick: bool) -> f64 {
    if quick {
        0.5
    } else {
        2.0
    }
}

/// How many launches to make: warm-up launches, launches per timed group, and timed groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub warmup: usize,
    pub batch: usize,
    pub iterations: usize,
}

/// The schedule for a kernel that takes about `estimate_s` seconds per launch.
pub fn schedule(estimate_s: f64, plan: &Plan, budget_s: f64) -> Schedule {
    let estimate_s = if estimate_s.is_finite() && estimate_s > 0.0 { estimate_s } else { 1e-6 };
    let batch = ((MIN_TIMED_SECONDS / estimate_s).ceil() as usize).clamp(1, MAX_BATCH);
    let wanted_warmup = plan.warmup.max((MIN_WARMUP_SECONDS / estimate_s).ceil() as usize);
    let warmup = wanted_warmup.min((MAX_WARMUP_SECONDS / estimate_s) as usize);
    let fit = (budget_s / (estimate_s * batch as f64)) as usize;
    let iterations = plan.iterations.min(fit).max(MIN_ITERATIONS.min(plan.iterations)).max(1);
    Schedule { warmup, batch, iterations }
}

/// Times `launch(n)` (n counts launches; workloads rotate copies by it) and returns one time per timed
/// group, microseconds per launch. The first launch is timed alone to choose the [`Schedule`]; it also
/// warms up. The timed groups are queued back to back and read once at the end.
pub fn time_launches(
    device: &Device,
    plan: &Plan,
    budget_s: f64,
    mut launch: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<f64>> {
    let gpu = &device.gpu;
    device.synchronize()?;
    let probe = EventPair::new(gpu)?;
    probe.start(gpu)?;
    launch(0)?;
    probe.stop(gpu)?;
    device.synchronize()?;
    let estimate_s = probe.elapsed_ms()? as f64 / 1e3;
    let s = schedule(estimate_s, plan, budget_s);
    let mut n = 1;
    for _ in 0..s.warmup {
        launch(n)?;
        n += 1;
    }
    device.synchronize()?;
    let groups = (0..s.iterations).map(|_| EventPair::new(gpu)).collect::<rooflab::Result<Vec<_>>>()?;
    for group in &groups {
        group.start(gpu)?;
        for _ in 0..s.batch {
            launch(n)?;
            n += 1;
        }
        group.stop(gpu)?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(groups.len());
    for group in &groups {
        times.push(group.elapsed_ms()? as f64 * 1e3 / s.batch as f64);
    }
    Ok(times)
}

/// What [`time_workload`] measured: one [`Timed`] per implementation that passed its check, and
/// (implementation name, error) for each one that did not, or whose timing failed.
#[derive(Debug, Default)]
pub struct Measured {
    pub timed: Vec<Timed>,
    pub failed: Vec<(String, String)>,
}

/// Checks every implementation of `workload` against the CPU reference: (index, error) of each that did
/// not pass. An error that leaves the CUDA context unusable (a kernel that faulted) is returned instead,
/// since nothing after it could run. The mock driver's launch-only mode runs no kernel, so there is no
/// output to check (a rehearsal): nothing fails there.
pub fn check_implementations(device: &Device, workload: &mut dyn Workload) -> Result<Vec<(usize, anyhow::Error)>> {
    let mut failed = Vec::new();
    if device.gpu.mock_skips_kernels() {
        return Ok(failed);
    }
    for which in 0..workload.implementations().len() {
        if let Err(e) = workload.check(which) {
            device_still_usable(device, &e)?;
            failed.push((which, e));
        }
    }
    Ok(failed)
}

/// Checks every implementation of `workload` ([`check_implementations`]), then times each that passed.
/// A failed check leaves that implementation out and the others go on.
pub fn time_workload(device: &Device, workload: &mut dyn Workload, plan: &Plan, budget_s: f64) -> Result<Measured> {
    let implementations = workload.implementations().to_vec();
    let mut measured = Measured::default();
    let mut passed = vec![true; implementations.len()];
    for (which, e) in check_implementations(device, workload)? {
        measured.failed.push((implementations[which].name.to_string(), format!("{e:#}")));
        passed[which] = false;
    }
    let copies = workload.copies().max(1);
    for (which, implementation) in implementations.iter().enumerate().filter(|(which, _)| passed[*which]) {
        match time_launches(device, plan, budget_s, |n| workload.launch(which, n % copies)) {
            Ok(times) => measured.timed.push(Timed { variant: implementation.variant(), times_us: times }),
            Err(e) => {
                device_still_usable(device, &e)?;
                measured.failed.push((implementation.name.to_string(), format!("timing: {e:#}")));
            }
        }
    }
    Ok(measured)
}

/// Ok when the context still works after `error` (a wrong result, a refused shape); else an error saying
/// the context was lost to it (a fault is sticky: every later call would fail the same way).
pub fn device_still_usable(device: &Device, error: &anyhow::Error) -> Result<()> {
    device.synchronize().map_err(|lost| anyhow::anyhow!("{error:#}; the CUDA context is unusable after it ({lost})"))
}

/// The workload of a case, or None when rooflab has no kernel for it (int8/int4 GEMV and speculative
/// verification have none yet; e2e cases are measured by [`super::e2e`]).
pub fn workload_for<'d>(device: &'d Device, case: &Case, plan: &Plan) -> Result<Option<Box<dyn Workload + 'd>>> {
    let rotation = plan.rotation_bytes;
    Ok(match (case.suite, case.kernel.as_str(), case.dtype.as_str()) {
        (Suite::Attention, "attention_prefill", "bf16") => {
            Some(Box::new(attention::PrefillWorkload::new(device, attention::PrefillArgs::from_case(case)?, rotation)?))
        }
        (Suite::Decode, "attention_decode", "bf16") => {
            Some(Box::new(decode::DecodeWorkload::new(device, decode::DecodeArgs::from_case(case)?, rotation)?))
        }
        (Suite::Gemv, "gemv", "bf16") => {
            Some(Box::new(gemv::GemvWorkload::new(device, gemv::GemvShape::from_case(case)?, rotation)?))
        }
        _ => None,
    })
}

/// The GPU side of `rooflab bench` for the kernel suites.
pub struct GpuTimer<'d> {
    device: &'d Device,
    budget_s: f64,
    skipped: Vec<String>,
    failures: Vec<Failure>,
}

impl<'d> GpuTimer<'d> {
    pub fn new(device: &'d Device, quick: bool) -> Self {
        GpuTimer { device, budget_s: budget_seconds(quick), skipped: Vec::new(), failures: Vec::new() }
    }

    /// What was skipped and why, for the end of the run.
    pub fn notes(&self) -> Vec<String> {
        if self.skipped.is_empty() {
            return Vec::new();
        }
        vec![format!("no rooflab kernel yet, skipped: {}", self.skipped.join("; "))]
    }
}

impl Timer for GpuTimer<'_> {
    /// The times of `case`'s implementations that passed their check; the others become failures
    /// ([`Timer::take_failures`]). An error means the device can no longer be used.
    fn time(&mut self, case: &Case, plan: &Plan) -> Result<Vec<Timed>> {
        let what = case_context(case);
        let mut workload = match workload_for(self.device, case, plan) {
            Ok(Some(workload)) => workload,
            Ok(None) => {
                self.skipped.push(format!("{} {} {}", case.kernel, case.dtype, case.shape()));
                return Ok(Vec::new());
            }
            // Inputs that do not fit, say: this case fails, the next may not.
            Err(e) => {
                device_still_usable(self.device, &e).with_context(|| what.clone())?;
                eprintln!("  {what}: FAILED to set up: {e:#}");
                self.failures.push(case.failure("*", format!("{e:#}")));
                return Ok(Vec::new());
            }
        };
        eprintln!("  {what}");
        let measured =
            time_workload(self.device, workload.as_mut(), plan, self.budget_s).with_context(|| what.clone())?;
        for (variant, error) in measured.failed {
            eprintln!("  {what}: {variant} FAILED: {error}");
            self.failures.push(case.failure(&variant, error));
        }
        Ok(measured.timed)
    }

    fn take_failures(&mut self) -> Vec<Failure> {
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_batch_tiny_kernels_and_cut_slow_ones() {
        let full = Plan::new(false);
        // A 5 µs kernel: 10 launches per event pair, the plan's 200 groups, 0.1 s of warm-up.
        let s = schedule(5e-6, &full, 2.0);
        assert_eq!(s, Schedule { warmup: 20_000, batch: 10, iterations: 200 });
        // 1 ms: one launch per group, the plan's counts.
        assert_eq!(schedule(1e-3, &full, 2.0), Schedule { warmup: 100, batch: 1, iterations: 200 });
        // 100 ms: the budget allows 20 groups and warm-up stops at one second.
        assert_eq!(schedule(0.1, &full, 2.0), Schedule { warmup: 10, batch: 1, iterations: 20 });
        // 5 s (a naive kernel at 32k tokens): no extra warm-up, the minimum of 3 groups.
        assert_eq!(schedule(5.0, &full, 2.0), Schedule { warmup: 0, batch: 1, iterations: 3 });
        // A nonsense estimate is treated as a 1 µs kernel, and a plan of one iteration is kept.
        let one = Plan { warmup: 0, iterations: 1, rotation_bytes: 0, deadline: None };
        assert_eq!(schedule(f64::NAN, &one, 2.0).iterations, 1);
        assert!(schedule(f64::NAN, &one, 2.0).batch >= 50);
        assert_eq!(schedule(0.0, &one, 2.0), schedule(1e-6, &one, 2.0));
    }
}

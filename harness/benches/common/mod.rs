//! Setup shared by the GPU kernel benches (gemv, attention_decode, layers): the device or a skip note,
//! criterion's settings, and one benchmark group per shape holding every implementation of the
//! workload (rooflab's kernel, its naive baseline, the vendor peer), each checked against the CPU
//! reference first (one that fails is left untimed, and the bench exits 1 at the end) and timed with
//! CUDA events around `iters` back-to-back launches (`iter_custom`),
//! rotating through the workload's input copies so the data comes from HBM, not L2.
//!
//! The workloads are the ones `rooflab bench` times (rooflab_harness::bench::gpu), so both report the
//! same launches on the same data.

use std::sync::Mutex;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use rooflab::cuda::GpuTimer as EventPair;
use rooflab_harness::bench::gpu::timer::{check_implementations, device_still_usable};
use rooflab_harness::bench::gpu::{Device, Workload};
use rooflab_harness::bench::Plan;

/// GPU 0 with the kernels loaded; None (after a one-line note) on a machine without a CUDA GPU, so
/// `cargo bench` passes there. Any other failure (a PTX module that does not load) stops the bench.
pub fn device_or_skip(bench: &str) -> Option<Device> {
    match Device::open() {
        Ok(device) => Some(device),
        Err(e) if matches!(e.downcast_ref::<rooflab::Error>(), Some(rooflab::Error::NoGpu(_))) => {
            println!("{bench}: skipped ({e})");
            None
        }
        Err(e) => fail(&format!("{bench}: {e:#}")),
    }
}

/// Short warm-up and measurement: a group per shape, several shapes per bench, one device session.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args()
}

/// Input copies are chosen so the working set exceeds this (about twice an H100's L2).
pub fn rotation_bytes() -> u64 {
    Plan::new(false).rotation_bytes
}

/// Prints a one-line error and exits non-zero (benches have no caller to return an error to).
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

/// Implementations that failed their check in this process, one line each, for [`exit_if_checks_failed`].
static FAILED_CHECKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records that `what` failed its check: it is left untimed and the rest of the bench goes on (one wrong
/// version must not cost the others' numbers), and the bench exits 1 at the end. A failure after which
/// the CUDA context is unusable (a kernel that faulted) stops the bench now: nothing after it could run.
/// `failure` names the implementation and the shape.
#[allow(dead_code)] // benches/attention.rs only
pub fn check_failed(device: &Device, failure: anyhow::Error) {
    if let Err(lost) = device_still_usable(device, &failure) {
        fail(&format!("{lost:#}"));
    }
    record_failed(format!("{failure:#}"));
}

fn record_failed(failure: String) {
    eprintln!("error (not timed): {failure}");
    FAILED_CHECKS.lock().unwrap_or_else(|p| p.into_inner()).push(failure);
}

/// The implementations of `workload` that pass their check against the CPU reference (indices); the
/// others are recorded as [`check_failed`] does.
pub fn checked_implementations(device: &Device, workload: &mut dyn Workload) -> Vec<usize> {
    let failed = check_implementations(device, workload).unwrap_or_else(|lost| fail(&format!("{lost:#}")));
    let mut passed: Vec<usize> = (0..workload.implementations().len()).collect();
    for (which, e) in failed {
        passed.retain(|&p| p != which);
        // Workload::check's errors name the kernel, the implementation and the shape.
        record_failed(format!("{e:#}"));
    }
    passed
}

/// Call last: when any check failed, lists them and exits 1 (criterion has printed what was timed).
pub fn exit_if_checks_failed() {
    let failed = FAILED_CHECKS.lock().unwrap_or_else(|p| p.into_inner());
    if failed.is_empty() {
        return;
    }
    for line in failed.iter() {
        eprintln!("FAILED (not timed): {line}");
    }
    fail(&format!("{} implementation(s) failed their check against the reference", failed.len()));
}

/// One group named after the workload's kernel and shape, throughput `bytes` (the minimum bytes), one
/// benchmark per implementation that passes its check (see [`check_failed`] for the others).
pub fn bench_workload(c: &mut Criterion, device: &Device, workload: &mut dyn Workload, bytes: f64) {
    let implementations = workload.implementations().to_vec();
    let passed = checked_implementations(device, workload);
    let copies = workload.copies().max(1);
    let mut group = c.benchmark_group(workload.label());
    group.throughput(Throughput::Bytes(bytes as u64));
    for (which, implementation) in implementations.iter().enumerate().filter(|(which, _)| passed.contains(which)) {
        group.bench_function(implementation.name, |b| {
            b.iter_custom(|iters| time_launches(device, workload, which, copies, iters))
        });
    }
    group.finish();
}

/// CUDA-event time of `iters` launches of implementation `which`, queued back to back.
fn time_launches(device: &Device, workload: &mut dyn Workload, which: usize, copies: usize, iters: u64) -> Duration {
    let mut run = || -> anyhow::Result<f32> {
        let events = EventPair::new(&device.gpu)?;
        device.synchronize()?;
        events.start(&device.gpu)?;
        for n in 0..iters as usize {
            workload.launch(which, n % copies)?;
        }
        events.stop(&device.gpu)?;
        device.synchronize()?;
        Ok(events.elapsed_ms()?)
    };
    match run() {
        Ok(ms) => Duration::from_secs_f64(ms as f64 / 1e3),
        Err(e) => fail(&format!("{}: {e:#}", workload.label())),
    }
}

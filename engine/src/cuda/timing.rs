//! Kernel timing with CUDA events. Events must be created with `CU_EVENT_DEFAULT`: cudarc's default
//! (`None`) disables timing. The events drop through [`DropReported`], so an error destroying
//! them (after a kernel fault, say) is reported naming them, not by the next unrelated call.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;

use super::{CudaResultExt, DropReported, GpuContext};
use crate::{Error, Result};

/// A start/end pair of timing events on the context's stream.
pub struct GpuTimer {
    start: DropReported<CudaEvent>,
    end: DropReported<CudaEvent>,
}

impl GpuTimer {
    pub fn new(gpu: &GpuContext) -> Result<Self> {
        let event = || {
            let event = gpu.ctx().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).cuda("creating a timing event")?;
            Ok(DropReported::new(gpu.ctx(), "a timing event", event))
        };
        Ok(GpuTimer { start: event()?, end: event()? })
    }

    pub fn start(&self, gpu: &GpuContext) -> Result<()> {
        self.start.record(gpu.stream()).cuda("recording an event")
    }

    pub fn stop(&self, gpu: &GpuContext) -> Result<()> {
        self.end.record(gpu.stream()).cuda("recording an event")
    }

    /// Milliseconds between start and stop (waits for the stop event).
    pub fn elapsed_ms(&self) -> Result<f32> {
        self.start.elapsed_ms(&self.end).cuda("reading an event time")
    }
}

/// Runs `f` `warmup` times untimed, then `iters` times, each between its own pair of events, and
/// returns the `iters` durations in milliseconds. The timed launches are queued back to back and
/// read once at the end, so host overhead between them is not counted.
pub fn time_kernel<F: FnMut() -> Result<()>>(
    gpu: &GpuContext,
    warmup: usize,
    iters: usize,
    mut f: F,
) -> Result<Vec<f32>> {
    if iters == 0 {
        return Err(Error::Invalid("time_kernel needs at least one timed iteration".into()));
    }
    for _ in 0..warmup {
        f()?;
    }
    gpu.synchronize()?;
    let timers = (0..iters).map(|_| GpuTimer::new(gpu)).collect::<Result<Vec<_>>>()?;
    for timer in &timers {
        timer.start(gpu)?;
        f()?;
        timer.stop(gpu)?;
    }
    gpu.synchronize()?;
    timers.iter().map(GpuTimer::elapsed_ms).collect()
}

/// Device memory bandwidth in bytes/s, from a device-to-device copy of `bytes` (bytes read plus
/// bytes written over the median time of 10 copies, after 3 untimed ones).
pub fn measure_copy_bandwidth(gpu: &GpuContext, bytes: usize) -> Result<f64> {
    let len = bytes.max(1 << 20);
    let stream = gpu.stream();
    let src = stream.alloc_zeros::<u8>(len).cuda("allocating the bandwidth probe")?;
    let mut dst = stream.alloc_zeros::<u8>(len).cuda("allocating the bandwidth probe")?;
    let mut times = time_kernel(gpu, 3, 10, || stream.memcpy_dtod(&src, &mut dst).cuda("device-to-device copy"))?;
    times.sort_by(f32::total_cmp);
    let median_s = times[times.len() / 2] as f64 / 1e3;
    if median_s <= 0.0 {
        return Err(Error::Cuda("bandwidth probe measured a zero time".into()));
    }
    Ok(2.0 * len as f64 / median_s)
}

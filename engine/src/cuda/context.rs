//! Device selection, context and the engine's one stream.
//!
//! cudarc panics when it cannot open libcuda, so the driver library is probed first and every
//! failure to find a usable GPU becomes [`Error::NoGpu`]. The stream is a non-default one
//! (`new_stream()`): the legacy default stream cannot be captured into a CUDA graph. Event tracking
//! is turned off before anything is allocated: everything runs on this one stream, so cudarc's
//! per-buffer events would only add waits to every launch (and break graph capture).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::{CudaContext, CudaStream, DriverError};

use super::{report_drop_error, CudaResultExt};
use crate::{Error, Result};

/// How the mock driver of scripts/mock-gpu (kernels-cuda/emu/mock/) names its device: a rehearsal of
/// the GPU host path on the CPU, whose times are made up.
pub const MOCK_GPU_NAME_PREFIX: &str = "rooflab mock GPU";

/// The mock driver's switch (`ROOFLAB_MOCK_GPU_KERNELS=skip`) that checks launches without running them.
pub const MOCK_GPU_KERNELS_ENV: &str = "ROOFLAB_MOCK_GPU_KERNELS";

/// True when the CUDA driver library (libcuda) can be opened on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library names cudarc would use; nothing is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// True when this machine has a usable CUDA GPU (a driver and at least one device). Never panics.
pub fn gpu_available() -> bool {
    driver_present()
        && catch_unwind(|| cudarc::driver::result::init().and_then(|_| CudaContext::device_count()))
            .is_ok_and(|count| count.is_ok_and(|n| n > 0))
}

/// A CUDA context on one device and the stream every rooflab kernel runs on. Cheap to clone.
#[derive(Clone)]
pub struct GpuContext {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    compute_capability: (u32, u32),
    sm_count: u32,
    /// Shared by all clones; the last one to go reports an error left by a late drop.
    _teardown: Arc<TeardownCheck>,
}

/// Reports, when the last [`GpuContext`] clone is dropped, a CUDA error that a drop recorded after
/// the last checked call (buffers freed at teardown): no later call would ever return it.
struct TeardownCheck(Arc<CudaContext>);

impl Drop for TeardownCheck {
    fn drop(&mut self) {
        if let Err(e) = self.0.check_err() {
            report_drop_error("device buffers or other CUDA objects after the last checked call", e);
        }
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({}, sm_{}{})", self.name, self.compute_capability.0, self.compute_capability.1)
    }
}

impl GpuContext {
    /// Opens device `ordinal`. No driver, no device, or a driver cudarc cannot use: [`Error::NoGpu`].
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(Error::NoGpu(
                "the CUDA driver library (libcuda.so) is not installed or not on the library path".into(),
            ));
        }
        let ctx = catch_unwind(AssertUnwindSafe(|| CudaContext::new(ordinal)))
            .map_err(|_| Error::NoGpu("the CUDA driver library could not be used (too old for CUDA 13?)".into()))?
            .map_err(|e| no_gpu(e, ordinal))?;
        // SAFETY: called before any allocation; rooflab orders all work on one stream itself.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().cuda("creating a stream")?;
        let name = ctx.name().cuda("reading the device name")?;
        let (major, minor) = ctx.compute_capability().cuda("reading the compute capability")?;
        let sm_count =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).cuda("reading the SM count")?;
        Ok(GpuContext {
            _teardown: Arc::new(TeardownCheck(ctx.clone())),
            ctx,
            stream,
            name,
            compute_capability: (major.max(0) as u32, minor.max(0) as u32),
            sm_count: sm_count.max(1) as u32,
        })
    }

    pub fn ctx(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch, copy and capture of this context goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's marketing name ("NVIDIA H100 80GB HBM3").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True on the mock driver of scripts/mock-gpu: nothing measured on it is a measurement.
    pub fn is_mock(&self) -> bool {
        self.name.starts_with(MOCK_GPU_NAME_PREFIX)
    }

    /// True on the mock driver when it only checks launches (so no kernel output can be checked).
    pub fn mock_skips_kernels(&self) -> bool {
        self.is_mock() && std::env::var(MOCK_GPU_KERNELS_ENV).is_ok_and(|v| v == "skip")
    }

    pub fn compute_capability(&self) -> (u32, u32) {
        self.compute_capability
    }

    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// (free, total) device memory in bytes, as the driver reports it now.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.check_deferred()?;
        self.ctx.mem_get_info().cuda("reading free device memory")
    }

    /// Reports a deferred error first, then waits for all work on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.check_deferred()?;
        self.stream.synchronize().cuda("synchronising the stream")
    }

    /// Fails with an error that a drop (freeing a buffer, destroying an event, graph or module)
    /// recorded since the last cudarc call, and clears it. Without this, the next cudarc call would
    /// fail with it under its own name.
    pub fn check_deferred(&self) -> Result<()> {
        self.ctx.check_err().cuda("an error deferred from dropping a CUDA object (a buffer, event, graph or module)")
    }
}

/// Any failure to initialise the driver or open the device means there is no usable GPU here, so it
/// is always [`Error::NoGpu`] (which lets `--device auto` fall back to the CPU); the message keeps
/// the driver's reason.
fn no_gpu(e: DriverError, ordinal: usize) -> Error {
    match e.0 {
        CUresult::CUDA_ERROR_NO_DEVICE => Error::NoGpu("the driver reports no CUDA device".into()),
        CUresult::CUDA_ERROR_INVALID_DEVICE => Error::NoGpu(format!("there is no CUDA device {ordinal}")),
        CUresult::CUDA_ERROR_STUB_LIBRARY
        | CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
        | CUresult::CUDA_ERROR_NOT_INITIALIZED => Error::NoGpu(format!("the CUDA driver cannot be used: {e}")),
        _ => Error::NoGpu(format!("CUDA device {ordinal} cannot be opened: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_a_driver_gets_no_gpu_not_a_panic() {
        match GpuContext::new(0) {
            Ok(gpu) => assert!(driver_present(), "opened {gpu:?} without a driver"),
            Err(Error::NoGpu(_)) => {}
            Err(other) => assert!(driver_present(), "expected NoGpu, got {other}"),
        }
    }
}

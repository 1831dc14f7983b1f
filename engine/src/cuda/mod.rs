//! The CUDA layer under the kernels: context and stream ([`GpuContext`]), the PTX module registry
//! ([`ModuleRegistry`]), typed launches ([`launch()`]), device memory ([`DevSpan`],
//! [`MemoryLedger`]), event timing ([`time_kernel`]), CUDA graphs ([`CapturedGraph`]) and cuBLAS ([`Blas`]).
//! Everything runs on one non-default stream per context, with cudarc's event tracking off.
//!
//! CUDA errors in drops: cudarc's Drop impls (buffers, events, graphs, modules, streams) cannot
//! return an error, so they record it in the context, in one slot that the next cudarc call taking
//! the context fails with, under its own name. A drop after the last checked call (teardown, or
//! while an error propagates) has no next call at all. So rooflab's own CUDA objects drop through
//! `drop_reporting`, which names what failed on stderr; [`GpuContext::check_deferred`] names the
//! errors of the other drops (buffers) before `synchronize` and `memory_info`; and the last
//! [`GpuContext`] clone to go reports whatever is left.

mod blas;
mod context;
mod graph;
mod launch;
mod memory;
mod modules;
mod timing;

pub use blas::Blas;
pub use context::{driver_present, gpu_available, GpuContext, MOCK_GPU_KERNELS_ENV, MOCK_GPU_NAME_PREFIX};
/// Device buffer types of cudarc, re-exported so users of the engine need no direct dependency.
pub use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
pub use graph::CapturedGraph;
pub use launch::{elementwise_grid, grid, launch, sync_check_enabled, SYNC_CHECK_ENV};
pub use memory::{check_matmul_operands, DevSpan, MemoryLedger, RESERVED_BYTES};
pub use modules::{embedded_modules, embedded_ptx, ptx_arch_for, ModuleRegistry, PtxSource, PTX_DIR_ENV};
pub use timing::{measure_copy_bandwidth, time_kernel, GpuTimer};

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cudarc::driver::{CudaContext, DriverError};

use crate::{Error, Result};

/// Turns a cudarc error into [`Error::Cuda`] naming what was being done.
pub(crate) trait CudaResultExt<T> {
    fn cuda(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> CudaResultExt<T> for std::result::Result<T, E> {
    fn cuda(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Cuda(format!("{what}: {e}")))
    }
}

/// Drops `value`, reporting on stderr, naming `what`, any CUDA error its drop recorded in `ctx`.
/// An error that was already pending is someone else's: it is put back for the next checked call.
pub(crate) fn drop_reporting<T>(ctx: &CudaContext, what: &str, value: T) {
    let pending = ctx.check_err();
    drop(value);
    if let Err(e) = ctx.check_err() {
        report_drop_error(what, e);
    }
    ctx.record_err(pending);
}

/// A CUDA object that drops through [`drop_reporting`].
pub(crate) struct DropReported<T> {
    value: ManuallyDrop<T>,
    ctx: Arc<CudaContext>,
    what: &'static str,
}

impl<T> DropReported<T> {
    pub(crate) fn new(ctx: &Arc<CudaContext>, what: &'static str, value: T) -> Self {
        DropReported { value: ManuallyDrop::new(value), ctx: ctx.clone(), what }
    }
}

impl<T> Deref for DropReported<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for DropReported<T> {
    fn drop(&mut self) {
        // SAFETY: `value` is taken once, here, and never touched again.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        drop_reporting(&self.ctx, self.what, value);
    }
}

/// Prints one line on stderr for a CUDA error that no caller can receive, unless it repeats the
/// error reported just before (a sticky error makes every later drop fail the same way).
pub(crate) fn report_drop_error(what: &str, e: DriverError) {
    static LAST_REPORTED: AtomicU32 = AtomicU32::new(0);
    if !repeats_last(&LAST_REPORTED, e.0 as u32) {
        eprintln!("{}", drop_error_line(what, &e));
    }
}

/// True when `code` is the code stored in `last`, which then holds `code`.
fn repeats_last(last: &AtomicU32, code: u32) -> bool {
    last.swap(code, Ordering::Relaxed) == code
}

fn drop_error_line(what: &str, e: &dyn std::fmt::Display) -> String {
    format!("rooflab: CUDA error while dropping {what} (a drop cannot return it): {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_error_line_names_what_was_dropped() {
        let line = drop_error_line("a timing event", &"CUDA_ERROR_ILLEGAL_ADDRESS");
        assert!(line.starts_with("rooflab: CUDA error while dropping a timing event"), "{line}");
        assert!(line.ends_with(": CUDA_ERROR_ILLEGAL_ADDRESS"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_repeated_drop_error_is_reported_once() {
        let last = AtomicU32::new(0);
        assert!(!repeats_last(&last, 700));
        assert!(repeats_last(&last, 700));
        assert!(!repeats_last(&last, 1));
        assert!(!repeats_last(&last, 700));
    }
}

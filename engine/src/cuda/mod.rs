//! The CUDA layer under the kernels: context and stream ([`GpuContext`]), the PTX module registry
//! ([`ModuleRegistry`]), typed launches ([`launch()`]), device memory ([`DevSpan`],
//! [`MemoryLedger`]), event timing ([`time_kernel`]), CUDA graphs ([`CapturedGraph`]) and cuBLAS ([`Blas`]).
//! Everything runs on one non-default stream per context, with cudarc's event tracking off.

mod blas;
mod context;
mod graph;
mod launch;
mod memory;
mod modules;
mod timing;

pub use blas::Blas;
pub use context::{driver_present, gpu_available, GpuContext};
/// Device buffer types of cudarc, re-exported so users of the engine need no direct dependency.
pub use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
pub use graph::CapturedGraph;
pub use launch::{elementwise_grid, grid, launch, sync_check_enabled, SYNC_CHECK_ENV};
pub use memory::{DevSpan, MemoryLedger, RESERVED_BYTES};
pub use modules::{embedded_modules, embedded_ptx, ptx_arch_for, ModuleRegistry, PtxSource, PTX_DIR_ENV};
pub use timing::{measure_copy_bandwidth, time_kernel, GpuTimer};

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

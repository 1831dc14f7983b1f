//! Typed kernel launches: one params struct by value, the launch result checked, and (in debug
//! builds or with `ROOFLAB_SYNC_CHECK=1`) a synchronise after each launch so an illegal address or
//! a bad launch is reported against the kernel that caused it rather than a later copy.

use std::sync::OnceLock;

use cudarc::driver::sys::CUstreamCaptureStatus;
use cudarc::driver::{CudaFunction, DeviceRepr, LaunchConfig, PushKernelArg};

use super::GpuContext;
use crate::{Error, Result};

/// Environment variable that turns on the synchronise-after-launch check in release builds.
pub const SYNC_CHECK_ENV: &str = "ROOFLAB_SYNC_CHECK";

/// Whether every launch is followed by a synchronise and an error check.
pub fn sync_check_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| cfg!(debug_assertions) || std::env::var(SYNC_CHECK_ENV).is_ok_and(|v| v == "1"))
}

/// Grid and block shape of a launch (static shared memory only: rooflab kernels declare theirs).
pub fn grid(grid_dim: (u32, u32, u32), block_threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim, block_dim: (block_threads, 1, 1), shared_mem_bytes: 0 }
}

/// Blocks of `threads` threads covering `n` elements, capped for grid-stride kernels.
pub fn elementwise_grid(n: usize, threads: u32, max_blocks: u32) -> LaunchConfig {
    let blocks = n.div_ceil(threads as usize).clamp(1, max_blocks as usize) as u32;
    grid((blocks, 1, 1), threads)
}

/// Launches `function` (named `name` in errors) with `params` as its only argument.
///
/// # Safety
/// Every device address in `params` must point to live memory of the size and type the kernel
/// expects for the shapes in `params` (the wrappers in [`crate::kernels`] check this).
pub unsafe fn launch<P: DeviceRepr>(
    gpu: &GpuContext,
    function: &CudaFunction,
    name: &str,
    config: LaunchConfig,
    params: P,
) -> Result<()> {
    check_config(name, &config)?;
    let stream = gpu.stream();
    let mut builder = stream.launch_builder(function);
    builder.arg(&params);
    // SAFETY: forwarded to the caller (see above); the struct outlives the call that copies it.
    unsafe { builder.launch(config) }.map_err(|e| Error::Cuda(format!("launching `{name}` {config:?}: {e}")))?;
    if sync_check_enabled() && !capturing(gpu) {
        gpu.synchronize().map_err(|e| Error::Cuda(format!("kernel `{name}` failed: {e}")))?;
    }
    Ok(())
}

/// True while the stream is being captured into a graph (synchronising would break the capture).
fn capturing(gpu: &GpuContext) -> bool {
    !matches!(gpu.stream().capture_status(), Ok(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE))
}

fn check_config(name: &str, c: &LaunchConfig) -> Result<()> {
    let (gx, gy, gz) = c.grid_dim;
    let (bx, by, bz) = c.block_dim;
    let threads = bx as u64 * by as u64 * bz as u64;
    let bad = gx == 0
        || gy == 0
        || gz == 0
        || gx > i32::MAX as u32
        || gy > 65535
        || gz > 65535
        || threads == 0
        || threads > 1024;
    if bad {
        return Err(Error::Invalid(format!("kernel `{name}`: launch shape {c:?} is out of the device limits")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_shapes_are_checked_before_the_driver_sees_them() {
        assert!(check_config("k", &grid((1, 1, 1), 256)).is_ok());
        assert!(check_config("k", &grid((0, 1, 1), 256)).is_err());
        assert!(check_config("k", &grid((1, 70000, 1), 256)).is_err());
        assert!(check_config("k", &grid((1, 1, 1), 2048)).unwrap_err().to_string().contains("`k`"));
        assert_eq!(elementwise_grid(0, 256, 1024).grid_dim.0, 1);
        assert_eq!(elementwise_grid(1 << 30, 256, 1024).grid_dim.0, 1024);
    }
}

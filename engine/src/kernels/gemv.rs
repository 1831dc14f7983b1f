//! Wrappers of kernels-cuda/gemv.cu: `y = W x` for a bf16 weight `W [n][k]` (one token), and the
//! tiled GEMM `Y = X Wᵀ` for several tokens when cuBLAS is not available. `accumulate` adds into
//! `y` instead of overwriting it (the residual add of the o and down projections).

use half::bf16;

use super::{as_u32, DevSpan, Launcher, GEMV};
use crate::cuda::{check_matmul_operands, grid};
use crate::ffi::params::{GemmParams, GemvParams};
use crate::Result;

/// Rows per block of the warp-per-row kernels (GEMV_WARPS in gemv.cu).
const GEMV_ROWS_PER_BLOCK: usize = 8;
const NAIVE_THREADS: u32 = 128;
const GEMM_TILE: usize = 64;
const GEMM_THREADS: u32 = 256;

/// Which GEMV kernel to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemvKernel {
    /// One warp per row, 16-byte loads: the engine's kernel.
    WarpPerRow,
    /// One thread per row: the baseline.
    Naive,
}

fn gemv_params<X>(
    w: DevSpan<bf16>,
    x: DevSpan<X>,
    y: DevSpan<f32>,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<GemvParams> {
    check_matmul_operands("gemv", w, x, y, (1, n, k))?;
    if k.is_multiple_of(8) {
        w.expect_aligned("gemv weight", 16)?;
        x.expect_aligned("gemv activations", 16)?;
    }
    Ok(GemvParams {
        w: w.addr(),
        x: x.addr(),
        y: y.addr(),
        n: as_u32("n", n)?,
        k: as_u32("k", k)?,
        accumulate: accumulate as u32,
        pad0: 0,
    })
}

/// `y[n] (+)= W[n][k] · x[k]` with f32 activations.
#[allow(clippy::too_many_arguments)]
pub fn gemv(
    kern: &impl Launcher,
    variant: GemvKernel,
    w: DevSpan<bf16>,
    x: DevSpan<f32>,
    y: DevSpan<f32>,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let params = gemv_params(w, x, y, n, k, accumulate)?;
    let (entry, config) = match variant {
        GemvKernel::WarpPerRow => (
            "gemv_bf16",
            grid((as_u32("gemv blocks", n.div_ceil(GEMV_ROWS_PER_BLOCK))?, 1, 1), 32 * GEMV_ROWS_PER_BLOCK as u32),
        ),
        GemvKernel::Naive => {
            ("gemv_bf16_naive", grid((as_u32("gemv blocks", n.div_ceil(NAIVE_THREADS as usize))?, 1, 1), NAIVE_THREADS))
        }
    };
    // SAFETY: every span was checked against the shapes above.
    unsafe { kern.launch(GEMV, entry, config, params) }
}

/// `y[n] (+)= W[n][k] · x[k]` with bf16 activations (warp-per-row kernel).
pub fn gemv_bf16x(
    kern: &impl Launcher,
    w: DevSpan<bf16>,
    x: DevSpan<bf16>,
    y: DevSpan<f32>,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let params = gemv_params(w, x, y, n, k, accumulate)?;
    let config = grid((as_u32("gemv blocks", n.div_ceil(GEMV_ROWS_PER_BLOCK))?, 1, 1), 32 * GEMV_ROWS_PER_BLOCK as u32);
    // SAFETY: every span was checked against the shapes above.
    unsafe { kern.launch(GEMV, "gemv_bf16_bf16x", config, params) }
}

/// `y[m][n] (+)= x[m][k] · W[n][k]ᵀ`, f32 activations, with the tiled kernel.
#[allow(clippy::too_many_arguments)]
pub fn gemm_tiled(
    kern: &impl Launcher,
    w: DevSpan<bf16>,
    x: DevSpan<f32>,
    y: DevSpan<f32>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_matmul_operands("gemm", w, x, y, (m, n, k))?;
    let params = GemmParams {
        w: w.addr(),
        x: x.addr(),
        y: y.addr(),
        m: as_u32("m", m)?,
        n: as_u32("n", n)?,
        k: as_u32("k", k)?,
        accumulate: accumulate as u32,
    };
    let blocks =
        (as_u32("gemm column tiles", n.div_ceil(GEMM_TILE))?, as_u32("gemm row tiles", m.div_ceil(GEMM_TILE))?, 1);
    // SAFETY: every span was checked against the shapes above.
    unsafe { kern.launch(GEMV, "gemm_bf16_tiled", grid(blocks, GEMM_THREADS), params) }
}

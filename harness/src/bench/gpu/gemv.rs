//! The GEMV / skinny-GEMM workload, `y[M,N] = x[M,K] · W[N,K]ᵀ` with bf16 weights.
//!
//! Implementations: for one row (decode), rooflab's warp-per-row kernel on f32 activations (what the
//! model runs), the same on bf16 activations (`rooflab-bf16x`), the one-thread-per-row naive kernel and
//! cuBLAS (bf16 in, bf16 out, f32 compute: what torch's `F.linear` calls); for several rows, rooflab's
//! tiled GEMM and cuBLAS. Activations are bf16-exact, so every implementation computes the same function.

use anyhow::{anyhow, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig};
use half::bf16;
use rooflab::cuda::{CudaSlice, DevSpan};
use rooflab::kernels::gemv::{gemm_tiled, gemv, gemv_bf16x, GemvKernel};
use rooflab::model::DType;
use rooflab::reference::{matmul_nt_weights, WeightRows};

use super::data::{self, BF16_OUTPUT_BOUND, F32_OUTPUT_BOUND};
use super::{Device, Implementation, Workload, CUBLAS};
use crate::bench::Case;

/// Most copies of one input (tiny matrices would otherwise need thousands).
const MAX_COPIES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemvShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl GemvShape {
    pub fn from_case(case: &Case) -> Result<Self> {
        let get = |key: &str| case.int(key).map(|v| v as usize).ok_or_else(|| anyhow!("gemv case has no {key}"));
        Ok(GemvShape { m: get("M")?, n: get("N")?, k: get("K")? })
    }

    pub fn label(&self) -> String {
        format!("gemv M={} N={} K={}", self.m, self.n, self.k)
    }
}

const ONE_ROW: [Implementation; 4] =
    [Implementation::rooflab("rooflab"), Implementation::rooflab("rooflab-bf16x"), Implementation::naive(), CUBLAS];
const SEVERAL_ROWS: [Implementation; 2] = [Implementation::rooflab("rooflab"), CUBLAS];

pub struct GemvWorkload<'d> {
    device: &'d Device,
    shape: GemvShape,
    implementations: Vec<Implementation>,
    copies: usize,
    /// `copies` weights `[N][K]`, `w_stride` apart.
    w: CudaSlice<bf16>,
    w_stride: usize,
    /// `copies` activations `[M][K]` in f32 and in bf16 (the same values), `x_stride` apart.
    x32: CudaSlice<f32>,
    x16: CudaSlice<bf16>,
    x_stride: usize,
    y32: CudaSlice<f32>,
    y16: CudaSlice<bf16>,
    /// Copy 0 on the host, for the check.
    host_w: Vec<bf16>,
    host_x: Vec<f32>,
    reference: Option<Vec<f32>>,
}

impl<'d> GemvWorkload<'d> {
    /// Random inputs in enough copies that weights and activations together exceed `rotation_bytes`.
    pub fn new(device: &'d Device, shape: GemvShape, rotation_bytes: u64) -> Result<Self> {
        let GemvShape { m, n, k } = shape;
        if m == 0 || n == 0 || k == 0 {
            return Err(anyhow!("{}: every size must be positive", shape.label()));
        }
        let mut implementations = if m == 1 { ONE_ROW.to_vec() } else { SEVERAL_ROWS.to_vec() };
        if device.blas().is_none() {
            implementations.retain(|i| *i != CUBLAS);
        }
        let (w_len, x_len) = (n * k, m * k);
        let copies = data::rotation_copies(2 * (w_len + x_len) as u64, rotation_bytes, MAX_COPIES);
        let (w_stride, x_stride) = (data::copy_stride(w_len, 2), data::copy_stride(x_len, 4));
        let seed = data::seed_for(&shape.label());
        // Weights ~ 1/sqrt(K) as in a trained layer; activations of RMS 1, bf16-exact.
        let host_all_w = data::random_bf16(copies * w_stride, seed, 1.0 / (k as f32).sqrt());
        let host_all_x = data::bf16_exact(&data::random_f32(copies * x_stride, seed ^ 1, 1.0));
        let stream = device.gpu.stream();
        let upload_err = |e: cudarc::driver::DriverError| anyhow!("{}: uploading inputs: {e}", shape.label());
        let w = stream.clone_htod(&host_all_w).map_err(upload_err)?;
        let x32 = stream.clone_htod(&host_all_x).map_err(upload_err)?;
        let x16 = stream.clone_htod(&data::to_bf16(&host_all_x)).map_err(upload_err)?;
        let y32 = stream.alloc_zeros::<f32>(m * n).map_err(upload_err)?;
        let y16 = stream.alloc_zeros::<bf16>(m * n).map_err(upload_err)?;
        let host_w = host_all_w[..w_len].to_vec();
        let host_x = host_all_x[..x_len].to_vec();
        Ok(GemvWorkload {
            device,
            shape,
            implementations,
            copies,
            w,
            w_stride,
            x32,
            x16,
            x_stride,
            y32,
            y16,
            host_w,
            host_x,
            reference: None,
        })
    }

    fn w_span(&self, copy: usize) -> Result<DevSpan<'_, bf16>> {
        let len = self.shape.n * self.shape.k;
        Ok(DevSpan::of(&self.w).slice(copy * self.w_stride..copy * self.w_stride + len)?)
    }

    fn x_range(&self, copy: usize) -> std::ops::Range<usize> {
        copy * self.x_stride..copy * self.x_stride + self.shape.m * self.shape.k
    }

    /// cuBLAS `y16 = x · Wᵀ` on copy `copy`: row-major Y[M][N] is column-major Yᵀ = W·Xᵀ, where the
    /// row-major W[N][K] reads as a column-major K×N matrix (so it is transposed).
    fn cublas(&mut self, copy: usize) -> Result<()> {
        let GemvShape { m, n, k } = self.shape;
        let blas = self.device.require_blas("the cuBLAS GEMV peer")?;
        let int = |v: usize| i32::try_from(v).map_err(|_| anyhow!("{}: {v} exceeds cuBLAS's i32", self.shape.label()));
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: int(n)?,
            n: int(m)?,
            k: int(k)?,
            alpha: bf16::ONE,
            lda: int(k)?,
            ldb: int(k)?,
            beta: bf16::ZERO,
            ldc: int(n)?,
        };
        let w = self.w.slice(copy * self.w_stride..copy * self.w_stride + n * k);
        let x = self.x16.slice(self.x_range(copy));
        // SAFETY: the views hold exactly the shapes in cfg; y16 holds M·N elements.
        unsafe { blas.gemm(cfg, &w, &x, &mut self.y16) }.map_err(|e| anyhow!("cuBLAS gemm {}: {e}", self.shape.label()))
    }

    fn reference(&mut self) -> &[f32] {
        let GemvShape { m, n, k } = self.shape;
        if self.reference.is_none() {
            let bytes = data::bf16_bytes(&self.host_w);
            let rows = WeightRows { dtype: DType::BF16, bytes: &bytes, n, k };
            self.reference = Some(matmul_nt_weights(&self.host_x, m, rows));
        }
        self.reference.as_deref().unwrap_or_default()
    }
}

impl Workload for GemvWorkload<'_> {
    fn label(&self) -> String {
        self.shape.label()
    }

    fn implementations(&self) -> &[Implementation] {
        &self.implementations
    }

    fn copies(&self) -> usize {
        self.copies
    }

    fn launch(&mut self, which: usize, copy: usize) -> Result<()> {
        let GemvShape { m, n, k } = self.shape;
        let kern = &self.device.kernels;
        let (w, y) = (self.w_span(copy)?, DevSpan::of(&self.y32));
        let x32 = DevSpan::of(&self.x32).slice(self.x_range(copy))?;
        let x16 = DevSpan::of(&self.x16).slice(self.x_range(copy))?;
        match (m, self.implementations[which].name) {
            (1, "rooflab") => gemv(kern, GemvKernel::WarpPerRow, w, x32, y, n, k, false)?,
            (1, "rooflab-bf16x") => gemv_bf16x(kern, w, x16, y, n, k, false)?,
            (1, "naive") => gemv(kern, GemvKernel::Naive, w, x32, y, n, k, false)?,
            (_, "rooflab") => gemm_tiled(kern, w, x32, y, m, n, k, false)?,
            _ => return self.cublas(copy),
        }
        Ok(())
    }

    fn check(&mut self, which: usize) -> Result<()> {
        let implementation = self.implementations[which];
        let what = format!("{} {}", self.label(), implementation.name);
        let len = self.shape.m * self.shape.n;
        let stream = self.device.gpu.stream().clone();
        let err = |e: cudarc::driver::DriverError| anyhow!("{what}: {e}");
        let got = if implementation == CUBLAS {
            stream.memcpy_htod(&vec![bf16::NAN; len], &mut self.y16).map_err(err)?;
            self.launch(which, 0)?;
            data::widen(&stream.clone_dtoh(&self.y16).map_err(err)?)
        } else {
            stream.memcpy_htod(&vec![f32::NAN; len], &mut self.y32).map_err(err)?;
            self.launch(which, 0)?;
            stream.clone_dtoh(&self.y32).map_err(err)?
        };
        self.device.synchronize()?;
        let bound = if implementation == CUBLAS { BF16_OUTPUT_BOUND } else { F32_OUTPUT_BOUND };
        data::check_close(&what, &got, self.reference(), bound)
    }
}

//! cuBLAS through cudarc, when libcublas can be loaded: the bf16 GEMM the GPU model uses for
//! several tokens (bf16 inputs, f32 output and accumulation, tensor cores). libcublas is not
//! always on the library path of the GPU machine, so loading it is a check with a reason, never a
//! panic; the caller falls back to the tiled GEMM and says so.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::cublas::{result as blas_result, CudaBlas};
use half::bf16;

use super::{check_matmul_operands, CudaResultExt, DevSpan, GpuContext};
use crate::{Error, Result};

/// A cuBLAS handle bound to a context's stream.
pub struct Blas {
    handle: CudaBlas,
}

impl Blas {
    /// cuBLAS on `gpu`'s stream, or why it cannot be used (library missing or unusable).
    pub fn try_new(gpu: &GpuContext) -> std::result::Result<Self, String> {
        // SAFETY: only tries to dlopen libcublas; nothing is called.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err("libcublas is not on the library path".into());
        }
        match catch_unwind(AssertUnwindSafe(|| CudaBlas::new(gpu.stream().clone()))) {
            Ok(Ok(handle)) => Ok(Blas { handle }),
            Ok(Err(e)) => Err(format!("cublasCreate failed: {e}")),
            Err(_) => Err("libcublas could not be used (missing symbols?)".into()),
        }
    }

    /// `y[m][n] (+)= x[m][k] · w[n][k]ᵀ` with bf16 `x` and `w` (row-major), f32 `y`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16(
        &self,
        w: DevSpan<bf16>,
        x: DevSpan<bf16>,
        y: DevSpan<f32>,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) -> Result<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        check_matmul_operands("cuBLAS gemm", w, x, y, (m, n, k))?;
        let int = |what: &str, v: usize| {
            i32::try_from(v).map_err(|_| Error::Invalid(format!("cuBLAS {what} = {v} exceeds i32")))
        };
        let (mi, ni, ki) = (int("m", m)?, int("n", n)?, int("k", k)?);
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0f32 });
        // Row-major Y[m][n] is column-major Yᵀ [n x m] = W·Xᵀ where the row-major weight W[n][k]
        // is a column-major k x n matrix (so it is transposed) and X[m][k] a column-major k x m one.
        // SAFETY: the spans were checked to hold the shapes; the handle's stream is the context's.
        unsafe {
            blas_result::gemm_ex(
                *self.handle.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                &alpha as *const f32 as *const _,
                w.addr() as *const _,
                cudaDataType_t::CUDA_R_16BF,
                ki,
                x.addr() as *const _,
                cudaDataType_t::CUDA_R_16BF,
                ki,
                &beta as *const f32 as *const _,
                y.addr() as *mut _,
                cudaDataType_t::CUDA_R_32F,
                ni,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .cuda(&format!("cuBLAS bf16 gemm m={m} n={n} k={k}"))
    }
}

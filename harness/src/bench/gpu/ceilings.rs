//! The two roofs every number of a run is held against, measured in the same run on the same GPU:
//! memory bandwidth from a large device-to-device copy (bytes read + written over the median event
//! time) and the bf16 tensor-core rate from a cuBLAS bf16 GEMM of 8192³ (f32 compute), both warmed up,
//! both on random data (a matrix product of zeros has been seen running 13% faster).

use anyhow::{anyhow, bail, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use half::bf16;
use rooflab::cuda::CudaSlice;

use super::data::{self, BF16_OUTPUT_BOUND};
use super::timer::{budget_seconds, time_launches};
use super::Device;
use crate::bench::{Plan, TimeStats};
use crate::report::model::Ceilings;

/// Bytes copied by the bandwidth probe: far beyond L2, so the copy streams from and to HBM.
pub const COPY_BYTES: usize = 2 << 30;
/// The probe shrinks to fit the free memory, but never below this.
pub const MIN_COPY_BYTES: usize = 1 << 30;
/// The GEMM of the tensor-core ceiling is `GEMM_SIZE`³.
pub const GEMM_SIZE: usize = 8192;

/// Measures both ceilings. Needs cuBLAS: without it, a one-line error saying which library names were
/// tried and how to make libcublas load.
pub fn measure(device: &Device, plan: &Plan, quick: bool) -> Result<Ceilings> {
    let blas = device.require_blas(&format!("the bf16 tensor-core ceiling (a cuBLAS GEMM of {GEMM_SIZE}³)"))?;
    let budget = budget_seconds(quick);
    let (free, _) = device.gpu.memory_info()?;
    let copy_bytes = copy_size(free)?;
    let (bandwidth_gbps, copies) = copy_bandwidth(device, copy_bytes, plan, budget)?;
    let (bf16_tflops, gemms) = gemm_rate(device, blas, GEMM_SIZE, plan, budget)?;
    Ok(Ceilings {
        bandwidth_gbps,
        bandwidth_method: format!(
            "{:.2} GiB device-to-device copy (bytes read + written), median of {copies} CUDA-event timings \
             after warm-up",
            copy_bytes as f64 / (1u64 << 30) as f64
        ),
        bf16_tflops,
        bf16_method: format!(
            "cuBLAS bf16 GEMM {GEMM_SIZE}x{GEMM_SIZE}x{GEMM_SIZE} (bf16 in and out, f32 compute) through cudarc, \
             median of {gemms} CUDA-event timings after warm-up"
        ),
    })
}

/// [`COPY_BYTES`], or less when the source and destination would not leave a quarter of the free
/// memory; an error below [`MIN_COPY_BYTES`] (too small a copy would partly run in L2).
pub fn copy_size(free_bytes: usize) -> Result<usize> {
    let fits = (free_bytes / 3) & !((1 << 20) - 1);
    let bytes = COPY_BYTES.min(fits);
    if bytes < MIN_COPY_BYTES {
        bail!(
            "only {:.1} GiB of GPU memory is free: the bandwidth probe needs two buffers of at least 1 GiB",
            free_bytes as f64 / (1u64 << 30) as f64
        );
    }
    Ok(bytes)
}

/// (GB/s, timings) of a `bytes` device-to-device copy: 2·bytes / median time.
fn copy_bandwidth(device: &Device, bytes: usize, plan: &Plan, budget: f64) -> Result<(f64, usize)> {
    let stream = device.gpu.stream();
    let err = |e: cudarc::driver::DriverError| anyhow!("bandwidth probe ({bytes} bytes): {e}");
    let src = stream.clone_htod(&data::random_bf16(bytes / 2, 0xC0FE, 1.0)).map_err(err)?;
    let mut dst = stream.alloc_zeros::<bf16>(bytes / 2).map_err(err)?;
    let times = time_launches(device, plan, budget, |_| stream.memcpy_dtod(&src, &mut dst).map_err(err))?;
    // The copy must have happened: compare a few elements.
    let (head, tail) =
        (stream.clone_dtoh(&dst.slice(0..64)).map_err(err)?, stream.clone_dtoh(&src.slice(0..64)).map_err(err)?);
    device.synchronize()?;
    if head != tail {
        bail!("bandwidth probe: the device-to-device copy did not copy");
    }
    let median_s = TimeStats::from_times(&times)?.median_us * 1e-6;
    Ok((2.0 * bytes as f64 / median_s / 1e9, times.len()))
}

/// (TFLOP/s, timings) of a cuBLAS bf16 GEMM `C = A·B` of `n`³, checked on sampled elements first.
fn gemm_rate(device: &Device, blas: &CudaBlas, n: usize, plan: &Plan, budget: f64) -> Result<(f64, usize)> {
    let stream = device.gpu.stream();
    let err = |e: cudarc::driver::DriverError| anyhow!("GEMM ceiling ({n}³): {e}");
    let host_a = data::random_bf16(n * n, 0xA, 1.0);
    let host_b = data::random_bf16(n * n, 0xB, 1.0);
    let a = stream.clone_htod(&host_a).map_err(err)?;
    let b = stream.clone_htod(&host_b).map_err(err)?;
    let mut c = stream.alloc_zeros::<bf16>(n * n).map_err(err)?;
    let ni = i32::try_from(n).map_err(|_| anyhow!("GEMM size {n} exceeds i32"))?;
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: ni,
        n: ni,
        k: ni,
        alpha: bf16::ONE,
        lda: ni,
        ldb: ni,
        beta: bf16::ZERO,
        ldc: ni,
    };
    // SAFETY: a, b and c each hold n·n elements, as cfg says.
    let gemm = |c: &mut CudaSlice<bf16>| {
        unsafe { blas.gemm(cfg, &a, &b, c) }.map_err(|e| anyhow!("cuBLAS bf16 GEMM {n}³: {e}"))
    };
    gemm(&mut c)?;
    let got = data::widen(&stream.clone_dtoh(&c).map_err(err)?);
    device.synchronize()?;
    // The mock driver's launch-only mode computes nothing (a rehearsal).
    if !device.gpu.mock_skips_kernels() {
        check_sampled_product(&got, &host_a, &host_b, n)?;
    }
    let times = time_launches(device, plan, budget, |_| gemm(&mut c))?;
    let median_s = TimeStats::from_times(&times)?.median_us * 1e-6;
    Ok((2.0 * (n as f64).powi(3) / median_s / 1e12, times.len()))
}

/// Compares 64 elements of the column-major product `c = a·b` with f64 dot products.
fn check_sampled_product(c: &[f32], a: &[bf16], b: &[bf16], n: usize) -> Result<()> {
    let samples: Vec<(usize, usize)> = (0..64).map(|s| ((s * 7919 + 13) % n, (s * 104_729 + 7) % n)).collect();
    let want: Vec<f32> = samples
        .iter()
        .map(|&(i, j)| (0..n).map(|l| a[i + l * n].to_f64() * b[l + j * n].to_f64()).sum::<f64>() as f32)
        .collect();
    let got: Vec<f32> = samples.iter().map(|&(i, j)| c[i + j * n]).collect();
    data::check_close(&format!("cuBLAS bf16 GEMM {n}³ (the ceiling)"), &got, &want, BF16_OUTPUT_BOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_size_fits_the_free_memory() {
        assert_eq!(copy_size(80 << 30).unwrap(), COPY_BYTES);
        assert_eq!(copy_size(4 << 30).unwrap(), ((4usize << 30) / 3) & !((1 << 20) - 1));
        let e = copy_size(2 << 30).unwrap_err().to_string();
        assert!(e.contains("2.0 GiB") && e.contains("1 GiB"), "{e}");
    }

    #[test]
    fn sampled_product_check_catches_a_wrong_product() {
        let n = 8;
        let a = data::random_bf16(n * n, 1, 1.0);
        let b = data::random_bf16(n * n, 2, 1.0);
        let mut c = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                c[i + j * n] = (0..n).map(|l| a[i + l * n].to_f32() * b[l + j * n].to_f32()).sum();
            }
        }
        assert!(check_sampled_product(&c, &a, &b, n).is_ok());
        // The row-major reading of the same numbers is the transposed product: wrong.
        let transposed: Vec<f32> = (0..n * n).map(|x| c[(x % n) * n + x / n]).collect();
        assert!(check_sampled_product(&transposed, &a, &b, n).is_err());
    }
}

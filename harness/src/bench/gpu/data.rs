//! Inputs and checks every workload shares: random data (never zeros: zeros hide unwritten outputs and
//! can run faster than real data), how many input copies a rotation needs, and the relative-error
//! check against the CPU reference that stands between a kernel and a number in the report.

use anyhow::{bail, Result};
use half::bf16;
use rayon::prelude::*;
use rooflab::sample::uniform_values;

/// `len` values uniform on ±`scale`·√3 (standard deviation `scale`, never 0), from `seed`, made in
/// parallel (the engine's generator): the inputs of one case can be gigabytes. The same (len, seed,
/// scale) gives the same values.
pub fn random_f32(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    uniform_values(len, seed, 0.0, scale, |v| v)
}

/// [`random_f32`] rounded to bf16 (made directly, without an f32 copy of a multi-gigabyte input).
pub fn random_bf16(len: usize, seed: u64, scale: f32) -> Vec<bf16> {
    uniform_values(len, seed, 0.0, scale, bf16::from_f32)
}

/// Round to nearest even, in parallel.
pub fn to_bf16(values: &[f32]) -> Vec<bf16> {
    values.par_iter().map(|&v| bf16::from_f32(v)).collect()
}

/// Widen to f32, in parallel.
pub fn widen(values: &[bf16]) -> Vec<f32> {
    values.par_iter().map(|v| v.to_f32()).collect()
}

/// `values` rounded to bf16 and back: an f32 input that a bf16 path sees unchanged.
pub fn bf16_exact(values: &[f32]) -> Vec<f32> {
    values.par_iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

/// Little-endian bytes of bf16 values (what the CPU reference's matmul reads as a bf16 weight).
pub fn bf16_bytes(values: &[bf16]) -> Vec<u8> {
    values.par_iter().flat_map_iter(|v| v.to_le_bytes()).collect()
}

/// A seed derived from a label (a case's shape string), so every case draws its own inputs and a rerun
/// draws the same ones.
pub fn seed_for(label: &str) -> u64 {
    // FNV-1a.
    label.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Copies of an input of `bytes_per_copy` bytes to rotate through so that the working set is at least
/// `rotation_bytes`: every launch then reads memory the previous launches pushed out of L2. Capped at
/// `max_copies`, for inputs so small that a model would keep them in cache anyway.
pub fn rotation_copies(bytes_per_copy: u64, rotation_bytes: u64, max_copies: usize) -> usize {
    let needed = rotation_bytes.div_ceil(bytes_per_copy.max(1)).max(1);
    (needed as usize).clamp(1, max_copies.max(1))
}

/// Elements between the starts of two copies of an input of `len` elements: a whole number of
/// 256-byte blocks, so every copy is as aligned as a fresh allocation for the vector loads.
pub fn copy_stride(len: usize, element_bytes: usize) -> usize {
    let per_block = (256 / element_bytes.max(1)).max(1);
    len.div_ceil(per_block).max(1) * per_block
}

/// ‖got − want‖ / ‖want‖, in f64; infinity when `got` has a non-finite element (a NaN poison that was
/// never overwritten, an overflow) or the lengths differ.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let (diff, norm) = got
        .iter()
        .zip(want)
        .fold((0.0f64, 0.0f64), |(d, n), (&g, &w)| (d + (g as f64 - w as f64).powi(2), n + (w as f64).powi(2)));
    if norm == 0.0 {
        return if diff == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (diff / norm).sqrt()
}

/// Fails, naming `what` (kernel, implementation and shape), unless `got` is within `bound` relative
/// error of the CPU reference `want`.
pub fn check_close(what: &str, got: &[f32], want: &[f32], bound: f64) -> Result<()> {
    let error = relative_error(got, want);
    // NaN compares false with everything: only a finite error within the bound passes.
    if error.is_nan() || error > bound {
        let unwritten = got.iter().filter(|v| !v.is_finite()).count();
        let detail = if unwritten > 0 {
            format!("{unwritten} of {} outputs not finite (unwritten or overflowed)", got.len())
        } else {
            format!("relative error {error:.2e} exceeds {bound:.0e}")
        };
        bail!("{what}: output does not match the CPU reference ({detail}); not timing a wrong kernel");
    }
    Ok(())
}

/// Relative-error bound for an output written in f32 from bf16 inputs with f32 accumulation (the CPU
/// reference sees the same rounded inputs, so only the order of additions differs; a wrong index gives
/// errors near 1).
pub const F32_OUTPUT_BOUND: f64 = 5e-3;
/// Bound for an output rounded to bf16 (about 2⁻⁹ relative per element on top of the above).
pub const BF16_OUTPUT_BOUND: f64 = 1e-2;

#[cfg(test)]
mod tests {
    use super::*;
    use rooflab::sample::UNIFORM_CHUNK as CHUNK;

    #[test]
    fn random_data_is_reproducible_spread_and_never_zero() {
        let a = random_f32(300_000, 5, 2.0);
        assert_eq!(a, random_f32(300_000, 5, 2.0));
        assert_ne!(a, random_f32(300_000, 6, 2.0));
        assert!(a.iter().all(|&v| v != 0.0 && v.abs() <= 2.0 * 3f32.sqrt()));
        let rms = (a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!((rms - 2.0).abs() < 0.01, "rms {rms}");
        assert_ne!(a[..100], a[CHUNK..CHUNK + 100]);
        let b = random_bf16(1000, 5, 2.0);
        assert!(b.iter().zip(&a).all(|(x, y)| (x.to_f32() - y).abs() <= y.abs() / 128.0));
        assert_eq!(widen(&b), bf16_exact(&a[..1000]));
        assert_eq!(bf16_bytes(&b[..1]), b[0].to_le_bytes().to_vec());
    }

    #[test]
    fn rotation_and_strides() {
        assert_eq!(rotation_copies(32 << 20, 128 << 20, 1024), 4);
        assert_eq!(rotation_copies(33 << 20, 128 << 20, 1024), 4);
        assert_eq!(rotation_copies(1 << 30, 128 << 20, 1024), 1);
        assert_eq!(rotation_copies(16, 128 << 20, 256), 256);
        assert_eq!(rotation_copies(0, 128, 8), 8);
        assert_eq!(copy_stride(4096 * 4096, 2), 4096 * 4096);
        assert_eq!(copy_stride(1000, 4), 1024);
        assert_eq!(copy_stride(1, 2), 128);
        assert_ne!(seed_for("M=1 N=4096 K=4096"), seed_for("M=1 N=4096 K=4097"));
    }

    #[test]
    fn relative_error_catches_nan_and_wrong_values() {
        let want = [1.0f32, -2.0, 3.0];
        assert_eq!(relative_error(&want, &want), 0.0);
        assert!((relative_error(&[1.0, -2.0, 3.1], &want) - 0.1 / 14f64.sqrt()).abs() < 1e-6);
        assert_eq!(relative_error(&[1.0, f32::NAN, 3.0], &want), f64::INFINITY);
        assert_eq!(relative_error(&[1.0], &want), f64::INFINITY);
        assert!(check_close("k", &want, &want, 1e-6).is_ok());
        let e = check_close("gemv rooflab [M=1 N=7 K=9]", &[1.0, 2.0, 3.0], &want, 1e-3).unwrap_err().to_string();
        assert!(e.contains("gemv rooflab [M=1 N=7 K=9]") && e.contains("relative error"), "{e}");
        let e = check_close("k", &[f32::NAN, 2.0, 3.0], &want, 1e-3).unwrap_err().to_string();
        assert!(e.contains("1 of 3 outputs not finite"), "{e}");
    }
}

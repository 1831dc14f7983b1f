//! Helpers of the kernel tests: seeded random data and closeness checks that name the worst element,
//! plus the device they run on (`crate::device`: the GPU in tests/gpu.rs, the CPU emulator in
//! tests/emu.rs), which uploads, NaN-poisons and downloads buffers the same way on both.

use half::bf16;
use rooflab::sample::Rng;

pub use crate::device::{gpu, span, DevBuf, Gpu};

/// `n` normal values times `scale`.
pub fn randn(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * rng.normal()).collect()
}

/// Values rounded to bf16 (what a bf16 buffer holds), back as f32.
pub fn bf16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

pub fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// Root mean square of `v` (the scale the tolerances are relative to).
pub fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt() as f32
}

/// Every `got[i]` finite and within `rtol * (|want[i]| + rms(want))` of `want[i]`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = rms(want);
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g} (not written, or overflow); want {w}");
        let excess = (g - w).abs() / (rtol * (w.abs() + scale)).max(f32::MIN_POSITIVE);
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let i = worst.0;
    assert!(worst.1 <= 1.0, "{what}: element {i} is {} but want {} (rtol {rtol}, rms {scale})", got[i], want[i]);
}

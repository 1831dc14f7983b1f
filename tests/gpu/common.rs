//! Helpers of the GPU tests: a context with the kernels loaded, seeded random data, NaN-poisoned
//! device buffers, downloads and closeness checks that name the worst element.

use half::bf16;
use rooflab::cuda::{CudaSlice, DevSpan, DeviceRepr, GpuContext};
use rooflab::kernels::Kernels;
use rooflab::sample::Rng;

pub struct Gpu {
    pub ctx: GpuContext,
    pub kernels: Kernels,
}

/// GPU 0 with every kernel loaded; panics (these tests are only run where a GPU is expected).
pub fn gpu() -> Gpu {
    let ctx = GpuContext::new(0).unwrap_or_else(|e| panic!("this test needs a CUDA GPU: {e}"));
    let kernels = Kernels::load(&ctx).unwrap_or_else(|e| panic!("loading the kernels: {e}"));
    Gpu { ctx, kernels }
}

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

impl Gpu {
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> CudaSlice<T> {
        self.ctx.stream().clone_htod(host).expect("upload")
    }

    /// A device buffer of `len` NaNs.
    pub fn poisoned(&self, len: usize) -> CudaSlice<f32> {
        self.upload(&vec![f32::NAN; len.max(1)])
    }

    pub fn poisoned_bf16(&self, len: usize) -> CudaSlice<bf16> {
        self.upload(&vec![bf16::NAN; len.max(1)])
    }

    /// The buffer's contents after all queued work (checks for asynchronous errors too).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, buf: &CudaSlice<T>) -> Vec<T> {
        let host = self.ctx.stream().clone_dtoh(buf).expect("download");
        self.ctx.synchronize().expect("synchronize after download");
        host
    }
}

pub fn span<T>(buf: &CudaSlice<T>) -> DevSpan<'_, T> {
    DevSpan::of(buf)
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

/// max |a - b| / max |b|: the relative logit error the model tests bound.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

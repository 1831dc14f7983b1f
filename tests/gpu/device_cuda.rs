//! The device of tests/gpu.rs: GPU 0 with every kernel loaded.

use half::bf16;
use rooflab::cuda::{CudaSlice, DevSpan, DeviceRepr, GpuContext};
use rooflab::kernels::Kernels;

/// A buffer the kernels read and write.
pub type DevBuf<T> = CudaSlice<T>;

pub struct Gpu {
    pub ctx: GpuContext,
    pub kernels: Kernels,
}

/// GPU 0 with every kernel loaded, the layout probes too; panics (these tests are only run where a
/// GPU is expected).
pub fn gpu() -> Gpu {
    let ctx = GpuContext::new(0).unwrap_or_else(|e| panic!("this test needs a CUDA GPU: {e}"));
    let kernels = Kernels::load_all(&ctx).unwrap_or_else(|e| panic!("loading the kernels: {e}"));
    Gpu { ctx, kernels }
}

impl Gpu {
    /// Whether the tests shrink their largest shapes, as on the emulator: only when
    /// `ROOFLAB_TEST_SMALL_SHAPES=1`, which scripts/gpu-run sets under compute-sanitizer (its checks run
    /// the kernels 10 to 1000 times slower) and scripts/mock-gpu's rehearsal (kernels emulated on the
    /// CPU). Otherwise every shape runs at full size here.
    pub fn small_shapes() -> bool {
        std::env::var_os("ROOFLAB_TEST_SMALL_SHAPES").is_some_and(|v| v == "1")
    }

    pub fn sm_count(&self) -> u32 {
        self.ctx.sm_count()
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> DevBuf<T> {
        self.ctx.stream().clone_htod(host).expect("upload")
    }

    /// A device buffer of `len` NaNs.
    pub fn poisoned(&self, len: usize) -> DevBuf<f32> {
        self.upload(&vec![f32::NAN; len.max(1)])
    }

    pub fn poisoned_bf16(&self, len: usize) -> DevBuf<bf16> {
        self.upload(&vec![bf16::NAN; len.max(1)])
    }

    /// The buffer's contents after all queued work (checks for asynchronous errors too).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, buf: &DevBuf<T>) -> Vec<T> {
        let host = self.ctx.stream().clone_dtoh(buf).expect("download");
        self.ctx.synchronize().expect("synchronize after download");
        host
    }
}

pub fn span<T>(buf: &DevBuf<T>) -> DevSpan<'_, T> {
    DevSpan::of(buf)
}

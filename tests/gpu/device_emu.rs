//! The device of tests/emu.rs: the CPU emulator of the kernel sources (rooflab::emu), on host
//! buffers that fault at once when a kernel runs off their ends.

use half::bf16;
use rooflab::cuda::DevSpan;
use rooflab::emu::{Emulator, HostBuffer};

/// A buffer the kernels read and write.
pub type DevBuf<T> = HostBuffer<T>;

pub struct Gpu {
    pub kernels: Emulator,
}

pub fn gpu() -> Gpu {
    Gpu { kernels: Emulator::new() }
}

/// The emulator with each block's threads run last to first.
pub fn gpu_reversed() -> Gpu {
    Gpu { kernels: Emulator::reversed() }
}

/// The emulator with warp 0 (a warp-specialised kernel's producer) run only when no other thread can.
pub fn gpu_starving_warp0() -> Gpu {
    Gpu { kernels: Emulator::starving_warp0() }
}

/// The emulator with each block's threads in a fresh random order every round, from `seed`.
pub fn gpu_shuffled(seed: u64) -> Gpu {
    Gpu { kernels: Emulator::shuffled(seed) }
}

impl Gpu {
    /// The emulator runs every CUDA thread as a fiber: tests shrink their largest shapes here (and say so).
    pub fn small_shapes() -> bool {
        true
    }

    /// An H100's SM count, so split heuristics choose what they would there.
    pub fn sm_count(&self) -> u32 {
        132
    }

    pub fn upload<T: Copy>(&self, host: &[T]) -> DevBuf<T> {
        HostBuffer::from_slice(host)
    }

    /// A buffer of `len` NaNs.
    pub fn poisoned(&self, len: usize) -> DevBuf<f32> {
        self.upload(&vec![f32::NAN; len.max(1)])
    }

    pub fn poisoned_bf16(&self, len: usize) -> DevBuf<bf16> {
        self.upload(&vec![bf16::NAN; len.max(1)])
    }

    /// The buffer's contents (emulated launches finish before they return).
    pub fn download<T: Copy>(&self, buf: &DevBuf<T>) -> Vec<T> {
        buf.to_vec()
    }
}

pub fn span<T: Copy>(buf: &DevBuf<T>) -> DevSpan<'_, T> {
    buf.span()
}

//! The kernel tests of tests/gpu.rs (layers, gemv, decode and prefill attention, every version), run
//! on the CPU emulator of the same kernel sources (rooflab::emu, kernels-cuda/emu/): every CUDA thread
//! a fiber, the tensor-core and async-copy instructions modelled from the PTX ISA, host buffers that
//! fault when a kernel runs off their ends. This is what CI can say about the kernels without a GPU:
//! their index algebra, masks, pipelines and launch configurations, not their speed, and not where
//! the hardware differs from the ISA text. The largest shapes are shrunk here (`Gpu::EMULATED`).

#[path = "gpu/attention.rs"]
mod attention;
#[path = "gpu/common.rs"]
mod common;
#[path = "gpu/device_emu.rs"]
mod device;
#[path = "gpu/gemv.rs"]
mod gemv;
#[path = "gpu/layers.rs"]
mod layers;

/// The shared kernel tests (tests/gpu/kernel_tests.rs), on the emulator.
macro_rules! kernel_tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $module::$name(&common::gpu())
            }
        )*
    };
}

include!("gpu/kernel_tests.rs");

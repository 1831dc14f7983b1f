//! Every GPU test, in one binary (so the bundle for the GPU machine stays small). Tests that need
//! a GPU are `#[ignore = "needs a CUDA GPU"]`; run them there with `--include-ignored`. The few
//! that are not ignored check what a machine WITHOUT a GPU must see (a clean `Error::NoGpu`, shape
//! refusals before any GPU work) and pass on both kinds of machine.
//!
//! The kernel tests (layers, gemv, attention, the layout probes) are shared with tests/emu.rs, which
//! runs the same bodies on the CPU emulator of the kernel sources, so CI checks the kernels' logic
//! without a GPU.
//!
//! Kernel tests compare with the CPU reference (`rooflab::reference`) on random inputs at several
//! shapes, awkward ones included; outputs are poisoned with NaN before each launch and checked to
//! be fully written (and cache rows that must stay untouched are checked to still be NaN).

#[path = "gpu/attention.rs"]
mod attention;
#[path = "gpu/common.rs"]
mod common;
#[path = "gpu/cuda.rs"]
mod cuda;
#[path = "gpu/decode_fused.rs"]
mod decode_fused;
#[path = "gpu/device_cuda.rs"]
mod device;
#[path = "gpu/gemv.rs"]
mod gemv;
#[path = "gpu/layers.rs"]
mod layers;
#[path = "gpu/layout_probe.rs"]
mod layout_probe;
#[path = "gpu/model.rs"]
mod model;
#[path = "gpu/model_check.rs"]
mod model_check;

/// The shared kernel tests (tests/gpu/kernel_tests.rs), on GPU 0.
macro_rules! kernel_tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            #[ignore = "needs a CUDA GPU"]
            fn $name() {
                $module::$name(&common::gpu())
            }
        )*
    };
}

include!("gpu/kernel_tests.rs");

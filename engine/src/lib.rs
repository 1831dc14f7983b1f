//! rooflab engine: runs Llama-style checkpoints on hand-written CUDA kernels (loaded as PTX) and on
//! a CPU reference that serves as the oracle for every kernel.
//!
//! Layout (one module per concern): [`model`] loads checkpoints and runs the forward pass,
//! [`reference`] holds the CPU version of every kernel, [`cuda`] and [`kernels`] drive the GPU,
//! [`sample`] turns logits into tokens and [`generate`] runs the prefill/decode loop. With the `emu`
//! feature, `emu` runs the same kernel sources on the CPU (kernels-cuda/emu/) for tests without a GPU.

pub mod cuda;
#[cfg(feature = "emu")]
pub mod emu;
pub mod error;
pub mod ffi;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod reference;
pub mod sample;
pub mod tokenizer;

pub use error::{Error, Result};

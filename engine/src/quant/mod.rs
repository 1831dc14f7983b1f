//! Weight formats below 16 bits and the code that turns them back into floats.
//!
//! [`ggml`] holds the block formats GGUF files use (Q8_0, Q4_0, Q4_1, the K-quants, ...): their
//! byte layouts, a reference dequantiser for each (the oracle for fused-dequant kernels and the
//! GGUF importer) and reference quantisers for the formats the GPU kernels read.

pub mod ggml;

pub use ggml::GgmlType;

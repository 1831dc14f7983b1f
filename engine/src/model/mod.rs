//! Llama-style models: configuration, checkpoint loading (safetensors, GGUF import) and the
//! forward pass on the CPU reference ([`cpu`]) and on the GPU ([`gpu`]).

pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod gguf;
pub mod gpu;
pub mod import;
pub mod random;
pub mod weights;

pub use checkpoint::{Checkpoint, DType, Tensor};
pub use config::LlamaConfig;

use crate::Result;

/// Which positions a forward pass returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's row (what generation needs).
    Last,
    /// One row per input token (what the logit comparison tests need).
    All,
}

/// A causal language model with a KV cache, run on some device.
pub trait CausalLm {
    fn config(&self) -> &LlamaConfig;

    /// Positions the KV cache can hold.
    fn context_len(&self) -> usize;

    /// Runs `tokens` at positions `start .. start + tokens.len()`, appending their keys and values
    /// to the cache (which must already hold positions `0 .. start` from earlier calls), and
    /// returns `vocab_size` logits per requested row, row-major.
    fn forward(&mut self, tokens: &[u32], start: usize, logits: Logits) -> Result<Vec<f32>>;

    /// Short description of where it runs ("cpu (2 threads)", "NVIDIA H100 80GB HBM3").
    fn device_name(&self) -> String;

    /// Bytes of weights one decode step reads (for the bandwidth floor).
    fn weight_bytes(&self) -> usize;

    /// Measured device memory bandwidth in bytes/s, where the backend knows it.
    fn memory_bandwidth(&self) -> Option<f64> {
        None
    }
}

/// Checks that `start + n` positions fit in the context; the error names both numbers.
pub fn check_context(start: usize, n: usize, context: usize) -> Result<()> {
    if start + n > context {
        return Err(crate::Error::ContextOverflow { prompt: start + n, new: 0, context });
    }
    Ok(())
}

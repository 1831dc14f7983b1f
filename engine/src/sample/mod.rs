//! Turning logits into tokens: logits processors (repetition penalty, temperature, top-k, top-p,
//! min-p) and a seeded sampler, reproducible across runs and machines.

mod rng;
mod sampler;

pub use rng::{uniform_values, Rng, UNIFORM_CHUNK};
pub use sampler::{Sampler, SamplingParams};

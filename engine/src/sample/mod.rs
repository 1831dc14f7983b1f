//! Turning logits into tokens: logits processors (repetition penalty, temperature, top-k, top-p,
//! min-p) and a seeded sampler, reproducible across runs and machines.

mod ranking;
mod rng;
mod sampler;
mod scan;

pub use rng::{uniform_at, uniform_half_width, uniform_values, Rng, UNIFORM_CHUNK};
pub use sampler::{sample_by_full_sort, Sampler, SamplingParams};
pub use scan::argmax;

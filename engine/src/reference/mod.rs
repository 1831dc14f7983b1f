//! CPU reference of every kernel: plain f32 loops (f64 where a sum is long), written to be obviously
//! right rather than fast. Tests compare each GPU kernel with these on random inputs; the CPU model
//! ([`crate::model::cpu`]) is built from them, with only the matrix product made quick enough to
//! decode SmolLM2 interactively.

mod attention;
mod layers;
mod matmul;

pub use attention::{attention, AttnShape};
pub use layers::{add_in_place, embedding, rmsnorm_rows, rope_rows, silu_mul};
pub use matmul::{dot, matmul_nt, matmul_nt_weights, WeightRows};

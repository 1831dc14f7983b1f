//! `y = x · Wᵀ` for activations `x [m, k]` and a weight matrix `W [n, k]` stored row-major, the
//! layout of every Llama projection. The weight may be f32, f16 or bf16 bytes straight from a
//! memory-mapped checkpoint: each row is widened to f32 once and dotted with all `m` activation
//! rows, so decode (m = 1) reads the weights exactly once, as the GPU GEMV does.

use rayon::prelude::*;

use crate::model::checkpoint::{widen_into, DType};

/// A weight matrix `[n, k]` as little-endian bytes of `dtype`.
#[derive(Clone, Copy)]
pub struct WeightRows<'a> {
    pub dtype: DType,
    pub bytes: &'a [u8],
    pub n: usize,
    pub k: usize,
}

/// f32 dot product with eight independent accumulators, so the compiler can vectorise it and the
/// rounding does not depend on one long serial chain.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `x [m, k] · w [n, k]ᵀ -> [m, n]` for an f32 weight.
pub fn matmul_nt(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    matmul_nt_weights(x, m, WeightRows { dtype: DType::F32, bytes: &bytes, n, k })
}

/// `x [m, k] · Wᵀ -> [m, n]`, parallel over blocks of weight rows.
pub fn matmul_nt_weights(x: &[f32], m: usize, w: WeightRows) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "activation shape");
    assert_eq!(w.bytes.len(), n * k * w.dtype.size(), "weight shape");
    const ROWS_PER_TASK: usize = 64;
    let row_bytes = k * w.dtype.size();
    // y transposed ([n, m]) so each task writes one contiguous block.
    let mut yt = vec![0.0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(block, out)| {
        let mut row = vec![0.0f32; k];
        for (r, out_row) in out.chunks_exact_mut(m).enumerate() {
            let j = block * ROWS_PER_TASK + r;
            widen_into(w.dtype, &w.bytes[j * row_bytes..(j + 1) * row_bytes], &mut row);
            for (i, o) in out_row.iter_mut().enumerate() {
                *o = dot(&x[i * k..(i + 1) * k], &row);
            }
        }
    });
    if m == 1 {
        return yt;
    }
    let mut y = vec![0.0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            y[i * n + j] = yt[j * m + i];
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_triple_loop_on_awkward_shapes() {
        for &(m, n, k) in &[(1, 1, 1), (3, 130, 17), (5, 64, 72)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 31) as f32 / 15.0 - 1.0).collect();
            let y = matmul_nt(&x, m, &w, n, k);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
                    assert!((y[i * n + j] as f64 - want).abs() < 1e-4, "({m},{n},{k}) [{i},{j}]");
                }
            }
        }
    }
}

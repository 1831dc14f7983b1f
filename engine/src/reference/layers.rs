//! Element-wise and per-row layers: embedding lookup, RMSNorm, rotary embedding, SwiGLU, residual.

/// Rows `tokens` of a `[vocab, hidden]` table.
pub fn embedding(table: &[f32], hidden: usize, tokens: &[u32]) -> Vec<f32> {
    tokens.iter().flat_map(|&t| &table[t as usize * hidden..(t as usize + 1) * hidden]).copied().collect()
}

/// `x / rms(x) * weight` for each row of `x` (`[n, weight.len()]`); the mean of squares is taken
/// in f64 and the product follows HF's order (normalise in f32, then scale by the weight).
pub fn rmsnorm_rows(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let h = weight.len();
    let mut out = vec![0.0; x.len()];
    for (row, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let mean_sq = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / h as f64;
        let inv = 1.0 / ((mean_sq as f32) + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *o = w * (v * inv);
        }
    }
    out
}

/// Rotates each head of each row of `x` (`[n, n_heads * head_dim]`) by its position, pairing
/// dimension `i` with `i + head_dim / 2` (HF's rotate-half). `cos`/`sin` are `[position][head_dim/2]`.
pub fn rope_rows(x: &mut [f32], n_heads: usize, head_dim: usize, positions: &[usize], cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for (row, &pos) in x.chunks_exact_mut(n_heads * head_dim).zip(positions) {
        let (c, s) = (&cos[pos * half..(pos + 1) * half], &sin[pos * half..(pos + 1) * half]);
        for head in row.chunks_exact_mut(head_dim) {
            let (lo, hi) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (lo[i], hi[i]);
                lo[i] = a * c[i] - b * s[i];
                hi[i] = b * c[i] + a * s[i];
            }
        }
    }
}

/// `silu(gate) * up`, element-wise.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_of_constant_row_is_the_weight() {
        let out = rmsnorm_rows(&[3.0; 8], &[0.5, 1.0, 2.0, -1.0, 0.5, 1.0, 2.0, -1.0], 0.0);
        assert!((out[2] - 2.0).abs() < 1e-6 && (out[3] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm_elsewhere() {
        let (cos, sin): (Vec<f32>, Vec<f32>) =
            (0..2 * 4).map(|i| ((i / 4) as f32 * 0.3 * (1 + i % 4) as f32).sin_cos()).map(|(s, c)| (c, s)).unzip();
        let orig: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut x = orig.clone();
        rope_rows(&mut x, 2, 8, &[0], &cos, &sin);
        assert_eq!(x, orig);
        rope_rows(&mut x, 2, 8, &[1], &cos, &sin);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x) - norm(&orig)).abs() < 1e-4 && x != orig);
    }
}

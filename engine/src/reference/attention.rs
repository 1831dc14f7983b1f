//! Exact softmax attention, one query row at a time: the oracle for the prefill and decode
//! kernels. Scores and the softmax are kept in f64.

/// Shape and options of one sequence's attention. Query `i` sits at position `q_offset + i`; with
/// `causal` it sees keys `0 ..= q_offset + i`, otherwise all `kv_len` keys.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub q_offset: usize,
    pub causal: bool,
    pub scale: f32,
}

/// `q [q_len, H, D]`, `k`/`v` `[kv_len, KVH, D]` -> (`out [q_len, H, D]`, `lse [H, q_len]`), where
/// `lse` is the natural log of the sum of `exp(scale · q·k)` over the visible keys (-inf when a
/// query sees none, and then its output row is zero).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: &AttnShape) -> (Vec<f32>, Vec<f32>) {
    let (h, kvh, d) = (s.num_heads, s.num_kv_heads, s.head_dim);
    assert_eq!(q.len(), s.q_len * h * d, "q shape");
    assert_eq!(k.len(), s.kv_len * kvh * d, "k shape");
    assert_eq!(v.len(), s.kv_len * kvh * d, "v shape");
    let group = h / kvh;
    let mut out = vec![0.0f32; q.len()];
    let mut lse = vec![f32::NEG_INFINITY; h * s.q_len];
    let mut scores = vec![0.0f64; s.kv_len];
    for i in 0..s.q_len {
        let visible = if s.causal { (s.q_offset + i + 1).min(s.kv_len) } else { s.kv_len };
        for head in 0..h {
            let kv_head = head / group;
            let qrow = &q[(i * h + head) * d..(i * h + head + 1) * d];
            let mut max = f64::NEG_INFINITY;
            for (j, score) in scores[..visible].iter_mut().enumerate() {
                let krow = &k[(j * kvh + kv_head) * d..(j * kvh + kv_head + 1) * d];
                *score = qrow.iter().zip(krow).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * s.scale as f64;
                max = max.max(*score);
            }
            if visible == 0 {
                continue;
            }
            let mut sum = 0.0f64;
            let mut acc = vec![0.0f64; d];
            for (j, score) in scores[..visible].iter().enumerate() {
                let p = (score - max).exp();
                sum += p;
                let vrow = &v[(j * kvh + kv_head) * d..(j * kvh + kv_head + 1) * d];
                for (a, b) in acc.iter_mut().zip(vrow) {
                    *a += p * *b as f64;
                }
            }
            let o = &mut out[(i * h + head) * d..(i * h + head + 1) * d];
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = (a / sum) as f32;
            }
            lse[head * s.q_len + i] = (max + sum.ln()) as f32;
        }
    }
    (out, lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_returns_its_value_and_gqa_shares_kv_heads() {
        let s = AttnShape {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 2,
            q_len: 1,
            kv_len: 1,
            q_offset: 0,
            causal: true,
            scale: 0.5,
        };
        let q = [1.0, 2.0, -1.0, 0.5, 0.3, 0.3, 2.0, 2.0];
        let (out, lse) = attention(&q, &[1.0, 1.0, 0.0, 1.0], &[7.0, 8.0, -3.0, 4.0], &s);
        assert_eq!(out, vec![7.0, 8.0, 7.0, 8.0, -3.0, 4.0, -3.0, 4.0]);
        assert!((lse[0] - 1.5).abs() < 1e-6 && (lse[3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn causal_offset_hides_future_keys() {
        let s = AttnShape {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 1,
            q_len: 2,
            kv_len: 3,
            q_offset: 0,
            causal: true,
            scale: 1.0,
        };
        let (out, _) = attention(&[0.0, 0.0], &[1.0, 1.0, 1.0], &[1.0, 3.0, 100.0], &s);
        assert_eq!(out, vec![1.0, 2.0]);
    }
}

//! decode_fused.cu against the unfused composition of CPU references (rmsnorm, matmul, rope,
//! silu_mul): the fused qkv (norm, three products, RoPE, cache append), the fused gate/up (norm, two
//! products, SwiGLU) and the normed GEMV of the head, on random inputs at SmolLM2's and Llama's
//! shapes, GQA ratios 1, 3, 4 and 8, and a hidden size that is not a multiple of 8 (scalar path).

use rooflab::kernels::decode_fused::{
    decode_gate_up, decode_qkv, gemv_rmsnorm, NormedInput, QkvHeads, QkvOutputs, QkvWeights,
};
use rooflab::reference as r;
use rooflab::sample::Rng;

use crate::common::{assert_close, bf16_round, randn, span, to_bf16, Gpu};
use crate::layers::rope_config;

/// Relative error of a bf16 store of an f32 value that was itself computed in another order: at
/// most one bf16 unit in the last place (2^-8) when rounding goes the other way.
const BF16_STORE_RTOL: f32 = 4e-3;
const EPS: f32 = 1e-5;

/// A random residual stream row (not centred, so the norm matters) and a norm weight around 1.
fn normed_input(rng: &mut Rng, hidden: usize) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = randn(rng, hidden, 3.0).iter().map(|v| v + 0.5).collect();
    let norm: Vec<f32> = randn(rng, hidden, 0.2).iter().map(|v| v + 1.0).collect();
    (x, norm)
}

fn weight(rng: &mut Rng, rows: usize, k: usize) -> Vec<f32> {
    bf16_round(&randn(rng, rows * k, 1.0 / (k as f32).sqrt()))
}

pub fn fused_qkv_matches_norm_gemv_rope_and_append(g: &Gpu) {
    let mut rng = Rng::new(31);
    let cache_len = 37;
    // (hidden, heads, KV heads, head_dim): SmolLM2 (GQA 3), GQA 1, 4 and 8, Llama-3-8B, and a hidden
    // size that is not a multiple of 8 with head_dim 6.
    let mut shapes = vec![(576, 9, 3, 64), (256, 4, 4, 64), (512, 8, 2, 128), (1024, 8, 1, 128), (100, 3, 1, 6)];
    if !Gpu::small_shapes() {
        shapes.push((4096, 32, 8, 128));
    }
    for (hidden, heads, kv_heads, head_dim) in shapes {
        let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
        let (x, norm) = normed_input(&mut rng, hidden);
        let (wq, wk, wv) =
            (weight(&mut rng, q_dim, hidden), weight(&mut rng, kv_dim, hidden), weight(&mut rng, kv_dim, hidden));
        let (cos, sin) = rope_config(head_dim).rope_tables(cache_len);
        let (d_x, d_norm, d_cos, d_sin) = (g.upload(&x), g.upload(&norm), g.upload(&cos), g.upload(&sin));
        let (d_wq, d_wk, d_wv) = (g.upload(&to_bf16(&wq)), g.upload(&to_bf16(&wk)), g.upload(&to_bf16(&wv)));

        // The unfused reference: norm, the three products, RoPE on q and k.
        let xn = r::rmsnorm_rows(&x, &norm, EPS);
        let (q, k, v) = (
            r::matmul_nt(&xn, 1, &wq, q_dim, hidden),
            r::matmul_nt(&xn, 1, &wk, kv_dim, hidden),
            r::matmul_nt(&xn, 1, &wv, kv_dim, hidden),
        );
        let what = format!("fused qkv hidden={hidden} heads={heads}/{kv_heads} D={head_dim}");
        for position in [0usize, 5, cache_len - 1, cache_len /* out of range */] {
            let (d_q, kc, vc) =
                (g.poisoned(q_dim), g.poisoned_bf16(cache_len * kv_dim), g.poisoned_bf16(cache_len * kv_dim));
            let d_pos = g.upload(&[position as u32]);
            let input = NormedInput { x: span(&d_x), norm: span(&d_norm), hidden, eps: EPS };
            let weights = QkvWeights { q: span(&d_wq), k: span(&d_wk), v: span(&d_wv) };
            let out = QkvOutputs {
                q: span(&d_q),
                k_cache: span(&kc),
                v_cache: span(&vc),
                cache_len,
                rope_cos: span(&d_cos),
                rope_sin: span(&d_sin),
                position: span(&d_pos),
            };
            decode_qkv(
                &g.kernels,
                input,
                weights,
                out,
                QkvHeads { num_heads: heads, num_kv_heads: kv_heads, head_dim },
            )
            .unwrap();
            let (got_q, got_k, got_v) = (g.download(&d_q), g.download(&kc), g.download(&vc));
            if position >= cache_len {
                assert!(got_q.iter().all(|v| v.is_nan()), "{what}: a position past the cache must give a NaN q");
                assert!(
                    got_k.iter().chain(&got_v).all(|v| v.is_nan()),
                    "{what}: a position past the cache wrote the cache"
                );
                continue;
            }
            let (mut want_q, mut want_k) = (q.clone(), k.clone());
            r::rope_rows(&mut want_q, heads, head_dim, &[position], &cos, &sin);
            r::rope_rows(&mut want_k, kv_heads, head_dim, &[position], &cos, &sin);
            assert_close(&format!("{what} q at {position}"), &got_q, &want_q, 1e-4);
            for (cache, want, name) in [(&got_k, &want_k, "key"), (&got_v, &v, "value")] {
                for row in 0..cache_len {
                    let got: Vec<f32> = cache[row * kv_dim..(row + 1) * kv_dim].iter().map(|v| v.to_f32()).collect();
                    if row == position {
                        assert_close(&format!("{what} {name} cache row {row}"), &got, want, BF16_STORE_RTOL);
                    } else {
                        assert!(
                            got.iter().all(|v| v.is_nan()),
                            "{what}: {name} cache row {row} was written (position {position})"
                        );
                    }
                }
            }
        }
    }
}

pub fn fused_gate_up_matches_norm_gemv_and_swiglu(g: &Gpu) {
    let mut rng = Rng::new(32);
    // (hidden, intermediate): SmolLM2, Llama-3.2-1B's hidden size, and odd sizes (scalar path).
    for (hidden, intermediate) in [(576, 1536), (2048, 300), (100, 37), (8, 1)] {
        let (x, norm) = normed_input(&mut rng, hidden);
        let (wg, wu) = (weight(&mut rng, intermediate, hidden), weight(&mut rng, intermediate, hidden));
        let (d_x, d_norm) = (g.upload(&x), g.upload(&norm));
        let (d_wg, d_wu) = (g.upload(&to_bf16(&wg)), g.upload(&to_bf16(&wu)));
        let xn = r::rmsnorm_rows(&x, &norm, EPS);
        let want = r::silu_mul(
            &r::matmul_nt(&xn, 1, &wg, intermediate, hidden),
            &r::matmul_nt(&xn, 1, &wu, intermediate, hidden),
        );
        let out = g.poisoned(intermediate);
        let input = NormedInput { x: span(&d_x), norm: span(&d_norm), hidden, eps: EPS };
        decode_gate_up(&g.kernels, input, span(&d_wg), span(&d_wu), span(&out), intermediate).unwrap();
        assert_close(&format!("fused gate/up {hidden}x{intermediate}"), &g.download(&out), &want, 1e-4);
    }
}

pub fn gemv_rmsnorm_matches_norm_then_gemv(g: &Gpu) {
    let mut rng = Rng::new(33);
    // (n, k): SmolLM2's head, awkward sizes, a long row.
    for (n, k) in [(49152, 576), (7, 17), (130, 1000), (1000, 4096), (1, 8)] {
        let (x, norm) = normed_input(&mut rng, k);
        let w = weight(&mut rng, n, k);
        let (d_x, d_norm, d_w) = (g.upload(&x), g.upload(&norm), g.upload(&to_bf16(&w)));
        let want = r::matmul_nt(&r::rmsnorm_rows(&x, &norm, EPS), 1, &w, n, k);
        let y = g.poisoned(n);
        gemv_rmsnorm(
            &g.kernels,
            NormedInput { x: span(&d_x), norm: span(&d_norm), hidden: k, eps: EPS },
            span(&d_w),
            span(&y),
            n,
        )
        .unwrap();
        assert_close(&format!("gemv_rmsnorm n={n} k={k}"), &g.download(&y), &want, 1e-4);
    }
}

pub fn fused_decode_refuses_bad_operands_by_name(g: &Gpu) {
    let w = g.upload(&to_bf16(&[0.5; 64]));
    let x = g.upload(&[1.0f32; 8]);
    let norm = g.upload(&[1.0f32; 8]);
    let y = g.poisoned(8);
    let input = NormedInput { x: span(&x), norm: span(&norm), hidden: 8, eps: EPS };
    // 16 rows of 8 need 128 weights.
    let err = gemv_rmsnorm(&g.kernels, input, span(&w), span(&y), 16).unwrap_err();
    assert!(err.to_string().contains("gemv_rmsnorm weight"), "{err}");
    let err = gemv_rmsnorm(&g.kernels, input, span(&w), span(&x), 8).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    let short = NormedInput { hidden: 16, ..input };
    let err = decode_gate_up(&g.kernels, short, span(&w), span(&w), span(&y), 4).unwrap_err();
    assert!(err.to_string().contains("fused gate/up input"), "{err}");
    let (kc, vc) = (g.poisoned_bf16(64), g.poisoned_bf16(64));
    let pos = g.upload(&[0u32]);
    let out = QkvOutputs {
        q: span(&y),
        k_cache: span(&kc),
        v_cache: span(&vc),
        cache_len: 4,
        rope_cos: span(&norm),
        rope_sin: span(&norm),
        position: span(&pos),
    };
    let weights = QkvWeights { q: span(&w), k: span(&w), v: span(&w) };
    let err = decode_qkv(&g.kernels, input, weights, out, QkvHeads { num_heads: 1, num_kv_heads: 1, head_dim: 7 })
        .unwrap_err();
    assert!(err.to_string().contains("even positive head_dim"), "{err}");
}

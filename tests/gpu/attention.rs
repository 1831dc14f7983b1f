//! attention_decode.cu and attention_prefill.cu against the exact CPU attention, on bf16 caches
//! whose unused rows are NaN (a kernel that reads past a sequence's length fails), for GQA ratios
//! 1, 3, 4, 8 and 16, head_dim 64 and 128, lengths around the tile sizes, and varlen batches.

use rooflab::kernels::attention_decode::{attention_decode, attention_decode_naive, DecodeScratch, DecodeShape};
use rooflab::kernels::attention_prefill::{attention_prefill, attention_prefill_naive, PrefillBatch, PrefillShape};
use rooflab::reference::{attention, AttnShape};
use rooflab::sample::Rng;

use crate::common::{assert_close, bf16_round, gpu, randn, span, to_bf16, Gpu};

/// (heads, kv_heads, head_dim): GQA 1, 3, 4, 8, 16.
const HEADS: [(usize, usize, usize); 6] =
    [(4, 4, 64), (9, 3, 64), (8, 2, 128), (32, 8, 128), (16, 2, 64), (16, 1, 128)];

/// A batch of caches `[batch][cache_len][kv_heads][head_dim]` whose first `lens[b]` rows hold
/// random bf16 values and the rest NaN; returns the host values (f32) of the filled rows.
struct Caches {
    k_host: Vec<Vec<f32>>,
    v_host: Vec<Vec<f32>>,
    k: rooflab::cuda::CudaSlice<half::bf16>,
    v: rooflab::cuda::CudaSlice<half::bf16>,
}

fn caches(g: &Gpu, rng: &mut Rng, lens: &[usize], cache_len: usize, kv_dim: usize) -> Caches {
    let (mut k_all, mut v_all) = (Vec::new(), Vec::new());
    let (mut k_host, mut v_host) = (Vec::new(), Vec::new());
    for &len in lens {
        let k = bf16_round(&randn(rng, len * kv_dim, 1.0));
        let v = bf16_round(&randn(rng, len * kv_dim, 1.0));
        for (all, rows) in [(&mut k_all, &k), (&mut v_all, &v)] {
            all.extend(to_bf16(rows));
            all.extend(std::iter::repeat_n(half::bf16::NAN, (cache_len - len) * kv_dim));
        }
        k_host.push(k);
        v_host.push(v);
    }
    Caches { k_host, v_host, k: g.upload(&k_all), v: g.upload(&v_all) }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn decode_attention_matches_reference() {
    let g = gpu();
    let mut rng = Rng::new(21);
    let batches: [&[usize]; 5] = [&[1], &[63, 64, 65], &[1000], &[5, 300, 1], &[4096]];
    for &(heads, kv_heads, d) in &HEADS {
        for lens in batches {
            let batch = lens.len();
            let cache_len = lens.iter().max().unwrap() + 7;
            let c = caches(&g, &mut rng, lens, cache_len, kv_heads * d);
            // Scores of a trained model's size: scale 1/sqrt(d) on unit-normal q and k.
            let q = randn(&mut rng, batch * heads * d, 1.0);
            let d_q = g.upload(&q);
            let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
            let d_lens = g.upload(&lens32);
            let shape = DecodeShape {
                batch,
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: d,
                cache_len,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let mut want = Vec::new();
            for (b, &len) in lens.iter().enumerate() {
                let s = AttnShape {
                    num_heads: heads,
                    num_kv_heads: kv_heads,
                    head_dim: d,
                    q_len: 1,
                    kv_len: len,
                    q_offset: len - 1,
                    causal: true,
                    scale: shape.scale,
                };
                want.extend(attention(&q[b * heads * d..(b + 1) * heads * d], &c.k_host[b], &c.v_host[b], &s).0);
            }
            let what = format!("decode H={heads} KVH={kv_heads} D={d} lens={lens:?}");
            for splits in [1, 7, shape.choose_splits(g.ctx.sm_count()), 64] {
                let (po, pml) = shape.scratch_len(splits);
                let (partial_out, partial_ml) = (g.poisoned(po), g.poisoned(pml));
                let scratch = DecodeScratch {
                    partial_out: span(&partial_out),
                    partial_ml: span(&partial_ml),
                    num_splits: splits,
                };
                let out = g.poisoned(q.len());
                attention_decode(
                    &g.kernels,
                    span(&d_q),
                    span(&c.k),
                    span(&c.v),
                    span(&d_lens),
                    span(&out),
                    scratch,
                    shape,
                )
                .unwrap();
                assert_close(&format!("{what} splits={splits}"), &g.download(&out), &want, 2e-4);
            }
            let out = g.poisoned(q.len());
            attention_decode_naive(&g.kernels, span(&d_q), span(&c.k), span(&c.v), span(&d_lens), span(&out), shape)
                .unwrap();
            assert_close(&format!("{what} naive"), &g.download(&out), &want, 2e-4);
        }
    }
}

/// One sequence of a prefill batch: `q_len` queries at positions `q_offset ..`, seeing `kv_len` keys.
#[derive(Debug, Clone, Copy)]
struct Seq {
    q_len: usize,
    q_offset: usize,
    kv_len: usize,
}

fn run_prefill_case(g: &Gpu, rng: &mut Rng, heads: usize, kv_heads: usize, d: usize, seqs: &[Seq], causal: bool) {
    let lens: Vec<usize> = seqs.iter().map(|s| s.kv_len).collect();
    let cache_len = lens.iter().max().unwrap() + 5;
    let c = caches(g, rng, &lens, cache_len, kv_heads * d);
    let total_q: usize = seqs.iter().map(|s| s.q_len).sum();
    let q = randn(rng, total_q * heads * d, 1.0);
    let d_q = g.upload(&q);
    let mut cu = vec![0u32];
    for s in seqs {
        cu.push(cu.last().unwrap() + s.q_len as u32);
    }
    let (d_cu, d_kv, d_off) = (
        g.upload(&cu),
        g.upload(&seqs.iter().map(|s| s.kv_len as u32).collect::<Vec<_>>()),
        g.upload(&seqs.iter().map(|s| s.q_offset as u32).collect::<Vec<_>>()),
    );
    let shape = PrefillShape {
        batch: seqs.len(),
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim: d,
        cache_len,
        total_q,
        max_q_len: seqs.iter().map(|s| s.q_len).max().unwrap(),
        causal,
        scale: 1.0 / (d as f32).sqrt(),
    };
    let (mut want_out, mut want_lse) = (Vec::new(), vec![0.0f32; heads * total_q]);
    for (b, s) in seqs.iter().enumerate() {
        let rows = cu[b] as usize..cu[b + 1] as usize;
        let a = AttnShape {
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: d,
            q_len: s.q_len,
            kv_len: s.kv_len,
            q_offset: s.q_offset,
            causal,
            scale: shape.scale,
        };
        let (out, lse) = attention(&q[rows.start * heads * d..rows.end * heads * d], &c.k_host[b], &c.v_host[b], &a);
        want_out.extend(out);
        for h in 0..heads {
            for i in 0..s.q_len {
                want_lse[h * total_q + rows.start + i] = lse[h * s.q_len + i];
            }
        }
    }
    let batch = PrefillBatch { cu_seqlens_q: span(&d_cu), seq_lens_k: span(&d_kv), q_offsets: span(&d_off) };
    let what = format!("prefill H={heads} KVH={kv_heads} D={d} causal={causal} {seqs:?}");
    for naive in [false, true] {
        let (out, lse) = (g.poisoned(q.len()), g.poisoned(heads * total_q));
        let run = if naive { attention_prefill_naive } else { attention_prefill };
        run(&g.kernels, span(&d_q), span(&c.k), span(&c.v), batch, span(&out), Some(span(&lse)), shape).unwrap();
        assert_close(&format!("{what} naive={naive} out"), &g.download(&out), &want_out, 2e-4);
        assert_close(&format!("{what} naive={naive} lse"), &g.download(&lse), &want_lse, 1e-5);
        // Without the optional LSE output.
        let out = g.poisoned(q.len());
        run(&g.kernels, span(&d_q), span(&c.k), span(&c.v), batch, span(&out), None, shape).unwrap();
        assert_close(&format!("{what} naive={naive} out (no lse)"), &g.download(&out), &want_out, 2e-4);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn prefill_attention_matches_reference() {
    let g = gpu();
    let mut rng = Rng::new(22);
    let causal_cases: [&[Seq]; 6] = [
        &[Seq { q_len: 1, q_offset: 0, kv_len: 1 }],
        &[Seq { q_len: 15, q_offset: 0, kv_len: 15 }],
        &[Seq { q_len: 17, q_offset: 0, kv_len: 17 }],
        &[Seq { q_len: 100, q_offset: 37, kv_len: 137 }],
        &[
            Seq { q_len: 33, q_offset: 0, kv_len: 33 },
            Seq { q_len: 5, q_offset: 60, kv_len: 65 },
            Seq { q_len: 16, q_offset: 1, kv_len: 17 },
        ],
        &[Seq { q_len: 300, q_offset: 0, kv_len: 300 }],
    ];
    for &(heads, kv_heads, d) in &HEADS {
        for seqs in causal_cases {
            run_prefill_case(&g, &mut rng, heads, kv_heads, d, seqs, true);
        }
        // Non-causal: every query sees all kv_len keys (also keys "after" it).
        let open = [Seq { q_len: 20, q_offset: 3, kv_len: 50 }, Seq { q_len: 1, q_offset: 0, kv_len: 1 }];
        run_prefill_case(&g, &mut rng, heads, kv_heads, d, &open, false);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn unsupported_head_layouts_are_refused() {
    let g = gpu();
    let buf = g.poisoned(1 << 16);
    let cache = g.poisoned_bf16(1 << 16);
    let lens = g.upload(&[1u32]);
    let shape = DecodeShape { batch: 1, num_heads: 4, num_kv_heads: 4, head_dim: 96, cache_len: 4, scale: 0.1 };
    let err =
        attention_decode_naive(&g.kernels, span(&buf), span(&cache), span(&cache), span(&lens), span(&buf), shape)
            .unwrap_err();
    assert!(err.to_string().contains("head_dim 96"), "{err}");
    let shape = DecodeShape { num_heads: 32, num_kv_heads: 1, head_dim: 64, ..shape };
    let scratch = DecodeScratch { partial_out: span(&buf), partial_ml: span(&buf), num_splits: 1 };
    let err =
        attention_decode(&g.kernels, span(&buf), span(&cache), span(&cache), span(&lens), span(&buf), scratch, shape)
            .unwrap_err();
    assert!(err.to_string().contains("at most 16"), "{err}");
}

//! layers.cu against the CPU reference: embedding, RMSNorm, RoPE, SwiGLU, residual add, cast,
//! KV-cache append and the random fill.

use half::bf16;
use rooflab::kernels::layers::{self, RopeShape};
use rooflab::model::LlamaConfig;
use rooflab::reference as r;
use rooflab::sample::{uniform_values, Rng};

use crate::common::{assert_close, bf16_round, randn, span, to_bf16, Gpu};

pub fn embedding_rows_match_the_table_and_bad_ids_give_nan(g: &Gpu) {
    let mut rng = Rng::new(1);
    for &(vocab, hidden) in &[(37, 96), (1000, 576), (5, 130), (3, 1)] {
        let table = bf16_round(&randn(&mut rng, vocab * hidden, 0.5));
        let d_table = g.upload(&to_bf16(&table));
        for tokens in [vec![0u32], vec![(vocab - 1) as u32, 0, 2 % vocab as u32, 1 % vocab as u32, 0, 0, 1]] {
            let n = tokens.len();
            let d_tokens = g.upload(&tokens);
            let out = g.poisoned(n * hidden);
            layers::embedding(&g.kernels, span(&d_table), vocab, hidden, span(&d_tokens), n, span(&out)).unwrap();
            let want = r::embedding(&table, hidden, &tokens);
            assert_eq!(g.download(&out), want, "embedding vocab={vocab} hidden={hidden} n={n}");
        }
        let d_bad = g.upload(&[vocab as u32]);
        let out = g.upload(&vec![0.0f32; hidden]);
        layers::embedding(&g.kernels, span(&d_table), vocab, hidden, span(&d_bad), 1, span(&out)).unwrap();
        assert!(g.download(&out).iter().all(|v| v.is_nan()), "an out-of-range id must give a NaN row");
    }
}

pub fn rmsnorm_matches_reference_and_works_in_place(g: &Gpu) {
    let mut rng = Rng::new(2);
    for &(rows, hidden) in &[(1, 64), (5, 576), (33, 1000), (3, 4096), (2, 7)] {
        let x = randn(&mut rng, rows * hidden, 2.0);
        let w: Vec<f32> = randn(&mut rng, hidden, 0.1).iter().map(|v| 1.0 + v).collect();
        let (d_x, d_w) = (g.upload(&x), g.upload(&w));
        let want = r::rmsnorm_rows(&x, &w, 1e-5);
        let out = g.poisoned(rows * hidden);
        layers::rmsnorm(&g.kernels, span(&d_x), span(&d_w), span(&out), rows, hidden, 1e-5).unwrap();
        assert_close(&format!("rmsnorm {rows}x{hidden}"), &g.download(&out), &want, 1e-5);
        layers::rmsnorm(&g.kernels, span(&d_x), span(&d_w), span(&d_x), rows, hidden, 1e-5).unwrap();
        assert_close(&format!("rmsnorm in place {rows}x{hidden}"), &g.download(&d_x), &want, 1e-5);
    }
}

/// A one-layer config whose RoPE tables (theta 10000) the rotary tests use.
pub fn rope_config(head_dim: usize) -> LlamaConfig {
    let json = format!(
        r#"{{"hidden_size":{h},"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":1,
            "head_dim":{head_dim},"vocab_size":10,"rope_theta":10000.0}}"#,
        h = head_dim
    );
    LlamaConfig::from_json(&json).unwrap()
}

pub fn rope_rotates_q_and_k_like_the_reference(g: &Gpu) {
    let mut rng = Rng::new(3);
    let table_len = 5000;
    for &(heads, kv_heads, head_dim) in &[(4, 4, 64), (9, 3, 64), (32, 8, 128), (2, 1, 6)] {
        let (cos, sin) = rope_config(head_dim).rope_tables(table_len);
        let (d_cos, d_sin) = (g.upload(&cos), g.upload(&sin));
        for positions in [vec![0usize], vec![7, 8, 9, 10, 11], vec![4999, 0, 1234]] {
            let n = positions.len();
            let mut q = randn(&mut rng, n * heads * head_dim, 1.0);
            let mut k = randn(&mut rng, n * kv_heads * head_dim, 1.0);
            let (d_q, d_k) = (g.upload(&q), g.upload(&k));
            let pos32: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
            let d_pos = g.upload(&pos32);
            let shape = RopeShape { n_tokens: n, num_heads: heads, num_kv_heads: kv_heads, head_dim };
            layers::rope(
                &g.kernels,
                span(&d_q),
                span(&d_k),
                span(&d_cos),
                span(&d_sin),
                table_len,
                span(&d_pos),
                shape,
            )
            .unwrap();
            r::rope_rows(&mut q, heads, head_dim, &positions, &cos, &sin);
            r::rope_rows(&mut k, kv_heads, head_dim, &positions, &cos, &sin);
            assert_close(&format!("rope q {heads}/{kv_heads}/{head_dim} {positions:?}"), &g.download(&d_q), &q, 1e-5);
            assert_close(&format!("rope k {heads}/{kv_heads}/{head_dim} {positions:?}"), &g.download(&d_k), &k, 1e-5);
        }
    }
}

pub fn elementwise_kernels_match_reference(g: &Gpu) {
    let mut rng = Rng::new(4);
    for n in [1usize, 1000, 100_003, 3 * 8192] {
        let gate = randn(&mut rng, n, 3.0);
        let up = randn(&mut rng, n, 1.0);
        let (d_gate, d_up) = (g.upload(&gate), g.upload(&up));
        let out = g.poisoned(n);
        layers::silu_mul(&g.kernels, span(&d_gate), span(&d_up), span(&out), n).unwrap();
        let want = r::silu_mul(&gate, &up);
        assert_close(&format!("silu_mul n={n}"), &g.download(&out), &want, 1e-5);
        layers::silu_mul(&g.kernels, span(&d_gate), span(&d_up), span(&d_gate), n).unwrap();
        assert_close(&format!("silu_mul in place n={n}"), &g.download(&d_gate), &want, 1e-5);

        let mut acc = randn(&mut rng, n, 1.0);
        let d_acc = g.upload(&acc);
        layers::residual_add(&g.kernels, span(&d_acc), span(&d_up), n).unwrap();
        r::add_in_place(&mut acc, &up);
        assert_eq!(g.download(&d_acc), acc, "residual_add n={n}");

        let mut src = randn(&mut rng, n, 100.0);
        src[0] = f32::INFINITY;
        let d_src = g.upload(&src);
        let dst = g.poisoned_bf16(n);
        layers::cast_to_bf16(&g.kernels, span(&d_src), span(&dst), n).unwrap();
        let got: Vec<u16> = g.download(&dst).iter().map(|v| v.to_bits()).collect();
        let want: Vec<u16> = src.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
        assert_eq!(got, want, "cast n={n} (round to nearest even, like half::bf16::from_f32)");
    }
}

/// The device's random weights are the host's `uniform_values`, bit for bit, at lengths that end inside a
/// block, inside the host's parallel task and (on the GPU) past one pass of the grid-stride loop.
pub fn random_fill_is_the_hosts_uniform_values(g: &Gpu) {
    let longest = if Gpu::small_shapes() { 100_003 } else { 4096 * 256 * 3 + 77 };
    for (n, seed, centre, spread) in [(1, 3, 0.0, 1.0), (1000, 0, 1.0, 0.1), (longest, u64::MAX, 0.0, 0.02)] {
        let dst = g.poisoned_bf16(n);
        layers::fill_uniform(&g.kernels, span(&dst), seed, centre, spread).unwrap();
        let got: Vec<u16> = g.download(&dst).iter().map(|v| v.to_bits()).collect();
        let want: Vec<u16> =
            uniform_values(n, seed, centre, spread, bf16::from_f32).iter().map(|v| v.to_bits()).collect();
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            panic!("fill_uniform n={n} seed={seed}: element {i} is {:#06x}, the host made {:#06x}", got[i], want[i]);
        }
    }
}

pub fn kv_append_writes_only_the_given_rows(g: &Gpu) {
    let mut rng = Rng::new(5);
    let cache_len = 50;
    for kv_dim in [64usize, 192, 1024, 6] {
        let positions = [3u32, 49, 0, 17, 60 /* >= cache_len: skipped */];
        let n = positions.len();
        let k = randn(&mut rng, n * kv_dim, 1.0);
        let v = randn(&mut rng, n * kv_dim, 1.0);
        let (d_k, d_v, d_pos) = (g.upload(&k), g.upload(&v), g.upload(&positions));
        let (kc, vc) = (g.poisoned_bf16(cache_len * kv_dim), g.poisoned_bf16(cache_len * kv_dim));
        layers::kv_append(&g.kernels, span(&d_k), span(&d_v), span(&kc), span(&vc), cache_len, span(&d_pos), n, kv_dim)
            .unwrap();
        for (cache, src, name) in [(g.download(&kc), &k, "key"), (g.download(&vc), &v, "value")] {
            for row in 0..cache_len {
                let got = &cache[row * kv_dim..(row + 1) * kv_dim];
                match positions.iter().position(|&p| p as usize == row) {
                    Some(t) => {
                        let want = to_bf16(&src[t * kv_dim..(t + 1) * kv_dim]);
                        assert_eq!(got, want.as_slice(), "{name} cache row {row} (token {t}), kv_dim {kv_dim}");
                    }
                    None => assert!(got.iter().all(|x| x.is_nan()), "{name} cache row {row} was written"),
                }
            }
        }
    }
}

//! gemv.cu against the CPU matmul (cuBLAS: tests/gpu/cuda.rs), on bf16 weights: every variant, with
//! and without accumulation, on shapes with k a multiple of 8 (16-byte path) and not (scalar path).

use rooflab::kernels::gemv::{gemm_tiled, gemv, gemv_bf16x, GemvKernel};
use rooflab::reference as r;
use rooflab::sample::Rng;

use crate::common::{assert_close, bf16_round, randn, span, to_bf16, Gpu};

const GEMV_SHAPES: [(usize, usize); 9] =
    [(1, 8), (7, 17), (33, 64), (576, 576), (1536, 576), (130, 1000), (100, 100), (4096, 4096), (49152, 576)];

pub fn gemv_variants_match_reference(g: &Gpu) {
    let mut rng = Rng::new(11);
    for &(n, k) in &GEMV_SHAPES {
        let w = bf16_round(&randn(&mut rng, n * k, 1.0 / (k as f32).sqrt()));
        let x = randn(&mut rng, k, 1.0);
        let bias = randn(&mut rng, n, 1.0);
        let d_w = g.upload(&to_bf16(&w));
        let d_x = g.upload(&x);
        let want = r::matmul_nt(&x, 1, &w, n, k);
        let want_acc: Vec<f32> = want.iter().zip(&bias).map(|(a, b)| a + b).collect();
        for variant in [GemvKernel::WarpPerRow, GemvKernel::Naive] {
            let y = g.poisoned(n);
            gemv(&g.kernels, variant, span(&d_w), span(&d_x), span(&y), n, k, false).unwrap();
            assert_close(&format!("gemv {variant:?} n={n} k={k}"), &g.download(&y), &want, 1e-4);
            let y = g.upload(&bias);
            gemv(&g.kernels, variant, span(&d_w), span(&d_x), span(&y), n, k, true).unwrap();
            assert_close(&format!("gemv {variant:?} accumulate n={n} k={k}"), &g.download(&y), &want_acc, 1e-4);
        }
        // bf16 activations: the reference sees the same rounded activations.
        let x16 = bf16_round(&x);
        let d_x16 = g.upload(&to_bf16(&x));
        let want16 = r::matmul_nt(&x16, 1, &w, n, k);
        let y = g.poisoned(n);
        gemv_bf16x(&g.kernels, span(&d_w), span(&d_x16), span(&y), n, k, false).unwrap();
        assert_close(&format!("gemv bf16x n={n} k={k}"), &g.download(&y), &want16, 1e-4);
    }
}

pub const GEMM_SHAPES: [(usize, usize, usize); 7] =
    [(2, 3, 5), (17, 65, 130), (64, 64, 64), (100, 576, 576), (130, 1536, 576), (5, 49, 4096), (37, 1000, 100)];

pub fn tiled_gemm_matches_reference(g: &Gpu) {
    let mut rng = Rng::new(12);
    for &(m, n, k) in &GEMM_SHAPES {
        let w = bf16_round(&randn(&mut rng, n * k, 1.0 / (k as f32).sqrt()));
        let x = randn(&mut rng, m * k, 1.0);
        let bias = randn(&mut rng, m * n, 1.0);
        let (d_w, d_x) = (g.upload(&to_bf16(&w)), g.upload(&x));
        let want = r::matmul_nt(&x, m, &w, n, k);
        let y = g.poisoned(m * n);
        gemm_tiled(&g.kernels, span(&d_w), span(&d_x), span(&y), m, n, k, false).unwrap();
        assert_close(&format!("tiled gemm {m}x{n}x{k}"), &g.download(&y), &want, 1e-4);
        let y = g.upload(&bias);
        gemm_tiled(&g.kernels, span(&d_w), span(&d_x), span(&y), m, n, k, true).unwrap();
        let want_acc: Vec<f32> = want.iter().zip(&bias).map(|(a, b)| a + b).collect();
        assert_close(&format!("tiled gemm accumulate {m}x{n}x{k}"), &g.download(&y), &want_acc, 1e-4);
    }
}

pub fn shape_errors_are_reported_before_launch(g: &Gpu) {
    let w = g.upload(&to_bf16(&[0.5; 64]));
    let x = g.upload(&[1.0f32; 8]);
    let y = g.poisoned(8);
    let err = gemv(&g.kernels, GemvKernel::WarpPerRow, span(&w), span(&x), span(&y), 8, 16, false).unwrap_err();
    assert!(err.to_string().contains("gemv weight"), "{err}");
    let err = gemv(&g.kernels, GemvKernel::WarpPerRow, span(&w), span(&y), span(&y), 8, 8, false).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
}

//! The CUDA layer: NoGpu without a driver, graph capture and replay, event timing, memory checks.

use rooflab::cuda::{
    driver_present, measure_copy_bandwidth, time_kernel, Blas, CapturedGraph, GpuContext, MemoryLedger,
};
use rooflab::kernels::layers;
use rooflab::Error;

use rooflab::reference as r;
use rooflab::sample::Rng;

use crate::common::{assert_close, bf16_round, gpu, randn, span, to_bf16};
use crate::gemv::GEMM_SHAPES;

/// Runs on every machine: without a driver the answer is `Error::NoGpu`, never a panic.
#[test]
fn no_driver_means_no_gpu_error() {
    match GpuContext::new(0) {
        Err(Error::NoGpu(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("expected NoGpu or a context, got {other}"),
        Ok(ctx) => assert!(driver_present(), "{ctx:?} opened without a driver"),
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn a_captured_graph_replays_its_kernels_with_new_inputs() {
    let g = gpu();
    let n = 1000;
    let acc = g.upload(&vec![0.0f32; n]);
    let mut x = g.upload(&vec![1.0f32; n]);
    let graph = CapturedGraph::capture(&g.ctx, || layers::residual_add(&g.kernels, span(&acc), span(&x), n)).unwrap();
    assert_eq!(g.download(&acc), vec![0.0; n], "capture must not run the kernels");
    graph.replay().unwrap();
    graph.replay().unwrap();
    // The graph reads x from device memory at replay time: new values are picked up.
    g.ctx.stream().memcpy_htod(&vec![10.0f32; n], &mut x).unwrap();
    graph.replay().unwrap();
    assert_eq!(g.download(&acc), vec![12.0; n]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn a_failed_capture_leaves_the_stream_usable() {
    let g = gpu();
    let acc = g.upload(&[0.0f32; 4]);
    let result = CapturedGraph::capture(&g.ctx, || layers::residual_add(&g.kernels, span(&acc), span(&acc), 8));
    assert!(result.is_err(), "a shape error inside the capture must surface");
    layers::residual_add(&g.kernels, span(&acc), span(&acc), 4).unwrap();
    g.ctx.synchronize().unwrap();
}

/// Graphs are captured thread-locally: another thread's synchronising calls (tests run in parallel; a
/// server may time or load on one thread while another captures) must leave the capture intact.
#[test]
#[ignore = "needs a CUDA GPU"]
fn other_threads_may_synchronise_while_a_graph_is_captured() {
    let g = gpu();
    let n = 256;
    let acc = g.upload(&vec![1.0f32; n]);
    let graph = CapturedGraph::capture(&g.ctx, || {
        std::thread::scope(|s| {
            s.spawn(|| {
                let other = gpu();
                let buf = other.upload(&vec![2.0f32; n]);
                let times =
                    time_kernel(&other.ctx, 1, 2, || layers::residual_add(&other.kernels, span(&buf), span(&buf), n));
                assert_eq!(times.unwrap().len(), 2);
                other.ctx.synchronize().unwrap();
            })
            .join()
            .expect("the other thread's work")
        });
        layers::residual_add(&g.kernels, span(&acc), span(&acc), n)
    })
    .unwrap();
    graph.replay().unwrap();
    assert_eq!(g.download(&acc), vec![2.0; n]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn timing_and_bandwidth_are_plausible() {
    let g = gpu();
    let n = 1 << 24;
    let acc = g.upload(&vec![0.0f32; n]);
    let times = time_kernel(&g.ctx, 2, 5, || layers::residual_add(&g.kernels, span(&acc), span(&acc), n)).unwrap();
    assert_eq!(times.len(), 5);
    assert!(times.iter().all(|&t| t > 0.0 && t < 1000.0), "{times:?}");
    let bw = measure_copy_bandwidth(&g.ctx, 256 << 20).unwrap();
    eprintln!("{}: device-to-device copy {:.0} GB/s", g.ctx.name(), bw / 1e9);
    assert!(bw > 100e9 && bw < 20e12, "{bw}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn the_ledger_refuses_what_does_not_fit_by_name() {
    let g = gpu();
    let mut ledger = MemoryLedger::new(&g.ctx);
    let (_, total) = g.ctx.memory_info().unwrap();
    let err = ledger.alloc_zeros::<u8>("test", "an impossible buffer", 2 * total).unwrap_err();
    assert!(matches!(err, Error::OutOfGpuMemory { .. }) && err.to_string().contains("an impossible buffer"), "{err}");
    let buf = ledger.alloc_zeros::<f32>("test", "a small buffer", 1000).unwrap();
    assert_eq!(buf.len(), 1000);
    assert_eq!(ledger.allocated("test"), 4000);
}

/// cuBLAS (the vendor path of the model's GEMMs) against the CPU matmul.
#[test]
#[ignore = "needs a CUDA GPU"]
fn cublas_gemm_matches_reference_when_available() {
    let g = gpu();
    let blas = match Blas::try_new(&g.ctx) {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED: cuBLAS unavailable ({why}); the model falls back to the tiled GEMM");
            return;
        }
    };
    let mut rng = Rng::new(13);
    for &(m, n, k) in &GEMM_SHAPES {
        let w = bf16_round(&randn(&mut rng, n * k, 1.0 / (k as f32).sqrt()));
        let x = bf16_round(&randn(&mut rng, m * k, 1.0));
        let bias = randn(&mut rng, m * n, 1.0);
        let (d_w, d_x) = (g.upload(&to_bf16(&w)), g.upload(&to_bf16(&x)));
        let want = r::matmul_nt(&x, m, &w, n, k);
        let y = g.poisoned(m * n);
        blas.gemm_bf16(span(&d_w), span(&d_x), span(&y), m, n, k, false).unwrap();
        assert_close(&format!("cuBLAS gemm {m}x{n}x{k}"), &g.download(&y), &want, 1e-3);
        let y = g.upload(&bias);
        blas.gemm_bf16(span(&d_w), span(&d_x), span(&y), m, n, k, true).unwrap();
        let want_acc: Vec<f32> = want.iter().zip(&bias).map(|(a, b)| a + b).collect();
        assert_close(&format!("cuBLAS gemm accumulate {m}x{n}x{k}"), &g.download(&y), &want_acc, 1e-3);
    }
}

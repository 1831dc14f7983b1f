//! bf16 GEMV and skinny GEMM, `y[M,N] = x[M,K] · W[N,K]ᵀ`: rooflab's warp-per-row kernel (f32 and bf16
//! activations), the naive one-thread-per-row kernel and cuBLAS through cudarc, at the projection
//! shapes of Llama-3-8B, Llama-3.2-1B, Llama-70B and SmolLM2-135M. Throughput is the minimum bytes
//! (weights + activations), so criterion's GB/s reads against the copy bandwidth. Without a GPU it
//! prints a skip note and exits 0.

mod common;

use rooflab_harness::bench::cases::{gemv, WeightFormat};
use rooflab_harness::bench::gpu::gemv::{GemvShape, GemvWorkload};

/// (M, N, K): one token through each projection, then skinny GEMMs (a few tokens) on the FFN shapes.
const SHAPES: [(usize, usize, usize); 15] = [
    (1, 4096, 4096),    // Llama-3-8B q/o
    (1, 14336, 4096),   // Llama-3-8B gate/up
    (1, 4096, 14336),   // Llama-3-8B down
    (1, 128_256, 4096), // Llama-3-8B lm_head
    (1, 28672, 8192),   // Llama-70B gate/up
    (1, 8192, 28672),   // Llama-70B down
    (1, 8192, 2048),    // Llama-3.2-1B gate/up
    (1, 2048, 8192),    // Llama-3.2-1B down
    (1, 1536, 576),     // SmolLM2 gate/up
    (1, 576, 1536),     // SmolLM2 down
    (1, 49152, 576),    // SmolLM2 lm_head
    (4, 14336, 4096),
    (16, 14336, 4096),
    (4, 4096, 14336),
    (16, 4096, 14336),
];

fn main() {
    let Some(device) = common::device_or_skip("gemv") else {
        return;
    };
    let mut c = common::criterion();
    for (m, n, k) in SHAPES {
        let bytes = gemv(m as u64, n as u64, k as u64, WeightFormat::Bf16).work.bytes;
        let mut workload = GemvWorkload::new(&device, GemvShape { m, n, k }, common::rotation_bytes())
            .unwrap_or_else(|e| common::fail(&format!("{e:#}")));
        common::bench_workload(&mut c, &device, &mut workload, bytes);
    }
    c.final_summary();
    common::exit_if_checks_failed();
}

//! decode_fused.cu: each fused kernel of the one-token decode step against the unfused launches it
//! replaces (`unfused`, in the naive role: rmsnorm + 3 gemv + rope + kv_append for `decode_qkv`,
//! rmsnorm + 2 gemv + silu_mul for `decode_gate_up`, rmsnorm + gemv for `gemv_rmsnorm`), at the shapes
//! of SmolLM2-135M, Llama-3.2-1B and Llama-3-8B. Throughput is the fused kernel's minimum bytes (mostly
//! weights), so criterion's GB/s of both read against the copy bandwidth, and the ratio is what the
//! fusion saves per layer (kernel time and launch gaps; the model's graph replay hides some of the
//! latter, which the e2e suite measures as `rooflab` against `rooflab-unfused`). Without a GPU it
//! prints a skip note and exits 0.

mod common;

use rooflab_harness::bench::gpu::decode_fused::{FusedOp, FusedWorkload};

/// (hidden, heads, kv_heads, head_dim, intermediate, vocab) of SmolLM2-135M, Llama-3.2-1B, Llama-3-8B.
const MODELS: [(usize, usize, usize, usize, usize, usize); 3] =
    [(576, 9, 3, 64, 1536, 49152), (2048, 32, 8, 64, 8192, 128_256), (4096, 32, 8, 128, 14336, 128_256)];

fn main() {
    let Some(device) = common::device_or_skip("decode_fused") else {
        return;
    };
    let mut c = common::criterion();
    for (hidden, heads, kv_heads, head_dim, intermediate, vocab) in MODELS {
        let mut ops =
            vec![FusedOp::Qkv { hidden, heads, kv_heads, head_dim }, FusedOp::GateUp { hidden, intermediate }];
        // The 8B head is the 1B head at twice the width: the two smaller ones say what it would.
        if hidden < 4096 {
            ops.push(FusedOp::Head { vocab, hidden });
        }
        for op in ops {
            let mut workload = FusedWorkload::new(&device, op, common::rotation_bytes())
                .unwrap_or_else(|e| common::fail(&format!("{e:#}")));
            common::bench_workload(&mut c, &device, &mut workload, op.bytes() as f64);
        }
    }
    c.final_summary();
    common::exit_if_checks_failed();
}

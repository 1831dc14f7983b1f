//! The per-token layer kernels at model sizes: RMSNorm, RoPE (q and k in place) and SwiGLU's
//! silu(gate)·up, for one decode token and a 512-token prefill chunk of Llama-3-8B and SmolLM2-135M.
//! rooflab has no naive versions of these; the reference point is a device-to-device copy of the same
//! number of bytes (`memcpy_same_bytes`), the speed of light for a streaming kernel. Throughput is the
//! minimum bytes. Without a GPU it prints a skip note and exits 0.

mod common;

use rooflab_harness::bench::gpu::layers::{LayerOp, LayerWorkload};

/// (hidden, heads, kv_heads, head_dim, intermediate) of Llama-3-8B and SmolLM2-135M.
const MODELS: [(usize, usize, usize, usize, usize); 2] = [(4096, 32, 8, 128, 14336), (576, 9, 3, 64, 1536)];
const TOKENS: [usize; 2] = [1, 512];

fn main() {
    let Some(device) = common::device_or_skip("layers") else {
        return;
    };
    let mut c = common::criterion();
    for (hidden, heads, kv_heads, head_dim, intermediate) in MODELS {
        for tokens in TOKENS {
            for op in [
                LayerOp::RmsNorm { rows: tokens, hidden },
                LayerOp::Rope { tokens, heads, kv_heads, head_dim },
                LayerOp::SiluMul { n: tokens * intermediate },
            ] {
                let mut workload = LayerWorkload::new(&device, op, common::rotation_bytes())
                    .unwrap_or_else(|e| common::fail(&format!("{e:#}")));
                common::bench_workload(&mut c, &device, &mut workload, op.bytes() as f64);
            }
        }
    }
    c.final_summary();
    common::exit_if_checks_failed();
}

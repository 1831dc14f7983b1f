//! Decode attention (one query token per sequence over a contiguous bf16 KV cache): rooflab's split-KV
//! kernel against the naive one-block-per-query-head kernel, for Llama-3-8B's GQA 32/8 with head_dim
//! 128 at batch 1 from 1k to 32k tokens and at batch 32 with 4k, and SmolLM2's 9/3 with head_dim 64.
//! No vendor decode kernel is reachable through cudarc (torch's flash and cuDNN are the PyTorch peers).
//! Throughput is the minimum bytes: K and V read once per KV head, q read and out written once.
//! Without a GPU it prints a skip note and exits 0.

mod common;

use rooflab_harness::bench::cases::attention_decode;
use rooflab_harness::bench::gpu::decode::{DecodeArgs, DecodeWorkload};

/// (B, H, KVH, L, D).
const SHAPES: [(usize, usize, usize, usize, usize); 11] = [
    (1, 32, 8, 1024, 128),
    (1, 32, 8, 2048, 128),
    (1, 32, 8, 4096, 128),
    (1, 32, 8, 8192, 128),
    (1, 32, 8, 16384, 128),
    (1, 32, 8, 32768, 128),
    (32, 32, 8, 4096, 128),
    (1, 9, 3, 1024, 64),
    (1, 9, 3, 4096, 64),
    (1, 9, 3, 8192, 64),
    (32, 9, 3, 4096, 64),
];

fn main() {
    let Some(device) = common::device_or_skip("attention_decode") else {
        return;
    };
    let mut c = common::criterion();
    for (batch, num_heads, num_kv_heads, context, head_dim) in SHAPES {
        let bytes =
            attention_decode(batch as u64, num_heads as u64, num_kv_heads as u64, context as u64, head_dim as u64)
                .work
                .bytes;
        let args = DecodeArgs { batch, num_heads, num_kv_heads, context, head_dim };
        let mut workload = DecodeWorkload::new(&device, args, common::rotation_bytes())
            .unwrap_or_else(|e| common::fail(&format!("{e:#}")));
        common::bench_workload(&mut c, &device, &mut workload, bytes);
    }
    c.final_summary();
    common::exit_if_checks_failed();
}

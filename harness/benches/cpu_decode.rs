//! CPU reference decode speed on SmolLM2-135M (the imported checkpoint when present, else a random
//! checkpoint of the same shape): one decode step at a 64-token context, reported as tokens/s.
//! The CPU path is the fallback for machines without a GPU, so it must stay usable on 2 cores.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rooflab::model::cpu::CpuModel;
use rooflab::model::random::{write_random_checkpoint, LlamaShape};
use rooflab::model::{CausalLm, DType, Logits};

fn smollm2_dir() -> PathBuf {
    let imported = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct");
    if imported.join("model.safetensors").exists() {
        return imported;
    }
    let dir = std::env::temp_dir().join("rooflab-bench-smollm2-shape");
    if !dir.join("model.safetensors").exists() {
        let shape = LlamaShape {
            hidden: 576,
            intermediate: 1536,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            vocab: 49152,
            tied: true,
        };
        write_random_checkpoint(&dir, &shape.config_json(), 0, DType::BF16).expect("write random checkpoint");
    }
    dir
}

fn decode(c: &mut Criterion) {
    let dir = smollm2_dir();
    let mut model = CpuModel::load(&dir).expect("load checkpoint");
    let prompt: Vec<u32> = (0..64).map(|i| 100 + i * 7).collect();
    model.forward(&prompt, 0, Logits::Last).expect("prefill");
    let mut group = c.benchmark_group("cpu_decode");
    group.sample_size(20).throughput(Throughput::Elements(1));
    group.bench_function(format!("smollm2-135m {}", model.device_name()), |b| {
        // Each step rewrites position 64, so the context stays the same across iterations.
        b.iter(|| model.forward(&[42], 64, Logits::Last).expect("decode step"))
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);

//! Sampling on the host, the step after every decode: the lazily ranked sampler (`Sampler`)
//! against its naive baseline, the same processors over the whole vocabulary sorted every call.
//! Logits: SmolLM2's real last-position rows (tests/fixtures, HF transformers' output for three
//! prompts) at its 49152-token vocabulary, and the same rows tiled to Llama-3's 128256.
//! A GPU decode step of SmolLM2 takes a few hundred microseconds, so sampling must take far less.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rooflab::sample::{sample_by_full_sort, Rng, Sampler, SamplingParams};
use safetensors::SafeTensors;

fn golden_rows() -> Vec<Vec<f32>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2_golden_rows.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("golden rows");
    let mut names = file.names();
    names.sort();
    names
        .iter()
        .map(|name| {
            let data = file.tensor(name).expect("row").data().to_vec();
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        })
        .collect()
}

fn settings() -> [(&'static str, SamplingParams); 5] {
    let p =
        |temperature, top_k, top_p, min_p| SamplingParams { temperature, top_k, top_p, min_p, ..Default::default() };
    [
        ("greedy", p(0.0, 0, 1.0, 0.0)),
        ("T0.7 top-p0.9", p(0.7, 0, 0.9, 0.0)),
        ("T1.0", p(1.0, 0, 1.0, 0.0)),
        ("T0.7 top-k50", p(0.7, 50, 1.0, 0.0)),
        ("T0.7 min-p0.05", p(0.7, 0, 1.0, 0.05)),
    ]
}

fn sampling(c: &mut Criterion) {
    let rows = golden_rows();
    let llama3: Vec<Vec<f32>> = rows.iter().map(|row| row.iter().copied().cycle().take(128_256).collect()).collect();
    let seen: Vec<u32> = (0..64).map(|i| 100 + i * 7).collect();
    for (vocab, rows) in [("smollm2 V=49152", &rows), ("llama3 V=128256", &llama3)] {
        let mut group = c.benchmark_group(format!("sampling {vocab}"));
        group.throughput(Throughput::Elements(1));
        for (name, params) in settings() {
            let mut sampler = Sampler::new(params.clone()).expect("valid settings");
            let mut next = 0;
            group.bench_function(BenchmarkId::new("lazy ranking", name), |b| {
                b.iter(|| {
                    next = (next + 1) % rows.len();
                    sampler.sample(&rows[next], &seen)
                })
            });
            let mut rng = Rng::new(params.seed);
            group.bench_function(BenchmarkId::new("full sort (naive)", name), |b| {
                b.iter(|| {
                    next = (next + 1) % rows.len();
                    sample_by_full_sort(&params, &mut rng, &rows[next], &seen)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, sampling);
criterion_main!(benches);

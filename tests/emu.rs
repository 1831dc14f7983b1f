//! The kernel tests of tests/gpu.rs (layers, gemv, decode and prefill attention, every version), run
//! on the CPU emulator of the same kernel sources (rooflab::emu, kernels-cuda/emu/): every CUDA thread
//! a fiber, the tensor-core and async-copy instructions modelled from the PTX ISA, host buffers that
//! fault when a kernel runs off their ends. This is what CI can say about the kernels without a GPU:
//! their index algebra, masks, pipelines and launch configurations, not their speed, and not where
//! the hardware differs from the ISA text. The largest shapes are shrunk here (`Gpu::small_shapes`).

#[path = "gpu/attention.rs"]
mod attention;
#[path = "gpu/common.rs"]
mod common;
#[path = "gpu/decode_fused.rs"]
mod decode_fused;
#[path = "gpu/device_emu.rs"]
mod device;
#[path = "gpu/gemv.rs"]
mod gemv;
#[path = "gpu/layers.rs"]
mod layers;
#[path = "gpu/layout_probe.rs"]
mod layout_probe;
#[path = "gpu/model_check.rs"]
mod model_check;

/// The shared kernel tests (tests/gpu/kernel_tests.rs), on the emulator.
macro_rules! kernel_tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $module::$name(&common::gpu())
            }
        )*
    };
}

include!("gpu/kernel_tests.rs");

/// The attention kernels again with every block's threads scheduled last to first (a barrier missing
/// between one thread's write and another's read often shows in one order only).
#[test]
fn attention_kernels_pass_with_each_blocks_threads_in_reverse_order() {
    let g = device::gpu_reversed();
    attention::decode_attention_matches_reference(&g);
    attention::prefill_kernels_handle_varlen_batches_and_chunked_prefill(&g);
}

/// The attention kernels again with each block's threads in a random order at every round of the
/// scheduler (one fixed seed here; `ROOFLAB_EMU_SHUFFLE=SEED cargo test --test emu` shuffles every
/// test with another): interleavings of warps at barriers and mbarrier waits that the fixed orders miss.
#[test]
fn attention_kernels_pass_with_each_blocks_threads_shuffled() {
    let g = device::gpu_shuffled(0x5eed);
    attention::decode_attention_matches_reference(&g);
    attention::tma_prefill_handles_ragged_cache_tiles(&g);
    attention::prefill_kernels_handle_varlen_batches_and_chunked_prefill(&g);
}

/// v4 again with warp 0, its producer, starved: the consumers get as far ahead of the producer as the
/// mbarriers let them, so a consumer wait that is missing (for the producer's zeroing of the ragged last
/// V tile, `v_fixed`) shows as NaN from the cache tail; the other two orders miss it.
#[test]
fn tma_prefill_passes_with_the_producer_warp_starved() {
    attention::tma_prefill_handles_ragged_cache_tiles(&device::gpu_starving_warp0());
}

/// The GPU model's forward pass (engine/src/model/gpu/forward.rs, the same kernels) on the emulator
/// against the CPU model: prompt logits within 1e-2, then greedy decoding, on random checkpoints of
/// GQA 1, 3, 4 and 8, head_dim 64 and 128, tied and untied, with prefill in one chunk and in chunks of
/// 16 that attend to the earlier ones through the cache.
#[test]
fn the_gpu_forward_pass_matches_the_cpu_model_on_random_checkpoints() {
    use rooflab::model::gpu::{DecodeKernels, EmulatedGpuModel};
    for (i, shape) in model_check::SHAPES.into_iter().enumerate() {
        let dir = model_check::checkpoint(&format!("emu-shape{i}"), shape);
        for chunk in [512, 16] {
            let mut model = EmulatedGpuModel::load(&dir, 256, chunk).unwrap();
            // The chunked run decodes with the unfused kernels (decode_fused.cu's baseline).
            let decode = if chunk == 16 { DecodeKernels::Unfused } else { DecodeKernels::Fused };
            model.set_decode_kernels(decode).unwrap();
            let what = format!("emulated shape {i} {shape:?} chunk {chunk}, {decode:?} decode");
            model_check::compare_with_cpu(&dir, &mut model, &what, model_check::GREEDY_STEPS);
        }
        let mut model = EmulatedGpuModel::load(&dir, 256, 512).unwrap();
        model_check::compare_decode_kernels(&mut model, shape.vocab, &format!("emulated shape {i}"), |m, d| {
            m.set_decode_kernels(d).unwrap()
        });
    }
}

/// Kernels per decode step (the nodes of the GPU model's decode graph): per layer 6 fused (qkv, the
/// split attention and its combine, o, gate/up, down) against 14 unfused, plus the embedding and the
/// head (1 fused, 2 unfused).
#[test]
fn a_fused_decode_step_launches_6_kernels_per_layer_and_an_unfused_one_14() {
    use rooflab::model::gpu::{DecodeKernels, EmulatedGpuModel};
    use rooflab::model::{CausalLm, Logits};
    let shape = model_check::SHAPES[1];
    let dir = model_check::checkpoint("emu-launch-count", shape);
    let mut model = EmulatedGpuModel::load(&dir, 64, 64).unwrap();
    let tokens = model_check::prompt(5, shape.vocab);
    model.forward(&tokens, 0, Logits::Last).unwrap();
    let mut per_step = Vec::new();
    for (i, decode) in [DecodeKernels::Fused, DecodeKernels::Unfused].into_iter().enumerate() {
        model.set_decode_kernels(decode).unwrap();
        let before = model.kernel_launches();
        model.forward(&[tokens[0]], tokens.len() + i, Logits::Last).unwrap();
        per_step.push(model.kernel_launches() - before);
    }
    let layers = shape.layers;
    assert_eq!(
        per_step,
        [6 * layers + 2, 14 * layers + 3],
        "{layers} layers: launches per decode step (fused, unfused)"
    );
}

/// SmolLM2-135M-Instruct (when scripts/fetch-model has imported it) through the GPU forward pass on
/// the emulator: the prompt's last logits within 1e-2 of the CPU model, and the same greedy
/// continuation of "The capital of France is" for a few tokens.
#[test]
fn smollm2_through_the_gpu_forward_pass_matches_the_cpu_model_when_present() {
    use rooflab::model::cpu::CpuModel;
    use rooflab::model::gpu::EmulatedGpuModel;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct");
    if !dir.join("config.json").exists() {
        eprintln!("SKIPPED: {} not found (scripts/fetch-model)", dir.display());
        return;
    }
    let tokenizer = rooflab::tokenizer::Tokenizer::load(&dir).unwrap();
    let prompt = tokenizer.encode("The capital of France is", false).unwrap();
    let mut cpu = CpuModel::load(&dir).unwrap();
    let mut emu = EmulatedGpuModel::load(&dir, 64, 64).unwrap();
    let (cpu_tokens, cpu_rows) = model_check::greedy(&mut cpu, &prompt, 3);
    let (emu_tokens, emu_rows) = model_check::greedy(&mut emu, &prompt, 3);
    for (i, (e, c)) in emu_rows.iter().zip(&cpu_rows).enumerate() {
        let err = model_check::max_rel_diff(e, c);
        assert!(err < 1e-2, "SmolLM2 step {i}: logits differ by {err}");
    }
    assert_eq!(emu_tokens, cpu_tokens);
    eprintln!("SmolLM2 on the emulated GPU path: {:?}", tokenizer.decode(&emu_tokens, false).unwrap());
}

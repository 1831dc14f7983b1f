//! The GPU model's forward pass on the CPU emulator of the kernels (feature `emu`): the same
//! forward.rs, kernel wrappers and kernel sources as [`super::GpuModel`], with host buffers in place
//! of device memory and the tiled GEMM for prefill (no cuBLAS, no graphs). It lets the GPU path be
//! checked against the CPU reference without a GPU; it is slow (every CUDA thread is a fiber), so
//! keep models small.

use std::path::Path;

use half::bf16;

use super::buffers::{StepLayout, LOGIT_ROWS};
use super::forward::{self, forward_chunks, DecodeKernels, ForwardDevice, ForwardSpans, Gemm, LayerSpans};
use super::{check_supported, weights};
use crate::emu::{Emulator, HostBuffer};
use crate::kernels::attention_decode::DecodeShape;
use crate::model::weights::LlamaTensors;
use crate::model::{CausalLm, Checkpoint, DType, LlamaConfig, Logits};
use crate::{Error, Result};

/// SM count the decode split heuristic is given (an H100's), so it splits as it would there.
const EMULATED_SM_COUNT: u32 = 132;

struct HostLayer {
    attn_norm: HostBuffer<f32>,
    q: HostBuffer<bf16>,
    k: HostBuffer<bf16>,
    v: HostBuffer<bf16>,
    o: HostBuffer<bf16>,
    mlp_norm: HostBuffer<f32>,
    gate: HostBuffer<bf16>,
    up: HostBuffer<bf16>,
    down: HostBuffer<bf16>,
}

pub struct EmulatedGpuModel {
    config: LlamaConfig,
    emu: Emulator,
    embed: HostBuffer<bf16>,
    lm_head: Option<HostBuffer<bf16>>,
    final_norm: HostBuffer<f32>,
    layers: Vec<HostLayer>,
    k_cache: HostBuffer<bf16>,
    v_cache: HostBuffer<bf16>,
    context: usize,
    rope_cos: HostBuffer<f32>,
    rope_sin: HostBuffer<f32>,
    /// Activations: x, xn, q, k, v, attn, gate, up, logits, decode partials (out, m/l), in that order.
    acts: Vec<HostBuffer<f32>>,
    num_splits: usize,
    step: HostBuffer<u32>,
    step_layout: StepLayout,
    cached: usize,
    decode: DecodeKernels,
}

impl EmulatedGpuModel {
    /// Loads `dir` with a KV cache of `context` positions and prefill chunks of at most `chunk` tokens.
    pub fn load(dir: &Path, context: usize, chunk: usize) -> Result<Self> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        check_supported(&config)?;
        let checkpoint = Checkpoint::open(dir)?;
        let t = LlamaTensors::gather(&checkpoint, &config)?;
        t.check_dtypes(&[DType::F32, DType::F16, DType::BF16])?;
        let context = context.min(config.max_position_embeddings);
        if context == 0 {
            return Err(Error::Invalid("the context must be positive".into()));
        }
        let chunk = chunk.clamp(1, context);
        let matrix = |t: &crate::model::Tensor| HostBuffer::from_slice(&t.to_bf16_vec());
        let vector = |t: &crate::model::Tensor| HostBuffer::from_slice(&t.to_f32_vec());
        let layers = t
            .layers
            .iter()
            .map(|l| HostLayer {
                attn_norm: vector(&l.attn_norm),
                q: matrix(&l.q),
                k: matrix(&l.k),
                v: matrix(&l.v),
                o: matrix(&l.o),
                mlp_norm: vector(&l.mlp_norm),
                gate: matrix(&l.gate),
                up: matrix(&l.up),
                down: matrix(&l.down),
            })
            .collect();
        let lm_head = (t.lm_head.name != t.embed.name).then(|| matrix(&t.lm_head));
        let c = &config;
        let decode = DecodeShape {
            batch: 1,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            cache_len: context,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        };
        let num_splits = decode.choose_splits(EMULATED_SM_COUNT);
        let (partial_out, partial_ml) = decode.scratch_len(num_splits);
        let (h, f, qd, kvd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
        let sizes = [
            chunk * h,
            chunk * h,
            chunk * qd,
            chunk * kvd,
            chunk * kvd,
            chunk * qd,
            chunk * f,
            chunk * f,
            LOGIT_ROWS.min(chunk) * c.vocab_size,
            partial_out,
            partial_ml,
        ];
        // NaN, not zero: a row the forward reads before writing shows in the logits.
        let acts = sizes.iter().map(|&n| HostBuffer::from_slice(&vec![f32::NAN; n])).collect();
        let cache_len = c.num_layers * context * kvd;
        let (cos, sin) = c.rope_tables(context);
        let step_layout = StepLayout { chunk };
        Ok(EmulatedGpuModel {
            emu: Emulator::new(),
            embed: matrix(&t.embed),
            lm_head,
            final_norm: vector(&t.final_norm),
            layers,
            k_cache: HostBuffer::from_slice(&vec![bf16::NAN; cache_len]),
            v_cache: HostBuffer::from_slice(&vec![bf16::NAN; cache_len]),
            context,
            rope_cos: HostBuffer::from_slice(&cos),
            rope_sin: HostBuffer::from_slice(&sin),
            acts,
            num_splits,
            step: HostBuffer::from_slice(&vec![0u32; step_layout.len()]),
            step_layout,
            cached: 0,
            decode: DecodeKernels::Auto.resolve()?,
            config,
        })
    }

    /// Which kernels run the decode step (fused by default; `Auto` as on the GPU).
    pub fn set_decode_kernels(&mut self, decode: DecodeKernels) -> Result<()> {
        self.decode = decode.resolve()?;
        Ok(())
    }

    /// Kernels launched so far: the difference over one decode step is the number of kernel nodes
    /// the GPU model's decode graph holds.
    pub fn kernel_launches(&self) -> usize {
        self.emu.launch_count()
    }

    fn spans(&self) -> Result<ForwardSpans<'_>> {
        let a: Vec<_> = self.acts.iter().map(HostBuffer::span).collect();
        let step = self.step_layout.spans(self.step.span())?;
        let layers = self
            .layers
            .iter()
            .map(|l| LayerSpans {
                attn_norm: l.attn_norm.span(),
                q: l.q.span(),
                k: l.k.span(),
                v: l.v.span(),
                o: l.o.span(),
                mlp_norm: l.mlp_norm.span(),
                gate: l.gate.span(),
                up: l.up.span(),
                down: l.down.span(),
            })
            .collect();
        Ok(ForwardSpans {
            config: &self.config,
            embed: self.embed.span(),
            head: self.lm_head.as_ref().unwrap_or(&self.embed).span(),
            final_norm: self.final_norm.span(),
            layers,
            k_cache: self.k_cache.span(),
            v_cache: self.v_cache.span(),
            context: self.context,
            rope_cos: self.rope_cos.span(),
            rope_sin: self.rope_sin.span(),
            x: a[0],
            xn: a[1],
            q: a[2],
            k: a[3],
            v: a[4],
            attn: a[5],
            gate: a[6],
            up: a[7],
            logits: a[8],
            decode_partial_out: a[9],
            decode_partial_ml: a[10],
            num_splits: self.num_splits,
            step,
            gemm: Gemm::Tiled,
            decode: self.decode,
        })
    }
}

impl ForwardDevice for EmulatedGpuModel {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn chunk(&self) -> usize {
        self.step_layout.chunk
    }

    fn context(&self) -> usize {
        self.context
    }

    fn cached(&self) -> usize {
        self.cached
    }

    fn set_cached(&mut self, cached: usize) {
        self.cached = cached;
    }

    fn write_step(&mut self, tokens: &[u32], start: usize) -> Result<()> {
        self.step.write(&self.step_layout.fill(tokens, start));
        Ok(())
    }

    fn queue_layers(&mut self, n: usize) -> Result<()> {
        forward::queue_layers(&self.emu, &self.spans()?, n)
    }

    fn queue_last_logits(&mut self, n: usize) -> Result<()> {
        forward::queue_last_logits(&self.emu, &self.spans()?, n)
    }

    fn queue_logit_rows(&mut self, n: usize, r0: usize, r1: usize) -> Result<()> {
        forward::queue_logit_rows(&self.emu, &self.spans()?, n, r0, r1)
    }

    fn read_logits(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        out.extend_from_slice(&self.acts[8].to_vec()[..rows * self.config.vocab_size]);
        Ok(())
    }
}

impl CausalLm for EmulatedGpuModel {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn context_len(&self) -> usize {
        self.context
    }

    fn forward(&mut self, tokens: &[u32], start: usize, logits: Logits) -> Result<Vec<f32>> {
        forward_chunks(self, tokens, start, logits)
    }

    fn device_name(&self) -> String {
        "CPU emulator of the GPU kernels (sm_90a model, prefill GEMM: tiled)".into()
    }

    fn weight_bytes(&self) -> usize {
        weights::decode_read_bytes(&self.config)
    }

    fn memory_bandwidth(&self) -> Option<f64> {
        None
    }
}

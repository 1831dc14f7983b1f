//! The GPU model: a Llama forward pass on rooflab's kernels, bf16 weights, f32 residual stream and
//! accumulation, a contiguous bf16 KV cache.
//!
//! One token (decode) uses the GEMV kernels and split-KV decode attention, and is captured once
//! into a CUDA graph that every later step replays (the step buffer carries the token, position
//! and length). Several tokens (prefill, in chunks) use cuBLAS bf16 GEMMs when libcublas loads,
//! else the tiled GEMM kernel, and the prefill attention kernel. `device_name()` says which.

mod buffers;
#[cfg(feature = "emu")]
mod emulated;
mod forward;
mod weights;

#[cfg(feature = "emu")]
pub use emulated::EmulatedGpuModel;

use std::path::Path;

use cudarc::driver::CudaSlice;

use self::buffers::{Activations, KvCache};
use self::forward::{forward_chunks, ForwardDevice, ForwardSpans, Gemm, LayerSpans};
pub use self::forward::{DecodeKernels, DECODE_KERNELS_ENV};
use self::weights::GpuWeights;
use super::weights::LlamaTensors;
use super::{CausalLm, Checkpoint, DType, LlamaConfig, Logits};
use crate::cuda::{measure_copy_bandwidth, Blas, CapturedGraph, DevSpan, GpuContext, MemoryLedger};
use crate::kernels::attention_decode::{DecodeShape, MAX_GQA_GROUP};
use crate::kernels::{check_attention_heads, Kernels};
use crate::{Error, Result};

/// Which GEMM runs prefill (several tokens at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefillGemm {
    /// cuBLAS when libcublas loads, else the tiled kernel.
    #[default]
    Auto,
    /// cuBLAS or an error.
    Cublas,
    /// rooflab's tiled GEMM (f32 activations: closest to the CPU reference).
    Tiled,
}

/// Options of [`GpuModel`].
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// CUDA device ordinal.
    pub device: usize,
    /// Positions the KV cache holds (default: min(max_position_embeddings, 4096)).
    pub max_context: Option<usize>,
    /// Most tokens run through the layers at once; longer prompts go in chunks.
    pub prefill_chunk: usize,
    /// Capture the decode step into a CUDA graph and replay it (off: launch eagerly, for debugging).
    pub use_graphs: bool,
    pub prefill_gemm: PrefillGemm,
    /// Which kernels run the decode step (`Auto`: fused unless `ROOFLAB_DECODE=unfused`; unfused is
    /// the baseline).
    pub decode: DecodeKernels,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            device: 0,
            max_context: None,
            prefill_chunk: 512,
            use_graphs: true,
            prefill_gemm: PrefillGemm::Auto,
            decode: DecodeKernels::Auto,
        }
    }
}

/// Loads `dir` on GPU 0 with default options and the given context cap (what the CLI uses).
pub fn load(dir: &Path, max_context: Option<usize>) -> Result<Box<dyn CausalLm>> {
    Ok(Box::new(GpuModel::load(dir, GpuOptions { max_context, ..GpuOptions::default() })?))
}

pub struct GpuModel {
    /// First field, so it is dropped first: the graph's kernel nodes refer to the modules in
    /// `kernels` and the buffers below, which must outlive it.
    decode_graph: Option<CapturedGraph>,
    config: LlamaConfig,
    options: GpuOptions,
    gpu: GpuContext,
    kernels: Kernels,
    blas: Option<Blas>,
    /// Why cuBLAS is not used, when it is not.
    blas_note: Option<String>,
    weights: GpuWeights,
    cache: KvCache,
    rope_cos: CudaSlice<f32>,
    rope_sin: CudaSlice<f32>,
    acts: Activations,
    ledger: MemoryLedger,
    /// Positions `0 .. cached` of the KV cache hold keys and values.
    cached: usize,
    bandwidth: Option<f64>,
}

impl GpuModel {
    /// Loads `dir` (config.json + safetensors) onto GPU `options.device`.
    /// An unsupported shape is refused from config.json alone, before any GPU work.
    pub fn load(dir: &Path, options: GpuOptions) -> Result<Self> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        check_supported(&config)?;
        let gpu = GpuContext::new(options.device)?;
        let checkpoint = Checkpoint::open(dir)?;
        Self::with_gpu(gpu, config, &checkpoint, options)
    }

    /// Builds the model from an opened checkpoint.
    pub fn new(config: LlamaConfig, checkpoint: &Checkpoint, options: GpuOptions) -> Result<Self> {
        check_supported(&config)?;
        let gpu = GpuContext::new(options.device)?;
        Self::with_gpu(gpu, config, checkpoint, options)
    }

    /// A model of `config`'s shape with random bf16 weights, scaled like a trained model's, made on
    /// the device: for benchmarking shapes whose checkpoints are not at hand (Llama-3-8B would be a
    /// 16 GB file). The same `seed` gives the same weights. A shape the kernels do not cover is refused
    /// before any GPU work.
    pub fn random(config: LlamaConfig, seed: u64, options: GpuOptions) -> Result<Self> {
        check_supported(&config)?;
        let gpu = GpuContext::new(options.device)?;
        Self::build(gpu, config, options, |c, ledger, kernels| GpuWeights::random(c, seed, ledger, kernels))
    }

    fn with_gpu(gpu: GpuContext, config: LlamaConfig, checkpoint: &Checkpoint, options: GpuOptions) -> Result<Self> {
        check_supported(&config)?;
        let tensors = LlamaTensors::gather(checkpoint, &config)?;
        tensors.check_dtypes(&[DType::F32, DType::F16, DType::BF16])?;
        Self::build(gpu, config, options, |_, ledger, _| GpuWeights::upload(&tensors, ledger))
    }

    /// Everything but the weights, which `make_weights` uploads once the whole plan is known to fit.
    fn build(
        gpu: GpuContext,
        config: LlamaConfig,
        options: GpuOptions,
        make_weights: impl FnOnce(&LlamaConfig, &mut MemoryLedger, &Kernels) -> Result<GpuWeights>,
    ) -> Result<Self> {
        let context = options.max_context.unwrap_or(4096).min(config.max_position_embeddings);
        if context == 0 {
            return Err(Error::Invalid("max_context must be positive".into()));
        }
        let chunk = options.prefill_chunk.clamp(1, context);
        let options = GpuOptions { decode: options.decode.resolve()?, ..options };
        let kernels = Kernels::load(&gpu)?;
        let (blas, blas_note) = match (options.prefill_gemm, Blas::try_new(&gpu)) {
            (PrefillGemm::Tiled, _) => (None, Some("tiled GEMM requested".to_string())),
            (_, Ok(blas)) => (Some(blas), None),
            (PrefillGemm::Cublas, Err(why)) => return Err(Error::Unsupported(format!("cuBLAS requested: {why}"))),
            (PrefillGemm::Auto, Err(why)) => (None, Some(why)),
        };

        // Measure bandwidth while the memory is still free, then check the whole plan fits.
        let mut ledger = MemoryLedger::new(&gpu);
        let (free, _) = gpu.memory_info()?;
        let bandwidth = measure_copy_bandwidth(&gpu, (256 << 20).min(free / 8)).ok();
        gpu.synchronize()?; // the probe's buffers are freed on the stream; let the driver see it
        let decode = DecodeShape {
            batch: 1,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            cache_len: context,
            scale: 1.0 / (config.head_dim as f32).sqrt(),
        };
        let num_splits = decode.choose_splits(gpu.sm_count());
        let plan = [
            ("weights", weights::device_bytes(&config)),
            ("kv cache", KvCache::bytes(&config, context)),
            ("activations", Activations::bytes(&config, chunk, &decode, num_splits)),
            ("rope tables", 4 * context * config.head_dim),
        ];
        let total: usize = plan.iter().map(|(_, b)| b).sum();
        let parts: Vec<String> =
            plan.iter().map(|(w, b)| format!("{w} {:.1} MiB", *b as f64 / (1 << 20) as f64)).collect();
        ledger.check_fits(&format!("the model ({})", parts.join(" + ")), total)?;

        let weights = make_weights(&config, &mut ledger, &kernels)?;
        let cache = KvCache::new(&config, context, &mut ledger)?;
        let (cos, sin) = config.rope_tables(context);
        let rope_cos = ledger.upload("rope tables", "rope cos table", &cos)?;
        let rope_sin = ledger.upload("rope tables", "rope sin table", &sin)?;
        let acts = Activations::new(&config, chunk, &decode, num_splits, blas.is_some(), &mut ledger)?;
        gpu.synchronize()?;
        Ok(GpuModel {
            config,
            options,
            gpu,
            kernels,
            blas,
            blas_note,
            weights,
            cache,
            rope_cos,
            rope_sin,
            acts,
            ledger,
            cached: 0,
            decode_graph: None,
            bandwidth,
        })
    }

    /// Turns decode-step CUDA graphs on or off (off: every launch is queued eagerly).
    pub fn set_use_graphs(&mut self, on: bool) {
        self.options.use_graphs = on;
    }

    /// Switches the decode step between the fused and the unfused kernels (`Auto`: as at load); the
    /// next step captures a new graph.
    pub fn set_decode_kernels(&mut self, decode: DecodeKernels) -> Result<()> {
        let decode = decode.resolve()?;
        if decode != self.options.decode {
            self.decode_graph = None;
            self.options.decode = decode;
        }
        Ok(())
    }

    pub fn uses_cublas(&self) -> bool {
        self.blas.is_some()
    }

    /// Device memory the model allocated, per purpose.
    pub fn memory_summary(&self) -> String {
        self.ledger.summary()
    }

    pub fn gpu(&self) -> &GpuContext {
        &self.gpu
    }

    /// The forward pass's view of this model's buffers.
    fn spans(&self) -> Result<ForwardSpans<'_>> {
        let (w, a) = (&self.weights, &self.acts);
        let layers = w
            .layers
            .iter()
            .map(|l| LayerSpans {
                attn_norm: DevSpan::of(&l.attn_norm),
                q: DevSpan::of(&l.q),
                k: DevSpan::of(&l.k),
                v: DevSpan::of(&l.v),
                o: DevSpan::of(&l.o),
                mlp_norm: DevSpan::of(&l.mlp_norm),
                gate: DevSpan::of(&l.gate),
                up: DevSpan::of(&l.up),
                down: DevSpan::of(&l.down),
            })
            .collect();
        let gemm = match (&self.blas, &a.x_bf16) {
            (Some(blas), Some(scratch)) => Gemm::Cublas(blas, DevSpan::of(scratch)),
            _ => Gemm::Tiled,
        };
        Ok(ForwardSpans {
            config: &self.config,
            embed: DevSpan::of(&w.embed),
            head: DevSpan::of(w.head()),
            final_norm: DevSpan::of(&w.final_norm),
            layers,
            k_cache: DevSpan::of(&self.cache.k),
            v_cache: DevSpan::of(&self.cache.v),
            context: self.cache.context,
            rope_cos: DevSpan::of(&self.rope_cos),
            rope_sin: DevSpan::of(&self.rope_sin),
            x: DevSpan::of(&a.x),
            xn: DevSpan::of(&a.xn),
            q: DevSpan::of(&a.q),
            k: DevSpan::of(&a.k),
            v: DevSpan::of(&a.v),
            attn: DevSpan::of(&a.attn),
            gate: DevSpan::of(&a.gate),
            up: DevSpan::of(&a.up),
            logits: DevSpan::of(&a.logits),
            decode_partial_out: DevSpan::of(&a.decode_partial_out),
            decode_partial_ml: DevSpan::of(&a.decode_partial_ml),
            num_splits: a.num_splits,
            step: a.step_spans()?,
            gemm,
            decode: self.options.decode,
        })
    }
}

impl ForwardDevice for GpuModel {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn chunk(&self) -> usize {
        self.acts.chunk
    }

    fn context(&self) -> usize {
        self.cache.context
    }

    fn cached(&self) -> usize {
        self.cached
    }

    fn set_cached(&mut self, cached: usize) {
        self.cached = cached;
    }

    fn write_step(&mut self, tokens: &[u32], start: usize) -> Result<()> {
        let host = self.acts.step_layout.fill(tokens, start);
        self.gpu
            .stream()
            .memcpy_htod(&host, &mut self.acts.step)
            .map_err(|e| Error::Cuda(format!("uploading the step buffer: {e}")))
    }

    fn queue_layers(&mut self, n: usize) -> Result<()> {
        forward::queue_layers(&self.kernels, &self.spans()?, n)
    }

    fn queue_last_logits(&mut self, n: usize) -> Result<()> {
        forward::queue_last_logits(&self.kernels, &self.spans()?, n)
    }

    fn queue_logit_rows(&mut self, n: usize, r0: usize, r1: usize) -> Result<()> {
        forward::queue_logit_rows(&self.kernels, &self.spans()?, n, r0, r1)
    }

    /// Replays the captured decode graph (capturing it the first time), or queues the same launches
    /// eagerly when graphs are off.
    fn decode_step(&mut self) -> Result<()> {
        if !self.options.use_graphs {
            let m = self.spans()?;
            forward::queue_layers(&self.kernels, &m, 1)?;
            return forward::queue_last_logits(&self.kernels, &m, 1);
        }
        if self.decode_graph.is_none() {
            let graph = CapturedGraph::capture(&self.gpu, || {
                let m = self.spans()?;
                forward::queue_layers(&self.kernels, &m, 1)?;
                forward::queue_last_logits(&self.kernels, &m, 1)
            })?;
            self.decode_graph = Some(graph);
        }
        match &self.decode_graph {
            Some(graph) => graph.replay(),
            None => Ok(()),
        }
    }

    fn read_logits(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let len = rows * self.config.vocab_size;
        let start = out.len();
        out.resize(start + len, 0.0);
        self.gpu
            .stream()
            .memcpy_dtoh(&self.acts.logits.slice(0..len), &mut out[start..])
            .map_err(|e| Error::Cuda(format!("copying logits to the host: {e}")))?;
        self.gpu.synchronize()
    }
}

/// The shapes the kernels handle; anything else is refused by name before any upload.
fn check_supported(c: &LlamaConfig) -> Result<()> {
    check_attention_heads(c.num_heads, c.num_kv_heads, c.head_dim)?;
    if c.gqa_group() > MAX_GQA_GROUP {
        return Err(Error::Unsupported(format!(
            "{} query heads per KV head: the GPU decode attention handles at most {MAX_GQA_GROUP}",
            c.gqa_group()
        )));
    }
    Ok(())
}

impl CausalLm for GpuModel {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn context_len(&self) -> usize {
        self.cache.context
    }

    fn forward(&mut self, tokens: &[u32], start: usize, logits: Logits) -> Result<Vec<f32>> {
        forward_chunks(self, tokens, start, logits)
    }

    fn device_name(&self) -> String {
        let (major, minor) = self.gpu.compute_capability();
        let gemm = match (&self.blas, &self.blas_note) {
            (Some(_), _) => "cuBLAS".to_string(),
            (None, Some(why)) => format!("tiled ({why})"),
            (None, None) => "tiled".to_string(),
        };
        format!(
            "{} (sm_{major}{minor}, PTX {}, prefill GEMM: {gemm}, decode kernels: {}, CUDA graphs {})",
            self.gpu.name(),
            self.kernels.modules().arch(),
            self.options.decode.name(),
            if self.options.use_graphs { "on" } else { "off" }
        )
    }

    fn weight_bytes(&self) -> usize {
        weights::decode_read_bytes(&self.config)
    }

    fn memory_bandwidth(&self) -> Option<f64> {
        self.bandwidth
    }
}

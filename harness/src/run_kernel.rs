//! `rooflab run-kernel attention-prefill --inputs in.safetensors --out out.safetensors`: one rooflab
//! kernel on tensors from a file, its outputs written to another, so that any framework can check it
//! (harness/peers/check_run_kernel.py does so against PyTorch's scaled_dot_product_attention).
//!
//! attention-prefill reads
//!   q            bf16 or f16, `[total_q, H, D]` or `[B, S_q, H, D]`
//!   k, v         same type, `[total_k, KVH, D]` or `[B, S_k, KVH, D]` (H a multiple of KVH, D 64 or 128)
//!   cu_seqlens_q, cu_seqlens_k   optional, int32 or int64 `[B + 1]` (FlashAttention's varlen layout:
//!                sequence b owns rows cu[b] .. cu[b+1]); both or neither; without them a 4-D q/k gives
//!                B sequences of equal length and a 3-D one a single sequence
//!   q_offsets    optional, int32 or int64 `[B]`: position of each sequence's first query among its keys
//!                (chunked prefill; default 0, PyTorch's top-left causal alignment)
//! and writes `o` (q's type and shape) and, with `--lse`, `lse` (f32 `[H, total_q]`, natural log).
//! Input problems are reported before the GPU is opened; without a GPU the error is the engine's
//! one-line `no CUDA GPU: ...`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use rooflab::cuda::{CudaSlice, DevSpan, GpuContext};
use rooflab::kernels::attention_prefill::PrefillShape;
use rooflab::kernels::attention_prefill::{self as prefill, Elem, KvLayout, Operand, PrefillIo, PrefillKernel};
use rooflab::kernels::Kernels;
use rooflab::model::checkpoint::write_safetensors;
use rooflab::model::DType;

/// Kernels `run-kernel` knows.
pub const KERNELS: [&str; 1] = ["attention-prefill"];

/// What `rooflab run-kernel` was asked to do.
#[derive(Debug, Clone)]
pub struct RunKernelArgs {
    pub kernel: String,
    pub inputs: PathBuf,
    pub out: PathBuf,
    pub causal: bool,
    /// Softmax scale; default `1 / sqrt(D)`.
    pub scale: Option<f32>,
    pub lse: bool,
    /// flash (default: the fast kernel for this GPU), flash-tma, flash-mma, flash-wgmma, tiled, naive-row or
    /// naive-materialised.
    pub implementation: String,
}

pub fn run(args: &RunKernelArgs) -> Result<()> {
    match args.kernel.as_str() {
        "attention-prefill" => attention_prefill(args),
        other => bail!("unknown kernel {other:?}: run-kernel knows {}", KERNELS.join(", ")),
    }
}

/// One tensor of a safetensors file: its dtype name, shape and little-endian bytes.
#[derive(Debug, Clone)]
struct RawTensor {
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn dtype_size(dtype: &str) -> Option<usize> {
    match dtype {
        "BF16" | "F16" | "I16" | "U16" => Some(2),
        "F32" | "I32" | "U32" => Some(4),
        "F64" | "I64" | "U64" => Some(8),
        "BOOL" | "U8" | "I8" => Some(1),
        _ => None,
    }
}

/// Every tensor of a safetensors file, checked against the file's length.
fn read_safetensors(path: &Path) -> Result<BTreeMap<String, RawTensor>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bad = |m: String| anyhow!("{}: {m}", path.display());
    if data.len() < 8 {
        return Err(bad("not a safetensors file (shorter than its 8-byte header length)".into()));
    }
    let header_len = u64::from_le_bytes(data[..8].try_into().unwrap_or_default()) as usize;
    if header_len > data.len() - 8 {
        return Err(bad(format!("truncated safetensors file: header of {header_len} bytes, file of {}", data.len())));
    }
    let start = 8 + header_len;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&data[8..start]).map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| entry.get(key).ok_or_else(|| bad(format!("tensor `{name}` has no {key}")));
        let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
        let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone())
            .map_err(|e| bad(format!("tensor `{name}`: bad shape: {e}")))?;
        let [begin, end]: [usize; 2] = serde_json::from_value(field("data_offsets")?.clone())
            .map_err(|e| bad(format!("tensor `{name}`: bad data_offsets: {e}")))?;
        let size = dtype_size(&dtype).ok_or_else(|| bad(format!("tensor `{name}` has unknown dtype {dtype}")))?;
        let numel: usize = shape.iter().product();
        if end < begin || end - begin != numel * size || start + end > data.len() {
            return Err(bad(format!("tensor `{name}`: data_offsets [{begin}, {end}] do not fit {dtype} {shape:?}")));
        }
        tensors.insert(name, RawTensor { dtype, shape, bytes: data[start + begin..start + end].to_vec() });
    }
    Ok(tensors)
}

/// q, k and v with their layout and the batch description, all checked.
#[derive(Debug)]
struct PrefillInputs {
    elem: Elem,
    q_shape: Vec<usize>,
    q: Vec<u16>,
    k: Vec<u16>,
    v: Vec<u16>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    cu_q: Vec<u32>,
    cu_k: Vec<u32>,
    q_offsets: Vec<u32>,
}

impl PrefillInputs {
    fn batch(&self) -> usize {
        self.cu_q.len() - 1
    }

    fn total_q(&self) -> usize {
        *self.cu_q.last().unwrap_or(&0) as usize
    }

    fn total_k(&self) -> usize {
        *self.cu_k.last().unwrap_or(&0) as usize
    }
}

fn halves(t: &RawTensor) -> Vec<u16> {
    t.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
}

/// Integer tensor (int32/int64/uint32) as u32, rank 1; `what` names it in errors.
fn indices(name: &str, t: &RawTensor) -> Result<Vec<u32>> {
    if t.shape.len() != 1 {
        bail!("`{name}` must be 1-D, got shape {:?}", t.shape);
    }
    let values: Vec<i64> = match t.dtype.as_str() {
        "I32" => t.bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect(),
        "U32" => t.bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect(),
        "I64" => t.bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default())).collect(),
        other => bail!("`{name}` must be int32 or int64, got {other}"),
    };
    values
        .iter()
        .map(|&v| u32::try_from(v).map_err(|_| anyhow!("`{name}` holds {v}, outside 0 ..= {}", u32::MAX)))
        .collect()
}

/// Checks `cu` is a valid offsets array for `total` rows: starts at 0, never decreases, ends at `total`.
fn check_offsets(name: &str, cu: &[u32], total: usize) -> Result<()> {
    if cu.first() != Some(&0) || cu.windows(2).any(|w| w[1] < w[0]) || *cu.last().unwrap_or(&0) as usize != total {
        bail!("`{name}` must start at 0, never decrease and end at {total} (the rows of the tensor), got {cu:?}");
    }
    Ok(())
}

/// (rows, heads, head_dim, batch if 4-D) of a 3-D `[rows, heads, D]` or 4-D `[B, S, heads, D]` tensor.
fn rows_heads_dim(name: &str, shape: &[usize]) -> Result<(usize, usize, usize, Option<usize>)> {
    match *shape {
        [rows, heads, d] => Ok((rows, heads, d, None)),
        [b, s, heads, d] => Ok((b * s, heads, d, Some(b))),
        _ => bail!("`{name}` must be [total, heads, head_dim] or [batch, seq, heads, head_dim], got {shape:?}"),
    }
}

fn equal_offsets(batch: usize, rows: usize) -> Vec<u32> {
    (0..=batch).map(|i| (i * (rows / batch.max(1))) as u32).collect()
}

fn prefill_inputs(tensors: &BTreeMap<String, RawTensor>) -> Result<PrefillInputs> {
    let get = |name: &str| tensors.get(name).ok_or_else(|| anyhow!("the inputs have no tensor `{name}`"));
    let (q, k, v) = (get("q")?, get("k")?, get("v")?);
    let elem = match q.dtype.as_str() {
        "BF16" => Elem::Bf16,
        "F16" => Elem::F16,
        other => bail!("`q` must be BF16 or F16, got {other}"),
    };
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype != q.dtype {
            bail!("`{name}` is {} but `q` is {}: they must have the same dtype", t.dtype, q.dtype);
        }
    }
    if k.shape != v.shape {
        bail!("`k` {:?} and `v` {:?} must have the same shape", k.shape, v.shape);
    }
    let (total_q, num_heads, head_dim, q_batch) = rows_heads_dim("q", &q.shape)?;
    let (total_k, num_kv_heads, k_dim, k_batch) = rows_heads_dim("k", &k.shape)?;
    if k_dim != head_dim {
        bail!("`q` has head_dim {head_dim} but `k` has {k_dim}");
    }
    let (cu_q, cu_k) = match (tensors.get("cu_seqlens_q"), tensors.get("cu_seqlens_k")) {
        (Some(cq), Some(ck)) => (indices("cu_seqlens_q", cq)?, indices("cu_seqlens_k", ck)?),
        (None, None) => match (q_batch, k_batch) {
            (Some(bq), Some(bk)) if bq == bk => (equal_offsets(bq, total_q), equal_offsets(bk, total_k)),
            (None, None) => (vec![0, total_q as u32], vec![0, total_k as u32]),
            _ => bail!("without cu_seqlens, `q` and `k` must both be 4-D with the same batch, or both 3-D"),
        },
        _ => bail!("give both `cu_seqlens_q` and `cu_seqlens_k`, or neither"),
    };
    if cu_q.len() != cu_k.len() || cu_q.len() < 2 {
        bail!(
            "`cu_seqlens_q` ({}) and `cu_seqlens_k` ({}) must both hold batch + 1 >= 2 offsets",
            cu_q.len(),
            cu_k.len()
        );
    }
    check_offsets("cu_seqlens_q", &cu_q, total_q)?;
    check_offsets("cu_seqlens_k", &cu_k, total_k)?;
    let batch = cu_q.len() - 1;
    let q_offsets = match tensors.get("q_offsets") {
        Some(t) => indices("q_offsets", t)?,
        None => vec![0; batch],
    };
    if q_offsets.len() != batch {
        bail!("`q_offsets` holds {} values for a batch of {batch}", q_offsets.len());
    }
    rooflab::kernels::check_attention_heads(num_heads, num_kv_heads, head_dim)?;
    Ok(PrefillInputs {
        elem,
        q_shape: q.shape.clone(),
        q: halves(q),
        k: halves(k),
        v: halves(v),
        num_heads,
        num_kv_heads,
        head_dim,
        cu_q,
        cu_k,
        q_offsets,
    })
}

fn implementation(name: &str) -> Result<PrefillKernel> {
    PrefillKernel::ALL.into_iter().find(|k| k.name().replace('_', "-") == name).ok_or_else(|| {
        anyhow!(
            "unknown implementation {name:?}: flash, flash-tma, flash-mma, flash-wgmma, tiled, naive-row or naive-materialised"
        )
    })
}

/// Device copies of 16-bit values as the element type the kernel expects.
enum Halves {
    Bf16(CudaSlice<bf16>),
    F16(CudaSlice<f16>),
}

impl Halves {
    fn upload(gpu: &GpuContext, elem: Elem, bits: &[u16]) -> Result<Halves> {
        let stream = gpu.stream();
        let bits = if bits.is_empty() { &[0u16][..] } else { bits };
        Ok(match elem {
            Elem::Bf16 => {
                Halves::Bf16(stream.clone_htod(&bits.iter().map(|&b| bf16::from_bits(b)).collect::<Vec<_>>())?)
            }
            Elem::F16 => Halves::F16(stream.clone_htod(&bits.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>())?),
        })
    }

    fn operand(&self) -> Operand<'_> {
        match self {
            Halves::Bf16(s) => Operand::Bf16(DevSpan::of(s)),
            Halves::F16(s) => Operand::F16(DevSpan::of(s)),
        }
    }

    fn download_bytes(&self, gpu: &GpuContext, len: usize) -> Result<Vec<u8>> {
        let bits: Vec<u16> = match self {
            Halves::Bf16(s) => gpu.stream().clone_dtoh(s)?.iter().map(|x| x.to_bits()).collect(),
            Halves::F16(s) => gpu.stream().clone_dtoh(s)?.iter().map(|x| x.to_bits()).collect(),
        };
        Ok(bits[..len].iter().flat_map(|b| b.to_le_bytes()).collect())
    }
}

fn attention_prefill(args: &RunKernelArgs) -> Result<()> {
    let kernel = implementation(&args.implementation)?;
    let inputs = prefill_inputs(&read_safetensors(&args.inputs)?)?;
    let scale = args.scale.unwrap_or(1.0 / (inputs.head_dim as f32).sqrt());
    let (h, d, total_q) = (inputs.num_heads, inputs.head_dim, inputs.total_q());
    let lens = |cu: &[u32]| cu.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0);
    let shape = PrefillShape {
        batch: inputs.batch(),
        num_heads: h,
        num_kv_heads: inputs.num_kv_heads,
        head_dim: d,
        total_q,
        max_q_len: lens(&inputs.cu_q),
        max_kv_len: lens(&inputs.cu_k).max(1),
        causal: args.causal,
        scale,
    };
    // Shape errors before the GPU: the launch plan checks the same things the launch will.
    prefill::plan(kernel, inputs.elem, &shape)?;

    let gpu = GpuContext::new(0)?;
    let kernels = Kernels::load(&gpu)?;
    let stream = gpu.stream();
    let q = Halves::upload(&gpu, inputs.elem, &inputs.q)?;
    let k = Halves::upload(&gpu, inputs.elem, &inputs.k)?;
    let v = Halves::upload(&gpu, inputs.elem, &inputs.v)?;
    let out = Halves::upload(&gpu, inputs.elem, &vec![0u16; total_q * h * d])?;
    let lse = stream.alloc_zeros::<f32>((h * total_q).max(1))?;
    let cu_q = stream.clone_htod(&inputs.cu_q)?;
    let cu_k = stream.clone_htod(&inputs.cu_k)?;
    let offsets = stream.clone_htod(&inputs.q_offsets)?;
    let scores = match kernel {
        PrefillKernel::NaiveMaterialised => Some(stream.alloc_zeros::<f32>(prefill::scores_len(&shape).max(1))?),
        _ => None,
    };
    let io = PrefillIo {
        q: q.operand(),
        k: k.operand(),
        v: v.operand(),
        out: out.operand(),
        lse: args.lse.then(|| DevSpan::of(&lse)),
        cu_seqlens_q: DevSpan::of(&cu_q),
        q_offsets: Some(DevSpan::of(&offsets)),
        kv: KvLayout::Varlen { cu_seqlens_k: DevSpan::of(&cu_k), total_k: inputs.total_k() },
    };
    prefill::run(&kernels, kernel, &io, &shape, scores.as_ref().map(DevSpan::of))?;
    let o_bytes = out.download_bytes(&gpu, total_q * h * d)?;
    let dtype = if inputs.elem == Elem::Bf16 { DType::BF16 } else { DType::F16 };
    let mut tensors = vec![("o".to_string(), dtype, inputs.q_shape.clone(), o_bytes)];
    if args.lse {
        let values = stream.clone_dtoh(&lse)?;
        let bytes = values[..h * total_q].iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push(("lse".to_string(), DType::F32, vec![h, total_q], bytes));
    }
    gpu.synchronize()?;
    write_safetensors(&args.out, &tensors)?;
    eprintln!(
        "attention-prefill ({}) {} sequences, {total_q} queries, H={h} KVH={} D={d} causal={} -> {}",
        kernel.name(),
        inputs.batch(),
        inputs.num_kv_heads,
        args.causal,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rooflab::reference::{attention, AttnShape};
    use rooflab::sample::Rng;

    type Entry = (String, DType, Vec<usize>, Vec<u8>);

    fn bf16_tensor(name: &str, shape: &[usize], values: &[f32]) -> Entry {
        let bytes = values.iter().flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes()).collect();
        (name.to_string(), DType::BF16, shape.to_vec(), bytes)
    }

    /// write_safetensors only knows float types: int tensors are written by hand here.
    fn write_with_ints(path: &Path, floats: &[Entry], ints: &[(&str, &[i64])]) {
        let mut header = serde_json::Map::new();
        let mut body = Vec::new();
        for (name, dtype, shape, bytes) in floats {
            let entry = serde_json::json!({"dtype": dtype.safetensors_name(), "shape": shape,
                "data_offsets": [body.len(), body.len() + bytes.len()]});
            header.insert(name.clone(), entry);
            body.extend_from_slice(bytes);
        }
        for (name, values) in ints {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let entry = serde_json::json!({"dtype": "I64", "shape": [values.len()],
                "data_offsets": [body.len(), body.len() + bytes.len()]});
            header.insert(name.to_string(), entry);
            body.extend_from_slice(&bytes);
        }
        let text = serde_json::to_string(&header).unwrap();
        let mut file = (text.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(text.as_bytes());
        file.extend_from_slice(&body);
        std::fs::write(path, file).unwrap();
    }

    fn args(dir: &Path) -> RunKernelArgs {
        RunKernelArgs {
            kernel: "attention-prefill".into(),
            inputs: dir.join("in.safetensors"),
            out: dir.join("out.safetensors"),
            causal: true,
            scale: None,
            lse: true,
            implementation: "flash".into(),
        }
    }

    /// A varlen batch of two sequences (GQA 4/2, D 64), int64 offsets like torch writes them. On a GPU
    /// machine the output must match the CPU reference; elsewhere the one-line NoGpu error comes back.
    #[test]
    fn attention_prefill_runs_or_says_there_is_no_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let (h, kvh, d) = (4, 2, 64);
        let (lens_q, lens_k) = ([5usize, 3], [5usize, 7]);
        let mut rng = Rng::new(5);
        let mut randn = |n: usize| -> Vec<f32> { (0..n).map(|_| bf16::from_f32(rng.normal()).to_f32()).collect() };
        let (tq, tk) = (8, 12);
        let (q, k, v) = (randn(tq * h * d), randn(tk * kvh * d), randn(tk * kvh * d));
        let floats = [
            bf16_tensor("q", &[tq, h, d], &q),
            bf16_tensor("k", &[tk, kvh, d], &k),
            bf16_tensor("v", &[tk, kvh, d], &v),
        ];
        write_with_ints(
            &dir.path().join("in.safetensors"),
            &floats,
            &[("cu_seqlens_q", &[0, 5, 8]), ("cu_seqlens_k", &[0, 5, 12]), ("q_offsets", &[0, 4])],
        );
        let a = args(dir.path());
        match run(&a) {
            Err(e) if !rooflab::cuda::gpu_available() => {
                let text = format!("{e:#}");
                assert!(text.starts_with("no CUDA GPU") && !text.contains('\n'), "{text}");
            }
            Err(e) => panic!("{e:#}"),
            Ok(()) => {
                let out = read_safetensors(&a.out).unwrap();
                assert_eq!(out["o"].shape, vec![tq, h, d]);
                assert_eq!(out["lse"].shape, vec![h, tq]);
                let got: Vec<f32> = halves(&out["o"]).iter().map(|&b| bf16::from_bits(b).to_f32()).collect();
                let (mut q0, mut k0) = (0, 0);
                for (b, (&lq, &lk)) in lens_q.iter().zip(&lens_k).enumerate() {
                    let s = AttnShape {
                        num_heads: h,
                        num_kv_heads: kvh,
                        head_dim: d,
                        q_len: lq,
                        kv_len: lk,
                        q_offset: [0, 4][b],
                        causal: true,
                        scale: 0.125,
                    };
                    let kv = k0 * kvh * d..(k0 + lk) * kvh * d;
                    let (want, _) = attention(&q[q0 * h * d..(q0 + lq) * h * d], &k[kv.clone()], &v[kv], &s);
                    for (i, (g, w)) in got[q0 * h * d..(q0 + lq) * h * d].iter().zip(&want).enumerate() {
                        assert!((g - w).abs() < 2e-2 * (1.0 + w.abs()), "sequence {b} element {i}: {g} vs {w}");
                    }
                    (q0, k0) = (q0 + lq, k0 + lk);
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_named_before_the_gpu_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.safetensors");
        let q = bf16_tensor("q", &[4, 2, 64], &[0.5; 4 * 2 * 64]);
        let kv = |name: &str, d: usize| bf16_tensor(name, &[4, 2, d], &vec![0.5; 4 * 2 * d]);
        let err = |floats: &[Entry], ints: &[(&str, &[i64])], a: &RunKernelArgs| {
            write_with_ints(&path, floats, ints);
            format!("{:#}", run(a).unwrap_err())
        };
        let a = args(dir.path());
        assert!(err(&[q.clone(), kv("k", 64)], &[], &a).contains("no tensor `v`"));
        assert!(err(&[q.clone(), kv("k", 64), kv("v", 96)], &[], &a).contains("same shape"));
        assert!(err(&[q.clone(), kv("k", 96), kv("v", 96)], &[], &a).contains("head_dim 64 but `k` has 96"));
        let e = err(&[q.clone(), kv("k", 64), kv("v", 64)], &[("cu_seqlens_q", &[0, 4])], &a);
        assert!(e.contains("both"), "{e}");
        let e =
            err(&[q.clone(), kv("k", 64), kv("v", 64)], &[("cu_seqlens_q", &[0, 3]), ("cu_seqlens_k", &[0, 4])], &a);
        assert!(e.contains("end at 4"), "{e}");
        let odd = [bf16_tensor("q", &[4, 2, 96], &[0.5; 4 * 2 * 96]), kv("k", 96), kv("v", 96)];
        assert!(err(&odd, &[], &a).contains("head_dim 96"));
        let e = err(
            &[q.clone(), kv("k", 64), kv("v", 64)],
            &[],
            &RunKernelArgs { implementation: "fast".into(), ..a.clone() },
        );
        assert!(e.contains("unknown implementation"), "{e}");
        let e = err(&[q, kv("k", 64), kv("v", 64)], &[], &RunKernelArgs { kernel: "gemv".into(), ..a });
        assert!(e.contains("unknown kernel"), "{e}");
        assert!(read_safetensors(&dir.path().join("missing.safetensors")).is_err());
    }
}

//! The decode-attention workload: one query token per sequence against a contiguous bf16 KV cache of
//! `L` tokens, `q`/`out` `[B][H][D]` f32, caches `[B][L][KVH][D]` bf16.
//!
//! Implementations: rooflab's split-KV kernel (split + combine, the splits the engine would choose)
//! and the naive one-block-per-query-head kernel. No vendor peer is reachable through cudarc here
//! (cuDNN is not enabled); torch's flash and cuDNN decode are the PyTorch peers.

use anyhow::{anyhow, Result};
use half::bf16;
use rayon::prelude::*;
use rooflab::cuda::{CudaSlice, DevSpan};
use rooflab::kernels::attention_decode::{attention_decode, attention_decode_naive, DecodeScratch, DecodeShape};
use rooflab::reference::{attention, AttnShape};

use super::data::{self, F32_OUTPUT_BOUND};
use super::{Device, Implementation, Workload};
use crate::bench::Case;

const MAX_COPIES: usize = 256;
const IMPLEMENTATIONS: [Implementation; 2] = [Implementation::rooflab("rooflab"), Implementation::naive()];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeArgs {
    pub batch: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Cached tokens per sequence (every sequence is full).
    pub context: usize,
    pub head_dim: usize,
}

impl DecodeArgs {
    pub fn from_case(case: &Case) -> Result<Self> {
        let get = |key: &str| case.int(key).map(|v| v as usize).ok_or_else(|| anyhow!("decode case has no {key}"));
        Ok(DecodeArgs {
            batch: get("B")?,
            num_heads: get("H")?,
            num_kv_heads: get("KVH")?,
            context: get("L")?,
            head_dim: get("D")?,
        })
    }

    pub fn label(&self) -> String {
        let DecodeArgs { batch, num_heads, num_kv_heads, context, head_dim } = self;
        format!("attention_decode B={batch} H={num_heads} KVH={num_kv_heads} L={context} D={head_dim}")
    }

    fn shape(&self) -> DecodeShape {
        DecodeShape {
            batch: self.batch,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            cache_len: self.context,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
        }
    }
}

/// One checked sequence of copy 0, widened for the CPU reference.
struct CheckedSequence {
    index: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

pub struct DecodeWorkload<'d> {
    device: &'d Device,
    args: DecodeArgs,
    shape: DecodeShape,
    copies: usize,
    q: CudaSlice<f32>,
    q_stride: usize,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    cache_stride: usize,
    seq_lens: CudaSlice<u32>,
    out: CudaSlice<f32>,
    partial_out: CudaSlice<f32>,
    partial_ml: CudaSlice<f32>,
    num_splits: usize,
    /// The first and the last sequence: the CPU reference of all 32 sequences at 16k tokens would take
    /// longer than timing them.
    checked: Vec<CheckedSequence>,
    reference: Option<Vec<f32>>,
}

impl<'d> DecodeWorkload<'d> {
    pub fn new(device: &'d Device, args: DecodeArgs, rotation_bytes: u64) -> Result<Self> {
        let DecodeArgs { batch, num_heads, num_kv_heads, context, head_dim } = args;
        if batch == 0 || context == 0 {
            return Err(anyhow!("{}: batch and context must be positive", args.label()));
        }
        let shape = args.shape();
        let (q_len, cache_len) = (batch * num_heads * head_dim, batch * context * num_kv_heads * head_dim);
        let copies = data::rotation_copies((4 * q_len + 4 * cache_len) as u64, rotation_bytes, MAX_COPIES);
        let (q_stride, cache_stride) = (data::copy_stride(q_len, 4), data::copy_stride(cache_len, 2));
        let seed = data::seed_for(&args.label());
        let host_q = data::random_f32(copies * q_stride, seed, 1.0);
        let host_k = data::random_bf16(copies * cache_stride, seed ^ 1, 1.0);
        let host_v = data::random_bf16(copies * cache_stride, seed ^ 2, 1.0);
        let num_splits = shape.choose_splits(device.gpu.sm_count());
        let (partial_len, ml_len) = shape.scratch_len(num_splits);
        let stream = device.gpu.stream();
        let err = |e: cudarc::driver::DriverError| anyhow!("{}: allocating inputs: {e}", args.label());
        let q = stream.clone_htod(&host_q).map_err(err)?;
        let k = stream.clone_htod(&host_k).map_err(err)?;
        let v = stream.clone_htod(&host_v).map_err(err)?;
        let seq_lens = stream.clone_htod(&vec![context as u32; batch]).map_err(err)?;
        let out = stream.alloc_zeros::<f32>(q_len).map_err(err)?;
        let partial_out = stream.alloc_zeros::<f32>(partial_len.max(1)).map_err(err)?;
        let partial_ml = stream.alloc_zeros::<f32>(ml_len.max(1)).map_err(err)?;
        let mut indices = vec![0, batch - 1];
        indices.dedup();
        let per_seq = context * num_kv_heads * head_dim;
        let per_q = num_heads * head_dim;
        let checked = indices
            .into_iter()
            .map(|b| CheckedSequence {
                index: b,
                q: host_q[b * per_q..(b + 1) * per_q].to_vec(),
                k: data::widen(&host_k[b * per_seq..(b + 1) * per_seq]),
                v: data::widen(&host_v[b * per_seq..(b + 1) * per_seq]),
            })
            .collect();
        Ok(DecodeWorkload {
            device,
            args,
            shape,
            copies,
            q,
            q_stride,
            k,
            v,
            cache_stride,
            seq_lens,
            out,
            partial_out,
            partial_ml,
            num_splits,
            checked,
            reference: None,
        })
    }
}

impl DecodeWorkload<'_> {
    /// The reference outputs of the checked sequences, one after the other.
    fn reference(&mut self) -> &[f32] {
        if self.reference.is_none() {
            let a = self.args;
            let s = AttnShape {
                num_heads: a.num_heads,
                num_kv_heads: a.num_kv_heads,
                head_dim: a.head_dim,
                q_len: 1,
                kv_len: a.context,
                q_offset: a.context - 1,
                causal: true,
                scale: self.shape.scale,
            };
            let want: Vec<Vec<f32>> = self.checked.par_iter().map(|c| attention(&c.q, &c.k, &c.v, &s).0).collect();
            self.reference = Some(want.concat());
        }
        self.reference.as_deref().unwrap_or_default()
    }
}

impl Workload for DecodeWorkload<'_> {
    fn label(&self) -> String {
        self.args.label()
    }

    fn implementations(&self) -> &[Implementation] {
        &IMPLEMENTATIONS
    }

    fn copies(&self) -> usize {
        self.copies
    }

    fn launch(&mut self, which: usize, copy: usize) -> Result<()> {
        let kern = &self.device.kernels;
        let q_len = self.args.batch * self.args.num_heads * self.args.head_dim;
        let cache_len = self.args.batch * self.args.context * self.args.num_kv_heads * self.args.head_dim;
        let q = DevSpan::of(&self.q).slice(copy * self.q_stride..copy * self.q_stride + q_len)?;
        let cache = copy * self.cache_stride..copy * self.cache_stride + cache_len;
        let (k, v) = (DevSpan::of(&self.k).slice(cache.clone())?, DevSpan::of(&self.v).slice(cache)?);
        let (lens, out) = (DevSpan::of(&self.seq_lens), DevSpan::of(&self.out));
        if IMPLEMENTATIONS[which] == Implementation::naive() {
            attention_decode_naive(kern, q, k, v, lens, out, self.shape)?;
        } else {
            let scratch = DecodeScratch {
                partial_out: DevSpan::of(&self.partial_out),
                partial_ml: DevSpan::of(&self.partial_ml),
                num_splits: self.num_splits,
            };
            attention_decode(kern, q, k, v, lens, out, scratch, self.shape)?;
        }
        Ok(())
    }

    fn check(&mut self, which: usize) -> Result<()> {
        let what = format!("{} {} (splits {})", self.label(), IMPLEMENTATIONS[which].name, self.num_splits);
        let stream = self.device.gpu.stream().clone();
        let err = |e: cudarc::driver::DriverError| anyhow!("{what}: {e}");
        stream.memcpy_htod(&vec![f32::NAN; self.out.len()], &mut self.out).map_err(err)?;
        self.launch(which, 0)?;
        let got = stream.clone_dtoh(&self.out).map_err(err)?;
        self.device.synchronize()?;
        if let Some(i) = got.iter().position(|v| !v.is_finite()) {
            return Err(anyhow!("{what}: output element {i} is {} (never written?)", got[i]));
        }
        let per_q = self.args.num_heads * self.args.head_dim;
        let got: Vec<f32> =
            self.checked.iter().flat_map(|c| got[c.index * per_q..(c.index + 1) * per_q].to_vec()).collect();
        let want = self.reference();
        data::check_close(&what, &got, want, F32_OUTPUT_BOUND)
    }
}

//! The prefill-attention workload: `B` sequences of `S` tokens attending to themselves (causal or not),
//! in FlashAttention's varlen layout, everything bf16: `q`/`out` `[B·S][H][D]`, `k`/`v` `[B·S][KVH][D]`,
//! GQA when `KVH < H` (what the PyTorch SDPA peers time).
//!
//! Implementations: rooflab's flash kernel (the fast one for this GPU), on Hopper also the other flash
//! versions (`rooflab-wgmma`, `rooflab-mma`), its SIMT tiled version (`rooflab-tiled`) and the naive
//! one-thread-per-query-row baseline (only up to [`NAIVE_MAX_SEQ`] tokens: beyond, one launch takes
//! seconds). Every call into the wrapper (engine/src/kernels/attention_prefill.rs, still changing) goes
//! through [`launch_prefill`] alone: adapt that one function when the wrapper's interface changes.

use anyhow::{anyhow, Result};
use half::bf16;
use rayon::prelude::*;
use rooflab::cuda::{CudaSlice, DevSpan};
use rooflab::kernels::attention_prefill::{self as prefill, KvLayout, Operand, PrefillIo, PrefillKernel, PrefillShape};
use rooflab::kernels::{Kernels, Launcher};
use rooflab::reference::{attention, AttnShape};

use super::data::{self, BF16_OUTPUT_BOUND};
use super::{Device, Implementation, Workload};
use crate::bench::Case;

const MAX_COPIES: usize = 64;
/// Longest sequence the naive baseline is timed at.
pub const NAIVE_MAX_SEQ: usize = 8192;
const FLASH: Implementation = Implementation::rooflab("rooflab");
/// The flash versions behind the default one on Hopper (v3 and v2), timed beside it.
const FLASH_WGMMA: Implementation = Implementation::rooflab("rooflab-wgmma");
const FLASH_MMA: Implementation = Implementation::rooflab("rooflab-mma");
const TILED: Implementation = Implementation::rooflab("rooflab-tiled");
const NAIVE: Implementation = Implementation::naive();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillArgs {
    pub batch: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Tokens per sequence (queries and keys).
    pub seq: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl PrefillArgs {
    pub fn from_case(case: &Case) -> Result<Self> {
        let get = |key: &str| case.int(key).map(|v| v as usize).ok_or_else(|| anyhow!("prefill case has no {key}"));
        Ok(PrefillArgs {
            batch: get("B")?,
            num_heads: get("H")?,
            num_kv_heads: get("KVH")?,
            seq: get("S")?,
            head_dim: get("D")?,
            causal: case.flag("causal"),
        })
    }

    pub fn label(&self) -> String {
        let PrefillArgs { batch, num_heads, num_kv_heads, seq, head_dim, causal } = self;
        let causal = if *causal { " causal" } else { "" };
        format!("attention_prefill B={batch} H={num_heads} KVH={num_kv_heads} S={seq} D={head_dim}{causal}")
    }

    fn q_len(&self) -> usize {
        self.batch * self.seq * self.num_heads * self.head_dim
    }

    fn kv_len(&self) -> usize {
        self.batch * self.seq * self.num_kv_heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// The kernel shape: `batch` sequences of `seq` queries over `seq` keys each.
    pub fn shape(&self) -> PrefillShape {
        PrefillShape {
            batch: self.batch,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            total_q: self.batch * self.seq,
            max_q_len: self.seq,
            max_kv_len: self.seq,
            causal: self.causal,
            scale: self.scale(),
        }
    }
}

/// Device buffers of one prefill call: bf16 q, k, v and out, and the `[batch + 1]` row offsets that
/// serve as both `cu_seqlens_q` and `cu_seqlens_k` (every sequence has as many keys as queries).
#[derive(Clone, Copy)]
pub struct PrefillBuffers<'a> {
    pub q: DevSpan<'a, bf16>,
    pub k: DevSpan<'a, bf16>,
    pub v: DevSpan<'a, bf16>,
    pub out: DevSpan<'a, bf16>,
    pub cu_seqlens: DevSpan<'a, u32>,
}

/// The one call into the prefill wrapper (engine/src/kernels/attention_prefill.rs).
pub fn launch_prefill(
    kern: &Kernels,
    which: Implementation,
    b: PrefillBuffers,
    a: &PrefillArgs,
) -> rooflab::Result<()> {
    let io = PrefillIo {
        q: Operand::Bf16(b.q),
        k: Operand::Bf16(b.k),
        v: Operand::Bf16(b.v),
        out: Operand::Bf16(b.out),
        lse: None,
        cu_seqlens_q: b.cu_seqlens,
        q_offsets: None,
        kv: KvLayout::Varlen { cu_seqlens_k: b.cu_seqlens, total_k: a.batch * a.seq },
    };
    let shape = a.shape();
    match which {
        TILED => prefill::tiled(kern, &io, &shape),
        NAIVE => prefill::naive_row(kern, &io, &shape),
        FLASH_WGMMA => prefill::run(kern, PrefillKernel::FlashWgmma, &io, &shape, None),
        FLASH_MMA => prefill::run(kern, PrefillKernel::FlashMma, &io, &shape, None),
        _ => prefill::flash(kern, &io, &shape),
    }
}

/// Query rows of each sequence the check compares: both ends (the first row sees one key, the last
/// all of them), both sides of the first 128-row block boundary (the flash kernel's tile), and two in
/// the middle; the full CPU reference at 32k tokens would take hours.
pub fn checked_rows(seq: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = [0, 1, 127, 128, seq / 3, seq / 2, seq.saturating_sub(2), seq.saturating_sub(1)]
        .into_iter()
        .filter(|&r| r < seq)
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// One checked sequence of copy 0: its index and its q, k, v widened.
struct CheckedSequence {
    index: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

pub struct PrefillWorkload<'d> {
    device: &'d Device,
    args: PrefillArgs,
    implementations: Vec<Implementation>,
    copies: usize,
    q: CudaSlice<bf16>,
    q_stride: usize,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    kv_stride: usize,
    /// `[batch + 1]` row offsets of the sequences.
    cu_seqlens: CudaSlice<u32>,
    out: CudaSlice<bf16>,
    /// Copy 0 of the first and the last sequence on the host, widened, for the check (a wrong
    /// sequence offset shows only in sequences after the first).
    checked: Vec<CheckedSequence>,
    reference: Option<Vec<f32>>,
}

impl<'d> PrefillWorkload<'d> {
    pub fn new(device: &'d Device, args: PrefillArgs, rotation_bytes: u64) -> Result<Self> {
        if args.batch == 0 || args.seq == 0 {
            return Err(anyhow!("{}: batch and sequence length must be positive", args.label()));
        }
        let (q_len, kv_len) = (args.q_len(), args.kv_len());
        let copies = data::rotation_copies((2 * q_len + 4 * kv_len) as u64, rotation_bytes, MAX_COPIES);
        let (q_stride, kv_stride) = (data::copy_stride(q_len, 2), data::copy_stride(kv_len, 2));
        let seed = data::seed_for(&args.label());
        let host_all_q = data::random_bf16(copies * q_stride, seed, 1.0);
        let host_all_k = data::random_bf16(copies * kv_stride, seed ^ 1, 1.0);
        let host_all_v = data::random_bf16(copies * kv_stride, seed ^ 2, 1.0);
        let cu_seqlens: Vec<u32> = (0..=args.batch).map(|i| (i * args.seq) as u32).collect();
        let mut implementations = vec![FLASH];
        if device.kernels.arch() == "sm_90a" {
            implementations.extend([FLASH_WGMMA, FLASH_MMA]);
        }
        implementations.push(TILED);
        if args.seq <= NAIVE_MAX_SEQ {
            implementations.push(NAIVE);
        }
        let stream = device.gpu.stream();
        let err = |e: cudarc::driver::DriverError| anyhow!("{}: allocating inputs: {e}", args.label());
        let q = stream.clone_htod(&host_all_q).map_err(err)?;
        let k = stream.clone_htod(&host_all_k).map_err(err)?;
        let v = stream.clone_htod(&host_all_v).map_err(err)?;
        let cu_seqlens = stream.clone_htod(&cu_seqlens).map_err(err)?;
        let out = stream.alloc_zeros::<bf16>(q_len).map_err(err)?;
        let (seq_q, seq_kv) = (args.seq * args.num_heads * args.head_dim, args.seq * args.num_kv_heads * args.head_dim);
        let mut indices = vec![0, args.batch - 1];
        indices.dedup();
        let checked = indices
            .into_iter()
            .map(|b| CheckedSequence {
                index: b,
                q: data::widen(&host_all_q[b * seq_q..(b + 1) * seq_q]),
                k: data::widen(&host_all_k[b * seq_kv..(b + 1) * seq_kv]),
                v: data::widen(&host_all_v[b * seq_kv..(b + 1) * seq_kv]),
            })
            .collect();
        Ok(PrefillWorkload {
            device,
            args,
            implementations,
            copies,
            q,
            q_stride,
            k,
            v,
            kv_stride,
            cu_seqlens,
            out,
            checked,
            reference: None,
        })
    }

    /// The reference rows of [`checked_rows`] of each checked sequence, `[sequence][row][H][D]`.
    fn reference(&mut self) -> &[f32] {
        if self.reference.is_none() {
            let a = self.args;
            let row_len = a.num_heads * a.head_dim;
            let rows = checked_rows(a.seq);
            let jobs: Vec<(&CheckedSequence, usize)> =
                self.checked.iter().flat_map(|c| rows.iter().map(move |&r| (c, r))).collect();
            let per_row: Vec<Vec<f32>> = jobs
                .par_iter()
                .map(|&(c, r)| {
                    let s = AttnShape {
                        num_heads: a.num_heads,
                        num_kv_heads: a.num_kv_heads,
                        head_dim: a.head_dim,
                        q_len: 1,
                        kv_len: a.seq,
                        q_offset: r,
                        causal: a.causal,
                        scale: a.scale(),
                    };
                    attention(&c.q[r * row_len..(r + 1) * row_len], &c.k, &c.v, &s).0
                })
                .collect();
            self.reference = Some(per_row.concat());
        }
        self.reference.as_deref().unwrap_or_default()
    }
}

impl Workload for PrefillWorkload<'_> {
    fn label(&self) -> String {
        self.args.label()
    }

    fn implementations(&self) -> &[Implementation] {
        &self.implementations
    }

    fn copies(&self) -> usize {
        self.copies
    }

    fn launch(&mut self, which: usize, copy: usize) -> Result<()> {
        let (q_len, kv_len) = (self.args.q_len(), self.args.kv_len());
        let kv = copy * self.kv_stride..copy * self.kv_stride + kv_len;
        let buffers = PrefillBuffers {
            q: DevSpan::of(&self.q).slice(copy * self.q_stride..copy * self.q_stride + q_len)?,
            k: DevSpan::of(&self.k).slice(kv.clone())?,
            v: DevSpan::of(&self.v).slice(kv)?,
            out: DevSpan::of(&self.out),
            cu_seqlens: DevSpan::of(&self.cu_seqlens),
        };
        Ok(launch_prefill(&self.device.kernels, self.implementations[which], buffers, &self.args)?)
    }

    fn check(&mut self, which: usize) -> Result<()> {
        let what = format!("{} {}", self.label(), self.implementations[which].name);
        let stream = self.device.gpu.stream().clone();
        let err = |e: cudarc::driver::DriverError| anyhow!("{what}: {e}");
        stream.memcpy_htod(&vec![bf16::NAN; self.out.len()], &mut self.out).map_err(err)?;
        self.launch(which, 0)?;
        let got = data::widen(&stream.clone_dtoh(&self.out).map_err(err)?);
        self.device.synchronize()?;
        if let Some(i) = got.iter().position(|v| !v.is_finite()) {
            return Err(anyhow!("{what}: output element {i} is {} (never written?)", got[i]));
        }
        let (row_len, seq) = (self.args.num_heads * self.args.head_dim, self.args.seq);
        let rows = checked_rows(seq);
        let got: Vec<f32> = self
            .checked
            .iter()
            .flat_map(|c| rows.iter().map(move |&r| c.index * seq + r))
            .flat_map(|r| got[r * row_len..(r + 1) * row_len].to_vec())
            .collect();
        // bf16 output, and P rounded to bf16 for the tensor cores.
        data::check_close(&what, &got, self.reference(), BF16_OUTPUT_BOUND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_rows_cover_both_ends_and_stay_in_range() {
        assert_eq!(checked_rows(1), vec![0]);
        assert_eq!(checked_rows(3), vec![0, 1, 2]);
        assert_eq!(checked_rows(4096), vec![0, 1, 127, 128, 1365, 2048, 4094, 4095]);
        assert_eq!(checked_rows(100), vec![0, 1, 33, 50, 98, 99]);
    }
}

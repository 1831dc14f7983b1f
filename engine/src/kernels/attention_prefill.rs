//! Wrapper of kernels-cuda/attention_prefill.cu: varlen prefill attention against the contiguous
//! KV cache (causal or not, any GQA ratio, query offset into the cache, optional LSE) and its
//! naive baseline. The interface is the one a FlashAttention-style kernel will keep.

use half::bf16;

use super::{as_u32, check_attention_heads, positive, DevSpan, Kernels, ATTENTION_PREFILL};
use crate::cuda::grid;
use crate::ffi::params::AttnPrefillParams;
use crate::Result;

/// Query rows per block of the tiled kernel (PF_BQ in attention_prefill.cu).
const ROWS_PER_BLOCK: usize = 16;
const THREADS: u32 = 128;

/// Shapes of a prefill call. `q`/`out` are `[total_q][num_heads][head_dim]` f32; each cache is
/// `[batch][cache_len][num_kv_heads][head_dim]` bf16; `lse` is `[num_heads][total_q]`.
/// `total_q` and `max_q_len` must match the device `cu_seqlens_q` (they size the launch).
#[derive(Debug, Clone, Copy)]
pub struct PrefillShape {
    pub batch: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub cache_len: usize,
    pub total_q: usize,
    pub max_q_len: usize,
    pub causal: bool,
    pub scale: f32,
}

/// Per-sequence layout of the batch, in device memory (u32): `cu_seqlens_q [batch + 1]` (row
/// offsets into q), `seq_lens_k [batch]` (keys each sequence may see, <= cache_len) and
/// `q_offsets [batch]` (position of each sequence's first query).
#[derive(Debug, Clone, Copy)]
pub struct PrefillBatch<'a> {
    pub cu_seqlens_q: DevSpan<'a, u32>,
    pub seq_lens_k: DevSpan<'a, u32>,
    pub q_offsets: DevSpan<'a, u32>,
}

#[allow(clippy::too_many_arguments)]
fn params(
    q: DevSpan<f32>,
    k_cache: DevSpan<bf16>,
    v_cache: DevSpan<bf16>,
    batch: PrefillBatch,
    out: DevSpan<f32>,
    lse: Option<DevSpan<f32>>,
    s: &PrefillShape,
) -> Result<AttnPrefillParams> {
    check_attention_heads(s.num_heads, s.num_kv_heads, s.head_dim)?;
    positive("prefill cache_len", s.cache_len)?;
    let rows = s.total_q * s.num_heads * s.head_dim;
    let cache = s.batch * s.cache_len * s.num_kv_heads * s.head_dim;
    q.expect_len("prefill q", rows)?;
    out.expect_len("prefill output", rows)?;
    k_cache.expect_len("prefill key cache", cache)?;
    v_cache.expect_len("prefill value cache", cache)?;
    batch.cu_seqlens_q.expect_len("prefill cu_seqlens_q", s.batch + 1)?;
    batch.seq_lens_k.expect_len("prefill seq_lens_k", s.batch)?;
    batch.q_offsets.expect_len("prefill q_offsets", s.batch)?;
    if let Some(lse) = lse {
        lse.expect_len("prefill lse", s.num_heads * s.total_q)?;
    }
    Ok(AttnPrefillParams {
        q: q.addr(),
        k_cache: k_cache.addr(),
        v_cache: v_cache.addr(),
        out: out.addr(),
        lse: lse.map_or(0, |l| l.addr()),
        cu_seqlens_q: batch.cu_seqlens_q.addr(),
        seq_lens_k: batch.seq_lens_k.addr(),
        q_offsets: batch.q_offsets.addr(),
        batch: as_u32("batch", s.batch)?,
        num_heads: as_u32("num_heads", s.num_heads)?,
        num_kv_heads: as_u32("num_kv_heads", s.num_kv_heads)?,
        head_dim: as_u32("head_dim", s.head_dim)?,
        cache_len: as_u32("cache_len", s.cache_len)?,
        causal: s.causal as u32,
        scale: s.scale,
        pad0: 0,
    })
}

/// Prefill attention with the tiled kernel.
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill(
    k: &Kernels,
    q: DevSpan<f32>,
    k_cache: DevSpan<bf16>,
    v_cache: DevSpan<bf16>,
    batch: PrefillBatch,
    out: DevSpan<f32>,
    lse: Option<DevSpan<f32>>,
    shape: PrefillShape,
) -> Result<()> {
    if shape.batch == 0 || shape.max_q_len == 0 {
        return Ok(());
    }
    let p = params(q, k_cache, v_cache, batch, out, lse, &shape)?;
    let entry = if shape.head_dim == 64 { "attn_prefill_hd64" } else { "attn_prefill_hd128" };
    let tiles = as_u32("prefill query tiles", shape.max_q_len.div_ceil(ROWS_PER_BLOCK))?;
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(ATTENTION_PREFILL, entry, grid((tiles, p.num_heads, p.batch), THREADS), p) }
}

/// The naive baseline: one block per (query row, head, sequence).
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill_naive(
    k: &Kernels,
    q: DevSpan<f32>,
    k_cache: DevSpan<bf16>,
    v_cache: DevSpan<bf16>,
    batch: PrefillBatch,
    out: DevSpan<f32>,
    lse: Option<DevSpan<f32>>,
    shape: PrefillShape,
) -> Result<()> {
    if shape.batch == 0 || shape.max_q_len == 0 {
        return Ok(());
    }
    let p = params(q, k_cache, v_cache, batch, out, lse, &shape)?;
    let rows = as_u32("prefill max_q_len", shape.max_q_len)?;
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(ATTENTION_PREFILL, "attn_prefill_naive", grid((rows, p.num_heads, p.batch), p.head_dim), p) }
}

//! Wrapper of kernels-cuda/attention_decode.cu: one query token per sequence against its
//! contiguous KV cache, split over the context (split kernel + combine kernel), and the naive
//! baseline. Sequence lengths are read on the device, so the launches can be captured in a graph.

use half::bf16;

use super::{as_u32, check_attention_heads, positive, DevSpan, Launcher, ATTENTION_DECODE};
use crate::cuda::grid;
use crate::ffi::params::AttnDecodeParams;
use crate::{Error, Result};

/// Query heads one KV head may serve (MAX_GROUP in attention_decode.cu).
pub const MAX_GQA_GROUP: usize = 16;
/// Keys per tile of the split kernel (DEC_TILE); a split covers a multiple of it.
pub const TILE_KEYS: usize = 32;
const SPLIT_THREADS: u32 = 128;
const MAX_SPLITS: usize = 64;

/// Dynamic shared memory of the split kernel (SplitShared<D> in the .cu file): the group's f32
/// queries, one tile's probabilities, the running (max, sum, rescale) per head, then two stages of
/// K and V tiles with rows padded by 8 elements (16-byte aligned). Under 48 KB for both head dims,
/// so no opt-in is needed.
pub fn split_shared_bytes(head_dim: usize) -> usize {
    let stats = (MAX_GQA_GROUP * head_dim + MAX_GQA_GROUP * TILE_KEYS + 3 * MAX_GQA_GROUP) * 4;
    stats.next_multiple_of(16) + 2 * 2 * TILE_KEYS * (head_dim + 8) * 2
}

/// Shapes of a decode-attention call. `q`/`out` are `[batch][num_heads][head_dim]` f32; each
/// cache is `[batch][cache_len][num_kv_heads][head_dim]` bf16.
#[derive(Debug, Clone, Copy)]
pub struct DecodeShape {
    pub batch: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub cache_len: usize,
    pub scale: f32,
}

/// Per-split partial results: `partial_out [batch][heads][splits][head_dim]` and
/// `partial_ml [batch][heads][splits][2]`, f32.
#[derive(Debug, Clone, Copy)]
pub struct DecodeScratch<'a> {
    pub partial_out: DevSpan<'a, f32>,
    pub partial_ml: DevSpan<'a, f32>,
    pub num_splits: usize,
}

impl DecodeShape {
    /// Elements of (partial_out, partial_ml) for `num_splits`.
    pub fn scratch_len(&self, num_splits: usize) -> (usize, usize) {
        let heads = self.batch * self.num_heads * num_splits;
        (heads * self.head_dim, heads * 2)
    }

    /// Enough splits for about two waves of blocks on `sm_count` SMs, at most one per 256 keys
    /// of the cache (short splits only add combine work) and at most 64.
    pub fn choose_splits(&self, sm_count: u32) -> usize {
        let blocks_per_split = (self.batch * self.num_kv_heads).max(1);
        let for_occupancy = (2 * sm_count as usize).div_ceil(blocks_per_split);
        let for_length = self.cache_len.div_ceil(256).max(1);
        for_occupancy.min(for_length).clamp(1, MAX_SPLITS)
    }

    fn check(
        &self,
        q: DevSpan<f32>,
        k_cache: DevSpan<bf16>,
        v_cache: DevSpan<bf16>,
        seq_lens: DevSpan<u32>,
        out: DevSpan<f32>,
    ) -> Result<()> {
        check_attention_heads(self.num_heads, self.num_kv_heads, self.head_dim)?;
        if self.num_heads / self.num_kv_heads > MAX_GQA_GROUP {
            return Err(Error::Unsupported(format!(
                "{} query heads per KV head: the decode kernel handles at most {MAX_GQA_GROUP}",
                self.num_heads / self.num_kv_heads
            )));
        }
        positive("decode cache_len", self.cache_len)?;
        let q_len = self.batch * self.num_heads * self.head_dim;
        let cache = self.batch * self.cache_len * self.num_kv_heads * self.head_dim;
        q.expect_len("decode q", q_len)?;
        out.expect_len("decode output", q_len)?;
        k_cache.expect_len("decode key cache", cache)?;
        v_cache.expect_len("decode value cache", cache)?;
        seq_lens.expect_len("decode sequence lengths", self.batch)?;
        k_cache.expect_aligned("decode key cache", 16)?;
        v_cache.expect_aligned("decode value cache", 16)?;
        Ok(())
    }

    fn params(
        &self,
        q: DevSpan<f32>,
        k_cache: DevSpan<bf16>,
        v_cache: DevSpan<bf16>,
        seq_lens: DevSpan<u32>,
        out: DevSpan<f32>,
    ) -> Result<AttnDecodeParams> {
        Ok(AttnDecodeParams {
            q: q.addr(),
            k_cache: k_cache.addr(),
            v_cache: v_cache.addr(),
            seq_lens: seq_lens.addr(),
            out: out.addr(),
            partial_out: 0,
            partial_ml: 0,
            batch: as_u32("batch", self.batch)?,
            num_heads: as_u32("num_heads", self.num_heads)?,
            num_kv_heads: as_u32("num_kv_heads", self.num_kv_heads)?,
            head_dim: as_u32("head_dim", self.head_dim)?,
            num_splits: 1,
            cache_len: as_u32("cache_len", self.cache_len)?,
            scale: self.scale,
            pad0: 0,
        })
    }
}

/// Split-KV decode attention. `seq_lens[b]` (device) must be in `1 ..= cache_len`.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    k: &impl Launcher,
    q: DevSpan<f32>,
    k_cache: DevSpan<bf16>,
    v_cache: DevSpan<bf16>,
    seq_lens: DevSpan<u32>,
    out: DevSpan<f32>,
    scratch: DecodeScratch,
    shape: DecodeShape,
) -> Result<()> {
    if shape.batch == 0 {
        return Ok(());
    }
    shape.check(q, k_cache, v_cache, seq_lens, out)?;
    if scratch.num_splits == 0 || scratch.num_splits > MAX_SPLITS {
        return Err(Error::Invalid(format!("decode num_splits {} is not in 1..={MAX_SPLITS}", scratch.num_splits)));
    }
    let (out_len, ml_len) = shape.scratch_len(scratch.num_splits);
    scratch.partial_out.expect_len("decode partial outputs", out_len)?;
    scratch.partial_ml.expect_len("decode partial max/sum", ml_len)?;
    let mut params = shape.params(q, k_cache, v_cache, seq_lens, out)?;
    params.partial_out = scratch.partial_out.addr();
    params.partial_ml = scratch.partial_ml.addr();
    params.num_splits = as_u32("num_splits", scratch.num_splits)?;
    let split_entry = if shape.head_dim == 64 { "attn_decode_split_hd64" } else { "attn_decode_split_hd128" };
    let mut split_grid = grid((params.num_splits, params.num_kv_heads, params.batch), SPLIT_THREADS);
    split_grid.shared_mem_bytes = as_u32("decode split kernel shared memory", split_shared_bytes(shape.head_dim))?;
    let combine_grid = grid((params.num_heads, params.batch, 1), params.head_dim);
    // SAFETY: every span was checked against the shapes above; the combine kernel reads only the
    // scratch the split kernel writes.
    unsafe {
        k.launch(ATTENTION_DECODE, split_entry, split_grid, params)?;
        k.launch(ATTENTION_DECODE, "attn_decode_combine", combine_grid, params)
    }
}

/// The naive baseline: one block per (query head, sequence), no split, KV re-read per query head.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_naive(
    k: &impl Launcher,
    q: DevSpan<f32>,
    k_cache: DevSpan<bf16>,
    v_cache: DevSpan<bf16>,
    seq_lens: DevSpan<u32>,
    out: DevSpan<f32>,
    shape: DecodeShape,
) -> Result<()> {
    if shape.batch == 0 {
        return Ok(());
    }
    shape.check(q, k_cache, v_cache, seq_lens, out)?;
    let params = shape.params(q, k_cache, v_cache, seq_lens, out)?;
    let config = grid((params.num_heads, params.batch, 1), params.head_dim);
    // SAFETY: every span was checked against the shapes above.
    unsafe { k.launch(ATTENTION_DECODE, "attn_decode_naive", config, params) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shared_memory_is_the_kernels_struct() {
        // sizeof(SplitShared<D>), as ptxas reported it when the struct was static shared memory.
        assert_eq!(split_shared_bytes(128), 45248);
        assert_eq!(split_shared_bytes(64), 24768);
        assert!(split_shared_bytes(128) <= 48 << 10);
    }

    #[test]
    fn splits_follow_occupancy_and_length() {
        let s = DecodeShape { batch: 1, num_heads: 9, num_kv_heads: 3, head_dim: 64, cache_len: 4096, scale: 0.125 };
        assert_eq!(s.choose_splits(132), 16);
        assert_eq!(DecodeShape { cache_len: 100, ..s }.choose_splits(132), 1);
        assert_eq!(DecodeShape { batch: 64, num_kv_heads: 8, ..s }.choose_splits(132), 1);
        assert_eq!(DecodeShape { cache_len: 1 << 20, ..s }.choose_splits(132), 64);
    }
}

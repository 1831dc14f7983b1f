//! Wrapper of kernels-cuda/attention_prefill.cu: prefill attention over a varlen batch (causal or
//! not, any GQA ratio, a query offset into the keys for chunked prefill, optional LSE), with K/V in
//! FlashAttention's varlen layout or in the model's contiguous cache.
//!
//! [`flash`] is the fast kernel (on Hopper the FlashAttention-3 structure: TMA, warp specialisation,
//! wgmma; elsewhere FlashAttention-2 on mma.sync); [`naive_materialised`]
//! (S in global memory, softmax, P·V), [`naive_row`] (one thread per query row) and [`tiled`] (SIMT
//! tiles) are the baselines it is measured against. All share [`PrefillIo`] and [`PrefillShape`];
//! [`plan`] is the launch configuration of each, a pure function tested without a GPU.
//!
//! ```ignore
//! let io = PrefillIo {
//!     q: Operand::Bf16(q), k: Operand::Bf16(k), v: Operand::Bf16(v), out: Operand::Bf16(o),
//!     lse: None, cu_seqlens_q, q_offsets: None,
//!     kv: KvLayout::Varlen { cu_seqlens_k, total_k },
//! };
//! attention_prefill::flash(&kernels, &io, &shape)?;
//! ```

use half::{bf16, f16};

use cudarc::driver::DeviceRepr;

use super::tma::{RlTensorMap, TensorMap3d};
use super::{as_u32, check_attention_heads, DevSpan, Launcher, ATTENTION_PREFILL};
use crate::cuda::grid;
use crate::ffi::params::{AttnPrefillParams, AttnPrefillTmaParams};
use crate::{Error, Result};

/// Element type of q, k, v and out (q and out may also be f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    Bf16,
    F16,
}

impl Elem {
    /// The `elem` field of the kernel parameters.
    fn code(self) -> u32 {
        match self {
            Elem::Bf16 => 0,
            Elem::F16 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Elem::Bf16 => "bf16",
            Elem::F16 => "f16",
        }
    }
}

/// One tensor of a prefill call: a device span of bf16, f16 or f32 values.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    Bf16(DevSpan<'a, bf16>),
    F16(DevSpan<'a, f16>),
    F32(DevSpan<'a, f32>),
}

impl Operand<'_> {
    pub fn addr(&self) -> u64 {
        match self {
            Operand::Bf16(s) => s.addr(),
            Operand::F16(s) => s.addr(),
            Operand::F32(s) => s.addr(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Operand::Bf16(s) => s.len(),
            Operand::F16(s) => s.len(),
            Operand::F32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> usize {
        match self {
            Operand::F32(s) => s.bytes(),
            _ => self.len() * 2,
        }
    }

    /// The 16-bit element type, or None for f32.
    fn elem(&self) -> Option<Elem> {
        match self {
            Operand::Bf16(_) => Some(Elem::Bf16),
            Operand::F16(_) => Some(Elem::F16),
            Operand::F32(_) => None,
        }
    }

    fn type_name(&self) -> &'static str {
        self.elem().map_or("f32", Elem::name)
    }

    fn overlaps(&self, other: &Operand) -> bool {
        let (a0, b0) = (self.addr(), other.addr());
        a0 < b0 + other.bytes() as u64 && b0 < a0 + self.bytes() as u64
    }
}

/// Where each sequence's keys and values are.
#[derive(Debug, Clone, Copy)]
pub enum KvLayout<'a> {
    /// FlashAttention's varlen layout: k/v `[total_k][num_kv_heads][head_dim]`, sequence `b` owning
    /// rows `cu_seqlens_k[b] .. cu_seqlens_k[b+1]` (u32 on the device, `batch + 1` of them, the last
    /// at most `total_k`).
    Varlen { cu_seqlens_k: DevSpan<'a, u32>, total_k: usize },
    /// The model's contiguous cache: k/v `[batch][cache_len][num_kv_heads][head_dim]`, sequence `b`
    /// seeing its first `min(seq_lens_k[b], cache_len)` rows (u32 on the device).
    Cache { seq_lens_k: DevSpan<'a, u32>, cache_len: usize },
}

/// The buffers of a prefill call. q and out are `[total_q][num_heads][head_dim]`; `cu_seqlens_q`
/// (u32, `batch + 1`) gives each sequence's query rows; `q_offsets` (u32, `batch`; None = all 0) the
/// position of each sequence's first query among its keys; `lse` is `[num_heads][total_q]` f32.
#[derive(Debug, Clone, Copy)]
pub struct PrefillIo<'a> {
    pub q: Operand<'a>,
    pub k: Operand<'a>,
    pub v: Operand<'a>,
    pub out: Operand<'a>,
    pub lse: Option<DevSpan<'a, f32>>,
    pub cu_seqlens_q: DevSpan<'a, u32>,
    pub q_offsets: Option<DevSpan<'a, u32>>,
    pub kv: KvLayout<'a>,
}

/// Sizes of a prefill call. `total_q` and `max_q_len` must match the device `cu_seqlens_q` (they size
/// the launch: rows of a longer sequence would stay unwritten); `max_kv_len` bounds every sequence's
/// key count (it sizes the materialising baseline's scratch, which writes NaN rows when it is short).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefillShape {
    pub batch: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub total_q: usize,
    pub max_q_len: usize,
    pub max_kv_len: usize,
    pub causal: bool,
    /// Softmax scale (usually `1 / sqrt(head_dim)`); must be positive.
    pub scale: f32,
}

impl PrefillShape {
    /// Attention FLOPs of a batch of `batch` square sequences of `seq` tokens: 4·B·H·S²·D, halved
    /// when causal (the convention of the FlashAttention papers).
    pub fn square_flops(batch: usize, heads: usize, seq: usize, head_dim: usize, causal: bool) -> f64 {
        let f = 4.0 * batch as f64 * heads as f64 * (seq as f64).powi(2) * head_dim as f64;
        if causal {
            f / 2.0
        } else {
            f
        }
    }
}

/// The implementations, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefillKernel {
    /// The fast kernel for this GPU: [`PrefillKernel::FlashTma`] on Hopper (sm_90a PTX), else
    /// [`PrefillKernel::FlashMma`]; `ROOFLAB_PREFILL_FLASH=mma` (or `wgmma`, `tma`) overrides the choice.
    Flash,
    /// FlashAttention-3 structure (v4), Hopper only: a producer warpgroup loads Q, K and V with TMA
    /// into an mbarrier-guarded ring of stages, two consumer warpgroups run wgmma and the softmax in
    /// ping-pong. Written and emulated without a GPU: see kernels-cuda/notes/attention_prefill.md.
    FlashTma,
    /// FlashAttention-2 structure on mma.sync tensor cores (v2), every GPU from sm_80 on.
    FlashMma,
    /// Warpgroup MMA (wgmma) from shared memory, 2 warpgroups per block (v3), Hopper only.
    /// Written and emulated without a GPU: see kernels-cuda/notes/attention_prefill.md.
    FlashWgmma,
    /// SIMT tiles with online softmax, no tensor cores (v1).
    Tiled,
    /// One thread per query row (v0b).
    NaiveRow,
    /// S = QKᵀ in global memory, a softmax kernel, then P·V (v0a): needs [`scores_len`] f32 of scratch.
    NaiveMaterialised,
}

impl PrefillKernel {
    pub const ALL: [PrefillKernel; 7] = [
        PrefillKernel::Flash,
        PrefillKernel::FlashTma,
        PrefillKernel::FlashMma,
        PrefillKernel::FlashWgmma,
        PrefillKernel::Tiled,
        PrefillKernel::NaiveRow,
        PrefillKernel::NaiveMaterialised,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PrefillKernel::Flash => "flash",
            PrefillKernel::FlashTma => "flash_tma",
            PrefillKernel::FlashMma => "flash_mma",
            PrefillKernel::FlashWgmma => "flash_wgmma",
            PrefillKernel::Tiled => "tiled",
            PrefillKernel::NaiveRow => "naive_row",
            PrefillKernel::NaiveMaterialised => "naive_materialised",
        }
    }

    /// Whether this implementation runs with the PTX set `arch` (`sm_90a` or `sm_80`).
    pub fn available(self, arch: &str) -> bool {
        !matches!(self, PrefillKernel::FlashWgmma | PrefillKernel::FlashTma) || arch == "sm_90a"
    }
}

/// Environment variable that picks the fast kernel behind [`PrefillKernel::Flash`]: `mma`, `wgmma` or
/// `tma`.
pub const FLASH_CHOICE_ENV: &str = "ROOFLAB_PREFILL_FLASH";

/// The concrete kernel [`PrefillKernel::Flash`] stands for with the PTX set `arch` and an optional
/// override (the value of [`FLASH_CHOICE_ENV`]); other kernels are returned as they are, and one that
/// the set does not have is an error.
pub fn resolve(kernel: PrefillKernel, arch: &str, choice: Option<&str>) -> Result<PrefillKernel> {
    let resolved = match (kernel, choice) {
        (PrefillKernel::Flash, Some("mma")) => PrefillKernel::FlashMma,
        (PrefillKernel::Flash, Some("wgmma")) => PrefillKernel::FlashWgmma,
        (PrefillKernel::Flash, Some("tma")) => PrefillKernel::FlashTma,
        (PrefillKernel::Flash, Some(other)) if !other.is_empty() => {
            return Err(Error::Invalid(format!("{FLASH_CHOICE_ENV}={other:?}: expected mma, wgmma or tma")))
        }
        (PrefillKernel::Flash, _) if arch == "sm_90a" => PrefillKernel::FlashTma,
        (PrefillKernel::Flash, _) => PrefillKernel::FlashMma,
        (other, _) => other,
    };
    if !resolved.available(arch) {
        return Err(Error::Unsupported(format!(
            "prefill kernel {} needs a Hopper GPU (sm_90a PTX); this one runs the {arch} set",
            resolved.name()
        )));
    }
    Ok(resolved)
}

/// One kernel launch of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub entry: &'static str,
    pub grid: (u32, u32, u32),
    pub threads: u32,
    /// Dynamic shared memory; above 48 KB the function's limit is raised before the launch.
    pub shared_bytes: u32,
}

/// Query rows per block of the flash kernels (mma: 4 warps x 32 rows; wgmma and TMA: 2 warpgroups x 64
/// rows).
pub const FLASH_BLOCK_M: usize = 128;
const FLASH_THREADS: u32 = 128;
const WGMMA_THREADS: u32 = 256;
/// Keys per K/V tile of the wgmma and TMA kernels.
const WGMMA_BLOCK_N: usize = 128;
/// The TMA kernel: a producer and two consumer warpgroups.
const TMA_THREADS: u32 = 384;
/// Shared-memory rows are padded by this many elements (bank-conflict-free ldmatrix).
const FLASH_PAD: usize = 8;
/// Shared memory a block may use without raising the function's limit.
const DEFAULT_SHARED_LIMIT: u32 = 48 << 10;

const TILED_ROWS: usize = 16;
const TILED_THREADS: u32 = 128;
const ROW_THREADS: usize = 32;
const SCORES_THREADS: usize = 128;
const SOFTMAX_THREADS: u32 = 256;

/// Keys per K/V tile of the flash kernel for a head dim (the BN of its entry in the .cu file):
/// the largest that keeps the 4 warps free of register spills.
pub fn flash_block_n(head_dim: usize) -> usize {
    if head_dim == 128 {
        32
    } else {
        64
    }
}

/// Dynamic shared memory of the flash kernel: a Q tile and one K and one V tile, padded rows.
pub fn flash_shared_bytes(head_dim: usize) -> usize {
    (FLASH_BLOCK_M + 2 * flash_block_n(head_dim)) * (head_dim + FLASH_PAD) * 2
}

/// Dynamic shared memory of the wgmma kernel: the Q tile and two stages of K and V, unpadded.
pub fn wgmma_shared_bytes(head_dim: usize) -> usize {
    (FLASH_BLOCK_M + 4 * WGMMA_BLOCK_N) * head_dim * 2
}

/// Dynamic shared memory of the TMA kernel (tma::Layout in the .cu file): the Q tile, K and V tiles
/// for each stage of the ring (2 stages at D=128, 3 at D=64), 8 bytes per mbarrier (2 + 4 per stage),
/// and 1024 bytes of slack to align the tiles to the 128-byte swizzle's 1024-byte pattern.
pub fn tma_shared_bytes(head_dim: usize) -> usize {
    let stages = if head_dim == 128 { 2 } else { 3 };
    let tile = WGMMA_BLOCK_N * head_dim * 2;
    1024 + FLASH_BLOCK_M * head_dim * 2 + 2 * stages * tile + (2 + 4 * stages) * 8
}

/// f32 elements of the materialising baseline's score scratch: `[total_q][num_heads][max_kv_len]`.
pub fn scores_len(s: &PrefillShape) -> usize {
    s.total_q * s.num_heads * s.max_kv_len
}

fn wgmma_entry(elem: Elem, head_dim: usize) -> &'static str {
    match (elem, head_dim) {
        (Elem::Bf16, 64) => "attn_prefill_wgmma_bf16_hd64",
        (Elem::Bf16, _) => "attn_prefill_wgmma_bf16_hd128",
        (Elem::F16, 64) => "attn_prefill_wgmma_f16_hd64",
        (Elem::F16, _) => "attn_prefill_wgmma_f16_hd128",
    }
}

fn tma_entry(elem: Elem, head_dim: usize) -> &'static str {
    match (elem, head_dim) {
        (Elem::Bf16, 64) => "attn_prefill_tma_bf16_hd64",
        (Elem::Bf16, _) => "attn_prefill_tma_bf16_hd128",
        (Elem::F16, 64) => "attn_prefill_tma_f16_hd64",
        (Elem::F16, _) => "attn_prefill_tma_f16_hd128",
    }
}

fn flash_entry(elem: Elem, head_dim: usize) -> &'static str {
    match (elem, head_dim) {
        (Elem::Bf16, 64) => "attn_prefill_flash_bf16_hd64",
        (Elem::Bf16, _) => "attn_prefill_flash_bf16_hd128",
        (Elem::F16, 64) => "attn_prefill_flash_f16_hd64",
        (Elem::F16, _) => "attn_prefill_flash_f16_hd128",
    }
}

/// The launches of `kernel` for `s` with `elem` inputs ([`PrefillKernel::Flash`] is planned as the
/// portable [`PrefillKernel::FlashMma`]; [`resolve`] picks the kernel for a GPU). Fails on head layouts
/// the kernels do not cover and on shapes beyond their index ranges. An empty batch plans no launch.
pub fn plan(kernel: PrefillKernel, elem: Elem, s: &PrefillShape) -> Result<Vec<Launch>> {
    check_shape(s)?;
    if s.batch == 0 || s.total_q == 0 || s.max_q_len == 0 {
        return Ok(Vec::new());
    }
    let heads = as_u32("num_heads", s.num_heads)?;
    let batch = as_u32("batch", s.batch)?;
    let blocks = |rows: usize, what: &str| as_u32(what, s.max_q_len.div_ceil(rows));
    let launch = |entry, grid, threads, shared_bytes| Launch { entry, grid, threads, shared_bytes };
    Ok(match kernel {
        PrefillKernel::Flash | PrefillKernel::FlashMma => {
            let shared = as_u32("flash shared memory", flash_shared_bytes(s.head_dim))?;
            let grid = (blocks(FLASH_BLOCK_M, "flash query blocks")?, heads, batch);
            vec![launch(flash_entry(elem, s.head_dim), grid, FLASH_THREADS, shared)]
        }
        PrefillKernel::FlashWgmma => {
            let shared = as_u32("wgmma shared memory", wgmma_shared_bytes(s.head_dim))?;
            let grid = (blocks(FLASH_BLOCK_M, "flash query blocks")?, heads, batch);
            vec![launch(wgmma_entry(elem, s.head_dim), grid, WGMMA_THREADS, shared)]
        }
        PrefillKernel::FlashTma => {
            let shared = as_u32("TMA kernel shared memory", tma_shared_bytes(s.head_dim))?;
            let grid = (blocks(FLASH_BLOCK_M, "flash query blocks")?, heads, batch);
            vec![launch(tma_entry(elem, s.head_dim), grid, TMA_THREADS, shared)]
        }
        PrefillKernel::Tiled => {
            let entry = if s.head_dim == 64 { "attn_prefill_tiled_hd64" } else { "attn_prefill_tiled_hd128" };
            vec![launch(entry, (blocks(TILED_ROWS, "tiled query blocks")?, heads, batch), TILED_THREADS, 0)]
        }
        PrefillKernel::NaiveRow => {
            let grid = (blocks(ROW_THREADS, "naive query blocks")?, heads, batch);
            vec![launch("attn_prefill_naive_row", grid, ROW_THREADS as u32, 0)]
        }
        PrefillKernel::NaiveMaterialised => {
            if s.max_kv_len == 0 {
                return Err(Error::Invalid(
                    "prefill max_kv_len must be positive for the materialising baseline".into(),
                ));
            }
            let rows = as_u32("prefill max_q_len", s.max_q_len)?;
            let key_blocks = as_u32("naive key blocks", s.max_kv_len.div_ceil(SCORES_THREADS))?;
            let heads_batch = as_u32("batch x num_heads", s.batch * s.num_heads)?;
            let d = as_u32("head_dim", s.head_dim)?;
            vec![
                launch("attn_prefill_naive_scores", (key_blocks, rows, heads_batch), SCORES_THREADS as u32, 0),
                launch("attn_prefill_naive_softmax", (rows, heads, batch), SOFTMAX_THREADS, 0),
                launch("attn_prefill_naive_pv", (rows, heads, batch), d, 0),
            ]
        }
    })
}

fn check_shape(s: &PrefillShape) -> Result<()> {
    check_attention_heads(s.num_heads, s.num_kv_heads, s.head_dim)?;
    if !(s.scale.is_finite() && s.scale > 0.0) {
        return Err(Error::Invalid(format!("prefill softmax scale {} must be positive and finite", s.scale)));
    }
    if s.max_q_len > s.total_q {
        return Err(Error::Invalid(format!("prefill max_q_len {} exceeds total_q {}", s.max_q_len, s.total_q)));
    }
    Ok(())
}

/// Checks every buffer against the shapes and builds the kernel parameters.
fn params(io: &PrefillIo, s: &PrefillShape, scores: Option<DevSpan<f32>>) -> Result<(AttnPrefillParams, Elem, usize)> {
    check_shape(s)?;
    let elem = match (io.k.elem(), io.v.elem()) {
        (Some(k), Some(v)) if k == v => k,
        _ => {
            return Err(Error::Invalid(format!(
                "prefill k and v must both be bf16 or both f16, got {} and {}",
                io.k.type_name(),
                io.v.type_name()
            )))
        }
    };
    for (what, op) in [("q", io.q), ("output", io.out)] {
        if op.elem().is_some_and(|e| e != elem) {
            return Err(Error::Invalid(format!(
                "prefill {what} is {} but k/v are {} (use the same type, or f32)",
                op.type_name(),
                elem.name()
            )));
        }
    }
    let (h, d) = (s.num_heads, s.head_dim);
    let rows = s.total_q * h * d;
    expect_len("prefill q", io.q, rows)?;
    expect_len("prefill output", io.out, rows)?;
    io.cu_seqlens_q.expect_len("prefill cu_seqlens_q", s.batch + 1)?;
    if let Some(off) = io.q_offsets {
        off.expect_len("prefill q_offsets", s.batch)?;
    }
    if let Some(lse) = io.lse {
        lse.expect_len("prefill lse", h * s.total_q)?;
    }
    let kv_row = s.num_kv_heads * d;
    let (cu_seqlens_k, seq_lens_k, cache_len, kv_rows) = match io.kv {
        KvLayout::Varlen { cu_seqlens_k, total_k } => {
            cu_seqlens_k.expect_len("prefill cu_seqlens_k", s.batch + 1)?;
            (cu_seqlens_k.addr(), 0, 0, total_k)
        }
        KvLayout::Cache { seq_lens_k, cache_len } => {
            if cache_len == 0 {
                return Err(Error::Invalid("prefill cache_len must be positive".into()));
            }
            seq_lens_k.expect_len("prefill seq_lens_k", s.batch)?;
            (0, seq_lens_k.addr(), cache_len, s.batch * cache_len)
        }
    };
    as_u32("prefill key rows", kv_rows)?;
    expect_len("prefill keys", io.k, kv_rows * kv_row)?;
    expect_len("prefill values", io.v, kv_rows * kv_row)?;
    // 16-byte vector loads (cp.async, float4) in the flash kernel; pairs of outputs per store.
    for (what, op, align) in [("q", io.q, 16), ("keys", io.k, 16), ("values", io.v, 16), ("output", io.out, 8)] {
        if op.addr() % align != 0 {
            return Err(Error::Invalid(format!(
                "prefill {what}: device address {:#x} is not {align}-byte aligned",
                op.addr()
            )));
        }
    }
    for (what, op) in [("q", io.q), ("keys", io.k), ("values", io.v)] {
        if io.out.overlaps(&op) {
            return Err(Error::Invalid(format!("prefill output overlaps {what}")));
        }
    }
    // The LSE is written beside the output, so it must overlap nothing the kernel reads or writes.
    if let Some(lse) = io.lse {
        let lse = Operand::F32(lse);
        for (what, op) in [("q", io.q), ("keys", io.k), ("values", io.v), ("the output", io.out)] {
            if lse.overlaps(&op) {
                return Err(Error::Invalid(format!("prefill lse overlaps {what}")));
            }
        }
    }
    if let Some(scores) = scores {
        scores.expect_len("prefill score scratch", scores_len(s))?;
    }
    let p = AttnPrefillParams {
        q: io.q.addr(),
        k: io.k.addr(),
        v: io.v.addr(),
        out: io.out.addr(),
        lse: io.lse.map_or(0, |l| l.addr()),
        cu_seqlens_q: io.cu_seqlens_q.addr(),
        cu_seqlens_k,
        seq_lens_k,
        q_offsets: io.q_offsets.map_or(0, |o| o.addr()),
        scores: scores.map_or(0, |sc| sc.addr()),
        batch: as_u32("batch", s.batch)?,
        num_heads: as_u32("num_heads", s.num_heads)?,
        num_kv_heads: as_u32("num_kv_heads", s.num_kv_heads)?,
        head_dim: as_u32("head_dim", d)?,
        cache_len: as_u32("cache_len", cache_len)?,
        max_kv_len: as_u32("max_kv_len", s.max_kv_len)?,
        causal: s.causal as u32,
        elem: elem.code(),
        q_f32: matches!(io.q, Operand::F32(_)) as u32,
        out_f32: matches!(io.out, Operand::F32(_)) as u32,
        scale: s.scale,
        pad0: 0,
    };
    Ok((p, elem, kv_rows))
}

/// The TMA kernel's parameters: `p` plus the tensor maps of q (unless f32), k and v, each a
/// `{head_dim, heads, rows}` view with 128-row boxes. A buffer with no rows (an empty batch of keys)
/// gets a zeroed map: no tile of it is ever loaded.
fn tma_params(
    k: &impl Launcher,
    io: &PrefillIo,
    s: &PrefillShape,
    p: AttnPrefillParams,
    kv_rows: usize,
) -> Result<AttnPrefillTmaParams> {
    let map = |addr: u64, rows: usize, heads: usize| -> Result<RlTensorMap> {
        if rows == 0 {
            return Ok(RlTensorMap::default());
        }
        k.tensor_map(&TensorMap3d::heads(addr, rows, heads, s.head_dim, WGMMA_BLOCK_N as u32))
    };
    let q = match io.q {
        Operand::F32(_) => RlTensorMap::default(),
        q => map(q.addr(), s.total_q, s.num_heads)?,
    };
    Ok(AttnPrefillTmaParams {
        p,
        q,
        k: map(io.k.addr(), kv_rows, s.num_kv_heads)?,
        v: map(io.v.addr(), kv_rows, s.num_kv_heads)?,
    })
}

fn expect_len(what: &str, op: Operand, needed: usize) -> Result<()> {
    if op.len() < needed {
        return Err(Error::Invalid(format!("{what}: device buffer holds {} elements, {needed} needed", op.len())));
    }
    Ok(())
}

/// Runs `kernel` on `io`. `scores` is the scratch of [`PrefillKernel::NaiveMaterialised`] (at least
/// [`scores_len`] f32) and ignored by the others.
pub fn run(
    k: &impl Launcher,
    kernel: PrefillKernel,
    io: &PrefillIo,
    s: &PrefillShape,
    scores: Option<DevSpan<f32>>,
) -> Result<()> {
    if kernel == PrefillKernel::NaiveMaterialised && scores.is_none() {
        return Err(Error::Invalid("the materialising prefill baseline needs a score scratch buffer".into()));
    }
    let (p, elem, kv_rows) = params(io, s, scores)?;
    let choice = std::env::var(FLASH_CHOICE_ENV).ok();
    let kernel = resolve(kernel, k.arch(), choice.as_deref())?;
    let launches = plan(kernel, elem, s)?;
    if kernel == PrefillKernel::FlashTma && !launches.is_empty() {
        let tp = tma_params(k, io, s, p, kv_rows)?;
        // SAFETY: every span was checked against the shapes in `params`; the maps view those spans.
        return unsafe { launch_all(k, &launches, tp) };
    }
    // SAFETY: every span was checked against the shapes in `params`.
    unsafe { launch_all(k, &launches, p) }
}

/// # Safety
/// Every address in `params` was checked against the shapes the launches were planned for.
unsafe fn launch_all<P: DeviceRepr + Copy>(k: &impl Launcher, launches: &[Launch], params: P) -> Result<()> {
    for l in launches {
        if l.shared_bytes > DEFAULT_SHARED_LIMIT {
            k.allow_dynamic_shared(ATTENTION_PREFILL, l.entry, l.shared_bytes)?;
        }
        let mut config = grid(l.grid, l.threads);
        config.shared_mem_bytes = l.shared_bytes;
        // SAFETY: forwarded to the caller.
        unsafe { k.launch(ATTENTION_PREFILL, l.entry, config, params)? }
    }
    Ok(())
}

/// The fast kernel for this GPU (see [`PrefillKernel::Flash`]).
pub fn flash(k: &impl Launcher, io: &PrefillIo, s: &PrefillShape) -> Result<()> {
    run(k, PrefillKernel::Flash, io, s, None)
}

/// The SIMT tiled kernel (no tensor cores).
pub fn tiled(k: &impl Launcher, io: &PrefillIo, s: &PrefillShape) -> Result<()> {
    run(k, PrefillKernel::Tiled, io, s, None)
}

/// The one-thread-per-query-row baseline.
pub fn naive_row(k: &impl Launcher, io: &PrefillIo, s: &PrefillShape) -> Result<()> {
    run(k, PrefillKernel::NaiveRow, io, s, None)
}

/// The materialising baseline: S (f32, `scores`, at least [`scores_len`]) in global memory, softmax,
/// then P·V.
pub fn naive_materialised(k: &impl Launcher, io: &PrefillIo, s: &PrefillShape, scores: DevSpan<f32>) -> Result<()> {
    run(k, PrefillKernel::NaiveMaterialised, io, s, Some(scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(batch: usize, heads: usize, kv_heads: usize, d: usize, q: usize, kv: usize) -> PrefillShape {
        PrefillShape {
            batch,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: d,
            total_q: batch * q,
            max_q_len: q,
            max_kv_len: kv,
            causal: true,
            scale: 1.0 / (d as f32).sqrt(),
        }
    }

    #[test]
    fn flash_plan_covers_every_query_row_with_128_row_blocks() {
        for (q, blocks) in [(1, 1), (127, 1), (128, 1), (129, 2), (1000, 8), (4096, 32), (16384, 128)] {
            let l = plan(PrefillKernel::Flash, Elem::Bf16, &shape(2, 32, 8, 128, q, q)).unwrap();
            assert_eq!(l.len(), 1);
            assert_eq!(l[0].grid, (blocks, 32, 2), "q_len {q}");
            assert_eq!(l[0].threads, 128);
            assert_eq!(l[0].entry, "attn_prefill_flash_bf16_hd128");
        }
        let l = plan(PrefillKernel::Flash, Elem::F16, &shape(1, 8, 8, 64, 17, 17)).unwrap();
        assert_eq!(l[0].entry, "attn_prefill_flash_f16_hd64");
    }

    #[test]
    fn flash_shared_memory_matches_the_kernel_tiles() {
        // (BM + 2 BN) rows of head_dim + 8 bf16: D=128 with BN=32, D=64 with BN=64.
        assert_eq!(flash_shared_bytes(128), (128 + 64) * 136 * 2);
        assert_eq!(flash_shared_bytes(64), (128 + 128) * 72 * 2);
        let l = plan(PrefillKernel::Flash, Elem::Bf16, &shape(1, 4, 4, 128, 5, 5)).unwrap();
        assert_eq!(l[0].shared_bytes as usize, flash_shared_bytes(128));
        assert!(l[0].shared_bytes > DEFAULT_SHARED_LIMIT, "D=128 needs the raised limit");
        // Under the opt-in limit of every supported GPU (99 KB on sm_86/89).
        assert!(flash_shared_bytes(128) <= 99 << 10 && flash_shared_bytes(64) <= 99 << 10);
    }

    #[test]
    fn hopper_gets_the_tma_kernel_unless_told_otherwise() {
        use PrefillKernel::*;
        assert_eq!(resolve(Flash, "sm_90a", None).unwrap(), FlashTma);
        assert_eq!(resolve(Flash, "sm_90a", Some("wgmma")).unwrap(), FlashWgmma);
        assert!(resolve(FlashTma, "sm_80", None).is_err());
        assert_eq!(resolve(Flash, "sm_90a", Some("mma")).unwrap(), FlashMma);
        assert_eq!(resolve(Flash, "sm_80", None).unwrap(), FlashMma);
        assert_eq!(resolve(Flash, "sm_80", Some("")).unwrap(), FlashMma);
        assert_eq!(resolve(Tiled, "sm_80", Some("wgmma")).unwrap(), Tiled);
        let e = resolve(Flash, "sm_80", Some("wgmma")).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)) && e.to_string().contains("Hopper"), "{e}");
        assert!(resolve(FlashWgmma, "sm_80", None).is_err());
        assert!(resolve(Flash, "sm_90a", Some("fast")).unwrap_err().to_string().contains("ROOFLAB_PREFILL_FLASH"));
        let l = plan(FlashWgmma, Elem::Bf16, &shape(2, 32, 8, 128, 1000, 1000)).unwrap();
        assert_eq!((l[0].entry, l[0].grid, l[0].threads), ("attn_prefill_wgmma_bf16_hd128", (8, 32, 2), 256));
        // Q plus two stages of 128-key K and V tiles: 160 KB at D=128, within the H100's 227 KB.
        assert_eq!(l[0].shared_bytes as usize, 640 * 128 * 2);
        assert!(wgmma_shared_bytes(128) <= 227 << 10);
        assert_eq!(
            plan(FlashWgmma, Elem::F16, &shape(1, 4, 4, 64, 3, 3)).unwrap()[0].entry,
            "attn_prefill_wgmma_f16_hd64"
        );
    }

    #[test]
    fn the_tma_kernel_has_three_warpgroups_and_fits_the_h100s_shared_memory() {
        use PrefillKernel::FlashTma;
        let l = plan(FlashTma, Elem::Bf16, &shape(2, 32, 8, 128, 1000, 1000)).unwrap();
        assert_eq!((l[0].entry, l[0].grid, l[0].threads), ("attn_prefill_tma_bf16_hd128", (8, 32, 2), 384));
        // Q 32 KB + 2 stages x (K 32 KB + V 32 KB) + 10 mbarriers + 1 KB alignment slack.
        assert_eq!(l[0].shared_bytes as usize, 1024 + 32768 + 4 * 32768 + 10 * 8);
        // D = 64: Q 16 KB + 3 stages x 32 KB + 14 mbarriers + slack.
        assert_eq!(tma_shared_bytes(64), 1024 + 16384 + 6 * 16384 + 14 * 8);
        assert!(tma_shared_bytes(128) <= 227 << 10 && tma_shared_bytes(64) <= 227 << 10);
        assert_eq!(plan(FlashTma, Elem::F16, &shape(1, 4, 4, 64, 3, 3)).unwrap()[0].entry, "attn_prefill_tma_f16_hd64");
    }

    #[test]
    fn baseline_plans() {
        let s = shape(3, 16, 4, 64, 100, 300);
        let l = plan(PrefillKernel::NaiveMaterialised, Elem::Bf16, &s).unwrap();
        let entries: Vec<_> = l.iter().map(|l| l.entry).collect();
        assert_eq!(entries, ["attn_prefill_naive_scores", "attn_prefill_naive_softmax", "attn_prefill_naive_pv"]);
        assert_eq!(l[0].grid, (3, 100, 48));
        assert_eq!(l[2].threads, 64);
        assert_eq!(scores_len(&s), 300 * 16 * 300);
        let l = plan(PrefillKernel::NaiveRow, Elem::Bf16, &s).unwrap();
        assert_eq!((l[0].grid, l[0].threads), ((4, 16, 3), 32));
        let l = plan(PrefillKernel::Tiled, Elem::Bf16, &s).unwrap();
        assert_eq!((l[0].entry, l[0].grid), ("attn_prefill_tiled_hd64", (7, 16, 3)));
        assert!(plan(PrefillKernel::Flash, Elem::Bf16, &shape(0, 4, 4, 64, 0, 0)).unwrap().is_empty());
    }

    #[test]
    fn bad_shapes_are_refused_by_name() {
        let e = plan(PrefillKernel::Flash, Elem::Bf16, &shape(1, 8, 8, 96, 4, 4)).unwrap_err();
        assert!(e.to_string().contains("head_dim 96"), "{e}");
        assert!(plan(PrefillKernel::Flash, Elem::Bf16, &shape(1, 8, 3, 64, 4, 4)).is_err());
        let e = plan(PrefillKernel::Flash, Elem::Bf16, &PrefillShape { scale: 0.0, ..shape(1, 8, 8, 64, 4, 4) })
            .unwrap_err();
        assert!(e.to_string().contains("scale"), "{e}");
        let e = plan(PrefillKernel::Flash, Elem::Bf16, &PrefillShape { total_q: 3, ..shape(1, 8, 8, 64, 4, 4) })
            .unwrap_err();
        assert!(e.to_string().contains("max_q_len"), "{e}");
        let e = plan(PrefillKernel::NaiveMaterialised, Elem::Bf16, &shape(1, 8, 8, 64, 4, 0)).unwrap_err();
        assert!(e.to_string().contains("max_kv_len"), "{e}");
    }

    /// Spans at made-up device addresses: `params` only checks them, nothing is launched.
    fn span<T>(addr: u64, len: usize) -> DevSpan<'static, T> {
        DevSpan::from_raw_parts(addr, len)
    }

    #[test]
    fn outputs_overlapping_an_operand_are_refused_by_name() {
        let s = PrefillShape { causal: false, ..shape(1, 4, 2, 64, 8, 8) };
        let (rows, kv) = (8 * 4 * 64, 8 * 2 * 64); // q/out and k/v elements
        let (q, k, v, out, lse) = (0x10000, 0x20000, 0x30000, 0x40000, 0x50000);
        let io = |out_at: u64, lse_at: Option<u64>| PrefillIo {
            q: Operand::Bf16(span(q, rows)),
            k: Operand::Bf16(span(k, kv)),
            v: Operand::Bf16(span(v, kv)),
            out: Operand::F32(span(out_at, rows)),
            lse: lse_at.map(|a| span(a, 4 * 8)),
            cu_seqlens_q: span(0x60000, 2),
            q_offsets: None,
            kv: KvLayout::Varlen { cu_seqlens_k: span(0x70000, 2), total_k: 8 },
        };
        assert!(params(&io(out, Some(lse)), &s, None).is_ok());
        let e = params(&io(q + 64, None), &s, None).unwrap_err();
        assert!(e.to_string().contains("output overlaps q"), "{e}");
        let e = params(&io(out, Some(v + 16)), &s, None).unwrap_err();
        assert!(e.to_string().contains("lse overlaps values"), "{e}");
        // The output is f32 (4 bytes an element): an LSE at its last element overlaps it, one just past
        // its end does not.
        let e = params(&io(out, Some(out + 4 * rows as u64 - 4)), &s, None).unwrap_err();
        assert!(e.to_string().contains("lse overlaps the output"), "{e}");
        assert!(params(&io(out, Some(out + 4 * rows as u64)), &s, None).is_ok());
    }

    #[test]
    fn square_flops_follow_the_papers() {
        assert_eq!(PrefillShape::square_flops(1, 32, 4096, 128, false), 4.0 * 32.0 * 4096.0 * 4096.0 * 128.0);
        assert_eq!(PrefillShape::square_flops(2, 16, 8192, 128, true), 2.0 * 2.0 * 16.0 * 8192.0 * 8192.0 * 128.0);
    }
}

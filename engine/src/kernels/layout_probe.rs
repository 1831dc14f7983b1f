//! Wrappers of kernels-cuda/layout_probe.cu, the Hopper layout probes. They run the TMA and wgmma
//! instructions of the prefill kernels v3 and v4 once each, on operands laid out here, so that a GPU run
//! can show whether the hardware writes and reads shared memory where those kernels assume.
//! tests/gpu/layout_probe.rs makes the comparison.
//!
//! Besides the launches, this module holds the kernels' side of the comparison, mirrored from
//! attention_prefill.cu: [`TileLayout`] (where a tile element sits in shared memory) and
//! [`OperandDescriptors`] (the matrix descriptors each k16 step of each product uses). Change them
//! together with the .cu file.

use half::f16;

use super::tma::TensorMap3d;
use super::{DevSpan, Launcher, LAYOUT_PROBE};
use crate::cuda::grid;
use crate::ffi::params::{LayoutProbeMmaParams, LayoutProbeTmaParams};
use crate::{Error, Result};

/// M of every wgmma probe: the 64 rows of one warpgroup.
pub const ROWS: usize = 64;
/// Query rows of a block and keys of a K/V tile in v3 and v4 (`BM`, `BN` in the .cu file).
pub const TILE_ROWS: usize = 128;
/// Most bytes the wgmma probes take in shared-memory images (A's and B's together).
pub const MAX_IMAGE_BYTES: usize = 96 << 10;
/// Most bytes of the TMA probe's box.
pub const MAX_BOX_BYTES: usize = 32 << 10;
const THREADS: u32 = 128;
/// Slack for aligning the images to 1024 bytes, as the kernels do.
const ALIGN_SLACK: usize = 1024;

/// A shared-memory tile layout of the prefill kernels: a tile of `rows` rows of 16-bit elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileLayout {
    /// v3 (`wg::tile_offset`): 8-row x 16-byte core matrices. A 16-byte chunk is 16 bytes after the one
    /// in the row above it, 128 bytes after the one 8 rows up, and `rows * 16` bytes after its left
    /// neighbour.
    Interleaved,
    /// v4 (`tma::swizzled`, what its TMA writes): 64-column panels of `rows` x 128 bytes. Row r of a panel
    /// is at r * 128, and its 16-byte chunk c at (c ^ r % 8) * 16.
    Swizzle128,
}

impl TileLayout {
    /// Byte offset of element (`row`, `col`) in a tile of `rows` rows.
    pub fn offset(self, row: usize, col: usize, rows: usize) -> usize {
        let (chunk, element) = (col / 8, col % 8);
        let chunk_at = match self {
            TileLayout::Interleaved => chunk * rows * 16 + (row / 8) * 128 + (row % 8) * 16,
            TileLayout::Swizzle128 => (chunk / 8) * rows * 128 + row * 128 + ((chunk % 8) ^ (row % 8)) * 16,
        };
        chunk_at + 2 * element
    }

    /// The prefill version that uses this layout.
    pub fn version(self) -> &'static str {
        match self {
            TileLayout::Interleaved => "v3 (wgmma, interleaved)",
            TileLayout::Swizzle128 => "v4 (TMA, 128-byte swizzle)",
        }
    }
}

/// Descriptor bit 62: layout type 1, the 128-byte swizzle.
const SWIZZLE_128B: u64 = 1 << 62;

/// A shared-memory matrix descriptor (`wg::make_desc`): start address, leading and stride byte offsets,
/// each as (x & 0x3FFFF) >> 4.
pub fn make_desc(addr: usize, lbo: usize, sbo: usize) -> u64 {
    let field = |x: usize| ((x as u64) & 0x3FFFF) >> 4;
    field(addr) | (field(lbo) << 16) | (field(sbo) << 32)
}

/// The descriptors v3 or v4 build for one k16 step of its products, start addresses relative to the tile
/// (Q, K and V tiles of [`TILE_ROWS`] rows, laid out by [`TileLayout::offset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperandDescriptors {
    pub layout: TileLayout,
}

impl OperandDescriptors {
    /// Q, the A operand of S = Q Kᵀ (K-major), for warpgroup `group`'s 64 rows.
    pub fn q(self, group: usize, kk: usize) -> u64 {
        const BM: usize = TILE_ROWS;
        match self.layout {
            TileLayout::Interleaved => make_desc(group * 8 * 128 + kk * 2 * BM * 16, BM * 16, 128),
            TileLayout::Swizzle128 => {
                make_desc(group * 64 * 128 + (kk / 4) * BM * 128 + (kk % 4) * 32, 16, 1024) | SWIZZLE_128B
            }
        }
    }

    /// K, the B operand of S = Q Kᵀ (K-major: a key is a column of B).
    pub fn k(self, kk: usize) -> u64 {
        const BN: usize = TILE_ROWS;
        match self.layout {
            TileLayout::Interleaved => make_desc(kk * 2 * BN * 16, BN * 16, 128),
            TileLayout::Swizzle128 => make_desc((kk / 4) * BN * 128 + (kk % 4) * 32, 16, 1024) | SWIZZLE_128B,
        }
    }

    /// V, the B operand of O += P V (N-major: read transposed, a key is a row of B).
    pub fn v(self, kk: usize) -> u64 {
        const BN: usize = TILE_ROWS;
        match self.layout {
            TileLayout::Interleaved => make_desc(kk * 2 * 128, 128, BN * 16),
            TileLayout::Swizzle128 => make_desc(kk * 16 * 128, BN * 128, 1024) | SWIZZLE_128B,
        }
    }
}

/// Which wgmma form a probe runs (the prefill kernels' two products).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmaForm {
    /// S = Q Kᵀ: m64n128k16, A and B from shared memory, B K-major.
    SharedN128,
    /// O += P V at head_dim 128: m64n128k16, A from registers, B N-major (transposed).
    RegistersN128,
    /// O += P V at head_dim 64: m64n64k16, as above.
    RegistersN64,
}

impl MmaForm {
    pub fn n(self) -> usize {
        if self == MmaForm::RegistersN64 {
            64
        } else {
            128
        }
    }

    fn entry(self) -> &'static str {
        match self {
            MmaForm::SharedN128 => "layout_probe_wgmma_ss_n128",
            MmaForm::RegistersN128 => "layout_probe_wgmma_rs_n128",
            MmaForm::RegistersN64 => "layout_probe_wgmma_rs_n64",
        }
    }
}

/// The operands of one wgmma probe. For [`MmaForm::SharedN128`], `a` is A's shared-memory image and
/// `a_desc` its descriptors; for the register forms, `a` is A row-major `[64][16 * k_steps]` and
/// `a_desc` is unused. `b` is B's image. Descriptors are relative to their image, one per k16 step.
pub struct MmaProbe<'a> {
    pub form: MmaForm,
    pub a: DevSpan<'a, f16>,
    pub b: DevSpan<'a, f16>,
    pub out: DevSpan<'a, f32>,
    pub a_desc: &'a [u64],
    pub b_desc: &'a [u64],
}

/// Fails unless the probes can run: they exist for Hopper only (the sm_80 set traps).
fn check_hopper(k: &impl Launcher) -> Result<()> {
    if k.arch() != "sm_90a" {
        return Err(Error::Unsupported(format!(
            "the layout probes need a Hopper GPU (sm_90a PTX); this one runs the {} set",
            k.arch()
        )));
    }
    Ok(())
}

/// Runs one wgmma probe: `out[64][n]` = the sum over the k16 steps of A B.
pub fn wgmma(k: &impl Launcher, probe: &MmaProbe) -> Result<()> {
    check_hopper(k)?;
    let k_steps = probe.b_desc.len();
    if k_steps != 4 && k_steps != 8 {
        return Err(Error::Invalid(format!("layout probe: {k_steps} k16 steps (the probe runs 4 or 8)")));
    }
    let shared_a = probe.form == MmaForm::SharedN128;
    if shared_a && probe.a_desc.len() != k_steps {
        return Err(Error::Invalid(format!("layout probe: {} A descriptors for {k_steps} steps", probe.a_desc.len())));
    }
    let a_bytes = if shared_a { probe.a.bytes() } else { 0 };
    if !shared_a {
        probe.a.expect_len("layout probe A", ROWS * 16 * k_steps)?;
    }
    if !a_bytes.is_multiple_of(16) || !probe.b.bytes().is_multiple_of(16) {
        return Err(Error::Invalid("layout probe: images must be whole 16-byte chunks".into()));
    }
    let image_bytes = a_bytes.next_multiple_of(1024) + probe.b.bytes();
    if image_bytes > MAX_IMAGE_BYTES {
        return Err(Error::Invalid(format!("layout probe: {image_bytes} bytes of images (at most {MAX_IMAGE_BYTES})")));
    }
    probe.out.expect_len("layout probe output", ROWS * probe.form.n())?;
    let descriptors = |d: &[u64]| {
        let mut all = [0u64; 8];
        all[..d.len()].copy_from_slice(d);
        all
    };
    let params = LayoutProbeMmaParams {
        a: probe.a.addr(),
        b: probe.b.addr(),
        out: probe.out.addr(),
        a_desc: descriptors(if shared_a { probe.a_desc } else { &[] }),
        b_desc: descriptors(probe.b_desc),
        a_bytes: a_bytes as u32,
        b_bytes: probe.b.bytes() as u32,
        k_steps: k_steps as u32,
        pad0: 0,
    };
    let shared = (ALIGN_SLACK + image_bytes) as u32;
    let entry = probe.form.entry();
    k.allow_dynamic_shared(LAYOUT_PROBE, entry, shared)?;
    let mut config = grid((1, 1, 1), THREADS);
    config.shared_mem_bytes = shared;
    // SAFETY: every buffer was checked above against what the kernel reads and writes.
    unsafe { k.launch(LAYOUT_PROBE, entry, config, params) }
}

/// Runs the TMA probe: the box of `map` at `coords` (innermost first) into shared memory, its bytes as
/// they landed to `out`.
pub fn tma(k: &impl Launcher, map: &TensorMap3d, coords: [i32; 3], out: DevSpan<u16>) -> Result<()> {
    check_hopper(k)?;
    let bytes = map.box_bytes() as usize;
    if bytes > MAX_BOX_BYTES {
        return Err(Error::Invalid(format!("layout probe: a box of {bytes} bytes (at most {MAX_BOX_BYTES})")));
    }
    out.expect_len("layout probe output", bytes / 2)?;
    let params = LayoutProbeTmaParams {
        map: k.tensor_map(map)?,
        out: out.addr(),
        x: coords[0],
        y: coords[1],
        z: coords[2],
        bytes: bytes as u32,
    };
    // The box, then its mbarrier at the next 1024-byte boundary.
    let shared = (ALIGN_SLACK + bytes.next_multiple_of(1024) + 8) as u32;
    let entry = "layout_probe_tma";
    k.allow_dynamic_shared(LAYOUT_PROBE, entry, shared)?;
    let mut config = grid((1, 1, 1), THREADS);
    config.shared_mem_bytes = shared;
    // SAFETY: `out` holds the box; the tensor map's buffer is the caller's, checked by `tensor_map`.
    unsafe { k.launch(LAYOUT_PROBE, entry, config, params) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_place_every_element_of_a_tile_once() {
        for layout in [TileLayout::Interleaved, TileLayout::Swizzle128] {
            for d in [64, 128] {
                let mut seen = vec![false; TILE_ROWS * d];
                for row in 0..TILE_ROWS {
                    for col in 0..d {
                        let at = layout.offset(row, col, TILE_ROWS);
                        assert!(at % 2 == 0 && at / 2 < seen.len(), "{layout:?} D={d} ({row}, {col}) at {at}");
                        assert!(!std::mem::replace(&mut seen[at / 2], true), "{layout:?} D={d}: {at} twice");
                    }
                }
            }
        }
    }

    #[test]
    fn the_swizzle_permutes_chunks_within_their_row_only() {
        let l = TileLayout::Swizzle128;
        assert_eq!(l.offset(0, 0, 128), 0);
        assert_eq!(l.offset(1, 0, 128), 128 + 16);
        // Chunk 2 of row 3 sits at chunk 2 ^ 3 = 1.
        assert_eq!(l.offset(3, 17, 128), 3 * 128 + 16 + 2);
        assert_eq!(l.offset(0, 64, 128), 128 * 128, "the second panel follows the first");
        assert_eq!(TileLayout::Interleaved.offset(9, 8, 128), 128 * 16 + 128 + 16);
    }

    #[test]
    fn descriptors_match_the_kernels_encoding() {
        // attention_prefill.cu: v3 Q of warpgroup 1, k-step 1: make_desc(q + 1024 + 2 * 128 * 16, 128 * 16, 128).
        let v3 = OperandDescriptors { layout: TileLayout::Interleaved };
        assert_eq!(v3.q(1, 1), ((1024 + 4096) / 16) | ((2048 / 16) << 16) | ((128 / 16) << 32));
        // v4 V, k-step 2: start 2 * 2048, LBO one panel (128 x 128 bytes), SBO 1024, swizzled.
        let v4 = OperandDescriptors { layout: TileLayout::Swizzle128 };
        assert_eq!(v4.v(2), (4096 / 16) | ((16384 / 16) << 16) | ((1024 / 16) << 32) | (1 << 62));
        // v4 K, k-step 5: the second panel, 32 bytes into its rows.
        assert_eq!(v4.k(5) & 0x3FFF, ((128 * 128 + 32) / 16) as u64);
    }
}

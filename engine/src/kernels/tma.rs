//! TMA tensor maps: what a kernel that loads tiles with the Hopper tensor-memory accelerator needs
//! from the host. A [`TensorMap3d`] describes a 3-D view of a device buffer of 16-bit elements and
//! the box one copy moves; [`Launcher::tensor_map`](super::Launcher::tensor_map) encodes it (the
//! driver's `cuTensorMapEncodeTiled` on a GPU, the emulator's own encoder on the CPU) into the
//! 128-byte [`RlTensorMap`] the kernel takes by value.
//!
//! Every map here uses the 128-byte swizzle (the shared-memory layout the wgmma descriptors of the
//! kernel read without bank conflicts) and zero fill outside the tensor, so the inner box dimension
//! is exactly 64 elements (128 bytes).

use crate::{Error, Result};

pub use crate::ffi::params::RlTensorMap;

/// Bytes of one element (bf16 or f16).
pub const ELEM_BYTES: u64 = 2;
/// The swizzle span: the inner box dimension in bytes.
pub const SWIZZLE_BYTES: u32 = 128;
/// Elements of the inner box dimension (one 128-byte swizzled row).
pub const BOX_INNER: u32 = SWIZZLE_BYTES / ELEM_BYTES as u32;

/// A 3-D view `[dims[2]][dims[1]][dims[0]]` (innermost first) of the 16-bit elements at `address`,
/// copied in boxes of `box_dims` elements. Element `(i0, i1, i2)` sits at
/// `address + 2 * i0 + strides[0] * i1 + strides[1] * i2` (strides in bytes, as the driver takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorMap3d {
    pub address: u64,
    pub dims: [u64; 3],
    pub strides: [u64; 2],
    pub box_dims: [u32; 3],
}

impl TensorMap3d {
    /// The TMA view of a row-major `[rows][heads][head_dim]` tensor (q, k, v of the attention
    /// kernels), with boxes of 64 elements of one head over `box_rows` rows.
    pub fn heads(address: u64, rows: usize, heads: usize, head_dim: usize, box_rows: u32) -> Self {
        let head_bytes = head_dim as u64 * ELEM_BYTES;
        TensorMap3d {
            address,
            dims: [head_dim as u64, heads as u64, rows as u64],
            strides: [head_bytes, head_bytes * heads as u64],
            box_dims: [BOX_INNER, 1, box_rows],
        }
    }

    /// Bytes one copy of the box moves (and completes on its mbarrier), in or out of the tensor.
    pub fn box_bytes(&self) -> u64 {
        self.box_dims.iter().map(|&d| d as u64).product::<u64>() * ELEM_BYTES
    }

    /// The driver's rules for a tiled map (cuTensorMapEncodeTiled), checked here so that a bad view
    /// is an error naming the rule rather than CUDA_ERROR_INVALID_VALUE.
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Invalid(format!("TMA tensor map: {why}")));
        if self.address == 0 || !self.address.is_multiple_of(16) {
            return bad(format!("global address {:#x} must be non-zero and 16-byte aligned", self.address));
        }
        if let Some(d) = self.dims.iter().find(|&&d| d == 0 || d > 1 << 32) {
            return bad(format!("dimension {d} must be in 1..=2^32"));
        }
        if let Some(s) = self.strides.iter().find(|&&s| !s.is_multiple_of(16) || s >= 1 << 40) {
            return bad(format!("stride {s} bytes must be a multiple of 16 below 2^40"));
        }
        if let Some(b) = self.box_dims.iter().find(|&&b| b == 0 || b > 256) {
            return bad(format!("box dimension {b} must be in 1..=256"));
        }
        if self.box_dims[0] != BOX_INNER {
            return bad(format!(
                "inner box dimension {} must be {BOX_INNER} elements (the {SWIZZLE_BYTES}-byte swizzle span)",
                self.box_dims[0]
            ));
        }
        if self.dims[0] * ELEM_BYTES > self.strides[0] || self.strides[0] * self.dims[1] > self.strides[1] {
            return bad(format!("strides {:?} bytes overlap dimensions {:?}", self.strides, self.dims));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heads_view_has_row_strides_in_bytes_and_128_byte_boxes() {
        let m = TensorMap3d::heads(0x1000, 4096, 8, 128, 128);
        assert_eq!(m.dims, [128, 8, 4096]);
        assert_eq!(m.strides, [256, 2048]);
        assert_eq!(m.box_dims, [64, 1, 128]);
        assert_eq!(m.box_bytes(), 64 * 128 * 2);
        m.check().unwrap();
    }

    #[test]
    fn views_the_driver_would_refuse_are_named() {
        let ok = TensorMap3d::heads(0x1000, 100, 3, 64, 64);
        let cases = [
            (TensorMap3d { address: 0x1008, ..ok }, "16-byte aligned"),
            (TensorMap3d { dims: [64, 3, 0], ..ok }, "dimension 0"),
            (TensorMap3d { strides: [136, 384], ..ok }, "multiple of 16"),
            (TensorMap3d { box_dims: [64, 1, 512], ..ok }, "box dimension 512"),
            (TensorMap3d { box_dims: [32, 1, 64], ..ok }, "inner box dimension 32"),
            (TensorMap3d { strides: [64, 384], ..ok }, "overlap"),
        ];
        for (m, want) in cases {
            let e = m.check().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
    }
}

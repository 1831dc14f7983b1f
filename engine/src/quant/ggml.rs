//! ggml's tensor element types: how many bytes a block of each takes, and reference dequantisers
//! (to f32) for the formats Llama GGUF files use in practice.
//!
//! Every block format stores a row as consecutive blocks of `block_size` elements; a row of a
//! tensor is always a whole number of blocks (ggml requires `ne[0] % block_size == 0`). The
//! layouts follow ggml-common.h; scales are little-endian f16.
//!
//! | type | elements | bytes | layout | value |
//! |---|---|---|---|---|
//! | Q8_0 | 32 | 34 | d: f16, qs: 32 x i8 | `qs[i] * d` |
//! | Q4_0 | 32 | 18 | d: f16, qs: 16 bytes | low nibbles are elements 0..16, high nibbles 16..32; `(q - 8) * d` |
//! | Q4_1 | 32 | 20 | d: f16, m: f16, qs: 16 bytes | nibbles as Q4_0; `q * d + m` |
//! | Q5_0 | 32 | 22 | d, qh: u32, qs: 16 bytes | fifth bit of element i is bit i of qh; `(q - 16) * d` |
//! | Q5_1 | 32 | 24 | d, m, qh: u32, qs: 16 bytes | as Q5_0; `q * d + m` |
//! | Q4_K | 256 | 144 | d, dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles | eight sub-blocks of 32: `q * d * sc - dmin * m` |
//! | Q5_K | 256 | 176 | as Q4_K plus qh: 32 bytes of fifth bits | as Q4_K with 5-bit q |
//! | Q6_K | 256 | 210 | ql: 128, qh: 64, scales: 16 x i8, d | sixteen sub-blocks of 16: `(q - 32) * d * sc` |

use half::{bf16, f16};
use rayon::prelude::*;

use crate::{Error, Result};

/// A ggml tensor type, by the id GGUF files store. The table covers every type current ggml
/// defines, so a reader can size (and bounds-check) any tensor; [`GgmlType::can_dequantize`] says
/// which ones this module can turn into floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// (type, GGUF id, name, elements per block, bytes per block), from ggml.h / ggml-common.h.
const TYPES: [(GgmlType, u32, &str, usize, usize); 31] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

/// The types [`dequantize`] handles, for error messages.
pub const DEQUANTIZABLE: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K";

impl GgmlType {
    /// The type a GGUF tensor-info id names, or `None` for an id ggml does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|t| t.1 == id).map(|t| t.0)
    }

    fn entry(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        TYPES.iter().find(|t| t.0 == self).expect("every GgmlType has a table row")
    }

    pub fn id(self) -> u32 {
        self.entry().1
    }

    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Elements per block (1 for plain element types).
    pub fn block_size(self) -> usize {
        self.entry().3
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.entry().4
    }

    /// Bytes of `n` elements, or `None` when `n` is not a whole number of blocks (or overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if n / bs * bs != n {
            return None;
        }
        (n / bs).checked_mul(self.block_bytes() as u64)
    }

    /// Whether [`dequantize`] can decode this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4_K | Q5_K | Q6_K)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Blocks handed to one rayon task: large enough that scheduling costs nothing next to decoding.
const BLOCKS_PER_TASK: usize = 4096;

/// Decodes `out.len()` elements of type `ty` from `bytes` (which must hold exactly that many).
/// Large tensors are decoded in parallel, in chunks of whole blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if !ty.can_dequantize() {
        return Err(Error::Unsupported(format!("ggml type {ty} cannot be dequantised (supported: {DEQUANTIZABLE})")));
    }
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    if out.len() / bs * bs != out.len() || bytes.len() != out.len() / bs * bb {
        return Err(Error::Invalid(format!(
            "{ty}: {} bytes cannot hold {} elements (blocks of {bs} elements take {bb} bytes)",
            bytes.len(),
            out.len()
        )));
    }
    let decode = block_decoder(ty);
    out.par_chunks_mut(bs * BLOCKS_PER_TASK).zip(bytes.par_chunks(bb * BLOCKS_PER_TASK)).for_each(|(out, bytes)| {
        for (y, block) in out.chunks_exact_mut(bs).zip(bytes.chunks_exact(bb)) {
            decode(block, y);
        }
    });
    Ok(())
}

/// Decodes a whole tensor into a new vector.
pub fn dequantize_to_vec(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0; n];
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

type BlockDecoder = fn(&[u8], &mut [f32]);

fn block_decoder(ty: GgmlType) -> BlockDecoder {
    match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q8_0 => decode_q8_0,
        GgmlType::Q4_0 => decode_q4_0,
        GgmlType::Q4_1 => decode_q4_1,
        GgmlType::Q5_0 => decode_q5_0,
        GgmlType::Q5_1 => decode_q5_1,
        GgmlType::Q4_K => decode_q4_k,
        GgmlType::Q5_K => decode_q5_k,
        GgmlType::Q6_K => decode_q6_k,
        _ => unreachable!("dequantize checks can_dequantize first"),
    }
}

#[inline]
fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn decode_q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

fn decode_q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn decode_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0f) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block: nibbles as Q4_0, fifth bits from `qh`.
#[inline]
fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0u8; 32];
    for (j, &byte) in qs.iter().enumerate() {
        q[j] = (byte & 0x0f) | (((qh >> j) & 1) << 4) as u8;
        q[j + 16] = (byte >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
    }
    q
}

fn decode_q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, q) in y.iter_mut().zip(q5_values(&b[2..6], &b[6..22])) {
        *y = (q as i32 - 16) as f32 * d;
    }
}

fn decode_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (y, q) in y.iter_mut().zip(q5_values(&b[4..8], &b[8..24])) {
        *y = q as f32 * d + m;
    }
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, packed as 6-bit values in 12
/// bytes: sub-blocks 0..4 use the low 6 bits of bytes j and j+4; 4..8 take their low 4 bits from
/// byte j+4 and their top 2 bits from the spare top bits of bytes j-4 and j.
#[inline]
fn k_scale_min(scales: &[u8], j: usize) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        ((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
    };
    (sc as f32, m as f32)
}

/// Q4_K and Q5_K share everything but the fifth bit; `qh` is `None` for Q4_K.
#[inline]
fn decode_k4_k5(d: f32, dmin: f32, scales: &[u8], qh: Option<&[u8]>, qs: &[u8], y: &mut [f32]) {
    // Each 64-element chunk reads 32 bytes of nibbles: the low nibbles are sub-block 2c, the
    // high nibbles sub-block 2c + 1; the fifth bits of chunk c are bits 2c and 2c + 1 of qh.
    for c in 0..4 {
        let nib = &qs[32 * c..32 * c + 32];
        for half in 0..2 {
            let (sc, m) = k_scale_min(scales, 2 * c + half);
            let (scale, offset) = (d * sc, dmin * m);
            let out = &mut y[64 * c + 32 * half..64 * c + 32 * half + 32];
            for (l, o) in out.iter_mut().enumerate() {
                let low = if half == 0 { nib[l] & 0x0f } else { nib[l] >> 4 };
                let high = qh.map_or(0, |qh| ((qh[l] >> (2 * c + half)) & 1) << 4);
                *o = scale * (low | high) as f32 - offset;
            }
        }
    }
}

fn decode_q4_k(b: &[u8], y: &mut [f32]) {
    decode_k4_k5(half_at(b, 0), half_at(b, 2), &b[4..16], None, &b[16..144], y);
}

fn decode_q5_k(b: &[u8], y: &mut [f32]) {
    decode_k4_k5(half_at(b, 0), half_at(b, 2), &b[4..16], Some(&b[16..48]), &b[48..176], y);
}

fn decode_q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half_at(b, 208);
    // Two halves of 128 elements; in each, element l + 32k (k = 0..4) takes a nibble of ql and
    // two bits (2k, 2k + 1) of qh[l]; sub-blocks of 16 have one signed 8-bit scale each.
    for h in 0..2 {
        let (ql, qh, sc) = (&ql[64 * h..64 * h + 64], &qh[32 * h..32 * h + 32], &scales[8 * h..8 * h + 8]);
        for l in 0..32 {
            let nibbles = [ql[l] & 0x0f, ql[l + 32] & 0x0f, ql[l] >> 4, ql[l + 32] >> 4];
            for (k, nibble) in nibbles.into_iter().enumerate() {
                let q = (nibble | (((qh[l] >> (2 * k)) & 3) << 4)) as i32 - 32;
                let scale = sc[l / 16 + 2 * k] as i8 as f32;
                y[128 * h + 32 * k + l] = d * scale * q as f32;
            }
        }
    }
}

/// Reference quantiser for Q8_0 (ggml's `quantize_row_q8_0_ref`): per block of 32,
/// `d = max|x| / 127`, `q = round(x / d)`. `x.len()` must be a multiple of 32.
pub fn quantize_q8_0(x: &[f32]) -> Result<Vec<u8>> {
    quantize_blocks(GgmlType::Q8_0, x, |x, out| {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (o, v) in out[2..].iter_mut().zip(x) {
            *o = (v * id).round() as i8 as u8;
        }
    })
}

/// Reference quantiser for Q4_0 (ggml's `quantize_row_q4_0_ref`): the element of largest
/// magnitude maps to -8, `d = max / -8`, `q = min(15, trunc(x / d + 8.5))`.
pub fn quantize_q4_0(x: &[f32]) -> Result<Vec<u8>> {
    quantize_blocks(GgmlType::Q4_0, x, |x, out| {
        let max = x.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..16 {
            out[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
        }
    })
}

/// Reference quantiser for Q4_1 (ggml's `quantize_row_q4_1_ref`): `m = min`,
/// `d = (max - min) / 15`, `q = min(15, trunc((x - m) / d + 0.5))`.
pub fn quantize_q4_1(x: &[f32]) -> Result<Vec<u8>> {
    quantize_blocks(GgmlType::Q4_1, x, |x, out| {
        let (min, max) = x.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        out[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
        let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
        for j in 0..16 {
            out[4 + j] = q(x[j]) | (q(x[j + 16]) << 4);
        }
    })
}

fn quantize_blocks(ty: GgmlType, x: &[f32], block: impl Fn(&[f32], &mut [u8])) -> Result<Vec<u8>> {
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    if x.len() / bs * bs != x.len() {
        return Err(Error::Invalid(format!("{ty} quantises blocks of {bs} elements; got {}", x.len())));
    }
    let mut out = vec![0u8; x.len() / bs * bb];
    for (x, o) in x.chunks_exact(bs).zip(out.chunks_exact_mut(bb)) {
        block(x, o);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    fn decode(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
        dequantize_to_vec(ty, bytes, bytes.len() / ty.block_bytes() * ty.block_size()).unwrap()
    }

    #[test]
    fn type_table_round_trips_ids() {
        for (ty, id, name, _, _) in TYPES {
            assert_eq!(GgmlType::from_id(id), Some(ty));
            assert_eq!((ty.id(), ty.name()), (id, name));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(1000), None);
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(GgmlType::Q4_1.bytes_for(48), None);
    }

    #[test]
    fn plain_types_decode_little_endian() {
        let f32s: Vec<u8> = [1.5f32, -2.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode(GgmlType::F32, &f32s), vec![1.5, -2.25]);
        let f16s: Vec<u8> = [h(0.5), h(-3.0)].concat();
        assert_eq!(decode(GgmlType::F16, &f16s), vec![0.5, -3.0]);
        // bf16 0x3FC0 = 1.5, 0xC040 = -3.0
        assert_eq!(decode(GgmlType::BF16, &[0xC0, 0x3F, 0x40, 0xC0]), vec![1.5, -3.0]);
    }

    #[test]
    fn q8_0_hand_block() {
        // d = 0.5; qs[i] = i - 16 -> values (i - 16) / 2.
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(decode(GgmlType::Q8_0, &b), want);
    }

    #[test]
    fn q4_0_hand_block_low_nibbles_first() {
        // d = 2; byte j = low (j) | high (15 - j): element j = (j - 8) * 2, element j + 16 = (7 - j) * 2.
        let mut b = h(2.0).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = decode(GgmlType::Q4_0, &b);
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 2.0);
        }
        assert_eq!((y[0], y[15], y[16], y[31]), (-16.0, 14.0, 14.0, -16.0));
    }

    #[test]
    fn q4_1_hand_block() {
        // d = 0.25, m = -1; byte j = low (j) | high (3): element j = j / 4 - 1, element j + 16 = -0.25.
        let mut b = [h(0.25), h(-1.0)].concat();
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let y = decode(GgmlType::Q4_1, &b);
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.25 - 1.0);
            assert_eq!(y[j + 16], -0.25);
        }
    }

    #[test]
    fn q5_hand_blocks_take_fifth_bit_from_qh() {
        // qh has bit 0 (element 0) and bit 16 (element 16) set; all nibbles are 1.
        let qh = (1u32 | (1 << 16)).to_le_bytes();
        let mut b0 = h(1.0).to_vec();
        b0.extend(qh);
        b0.extend([0x11u8; 16]);
        let y = decode(GgmlType::Q5_0, &b0);
        assert_eq!((y[0], y[1], y[16], y[17]), (17.0 - 16.0, 1.0 - 16.0, 1.0, -15.0));
        let mut b1 = [h(0.5), h(2.0)].concat();
        b1.extend(qh);
        b1.extend([0x11u8; 16]);
        let y = decode(GgmlType::Q5_1, &b1);
        assert_eq!((y[0], y[1], y[16], y[31]), (17.0 * 0.5 + 2.0, 0.5 + 2.0, 10.5, 2.5));
    }

    /// A Q4_K block whose sub-block j has scale j + 1 and min 2j (sub-blocks 4..8 exercise the
    /// split 6-bit packing), every nibble 3: element e of sub-block j = d (j+1) 3 - dmin 2j.
    #[test]
    fn q4_k_hand_block() {
        let (sc, mn): (Vec<u8>, Vec<u8>) = (0..8u8).map(|j| (j + 1 + 8 * (j / 4) * 5, 2 * j + 40 * (j / 4))).unzip();
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            packed[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            packed[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        for j in 0..8 {
            assert_eq!(k_scale_min(&packed, j), (sc[j] as f32, mn[j] as f32));
        }
        let mut b = [h(0.5), h(0.25)].concat();
        b.extend(packed);
        b.extend([0x33u8; 128]);
        let y = decode(GgmlType::Q4_K, &b);
        for (e, v) in y.iter().enumerate() {
            let j = e / 32;
            assert_eq!(*v, 0.5 * sc[j] as f32 * 3.0 - 0.25 * mn[j] as f32, "element {e}");
        }
    }

    /// Q6_K: scale of sub-block s is s - 8, ql nibbles 5, qh all 0b10 pairs (q = 5 + 32 - 32 = 5).
    #[test]
    fn q6_k_hand_block() {
        let mut b = vec![0x55u8; 128];
        b.extend([0b1010_1010u8; 64]);
        b.extend((0..16).map(|s| (s as i8 - 8) as u8));
        b.extend(h(0.5));
        let y = decode(GgmlType::Q6_K, &b);
        for (e, v) in y.iter().enumerate() {
            let sub = e / 16;
            assert_eq!(*v, 0.5 * (sub as f32 - 8.0) * 5.0, "element {e}");
        }
    }

    /// Reference values from the `gguf` Python package (gguf.quants.dequantize, v0.19) for
    /// pseudo-random blocks (bytes from [`lcg_bytes`], scales overwritten with sane f16s).
    #[test]
    fn k_quants_and_q5_match_ggml_python() {
        for (ty, seed, scale_at, want_sum, probes) in python_reference() {
            let mut bytes = lcg_bytes(seed, ty.block_bytes() * 2);
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                for &(at, v) in scale_at {
                    block[at..at + 2].copy_from_slice(&h(v));
                }
            }
            let y = decode(ty, &bytes);
            let sum: f64 = y.iter().map(|&v| v as f64).sum();
            assert!((sum - want_sum).abs() < 1e-3 * (1.0 + want_sum.abs()), "{ty}: sum {sum} vs {want_sum}");
            for &(i, v) in probes {
                assert!((y[i] as f64 - v).abs() <= 1e-6 * v.abs().max(1.0), "{ty} element {i}: {} vs {v}", y[i]);
            }
        }
    }

    /// Deterministic pseudo-random bytes (64-bit LCG, top byte), reproduced in the Python check.
    fn lcg_bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    type Reference = (GgmlType, u64, &'static [(usize, f32)], f64, &'static [(usize, f64)]);

    fn python_reference() -> Vec<Reference> {
        vec![
            (
                GgmlType::Q5_0,
                11,
                &[(0, 0.0123)],
                -1.143768310546875,
                &[
                    (0, -0.036895751953125),
                    (1, -0.098388671875),
                    (15, -0.098388671875),
                    (16, 0.0491943359375),
                    (17, -0.17218017578125),
                    (31, 0.0491943359375),
                    (32, 0.12298583984375),
                    (37, 0.12298583984375),
                    (63, -0.061492919921875),
                ],
            ),
            (
                GgmlType::Q5_1,
                12,
                &[(0, 0.0123), (2, -0.05)],
                9.07476806640625,
                &[
                    (0, 0.19598388671875),
                    (1, 0.24517822265625),
                    (15, 0.14678955078125),
                    (16, 0.09759521484375),
                    (17, 0.232879638671875),
                    (31, 0.2205810546875),
                    (32, 0.0238037109375),
                    (37, 0.19598388671875),
                    (63, -0.013092041015625),
                ],
            ),
            (
                GgmlType::Q4_K,
                13,
                &[(0, 0.0123), (2, 0.0061)],
                1629.2759399414062,
                &[
                    (0, 8.665889739990234),
                    (1, 9.403804779052734),
                    (15, 10.879634857177734),
                    (16, -0.18909072875976562),
                    (17, 4.976314544677734),
                    (31, 4.976314544677734),
                    (33, 0.470123291015625),
                    (64, -0.146392822265625),
                    (100, 2.577594757080078),
                    (127, 2.085651397705078),
                    (128, 4.077426910400391),
                    (200, 1.0147819519042969),
                    (255, 2.1295394897460938),
                    (256, 9.792648315429688),
                    (261, 3.9877166748046875),
                    (511, 2.664775848388672),
                ],
            ),
            (
                GgmlType::Q5_K,
                14,
                &[(0, 0.0123), (2, 0.0061)],
                2733.927215576172,
                &[
                    (0, 7.591102600097656),
                    (1, 0.11356353759765625),
                    (15, 13.199256896972656),
                    (16, 8.525794982910156),
                    (17, 10.862525939941406),
                    (31, 13.666603088378906),
                    (33, 20.62750244140625),
                    (64, 12.516437530517578),
                    (100, 2.988555908203125),
                    (127, 0.996185302734375),
                    (128, 0.9049873352050781),
                    (200, 6.666229248046875),
                    (255, 1.0484542846679688),
                    (256, 4.213108062744141),
                    (261, 3.5489845275878906),
                    (511, 1.9704513549804688),
                ],
            ),
            (
                GgmlType::Q6_K,
                15,
                &[(208, 0.0123)],
                -82.08074951171875,
                &[
                    (0, -0.98388671875),
                    (1, 1.537322998046875),
                    (15, 1.291351318359375),
                    (16, 11.9542236328125),
                    (17, -20.58782958984375),
                    (31, 3.32061767578125),
                    (33, -4.390594482421875),
                    (64, -11.3638916015625),
                    (100, -11.0687255859375),
                    (127, 16.123443603515625),
                    (128, -0.2459716796875),
                    (200, -9.22393798828125),
                    (255, 3.61578369140625),
                    (256, -22.137451171875),
                    (261, -39.847412109375),
                    (511, 1.37744140625),
                ],
            ),
        ]
    }

    #[test]
    fn reference_quantisers_round_trip_within_half_a_step() {
        let mut rng = 0x2545F4914F6CDD1Du64;
        let x: Vec<f32> = (0..32 * 7)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % 20001) as f32 / 10000.0 - 1.0
            })
            .collect();
        for (ty, bytes) in [
            (GgmlType::Q8_0, quantize_q8_0(&x).unwrap()),
            (GgmlType::Q4_0, quantize_q4_0(&x).unwrap()),
            (GgmlType::Q4_1, quantize_q4_1(&x).unwrap()),
        ] {
            let y = decode(ty, &bytes);
            for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let range = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                // Q4_0 maps the largest magnitude to -8, so its opposite end clips at +7: a full step.
                let max_error = match ty {
                    GgmlType::Q8_0 => 0.5 * range / 127.0,
                    GgmlType::Q4_0 => range / 8.0,
                    _ => 0.5 * 2.0 * range / 15.0,
                };
                for (a, b2) in xb.iter().zip(yb) {
                    assert!((a - b2).abs() <= max_error + 2e-3 * range, "{ty} block {b}: {a} vs {b2}");
                }
            }
        }
        assert!(quantize_q8_0(&x[..31]).is_err());
    }

    #[test]
    fn rejects_wrong_lengths_and_unsupported_types() {
        let mut out = [0.0f32; 32];
        let e = dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out).unwrap_err().to_string();
        assert!(e.contains("33 bytes cannot hold 32 elements"), "{e}");
        let e = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0.0; 256]).unwrap_err().to_string();
        assert!(e.contains("IQ2_XXS cannot be dequantised"), "{e}");
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 18], &mut out[..31]).is_err());
    }
}

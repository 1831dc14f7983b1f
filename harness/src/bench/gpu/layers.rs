//! Workloads of the small per-token kernels (RMSNorm, RoPE, SwiGLU) at model sizes, for the criterion
//! bench `layers`. They stream a few bytes per FLOP, so the reference point is a device-to-device copy
//! moving the same number of bytes (`memcpy_same_bytes`): the speed of light for a streaming kernel.
//! rooflab has no naive versions of these kernels.

use anyhow::{anyhow, Result};
use rooflab::cuda::{CudaSlice, DevSpan};
use rooflab::kernels::layers::{rmsnorm, rope, silu_mul, RopeShape};
use rooflab::reference::{rmsnorm_rows, rope_rows, silu_mul as silu_mul_reference};
use rooflab::sample::Rng;

use super::data::{self, F32_OUTPUT_BOUND};
use super::{Device, Implementation, Workload};

const MAX_COPIES: usize = 256;
/// Positions of the RoPE tables (a 4k context).
pub(super) const ROPE_TABLE: usize = 4096;
const EPS: f32 = 1e-5;
const IMPLEMENTATIONS: [Implementation; 2] =
    [Implementation::rooflab("rooflab"), Implementation::vendor("memcpy_same_bytes")];

/// One layer kernel at one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOp {
    RmsNorm { rows: usize, hidden: usize },
    Rope { tokens: usize, heads: usize, kv_heads: usize, head_dim: usize },
    SiluMul { n: usize },
}

impl LayerOp {
    pub fn kernel(&self) -> &'static str {
        match self {
            LayerOp::RmsNorm { .. } => "rmsnorm",
            LayerOp::Rope { .. } => "rope",
            LayerOp::SiluMul { .. } => "silu_mul",
        }
    }

    pub fn shape(&self) -> String {
        match *self {
            LayerOp::RmsNorm { rows, hidden } => format!("rows={rows} hidden={hidden}"),
            LayerOp::Rope { tokens, heads, kv_heads, head_dim } => {
                format!("tokens={tokens} H={heads} KVH={kv_heads} D={head_dim}")
            }
            LayerOp::SiluMul { n } => format!("n={n}"),
        }
    }

    /// Minimum bytes: every input read once, every output written once (f32 activations).
    pub fn bytes(&self) -> u64 {
        let b = match *self {
            LayerOp::RmsNorm { rows, hidden } => 4 * (2 * rows * hidden + hidden),
            // q and k read and written, a cos and a sin row and a position per token.
            LayerOp::Rope { tokens, heads, kv_heads, head_dim } => {
                4 * (2 * tokens * (heads + kv_heads) * head_dim + tokens * head_dim + tokens)
            }
            LayerOp::SiluMul { n } => 4 * 3 * n,
        };
        b as u64
    }

    /// Elements of the rotated inputs of one copy, and of the output.
    fn lens(&self) -> (usize, usize) {
        match *self {
            LayerOp::RmsNorm { rows, hidden } => (rows * hidden, rows * hidden),
            LayerOp::Rope { tokens, heads, kv_heads, head_dim } => {
                (tokens * heads * head_dim, tokens * kv_heads * head_dim)
            }
            LayerOp::SiluMul { n } => (n, n),
        }
    }
}

/// Buffers: `a`/`b` are the rotated inputs (x and unused, q and k, gate and up), `out` the output.
pub struct LayerWorkload<'d> {
    device: &'d Device,
    op: LayerOp,
    copies: usize,
    a: CudaSlice<f32>,
    a_stride: usize,
    b: CudaSlice<f32>,
    b_stride: usize,
    out: CudaSlice<f32>,
    /// RMSNorm weight, or the RoPE cos and sin tables back to back.
    table: CudaSlice<f32>,
    positions: CudaSlice<u32>,
    copy_src: CudaSlice<u8>,
    copy_dst: CudaSlice<u8>,
    copy_len: usize,
    host_a: Vec<f32>,
    host_b: Vec<f32>,
    host_table: Vec<f32>,
    host_positions: Vec<usize>,
}

impl<'d> LayerWorkload<'d> {
    pub fn new(device: &'d Device, op: LayerOp, rotation_bytes: u64) -> Result<Self> {
        let (a_len, b_len) = op.lens();
        if a_len == 0 {
            return Err(anyhow!("{} {}: empty", op.kernel(), op.shape()));
        }
        let copies = data::rotation_copies(op.bytes(), rotation_bytes, MAX_COPIES);
        let (a_stride, b_stride) = (data::copy_stride(a_len, 4), data::copy_stride(b_len.max(1), 4));
        let seed = data::seed_for(&format!("{} {}", op.kernel(), op.shape()));
        let host_a = data::random_f32(copies * a_stride, seed, 1.0);
        let host_b = data::random_f32(copies * b_stride, seed ^ 1, 1.0);
        let (host_table, host_positions) = match op {
            LayerOp::RmsNorm { hidden, .. } => {
                (data::random_f32(hidden, seed ^ 2, 0.1).iter().map(|v| 1.0 + v).collect(), Vec::new())
            }
            LayerOp::Rope { tokens, head_dim, .. } => {
                let mut rng = Rng::new(seed ^ 3);
                let positions = (0..tokens).map(|_| (rng.next_u64() % ROPE_TABLE as u64) as usize).collect();
                (rope_tables(head_dim), positions)
            }
            LayerOp::SiluMul { .. } => (vec![0.0], Vec::new()),
        };
        let copy_len = (op.bytes() / 2).max(1) as usize;
        let stream = device.gpu.stream();
        let label = format!("{} {}", op.kernel(), op.shape());
        let err = |e: cudarc::driver::DriverError| anyhow!("{label}: allocating inputs: {e}");
        let positions: Vec<u32> = host_positions.iter().map(|&p| p as u32).collect();
        let copy_src: Vec<u8> = data::random_bf16(copies * copy_len / 2 + 1, seed ^ 4, 1.0)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .take(copies * copy_len)
            .collect();
        Ok(LayerWorkload {
            device,
            op,
            copies,
            a: stream.clone_htod(&host_a).map_err(err)?,
            a_stride,
            b: stream.clone_htod(&host_b).map_err(err)?,
            b_stride,
            out: stream.alloc_zeros::<f32>(a_len).map_err(err)?,
            table: stream.clone_htod(&host_table).map_err(err)?,
            positions: stream.clone_htod(&if positions.is_empty() { vec![0] } else { positions }).map_err(err)?,
            copy_src: stream.clone_htod(&copy_src).map_err(err)?,
            copy_dst: stream.alloc_zeros::<u8>(copy_len).map_err(err)?,
            copy_len,
            host_a: host_a[..a_len].to_vec(),
            host_b: host_b[..b_len].to_vec(),
            host_table,
            host_positions,
        })
    }

    pub fn op(&self) -> LayerOp {
        self.op
    }
}

/// RoPE cos and sin tables `[ROPE_TABLE][head_dim / 2]`, back to back (theta 10000).
pub(super) fn rope_tables(head_dim: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let angle = |p: usize, i: usize| p as f64 * 10000f64.powf(-2.0 * i as f64 / head_dim as f64);
    let mut out: Vec<f32> = (0..ROPE_TABLE * half).map(|j| angle(j / half, j % half).cos() as f32).collect();
    out.extend((0..ROPE_TABLE * half).map(|j| angle(j / half, j % half).sin() as f32));
    out
}

impl Workload for LayerWorkload<'_> {
    fn label(&self) -> String {
        format!("{} {}", self.op.kernel(), self.op.shape())
    }

    fn implementations(&self) -> &[Implementation] {
        &IMPLEMENTATIONS
    }

    fn copies(&self) -> usize {
        self.copies
    }

    fn launch(&mut self, which: usize, copy: usize) -> Result<()> {
        if which == 1 {
            let src = self.copy_src.slice(copy * self.copy_len..(copy + 1) * self.copy_len);
            let stream = self.device.gpu.stream();
            return stream.memcpy_dtod(&src, &mut self.copy_dst).map_err(|e| anyhow!("{}: copy: {e}", self.label()));
        }
        let kern = &self.device.kernels;
        let (a_len, b_len) = self.op.lens();
        let a = DevSpan::of(&self.a).slice(copy * self.a_stride..copy * self.a_stride + a_len)?;
        let b = DevSpan::of(&self.b).slice(copy * self.b_stride..copy * self.b_stride + b_len)?;
        let (out, table) = (DevSpan::of(&self.out), DevSpan::of(&self.table));
        match self.op {
            LayerOp::RmsNorm { rows, hidden } => rmsnorm(kern, a, table, out, rows, hidden, EPS)?,
            LayerOp::Rope { tokens, heads, kv_heads, head_dim } => {
                let half = ROPE_TABLE * head_dim / 2;
                let (cos, sin) = (table.slice(0..half)?, table.slice(half..2 * half)?);
                let shape = RopeShape { n_tokens: tokens, num_heads: heads, num_kv_heads: kv_heads, head_dim };
                rope(kern, a, b, cos, sin, ROPE_TABLE, DevSpan::of(&self.positions), shape)?
            }
            LayerOp::SiluMul { n } => silu_mul(kern, a, b, out, n)?,
        }
        Ok(())
    }

    fn check(&mut self, which: usize) -> Result<()> {
        if which == 1 {
            return Ok(()); // a copy computes nothing to compare
        }
        let what = format!("{} rooflab", self.label());
        let stream = self.device.gpu.stream().clone();
        let err = |e: cudarc::driver::DriverError| anyhow!("{what}: {e}");
        let (a_len, b_len) = self.op.lens();
        let (got, want) = match self.op {
            LayerOp::Rope { heads, kv_heads, head_dim, .. } => {
                // In place: restore copy 0, rotate it once, read it back.
                stream.memcpy_htod(&self.host_a, &mut self.a.slice_mut(0..a_len)).map_err(err)?;
                stream.memcpy_htod(&self.host_b, &mut self.b.slice_mut(0..b_len)).map_err(err)?;
                self.launch(0, 0)?;
                let mut got = stream.clone_dtoh(&self.a.slice(0..a_len)).map_err(err)?;
                got.extend(stream.clone_dtoh(&self.b.slice(0..b_len)).map_err(err)?);
                let half = ROPE_TABLE * head_dim / 2;
                let (cos, sin) = self.host_table.split_at(half);
                let (mut q, mut k) = (self.host_a.clone(), self.host_b.clone());
                rope_rows(&mut q, heads, head_dim, &self.host_positions, cos, sin);
                rope_rows(&mut k, kv_heads, head_dim, &self.host_positions, cos, sin);
                q.extend(k);
                (got, q)
            }
            LayerOp::RmsNorm { .. } | LayerOp::SiluMul { .. } => {
                stream.memcpy_htod(&vec![f32::NAN; a_len], &mut self.out).map_err(err)?;
                self.launch(0, 0)?;
                let got = stream.clone_dtoh(&self.out).map_err(err)?;
                let want = match self.op {
                    LayerOp::RmsNorm { .. } => rmsnorm_rows(&self.host_a, &self.host_table, EPS),
                    _ => silu_mul_reference(&self.host_a, &self.host_b),
                };
                (got, want)
            }
        };
        self.device.synchronize()?;
        data::check_close(&what, &got, &want, F32_OUTPUT_BOUND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_and_tables() {
        assert_eq!(LayerOp::SiluMul { n: 14336 }.bytes(), 12 * 14336);
        assert_eq!(LayerOp::RmsNorm { rows: 1, hidden: 4096 }.bytes(), 4 * (2 * 4096 + 4096));
        let rope = LayerOp::Rope { tokens: 1, heads: 32, kv_heads: 8, head_dim: 128 };
        assert_eq!(rope.bytes(), 4 * (2 * 40 * 128 + 128 + 1));
        assert_eq!(rope.shape(), "tokens=1 H=32 KVH=8 D=128");
        let t = rope_tables(4);
        assert_eq!(t.len(), 2 * ROPE_TABLE * 2);
        assert_eq!((t[0], t[2 * ROPE_TABLE]), (1.0, 0.0)); // position 0: cos 1, sin 0
        assert!((t[2] - 1f32.cos()).abs() < 1e-6); // position 1, frequency 1
    }
}

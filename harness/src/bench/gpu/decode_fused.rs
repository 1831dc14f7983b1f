//! Workloads of decode_fused.cu for the criterion bench `decode_fused`: each fused kernel against the
//! unfused launches it replaces (its baseline, in the naive role), for one decode token at the shapes
//! of SmolLM2-135M, Llama-3.2-1B and Llama-3-8B. Weights are most of the bytes; their copies rotate so
//! every launch reads them from HBM, as a decode step does.
//!
//! - `decode_qkv`: fused norm + q/k/v + RoPE + cache append, against rmsnorm, 3 gemv, rope, kv_append.
//! - `decode_gate_up`: fused norm + gate/up + SwiGLU, against rmsnorm, 2 gemv, silu_mul.
//! - `gemv_rmsnorm`: the final norm and the head, against rmsnorm, gemv.

use anyhow::{anyhow, Result};
use half::bf16;
use rooflab::cuda::{CudaSlice, DevSpan};
use rooflab::kernels::decode_fused::{
    decode_gate_up, decode_qkv, gemv_rmsnorm, NormedInput, QkvHeads, QkvOutputs, QkvWeights,
};
use rooflab::kernels::gemv::{gemv, GemvKernel};
use rooflab::kernels::layers::{kv_append, rmsnorm, rope, silu_mul, RopeShape};
use rooflab::reference::{matmul_nt, rmsnorm_rows, rope_rows, silu_mul as silu_mul_reference};

use super::data::{self, BF16_OUTPUT_BOUND, F32_OUTPUT_BOUND};
use super::layers::{rope_tables, ROPE_TABLE};
use super::{Device, Implementation, Role, Workload};

const MAX_COPIES: usize = 64;
const EPS: f32 = 1e-5;
/// The token's position in the 4k cache (any row of the RoPE tables and the cache).
const POSITION: u32 = 1234;
const IMPLEMENTATIONS: [Implementation; 2] =
    [Implementation::rooflab("rooflab"), Implementation { name: "unfused", role: Role::Naive }];

/// One fused kernel at one model's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedOp {
    Qkv { hidden: usize, heads: usize, kv_heads: usize, head_dim: usize },
    GateUp { hidden: usize, intermediate: usize },
    Head { vocab: usize, hidden: usize },
}

impl FusedOp {
    pub fn kernel(&self) -> &'static str {
        match self {
            FusedOp::Qkv { .. } => "decode_qkv",
            FusedOp::GateUp { .. } => "decode_gate_up",
            FusedOp::Head { .. } => "gemv_rmsnorm",
        }
    }

    pub fn shape(&self) -> String {
        match *self {
            FusedOp::Qkv { hidden, heads, kv_heads, head_dim } => {
                format!("hidden={hidden} H={heads} KVH={kv_heads} D={head_dim}")
            }
            FusedOp::GateUp { hidden, intermediate } => format!("hidden={hidden} F={intermediate}"),
            FusedOp::Head { vocab, hidden } => format!("hidden={hidden} vocab={vocab}"),
        }
    }

    pub fn hidden(&self) -> usize {
        match *self {
            FusedOp::Qkv { hidden, .. } | FusedOp::GateUp { hidden, .. } | FusedOp::Head { hidden, .. } => hidden,
        }
    }

    /// Rows of the weights, back to back in one buffer: q, k, v; gate, up; the head.
    fn weight_rows(&self) -> Vec<usize> {
        match *self {
            FusedOp::Qkv { heads, kv_heads, head_dim, .. } => {
                vec![heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
            }
            FusedOp::GateUp { intermediate, .. } => vec![intermediate, intermediate],
            FusedOp::Head { vocab, .. } => vec![vocab],
        }
    }

    /// f32 elements of the output: q; silu(gate)·up; the logits.
    fn out_len(&self) -> usize {
        match *self {
            FusedOp::Qkv { heads, head_dim, .. } => heads * head_dim,
            FusedOp::GateUp { intermediate, .. } => intermediate,
            FusedOp::Head { vocab, .. } => vocab,
        }
    }

    /// Minimum bytes of the fused kernel: bf16 weights, x and the norm weight read once (f32), the
    /// outputs written once (q in f32 and a bf16 cache row of k and v for `Qkv`).
    pub fn bytes(&self) -> u64 {
        let weights: usize = self.weight_rows().iter().sum::<usize>() * self.hidden() * 2;
        let outputs = match *self {
            FusedOp::Qkv { kv_heads, head_dim, .. } => 4 * self.out_len() + 2 * 2 * kv_heads * head_dim,
            _ => 4 * self.out_len(),
        };
        (weights + 2 * 4 * self.hidden() + outputs) as u64
    }
}

/// Weights in rotated copies, one input row, the outputs, and the unfused path's scratch.
pub struct FusedWorkload<'d> {
    device: &'d Device,
    op: FusedOp,
    copies: usize,
    weights: CudaSlice<bf16>,
    weights_stride: usize,
    x: CudaSlice<f32>,
    norm: CudaSlice<f32>,
    out: CudaSlice<f32>,
    /// The unfused path's intermediates: the normed x, then k and v (`Qkv`) or up (`GateUp`).
    xn: CudaSlice<f32>,
    scratch: CudaSlice<f32>,
    k_cache: CudaSlice<bf16>,
    v_cache: CudaSlice<bf16>,
    rope: CudaSlice<f32>,
    position: CudaSlice<u32>,
    host_weights: Vec<f32>,
    host_x: Vec<f32>,
    host_norm: Vec<f32>,
    host_rope: Vec<f32>,
}

impl<'d> FusedWorkload<'d> {
    pub fn new(device: &'d Device, op: FusedOp, rotation_bytes: u64) -> Result<Self> {
        let hidden = op.hidden();
        let weight_len = op.weight_rows().iter().sum::<usize>() * hidden;
        let copies = data::rotation_copies(op.bytes(), rotation_bytes, MAX_COPIES);
        let weights_stride = data::copy_stride(weight_len, 2);
        let seed = data::seed_for(&format!("{} {}", op.kernel(), op.shape()));
        let host_weights_bf16 = data::random_bf16(copies * weights_stride, seed, 1.0 / (hidden as f32).sqrt());
        let host_weights = data::widen(&host_weights_bf16[..weight_len]);
        // A residual row that is not centred (the norm matters) and a norm weight around 1.
        let host_x: Vec<f32> = data::random_f32(hidden, seed ^ 1, 2.0).iter().map(|v| v + 0.5).collect();
        let host_norm: Vec<f32> = data::random_f32(hidden, seed ^ 2, 0.2).iter().map(|v| v + 1.0).collect();
        let (kv_dim, head_dim) = match op {
            FusedOp::Qkv { kv_heads, head_dim, .. } => (kv_heads * head_dim, head_dim),
            _ => (1, 2),
        };
        let scratch_len = match op {
            FusedOp::Qkv { .. } => 2 * kv_dim,
            FusedOp::GateUp { intermediate, .. } => intermediate,
            FusedOp::Head { .. } => 1,
        };
        let host_rope = rope_tables(head_dim);
        let stream = device.gpu.stream();
        let label = format!("{} {}", op.kernel(), op.shape());
        let err = |e: cudarc::driver::DriverError| anyhow!("{label}: allocating inputs: {e}");
        let cache = ROPE_TABLE * kv_dim;
        Ok(FusedWorkload {
            device,
            op,
            copies,
            weights: stream.clone_htod(&host_weights_bf16).map_err(err)?,
            weights_stride,
            x: stream.clone_htod(&host_x).map_err(err)?,
            norm: stream.clone_htod(&host_norm).map_err(err)?,
            out: stream.alloc_zeros::<f32>(op.out_len()).map_err(err)?,
            xn: stream.alloc_zeros::<f32>(hidden).map_err(err)?,
            scratch: stream.alloc_zeros::<f32>(scratch_len).map_err(err)?,
            k_cache: stream.clone_htod(&vec![bf16::NAN; cache]).map_err(err)?,
            v_cache: stream.clone_htod(&vec![bf16::NAN; cache]).map_err(err)?,
            rope: stream.clone_htod(&host_rope).map_err(err)?,
            position: stream.clone_htod(&[POSITION]).map_err(err)?,
            host_weights,
            host_x,
            host_norm,
            host_rope,
        })
    }

    /// The weights of input copy `copy`, one span per weight (q, k, v; gate, up; head).
    fn weight_spans(&self, copy: usize) -> Result<Vec<DevSpan<'_, bf16>>> {
        let mut start = copy * self.weights_stride;
        let mut spans = Vec::new();
        for rows in self.op.weight_rows() {
            let len = rows * self.op.hidden();
            spans.push(DevSpan::of(&self.weights).slice(start..start + len)?);
            start += len;
        }
        Ok(spans)
    }

    /// The CPU reference: the output, and for `Qkv` the cache rows of k and v (widened) after it.
    fn reference(&self) -> Vec<f32> {
        let hidden = self.op.hidden();
        let xn = rmsnorm_rows(&self.host_x, &self.host_norm, EPS);
        let mut offset = 0;
        let products: Vec<Vec<f32>> = self
            .op
            .weight_rows()
            .into_iter()
            .map(|rows| {
                let w = &self.host_weights[offset..offset + rows * hidden];
                offset += rows * hidden;
                matmul_nt(&xn, 1, w, rows, hidden)
            })
            .collect();
        match self.op {
            FusedOp::Qkv { heads, kv_heads, head_dim, .. } => {
                let (cos, sin) = self.host_rope.split_at(ROPE_TABLE * head_dim / 2);
                let position = [POSITION as usize];
                let (mut q, mut k) = (products[0].clone(), products[1].clone());
                rope_rows(&mut q, heads, head_dim, &position, cos, sin);
                rope_rows(&mut k, kv_heads, head_dim, &position, cos, sin);
                q.extend(data::bf16_exact(&k));
                q.extend(data::bf16_exact(&products[2]));
                q
            }
            FusedOp::GateUp { .. } => silu_mul_reference(&products[0], &products[1]),
            FusedOp::Head { .. } => products[0].clone(),
        }
    }
}

impl Workload for FusedWorkload<'_> {
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
        let kern = &self.device.kernels;
        let w = self.weight_spans(copy)?;
        let hidden = self.op.hidden();
        let (x, norm, out) = (DevSpan::of(&self.x), DevSpan::of(&self.norm), DevSpan::of(&self.out));
        let (xn, scratch) = (DevSpan::of(&self.xn), DevSpan::of(&self.scratch));
        let input = NormedInput { x, norm, hidden, eps: EPS };
        let unfused = which == 1;
        if unfused {
            rmsnorm(kern, x, norm, xn, 1, hidden, EPS)?;
        }
        match self.op {
            FusedOp::Qkv { heads, kv_heads, head_dim, .. } => {
                let half = ROPE_TABLE * head_dim / 2;
                let rope_span = DevSpan::of(&self.rope);
                let (cos, sin) = (rope_span.slice(0..half)?, rope_span.slice(half..2 * half)?);
                let (k_cache, v_cache) = (DevSpan::of(&self.k_cache), DevSpan::of(&self.v_cache));
                let position = DevSpan::of(&self.position);
                if unfused {
                    let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
                    let (k, v) = (scratch.slice(0..kv_dim)?, scratch.slice(kv_dim..2 * kv_dim)?);
                    gemv(kern, GemvKernel::WarpPerRow, w[0], xn, out, q_dim, hidden, false)?;
                    gemv(kern, GemvKernel::WarpPerRow, w[1], xn, k, kv_dim, hidden, false)?;
                    gemv(kern, GemvKernel::WarpPerRow, w[2], xn, v, kv_dim, hidden, false)?;
                    let shape = RopeShape { n_tokens: 1, num_heads: heads, num_kv_heads: kv_heads, head_dim };
                    rope(kern, out, k, cos, sin, ROPE_TABLE, position, shape)?;
                    kv_append(kern, k, v, k_cache, v_cache, ROPE_TABLE, position, 1, kv_dim)?;
                } else {
                    let outputs = QkvOutputs {
                        q: out,
                        k_cache,
                        v_cache,
                        cache_len: ROPE_TABLE,
                        rope_cos: cos,
                        rope_sin: sin,
                        position,
                    };
                    let weights = QkvWeights { q: w[0], k: w[1], v: w[2] };
                    decode_qkv(
                        kern,
                        input,
                        weights,
                        outputs,
                        QkvHeads { num_heads: heads, num_kv_heads: kv_heads, head_dim },
                    )?;
                }
            }
            FusedOp::GateUp { intermediate, .. } => {
                if unfused {
                    gemv(kern, GemvKernel::WarpPerRow, w[0], xn, out, intermediate, hidden, false)?;
                    gemv(kern, GemvKernel::WarpPerRow, w[1], xn, scratch, intermediate, hidden, false)?;
                    silu_mul(kern, out, scratch, out, intermediate)?;
                } else {
                    decode_gate_up(kern, input, w[0], w[1], out, intermediate)?;
                }
            }
            FusedOp::Head { vocab, .. } => {
                if unfused {
                    gemv(kern, GemvKernel::WarpPerRow, w[0], xn, out, vocab, hidden, false)?;
                } else {
                    gemv_rmsnorm(kern, input, w[0], out, vocab)?;
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, which: usize) -> Result<()> {
        let what = format!("{} {}", self.label(), IMPLEMENTATIONS[which].name);
        let stream = self.device.gpu.stream().clone();
        let err = |e: cudarc::driver::DriverError| anyhow!("{what}: {e}");
        stream.memcpy_htod(&vec![f32::NAN; self.op.out_len()], &mut self.out).map_err(err)?;
        let cache_len = self.k_cache.len();
        stream.memcpy_htod(&vec![bf16::NAN; cache_len], &mut self.k_cache).map_err(err)?;
        stream.memcpy_htod(&vec![bf16::NAN; cache_len], &mut self.v_cache).map_err(err)?;
        self.launch(which, 0)?;
        let mut got = stream.clone_dtoh(&self.out).map_err(err)?;
        let want = self.reference();
        if let FusedOp::Qkv { kv_heads, head_dim, .. } = self.op {
            let kv_dim = kv_heads * head_dim;
            let row = POSITION as usize * kv_dim..(POSITION as usize + 1) * kv_dim;
            got.extend(data::widen(&stream.clone_dtoh(&self.k_cache.slice(row.clone())).map_err(err)?));
            got.extend(data::widen(&stream.clone_dtoh(&self.v_cache.slice(row)).map_err(err)?));
        }
        self.device.synchronize()?;
        let bound = if matches!(self.op, FusedOp::Qkv { .. }) { BF16_OUTPUT_BOUND } else { F32_OUTPUT_BOUND };
        data::check_close(&what, &got, &want, bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_and_shapes() {
        let qkv = FusedOp::Qkv { hidden: 576, heads: 9, kv_heads: 3, head_dim: 64 };
        // Weights (576 + 2·192) rows of 576 bf16, x and norm, q in f32, a k and a v row in bf16.
        assert_eq!(qkv.bytes(), (960 * 576 * 2 + 2 * 4 * 576 + 4 * 576 + 2 * 2 * 192) as u64);
        assert_eq!(qkv.shape(), "hidden=576 H=9 KVH=3 D=64");
        let gate_up = FusedOp::GateUp { hidden: 4096, intermediate: 14336 };
        assert_eq!(gate_up.bytes(), (2 * 14336 * 4096 * 2 + 2 * 4 * 4096 + 4 * 14336) as u64);
        assert_eq!(FusedOp::Head { vocab: 49152, hidden: 576 }.kernel(), "gemv_rmsnorm");
    }
}

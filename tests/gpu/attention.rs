//! attention_decode.cu and attention_prefill.cu against the exact CPU attention, on random inputs,
//! with NaN in every cache row a kernel must not read and NaN-poisoned outputs: decode for GQA ratios
//! 1, 3, 4, 8 and 16; prefill (every kernel: flash, tiled, naive row, naive materialised) for lengths
//! 1 to 4096, GQA 1, 4 and 8, head_dim 64 and 128, causal and not, bf16 and f16, varlen batches in
//! both K/V layouts and chunked prefill with a query offset. v4 (the TMA kernel) has tests of its own.

use half::{bf16, f16};
use rooflab::kernels::attention_decode::{attention_decode, attention_decode_naive, DecodeScratch, DecodeShape};
use rooflab::kernels::attention_prefill::{
    flash, resolve, run, scores_len, Elem, KvLayout, Operand, PrefillIo, PrefillKernel, PrefillShape, FLASH_CHOICE_ENV,
};
use rooflab::kernels::Launcher;
use rooflab::reference::{attention, AttnShape};
use rooflab::sample::Rng;

use crate::common::{assert_close, bf16_round, randn, rms, span, to_bf16, DevBuf, Gpu};

/// (heads, kv_heads, head_dim): GQA 1, 3, 4, 8, 16.
const HEADS: [(usize, usize, usize); 6] =
    [(4, 4, 64), (9, 3, 64), (8, 2, 128), (32, 8, 128), (16, 2, 64), (16, 1, 128)];

/// A batch of caches `[batch][cache_len][kv_heads][head_dim]` whose first `lens[b]` rows hold
/// random bf16 values and the rest NaN; returns the host values (f32) of the filled rows.
struct Caches {
    k_host: Vec<Vec<f32>>,
    v_host: Vec<Vec<f32>>,
    k: DevBuf<half::bf16>,
    v: DevBuf<half::bf16>,
}

fn caches(g: &Gpu, rng: &mut Rng, lens: &[usize], cache_len: usize, kv_dim: usize) -> Caches {
    let (mut k_all, mut v_all) = (Vec::new(), Vec::new());
    let (mut k_host, mut v_host) = (Vec::new(), Vec::new());
    for &len in lens {
        let k = bf16_round(&randn(rng, len * kv_dim, 1.0));
        let v = bf16_round(&randn(rng, len * kv_dim, 1.0));
        for (all, rows) in [(&mut k_all, &k), (&mut v_all, &v)] {
            all.extend(to_bf16(rows));
            all.extend(std::iter::repeat_n(half::bf16::NAN, (cache_len - len) * kv_dim));
        }
        k_host.push(k);
        v_host.push(v);
    }
    Caches { k_host, v_host, k: g.upload(&k_all), v: g.upload(&v_all) }
}

pub fn decode_attention_matches_reference(g: &Gpu) {
    let mut rng = Rng::new(21);
    let batches: [&[usize]; 5] = [&[1], &[63, 64, 65], &[1000], &[5, 300, 1], &[4096]];
    for &(heads, kv_heads, d) in &HEADS {
        for lens in batches {
            let batch = lens.len();
            let cache_len = lens.iter().max().unwrap() + 7;
            let c = caches(g, &mut rng, lens, cache_len, kv_heads * d);
            // Scores of a trained model's size: scale 1/sqrt(d) on unit-normal q and k.
            let q = randn(&mut rng, batch * heads * d, 1.0);
            let d_q = g.upload(&q);
            let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
            let d_lens = g.upload(&lens32);
            let shape = DecodeShape {
                batch,
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: d,
                cache_len,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let mut want = Vec::new();
            for (b, &len) in lens.iter().enumerate() {
                let s = AttnShape {
                    num_heads: heads,
                    num_kv_heads: kv_heads,
                    head_dim: d,
                    q_len: 1,
                    kv_len: len,
                    q_offset: len - 1,
                    causal: true,
                    scale: shape.scale,
                };
                want.extend(attention(&q[b * heads * d..(b + 1) * heads * d], &c.k_host[b], &c.v_host[b], &s).0);
            }
            let what = format!("decode H={heads} KVH={kv_heads} D={d} lens={lens:?}");
            for splits in [1, 7, shape.choose_splits(g.sm_count()), 64] {
                let (po, pml) = shape.scratch_len(splits);
                let (partial_out, partial_ml) = (g.poisoned(po), g.poisoned(pml));
                let scratch = DecodeScratch {
                    partial_out: span(&partial_out),
                    partial_ml: span(&partial_ml),
                    num_splits: splits,
                };
                let out = g.poisoned(q.len());
                attention_decode(
                    &g.kernels,
                    span(&d_q),
                    span(&c.k),
                    span(&c.v),
                    span(&d_lens),
                    span(&out),
                    scratch,
                    shape,
                )
                .unwrap();
                assert_close(&format!("{what} splits={splits}"), &g.download(&out), &want, 2e-4);
            }
            let out = g.poisoned(q.len());
            attention_decode_naive(&g.kernels, span(&d_q), span(&c.k), span(&c.v), span(&d_lens), span(&out), shape)
                .unwrap();
            assert_close(&format!("{what} naive"), &g.download(&out), &want, 2e-4);
        }
    }
}

// ---- prefill ---------------------------------------------------------------------------------

/// One sequence of a prefill batch: `q_len` queries at positions `q_offset ..` among `kv_len` keys.
#[derive(Debug, Clone, Copy)]
struct Seq {
    q_len: usize,
    q_offset: usize,
    kv_len: usize,
}

/// A sequence whose queries are all its keys (plain prefill).
fn square(len: usize) -> Seq {
    Seq { q_len: len, q_offset: 0, kv_len: len }
}

/// Where the test puts K/V: FlashAttention's varlen layout, or a cache whose unused rows are NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Varlen,
    Cache,
}

/// Element types of one run: the 16-bit type of k/v, and whether q/out are f32 (the model's mode).
#[derive(Debug, Clone, Copy)]
struct Types {
    elem: Elem,
    f32_io: bool,
}

/// A device buffer of any operand type.
enum Buf {
    Bf16(DevBuf<bf16>),
    F16(DevBuf<f16>),
    F32(DevBuf<f32>),
}

/// `v` rounded to the 16-bit type, back as f32.
fn rounded(v: &[f32], elem: Elem) -> Vec<f32> {
    match elem {
        Elem::Bf16 => v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        Elem::F16 => v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
    }
}

impl Buf {
    /// `host` rounded to `ty` (or kept f32) on the device; returns the values the device holds.
    fn upload(g: &Gpu, host: &[f32], ty: Option<Elem>) -> (Buf, Vec<f32>) {
        match ty {
            Some(Elem::Bf16) => {
                let v: Vec<bf16> = host.iter().map(|&x| bf16::from_f32(x)).collect();
                (Buf::Bf16(g.upload(&v)), rounded(host, Elem::Bf16))
            }
            Some(Elem::F16) => {
                let v: Vec<f16> = host.iter().map(|&x| f16::from_f32(x)).collect();
                (Buf::F16(g.upload(&v)), rounded(host, Elem::F16))
            }
            None => (Buf::F32(g.upload(host)), host.to_vec()),
        }
    }

    fn poisoned(g: &Gpu, len: usize, ty: Option<Elem>) -> Buf {
        Buf::upload(g, &vec![f32::NAN; len.max(1)], ty).0
    }

    fn operand(&self) -> Operand<'_> {
        match self {
            Buf::Bf16(b) => Operand::Bf16(span(b)),
            Buf::F16(b) => Operand::F16(span(b)),
            Buf::F32(b) => Operand::F32(span(b)),
        }
    }

    fn download(&self, g: &Gpu) -> Vec<f32> {
        match self {
            Buf::Bf16(b) => g.download(b).iter().map(|x| x.to_f32()).collect(),
            Buf::F16(b) => g.download(b).iter().map(|x| x.to_f32()).collect(),
            Buf::F32(b) => g.download(b),
        }
    }
}

/// Query rows the CPU reference checks: all of short sequences; of long ones the first and last rows,
/// the rows around the 16-, 64- and 128-row tile edges, and random others. Every row is still checked
/// to be fully written and finite.
fn rows_to_check(rng: &mut Rng, s: &Seq) -> Vec<usize> {
    if s.q_len * s.kv_len.max(1) <= 300 * 300 {
        return (0..s.q_len).collect();
    }
    let mut rows: Vec<usize> = [0, 1, 15, 16, 31, 32, 63, 64, 127, 128, 129, 255, 256, s.q_len - 2, s.q_len - 1]
        .into_iter()
        .filter(|&r| r < s.q_len)
        .collect();
    rows.extend((0..24).map(|_| (rng.uniform() * s.q_len as f64) as usize % s.q_len));
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// Tolerance of the prefill kernels' outputs (bf16/f16 operands, f32 accumulation).
const RTOL: f32 = 2e-2;

/// Where a kernel's output went wrong, for a failure message that points at a cause (a row range of the
/// flash kernels' 128-row query tile, one head, a column range of the head dimension): the bad elements
/// counted by those three, and the first few.
struct Misses {
    heads: usize,
    d: usize,
    count: usize,
    total: usize,
    by_tile_row: [usize; 8],
    by_head: Vec<usize>,
    by_columns: Vec<usize>,
    first: Vec<String>,
}

impl Misses {
    fn new(heads: usize, d: usize) -> Self {
        let by_head = vec![0; heads];
        let by_columns = vec![0; d.div_ceil(8)];
        Misses { heads, d, count: 0, total: 0, by_tile_row: [0; 8], by_head, by_columns, first: Vec::new() }
    }

    /// Element `e` (head-major: `e = head * d + column`) of output row `row`, query `query` of its sequence.
    fn add(&mut self, row: usize, query: usize, e: usize, got: f32, bad: bool, want: Option<f32>) {
        self.total += 1;
        if !bad {
            return;
        }
        let (head, column) = (e / self.d, e % self.d);
        self.count += 1;
        self.by_tile_row[query % 128 / 16] += 1;
        self.by_head[head.min(self.heads - 1)] += 1;
        self.by_columns[column / 8] += 1;
        if self.first.len() < 4 {
            let want = want.map_or(String::new(), |w| format!(", want {w}"));
            self.first.push(format!("row {row} (query {query}) head {head} column {column}: got {got}{want}"));
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} of {}; by query row within the 128-row tile (16 rows each) {:?}; by head {:?}; by head-dim column \
             (8 each) {:?}; first: {}",
            self.count,
            self.total,
            self.by_tile_row,
            self.by_head,
            self.by_columns,
            self.first.join("; ")
        )
    }
}

/// Runs the prefill kernels `wanted` picks on one batch and compares them with the CPU reference.
#[allow(clippy::too_many_arguments)]
fn run_prefill_kernels(
    g: &Gpu,
    rng: &mut Rng,
    (heads, kv_heads, d): (usize, usize, usize),
    seqs: &[Seq],
    causal: bool,
    layout: Layout,
    types: Types,
    wanted: &dyn Fn(PrefillKernel) -> bool,
) {
    let batch = seqs.len();
    let kv_dim = kv_heads * d;
    let total_q: usize = seqs.iter().map(|s| s.q_len).sum();
    let max_kv = seqs.iter().map(|s| s.kv_len).max().unwrap();
    let cache_len = max_kv + 5;
    // Keys and values: varlen rows back to back, or per-sequence cache rows with a NaN tail.
    let (mut k_rows, mut v_rows) = (Vec::new(), Vec::new());
    let mut kv_starts = Vec::new();
    for s in seqs {
        kv_starts.push(k_rows.len() / kv_dim);
        k_rows.extend(randn(rng, s.kv_len * kv_dim, 1.0));
        v_rows.extend(randn(rng, s.kv_len * kv_dim, 1.0));
        if layout == Layout::Cache {
            let pad = (cache_len - s.kv_len) * kv_dim;
            k_rows.extend(std::iter::repeat_n(f32::NAN, pad));
            v_rows.extend(std::iter::repeat_n(f32::NAN, pad));
        }
    }
    let (d_k, k_host) = Buf::upload(g, &k_rows, Some(types.elem));
    let (d_v, v_host) = Buf::upload(g, &v_rows, Some(types.elem));
    let q_ty = if types.f32_io { None } else { Some(types.elem) };
    // The tensor-core kernels stage f32 queries as 16-bit values (the others read them exactly): queries
    // the element type holds exactly make every kernel see the same ones.
    let q_values = randn(rng, total_q * heads * d, 1.0);
    let q_values = if types.f32_io { rounded(&q_values, types.elem) } else { q_values };
    let (d_q, q_host) = Buf::upload(g, &q_values, q_ty);

    let mut cu_q = vec![0u32];
    let mut cu_k = vec![0u32];
    for s in seqs {
        cu_q.push(cu_q.last().unwrap() + s.q_len as u32);
        cu_k.push(cu_k.last().unwrap() + s.kv_len as u32);
    }
    let d_cu_q = g.upload(&cu_q);
    let d_cu_k = g.upload(&cu_k);
    let d_kv_lens = g.upload(&seqs.iter().map(|s| s.kv_len as u32).collect::<Vec<_>>());
    let d_offsets = g.upload(&seqs.iter().map(|s| s.q_offset as u32).collect::<Vec<_>>());
    let kv = match layout {
        Layout::Varlen => KvLayout::Varlen { cu_seqlens_k: span(&d_cu_k), total_k: *cu_k.last().unwrap() as usize },
        Layout::Cache => KvLayout::Cache { seq_lens_k: span(&d_kv_lens), cache_len },
    };
    let shape = PrefillShape {
        batch,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim: d,
        total_q,
        max_q_len: seqs.iter().map(|s| s.q_len).max().unwrap(),
        max_kv_len: max_kv.max(1),
        causal,
        scale: 1.0 / (d as f32).sqrt(),
    };

    // Reference rows (f64 inside), on the values the device holds.
    let mut checks = Vec::new(); // (global q row, head-major out row, lse per head)
    for (b, s) in seqs.iter().enumerate() {
        let kv0 = kv_starts[b] * kv_dim;
        let (kh, vh) = (&k_host[kv0..kv0 + s.kv_len * kv_dim], &v_host[kv0..kv0 + s.kv_len * kv_dim]);
        for i in rows_to_check(rng, s) {
            let row = cu_q[b] as usize + i;
            let a = AttnShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: d,
                q_len: 1,
                kv_len: s.kv_len,
                q_offset: s.q_offset + i,
                causal,
                scale: shape.scale,
            };
            let (out, lse) = attention(&q_host[row * heads * d..(row + 1) * heads * d], kh, vh, &a);
            checks.push((row, out, lse));
        }
    }
    let what = format!(
        "prefill H={heads} KVH={kv_heads} D={d} causal={causal} {layout:?} {:?}{} {seqs:?}",
        types.elem,
        if types.f32_io { " f32 q/out" } else { "" }
    );
    let out_ty = if types.f32_io { None } else { Some(types.elem) };
    let scores = g.poisoned(scores_len(&shape));
    let arch = g.kernels.arch();
    // The emulator runs each CUDA thread as a fiber (and compute-sanitizer slows every kernel), so there
    // the SIMT baselines (plain loops) run on small cases only, `Flash` is not run again under its
    // concrete name, and one LSE mode is drawn.
    let small = seqs.iter().map(|s| s.q_len * s.kv_len).sum::<usize>() <= 300 * 300;
    let shrunk = Gpu::small_shapes();
    let emulated_skips =
        |k: &PrefillKernel| shrunk && (*k == PrefillKernel::Flash || (!small && !k.name().starts_with("flash")));
    let lse_modes = if shrunk { vec![rng.uniform() < 0.5] } else { vec![true, false] };
    // In reverse: the baselines first, then v3, v2, v4 and `Flash` (v4 on Hopper) last, so a failure
    // names the simplest broken kernel, and a trap in the unverified TMA kernel (which poisons the CUDA
    // context) comes after every other kernel has been checked.
    let runs = |k: &PrefillKernel| k.available(arch) && !emulated_skips(k) && wanted(*k);
    for kernel in PrefillKernel::ALL.into_iter().rev().filter(runs) {
        for &with_lse in &lse_modes {
            let out = Buf::poisoned(g, total_q * heads * d, out_ty);
            let lse = g.poisoned(heads * total_q);
            let io = PrefillIo {
                q: d_q.operand(),
                k: d_k.operand(),
                v: d_v.operand(),
                out: out.operand(),
                lse: with_lse.then(|| span(&lse)),
                cu_seqlens_q: span(&d_cu_q),
                q_offsets: Some(span(&d_offsets)),
                kv,
            };
            run(&g.kernels, kernel, &io, &shape, Some(span(&scores))).unwrap_or_else(|e| panic!("{what}: {e}"));
            let got = out.download(g);
            let name = format!("{what} {} lse={with_lse}", kernel.name());
            let query_of = |row: usize| row - cu_q[cu_q.partition_point(|&start| start as usize <= row) - 1] as usize;
            let mut unwritten = Misses::new(heads, d);
            for (row, got_row) in got.chunks(heads * d).enumerate() {
                for (e, &x) in got_row.iter().enumerate() {
                    unwritten.add(row, query_of(row), e, x, !x.is_finite(), None);
                }
            }
            if unwritten.count > 0 {
                panic!("{name}: output elements not finite (unwritten or NaN): {}", unwritten.summary());
            }
            let mut wrong = Misses::new(heads, d);
            for (row, want, _) in &checks {
                let got_row = &got[row * heads * d..(row + 1) * heads * d];
                let scale = rms(want);
                for (e, (&x, &w)) in got_row.iter().zip(want).enumerate() {
                    wrong.add(*row, query_of(*row), e, x, (x - w).abs() > RTOL * (w.abs() + scale), Some(w));
                }
            }
            if wrong.count > 0 {
                panic!("{name}: checked elements off by more than {RTOL} of |want| + rms: {}", wrong.summary());
            }
            let lse_got = g.download(&lse);
            let (mut err2, mut ref2) = (0.0f64, 0.0f64);
            for (row, want, want_lse) in &checks {
                let got_row = &got[row * heads * d..(row + 1) * heads * d];
                for (a, b) in got_row.iter().zip(want) {
                    err2 += ((a - b) as f64).powi(2);
                    ref2 += (*b as f64).powi(2);
                }
                if with_lse {
                    for (h, want) in want_lse.iter().enumerate() {
                        let got = lse_got[h * total_q + row];
                        // -inf (a query that sees no key) must come back exactly; others within 1e-3.
                        let ok = if want.is_finite() {
                            (got - want).abs() <= 1e-3 * (1.0 + want.abs())
                        } else {
                            got == *want
                        };
                        assert!(ok, "{name}: lse of row {row} head {h} is {got}, want {want}");
                    }
                }
            }
            let rel = (err2 / ref2.max(1e-30)).sqrt();
            assert!(rel < RTOL as f64, "{name}: relative error {rel:.2e}");
            if !with_lse {
                assert!(lse_got.iter().all(|x| x.is_nan()), "{name}: lse written though not asked for");
            }
        }
    }
}

/// Which kernels a prefill test runs: v4 (the TMA kernel, and `Flash` where it stands for v4) apart from
/// the others, so on the GPU a fault or a hang in v4, which poisons or stalls its whole process, cannot
/// hide what the other versions do (scripts/gpu-run runs every GPU test in a process of its own).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernels {
    AllButTma,
    TmaOnly,
}

impl Kernels {
    fn picks(self, g: &Gpu) -> impl Fn(PrefillKernel) -> bool {
        let arch = g.kernels.arch().to_string();
        let choice = std::env::var(FLASH_CHOICE_ENV).ok();
        move |k| {
            let tma = resolve(k, &arch, choice.as_deref()).is_ok_and(|k| k == PrefillKernel::FlashTma);
            tma == (self == Kernels::TmaOnly)
        }
    }
}

const HEAD_LAYOUTS: [(usize, usize, usize); 6] =
    [(2, 2, 64), (8, 2, 64), (8, 1, 64), (2, 2, 128), (8, 2, 128), (8, 1, 128)];

/// The matrix: lengths 1, 17, 127, 128, 1000, 4096; GQA 1, 4, 8; head_dim 64 and 128;
/// causal and not; bf16 and f16. Every kernel but v4, every output poisoned, LSE checked.
pub fn prefill_kernels_match_reference_on_square_sequences(g: &Gpu) {
    square_sequences(g, Kernels::AllButTma);
}

/// The same matrix for v4 alone (Hopper; nothing to run elsewhere).
pub fn tma_prefill_matches_reference_on_square_sequences(g: &Gpu) {
    square_sequences(g, Kernels::TmaOnly);
}

fn square_sequences(g: &Gpu, kernels: Kernels) {
    let mut rng = Rng::new(22);
    let wanted = kernels.picks(g);
    // The emulator takes seconds per kernel at 1000 tokens: it checks 300 (not a tile multiple either).
    let lens: &[usize] = if Gpu::small_shapes() { &[1, 17, 127, 128, 300] } else { &[1, 17, 127, 128, 1000, 4096] };
    for &len in lens {
        for (i, &heads) in HEAD_LAYOUTS.iter().enumerate() {
            for causal in [true, false] {
                // Alternate the element type so both see every length and layout.
                let elem = if (i + causal as usize + len).is_multiple_of(2) { Elem::Bf16 } else { Elem::F16 };
                let types = Types { elem, f32_io: false };
                run_prefill_kernels(g, &mut rng, heads, &[square(len)], causal, Layout::Varlen, types, &wanted);
            }
        }
    }
}

/// Varlen batches (ragged lengths in one launch) in both K/V layouts, and chunked prefill: new
/// queries at an offset attending to keys already in the cache. Every kernel but v4.
pub fn prefill_kernels_handle_varlen_batches_and_chunked_prefill(g: &Gpu) {
    varlen_and_chunked(g, Kernels::AllButTma);
}

/// The same batches for v4 alone (Hopper; nothing to run elsewhere).
pub fn tma_prefill_handles_varlen_batches_and_chunked_prefill(g: &Gpu) {
    varlen_and_chunked(g, Kernels::TmaOnly);
}

fn varlen_and_chunked(g: &Gpu, kernels: Kernels) {
    let mut rng = Rng::new(23);
    let wanted = kernels.picks(g);
    let batches: [&[Seq]; 5] = [
        &[square(33), square(1), square(300), square(129)],
        &[
            Seq { q_len: 100, q_offset: 37, kv_len: 137 },
            Seq { q_len: 5, q_offset: 60, kv_len: 65 },
            Seq { q_len: 16, q_offset: 1, kv_len: 17 },
        ],
        // Chunked prefill of a long prompt: the last 256 of 1000 tokens, and a 1-token chunk.
        &[Seq { q_len: 256, q_offset: 744, kv_len: 1000 }, Seq { q_len: 1, q_offset: 4095, kv_len: 4096 }],
        // Queries beyond the keys (causal rows that see every key) and an empty KV sequence.
        &[Seq { q_len: 200, q_offset: 0, kv_len: 70 }, Seq { q_len: 3, q_offset: 0, kv_len: 0 }],
        &[Seq { q_len: 130, q_offset: 2000, kv_len: 2130 }],
    ];
    for heads in [(8, 2, 128), (8, 1, 64), (4, 4, 128)] {
        for seqs in batches {
            for layout in [Layout::Varlen, Layout::Cache] {
                for causal in [true, false] {
                    let types = Types { elem: Elem::Bf16, f32_io: false };
                    run_prefill_kernels(g, &mut rng, heads, seqs, causal, layout, types, &wanted);
                }
            }
        }
    }
    // The f16 element type in the cache layout, and the model's mode (f32 q and output, bf16 cache).
    for types in [Types { elem: Elem::F16, f32_io: false }, Types { elem: Elem::Bf16, f32_io: true }] {
        run_prefill_kernels(g, &mut rng, (9, 3, 64), batches[1], true, Layout::Cache, types, &wanted);
        run_prefill_kernels(g, &mut rng, (32, 8, 128), batches[2], true, Layout::Cache, types, &wanted);
    }
}

/// v4 (the one warp-specialised kernel) alone on the cache layout, where every sequence ends in a
/// ragged K/V tile over the cache's NaN tail that its producer warp zeroes: cheap enough to repeat under
/// another emulator schedule (tests/emu.rs runs it with the producer warp starved).
#[allow(dead_code)] // tests/emu.rs only
pub fn tma_prefill_handles_ragged_cache_tiles(g: &Gpu) {
    let mut rng = Rng::new(24);
    let batches: [&[Seq]; 2] = [
        &[square(33), square(1), square(300), square(129)],
        &[Seq { q_len: 100, q_offset: 37, kv_len: 137 }, Seq { q_len: 16, q_offset: 1, kv_len: 17 }],
    ];
    let tma = |k: PrefillKernel| k == PrefillKernel::FlashTma;
    let bf16 = Types { elem: Elem::Bf16, f32_io: false };
    for heads in [(8, 2, 128), (4, 4, 64)] {
        for seqs in batches {
            for causal in [true, false] {
                run_prefill_kernels(g, &mut rng, heads, seqs, causal, Layout::Cache, bf16, &tma);
            }
        }
    }
    // The model's mode: f32 q (staged by the consumers themselves) and output.
    let f32_io = Types { elem: Elem::Bf16, f32_io: true };
    run_prefill_kernels(g, &mut rng, (9, 3, 64), batches[1], true, Layout::Cache, f32_io, &tma);
}

/// Shape and buffer errors are named before anything is launched.
pub fn prefill_refuses_bad_buffers_by_name(g: &Gpu) {
    let q = g.poisoned_bf16(4 * 8 * 64);
    let k = g.poisoned_bf16(4 * 8 * 64);
    let out = g.poisoned_bf16(4 * 8 * 64);
    let cu = g.upload(&[0u32, 4]);
    let shape = PrefillShape {
        batch: 1,
        num_heads: 8,
        num_kv_heads: 8,
        head_dim: 64,
        total_q: 4,
        max_q_len: 4,
        max_kv_len: 4,
        causal: true,
        scale: 0.125,
    };
    let io = PrefillIo {
        q: Operand::Bf16(span(&q)),
        k: Operand::Bf16(span(&k)),
        v: Operand::Bf16(span(&k)),
        out: Operand::Bf16(span(&out)),
        lse: None,
        cu_seqlens_q: span(&cu),
        q_offsets: None,
        kv: KvLayout::Varlen { cu_seqlens_k: span(&cu), total_k: 4 },
    };
    assert!(flash(&g.kernels, &io, &shape).is_ok());
    let e = flash(&g.kernels, &io, &PrefillShape { total_q: 5, max_q_len: 5, ..shape }).unwrap_err();
    assert!(e.to_string().contains("prefill q"), "{e}");
    let e = flash(&g.kernels, &PrefillIo { out: Operand::Bf16(span(&q)), ..io }, &shape).unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
    let f = g.upload(&vec![f16::ZERO; 4 * 8 * 64]);
    let e = flash(&g.kernels, &PrefillIo { v: Operand::F16(span(&f)), ..io }, &shape).unwrap_err();
    assert!(e.to_string().contains("both be bf16 or both f16"), "{e}");
    let e = run(&g.kernels, PrefillKernel::NaiveMaterialised, &io, &shape, None).unwrap_err();
    assert!(e.to_string().contains("scratch"), "{e}");
    let e = flash(&g.kernels, &io, &PrefillShape { head_dim: 96, ..shape }).unwrap_err();
    assert!(e.to_string().contains("head_dim 96"), "{e}");
}

pub fn unsupported_head_layouts_are_refused(g: &Gpu) {
    let buf = g.poisoned(1 << 16);
    let cache = g.poisoned_bf16(1 << 16);
    let lens = g.upload(&[1u32]);
    let shape = DecodeShape { batch: 1, num_heads: 4, num_kv_heads: 4, head_dim: 96, cache_len: 4, scale: 0.1 };
    let err =
        attention_decode_naive(&g.kernels, span(&buf), span(&cache), span(&cache), span(&lens), span(&buf), shape)
            .unwrap_err();
    assert!(err.to_string().contains("head_dim 96"), "{err}");
    let shape = DecodeShape { num_heads: 32, num_kv_heads: 1, head_dim: 64, ..shape };
    let scratch = DecodeScratch { partial_out: span(&buf), partial_ml: span(&buf), num_splits: 1 };
    let err =
        attention_decode(&g.kernels, span(&buf), span(&cache), span(&cache), span(&lens), span(&buf), scratch, shape)
            .unwrap_err();
    assert!(err.to_string().contains("at most 16"), "{err}");
}

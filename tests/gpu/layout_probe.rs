//! The Hopper layout probes (kernels-cuda/layout_probe.cu, rooflab::kernels::layout_probe). They check
//! what the prefill kernels v3 and v4 assume about the hardware, one instruction at a time, element by
//! element.
//!
//! - `wgmma`: for each layout (v3's interleaved, v4's 128-byte swizzle), each head dim, and each operand
//!   of the two products (Q, K, P in registers, V), the operand under test holds ids and the other
//!   operand is one-hot. Every output element is then the id of the one element the tensor cores read.
//!   Ids go up to 16384, and f16 holds integers exactly only up to 2048, so each probe runs twice: once
//!   with id % 2048 and once with id / 2048.
//! - `tma`: a box with the 128-byte swizzle, partly outside the tensor, must land as v4's
//!   `tma::swizzled` says, with zeros outside.
//!
//! On the emulator they pass by construction, since its models follow the same ISA text; they check the
//! probes there. On an H100 a failure lists, per operand, the elements read from elsewhere, with the
//! place the kernel meant and the place the hardware read. A swapped LBO/SBO, a wrong swizzle or a wrong
//! fragment order each leave a pattern of their own in that list.

use half::f16;
use rooflab::kernels::layout_probe::{
    self as probe, MmaForm, MmaProbe, OperandDescriptors, TileLayout, ROWS, TILE_ROWS,
};
use rooflab::kernels::tma::TensorMap3d;
use rooflab::kernels::Launcher;

use crate::common::{span, Gpu};

/// Mismatches shown per operand.
const SHOWN: usize = 6;
/// Ids are split into a low and a high part that f16 holds exactly.
const ID_SPLIT: usize = 2048;

/// Where an operand element comes from in one probe: a shared-memory tile image (its element index,
/// `layout.offset / 2`) or, for P, a row-major A in registers (`m * 128 + k`).
#[derive(Clone, Copy)]
enum Source {
    Tile { layout: TileLayout },
    Registers,
}

impl Source {
    /// Words a byte offset / an element index to say where it is (tile row and column, or A's row and column).
    fn describe(self, element: usize, d: usize) -> String {
        match self {
            Source::Tile { layout } => {
                let at = element * 2;
                let place = (0..TILE_ROWS)
                    .flat_map(|r| (0..d).map(move |c| (r, c)))
                    .find(|&(r, c)| layout.offset(r, c, TILE_ROWS) == at);
                match place {
                    Some((r, c)) => format!("byte {at} = tile ({r}, {c})"),
                    None => format!("byte {at}, outside the tile"),
                }
            }
            Source::Registers => format!("A ({}, {})", element / TILE_ROWS, element % TILE_ROWS),
        }
    }
}

/// The mismatches of one operand.
struct Report {
    what: String,
    checked: usize,
    wrong: Vec<String>,
    wrong_count: usize,
}

impl Report {
    fn new(what: String) -> Self {
        Report { what, checked: 0, wrong: Vec::new(), wrong_count: 0 }
    }

    fn check(&mut self, name: impl FnOnce() -> String, want: usize, got: Option<usize>, source: Source, d: usize) {
        self.checked += 1;
        if got == Some(want) {
            return;
        }
        self.wrong_count += 1;
        if self.wrong.len() < SHOWN {
            let read = match got {
                Some(e) => source.describe(e, d),
                None => "a sum of several elements or none".to_string(),
            };
            self.wrong.push(format!(
                "{}: the kernel means {}, the hardware read {read}",
                name(),
                source.describe(want, d)
            ));
        }
    }

    fn summary(&self) -> String {
        format!(
            "{}: {} of {} elements read from elsewhere; {}",
            self.what,
            self.wrong_count,
            self.checked,
            self.wrong.join("; ")
        )
    }
}

/// An id image: element i holds the low (`high` false) or high part of i + 1 (0 is left for "nothing").
fn ids(len: usize, high: bool) -> Vec<f16> {
    (0..len).map(|i| f16::from_f32(if high { (i + 1) / ID_SPLIT } else { (i + 1) % ID_SPLIT } as f32)).collect()
}

/// A tile image holding 1 at the given tile elements and 0 elsewhere.
fn one_hot_tile(layout: TileLayout, d: usize, ones: impl Iterator<Item = (usize, usize)>) -> Vec<f16> {
    let mut image = vec![f16::ZERO; TILE_ROWS * d];
    for (r, c) in ones {
        image[layout.offset(r, c, TILE_ROWS) / 2] = f16::ONE;
    }
    image
}

/// The element index a pair of probe outputs (low and high parts) names, if it names exactly one.
fn decode(low: f32, high: f32) -> Option<usize> {
    let id = high as f64 * ID_SPLIT as f64 + low as f64;
    (id.fract() == 0.0 && id >= 1.0 && low >= 0.0 && (low as usize) < ID_SPLIT).then(|| id as usize - 1)
}

/// One probe run twice (low and high ids): `a` and `b` build the operands for each half.
fn run_split(
    g: &Gpu,
    form: MmaForm,
    a: impl Fn(bool) -> Vec<f16>,
    b: impl Fn(bool) -> Vec<f16>,
    a_desc: &[u64],
    b_desc: &[u64],
) -> Vec<Option<usize>> {
    let halves: Vec<Vec<f32>> = [false, true]
        .iter()
        .map(|&high| {
            let (a, b) = (g.upload(&a(high)), g.upload(&b(high)));
            let out = g.poisoned(ROWS * form.n());
            let p = MmaProbe { form, a: span(&a), b: span(&b), out: span(&out), a_desc, b_desc };
            probe::wgmma(&g.kernels, &p).unwrap_or_else(|e| panic!("{form:?}: {e}"));
            g.download(&out)
        })
        .collect();
    halves[0].iter().zip(&halves[1]).map(|(&lo, &hi)| decode(lo, hi)).collect()
}

/// S = Q Kᵀ as `layout`'s kernel runs it at head dim `d`: Q of each warpgroup, then K.
fn probe_qk(g: &Gpu, layout: TileLayout, d: usize, reports: &mut Vec<Report>) {
    let descs = OperandDescriptors { layout };
    let steps = d / 16;
    let tile = Source::Tile { layout };
    let k_desc: Vec<u64> = (0..steps).map(|kk| descs.k(kk)).collect();
    let n = MmaForm::SharedN128.n();
    for group in 0..2 {
        // Q holds ids; K one-hot (key n has a 1 at column n % d), so S(m, n) = Q(64 group + m, n % d).
        let mut r = Report::new(format!("{} D={d}: Q of warpgroup {group} (A, K-major)", layout.version()));
        let q_desc: Vec<u64> = (0..steps).map(|kk| descs.q(group, kk)).collect();
        let k_one_hot = one_hot_tile(layout, d, (0..TILE_ROWS).map(|n| (n, n % d)));
        let got =
            run_split(g, MmaForm::SharedN128, |high| ids(TILE_ROWS * d, high), |_| k_one_hot.clone(), &q_desc, &k_desc);
        for m in 0..ROWS {
            for col in 0..n {
                let (row, k) = (64 * group + m, col % d);
                let want = layout.offset(row, k, TILE_ROWS) / 2;
                r.check(|| format!("Q({row}, {k}) for S({m}, {col})"), want, got[m * n + col], tile, d);
            }
        }
        reports.push(r);
    }
    // K holds ids; Q one-hot (row m has a 1 at column m + 64 shift), so S(m, n) = K(n, m + 64 shift).
    let mut r = Report::new(format!("{} D={d}: K (B, K-major)", layout.version()));
    let q_desc: Vec<u64> = (0..steps).map(|kk| descs.q(0, kk)).collect();
    for shift in 0..d / ROWS {
        let q_one_hot = one_hot_tile(layout, d, (0..ROWS).map(|m| (m, m + ROWS * shift)));
        let got =
            run_split(g, MmaForm::SharedN128, |_| q_one_hot.clone(), |high| ids(TILE_ROWS * d, high), &q_desc, &k_desc);
        for m in 0..ROWS {
            for key in 0..n {
                let col = m + ROWS * shift;
                let want = layout.offset(key, col, TILE_ROWS) / 2;
                r.check(|| format!("K({key}, {col})"), want, got[m * n + key], tile, d);
            }
        }
    }
    reports.push(r);
}

/// O += P V as `layout`'s kernel runs it at head dim `d`: P from registers, then V.
fn probe_pv(g: &Gpu, layout: TileLayout, d: usize, reports: &mut Vec<Report>) {
    let descs = OperandDescriptors { layout };
    let steps = TILE_ROWS / 16;
    let form = if d == 64 { MmaForm::RegistersN64 } else { MmaForm::RegistersN128 };
    let v_desc: Vec<u64> = (0..steps).map(|kk| descs.v(kk)).collect();
    // P holds ids (row-major [64][128]); V one-hot (key c + d shift has a 1 at column c), so
    // O(m, c) = P(m, c + d shift).
    let mut r = Report::new(format!("{} D={d}: P (A from registers)", layout.version()));
    for shift in 0..TILE_ROWS / d {
        let v_one_hot = one_hot_tile(layout, d, (0..d).map(|c| (c + d * shift, c)));
        let got = run_split(g, form, |high| ids(ROWS * TILE_ROWS, high), |_| v_one_hot.clone(), &[], &v_desc);
        for m in 0..ROWS {
            for c in 0..d {
                let key = c + d * shift;
                r.check(|| format!("P({m}, {key})"), m * TILE_ROWS + key, got[m * d + c], Source::Registers, d);
            }
        }
    }
    reports.push(r);
    // V holds ids; P one-hot (row m has a 1 at key m + 64 shift), so O(m, c) = V(m + 64 shift, c).
    let mut r = Report::new(format!("{} D={d}: V (B, N-major)", layout.version()));
    for shift in 0..TILE_ROWS / ROWS {
        let mut p_one_hot = vec![f16::ZERO; ROWS * TILE_ROWS];
        for m in 0..ROWS {
            p_one_hot[m * TILE_ROWS + m + ROWS * shift] = f16::ONE;
        }
        let got = run_split(g, form, |_| p_one_hot.clone(), |high| ids(TILE_ROWS * d, high), &[], &v_desc);
        for m in 0..ROWS {
            for c in 0..d {
                let key = m + ROWS * shift;
                let want = layout.offset(key, c, TILE_ROWS) / 2;
                r.check(|| format!("V({key}, {c})"), want, got[m * d + c], Source::Tile { layout }, d);
            }
        }
    }
    reports.push(r);
}

/// Every operand of both products of v3 and v4 at head dims 64 and 128 is read where the kernel put it.
pub fn layout_probe_wgmma_reads_where_v3_and_v4_put_their_operands(g: &Gpu) {
    if g.kernels.arch() != "sm_90a" {
        eprintln!("layout probes: Hopper only; this GPU runs the {} set", g.kernels.arch());
        return;
    }
    let mut reports = Vec::new();
    for layout in [TileLayout::Interleaved, TileLayout::Swizzle128] {
        for d in [64, 128] {
            probe_qk(g, layout, d, &mut reports);
            probe_pv(g, layout, d, &mut reports);
        }
    }
    let wrong: Vec<String> = reports.iter().filter(|r| r.wrong_count > 0).map(Report::summary).collect();
    let right: Vec<&str> = reports.iter().filter(|r| r.wrong_count == 0).map(|r| r.what.as_str()).collect();
    assert!(
        wrong.is_empty(),
        "wgmma read operands from elsewhere than the kernels put them:\n  {}\nread as the kernels assume: {}",
        wrong.join("\n  "),
        if right.is_empty() { "nothing".to_string() } else { right.join("; ") }
    );
    let checked: usize = reports.iter().map(|r| r.checked).sum();
    println!("layout probes: {} operands, {checked} elements, all read where the kernels put them", reports.len());
}

/// A 128-byte swizzled TMA box lands as v4's `tma::swizzled` says, zero-filled past the tensor's end.
pub fn layout_probe_tma_box_lands_where_v4_reads_it(g: &Gpu) {
    if g.kernels.arch() != "sm_90a" {
        eprintln!("layout probes: Hopper only; this GPU runs the {} set", g.kernels.arch());
        return;
    }
    // [rows][heads][d] with element i holding i + 1 (raw 16-bit words; the TMA moves bytes).
    let (rows, heads, d) = (200usize, 2usize, 128usize);
    let tensor: Vec<u16> = (1..=rows * heads * d).map(|i| i as u16).collect();
    let buf = g.upload(&tensor);
    let map = TensorMap3d::heads(span(&buf).addr(), rows, heads, d, TILE_ROWS as u32);
    let mut wrong = Vec::new();
    // The first box of the tensor, and one of the second panel and head that runs 28 rows past its end.
    for (x, y, z) in [(0usize, 0usize, 0usize), (64, 1, 100)] {
        let out = g.upload(&vec![0xFFFFu16; TILE_ROWS * 64]);
        probe::tma(&g.kernels, &map, [x as i32, y as i32, z as i32], span(&out))
            .unwrap_or_else(|e| panic!("TMA probe: {e}"));
        let got = g.download(&out);
        for r in 0..TILE_ROWS {
            for c in 0..64 {
                let row = z + r;
                let want = if row < rows { tensor[(row * heads + y) * d + x + c] } else { 0 };
                let at = TileLayout::Swizzle128.offset(r, c, TILE_ROWS) / 2;
                if got[at] != want {
                    let held = match got[at] {
                        0 => "0".to_string(),
                        0xFFFF => "nothing (never written)".to_string(),
                        w => {
                            let i = w as usize - 1;
                            format!("tensor ({}, {}, {})", i / (heads * d), i / d % heads, i % d)
                        }
                    };
                    wrong.push(format!("box ({x}, {y}, {z}) row {r} col {c}: byte {} holds {held}", at * 2));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the TMA box did not land as tma::swizzled says ({} elements): {}",
        wrong.len(),
        wrong.iter().take(SHOWN * 2).cloned().collect::<Vec<_>>().join("; ")
    );
}

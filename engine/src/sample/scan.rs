//! Passes over a whole row of logits, written so the compiler vectorises them (fixed-width lanes,
//! no early exits, no library calls): they run once per generated token over 50k to 128k values,
//! on the host, between two GPU decode steps that take a few hundred microseconds.

const LANES: usize = 16;

/// Index of the largest logit (the first on ties; NaN never wins; 0 when all are NaN).
pub fn argmax(logits: &[f32]) -> u32 {
    let Some(top) = top_and_valid(logits).0 else { return 0 };
    logits.iter().position(|&l| l == top).unwrap_or(0) as u32
}

/// In one pass: the largest logit that is not NaN (None when all are NaN or there are none), and
/// how many logits are not NaN.
pub fn top_and_valid(logits: &[f32]) -> (Option<f32>, usize) {
    // `l > m` is false for a NaN l, so NaN never becomes a lane's maximum; the count tells a lane
    // that met a real -inf from one that met only NaN.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut valid = [0u32; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            lanes[i] = if chunk[i] > lanes[i] { chunk[i] } else { lanes[i] };
            valid[i] += !chunk[i].is_nan() as u32;
        }
    }
    let (mut top, mut total) = (None, 0);
    let tail = tail.iter().map(|&l| (l, !l.is_nan() as u32));
    for (l, count) in lanes.into_iter().zip(valid).chain(tail) {
        if count > 0 && top.is_none_or(|t| l > t) {
            top = Some(l);
        }
        total += count as usize;
    }
    (top, total)
}

/// The softmax weight of a logit at temperature `t` relative to the top logit: e^((l - top) / t),
/// computed as 2^((l - top) · log2(e) / t) by [`exp2_nonpositive`]; NaN weighs 0.
#[derive(Debug, Clone, Copy)]
pub struct Weigher {
    top: f32,
    scale: f32,
}

impl Weigher {
    pub fn new(top: f32, temperature: f32) -> Self {
        Weigher { top, scale: std::f32::consts::LOG2_E / temperature }
    }

    pub fn weight(&self, logit: f32) -> f32 {
        let w = exp2_nonpositive((logit - self.top) * self.scale);
        if logit.is_nan() {
            0.0
        } else {
            w
        }
    }

    /// The sum of every logit's weight: in f32 lanes over blocks of [`BLOCK`] values (each lane
    /// adds 64 values of at most 1), the blocks' sums in f64.
    pub fn total(&self, logits: &[f32]) -> f64 {
        let mut total = 0.0f64;
        for block in logits.chunks(BLOCK) {
            let mut lanes = [0.0f32; LANES];
            let chunks = block.chunks_exact(LANES);
            let tail = chunks.remainder();
            for chunk in chunks {
                for i in 0..LANES {
                    lanes[i] += self.weight(chunk[i]);
                }
            }
            total +=
                lanes.iter().map(|&l| l as f64).sum::<f64>() + tail.iter().map(|&l| self.weight(l) as f64).sum::<f64>();
        }
        total
    }
}

/// Values per block of [`Weigher::total`].
const BLOCK: usize = 64 * LANES;

/// 2^x for x <= 0 (the argument of every softmax weight once the top logit is subtracted), with a
/// relative error under 3e-7; 0 under -126 (a weight below 1e-38 of the top's), NaN for NaN.
/// Adding 1.5·2^23 rounds x to an integer n (|x - n| <= 1/2) and leaves n in the sum's low
/// mantissa bits; 2^(x - n) is its Taylor polynomial to degree 6 (truncation error
/// (ln2/2)^7/7! = 1.2e-7), and n + 127 shifted into the exponent bits makes 2^n. Only float adds
/// and multiplies and integer adds and shifts, so the loops above vectorise.
pub fn exp2_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    const C: [f32; 7] = [
        1.0,
        std::f32::consts::LN_2,
        0.240_226_5,     // ln2^2 / 2
        0.055_504_11,    // ln2^3 / 6
        0.009_618_129,   // ln2^4 / 24
        0.001_333_355_8, // ln2^5 / 120
        0.000_154_035_3, // ln2^6 / 720
    ];
    let clamped = if x < -126.0 { -126.0 } else { x }; // NaN stays NaN (the comparison is false)
    let shifted = clamped + ROUND; // n sits in the low mantissa bits: bits(ROUND) + n
    let n = shifted - ROUND;
    let f = clamped - n;
    let poly = C[0] + f * (C[1] + f * (C[2] + f * (C[3] + f * (C[4] + f * (C[5] + f * C[6])))));
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let value = poly * scale;
    if x < -126.0 {
        0.0
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum_and_never_nan() {
        assert_eq!(argmax(&[0.5, 2.0, 1.9, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[]), 0);
        // Across the vectorised lanes and the tail.
        for n in [1, 15, 16, 17, 100, 49152] {
            for at in [0, n / 3, n - 1] {
                let mut v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 2.0).collect();
                v[at] = 5.0;
                if n > 2 {
                    v[(at + 1) % n] = f32::NAN;
                }
                assert_eq!(argmax(&v), at as u32, "n {n} at {at}");
            }
        }
    }

    #[test]
    fn top_logit_and_valid_count_skip_nan() {
        let mut v = vec![f32::NAN; 40];
        assert_eq!(top_and_valid(&v), (None, 0));
        v[33] = f32::NEG_INFINITY;
        assert_eq!(top_and_valid(&v), (Some(f32::NEG_INFINITY), 1));
        v[7] = -3.0;
        v[39] = -1.0;
        assert_eq!(top_and_valid(&v), (Some(-1.0), 3));
    }

    #[test]
    fn exp2_is_within_3e_7_of_the_exact_value() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > -126.0 {
            let exact = (x as f64).exp2();
            worst = worst.max(((exp2_nonpositive(x) as f64 - exact) / exact).abs());
            x -= 0.000_977; // not a power of two: every fraction of the unit interval comes up
        }
        assert!(worst < 3e-7, "worst relative error {worst:.2e}");
        assert_eq!(exp2_nonpositive(0.0), 1.0);
        assert_eq!(exp2_nonpositive(-126.5), 0.0);
        assert_eq!(exp2_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp2_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn weights_and_their_total_follow_the_softmax() {
        let logits: Vec<f32> = (0..1001).map(|i| ((i * 37) % 101) as f32 * 0.1 - 3.0).collect();
        let top = top_and_valid(&logits).0.unwrap();
        let weigher = Weigher::new(top, 0.7);
        let exact: f64 = logits.iter().map(|&l| ((l as f64 - top as f64) / 0.7).exp()).sum();
        assert!((weigher.total(&logits) / exact - 1.0).abs() < 1e-6);
        assert_eq!(weigher.weight(top), 1.0);
        assert_eq!(weigher.weight(f32::NAN), 0.0);
        assert_eq!(weigher.weight(f32::NEG_INFINITY), 0.0);
    }
}

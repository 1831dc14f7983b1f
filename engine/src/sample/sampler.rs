//! Logits processors and sampling, applied in HF transformers' order: repetition penalty, then
//! temperature, then top-k, top-p and min-p filtering, then a draw from the softmax. Temperature
//! 0 means greedy (argmax, lowest id on ties).

use std::borrow::Cow;

use super::ranking::Ranking;
use super::scan::{argmax, top_and_valid, Weigher};
use super::Rng;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: no limit).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: no limit).
    pub min_p: f32,
    /// HF-style: positive logits of seen tokens are divided by it, negative ones multiplied (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p must be in [0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition penalty must be a finite number > 0");
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Sampler { params, rng })
    }

    /// Picks the next token from `logits` given the tokens seen so far (prompt and output).
    ///
    /// The kept tokens are walked from the most likely down (lower id first on ties; NaN logits
    /// are never drawn), so a seed picks the same token on every machine. Only the part of the
    /// ranking that the filters and the draw read is sorted ([`Ranking`]), and the passes over
    /// the whole vocabulary vectorise ([`super::scan`]): with a 128k vocabulary a full sort would
    /// take longer than a GPU decode step.
    pub fn sample(&mut self, logits: &[f32], seen: &[u32]) -> u32 {
        let p = &self.params;
        let logits = penalised(logits, seen, p.repetition_penalty);
        if p.temperature == 0.0 {
            return argmax(&logits);
        }
        let (Some(top), valid) = top_and_valid(&logits) else { return 0 };
        if !top.is_finite() {
            return argmax(&logits); // +inf, or nothing above -inf: no weights to draw by
        }
        let weigher = Weigher::new(top, p.temperature);
        // Top-k: the candidates are the first `limit` of the ranking; a probability is a weight
        // over their `total`.
        let limit = if p.top_k > 0 { p.top_k.min(valid) } else { valid };
        let mut ranking = Ranking::new(&logits, top, p.temperature);
        let mut weight_at = |rank: usize| weigher.weight(logits[ranking.id(rank) as usize]) as f64;
        let total = if limit < valid { (0..limit).map(&mut weight_at).sum() } else { weigher.total(&logits) };
        // Top-p: the shortest head whose probability reaches top_p.
        let mut keep = limit;
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            keep = 0;
            while keep < limit {
                cumulative += weight_at(keep) / total;
                keep += 1;
                if cumulative >= p.top_p as f64 {
                    break;
                }
            }
        }
        // Min-p: drop what is less likely than min_p times the most likely (which always stays).
        if p.min_p > 0.0 {
            let floor = weight_at(0) / total * p.min_p as f64;
            let head = keep;
            keep = 1;
            while keep < head && weight_at(keep) / total >= floor {
                keep += 1;
            }
        }

        // The draw: walk the kept tokens until the uniform's share of their mass is used up.
        let mass = if keep == limit { 1.0 } else { (0..keep).map(|rank| weight_at(rank) / total).sum() };
        let mut target = self.rng.uniform() * mass;
        let mut last_drawable = 0;
        for rank in 0..keep {
            let q = weight_at(rank) / total;
            if q > 0.0 {
                last_drawable = rank;
            }
            target -= q;
            if target < 0.0 {
                return ranking.id(rank);
            }
        }
        ranking.id(last_drawable) // rounding left a sliver of the target: the last kept token with weight
    }
}

/// The naive baseline of [`Sampler::sample`], for its tests and the `sampling` bench: the same
/// processors, weights and draw, over the whole vocabulary sorted on every call.
#[doc(hidden)]
pub fn sample_by_full_sort(params: &SamplingParams, rng: &mut Rng, logits: &[f32], seen: &[u32]) -> u32 {
    let p = params;
    let logits = penalised(logits, seen, p.repetition_penalty);
    if p.temperature == 0.0 {
        return argmax(&logits);
    }
    let Some(top) = top_and_valid(&logits).0 else { return 0 };
    if !top.is_finite() {
        return argmax(&logits);
    }
    let weigher = Weigher::new(top, p.temperature);
    let mut order: Vec<u32> = (0..logits.len() as u32).filter(|&t| !logits[t as usize].is_nan()).collect();
    order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    let mut probs: Vec<f64> = order.iter().map(|&t| weigher.weight(logits[t as usize]) as f64).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= total);
    if p.top_p < 1.0 {
        let mut cumulative = 0.0;
        let keep = probs
            .iter()
            .position(|&q| {
                cumulative += q;
                cumulative >= p.top_p as f64
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    if p.min_p > 0.0 {
        let floor = probs[0] * p.min_p as f64;
        let keep = probs.iter().take_while(|&&q| q >= floor).count().max(1);
        probs.truncate(keep);
    }
    let mut target = rng.uniform() * probs.iter().sum::<f64>();
    let mut last_drawable = 0;
    for (i, q) in probs.iter().enumerate() {
        if *q > 0.0 {
            last_drawable = i;
        }
        target -= q;
        if target < 0.0 {
            return order[i];
        }
    }
    order[last_drawable]
}

/// HF-style repetition penalty: positive logits of seen tokens are divided by it, negative ones
/// multiplied. Borrows the logits untouched when it is off.
fn penalised<'a>(logits: &'a [f32], seen: &[u32], penalty: f32) -> Cow<'a, [f32]> {
    if penalty == 1.0 {
        return Cow::Borrowed(logits);
    }
    let mut out = logits.to_vec();
    // Each seen token once, however often it was seen: a bit per vocabulary entry marks the done
    // ones (linear in what was seen; sorting it grew with the context on every token).
    let mut done = vec![0u64; logits.len().div_ceil(64)];
    for &t in seen {
        let t = t as usize;
        let Some(l) = out.get_mut(t) else { continue };
        if done[t / 64] & 1 << (t % 64) == 0 {
            done[t / 64] |= 1 << (t % 64);
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p).unwrap()
    }

    #[test]
    fn greedy_takes_argmax_and_penalty_can_move_it() {
        let logits = [0.5, 2.0, 1.9, -1.0];
        assert_eq!(sampler(SamplingParams::default()).sample(&logits, &[]), 1);
        let p = SamplingParams { repetition_penalty: 1.2, ..Default::default() };
        assert_eq!(sampler(p).sample(&logits, &[1]), 2);
    }

    #[test]
    fn the_penalty_applies_once_per_seen_token() {
        let logits = [2.0, -1.0, 0.5, 3.0];
        let got = penalised(&logits, &[0, 1, 0, 0, 1, 9], 2.0);
        assert_eq!(&got[..], &[1.0, -2.0, 0.5, 3.0], "repeats count once; ids past the vocabulary are ignored");
        assert!(matches!(penalised(&logits, &[0], 1.0), Cow::Borrowed(_)));
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplingParams { temperature: 1.0, top_k: 1, ..Default::default() };
        assert_eq!(sampler(p).sample(&logits, &[]), argmax(&logits));
        let p = SamplingParams { temperature: 0.8, top_p: 0.9, seed: 7, ..Default::default() };
        let draw = |p: &SamplingParams| {
            let mut s = sampler(p.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(&p), draw(&p));
        assert_ne!(draw(&p), draw(&SamplingParams { seed: 8, ..p.clone() }));
    }

    #[test]
    fn top_p_and_min_p_remove_the_tail() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top-p 0.8 keeps two, min-p 0.2 keeps two.
        let logits = [3.0, 2.0, 1.0, -0.1];
        for p in [
            SamplingParams { temperature: 1.0, top_p: 0.8, ..Default::default() },
            SamplingParams { temperature: 1.0, min_p: 0.2, ..Default::default() },
        ] {
            let mut s = sampler(SamplingParams { seed: 3, ..p });
            assert!((0..500).all(|_| s.sample(&logits, &[]) < 2));
        }
    }

    /// Random logits of `n` tokens; `ties` rounds them to a coarse grid so that many tie, and
    /// `masked` sets every seventh to -inf (and one to NaN when n > 3).
    fn logits(n: usize, seed: u64, spread: f32, ties: bool, masked: bool) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut l: Vec<f32> = (0..n).map(|_| rng.normal() * spread).collect();
        if ties {
            l.iter_mut().for_each(|x| *x = (*x * 2.0).round() / 2.0);
        }
        if masked {
            l.iter_mut().step_by(7).for_each(|x| *x = f32::NEG_INFINITY);
            if n > 3 {
                l[3] = f32::NAN;
            }
        }
        l
    }

    /// The lazily ranked sampler draws, seed for seed, what the full sort draws: the same filters
    /// over the same ranking. (Their totals are summed in different orders, so a uniform landing
    /// within ~1e-16 of a boundary could split them; over these draws it never does.)
    #[test]
    fn lazy_ranking_draws_what_the_full_sort_draws() {
        let mut cases = 0;
        for (n, spread, ties, masked) in [
            (1, 1.0, false, false),
            (2, 1.0, true, false),
            (9, 3.0, false, true),
            (1000, 2.0, true, true),
            (1000, 0.2, false, false), // flat: the draw walks deep into the ranking
            (49152, 4.0, false, true),
        ] {
            let logits = logits(n, n as u64, spread, ties, masked);
            let seen: Vec<u32> = (0..n as u32).step_by(5).collect();
            for temperature in [0.0, 0.3, 1.0, 2.5] {
                for top_k in [0, 1, 5, 50, n + 3] {
                    for (top_p, min_p) in [(1.0, 0.0), (0.9, 0.0), (0.5, 0.05), (0.05, 0.0), (1.0, 0.5)] {
                        for repetition_penalty in [1.0, 1.3] {
                            let params =
                                SamplingParams { temperature, top_k, top_p, min_p, repetition_penalty, seed: cases };
                            let mut lazy = sampler(params.clone());
                            let mut reference_rng = Rng::new(params.seed);
                            for draw in 0..20 {
                                let got = lazy.sample(&logits, &seen);
                                let want = sample_by_full_sort(&params, &mut reference_rng, &logits, &seen);
                                assert_eq!(got, want, "n {n} draw {draw} {params:?}");
                                assert!(!logits[got as usize].is_nan() && logits[got as usize] > f32::NEG_INFINITY);
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 6 * 4 * 5 * 5 * 2);
    }

    /// One token far above a flat tail: the first head holds only it, so top-p near 1 and plain
    /// draws must bring the tail in and still agree with the full sort.
    #[test]
    fn walks_past_the_first_head_agree_with_the_full_sort() {
        let mut logits = vec![0.0f32; 3000];
        logits[5] = 17.0; // the tail's 2999 tokens hold e^-17 * 2999 = 1.2e-4 of the mass
        logits[9] = 0.5;
        for (top_p, min_p) in [(0.99995, 0.0), (1.0, 0.0), (1.0, 1e-9)] {
            let params = SamplingParams { temperature: 1.0, top_p, min_p, seed: 21, ..Default::default() };
            let mut lazy = sampler(params.clone());
            let mut reference_rng = Rng::new(params.seed);
            let draws: Vec<u32> = (0..400).map(|_| lazy.sample(&logits, &[])).collect();
            let want: Vec<u32> =
                (0..400).map(|_| sample_by_full_sort(&params, &mut reference_rng, &logits, &[])).collect();
            assert_eq!(draws, want, "top-p {top_p} min-p {min_p}");
        }
    }

    #[test]
    fn nan_and_masked_tokens_are_never_drawn() {
        let mut logits = vec![f32::NEG_INFINITY; 100];
        logits[40] = f32::NAN;
        logits[77] = -3.0;
        let mut s = sampler(SamplingParams { temperature: 1.0, seed: 5, ..Default::default() });
        assert!((0..50).all(|_| s.sample(&logits, &[]) == 77));
        let mut s = sampler(SamplingParams { temperature: 1.0, ..Default::default() });
        assert_eq!(s.sample(&[f32::NAN, f32::NAN], &[]), 0, "all NaN: no panic");
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Sampler::new(SamplingParams { top_p: 0.0, ..Default::default() }).is_err());
        assert!(Sampler::new(SamplingParams { temperature: -1.0, ..Default::default() }).is_err());
    }
}

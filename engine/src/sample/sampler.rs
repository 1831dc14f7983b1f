//! Logits processors and sampling, applied in HF transformers' order: repetition penalty, then
//! temperature, then top-k, top-p and min-p filtering, then a draw from the softmax. Temperature
//! 0 means greedy (argmax, lowest id on ties).

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
    pub fn sample(&mut self, logits: &[f32], seen: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen: Vec<u32> = seen.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                let Some(l) = logits.get_mut(t as usize) else { continue };
                *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
            }
        }
        if p.temperature == 0.0 {
            return argmax(&logits);
        }
        // Candidates sorted by logit, highest first (ties: lower id first, so runs reproduce).
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0] as usize] as f64;
        let mut probs: Vec<f64> =
            order.iter().map(|&t| ((logits[t as usize] as f64 - max) / p.temperature as f64).exp()).collect();
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
        let mut target = self.rng.uniform() * probs.iter().sum::<f64>();
        for (i, q) in probs.iter().enumerate() {
            target -= q;
            if target < 0.0 {
                return order[i];
            }
        }
        order[probs.len() - 1]
    }
}

/// Index of the largest logit (the first on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
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

    #[test]
    fn rejects_bad_parameters() {
        assert!(Sampler::new(SamplingParams { top_p: 0.0, ..Default::default() }).is_err());
        assert!(Sampler::new(SamplingParams { temperature: -1.0, ..Default::default() }).is_err());
    }
}

//! The vocabulary ranked by logit for the sampler's filters and draw, sorted only as far as they read.
//!
//! A full sort of a 128k vocabulary takes milliseconds, longer than a GPU decode step, while
//! top-p, min-p and the draw rarely read past the first few dozen tokens. So the ranking holds, at
//! first, only the tokens whose logits lie within [`HEAD_NATS`] of the top at the sampling
//! temperature (their weights at least e^-HEAD_NATS of the top's), and sorts only the first
//! [`FIRST_SORTED`] of those. A read past the sorted part selects the next stretch (at least as
//! long again) in linear time and sorts it; a read past the head brings in every other token.
//! Ranks never change as it grows: every token left out ranks below every token in it.

/// Tokens whose weight is at least e^-HEAD_NATS of the top's make up the first head.
const HEAD_NATS: f32 = 12.0;
/// How much of the ranking the first read sorts.
const FIRST_SORTED: usize = 64;

pub struct Ranking<'a> {
    logits: &'a [f32],
    /// Per token in the ranking so far: its logit's order-preserving bits above the complement of
    /// its id, so one integer comparison ranks by logit (descending) and then by id (ascending).
    /// The first `sorted` are in final order.
    keys: Vec<u64>,
    sorted: usize,
    /// Logits under this are not in `keys` yet (None once every token that is not NaN is).
    floor: Option<f32>,
}

impl<'a> Ranking<'a> {
    /// The ranking of `logits` whose largest (non-NaN) value is `top`, for sampling at
    /// `temperature`.
    pub fn new(logits: &'a [f32], top: f32, temperature: f32) -> Self {
        let floor = top - HEAD_NATS * temperature;
        let head = logits.iter().enumerate().filter(|&(_, &l)| l >= floor).map(|(id, &l)| key(id, l)).collect();
        Ranking { logits, keys: head, sorted: 0, floor: Some(floor) }
    }

    /// The id at `rank` (0: the highest logit). `rank` must be under the number of logits that
    /// are not NaN.
    pub fn id(&mut self, rank: usize) -> u32 {
        if rank >= self.keys.len() {
            self.bring_in_the_rest();
        }
        if rank >= self.sorted {
            let end = (rank + 1).max(2 * self.sorted).max(FIRST_SORTED).min(self.keys.len());
            let rest = &mut self.keys[self.sorted..];
            let take = end - self.sorted;
            if take < rest.len() {
                rest.select_nth_unstable_by(take - 1, |a, b| b.cmp(a));
            }
            rest[..take].sort_unstable_by(|a, b| b.cmp(a));
            self.sorted = end;
        }
        !(self.keys[rank] as u32)
    }

    /// How many tokens have been sorted (for tests of the laziness).
    #[cfg(test)]
    pub fn sorted(&self) -> usize {
        self.sorted
    }

    fn bring_in_the_rest(&mut self) {
        let Some(floor) = self.floor.take() else { return };
        let rest = self.logits.iter().enumerate().filter(|&(_, &l)| l < floor);
        self.keys.extend(rest.map(|(id, &l)| key(id, l)));
    }
}

fn key(id: usize, logit: f32) -> u64 {
    (ordered_bits(logit) as u64) << 32 | !(id as u32) as u64
}

/// An f32's bits mapped so that unsigned order is numeric order (-inf lowest, -0 under +0).
fn ordered_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Rng;

    /// The full sort the ranking must agree with: logit descending, id ascending, NaN left out.
    fn fully_sorted(logits: &[f32]) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..logits.len() as u32).filter(|&t| !logits[t as usize].is_nan()).collect();
        ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        ids
    }

    #[test]
    fn the_ranking_sorts_only_the_head_it_is_asked_for() {
        let mut rng = Rng::new(11);
        // Rounded to halves, so that many tie; -inf and NaN among them.
        let mut logits: Vec<f32> = (0..5000).map(|_| (rng.normal() * 4.0).round() / 2.0).collect();
        logits[10] = f32::NEG_INFINITY;
        logits[3] = f32::NAN;
        let want = fully_sorted(&logits);
        let top = logits[want[0] as usize];
        let mut ranking = Ranking::new(&logits, top, 0.5);
        assert!(ranking.keys.len() < logits.len() / 2, "the first head holds only the tokens near the top");
        assert_eq!(ranking.id(0), want[0]);
        assert_eq!(ranking.sorted(), FIRST_SORTED);
        assert_eq!(ranking.id(FIRST_SORTED), want[FIRST_SORTED]);
        assert_eq!(ranking.sorted(), 2 * FIRST_SORTED, "a read past the sorted part doubles it");
        let all: Vec<u32> = (0..want.len()).map(|rank| ranking.id(rank)).collect();
        assert_eq!(all, want, "the rest comes in below the head without reordering it");
        assert_eq!(*all.last().unwrap(), 10, "-inf ranks last");
    }

    #[test]
    fn ordered_bits_follow_numeric_order() {
        let values = [f32::NEG_INFINITY, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, f32::INFINITY];
        for pair in values.windows(2) {
            assert!(ordered_bits(pair[0]) < ordered_bits(pair[1]), "{pair:?}");
        }
    }
}

//! A small seeded generator (SplitMix64). Ours rather than a crate's so that a seed gives the same
//! tokens in every version of rooflab, on every machine.

#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// Values per parallel task of [`uniform_values`].
pub const UNIFORM_CHUNK: usize = 1 << 16;

/// The (`i`+1)-th output of `Rng::new(seed)`, computed directly: the stream is counter-based, so any
/// element can be made on its own (on the device, `fill_uniform_bf16` in kernels-cuda/layers.cu makes it
/// the same way).
pub fn splitmix64_at(seed: u64, i: u64) -> u64 {
    Rng::new(seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))).next_u64()
}

/// Half the width of the uniform distribution of standard deviation `spread`: values lie on
/// centre ± `spread`·√3. One f32 that the CPU and the device both use.
pub fn uniform_half_width(spread: f32) -> f32 {
    spread * 3f32.sqrt()
}

/// Element `i` of [`uniform_values`]`(_, seed, centre, spread, _)` with `half_width` =
/// [`uniform_half_width`]`(spread)`, before conversion. Each step rounds once, as the device's
/// `fill_uniform_bf16` (which spells its arithmetic so that nvcc cannot fuse it) does: the same bits.
pub fn uniform_at(seed: u64, i: u64, centre: f32, half_width: f32) -> f32 {
    // 23 random bits plus a half, over 2^23: exact in f32, so 2u - 1 is exact, in (-1, 1) and never 0.
    let u = ((splitmix64_at(seed, i) >> 41) as f32 + 0.5) / (1u64 << 23) as f32;
    centre + half_width * (2.0 * u - 1.0)
}

/// `len` values uniform around `centre` with standard deviation `spread` (on ±`spread`·√3, never exactly
/// `centre`), made in parallel from `seed` and stored through `convert` (to bf16 for matrices). Value `i`
/// is [`uniform_at`]: the same (len, seed) gives the same values on any thread count, and on the device.
/// A 1 GB table takes well under a second, where a serial generator would take tens of seconds.
pub fn uniform_values<T: Copy + Default + Send>(
    len: usize,
    seed: u64,
    centre: f32,
    spread: f32,
    convert: impl Fn(f32) -> T + Sync,
) -> Vec<T> {
    use rayon::prelude::*;
    let half_width = uniform_half_width(spread);
    let mut out = vec![T::default(); len];
    out.par_chunks_mut(UNIFORM_CHUNK).enumerate().for_each(|(c, chunk)| {
        let first = (c * UNIFORM_CHUNK) as u64;
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = convert(uniform_at(seed, first + j as u64, centre, half_width));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn random_values_are_reproducible_and_spread_as_asked() {
        let same = |v: f32| v;
        let a = uniform_values(200_000, 7, 1.0, 0.1, same);
        assert_eq!(a, uniform_values(200_000, 7, 1.0, 0.1, same));
        assert_ne!(a, uniform_values(200_000, 8, 1.0, 0.1, same));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let std = (a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!((mean - 1.0).abs() < 1e-3 && (std - 0.1).abs() < 1e-3, "mean {mean} std {std}");
        // One stream over the parallel tasks: the second task's values go on from the first's.
        assert_ne!(a[..1000], a[UNIFORM_CHUNK..UNIFORM_CHUNK + 1000]);
        let half_width = uniform_half_width(0.1);
        for i in [0, 1, UNIFORM_CHUNK - 1, UNIFORM_CHUNK, 199_999] {
            assert_eq!(a[i].to_bits(), uniform_at(7, i as u64, 1.0, half_width).to_bits(), "value {i}");
        }
        assert!(uniform_values(5, 1, 0.0, 1.0, same).iter().all(|v| *v != 0.0 && v.abs() < 1.8));
        let b = uniform_values(1000, 7, 1.0, 0.1, bf16::from_f32);
        assert!(b.iter().zip(&a).all(|(x, y)| *x == bf16::from_f32(*y)));
    }

    #[test]
    fn the_counter_based_stream_is_the_generators_stream() {
        let mut rng = Rng::new(0xABCD);
        for i in 0..1000 {
            assert_eq!(splitmix64_at(0xABCD, i), rng.next_u64(), "draw {i}");
        }
    }
}

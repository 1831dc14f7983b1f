//! From a list of event times to one summary row: median and tails, GB/s, TFLOP/s, intensity.

use anyhow::{bail, Result};

use super::cases::Case;
use crate::report::model::{Ceilings, Row};

/// Median and the 10th/90th percentiles of one implementation's event times, microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeStats {
    pub median_us: f64,
    pub p10_us: f64,
    pub p90_us: f64,
    pub samples: usize,
}

/// The q-quantile (0..=1) of sorted values, interpolating linearly between neighbours: numpy's default
/// method, which the peer scripts use too, so both sides summarise times the same way.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

impl TimeStats {
    /// Summarises event times; rejects empty lists and times that are not positive and finite.
    pub fn from_times(times_us: &[f64]) -> Result<TimeStats> {
        if times_us.is_empty() {
            bail!("no event times to summarise");
        }
        if let Some(bad) = times_us.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
            bail!("event time {bad} µs is not a positive number");
        }
        let mut sorted = times_us.to_vec();
        sorted.sort_by(f64::total_cmp);
        Ok(TimeStats {
            median_us: quantile(&sorted, 0.5),
            p10_us: quantile(&sorted, 0.1),
            p90_us: quantile(&sorted, 0.9),
            samples: sorted.len(),
        })
    }
}

/// One summary row for `variant` of `case` timed at `times_us`. Comparison columns other than
/// `pct_of_ceiling` are filled once every row of the run exists (see [`crate::report::compare`]).
pub fn measurement_row(case: &Case, variant: &str, times_us: &[f64], ceilings: &Ceilings) -> Result<Row> {
    let stats = TimeStats::from_times(times_us)
        .map_err(|e| anyhow::anyhow!("{} {} {variant} [{}]: {e}", case.suite, case.kernel, case.shape()))?;
    let seconds = stats.median_us * 1e-6;
    let gbps = (case.work.bytes > 0.0).then(|| case.work.bytes / seconds / 1e9);
    let tflops = (case.work.flops > 0.0).then(|| case.work.flops / seconds / 1e12);
    let intensity = (case.work.bytes > 0.0).then(|| case.work.flops / case.work.bytes);
    Ok(Row {
        suite: case.suite.name().to_string(),
        kernel: case.kernel.clone(),
        variant: variant.to_string(),
        shape: case.shape(),
        dtype: case.dtype.clone(),
        median_us: stats.median_us,
        p10_us: Some(stats.p10_us),
        p90_us: Some(stats.p90_us),
        gbps,
        tflops,
        intensity,
        pct_of_ceiling: ceilings.percent(gbps, tflops, intensity),
        speedup_vs_naive: None,
        peer: String::new(),
        ratio_vs_peer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cases::{attention_decode, attention_prefill};

    fn ceilings() -> Ceilings {
        Ceilings {
            bandwidth_gbps: 3016.0,
            bandwidth_method: "copy".into(),
            bf16_tflops: 786.0,
            bf16_method: "gemm".into(),
        }
    }

    #[test]
    fn quantiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [10, 50, 90]) == [1.4, 3.0, 7.6]
        let stats = TimeStats::from_times(&[4.0, 1.0, 10.0, 3.0, 2.0]).unwrap();
        assert!((stats.p10_us - 1.4).abs() < 1e-12);
        assert_eq!(stats.median_us, 3.0);
        assert!((stats.p90_us - 7.6).abs() < 1e-12);
        assert_eq!(TimeStats::from_times(&[5.0]).unwrap().p90_us, 5.0);
        assert!(TimeStats::from_times(&[]).is_err());
        assert!(TimeStats::from_times(&[1.0, f64::NAN]).is_err());
        assert!(TimeStats::from_times(&[1.0, 0.0]).is_err());
    }

    #[test]
    fn decode_row_is_memory_bound_and_prefill_compute_bound() {
        // The DESIGN's torch cuDNN decode number: 71 us at B1 L32768 GQA 32/8 is about 1.9 TB/s.
        let decode = attention_decode(1, 32, 8, 32768, 128);
        let row = measurement_row(&decode, "rooflab", &[72.0, 71.0, 70.0, 71.0, 75.0], &ceilings()).unwrap();
        assert_eq!(row.median_us, 71.0);
        assert!((row.gbps.unwrap() - 1890.0).abs() < 5.0, "{:?}", row.gbps);
        // GQA 32/8: every K/V byte serves 4 query heads, about 1 FLOP per byte each.
        assert!((row.intensity.unwrap() - 4.0).abs() < 0.01);
        assert!((row.pct_of_ceiling.unwrap() - 100.0 * row.gbps.unwrap() / 3016.0).abs() < 1e-9);

        let prefill = attention_prefill(1, 32, 8, 16384, 128, true);
        let row = measurement_row(&prefill, "rooflab", &[5000.0; 3], &ceilings()).unwrap();
        assert!(row.intensity.unwrap() > ceilings().ridge());
        assert!((row.pct_of_ceiling.unwrap() - 100.0 * row.tflops.unwrap() / 786.0).abs() < 1e-9);
        let err = measurement_row(&prefill, "rooflab", &[], &ceilings()).unwrap_err().to_string();
        assert!(err.contains("attention_prefill") && err.contains("S=16384"), "{err}");
    }
}

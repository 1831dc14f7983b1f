//! The comparison columns of summary.csv, recomputed from the rows themselves.
//!
//! Recomputing (instead of trusting what a file says) keeps the columns right after any merge: a new peer
//! file changes `peer`/`ratio_vs_peer` of every rooflab row at the same shape.

use std::collections::BTreeMap;

use super::model::{Ceilings, Row, RowKey};

/// The fastest peer at a key: (name, median µs).
fn fastest_peers(rows: &[Row]) -> BTreeMap<RowKey, (String, f64)> {
    let mut best: BTreeMap<RowKey, (String, f64)> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.is_peer()) {
        let candidate = (row.peer.clone(), row.median_us);
        best.entry(row.key())
            .and_modify(|current| {
                // Ties go to the alphabetically first name, so the choice never depends on row order.
                if (candidate.1, &candidate.0) < (current.1, &current.0) {
                    *current = candidate.clone();
                }
            })
            .or_insert(candidate);
    }
    best
}

/// The naive baseline's median at a key (the first naive row if a run has several).
fn naive_times(rows: &[Row]) -> BTreeMap<RowKey, f64> {
    let mut naive = BTreeMap::new();
    for row in rows.iter().filter(|r| r.is_naive()) {
        naive.entry(row.key()).or_insert(row.median_us);
    }
    naive
}

/// Sets `pct_of_ceiling`, `speedup_vs_naive`, `peer` and `ratio_vs_peer` on every row.
///
/// - % of ceiling: bandwidth below the ridge point, tensor-core rate at or above it.
/// - speedup vs naive: naive time / this time, for every row except the naive and peer rows.
/// - peer, ratio vs peer: the fastest peer at the same shape and its time / this time; peer rows keep
///   their own name and get no ratio.
pub fn fill_comparisons(rows: &mut [Row], ceilings: &Ceilings) {
    let peers = fastest_peers(rows);
    let naive = naive_times(rows);
    for row in rows.iter_mut() {
        row.pct_of_ceiling = ceilings.percent(row.gbps, row.tflops, row.intensity);
        let key = row.key();
        row.speedup_vs_naive = if row.is_naive() || row.is_peer() {
            None
        } else {
            naive.get(&key).map(|naive_us| naive_us / row.median_us)
        };
        if row.is_peer() {
            row.ratio_vs_peer = None;
        } else if let Some((name, peer_us)) = peers.get(&key) {
            row.peer = name.clone();
            row.ratio_vs_peer = Some(peer_us / row.median_us);
        } else {
            row.peer.clear();
            row.ratio_vs_peer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{NAIVE, PEER};

    fn row(variant: &str, peer: &str, median_us: f64) -> Row {
        Row {
            suite: "decode".into(),
            kernel: "attention_decode".into(),
            variant: variant.into(),
            shape: "B=1 H=32 KVH=8 L=32768 D=128".into(),
            dtype: "bf16".into(),
            median_us,
            p10_us: None,
            p90_us: None,
            gbps: Some(134_217_728.0 / (median_us * 1e3)),
            tflops: Some(0.5),
            intensity: Some(1.0),
            pct_of_ceiling: None,
            speedup_vs_naive: None,
            peer: peer.into(),
            ratio_vs_peer: None,
        }
    }

    #[test]
    fn fastest_peer_naive_speedup_and_percent() {
        let ceilings = Ceilings {
            bandwidth_gbps: 3016.0,
            bandwidth_method: String::new(),
            bf16_tflops: 786.0,
            bf16_method: String::new(),
        };
        let mut rows = vec![
            row("rooflab", "stale", 80.0),
            row(NAIVE, "", 400.0),
            row(PEER, "torch_sdpa_flash", 93.0),
            row(PEER, "torch_sdpa_cudnn", 71.0),
        ];
        fill_comparisons(&mut rows, &ceilings);
        assert_eq!(rows[0].peer, "torch_sdpa_cudnn");
        assert!((rows[0].ratio_vs_peer.unwrap() - 71.0 / 80.0).abs() < 1e-12);
        assert!((rows[0].speedup_vs_naive.unwrap() - 5.0).abs() < 1e-12);
        assert_eq!(rows[1].speedup_vs_naive, None);
        assert!((rows[1].ratio_vs_peer.unwrap() - 71.0 / 400.0).abs() < 1e-12);
        assert_eq!(rows[2].peer, "torch_sdpa_flash");
        assert_eq!(rows[2].ratio_vs_peer, None);
        let expected = 100.0 * rows[0].gbps.unwrap() / 3016.0;
        assert!((rows[0].pct_of_ceiling.unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn rows_without_peers_lose_stale_peer_columns() {
        let ceilings = Ceilings {
            bandwidth_gbps: 1000.0,
            bandwidth_method: String::new(),
            bf16_tflops: 100.0,
            bf16_method: String::new(),
        };
        let mut rows = vec![row("rooflab", "gone", 10.0)];
        rows[0].ratio_vs_peer = Some(2.0);
        fill_comparisons(&mut rows, &ceilings);
        assert_eq!(rows[0].peer, "");
        assert_eq!(rows[0].ratio_vs_peer, None);
    }
}

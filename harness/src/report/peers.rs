//! Merging the PyTorch peers' JSON (`peers_*.json`, written by `harness/peers/*.py`) into a run.
//!
//! A peer row measures the same work as the rooflab row with the same suite, kernel, shape and dtype, so
//! its GB/s, TFLOP/s and intensity are derived from that row's counts and the peer's time: one source of
//! truth for FLOP and byte counts (the Rust side), whatever the Python side does.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::model::{PeerFile, PeerRow, Row, RowKey, Run, PEER};

/// A peer file with the name it was read from (errors and the report header cite it).
#[derive(Debug, Clone)]
pub struct LoadedPeers {
    pub file_name: String,
    pub peers: PeerFile,
}

/// Paths of `peers*.json` in `dir`, sorted by name so the merge order never depends on the file system.
pub fn peer_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("peers") && name.ends_with(".json") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads every peer file in `dir` and checks that it measured the same GPU as `run`.
pub fn load_peers(dir: &Path, run: &Run) -> Result<Vec<LoadedPeers>> {
    let mut loaded = Vec::new();
    for path in peer_paths(dir)? {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let peers: PeerFile =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not a peer file: {e}", path.display()))?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("peers.json").to_string();
        if peers.gpu.trim() != run.gpu.name.trim() {
            bail!(
                "{} was measured on {:?} but run.json says {:?}: peers must run on the same GPU",
                path.display(),
                peers.gpu,
                run.gpu.name
            );
        }
        for (index, row) in peers.rows.iter().enumerate() {
            if !(row.median_us.is_finite() && row.median_us > 0.0) {
                bail!(
                    "{} row {index} ({} {}): median_us must be a positive number",
                    path.display(),
                    row.peer,
                    row.shape
                );
            }
        }
        loaded.push(LoadedPeers { file_name, peers });
    }
    Ok(loaded)
}

fn peer_key(row: &PeerRow) -> RowKey {
    RowKey { suite: row.suite.clone(), kernel: row.kernel.clone(), shape: row.shape.clone(), dtype: row.dtype.clone() }
}

/// Turns one peer measurement into a summary row, borrowing the work counts of a rooflab row at the same key.
fn peer_to_row(peer: &PeerRow, rows: &[Row]) -> Row {
    let key = peer_key(peer);
    let reference = rows.iter().find(|r| !r.is_peer() && r.key() == key && (r.gbps.is_some() || r.tflops.is_some()));
    let (gbps, tflops, intensity) = match reference {
        Some(ours) => {
            let scale = ours.median_us / peer.median_us;
            (ours.gbps.map(|g| g * scale), ours.tflops.map(|t| t * scale), ours.intensity)
        }
        None => {
            let gbps = peer.bytes.map(|b| b / (peer.median_us * 1e3));
            let tflops = peer.flops.map(|f| f / (peer.median_us * 1e6));
            let intensity = match (peer.flops, peer.bytes) {
                (Some(f), Some(b)) if b > 0.0 => Some(f / b),
                _ => None,
            };
            (gbps, tflops, intensity)
        }
    };
    Row {
        suite: peer.suite.clone(),
        kernel: peer.kernel.clone(),
        variant: PEER.to_string(),
        shape: peer.shape.clone(),
        dtype: peer.dtype.clone(),
        median_us: peer.median_us,
        p10_us: peer.p10_us,
        p90_us: peer.p90_us,
        gbps,
        tflops,
        intensity,
        pct_of_ceiling: None,
        speedup_vs_naive: None,
        peer: peer.peer.clone(),
        ratio_vs_peer: None,
    }
}

/// Adds the peers' rows to `rows`, replacing earlier rows of the same peer at the same key.
///
/// Merging the same files twice gives the same rows (replacements keep their order at the end), which is
/// what keeps `rooflab report` byte-for-byte reproducible. Comparison columns are filled afterwards by
/// [`super::compare::fill_comparisons`].
pub fn merge_peers(rows: Vec<Row>, peers: &[LoadedPeers]) -> Vec<Row> {
    let incoming: Vec<&PeerRow> = peers.iter().flat_map(|p| p.peers.rows.iter()).collect();
    let replaced = |row: &Row| row.is_peer() && incoming.iter().any(|p| p.peer == row.peer && peer_key(p) == row.key());
    let mut merged: Vec<Row> = rows.into_iter().filter(|r| !replaced(r)).collect();
    for peer in incoming {
        let row = peer_to_row(peer, &merged);
        // A later file measuring the same peer at the same key wins.
        merged.retain(|r| !(r.is_peer() && r.peer == row.peer && r.key() == row.key()));
        merged.push(row);
    }
    merged
}

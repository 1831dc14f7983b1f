//! The roofline report: from a run folder's raw files to report.md and SVG figures.
//!
//! A run folder `results/<device>/<date>-<commit>/` holds the raw files:
//! - `summary.csv`: one [`model::Row`] per measurement (the column contract is [`model::SUMMARY_COLUMNS`]);
//! - `run.json`: the [`model::Run`] (device, clocks, commit, date, command, measured ceilings);
//! - `peers_*.json`: [`model::PeerFile`]s written by `harness/peers/*.py` on the same GPU.
//!
//! [`regenerate`] merges the peer files into summary.csv and rebuilds report.md and the figures. It is
//! deterministic (the same inputs give the same bytes) and all-or-nothing: every output is computed in
//! memory, written to a temporary file and renamed into place only when everything succeeded.
//! [`write_results_index`] rebuilds `results/README.md` (latest run per device); [`regenerate_with_index`]
//! does both, for `rooflab report DIR`.

pub mod compare;
pub mod csv;
pub mod figures;
pub mod index;
pub mod markdown;
pub mod model;
pub mod peers;

use std::path::Path;

use anyhow::{bail, Context, Result};

pub use index::{render_results_index, write_results_index};
use model::{Row, Run};

/// File names inside a run folder.
pub const SUMMARY_FILE: &str = "summary.csv";
pub const RUN_FILE: &str = "run.json";
pub const REPORT_FILE: &str = "report.md";

/// Reads and checks `dir/run.json`.
pub fn load_run(dir: &Path) -> Result<Run> {
    if !dir.is_dir() {
        bail!("{} is not a folder: expected a rooflab run folder (results/<device>/<date>-<commit>)", dir.display());
    }
    let path = dir.join(RUN_FILE);
    if !path.is_file() {
        bail!("{} has no {RUN_FILE}: not a rooflab run folder", dir.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let run: Run = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a rooflab run.json: {e}", path.display()))?;
    run.check().map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(run)
}

/// Reads `dir/summary.csv`, rejecting files with other columns.
pub fn load_summary(dir: &Path) -> Result<Vec<Row>> {
    let path = dir.join(SUMMARY_FILE);
    if !path.is_file() {
        bail!("{} has no {SUMMARY_FILE}: not a rooflab run folder", dir.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    csv::from_csv(&text, &path.display().to_string())
}

/// Everything [`regenerate`] writes, computed without touching the folder.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub run: Run,
    /// Rows after the peer merge, with comparison columns filled.
    pub rows: Vec<Row>,
    /// (file name, content): summary.csv, report.md and the figures.
    pub files: Vec<(String, String)>,
}

/// Reads a run folder and renders its summary, report and figures in memory.
pub fn render(dir: &Path) -> Result<Rendered> {
    let run = load_run(dir)?;
    let rows = load_summary(dir)?;
    let peers = peers::load_peers(dir, &run)?;
    let merged = peers::merge_peers(rows, &peers);
    // Round to what the CSV stores before comparing, so the report matches the file a reader sees.
    let mut rows = csv::round_trip(&merged)?;
    compare::fill_comparisons(&mut rows, &run.ceilings);
    let summary = csv::to_csv(&rows)?;
    let rows = csv::from_csv(&summary, SUMMARY_FILE)?;
    let figures = figures::figures(&run, &rows)?;
    let report = markdown::render(&run, &rows, &peers, &figures);
    let mut files = vec![(SUMMARY_FILE.to_string(), summary), (REPORT_FILE.to_string(), report)];
    files.extend(figures.into_iter().map(|f| (f.file_name, f.svg)));
    Ok(Rendered { run, rows, files })
}

/// Rebuilds report.md and the SVG figures of a run folder from summary.csv, run.json and peers_*.json,
/// merging the peers' rows into summary.csv on the way.
///
/// Byte-for-byte reproducible: running it twice leaves identical files. On any error (missing folder,
/// no run.json, a summary.csv with other columns, a peer file measured on another GPU) it returns a
/// one-line error and leaves every file as it was.
pub fn regenerate(dir: &Path) -> Result<()> {
    let rendered = render(dir)?;
    write_atomically(dir, &rendered.files)?;
    // A figure whose data is gone (rows removed by hand) would otherwise linger, linked from nowhere.
    for name in figures::FIGURE_FILES {
        let written = rendered.files.iter().any(|(n, _)| n == name);
        let path = dir.join(name);
        if !written && path.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove stale {}", path.display()))?;
        }
    }
    Ok(())
}

/// [`regenerate`], then `results/README.md` when `dir` sits at `results/<device>/<run>` (what
/// `rooflab report DIR` should call, so the index follows the folders).
pub fn regenerate_with_index(dir: &Path) -> Result<()> {
    regenerate(dir)?;
    if let Some(root) = results_root_of(dir) {
        write_results_index(&root)?;
    }
    Ok(())
}

/// The `results` folder two levels above a run folder, if that is where the run lives.
pub fn results_root_of(dir: &Path) -> Option<std::path::PathBuf> {
    let absolute = std::fs::canonicalize(dir).ok()?;
    let root = absolute.parent()?.parent()?;
    (root.file_name()? == "results").then(|| root.to_path_buf())
}

/// Writes each (name, content) as `dir/name` through a temporary file renamed into place; files whose
/// content is already identical are left alone. Nothing is renamed unless every temporary file was written.
pub fn write_atomically(dir: &Path, files: &[(String, String)]) -> Result<()> {
    let mut pending = Vec::new();
    let cleanup = |pending: &[(std::path::PathBuf, std::path::PathBuf)]| {
        for (tmp, _) in pending {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (name, content) in files {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|old| old == content.as_bytes()) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.rooflab-tmp"));
        if let Err(e) = std::fs::write(&tmp, content) {
            cleanup(&pending);
            let _ = std::fs::remove_file(&tmp);
            bail!("cannot write {}: {e}", tmp.display());
        }
        pending.push((tmp, path));
    }
    for (tmp, path) in &pending {
        if let Err(e) = std::fs::rename(tmp, path) {
            cleanup(&pending);
            bail!("cannot move {} into place: {e}", path.display());
        }
    }
    Ok(())
}

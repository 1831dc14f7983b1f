//! What one benchmark run leaves on disk, as Rust types.
//!
//! - [`Row`]: one line of `summary.csv`, one measurement of one implementation at one shape.
//! - [`Run`]: `run.json`, the device, the conditions, the two measured ceilings and how the run was started.
//! - [`PeerFile`]: `peers_*.json`, what the PyTorch scripts in `harness/peers/` measured on the same GPU.
//!
//! Derived numbers (GB/s, TFLOP/s, intensity) are stored, not the raw FLOP and byte counts: the CSV is
//! the contract with the notebook and with anyone filtering results, and every comparison the report
//! makes can be recomputed from it.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The columns of `summary.csv`, in order. Changing them breaks every reader: the notebook, old runs.
pub const SUMMARY_COLUMNS: [&str; 15] = [
    "suite",
    "kernel",
    "variant",
    "shape",
    "dtype",
    "median_us",
    "p10_us",
    "p90_us",
    "gbps",
    "tflops",
    "intensity",
    "pct_of_ceiling",
    "speedup_vs_naive",
    "peer",
    "ratio_vs_peer",
];

/// `variant` of the deliberately simple baseline kernel that every rooflab kernel is compared against.
pub const NAIVE: &str = "naive";
/// `variant` of a row measured by a PyTorch peer script; its `peer` column names the implementation.
pub const PEER: &str = "peer";

/// One measurement: one implementation (`variant`) of one kernel at one shape and dtype.
///
/// Comparison columns (`pct_of_ceiling`, `speedup_vs_naive`, `peer`, `ratio_vs_peer`) are recomputed by
/// [`crate::report::compare::fill_comparisons`] whenever rows are added, so they never go stale.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Benchmark suite: attention, decode, gemv, spec or e2e.
    pub suite: String,
    /// Operation measured, the same name for rooflab's kernels, the naive baseline and the peers.
    pub kernel: String,
    /// `rooflab` (or a named rooflab version), [`NAIVE`], or [`PEER`].
    pub variant: String,
    /// Space-separated `key=value` pairs and bare flags: `B=1 H=32 KVH=8 S=4096 D=128 causal`.
    pub shape: String,
    /// Element type of the main operand: bf16, f32, int4, ...
    pub dtype: String,
    /// Median of the per-launch event times, microseconds.
    pub median_us: f64,
    /// 10th percentile of the event times (fast tail).
    pub p10_us: Option<f64>,
    /// 90th percentile of the event times (slow tail).
    pub p90_us: Option<f64>,
    /// Minimum bytes moved (each input read once, each output written once) per second, 1e9 bytes/s.
    pub gbps: Option<f64>,
    /// Useful floating point operations per second, 1e12/s.
    pub tflops: Option<f64>,
    /// FLOPs per minimum byte; compared with the ridge point to decide which ceiling applies.
    pub intensity: Option<f64>,
    /// Achieved fraction of the relevant measured ceiling, in percent.
    pub pct_of_ceiling: Option<f64>,
    /// Naive baseline time over this time (2.0 = twice as fast as naive).
    pub speedup_vs_naive: Option<f64>,
    /// For rooflab and naive rows: the fastest peer at this shape; for peer rows: the peer itself.
    pub peer: String,
    /// Peer time over this time (1.0 = as fast as the peer, 0.5 = half its speed).
    pub ratio_vs_peer: Option<f64>,
}

impl Row {
    /// True for rows measured by a PyTorch peer script.
    pub fn is_peer(&self) -> bool {
        self.variant == PEER
    }

    /// True for the naive baseline kernel.
    pub fn is_naive(&self) -> bool {
        self.variant == NAIVE
    }

    /// The implementation's display name: the variant, or the peer's name for peer rows.
    pub fn implementation(&self) -> &str {
        if self.is_peer() {
            &self.peer
        } else {
            &self.variant
        }
    }

    /// Rows with equal keys measure the same work and can be compared.
    pub fn key(&self) -> RowKey {
        RowKey {
            suite: self.suite.clone(),
            kernel: self.kernel.clone(),
            shape: self.shape.clone(),
            dtype: self.dtype.clone(),
        }
    }
}

/// The identity of a piece of work: what every implementation at this key computes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub suite: String,
    pub kernel: String,
    pub shape: String,
    pub dtype: String,
}

/// Reads values out of a shape string such as `B=1 H=32 KVH=8 S=4096 D=128 causal`.
pub struct Shape<'a>(pub &'a str);

impl<'a> Shape<'a> {
    /// The value of `key`, if the shape has `key=value`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.split_whitespace().find_map(|part| part.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    /// The numeric value of `key`, if present and numeric.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.parse::<f64>().ok())
    }

    /// The shape with the `key=value` pairs named in `keys` removed: the "family" a scaling curve follows.
    pub fn without(&self, keys: &[&str]) -> String {
        let kept: Vec<&str> = self
            .0
            .split_whitespace()
            .filter(|part| !keys.iter().any(|k| part.split_once('=').is_some_and(|(name, _)| name == *k)))
            .collect();
        kept.join(" ")
    }
}

/// The two hardware ceilings, measured in the same run on the same GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ceilings {
    /// Device-to-device copy rate, bytes read + written, 1e9 bytes/s.
    pub bandwidth_gbps: f64,
    /// How the bandwidth was measured (buffer size, method), for the report header.
    pub bandwidth_method: String,
    /// Dense bf16 tensor-core rate from a large cuBLAS GEMM, 1e12 FLOP/s.
    pub bf16_tflops: f64,
    /// How the tensor-core rate was measured (GEMM shape), for the report header.
    pub bf16_method: String,
}

/// Which ceiling limits a kernel, decided by its intensity against the ridge point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Memory,
    Compute,
}

impl Bound {
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
        }
    }
}

impl Ceilings {
    /// FLOPs per byte where the bandwidth roof meets the compute roof.
    pub fn ridge(&self) -> f64 {
        self.bf16_tflops * 1e12 / (self.bandwidth_gbps * 1e9)
    }

    /// Memory-bound below the ridge point, compute-bound at or above it.
    pub fn bound(&self, intensity: f64) -> Bound {
        if intensity < self.ridge() {
            Bound::Memory
        } else {
            Bound::Compute
        }
    }

    /// Percent of the ceiling that applies at this intensity; None without the needed numbers.
    pub fn percent(&self, gbps: Option<f64>, tflops: Option<f64>, intensity: Option<f64>) -> Option<f64> {
        match self.bound(intensity?) {
            Bound::Memory => gbps.map(|g| 100.0 * g / self.bandwidth_gbps),
            Bound::Compute => tflops.map(|t| 100.0 * t / self.bf16_tflops),
        }
    }

    fn check(&self) -> Result<()> {
        for (what, value) in [("bandwidth_gbps", self.bandwidth_gbps), ("bf16_tflops", self.bf16_tflops)] {
            if !(value.is_finite() && value > 0.0) {
                bail!("ceilings.{what} is {value}: a measured ceiling must be a positive number");
            }
        }
        Ok(())
    }
}

/// The GPU a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// As the driver names it (cuDeviceGetName), e.g. "NVIDIA H100 80GB HBM3"; peers must report the same.
    pub name: String,
    pub sm_count: u32,
    pub memory_bytes: u64,
    /// e.g. "9.0".
    pub compute_capability: String,
    /// Driver version as nvidia-smi or cuDriverGetVersion reports it.
    pub driver: String,
}

/// Clocks and temperature at one moment; any may be unknown (no nvidia-smi on the machine).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub sm_clock_mhz: Option<f64>,
    pub memory_clock_mhz: Option<f64>,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
}

/// `run.json`: everything needed to read a run's numbers later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Version of the rooflab crates that measured.
    pub rooflab_version: String,
    /// Git commit of the measured tree (short hash, "-dirty" when it had changes).
    pub commit: String,
    /// Day of the measurement, YYYY-MM-DD; reports use this date, never the clock at report time.
    pub date: String,
    /// The exact command line.
    pub command: String,
    /// The `ROOFLAB_*` variables set in the run's environment (`NAME=VALUE`, sorted): some change what is
    /// measured (`ROOFLAB_PTX_DIR` swaps kernels, `ROOFLAB_PREFILL_FLASH` picks the prefill version).
    #[serde(default)]
    pub environment: Vec<String>,
    /// Suites that ran, in order.
    pub suites: Vec<String>,
    /// Whether `--quick` cut the shape lists.
    pub quick: bool,
    pub gpu: Gpu,
    /// The measuring machine's OS kernel release (`uname -r`). It tells the sandbox apart: gVisor reports
    /// 4.4.0 and intercepts every ioctl to the NVIDIA driver, so launch-bound numbers (end-to-end decode)
    /// may differ from a Firecracker machine's on the same GPU. Absent where it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_kernel: Option<String>,
    pub before: Conditions,
    pub after: Conditions,
    pub ceilings: Ceilings,
    /// Implementations that failed their check against the CPU reference, or could not run, and so were
    /// not timed (their rows are missing from summary.csv). Absent from a run where everything passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    /// Later calls that measured more into this run (`rooflab bench --into`), in order. Every row is judged
    /// against `ceilings`, the first call's; each later call's own measurement of them is kept here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub appended: Vec<Appended>,
}

/// One `rooflab bench --into` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appended {
    pub command: String,
    /// Day of the call, YYYY-MM-DD.
    pub date: String,
    /// The suites it was asked for.
    pub suites: Vec<String>,
    /// The ceilings it measured (within `bench::append::CEILING_TOLERANCE` of the run's).
    pub ceilings: Ceilings,
    pub before: Conditions,
    /// The machine's OS kernel release, as [`Run::host_kernel`]: a later call may get another machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_kernel: Option<String>,
}

/// One implementation (or a whole case, variant `*`) that a run could not measure, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub suite: String,
    pub kernel: String,
    pub dtype: String,
    /// The implementation (`rooflab`, `rooflab-wgmma`, `naive`, ...), or `*` for every one of the case.
    pub variant: String,
    /// `key=value` pairs, as in summary.csv.
    pub shape: String,
    /// The error, one line.
    pub error: String,
}

impl Run {
    /// Rejects a run.json whose fields cannot describe a real run.
    pub fn check(&self) -> Result<()> {
        if self.gpu.name.trim().is_empty() {
            bail!("run.json has an empty gpu.name");
        }
        check_date(&self.date).map_err(|e| anyhow::anyhow!("run.json: {e}"))?;
        self.ceilings.check().map_err(|e| anyhow::anyhow!("run.json: {e}"))
    }
}

/// `peers_*.json`: one PyTorch script's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerFile {
    /// torch.cuda.get_device_name(); must equal run.json's gpu.name.
    pub gpu: String,
    /// torch.__version__.
    pub torch: String,
    /// torch.version.cuda, when known.
    #[serde(default)]
    pub cuda: Option<String>,
    /// Day of the measurement, YYYY-MM-DD.
    pub date: String,
    /// Script that wrote the file, e.g. "peers_attention.py".
    pub script: String,
    pub rows: Vec<PeerRow>,
}

/// One peer measurement; extra fields the scripts add (notes, tokens/s) are ignored here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    pub suite: String,
    pub kernel: String,
    /// Implementation name, e.g. "torch_sdpa_flash", "cublas", "tinygemm_int4", "hf_transformers".
    pub peer: String,
    pub shape: String,
    pub dtype: String,
    pub median_us: f64,
    #[serde(default)]
    pub p10_us: Option<f64>,
    #[serde(default)]
    pub p90_us: Option<f64>,
    /// FLOPs and bytes, only needed when rooflab did not measure the same shape.
    #[serde(default)]
    pub flops: Option<f64>,
    #[serde(default)]
    pub bytes: Option<f64>,
}

/// Accepts exactly `YYYY-MM-DD` with a plausible month and day.
pub fn check_date(date: &str) -> Result<()> {
    let parts: Vec<&str> = date.split('-').collect();
    let ok = parts.len() == 3
        && [4, 2, 2].iter().zip(&parts).all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_digit()))
        && (1..=12).contains(&parts[1].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&parts[2].parse::<u32>().unwrap_or(0));
    if !ok {
        bail!("date {date:?} is not YYYY-MM-DD");
    }
    Ok(())
}

/// A folder-friendly name for a device: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3".
pub fn device_slug(gpu_name: &str) -> String {
    let mut slug = String::new();
    for c in gpu_name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() {
        "unknown-device".to_string()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_values_and_families() {
        let s = Shape("B=1 H=32 KVH=8 S=4096 D=128 causal");
        assert_eq!(s.get("KVH"), Some("8"));
        assert_eq!(s.number("S"), Some(4096.0));
        assert_eq!(s.get("causal"), None);
        assert_eq!(s.without(&["S"]), "B=1 H=32 KVH=8 D=128 causal");
        assert_eq!(s.without(&["B", "D"]), "H=32 KVH=8 S=4096 causal");
    }

    #[test]
    fn ridge_decides_the_ceiling() {
        let c = Ceilings {
            bandwidth_gbps: 3016.0,
            bandwidth_method: String::new(),
            bf16_tflops: 786.0,
            bf16_method: String::new(),
        };
        assert!((c.ridge() - 260.61).abs() < 0.01);
        assert_eq!(c.bound(1.0), Bound::Memory);
        assert_eq!(c.bound(2000.0), Bound::Compute);
        let pct = c.percent(Some(1508.0), Some(0.75), Some(1.0)).unwrap();
        assert!((pct - 50.0).abs() < 1e-9);
        let pct = c.percent(Some(100.0), Some(393.0), Some(2000.0)).unwrap();
        assert!((pct - 50.0).abs() < 1e-9);
        assert_eq!(c.percent(Some(1.0), Some(1.0), None), None);
    }

    #[test]
    fn dates_and_slugs() {
        assert!(check_date("2026-11-24").is_ok());
        for bad in ["2026-1-24", "26-11-24", "2026-13-01", "2026-11-24T00", "today"] {
            assert!(check_date(bad).is_err(), "{bad}");
        }
        assert_eq!(device_slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
        assert_eq!(device_slug("  NVIDIA  H200 (MIG 1g.18gb) "), "nvidia-h200-mig-1g-18gb");
        assert_eq!(device_slug("///"), "unknown-device");
    }
}

//! What a run records about itself: the day, the commit, the host's kernel, and the GPU's clocks and
//! temperature.
//!
//! All of it is read once, when the run starts or ends, and stored in run.json; reports never look at
//! the clock or the repository again, so they reproduce.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::report::model::Conditions;

/// Converts days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar whose years start on March 1st, so the leap day is the last day of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A Unix time as YYYY-MM-DD (UTC).
pub fn date_from_unix(seconds: i64) -> String {
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today's date (UTC) as YYYY-MM-DD: call it when the run starts and store it in run.json.
pub fn today_utc() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    date_from_unix(seconds)
}

/// The commit being measured: `ROOFLAB_COMMIT` if set (the GPU machine has no .git, so the bundle
/// script passes it), else `git rev-parse --short=12 HEAD` with `-dirty` for uncommitted changes,
/// else "unknown".
pub fn detect_commit() -> String {
    if let Ok(commit) = std::env::var("ROOFLAB_COMMIT") {
        let commit = commit.trim();
        if !commit.is_empty() {
            return commit.to_string();
        }
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        _ => "unknown".to_string(),
    }
}

/// The OS kernel release of this machine (`/proc/sys/kernel/osrelease`, what `uname -r` prints); None
/// where there is no such file.
pub fn host_kernel() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim();
    (!release.is_empty()).then(|| release.to_string())
}

/// The query [`query_conditions`] runs; its output is what [`parse_nvidia_smi`] reads.
pub const NVIDIA_SMI_ARGS: [&str; 4] = [
    "--query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,driver_version",
    "--format=csv,noheader,nounits",
    "-i",
    "0",
];

/// Parses one line of `nvidia-smi` output for [`NVIDIA_SMI_ARGS`]: the conditions and the driver version.
/// Fields nvidia-smi cannot read (`[N/A]`, `[Not Supported]`) become None.
pub fn parse_nvidia_smi(output: &str) -> (Conditions, Option<String>) {
    let line = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).filter(|v| v.is_finite());
    let conditions = Conditions {
        sm_clock_mhz: number(0),
        memory_clock_mhz: number(1),
        temperature_c: number(2),
        power_w: number(3),
    };
    let driver = fields.get(4).filter(|d| !d.is_empty() && !d.starts_with('[')).map(|d| d.to_string());
    (conditions, driver)
}

/// Clocks, temperature and power of GPU 0 now, plus the driver version; all None without nvidia-smi.
pub fn query_conditions() -> (Conditions, Option<String>) {
    match Command::new("nvidia-smi").args(NVIDIA_SMI_ARGS).output() {
        Ok(out) if out.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)),
        _ => (Conditions::default(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(date_from_unix(0), "1970-01-01");
        assert_eq!(date_from_unix(951_782_400), "2000-02-29");
        assert_eq!(date_from_unix(1_795_478_400), "2026-11-24");
        assert_eq!(date_from_unix(-86_400), "1969-12-31");
        assert!(crate::report::model::check_date(&today_utc()).is_ok());
    }

    #[test]
    fn nvidia_smi_lines() {
        let (c, driver) = parse_nvidia_smi("1980, 2619, 34, 71.52, 580.95.05\n");
        assert_eq!(c.sm_clock_mhz, Some(1980.0));
        assert_eq!(c.memory_clock_mhz, Some(2619.0));
        assert_eq!(c.temperature_c, Some(34.0));
        assert_eq!(c.power_w, Some(71.52));
        assert_eq!(driver.as_deref(), Some("580.95.05"));
        let (c, driver) = parse_nvidia_smi("1755, 2619, 61, [N/A], [N/A]");
        assert_eq!(c.power_w, None);
        assert_eq!(driver, None);
        assert_eq!(parse_nvidia_smi(""), (Conditions::default(), None));
    }
}

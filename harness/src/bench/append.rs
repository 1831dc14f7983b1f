//! `rooflab bench --into DIR`: more measurements into a run folder already written, on the same GPU, at
//! the same commit, in the same mode and environment. A device call too short for the whole bench
//! measures what is left in the next call, and the run stays one folder with one roofline: the ceilings
//! are measured again and must agree with the run's, whose values every row keeps using.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Case, Measurement, OUT_OF_TIME};
use crate::report::model::{Ceilings, Conditions, Failure, Row, Run};

/// How far (relative) a call's measured ceilings may be from the run's before the call is refused: the
/// GPU's state (clocks, another tenant) would then differ between the rows.
pub const CEILING_TOLERANCE: f64 = 0.05;

/// A run folder being added to.
pub struct Existing {
    pub dir: PathBuf,
    pub run: Run,
    pub rows: Vec<Row>,
}

/// The identity of a measurement: suite, kernel, dtype and shape.
fn key(suite: &str, kernel: &str, dtype: &str, shape: &str) -> (String, String, String, String) {
    (suite.to_string(), kernel.to_string(), dtype.to_string(), shape.to_string())
}

impl Existing {
    /// Reads `dir`'s run.json and summary.csv.
    pub fn load(dir: &Path) -> Result<Self> {
        let run_json = dir.join(crate::report::RUN_FILE);
        let text = std::fs::read_to_string(&run_json)
            .with_context(|| format!("--into {}: no readable run.json (not a rooflab run folder)", dir.display()))?;
        let run: Run = serde_json::from_str(&text)
            .with_context(|| format!("--into {}: run.json does not parse", dir.display()))?;
        run.check().with_context(|| format!("--into {}", dir.display()))?;
        let rows = crate::report::load_summary(dir).with_context(|| format!("--into {}", dir.display()))?;
        Ok(Existing { dir: dir.to_path_buf(), run, rows })
    }

    /// Refuses a run of another GPU, commit, mode or `ROOFLAB_*` environment: its rows would not be
    /// comparable with this call's.
    pub fn check_compatible(&self, gpu_name: &str, commit: &str, quick: bool, environment: &[String]) -> Result<()> {
        let dir = self.dir.display();
        let run = &self.run;
        if run.gpu.name != gpu_name {
            bail!("--into {dir}: measured on {:?}, this GPU is {gpu_name:?}", run.gpu.name);
        }
        if run.commit != commit {
            bail!("--into {dir}: measured at commit {}, this build is {commit}", run.commit);
        }
        if run.quick != quick {
            bail!("--into {dir}: that run was{} --quick, this call is{}", not(run.quick), not(quick));
        }
        // ROOFLAB_COMMIT only names the commit (checked above; scripts/gpu-run sets it on the device).
        let behaviour = |vars: &[String]| -> Vec<String> {
            vars.iter().filter(|v| !v.starts_with("ROOFLAB_COMMIT=")).cloned().collect()
        };
        if behaviour(&run.environment) != behaviour(environment) {
            bail!(
                "--into {dir}: that run had the environment [{}], this call has [{}]",
                run.environment.join(" "),
                environment.join(" ")
            );
        }
        Ok(())
    }

    /// Refuses when this call's ceilings are more than [`CEILING_TOLERANCE`] from the run's.
    pub fn check_ceilings(&self, measured: &Ceilings) -> Result<()> {
        let run = &self.run.ceilings;
        for (what, was, now) in [
            ("bandwidth", run.bandwidth_gbps, measured.bandwidth_gbps),
            ("bf16 tensor-core rate", run.bf16_tflops, measured.bf16_tflops),
        ] {
            if (now - was).abs() > CEILING_TOLERANCE * was {
                bail!(
                    "--into {}: the {what} ceiling is {now:.0} now but was {was:.0} in that run (more than {:.0}% \
                     apart): the GPU is not in the same state, so start a new run",
                    self.dir.display(),
                    CEILING_TOLERANCE * 100.0
                );
            }
        }
        Ok(())
    }

    /// Whether the run has rows for `case` already.
    pub fn has(&self, case: &Case) -> bool {
        let want = key(case.suite.name(), &case.kernel, &case.dtype, &case.shape());
        self.rows.iter().any(|r| key(&r.suite, &r.kernel, &r.dtype, &r.shape) == want)
    }

    /// Whether e2e model `name` is done: it has rows and none of its cases was cut by the time budget.
    pub fn has_model(&self, name: &str) -> bool {
        let shape = format!("model={name}");
        let of_model = |s: &str| s == shape || s.starts_with(&format!("{shape} "));
        let rows = self.rows.iter().any(|r| r.suite == "e2e" && of_model(&r.shape));
        let cut = self.run.failures.iter().any(|f| f.suite == "e2e" && of_model(&f.shape) && f.error == OUT_OF_TIME);
        rows && !cut
    }

    /// The run with this call's measurements added: its suites joined to the run's, the old failures of
    /// what this call took up again (the `attempted` kernel cases, and whatever it has rows or failures
    /// for) dropped for this call's outcome, `after` from now, and this call recorded in `appended` with
    /// the ceilings it measured.
    pub fn merged(
        self,
        new: Measurement,
        attempted: &[Case],
        suites: &[String],
        call: Appended,
        after: Conditions,
    ) -> (Run, Vec<Row>) {
        let Existing { mut run, mut rows, .. } = self;
        let taken_up = |f: &Failure| {
            let k = key(&f.suite, &f.kernel, &f.dtype, &f.shape);
            let whole_model = format!("{} ", f.shape);
            attempted.iter().any(|c| key(c.suite.name(), &c.kernel, &c.dtype, &c.shape()) == k)
                || new.rows.iter().any(|r| key(&r.suite, &r.kernel, &r.dtype, &r.shape) == k)
                || new.failures.iter().any(|n| key(&n.suite, &n.kernel, &n.dtype, &n.shape) == k)
                // A whole e2e model (kernel `*`, shape `model=NAME`) that now has rows.
                || (f.kernel == "*" && new.rows.iter().any(|r| r.suite == f.suite && r.shape.starts_with(&whole_model)))
        };
        run.failures.retain(|f| !taken_up(f));
        run.failures.extend(new.failures);
        rows.extend(new.rows);
        for suite in suites {
            if !run.suites.contains(suite) {
                run.suites.push(suite.clone());
            }
        }
        run.after = after;
        run.appended.push(call);
        (run, rows)
    }
}

fn not(yes: bool) -> &'static str {
    if yes {
        ""
    } else {
        " not"
    }
}

pub use crate::report::model::Appended;

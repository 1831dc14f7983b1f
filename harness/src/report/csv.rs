//! `summary.csv`: writing and reading [`Row`]s with the exact column contract.
//!
//! Every number is written with a fixed number of decimals, so reading a file and writing it again
//! gives the same bytes: `rooflab report` can rewrite summary.csv after a peer merge and stay reproducible.

use anyhow::{bail, Context, Result};

use super::model::{Row, SUMMARY_COLUMNS};

/// Decimals per numeric column: ns resolution for times, enough digits for every ratio.
const TIME_DECIMALS: usize = 3;
const GBPS_DECIMALS: usize = 1;
const TFLOPS_DECIMALS: usize = 3;
const INTENSITY_DECIMALS: usize = 3;
const PCT_DECIMALS: usize = 1;
const RATIO_DECIMALS: usize = 3;

/// Formats a number with fixed decimals; "-0.0" becomes "0.0" so the sign of a rounded zero never differs.
pub fn fixed(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.starts_with('-') && text[1..].chars().all(|c| c == '0' || c == '.') {
        text[1..].to_string()
    } else {
        text
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map(|v| fixed(v, decimals)).unwrap_or_default()
}

/// Renders rows as summary.csv text (header + one line per row, `\n` line ends).
pub fn to_csv(rows: &[Row]) -> Result<String> {
    let mut writer = ::csv::WriterBuilder::new().terminator(::csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    writer.write_record(SUMMARY_COLUMNS)?;
    for row in rows {
        if !(row.median_us.is_finite() && row.median_us > 0.0) {
            bail!(
                "{} {} {} [{}]: median_us is {}, not a positive time",
                row.suite,
                row.kernel,
                row.variant,
                row.shape,
                row.median_us
            );
        }
        writer.write_record([
            row.suite.clone(),
            row.kernel.clone(),
            row.variant.clone(),
            row.shape.clone(),
            row.dtype.clone(),
            fixed(row.median_us, TIME_DECIMALS),
            optional(row.p10_us, TIME_DECIMALS),
            optional(row.p90_us, TIME_DECIMALS),
            optional(row.gbps, GBPS_DECIMALS),
            optional(row.tflops, TFLOPS_DECIMALS),
            optional(row.intensity, INTENSITY_DECIMALS),
            optional(row.pct_of_ceiling, PCT_DECIMALS),
            optional(row.speedup_vs_naive, RATIO_DECIMALS),
            row.peer.clone(),
            optional(row.ratio_vs_peer, RATIO_DECIMALS),
        ])?;
    }
    let bytes = writer.into_inner().context("finishing summary.csv")?;
    Ok(String::from_utf8(bytes)?)
}

/// Rounds rows to what summary.csv stores, so in-memory rows equal rows read back from disk.
pub fn round_trip(rows: &[Row]) -> Result<Vec<Row>> {
    from_csv(&to_csv(rows)?, "summary.csv")
}

/// Parses summary.csv text; `origin` names the file in errors.
pub fn from_csv(text: &str, origin: &str) -> Result<Vec<Row>> {
    let mut reader = ::csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let header = reader.headers().with_context(|| format!("{origin}: cannot read the header line"))?.clone();
    if header.iter().ne(SUMMARY_COLUMNS) {
        bail!(
            "{origin} has columns [{}], not rooflab's [{}]: not a rooflab summary",
            header.iter().collect::<Vec<_>>().join(", "),
            SUMMARY_COLUMNS.join(", ")
        );
    }
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.map_err(|e| anyhow::anyhow!("{origin} line {line}: {e}"))?;
        let text = |i: usize| record.get(i).unwrap_or("").to_string();
        let number = |i: usize| -> Result<Option<f64>> {
            let field = record.get(i).unwrap_or("").trim();
            if field.is_empty() {
                return Ok(None);
            }
            match field.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => bail!("{origin} line {line}: {} is {field:?}, not a number", SUMMARY_COLUMNS[i]),
            }
        };
        let median_us = match number(5)? {
            Some(v) if v > 0.0 => v,
            _ => bail!("{origin} line {line}: median_us must be a positive number"),
        };
        rows.push(Row {
            suite: text(0),
            kernel: text(1),
            variant: text(2),
            shape: text(3),
            dtype: text(4),
            median_us,
            p10_us: number(6)?,
            p90_us: number(7)?,
            gbps: number(8)?,
            tflops: number(9)?,
            intensity: number(10)?,
            pct_of_ceiling: number(11)?,
            speedup_vs_naive: number(12)?,
            peer: text(13),
            ratio_vs_peer: number(14)?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            suite: "gemv".into(),
            kernel: "gemv".into(),
            variant: "rooflab".into(),
            shape: "M=1 N=14336 K=4096".into(),
            dtype: "bf16".into(),
            median_us: 71.23456,
            p10_us: Some(70.5),
            p90_us: None,
            gbps: Some(1650.123),
            tflops: Some(1.6512),
            intensity: Some(0.99993),
            pct_of_ceiling: Some(54.71),
            speedup_vs_naive: Some(3.25649),
            peer: "cublas".into(),
            ratio_vs_peer: Some(-0.00001),
        }
    }

    #[test]
    fn writes_fixed_decimals_and_reads_them_back_stably() {
        let text = to_csv(&[row()]).unwrap();
        assert!(text.starts_with(&(SUMMARY_COLUMNS.join(",") + "\n")));
        assert!(text.contains("71.235,70.500,,1650.1,1.651,1.000,54.7,3.256,cublas,0.000\n"), "{text}");
        let back = from_csv(&text, "t").unwrap();
        assert_eq!(to_csv(&back).unwrap(), text);
    }

    #[test]
    fn rejects_foreign_columns_and_bad_numbers() {
        let err = from_csv("a,b,c\n1,2,3\n", "x/summary.csv").unwrap_err().to_string();
        assert!(err.contains("not rooflab's") && err.contains("x/summary.csv"), "{err}");
        let mut text = to_csv(&[row()]).unwrap();
        text = text.replace("1650.1", "fast");
        let err = from_csv(&text, "s").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("gbps"), "{err}");
        let mut bad = row();
        bad.median_us = f64::NAN;
        assert!(to_csv(&[bad]).is_err());
    }
}

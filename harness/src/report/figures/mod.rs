//! SVG figures drawn with plotters (SVG backend only: text stays `<text>` elements, no font libraries).
//!
//! - roofline.svg: log-log, both measured ceilings, every measurement at its arithmetic intensity.
//! - attention.svg: prefill TFLOP/s against sequence length, with the tensor-core ceiling.
//! - decode.svg: decode-attention GB/s against context length, with the bandwidth ceiling.
//! - gemv.svg: GEMV GB/s against matrix size, with the bandwidth ceiling.
//!
//! Each figure is built from the rows alone, so `rooflab report` redraws it byte for byte.

mod draw;
mod roofline;
mod scaling;

use anyhow::Result;

use super::model::{Row, Run};

/// One SVG file of the report.
#[derive(Debug, Clone)]
pub struct Figure {
    pub file_name: String,
    /// One line saying what the figure shows; the report uses it as alt text.
    pub caption: String,
    pub svg: String,
}

/// File names of every figure the report may draw; `regenerate` removes the ones that no longer have data.
pub const FIGURE_FILES: [&str; 4] = ["roofline.svg", "attention.svg", "decode.svg", "gemv.svg"];

/// Every figure the rows support: the roofline always, a scaling plot per suite that has data.
pub fn figures(run: &Run, rows: &[Row]) -> Result<Vec<Figure>> {
    let mut out = vec![roofline::roofline(run, rows)?];
    for spec in &scaling::SCALINGS {
        if let Some(figure) = scaling::scaling(run, rows, spec)? {
            out.push(figure);
        }
    }
    Ok(out)
}

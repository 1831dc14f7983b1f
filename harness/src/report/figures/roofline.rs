//! roofline.svg: both measured ceilings on log-log axes and every measurement at its arithmetic intensity.

use anyhow::Result;

use super::draw::{distinct, log_bounds, marker_for, peer_names, render, Guide, Plot, Series, PALETTE};
use super::Figure;
use crate::report::markdown::human;
use crate::report::model::{Ceilings, Row, Run};

pub fn roofline(run: &Run, rows: &[Row]) -> Result<Figure> {
    let c: &Ceilings = &run.ceilings;
    let plotted: Vec<&Row> =
        rows.iter().filter(|r| matches!((r.intensity, r.tflops), (Some(i), Some(t)) if i > 0.0 && t > 0.0)).collect();
    let kernels = distinct(plotted.iter().map(|r| r.kernel.clone()));
    let peers = peer_names(rows);
    let mut series: Vec<Series> = Vec::new();
    for (k, kernel) in kernels.iter().enumerate() {
        let of_kernel: Vec<&Row> = plotted.iter().copied().filter(|r| &r.kernel == kernel).collect();
        for (implementation, is_peer) in
            distinct(of_kernel.iter().map(|r| (r.implementation().to_string(), r.is_peer())))
        {
            let group: Vec<&Row> = of_kernel
                .iter()
                .copied()
                .filter(|r| r.is_peer() == is_peer && r.implementation() == implementation)
                .collect();
            series.push(Series {
                label: format!("{kernel} · {implementation}"),
                color: PALETTE[k % PALETTE.len()],
                marker: marker_for(&implementation, is_peer, &peers),
                points: group.iter().map(|r| (r.intensity.unwrap_or(0.0), r.tflops.unwrap_or(0.0))).collect(),
                line: None,
            });
        }
    }
    let ridge = c.ridge();
    let xs = plotted.iter().filter_map(|r| r.intensity).chain([ridge]);
    let (x_lo, x_hi) = log_bounds(xs).unwrap_or((0.1, 1e4));
    let roof = |x: f64| (c.bandwidth_gbps * x / 1e3).min(c.bf16_tflops);
    let lowest = plotted.iter().filter_map(|r| r.tflops).fold(roof(x_lo), f64::min);
    let y_range = (10f64.powf((lowest / 2.0).log10().floor()), c.bf16_tflops * 2.5);
    let skipped = rows.iter().filter(|r| !plotted.iter().any(|p| std::ptr::eq(*p, *r))).count();
    let guides = vec![Guide {
        points: vec![(x_lo, roof(x_lo)), (ridge, roof(ridge)), (x_hi, roof(x_hi))],
        labels: vec![
            (format!("bf16 tensor cores {} TFLOP/s", human(c.bf16_tflops)), (ridge * 1.15, c.bf16_tflops * 1.3)),
            (format!("memory {} GB/s", human(c.bandwidth_gbps)), (x_lo * 1.3, roof(x_lo * 1.3) * 2.0)),
            (format!("ridge {} FLOP/B", human(ridge)), (ridge * 1.1, c.bf16_tflops * 0.6)),
        ],
        dashed: false,
    }];
    let plot = Plot {
        title: format!("Roofline of {}, measured {}", run.gpu.name, run.date),
        x_desc: "arithmetic intensity (FLOP / minimum byte)".to_string(),
        y_desc: "TFLOP/s".to_string(),
        x_log: true,
        y_log: true,
        x_ticks: Vec::new(),
        series,
        guides,
        note: (skipped > 0).then(|| format!("{skipped} rows without FLOPs are not on this plot")),
        x_range: Some((x_lo, x_hi)),
        y_range: Some(y_range),
    };
    Ok(Figure {
        file_name: "roofline.svg".to_string(),
        caption: format!(
            "Roofline: {} GB/s and {} TFLOP/s measured on {}, ridge at {} FLOP/byte",
            human(c.bandwidth_gbps),
            human(c.bf16_tflops),
            run.gpu.name,
            human(ridge)
        ),
        svg: render(&plot)?,
    })
}

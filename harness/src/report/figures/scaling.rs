//! Scaling figures: one metric against one size per suite (attention, decode, GEMV), each implementation
//! and shape family a line, with the ceiling that applies.

use anyhow::Result;

use super::draw::{distinct, marker_for, peer_names, render, Guide, Plot, Series, DASHES, PALETTE};
use super::Figure;
use crate::report::markdown::human;
use crate::report::model::{Row, Run, Shape, NAIVE};

/// What a scaling figure plots: which suite, the x value of a row, which y metric, which ceiling.
pub struct Scaling {
    suite: &'static str,
    file_name: &'static str,
    x_keys: &'static [&'static str],
    x_desc: &'static str,
    x: fn(&Shape) -> Option<f64>,
    y_desc: &'static str,
    y: fn(&Row) -> Option<f64>,
    y_what: &'static str,
    x_what: &'static str,
    x_log: bool,
}

pub fn scaling(run: &Run, rows: &[Row], spec: &Scaling) -> Result<Option<Figure>> {
    let usable: Vec<(&Row, f64, f64)> = rows
        .iter()
        .filter(|r| r.suite == spec.suite)
        .filter_map(|r| Some((r, (spec.x)(&Shape(&r.shape))?, (spec.y)(r)?)))
        .filter(|(_, x, y)| x.is_finite() && y.is_finite() && *x > 0.0)
        .collect();
    if usable.is_empty() {
        return Ok(None);
    }
    let kernels = distinct(usable.iter().map(|(r, _, _)| r.kernel.clone()));
    let peers = peer_names(rows);
    let dtypes = distinct(usable.iter().map(|(r, _, _)| r.dtype.clone()));
    let groups = distinct(usable.iter().map(|(r, _, _)| {
        (
            r.kernel.clone(),
            r.dtype.clone(),
            r.implementation().to_string(),
            r.is_peer(),
            Shape(&r.shape).without(spec.x_keys),
        )
    }));
    // Colour says which implementation, line style which shape family: rooflab's variants first, then
    // naive, then the peers by name, so rooflab keeps the first colour in every figure.
    let mut implementations = distinct(groups.iter().map(|g| (g.2.clone(), g.3)));
    implementations.sort_by_key(|(name, is_peer)| (*is_peer, name == NAIVE));
    let families = distinct(groups.iter().map(|g| (g.0.clone(), g.1.clone(), g.4.clone())));
    let mut series = Vec::new();
    for (kernel, dtype, implementation, is_peer, family) in groups {
        let mut points: Vec<(f64, f64)> = usable
            .iter()
            .filter(|(r, _, _)| {
                r.kernel == kernel
                    && r.dtype == dtype
                    && r.is_peer() == is_peer
                    && r.implementation() == implementation
                    && Shape(&r.shape).without(spec.x_keys) == family
            })
            .map(|(_, x, y)| (*x, *y))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let colour = implementations.iter().position(|i| i.0 == implementation && i.1 == is_peer).unwrap_or(0);
        let style = families.iter().position(|f| f.0 == kernel && f.1 == dtype && f.2 == family).unwrap_or(0);
        let marker = marker_for(&implementation, is_peer, &peers);
        let mut label = implementation.clone();
        if kernels.len() > 1 {
            label = format!("{label} · {kernel}");
        }
        if dtypes.len() > 1 {
            label = format!("{label} · {dtype}");
        }
        if !family.is_empty() {
            label = format!("{label} · {family}");
        }
        let line = Some(style % (DASHES.len() + 1));
        series.push((style, colour, Series { label, color: PALETTE[colour % PALETTE.len()], marker, points, line }));
    }
    // The legend lists one shape family after another.
    series.sort_by_key(|(style, colour, _)| (*style, *colour));
    let series: Vec<Series> = series.into_iter().map(|(_, _, s)| s).collect();
    let mut ticks: Vec<f64> =
        distinct(usable.iter().map(|(_, x, _)| x.to_bits())).into_iter().map(f64::from_bits).collect();
    ticks.sort_by(f64::total_cmp);
    // Too many labels overlap; keep every other one until they fit.
    while ticks.len() > 9 {
        ticks = ticks.iter().copied().step_by(2).collect();
    }
    let c = &run.ceilings;
    let (ceiling, ceiling_label) = if spec.y_desc.starts_with("TFLOP") {
        (c.bf16_tflops, format!("bf16 tensor-core ceiling {} TFLOP/s", human(c.bf16_tflops)))
    } else {
        (c.bandwidth_gbps, format!("bandwidth ceiling {} GB/s", human(c.bandwidth_gbps)))
    };
    let x_lo = ticks.first().copied().unwrap_or(1.0) / 1.25;
    let x_hi = usable.iter().map(|(_, x, _)| *x).fold(0.0, f64::max) * 1.25;
    let guides = vec![Guide {
        points: vec![(x_lo, ceiling), (x_hi, ceiling)],
        labels: vec![(ceiling_label, (x_lo * 1.05, ceiling * 0.985))],
        dashed: true,
    }];
    let plot = Plot {
        title: format!("{}: {} vs {}", kernels.join(", "), spec.y_what, spec.x_what),
        x_desc: spec.x_desc.to_string(),
        y_desc: spec.y_desc.to_string(),
        x_log: spec.x_log,
        y_log: false,
        x_ticks: if spec.x_log { ticks } else { Vec::new() },
        series,
        guides,
        note: None,
        x_range: None,
        y_range: None,
    };
    Ok(Some(Figure {
        file_name: spec.file_name.to_string(),
        caption: format!(
            "{} {} vs {}, with the peers and the measured ceiling",
            kernels.join(", "),
            spec.y_what,
            spec.x_what
        ),
        svg: render(&plot)?,
    }))
}

pub const SCALINGS: [Scaling; 3] = [
    Scaling {
        suite: "attention",
        file_name: "attention.svg",
        x_keys: &["S", "Sq", "Skv"],
        x_desc: "sequence length",
        x: |s| s.number("S").or_else(|| s.number("Skv")),
        y_desc: "TFLOP/s",
        y: |r| r.tflops,
        y_what: "TFLOP/s",
        x_what: "sequence length",
        x_log: true,
    },
    Scaling {
        suite: "decode",
        file_name: "decode.svg",
        x_keys: &["L"],
        x_desc: "context length (tokens in the KV cache)",
        x: |s| s.number("L"),
        y_desc: "GB/s",
        y: |r| r.gbps,
        y_what: "GB/s",
        x_what: "context length",
        x_log: true,
    },
    Scaling {
        suite: "gemv",
        file_name: "gemv.svg",
        x_keys: &["N", "K"],
        x_desc: "matrix size N·K (millions of weights)",
        x: |s| Some(s.number("N")? * s.number("K")? / 1e6),
        y_desc: "GB/s",
        y: |r| r.gbps,
        y_what: "GB/s",
        x_what: "matrix size",
        x_log: true,
    },
];

//! The drawing engine of the figures: a [`Plot`] (series, ceiling lines, axes) rendered to SVG text.
//!
//! SVG backend only: text stays `<text>` elements, so no font library is needed, and the output depends on
//! nothing but the plot, which keeps the figures reproducible byte for byte.

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::markdown::human;
use crate::report::model::Row;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 640;
/// Pixels of the chart; the rest of the width holds the legend, so it never hides a point.
const PLOT_WIDTH: u32 = 760;
const LEGEND_ROWS: usize = 28;
const FONT: &str = "sans-serif";

/// Tableau's ten colours: distinct on screen and in print.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Colour of the ceiling lines and their labels.
pub const ROOF: RGBColor = RGBColor(40, 40, 40);

/// How a point is drawn: rooflab filled circles, naive crosses, each peer its own triangle or square.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Marker {
    Circle,
    Cross,
    Triangle,
    Square,
    HollowTriangle,
    HollowSquare,
}

/// (dash, gap) in pixels of line styles 1, 2, 3; style 0 is solid. Scaling plots give each shape family one.
pub const DASHES: [(u32, u32); 3] = [(9, 5), (3, 4), (16, 5)];

/// Peers' markers, one per peer name in alphabetical order (repeating after four).
const PEER_MARKERS: [Marker; 4] = [Marker::Triangle, Marker::Square, Marker::HollowTriangle, Marker::HollowSquare];

/// The marker of an implementation; `peer_names` fixes each peer's marker across figures.
pub fn marker_for(implementation: &str, is_peer: bool, peer_names: &[String]) -> Marker {
    if is_peer {
        let index = peer_names.iter().position(|p| p == implementation).unwrap_or(0);
        PEER_MARKERS[index % PEER_MARKERS.len()]
    } else if implementation == crate::report::model::NAIVE {
        Marker::Cross
    } else {
        Marker::Circle
    }
}

/// Every peer name in the rows, sorted, so a peer keeps its marker in every figure.
pub fn peer_names(rows: &[Row]) -> Vec<String> {
    let mut names: Vec<String> = rows.iter().filter(|r| r.is_peer()).map(|r| r.peer.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// The drawable element for a marker at a point (data coordinates in a chart, pixels in the legend).
fn marker_element<'b, DB: DrawingBackend + 'b, C: Clone + 'b>(
    at: C,
    marker: Marker,
    color: RGBColor,
) -> DynElement<'b, DB, C> {
    let anchor = EmptyElement::at(at);
    let square = [(-4, -4), (4, 4)];
    match marker {
        Marker::Circle => (anchor + Circle::new((0, 0), 4, color.filled())).into_dyn(),
        Marker::Cross => (anchor + Cross::new((0, 0), 4, color.stroke_width(2))).into_dyn(),
        Marker::Triangle => (anchor + TriangleMarker::new((0, 0), 5, color.filled())).into_dyn(),
        Marker::Square => (anchor + Rectangle::new(square, color.filled())).into_dyn(),
        Marker::HollowTriangle => (anchor + TriangleMarker::new((0, 0), 5, color.stroke_width(2))).into_dyn(),
        Marker::HollowSquare => (anchor + Rectangle::new(square, color.stroke_width(2))).into_dyn(),
    }
}

/// One implementation (at one shape family): a colour, a marker, its points, optionally joined.
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub marker: Marker,
    pub points: Vec<(f64, f64)>,
    /// Join the points with a line of this style: 0 solid, then dashed patterns (see [`DASHES`]).
    pub line: Option<usize>,
}

/// A ceiling drawn as a dark line with its value written on it.
pub struct Guide {
    pub points: Vec<(f64, f64)>,
    /// Text and where it starts, in data coordinates.
    pub labels: Vec<(String, (f64, f64))>,
    pub dashed: bool,
}

/// Everything one figure shows.
pub struct Plot {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub x_log: bool,
    pub y_log: bool,
    /// Tick positions for the x axis (the measured sizes); empty for the default ticks.
    pub x_ticks: Vec<f64>,
    pub series: Vec<Series>,
    pub guides: Vec<Guide>,
    pub note: Option<String>,
    /// Axis ranges when the figure fixes them (the roofline's lines must span the whole plot).
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure failed: {e}")
}

/// Tick text: integers stay integers, large values get k/M, small ones a few decimals.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".to_string()
    } else if a >= 1e6 && (v / 1e6).fract().abs() < 1e-9 {
        format!("{}M", v / 1e6)
    } else if a >= 1e4 && (v / 1e3).fract().abs() < 1e-9 {
        format!("{}k", v / 1e3)
    } else if a >= 1.0 && v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        human(v)
    } else {
        // 0.1, 0.25, 0.001: no trailing zeros on small ticks.
        let text = format!("{v:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Decade-aligned bounds around the positive values, with room on both sides; None without any.
pub fn log_bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return None;
    }
    // At least a third of a decade of room on each side, so no point sits on the frame.
    let lo = 10f64.powf((lo / 2.0).log10().floor());
    let mut hi = 10f64.powf((hi * 2.0).log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    Some((lo, hi))
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, plot: &Plot) -> Result<()> {
    let text = (FONT, 13).into_font().color(&BLACK);
    let mut y = 50;
    let shown = plot.series.len().min(LEGEND_ROWS);
    for s in &plot.series[..shown] {
        match s.line {
            Some(0) => area.draw(&PathElement::new(vec![(4, y), (36, y)], s.color.stroke_width(2))),
            Some(style) => {
                let (dash, gap) = DASHES[(style - 1) % DASHES.len()];
                let sample = vec![(4, y), (36, y)];
                area.draw(&plotters::element::DashedPathElement::new(sample, dash, gap, s.color.stroke_width(2)))
            }
            None => Ok(()),
        }
        .map_err(plot_error)?;
        area.draw(&marker_element((20, y), s.marker, s.color)).map_err(plot_error)?;
        area.draw(&Text::new(s.label.clone(), (40, y - 7), text.clone())).map_err(plot_error)?;
        y += 20;
    }
    if plot.series.len() > shown {
        let more = format!("… and {} more series", plot.series.len() - shown);
        area.draw(&Text::new(more, (40, y - 7), text.clone())).map_err(plot_error)?;
        y += 20;
    }
    if let Some(note) = &plot.note {
        area.draw(&Text::new(note.clone(), (8, y + 10), (FONT, 12).into_font().color(&ROOF))).map_err(plot_error)?;
    }
    Ok(())
}

fn draw_chart<DB, X, Y>(area: &DrawingArea<DB, Shift>, plot: &Plot, x_spec: X, y_spec: Y) -> Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&plot.title, (FONT, 18))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_spec, y_spec)
        .map_err(plot_error)?;
    let format_tick = |v: &f64| tick(*v);
    chart
        .configure_mesh()
        .x_desc(plot.x_desc.as_str())
        .y_desc(plot.y_desc.as_str())
        .x_label_formatter(&format_tick)
        .y_label_formatter(&format_tick)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .max_light_lines(4)
        .draw()
        .map_err(plot_error)?;
    for guide in &plot.guides {
        if guide.dashed {
            chart
                .draw_series(DashedLineSeries::new(guide.points.clone(), 8, 5, ROOF.stroke_width(2)))
                .map_err(plot_error)?;
        } else {
            chart.draw_series(LineSeries::new(guide.points.clone(), ROOF.stroke_width(2))).map_err(plot_error)?;
        }
        let style = (FONT, 13).into_font().color(&ROOF);
        chart
            .draw_series(guide.labels.iter().map(|(text, at)| Text::new(text.clone(), *at, style.clone())))
            .map_err(plot_error)?;
    }
    for s in &plot.series {
        match (s.line, s.points.len() > 1) {
            (Some(0), true) => {
                chart.draw_series(LineSeries::new(s.points.clone(), s.color.stroke_width(2))).map_err(plot_error)?;
            }
            (Some(style), true) => {
                let (dash, gap) = DASHES[(style - 1) % DASHES.len()];
                let line = DashedLineSeries::new(s.points.clone(), dash, gap, s.color.stroke_width(2));
                chart.draw_series(line).map_err(plot_error)?;
            }
            _ => {}
        }
        // One arm per marker: chart series need one concrete element type.
        let at = |p: &(f64, f64)| EmptyElement::at(*p);
        let (fill, line) = (s.color.filled(), s.color.stroke_width(2));
        let square = [(-4, -4), (4, 4)];
        match s.marker {
            Marker::Circle => chart.draw_series(s.points.iter().map(|p| at(p) + Circle::new((0, 0), 4, fill))),
            Marker::Cross => chart.draw_series(s.points.iter().map(|p| at(p) + Cross::new((0, 0), 4, line))),
            Marker::Triangle => {
                chart.draw_series(s.points.iter().map(|p| at(p) + TriangleMarker::new((0, 0), 5, fill)))
            }
            Marker::Square => chart.draw_series(s.points.iter().map(|p| at(p) + Rectangle::new(square, fill))),
            Marker::HollowTriangle => {
                chart.draw_series(s.points.iter().map(|p| at(p) + TriangleMarker::new((0, 0), 5, line)))
            }
            Marker::HollowSquare => chart.draw_series(s.points.iter().map(|p| at(p) + Rectangle::new(square, line))),
        }
        .map_err(plot_error)?;
    }
    Ok(())
}

/// Draws a plot: the chart on the left, the legend (and a note) on the right; returns the SVG text.
pub fn render(plot: &Plot) -> Result<String> {
    let all_x = || plot.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(plot.x_ticks.iter().copied());
    let all_y = || {
        plot.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(plot.guides.iter().flat_map(|g| g.points.iter().map(|p| p.1)))
    };
    let (x_lo, x_hi) = if plot.x_log {
        log_bounds(all_x().chain(plot.guides.iter().flat_map(|g| g.points.iter().map(|p| p.0)))).unwrap_or((1.0, 10.0))
    } else {
        let hi = all_x().fold(0.0f64, f64::max);
        (0.0, if hi > 0.0 { hi * 1.05 } else { 1.0 })
    };
    // Scaling plots pad the measured sizes a little so the end points are not on the frame.
    let (x_lo, x_hi) = if plot.x_log && !plot.x_ticks.is_empty() {
        let lo = plot.x_ticks.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = plot.x_ticks.iter().copied().fold(0.0, f64::max);
        (lo / 1.25, hi * 1.25)
    } else {
        (x_lo, x_hi)
    };
    let (x_lo, x_hi) = plot.x_range.unwrap_or((x_lo, x_hi));
    let (y_lo, y_hi) = if let Some(range) = plot.y_range {
        range
    } else if plot.y_log {
        log_bounds(all_y()).unwrap_or((1.0, 10.0))
    } else {
        let hi = all_y().fold(0.0f64, f64::max);
        (0.0, if hi > 0.0 { hi * 1.08 } else { 1.0 })
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (chart_area, legend_area) = root.split_horizontally(PLOT_WIDTH);
        let ticks = plot.x_ticks.clone();
        match (plot.x_log, plot.y_log, ticks.is_empty()) {
            (true, true, true) => draw_chart(&chart_area, plot, (x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())?,
            (true, true, false) => draw_chart(
                &chart_area,
                plot,
                (x_lo..x_hi).log_scale().with_key_points(ticks),
                (y_lo..y_hi).log_scale(),
            )?,
            (true, false, true) => draw_chart(&chart_area, plot, (x_lo..x_hi).log_scale(), y_lo..y_hi)?,
            (true, false, false) => {
                draw_chart(&chart_area, plot, (x_lo..x_hi).log_scale().with_key_points(ticks), y_lo..y_hi)?
            }
            (false, true, _) => draw_chart(&chart_area, plot, x_lo..x_hi, (y_lo..y_hi).log_scale())?,
            (false, false, _) => draw_chart(&chart_area, plot, x_lo..x_hi, y_lo..y_hi)?,
        }
        draw_legend(&legend_area, plot)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Values in first-appearance order.
pub fn distinct<T: PartialEq + Clone>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

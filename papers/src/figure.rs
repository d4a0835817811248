//! The paper's figures: grouped bar charts and line charts, drawn as SVG with `plotters`.
//!
//! A figure is data ([`Bars`] or [`Lines`]) built from results by [`crate::content`]; drawing
//! it is a pure function of that data, so the same results always give the same file.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// Width and height of every figure, in SVG pixels.
const SIZE: (u32, u32) = (760, 380);

/// The series colours, in order (colour-blind safe, after Okabe and Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A grouped bar chart: one group per category, one bar per series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bars {
    /// The y axis's label, with its unit.
    pub y_label: String,
    /// The groups along the x axis.
    pub categories: Vec<String>,
    /// `(name, one value per category)`; `None` leaves a gap.
    pub series: Vec<(String, Vec<Option<f64>>)>,
    /// A horizontal reference line (e.g. 1.0 for ratios), if any.
    pub reference: Option<f64>,
    /// A logarithmic y axis.
    pub log_y: bool,
}

/// A line chart with points.
#[derive(Debug, Clone, PartialEq)]
pub struct Lines {
    /// The x axis's label, with its unit.
    pub x_label: String,
    /// The y axis's label, with its unit.
    pub y_label: String,
    /// A logarithmic x axis.
    pub log_x: bool,
    /// A logarithmic y axis.
    pub log_y: bool,
    /// `(name, points)`.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Vertical markers at `x`, labelled (e.g. the transitions of a run).
    pub markers: Vec<(f64, String)>,
    /// Draw only points, no connecting lines (e.g. a throughput timeline is drawn as lines;
    /// scattered samples as points).
    pub points_only: bool,
}

/// A figure of the paper.
#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    /// A grouped bar chart.
    Bars(Bars),
    /// A line chart.
    Lines(Lines),
}

/// Draws `chart` with `title` into the SVG file `path`.
pub fn draw(chart: &Chart, title: &str, path: &Path) -> Result<()> {
    let result = match chart {
        Chart::Bars(b) => draw_bars(b, title, path),
        Chart::Lines(l) => draw_lines(l, title, path),
    };
    result.map_err(|e| Error::Figure {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn finite(values: impl Iterator<Item = f64>) -> Vec<f64> {
    values.filter(|v| v.is_finite()).collect()
}

/// `(low, high)` of `values` with a margin, never empty; for a log axis only positive values
/// count.
fn span(values: &[f64], log: bool, include: Option<f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| !log || *x > 0.0)
        .collect();
    v.extend(include.filter(|x| !log || *x > 0.0));
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        // Headroom for the legend in the upper left corner.
        (lo / 1.5, hi * 4.0)
    } else {
        let lo = lo.min(0.0);
        let hi = if hi <= lo { lo + 1.0 } else { hi };
        (
            lo - (hi - lo) * 0.02 * f64::from(u8::from(lo < 0.0)),
            hi * 1.25,
        )
    }
}

/// An axis label: no trailing `.0`, thousands without decimals.
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || (v.fract() == 0.0) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn draw_bars(b: &Bars, title: &str, path: &Path) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let values = finite(
        b.series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied()),
    );
    let (lo, hi) = span(&values, b.log_y, b.reference);
    let n = b.categories.len().max(1);
    // Category i is centred on x = i; its bars share [i - 0.4, i + 0.4].
    let x_range = -0.5..n as f64 - 0.5;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64);
    let categories = b.categories.clone();
    let label = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            categories.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let groups = b.series.len().max(1);
    let width = 0.8 / groups as f64;
    let rect = |i: usize, j: usize, y0: f64, y1: f64, c: RGBColor| {
        let left = i as f64 - 0.4 + j as f64 * width;
        Rectangle::new([(left, y1), (left + width * 0.92, y0)], c.filled())
    };
    macro_rules! plot {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&label)
                .x_label_style(("sans-serif", 11))
                .y_label_formatter(&tick)
                .y_desc(b.y_label.as_str())
                .draw()?;
            for (j, (name, vals)) in b.series.iter().enumerate() {
                let c = colour(j);
                let base: f64 = $base;
                chart
                    .draw_series(vals.iter().enumerate().filter_map(|(i, v)| {
                        let v = v.filter(|v| v.is_finite() && (!b.log_y || *v > 0.0))?;
                        Some(rect(i, j, base.min(v), v.max(base), c))
                    }))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled())
                    });
            }
            if let Some(r) = b.reference {
                chart.draw_series(LineSeries::new(
                    [(-0.5, r), (n as f64 - 0.5, r)],
                    BLACK.stroke_width(1),
                ))?;
            }
            legend(&mut chart)?;
        }};
    }
    if b.log_y {
        plot!(
            builder.build_cartesian_2d(x_range, (lo..hi).log_scale())?,
            lo
        );
    } else {
        plot!(builder.build_cartesian_2d(x_range, lo..hi)?, 0.0f64.max(lo));
    }
    root.present()?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

fn draw_lines(l: &Lines, title: &str, path: &Path) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = finite(l.series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)));
    let ys = finite(l.series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)));
    let (x0, x1) = span(&xs, l.log_x, None);
    let (x0, x1) = if l.log_x {
        (x0, x1 / 4.0 * 1.5)
    } else {
        let lo = xs.iter().copied().fold(0.0, f64::min);
        let hi = xs.iter().copied().fold(lo + 1.0, f64::max);
        (lo, hi + (hi - lo) * 0.02)
    };
    let (y0, y1) = span(&ys, l.log_y, None);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64);
    macro_rules! plot {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(l.x_label.as_str())
                .y_desc(l.y_label.as_str())
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .draw()?;
            for (j, (name, points)) in l.series.iter().enumerate() {
                let c = colour(j);
                let pts: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|(x, y)| {
                        x.is_finite()
                            && y.is_finite()
                            && (!l.log_x || *x > 0.0)
                            && (!l.log_y || *y > 0.0)
                    })
                    .collect();
                if l.points_only {
                    chart
                        .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))?
                        .label(name.as_str())
                        .legend(move |(x, y)| Circle::new((x + 5, y), 3, c.filled()));
                } else {
                    chart
                        .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                        .label(name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new([(x, y), (x + 14, y)], c.stroke_width(2))
                        });
                    if pts.len() <= 40 {
                        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
                    }
                }
            }
            for (x, text) in &l.markers {
                chart.draw_series(DashedLineSeries::new(
                    [(*x, y0), (*x, y1)],
                    4,
                    3,
                    RED.stroke_width(1),
                ))?;
                chart.draw_series([Text::new(
                    text.clone(),
                    (*x, y1),
                    ("sans-serif", 12).into_font().color(&RED),
                )])?;
            }
            legend(&mut chart)?;
        }};
    }
    match (l.log_x, l.log_y) {
        (false, false) => plot!(builder.build_cartesian_2d(x0..x1, y0..y1)?),
        (true, false) => plot!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?),
        (false, true) => plot!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?),
        (true, true) => {
            plot!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?)
        }
    }
    root.present()?;
    Ok(())
}

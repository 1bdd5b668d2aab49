//! Charts drawn with plotters, each as PNG and SVG. Text uses the embedded DejaVu Sans, so
//! drawing needs no system fonts.

use std::{path::Path, sync::Once};

use plotters::{
    coord::{Shift, types::RangedCoordf64},
    prelude::*,
    style::{FontStyle, register_font},
};

use super::summary::{Summary, TimelinePoint};

/// The charts a run writes, without extension; each exists as `.png` and `.svg`.
pub const CHART_FILES: [&str; 4] = [
    "latency_over_time",
    "throughput_over_time",
    "percentile_spectrum",
    "throughput_per_target",
];
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 500;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
pub(crate) const OUTCOME_COLORS: [RGBColor; 3] = [
    RGBColor(46, 139, 87),
    RGBColor(230, 145, 56),
    RGBColor(204, 51, 51),
];
pub(crate) const LINE_COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

pub(crate) fn register() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the embedded DejaVu Sans does not parse; loadgen/assets is damaged");
        }
    });
}

type DrawResult = anyhow::Result<()>;

pub(crate) fn failed<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {err}")
}

/// Draws every chart into `dir` as PNG and SVG.
pub fn draw_all(dir: &Path, summary: &Summary, spectrum: &[(f64, f64)]) -> DrawResult {
    register();
    macro_rules! both {
        ($name:expr, $draw:expr) => {{
            let png = dir.join(format!("{}.png", $name));
            let root = BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area();
            $draw(&root)?;
            root.present().map_err(failed)?;
            let svg = dir.join(format!("{}.svg", $name));
            let root = SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area();
            $draw(&root)?;
            root.present().map_err(failed)?;
        }};
    }
    both!(CHART_FILES[0], |root| latency_over_time(root, summary));
    both!(CHART_FILES[1], |root| throughput_over_time(root, summary));
    both!(CHART_FILES[2], |root| percentile_spectrum(root, spectrum));
    both!(CHART_FILES[3], |root| throughput_per_target(root, summary));
    Ok(())
}

type TimeChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame every over-time chart shares: caption, time on x up to the run's end, `y_desc`
/// on y from 0 to `y_max` with headroom.
fn time_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    summary: &Summary,
    caption: &str,
    y_desc: &str,
    y_max: f64,
) -> anyhow::Result<TimeChart<'a, DB>> {
    root.fill(&WHITE).map_err(failed)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_range(summary), 0.0..y_max * 1.1)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .draw()
        .map_err(failed)?;
    Ok(chart)
}

/// Shades each fault of a chaos run across the chart's height, over the series, and names it
/// at the top.
fn draw_faults<'a, DB: DrawingBackend + 'a>(
    chart: &mut TimeChart<'a, DB>,
    summary: &Summary,
    y_top: f64,
) -> DrawResult {
    let shade = RGBColor(120, 120, 120);
    for fault in &summary.faults {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(fault.start_s, 0.0), (fault.end_s, y_top)],
                shade.mix(0.15).filled(),
            )))
            .map_err(failed)?;
        chart
            .draw_series(std::iter::once(Text::new(
                fault.fault.clone(),
                (fault.start_s, y_top),
                ("sans-serif", 14).into_font().color(&BLACK),
            )))
            .map_err(failed)?;
    }
    Ok(())
}

/// The legend box every over-time chart draws.
fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut TimeChart<'a, DB>) -> DrawResult {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    Ok(())
}

/// A line series' key in the legend.
pub(crate) fn line_key(color: RGBColor, x: i32, y: i32) -> PathElement<(i32, i32)> {
    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

fn x_range(summary: &Summary) -> f64 {
    summary
        .timeline
        .last()
        .map_or(1.0, |point| point.t_s)
        .max(summary.interval_s)
}

fn latency_over_time<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    summary: &Summary,
) -> DrawResult {
    let max = summary
        .timeline
        .iter()
        .map(|p| p.p99_ms)
        .fold(0.0, f64::max)
        .max(0.001);
    let title = "Latency over time (from intended send time)";
    let mut chart = time_chart(root, summary, title, "latency (ms)", max)?;
    type Percentile = fn(&TimelinePoint) -> f64;
    let series: [(&str, Percentile); 3] = [
        ("p50", |p| p.p50_ms),
        ("p95", |p| p.p95_ms),
        ("p99", |p| p.p99_ms),
    ];
    for (index, (name, value)) in series.into_iter().enumerate() {
        let color = LINE_COLORS[index];
        chart
            .draw_series(LineSeries::new(
                summary.timeline.iter().map(|p| (p.t_s, value(p))),
                color.stroke_width(2),
            ))
            .map_err(failed)?
            .label(name)
            .legend(move |(x, y)| line_key(color, x, y));
    }
    draw_faults(&mut chart, summary, max * 1.1)?;
    draw_legend(&mut chart)
}

fn throughput_over_time<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    summary: &Summary,
) -> DrawResult {
    let per_second = 1.0 / summary.interval_s;
    let stacked: Vec<(f64, [f64; 3])> = summary
        .timeline
        .iter()
        .map(|p| {
            let allowed = p.allowed as f64 * per_second;
            let denied = allowed + p.denied as f64 * per_second;
            (
                p.t_s,
                [allowed, denied, denied + p.errors as f64 * per_second],
            )
        })
        .collect();
    let max = stacked
        .iter()
        .map(|(_, v)| v[2])
        .fold(0.0, f64::max)
        .max(1.0);
    let mut chart = time_chart(
        root,
        summary,
        "Throughput by outcome (stacked)",
        "requests / s",
        max,
    )?;
    // Drawn top layer first so each lower band paints over the one above it.
    for (layer, name) in [(2, "errors"), (1, "denied"), (0, "allowed")] {
        let color = OUTCOME_COLORS[layer];
        chart
            .draw_series(
                AreaSeries::new(
                    stacked.iter().map(|(t, v)| (*t, v[layer])),
                    0.0,
                    color.mix(0.85),
                )
                .border_style(color),
            )
            .map_err(failed)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    draw_faults(&mut chart, summary, max * 1.1)?;
    draw_legend(&mut chart)
}

fn percentile_spectrum<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spectrum: &[(f64, f64)],
) -> DrawResult {
    root.fill(&WHITE).map_err(failed)?;
    // x is log10(1 / (1 - percentile)): 0 = p0, 1 = p90, 2 = p99, 3 = p99.9, ...
    let points: Vec<(f64, f64)> = spectrum
        .iter()
        .filter(|(p, _)| *p < 1.0)
        .map(|(p, value)| ((1.0 / (1.0 - p)).log10(), *value))
        .collect();
    let max_x = points.iter().map(|(x, _)| *x).fold(1.0, f64::max).ceil();
    let max_y = points
        .iter()
        .map(|(_, y)| *y)
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption("Latency by percentile (log scale)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&|x| {
            let nines = x.round() as i32;
            if nines == 0 {
                "0%".into()
            } else {
                format!("{}%", 100.0 - 100.0 / 10f64.powi(nines))
            }
        })
        .draw()
        .map_err(failed)?;
    chart
        .draw_series(LineSeries::new(points, LINE_COLORS[0].stroke_width(2)))
        .map_err(failed)?;
    Ok(())
}

fn throughput_per_target<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    summary: &Summary,
) -> DrawResult {
    let per_second = 1.0 / summary.interval_s;
    let max = summary
        .timeline
        .iter()
        .flat_map(|p| p.per_target.iter().map(|&n| n as f64 * per_second))
        .fold(0.0, f64::max)
        .max(1.0);
    let mut chart = time_chart(root, summary, "Throughput per target", "requests / s", max)?;
    for (index, target) in summary.targets.iter().enumerate() {
        let color = LINE_COLORS[index % LINE_COLORS.len()];
        let points = summary.timeline.iter().map(|p| {
            (
                p.t_s,
                p.per_target.get(index).copied().unwrap_or(0) as f64 * per_second,
            )
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(failed)?
            .label(target.url.clone())
            .legend(move |(x, y)| line_key(color, x, y));
    }
    draw_legend(&mut chart)
}

//! `loadgen adaptive`: what adaptive limits do for a backend, shown side by side. The same
//! load, ramping to a multiple of the backend's capacity and held there, runs twice through a
//! [`super`] backend behind a limiter started in-process: once under a plain limit too
//! generous to bind, once with that limit adaptive. The report shows, per run and over time,
//! the factor, the backend's latency and what became of the requests, and the latency while
//! the overload was held.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use plotters::{coord::Shift, prelude::*};
use serde::Serialize;

use super::{BackendOptions, record::Point};
use crate::{
    engine::{self, LoadModel, RunConfig},
    report::{
        self,
        charts::{LINE_COLORS, OUTCOME_COLORS, failed, line_key, register},
        summary::Machine,
    },
    schedule::{Schedule, Stage},
    session::{self, SessionOptions},
    wire::Endpoint,
};

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentOptions {
    /// The backend's servers and each request's work: capacity = servers / service time.
    pub servers: usize,
    pub service_time: Duration,
    /// A request waiting in the backend's line longer than this fails.
    pub timeout: Duration,
    /// The adaptive rule's target: p90 of the backend's latency.
    pub target_latency: Duration,
    /// The peak load as a multiple of the backend's capacity.
    pub overload: f64,
    /// Ramp from nothing to the peak over this, then hold the peak this long.
    pub ramp: Duration,
    pub hold: Duration,
    /// Client keys the load spreads over (uniformly).
    pub keys: usize,
    /// Series interval.
    pub interval: Duration,
    #[serde(skip)]
    pub out_dir: PathBuf,
    pub command: String,
}

/// One of the two runs, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    pub adaptive: bool,
    /// The backend's served latency while the overload was held.
    pub hold_p50_ms: f64,
    pub hold_p99_ms: f64,
    pub hold_served: usize,
    /// Requests a second while the overload was held, by fate.
    pub hold_rates: Vec<(String, f64)>,
    pub series: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentSummary {
    pub options: ExperimentOptions,
    pub capacity_rps: f64,
    pub commit: String,
    pub machine: Machine,
    pub arms: Vec<Arm>,
}

pub const CHART_FILE: &str = "adaptive";

/// How the adaptive arm's factor moves (besides its target), as written in its rule: a short
/// window so it reacts within a fraction of a second; a gentle cut and a small step up, so it
/// overshoots the backend's capacity by little.
const AIMD: &str =
    "window = \"100ms\"\ndecrease = 0.85\nincrease = 0.005\nfloor = 0.02\nmin_reports = 10\n";

/// The limiter's rule: a per-key limit the peak load never reaches (so without adaptive it
/// lets everything through), adaptive or not.
fn rules(options: &ExperimentOptions, capacity: f64, adaptive: bool) -> String {
    let per_key = options.overload * capacity * 1.25 / options.keys.max(1) as f64;
    let burst = (per_key / 10.0).ceil().max(2.0);
    let mut rules = format!(
        "[rules.api]\nalgorithm = \"gcra\"\nrate_per_second = {per_key}\nburst = {burst}\n"
    );
    if adaptive {
        let _ = write!(
            rules,
            "[rules.api.adaptive]\ntarget_latency = \"{}us\"\n{AIMD}",
            options.target_latency.as_micros()
        );
    }
    rules
}

/// Runs one arm: the limiter, the backend, the load; the backend's record of it.
async fn run_arm(options: &ExperimentOptions, adaptive: bool) -> anyhow::Result<Arm> {
    let report_token = crate::admin::random_token();
    let overrides = sluice::config::Overrides {
        grpc_addr: Some("127.0.0.1:0".into()),
        http_addr: Some("127.0.0.1:0".into()),
        admin_addr: Some("127.0.0.1:0".into()),
        admin_tokens: Some(format!("backend:report:{report_token}")),
        ..sluice::config::Overrides::default()
    };
    let capacity = options.servers as f64 / options.service_time.as_secs_f64();
    let config = sluice::config::Config::parse(
        &rules(options, capacity, adaptive),
        "adaptive experiment",
        &overrides,
    )?;
    let limiter = sluice::server::start(config).await?;
    let backend = super::start(BackendOptions {
        listen: "127.0.0.1:0".parse()?,
        limiter: format!("http://{}", limiter.http_addr)
            .parse()
            .map_err(anyhow::Error::msg)?,
        resource: "api".into(),
        report_token: adaptive.then_some(report_token),
        servers: options.servers,
        service_time: options.service_time,
        timeout: options.timeout,
    })
    .await?;
    let target: Endpoint = format!("http://{}", backend.addr)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let peak = options.overload * capacity;
    let mut config = RunConfig::new(vec![target]);
    config.model = LoadModel::Open {
        schedule: Schedule::stages(
            0.0,
            &[
                Stage {
                    duration: options.ramp,
                    rate: peak,
                },
                Stage {
                    duration: options.hold,
                    rate: peak,
                },
            ],
        ),
        // Enough for every request the backend can hold in line until its timeout.
        workers: ((peak * options.timeout.as_secs_f64()) as usize + 64).max(64),
    };
    config.duration = None;
    config.keys = options.keys;
    config.resource = "api".into();
    config.interval = options.interval;
    config.timeout = options.timeout + Duration::from_secs(1);
    let result = engine::run(config).await?;
    let arm_name = if adaptive { "adaptive" } else { "static" };
    session::write_report(
        &result,
        &SessionOptions {
            command: options.command.clone(),
            out_dir: options.out_dir.join(arm_name),
            ..SessionOptions::default()
        },
        None,
    )?;
    let record = backend.record.clone();
    backend.stop().await;
    limiter.stop().await?;

    let hold_from = options.ramp;
    let (hold_p50_ms, _) = record.served_latency_since(hold_from, 0.5);
    let (hold_p99_ms, hold_served) = record.served_latency_since(hold_from, 0.99);
    let hold_rates = record
        .fates_since(hold_from)
        .into_iter()
        .map(|(fate, count)| {
            let name = serde_json::to_value(fate)
                .ok()
                .and_then(|name| name.as_str().map(str::to_owned))
                .unwrap_or_default();
            (name, count as f64 / options.hold.as_secs_f64())
        })
        .collect();
    Ok(Arm {
        adaptive,
        hold_p50_ms,
        hold_p99_ms,
        hold_served,
        hold_rates,
        series: record.series(options.interval),
    })
}

/// Runs both arms (static, then adaptive) and writes the report into `options.out_dir`.
pub async fn run(options: &ExperimentOptions) -> anyhow::Result<ExperimentSummary> {
    anyhow::ensure!(
        options.overload > 0.0 && options.servers > 0 && !options.service_time.is_zero(),
        "--overload, --servers and --service-time must be above 0"
    );
    std::fs::create_dir_all(&options.out_dir)?;
    let mut arms = Vec::new();
    for adaptive in [false, true] {
        arms.push(run_arm(options, adaptive).await?);
    }
    let summary = ExperimentSummary {
        options: options.clone(),
        capacity_rps: options.servers as f64 / options.service_time.as_secs_f64(),
        commit: report::git_commit(),
        machine: Machine::current(),
        arms,
    };
    std::fs::write(
        options.out_dir.join(report::SUMMARY_FILE),
        serde_json::to_string_pretty(&summary)?,
    )?;
    draw(&options.out_dir, &summary)?;
    std::fs::write(
        options.out_dir.join(report::REPORT_FILE),
        markdown(&summary),
    )?;
    Ok(summary)
}

/// The two arms side by side: what became of the requests, the backend's latency and the
/// factor, on shared axes.
fn draw(dir: &Path, summary: &ExperimentSummary) -> anyhow::Result<()> {
    register();
    let png = dir.join(format!("{CHART_FILE}.png"));
    let root = BitMapBackend::new(&png, (1400, 1050)).into_drawing_area();
    draw_on(&root, summary)?;
    root.present().map_err(failed)?;
    let svg = dir.join(format!("{CHART_FILE}.svg"));
    let root = SVGBackend::new(&svg, (1400, 1050)).into_drawing_area();
    draw_on(&root, summary)?;
    root.present().map_err(failed)?;
    Ok(())
}

fn draw_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    summary: &ExperimentSummary,
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(failed)?;
    let points = || summary.arms.iter().flat_map(|arm| arm.series.iter());
    let t_max = points().map(|p| p.t_s).fold(1.0, f64::max);
    let rate_max = points()
        .map(|p| {
            p.served_rps
                .max(p.denied_rps + p.shed_rps)
                .max(p.failed_rps)
        })
        .fold(1.0, f64::max)
        * 1.1;
    let latency_max = points().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.1;
    let target_ms = summary.options.target_latency.as_secs_f64() * 1e3;
    let rows = root.split_evenly((3, summary.arms.len()));
    for (column, arm) in summary.arms.iter().enumerate() {
        let name = if arm.adaptive {
            "adaptive limit"
        } else {
            "static limit"
        };
        let hold_start = summary.options.ramp.as_secs_f64();
        let area = |row: usize| &rows[row * summary.arms.len() + column];
        // Requests a second, by fate.
        let mut chart = frame(area(0), &format!("{name}: requests/s"), t_max, rate_max)?;
        let series: [Line; 3] = [
            ("served", OUTCOME_COLORS[0], |p| p.served_rps),
            ("shed by the limiter", OUTCOME_COLORS[1], |p| {
                p.denied_rps + p.shed_rps
            }),
            ("failed (timeout)", OUTCOME_COLORS[2], |p| p.failed_rps),
        ];
        draw_lines(&mut chart, &arm.series, series)?;
        horizontal(&mut chart, summary.capacity_rps, t_max, "backend capacity")?;
        hold_marker(&mut chart, hold_start, rate_max)?;
        legend(&mut chart)?;
        // Backend latency.
        let mut chart = frame(
            area(1),
            &format!("{name}: backend latency (ms)"),
            t_max,
            latency_max,
        )?;
        let latencies: [Line; 2] = [
            ("p50", LINE_COLORS[0], |p| p.p50_ms),
            ("p99", LINE_COLORS[2], |p| p.p99_ms),
        ];
        draw_lines(&mut chart, &arm.series, latencies)?;
        horizontal(&mut chart, target_ms, t_max, "target (p90)")?;
        hold_marker(&mut chart, hold_start, latency_max)?;
        legend(&mut chart)?;
        // The factor.
        let mut chart = frame(area(2), &format!("{name}: factor"), t_max, 1.05)?;
        chart
            .draw_series(LineSeries::new(
                arm.series.iter().map(|p| (p.t_s, p.factor)),
                LINE_COLORS[3].stroke_width(2),
            ))
            .map_err(failed)?;
        hold_marker(&mut chart, hold_start, 1.05)?;
    }
    Ok(())
}

/// A series drawn: its legend, colour and value at each point.
type Line = (&'static str, RGBColor, fn(&Point) -> f64);

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn frame<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x_max: f64,
    y_max: f64,
) -> anyhow::Result<Chart<'a, DB>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .draw()
        .map_err(failed)?;
    Ok(chart)
}

/// Each of `lines` over `points`, in the legend.
fn draw_lines<'a, DB: DrawingBackend + 'a, const N: usize>(
    chart: &mut Chart<'a, DB>,
    points: &[Point],
    lines: [Line; N],
) -> anyhow::Result<()> {
    for (label, color, value) in lines {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_s, value(p))),
                color.stroke_width(2),
            ))
            .map_err(failed)?
            .label(label)
            .legend(move |(x, y)| line_key(color, x, y));
    }
    Ok(())
}

/// A thin black line across the chart at `y`, in the legend as `label`.
fn horizontal<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    y: f64,
    x_max: f64,
    label: &'static str,
) -> anyhow::Result<()> {
    chart
        .draw_series(LineSeries::new(
            [(0.0, y), (x_max, y)],
            BLACK.stroke_width(1),
        ))
        .map_err(failed)?
        .label(label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    Ok(())
}

/// A dashed-grey vertical line where the overload starts being held.
fn hold_marker<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    at: f64,
    y_max: f64,
) -> anyhow::Result<()> {
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(at, 0.0), (at, y_max)],
            grey.stroke_width(1),
        )))
        .map_err(failed)?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    Ok(())
}

fn markdown(summary: &ExperimentSummary) -> String {
    let options = &summary.options;
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Adaptive limits under {}x overload
",
        options.overload
    );
    let _ = writeln!(
        text,
        "- Command: `{}`
- Commit: {}
- Machine: {} ({} cpus, {}; {})
",
        options.command,
        summary.commit,
        summary.machine.hostname,
        summary.machine.cpus,
        summary.machine.cpu_model,
        summary.machine.os
    );
    let _ = writeln!(
        text,
        "A backend of {} servers taking {:.0} ms a request (nominal capacity {:.0} req/s; the \
         timer adds about a millisecond to each request; a request waiting in line longer than \
         {:.0} ms fails) sits behind a limiter started in-process. The load (open model, {} \
         keys) ramps from 0 to {:.0} req/s ({}x capacity) over {:.0} s, then holds for {:.0} s. \
         It runs twice: under a per-key GCRA limit that the peak never reaches (static), and \
         with the same limit adaptive (target p90 {:.0} ms; {}), the backend reporting each \
         served request's latency.\n",
        options.servers,
        ms(options.service_time),
        summary.capacity_rps,
        ms(options.timeout),
        options.keys,
        options.overload * summary.capacity_rps,
        options.overload,
        options.ramp.as_secs_f64(),
        options.hold.as_secs_f64(),
        ms(options.target_latency),
        AIMD.trim_end().replace('\n', ", "),
    );
    let _ = writeln!(
        text,
        "![requests, backend latency and factor over time, static and adaptive side by side]({CHART_FILE}.png)
"
    );
    let _ = writeln!(
        text,
        "While the overload was held (from {:.0} s):
",
        options.ramp.as_secs_f64()
    );
    let _ = writeln!(
        text,
        "| run | served p50 (ms) | served p99 (ms) | served/s | shed/s | failed/s |
|---|---:|---:|---:|---:|---:|"
    );
    for arm in &summary.arms {
        let rate = |names: &[&str]| -> f64 {
            arm.hold_rates
                .iter()
                .filter(|(name, _)| names.contains(&name.as_str()))
                .map(|(_, rate)| rate)
                .sum()
        };
        let _ = writeln!(
            text,
            "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
            if arm.adaptive { "adaptive" } else { "static" },
            arm.hold_p50_ms,
            arm.hold_p99_ms,
            rate(&["served"]),
            rate(&["denied", "shed"]),
            rate(&["failed", "limiter_error"]),
        );
    }
    let _ = writeln!(
        text,
        "\nEach run's own generator report (latency from the intended send time, HDR files) is \
         in `static/` and `adaptive/`; every number here is in `summary.json`."
    );
    text
}

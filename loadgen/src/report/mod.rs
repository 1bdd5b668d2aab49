//! Everything a run writes into its results folder:
//!
//! | file | what |
//! |---|---|
//! | `summary.json` | the versioned record ([`summary::Summary`]) |
//! | `report.md` | the human report |
//! | `latency.hgrm` | HdrHistogram percentile table of corrected latency (ms) |
//! | `latency.hlog` | HdrHistogram interval log, one histogram per interval (us) |
//! | `*.png`, `*.svg` | latency over time, throughput by outcome, percentile spectrum, per target |
//! | `k6-summary.json`, `goose-report.json` | optional: the same scenario run by k6 and Goose ([`tools`]) |

pub(crate) mod charts;
pub mod faults;
mod hgrm;
mod markdown;
pub mod summary;
pub mod tools;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;
use hdrhistogram::serialization::{V2Serializer, interval_log::IntervalLogWriterBuilder};

pub use charts::CHART_FILES;
pub use hgrm::{parse_hgrm, write_hgrm};
pub use summary::Summary;

use crate::engine::RunResult;

pub const SUMMARY_FILE: &str = "summary.json";
pub const HGRM_FILE: &str = "latency.hgrm";
pub const HLOG_FILE: &str = "latency.hlog";
pub const REPORT_FILE: &str = "report.md";

/// The commit of the checkout the generator runs in ("unknown" outside one).
pub fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A results folder named by the user, or by the time: `results/run-<unix seconds>`.
pub fn results_dir(root: &Path, name: Option<&str>) -> PathBuf {
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("run-{}", now.as_secs())
    });
    root.join(name)
}

/// Writes every file of a run into `dir`.
pub fn write_run(dir: &Path, result: &RunResult, summary: &Summary) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(
        dir.join(SUMMARY_FILE),
        serde_json::to_string_pretty(summary)?,
    )?;
    fs::write(
        dir.join(HGRM_FILE),
        write_hgrm(&result.recorder.corrected.all),
    )?;
    write_hlog(&dir.join(HLOG_FILE), result)?;
    render(dir, summary)
}

/// Rebuilds report.md and the charts of a saved run from its summary.json and latency.hgrm.
pub fn rebuild(dir: &Path) -> anyhow::Result<Summary> {
    let summary = read_summary(dir)?;
    render(dir, &summary)?;
    Ok(summary)
}

pub fn read_summary(dir: &Path) -> anyhow::Result<Summary> {
    let path = dir.join(SUMMARY_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let summary: Summary =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    // Versions 2 to 4 only added fields that default to empty (shadow-denied counts and
    // findings, the full send lag, a chaos run's faults), so every earlier version still reads.
    anyhow::ensure!(
        summary.schema == summary::SCHEMA
            && (1..=summary::SCHEMA_VERSION).contains(&summary.schema_version),
        "{} is schema {} v{}; this loadgen reads {} v1 to v{}",
        path.display(),
        summary.schema,
        summary.schema_version,
        summary::SCHEMA,
        summary::SCHEMA_VERSION
    );
    Ok(summary)
}

fn render(dir: &Path, summary: &Summary) -> anyhow::Result<()> {
    let hgrm = fs::read_to_string(dir.join(HGRM_FILE)).unwrap_or_default();
    let spectrum = parse_hgrm(&hgrm);
    charts::draw_all(dir, summary, &spectrum)?;
    let report = markdown::report(summary) + &tools::section(dir, summary)?;
    fs::write(dir.join(REPORT_FILE), report)?;
    Ok(())
}

fn write_hlog(path: &Path, result: &RunResult) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut serializer = V2Serializer::new();
    let interval = result.config.interval;
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("Sluice loadgen: corrected latency per interval, microseconds")
            .with_start_time(result.started_at)
            .with_base_time(result.started_at)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        for (index, point) in result.timeline.iter().enumerate() {
            let start = result.config.warmup + interval * index as u32;
            log.write_histogram(&point.latency(), start, interval, None)
                .map_err(|err| anyhow::anyhow!("writing {}: {err:?}", path.display()))?;
        }
    }
    fs::write(path, out)?;
    Ok(())
}

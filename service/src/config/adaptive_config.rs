//! The `[rules.<resource>.adaptive]` section: validation into an [`AdaptivePolicy`].

use serde::Deserialize;

use super::{Issues, parse_duration};
use crate::adaptive::{AdaptivePolicy, Aimd, WHOLE};

/// Shortest window: a node sends what it was told a few times a window.
const MIN_WINDOW_US: u64 = 100_000;
/// Longest window (and target latency): an hour.
const MAX_SPAN_US: u64 = 3_600_000_000;
/// Most reports a window may wait for before saying anything.
const MAX_MIN_REPORTS: u64 = 1_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdaptive {
    target_latency: Option<String>,
    max_error_ratio: Option<f64>,
    floor: Option<f64>,
    increase: Option<f64>,
    decrease: Option<f64>,
    window: Option<String>,
    min_reports: Option<u64>,
}

/// A duration within `min_us..=MAX_SPAN_US`, or an issue naming the range.
fn span(issues: &mut Issues, path: &str, text: &str, min_us: u64, least: &str) -> Option<u64> {
    let micros = match parse_duration(text) {
        Ok(duration) => u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        Err(message) => {
            issues.add(path, message);
            return None;
        }
    };
    if !(min_us..=MAX_SPAN_US).contains(&micros) {
        issues.add(
            path,
            format!("`{text}` is out of range; use {least} to \"1h\""),
        );
        return None;
    }
    Some(micros)
}

/// A ratio in parts per million, or an issue naming the range when it is not finite.
fn ppm(issues: &mut Issues, path: &str, value: f64) -> Option<u64> {
    if !value.is_finite() || !(0.0..=1.0).contains(&value) {
        issues.add(path, format!("{value} is out of range; use 0 to 1"));
        return None;
    }
    Some((value * WHOLE as f64).round() as u64)
}

pub(super) fn build_adaptive(
    path: &str,
    raw: RawAdaptive,
    issues: &mut Issues,
) -> Option<AdaptivePolicy> {
    let field = |name: &str| format!("{path}.{name}");
    let target = match raw.target_latency.as_deref() {
        Some(text) => span(issues, &field("target_latency"), text, 1, "\"1us\""),
        None => {
            issues.add(
                field("target_latency"),
                "missing; the backend latency to keep under, at the 90th percentile (e.g. target_latency = \"50ms\")",
            );
            None
        }
    };
    let window = span(
        issues,
        &field("window"),
        raw.window.as_deref().unwrap_or("1s"),
        MIN_WINDOW_US,
        "\"100ms\"",
    );
    let min_reports = raw.min_reports.unwrap_or(20);
    if min_reports > MAX_MIN_REPORTS {
        issues.add(
            field("min_reports"),
            format!("{min_reports} is out of range; use 0 to {MAX_MIN_REPORTS}"),
        );
    }
    let mut ratio = |name: &str, value: Option<f64>, default: f64| {
        ppm(issues, &field(name), value.unwrap_or(default))
    };
    let max_error = ratio("max_error_ratio", raw.max_error_ratio, 0.05);
    let floor = ratio("floor", raw.floor, 0.1);
    let increase = ratio("increase", raw.increase, 0.05);
    let decrease = ratio("decrease", raw.decrease, 0.7);
    let aimd = Aimd {
        target_latency_us: target?,
        max_error_ppm: max_error?,
        floor_ppm: floor?,
        increase_ppm: increase?,
        decrease_ppm: decrease?,
        min_reports: min_reports.min(MAX_MIN_REPORTS),
    };
    match aimd.validated() {
        Ok(aimd) => Some(AdaptivePolicy {
            aimd,
            window_us: window?,
        }),
        Err((name, range)) => {
            issues.add(field(name), format!("out of range; use {range}"));
            None
        }
    }
}

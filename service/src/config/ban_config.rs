//! The `[rules.<resource>.ban]` section: validation into a [`Ban`].

use serde::Deserialize;

use super::{Issues, parse_duration};
use crate::algorithm::{
    MICROS_PER_SEC,
    ban::{Ban, BanScope},
};

/// Longest window, ban or look-back: a year keeps every sum of times below 2^53 us, exact in
/// the Lua mirror.
const MAX_SPAN_US: u64 = 366 * 86_400 * MICROS_PER_SEC;
/// Most denials a ban may wait for.
const MAX_AFTER: u64 = 1_000_000;
/// Largest growth of a repeated ban.
const MAX_FACTOR: f64 = 1_000.0;
/// Default cap of a growing ban, and default look-back: a day.
const DAY_US: u64 = 86_400 * MICROS_PER_SEC;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawBan {
    after: Option<u64>,
    within: Option<String>,
    duration: Option<String>,
    factor: Option<f64>,
    max_duration: Option<String>,
    lookback: Option<String>,
    scope: Option<String>,
}

/// A duration field in whole microseconds within `min_us..=MAX_SPAN_US`, or an issue.
fn span(issues: &mut Issues, path: &str, text: &str, min_us: u64) -> Option<u64> {
    let micros = match parse_duration(text) {
        Ok(duration) => u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        Err(message) => {
            issues.add(path, message);
            return None;
        }
    };
    if !(min_us..=MAX_SPAN_US).contains(&micros) {
        let least = if min_us == 0 { "\"0s\"" } else { "\"1ms\"" };
        issues.add(
            path,
            format!("`{text}` is out of range; use {least} to \"366d\""),
        );
        return None;
    }
    Some(micros)
}

pub(super) fn build_ban(path: &str, raw: RawBan, issues: &mut Issues) -> Option<Ban> {
    let field = |name: &str| format!("{path}.{name}");
    let required = |issues: &mut Issues, name: &str, example: &str| {
        issues.add(
            field(name),
            format!("missing; a ban needs `{name}` (e.g. {name} = {example})"),
        );
    };
    let after = match raw.after {
        None => {
            required(issues, "after", "20");
            None
        }
        Some(after) if (1..=MAX_AFTER).contains(&after) => Some(after),
        Some(after) => {
            issues.add(
                field("after"),
                format!("{after} is out of range; use 1 to {MAX_AFTER} denials"),
            );
            None
        }
    };
    let mut duration_of = |name: &str, text: Option<&str>, min_us: u64, example: &str| match text {
        None => {
            required(issues, name, example);
            None
        }
        Some(text) => span(issues, &field(name), text, min_us),
    };
    let within = duration_of("within", raw.within.as_deref(), 1_000, "\"1m\"");
    let duration = duration_of("duration", raw.duration.as_deref(), 1_000, "\"15m\"");
    let factor = raw.factor.unwrap_or(1.0);
    if !(factor.is_finite() && (1.0..=MAX_FACTOR).contains(&factor)) {
        issues.add(
            field("factor"),
            format!(
                "{factor} is out of range; use 1 (every ban alike) to {MAX_FACTOR} (each repeat that much longer)"
            ),
        );
    }
    let max_duration = match raw.max_duration.as_deref() {
        Some(text) => span(issues, &field("max_duration"), text, 1_000),
        None => Some(duration.unwrap_or(0).max(DAY_US)),
    };
    let lookback = match raw.lookback.as_deref() {
        Some(text) => span(issues, &field("lookback"), text, 0),
        None => Some(DAY_US),
    };
    let scope = match raw.scope.as_deref() {
        None => Some(BanScope::Resource),
        Some(text) => BanScope::parse(text).or_else(|| {
            issues.add(
                field("scope"),
                format!(
                    "unknown scope `{text}`; use \"resource\" (this resource only) or \"key\" (every resource)"
                ),
            );
            None
        }),
    };
    if let (Some(duration), Some(max_duration)) = (duration, max_duration)
        && max_duration < duration
    {
        issues.add(
            field("max_duration"),
            "shorter than `duration`; a repeated ban only grows, so make it at least `duration`",
        );
        return None;
    }
    Some(Ban {
        after: after?,
        within_us: within?,
        duration_us: duration?,
        factor: (factor.is_finite() && (1.0..=MAX_FACTOR).contains(&factor)).then_some(factor)?,
        max_duration_us: max_duration?,
        lookback_us: lookback?,
        scope: scope?,
    })
}

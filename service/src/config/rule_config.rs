//! The `[default_rule]` and `[rules.<resource>]` sections: validation into a [`RuleSet`].

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::{Issues, parse_duration};
use crate::algorithm::{
    ALGORITHM_NAMES, Algorithm, EXACT_INTEGER_LIMIT, FixedWindow, Gcra, MICROS_PER_SEC,
    SlidingWindowCounter, SlidingWindowLog, TokenBucket,
    stacked::{Limit, MAX_LIMITS},
};
use crate::rules::{ANY_RESOURCE_LABEL, FailureMode, Rule, RuleGroup, RuleSet};

/// Largest capacity, burst or limit: keeps every count exact in the Lua mirror.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// The exact log stores one entry per admitting microsecond, so its limit is kept smaller.
pub const MAX_LOG_LIMIT: u64 = 100_000;
/// Largest refill or emission rate per second.
pub const MAX_RATE: f64 = 1e9;
/// Longest window.
pub const MAX_WINDOW_US: u64 = 366 * 86_400 * MICROS_PER_SEC;
/// Longest rule name; names appear in headers and metrics.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest resource name, in configuration and in requests.
pub const MAX_RESOURCE_BYTES: usize = 128;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRule {
    name: Option<String>,
    // The one-limit form: the algorithm and its parameters on the rule itself.
    algorithm: Option<String>,
    capacity: Option<u64>,
    refill_per_second: Option<f64>,
    rate_per_second: Option<f64>,
    burst: Option<u64>,
    limit: Option<u64>,
    window: Option<String>,
    /// The stacked form: `[[rules.<resource>.limits]]`, each with a name and an algorithm.
    limits: Option<Vec<RawLimit>>,
    /// What the rule answers when the store fails; default `backend.redis.failure_mode`.
    failure_mode: Option<String>,
    /// Shadow mode: would-be denials are allowed, counted and logged.
    shadow: Option<bool>,
    /// `[rules.<resource>.ban]`: bans for keys this rule keeps denying.
    ban: Option<super::ban_config::RawBan>,
    /// `[rules.<resource>.adaptive]`: the resource's limits follow its backend's health.
    adaptive: Option<super::adaptive_config::RawAdaptive>,
    /// `[rules.<resource>.concurrency]`: requests in flight per key, taken by Acquire.
    concurrency: Option<super::concurrency_config::RawConcurrency>,
    /// Only in an `overrides` entry: the client key it applies to.
    key: Option<String>,
    overrides: Vec<RawRule>,
}

/// An algorithm and its parameters, as written on a rule or a limit.
#[derive(Debug, Default)]
struct RawAlgorithm {
    algorithm: Option<String>,
    capacity: Option<u64>,
    refill_per_second: Option<f64>,
    rate_per_second: Option<f64>,
    burst: Option<u64>,
    limit: Option<u64>,
    window: Option<String>,
}

impl RawAlgorithm {
    /// The fields given, by name.
    fn given(&self) -> [(&'static str, bool); 7] {
        [
            ("algorithm", self.algorithm.is_some()),
            ("capacity", self.capacity.is_some()),
            ("refill_per_second", self.refill_per_second.is_some()),
            ("rate_per_second", self.rate_per_second.is_some()),
            ("burst", self.burst.is_some()),
            ("limit", self.limit.is_some()),
            ("window", self.window.is_some()),
        ]
    }
}

/// One entry of a rule's `limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimit {
    name: Option<String>,
    algorithm: Option<String>,
    capacity: Option<u64>,
    refill_per_second: Option<f64>,
    rate_per_second: Option<f64>,
    burst: Option<u64>,
    limit: Option<u64>,
    window: Option<String>,
}

/// Moves the algorithm fields out of a rule or a limit (serde's `flatten` cannot be combined
/// with `deny_unknown_fields`, so each keeps its own copy of the fields).
macro_rules! take_algorithm {
    ($raw:expr) => {
        RawAlgorithm {
            algorithm: $raw.algorithm.take(),
            capacity: $raw.capacity.take(),
            refill_per_second: $raw.refill_per_second.take(),
            rate_per_second: $raw.rate_per_second.take(),
            burst: $raw.burst.take(),
            limit: $raw.limit.take(),
            window: $raw.window.take(),
        }
    };
}

/// Characters allowed in rule and resource names: safe inside a structured-field string
/// (RateLimit-Policy), a metrics label and a Redis key.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')
}

fn check_name(issues: &mut Issues, path: &str, what: &str, name: &str, max: usize) {
    if name.is_empty() || name.len() > max || !name.chars().all(is_name_char) {
        issues.add(
            path,
            format!(
                "{what} `{name}` is not valid; use 1 to {max} characters from A-Z a-z 0-9 _ - . : /"
            ),
        );
    }
}

pub(super) fn build_rule_set(
    default_rule: Option<RawRule>,
    rules: BTreeMap<String, RawRule>,
    max_key_bytes: usize,
    envoy_configured: bool,
    issues: &mut Issues,
) -> RuleSet {
    let mut set = RuleSet::default();
    let mut names = HashSet::new();
    if default_rule.is_none() && rules.is_empty() && !envoy_configured {
        issues.add(
            "rules",
            "no rules: add a [default_rule] (applies to every resource), a [rules.<resource>] section, or Envoy rate limit files ([envoy] config_paths)",
        );
    }
    let groups = default_rule.map(|raw| (None, raw)).into_iter().chain(
        rules
            .into_iter()
            .map(|(resource, raw)| (Some(resource), raw)),
    );
    for (resource, raw) in groups {
        let path = match &resource {
            Some(resource) => {
                let path = format!("rules.{resource}");
                check_name(issues, &path, "resource", resource, MAX_RESOURCE_BYTES);
                path
            }
            None => "default_rule".to_owned(),
        };
        let label = resource.as_deref().unwrap_or(ANY_RESOURCE_LABEL).to_owned();
        let default_name = resource.as_deref().unwrap_or("default").to_owned();
        let group = build_group(
            &mut set,
            &mut names,
            GroupInput {
                path: &path,
                label: &label,
                default_name: &default_name,
                max_key_bytes,
            },
            raw,
            issues,
        );
        set.insert_group(resource, group);
    }
    set
}

/// Adaptive rules move on reports, and a report needs a token (role `report`): without the
/// admin section there are none, and the rule would never move.
pub(super) fn check_reports_can_arrive(rules: &RuleSet, tokens: bool, issues: &mut Issues) {
    if tokens {
        return;
    }
    let mut resources: Vec<&str> = rules
        .adaptive_resources()
        .map(|(resource, _)| resource)
        .collect();
    resources.sort_unstable();
    for resource in resources {
        issues.add(
            format!("rules.{resource}.adaptive"),
            "adaptive limits move on backend reports, which need a token of role `report`; configure [admin] with tokens (e.g. `backend:report:<token>`)",
        );
    }
}

struct GroupInput<'a> {
    path: &'a str,
    label: &'a str,
    default_name: &'a str,
    max_key_bytes: usize,
}

fn build_group(
    set: &mut RuleSet,
    names: &mut HashSet<String>,
    input: GroupInput<'_>,
    mut raw: RawRule,
    issues: &mut Issues,
) -> RuleGroup {
    let path = input.path;
    if raw.key.is_some() {
        issues.add(
            format!("{path}.key"),
            "`key` belongs in an [[...overrides]] entry; move it there or remove it",
        );
    }
    let overrides = std::mem::take(&mut raw.overrides);
    if raw.adaptive.is_some() && input.label == ANY_RESOURCE_LABEL {
        raw.adaptive = None;
        issues.add(
            format!("{path}.adaptive"),
            "the default rule cannot be adaptive: a factor follows one resource's backend; give the resource its own [rules.<resource>] with `adaptive`",
        );
    }
    let rule = build_rule(
        set,
        names,
        path,
        input.label,
        input.default_name,
        raw,
        issues,
    );
    let mut group = RuleGroup {
        rule,
        overrides: HashMap::new(),
    };
    let parent_name = set.rules()[rule].name.clone();
    for (index, mut raw) in overrides.into_iter().enumerate() {
        let path = format!("{path}.overrides[{index}]");
        if !raw.overrides.is_empty() {
            issues.add(
                format!("{path}.overrides"),
                "overrides cannot be nested; list every override under the resource",
            );
        }
        if raw.adaptive.take().is_some() {
            issues.add(
                format!("{path}.adaptive"),
                "an override follows its resource's adaptive factor; set `adaptive` on the resource only",
            );
        }
        let key = raw.key.take().unwrap_or_default();
        if key.is_empty() || key.len() > input.max_key_bytes {
            issues.add(
                format!("{path}.key"),
                format!(
                    "set `key` to the client key this override applies to (1 to {} bytes, limits.max_key_bytes)",
                    input.max_key_bytes
                ),
            );
        }
        let default_name = format!("{parent_name}/override-{}", index + 1);
        let mut id = build_rule(set, names, &path, input.label, &default_name, raw, issues);
        id = set.with_adaptive(id, set.rules()[rule].adaptive);
        if group.overrides.insert(key.clone(), id).is_some() {
            issues.add(
                format!("{path}.key"),
                format!(
                    "key `{key}` already has an override in {}; keep one",
                    input.path
                ),
            );
        }
    }
    group
}

fn build_rule(
    set: &mut RuleSet,
    names: &mut HashSet<String>,
    path: &str,
    label: &str,
    default_name: &str,
    raw: RawRule,
    issues: &mut Issues,
) -> usize {
    let name = raw.name.clone().unwrap_or_else(|| default_name.to_owned());
    check_name(
        issues,
        &format!("{path}.name"),
        "rule name",
        &name,
        MAX_NAME_BYTES,
    );
    if !names.insert(name.clone()) {
        issues.add(
            format!("{path}.name"),
            format!("rule name `{name}` is used twice; give each rule its own name"),
        );
    }
    set.push(rule_from_raw(path, name, label, raw, issues))
}

/// The rule `raw` describes, named `name` (already checked), its problems added to `issues`.
fn rule_from_raw(
    path: &str,
    name: String,
    label: &str,
    mut raw: RawRule,
    issues: &mut Issues,
) -> Rule {
    let failure_mode = raw.failure_mode.as_deref().and_then(|text| {
        let mode = FailureMode::parse(text);
        if mode.is_none() {
            issues.add(
                format!("{path}.failure_mode"),
                format!(
                    "unknown failure mode `{text}`; use one of {}",
                    FailureMode::NAMES.join(", ")
                ),
            );
        }
        mode
    });
    let shadow = raw.shadow.unwrap_or(false);
    let ban = raw
        .ban
        .take()
        .and_then(|ban| super::ban_config::build_ban(&format!("{path}.ban"), ban, issues));
    let adaptive = raw.adaptive.take().and_then(|adaptive| {
        super::adaptive_config::build_adaptive(&format!("{path}.adaptive"), adaptive, issues)
    });
    let concurrency = raw.concurrency.take().and_then(|concurrency| {
        super::concurrency_config::build_concurrency(
            &format!("{path}.concurrency"),
            concurrency,
            issues,
        )
    });
    if concurrency.is_some() && ban.is_some() {
        issues.add(
            format!("{path}.ban"),
            "a rule with a concurrency limit cannot ban yet; remove `ban` or move the concurrency limit to a rule of its own",
        );
    }
    let limits = build_limits(path, &name, raw, issues);
    Rule {
        id: 0,
        name,
        resource_label: label.to_owned(),
        limits,
        failure_mode,
        shadow,
        ban,
        adaptive,
        concurrency,
    }
}

/// A descriptor's `rate_limit` numbers as Sluice's algorithms take them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvoyRate {
    pub requests_per_unit: u64,
    pub unit_seconds: u64,
}

/// The rule of one descriptor of Envoy's configuration. `raw` is the descriptor's `sluice`
/// block (Sluice's own extension: any algorithm and its parameters, stacked `limits`, `ban`,
/// `failure_mode`); where it leaves an algorithm's numbers out, `rate` fills them (a fixed
/// window of `requests_per_unit` per unit unless `algorithm` says otherwise).
pub(crate) fn envoy_rule(
    path: &str,
    name: String,
    label: &str,
    raw: Option<RawRule>,
    rate: Option<EnvoyRate>,
    shadow: bool,
    issues: &mut Issues,
) -> Rule {
    let mut raw = raw.unwrap_or_default();
    for (field, given, instead) in [
        (
            "key",
            raw.key.is_some(),
            "descriptors match by `key` and `value` on the descriptor",
        ),
        (
            "overrides",
            !raw.overrides.is_empty(),
            "give each value its own descriptor",
        ),
        (
            "shadow",
            raw.shadow.is_some(),
            "use the descriptor's `shadow_mode`",
        ),
        ("name", raw.name.is_some(), "use `rate_limit.name`"),
        (
            "adaptive",
            raw.adaptive.is_some(),
            "adaptive limits follow a [rules.<resource>] of the TOML configuration",
        ),
        (
            "concurrency",
            raw.concurrency.is_some(),
            "Envoy's API has no lease to release; use a [rules.<resource>] with Acquire and Release",
        ),
    ] {
        if given {
            issues.add(
                format!("{path}.sluice.{field}"),
                format!("not taken in a descriptor's `sluice` block; {instead}"),
            );
        }
    }
    raw.shadow = Some(shadow);
    if let Some(rate) = rate {
        if raw.limits.is_some() {
            issues.add(
                format!("{path}.rate_limit"),
                "this descriptor's limits are in `sluice.limits`; remove `unit` and `requests_per_unit` from `rate_limit` (keep its `name` and `replaces`)",
            );
        } else {
            let per_second = rate.requests_per_unit as f64 / rate.unit_seconds as f64;
            let algorithm = raw
                .algorithm
                .get_or_insert_with(|| "fixed_window".to_owned());
            match algorithm.as_str() {
                "token_bucket" => {
                    raw.capacity.get_or_insert(rate.requests_per_unit);
                    raw.refill_per_second.get_or_insert(per_second);
                }
                "gcra" => {
                    raw.rate_per_second.get_or_insert(per_second);
                    raw.burst.get_or_insert(rate.requests_per_unit);
                }
                _ => {
                    raw.limit.get_or_insert(rate.requests_per_unit);
                    raw.window
                        .get_or_insert_with(|| format!("{}s", rate.unit_seconds));
                }
            }
        }
    }
    let path = format!("{path}.sluice");
    rule_from_raw(&path, name, label, raw, issues)
}

/// A stand-in that keeps validating the rest when an algorithm is unusable.
fn placeholder() -> Algorithm {
    Algorithm::FixedWindow(FixedWindow::new(1, MICROS_PER_SEC))
}

/// The rule's limits: its one inline algorithm, or its `limits` entries.
fn build_limits(path: &str, rule_name: &str, mut raw: RawRule, issues: &mut Issues) -> Vec<Limit> {
    let inline = take_algorithm!(raw);
    let Some(entries) = raw.limits else {
        let algorithm = build_algorithm(path, inline, issues).unwrap_or_else(placeholder);
        return vec![Limit::new(rule_name, algorithm)];
    };
    for (field, given) in inline.given() {
        if given {
            issues.add(
                format!("{path}.{field}"),
                format!("this rule lists `limits`, which hold its algorithms; move `{field}` into a [[{path}.limits]] entry"),
            );
        }
    }
    if entries.is_empty() {
        issues.add(
            format!("{path}.limits"),
            format!("empty; add at least one [[{path}.limits]] entry, or remove `limits` and give the algorithm on the rule"),
        );
        return vec![Limit::new(rule_name, placeholder())];
    }
    if entries.len() > MAX_LIMITS {
        issues.add(
            format!("{path}.limits"),
            format!(
                "{} limits; a rule stacks at most {MAX_LIMITS}: merge limits or split the resource",
                entries.len()
            ),
        );
    }
    let single = entries.len() == 1;
    let mut names = HashSet::new();
    let mut limits = Vec::with_capacity(entries.len());
    for (index, mut entry) in entries.into_iter().enumerate() {
        let path = format!("{path}.limits[{index}]");
        let name = match entry.name.take() {
            Some(name) => {
                check_name(
                    issues,
                    &format!("{path}.name"),
                    "limit name",
                    &name,
                    MAX_NAME_BYTES,
                );
                name
            }
            None if single => rule_name.to_owned(),
            None => {
                issues.add(
                    format!("{path}.name"),
                    "missing; name each stacked limit (e.g. \"burst\", \"daily\"): the name appears in headers and answers",
                );
                format!("limit-{}", index + 1)
            }
        };
        if !names.insert(name.clone()) {
            issues.add(
                format!("{path}.name"),
                format!(
                    "limit name `{name}` is used twice in this rule; give each limit its own name"
                ),
            );
        }
        let algorithm =
            build_algorithm(&path, take_algorithm!(entry), issues).unwrap_or_else(placeholder);
        limits.push(Limit::new(name, algorithm));
    }
    limits
}

/// Field names each algorithm takes.
fn parameters_of(algorithm: &str) -> &'static [&'static str] {
    match algorithm {
        "token_bucket" => &["capacity", "refill_per_second"],
        "gcra" => &["rate_per_second", "burst"],
        _ => &["limit", "window"],
    }
}

fn build_algorithm(path: &str, raw: RawAlgorithm, issues: &mut Issues) -> Option<Algorithm> {
    let Some(algorithm) = raw.algorithm.as_deref() else {
        issues.add(
            format!("{path}.algorithm"),
            format!("missing; set it to one of {}", ALGORITHM_NAMES.join(", ")),
        );
        return None;
    };
    if !ALGORITHM_NAMES.contains(&algorithm) {
        issues.add(
            format!("{path}.algorithm"),
            format!(
                "unknown algorithm `{algorithm}`; use one of {}",
                ALGORITHM_NAMES.join(", ")
            ),
        );
        return None;
    }
    let wanted = parameters_of(algorithm);
    let given = [
        ("capacity", raw.capacity.is_some()),
        ("refill_per_second", raw.refill_per_second.is_some()),
        ("rate_per_second", raw.rate_per_second.is_some()),
        ("burst", raw.burst.is_some()),
        ("limit", raw.limit.is_some()),
        ("window", raw.window.is_some()),
    ];
    let mut complete = true;
    for (field, present) in given {
        if present && !wanted.contains(&field) {
            issues.add(
                format!("{path}.{field}"),
                format!(
                    "{algorithm} does not use `{field}`; it takes {}",
                    wanted.join(" and ")
                ),
            );
        }
        if !present && wanted.contains(&field) {
            issues.add(
                format!("{path}.{field}"),
                format!("missing; {algorithm} needs {}", wanted.join(" and ")),
            );
            complete = false;
        }
    }
    if !complete {
        return None;
    }
    let count = |issues: &mut Issues, field: &str, value: u64, max: u64| {
        let valid = (1..=max).contains(&value);
        if !valid {
            issues.add(
                format!("{path}.{field}"),
                format!("{value} is out of range; use 1 to {max}"),
            );
        }
        valid.then_some(value)
    };
    match algorithm {
        "token_bucket" => {
            let capacity = count(issues, "capacity", raw.capacity?, MAX_LIMIT);
            let refill = rate(
                issues,
                &format!("{path}.refill_per_second"),
                raw.refill_per_second?,
            );
            let (capacity, refill) = (capacity?, refill?);
            if capacity as f64 / refill * 1e6 >= EXACT_INTEGER_LIMIT as f64 {
                issues.add(
                    format!("{path}.refill_per_second"),
                    "too slow for this capacity: refilling would take centuries; raise it or lower capacity",
                );
                return None;
            }
            Some(Algorithm::TokenBucket(TokenBucket::new(capacity, refill)))
        }
        "gcra" => {
            let burst = count(issues, "burst", raw.burst?, MAX_LIMIT);
            let rate = rate(
                issues,
                &format!("{path}.rate_per_second"),
                raw.rate_per_second?,
            );
            let (burst, rate) = (burst?, rate?);
            if u128::from(Gcra::emission_interval_us_for(rate)) * u128::from(burst)
                >= u128::from(EXACT_INTEGER_LIMIT)
            {
                issues.add(
                    format!("{path}.rate_per_second"),
                    "too slow for this burst: refilling would take centuries; raise it or lower burst",
                );
                return None;
            }
            Some(Algorithm::Gcra(Gcra::new(rate, burst)))
        }
        _ => {
            let max = if algorithm == "sliding_window_log" {
                MAX_LOG_LIMIT
            } else {
                MAX_LIMIT
            };
            let limit = count(issues, "limit", raw.limit?, max);
            let window_us = window(issues, &format!("{path}.window"), raw.window.as_deref()?);
            let (limit, window_us) = (limit?, window_us?);
            Some(match algorithm {
                "fixed_window" => Algorithm::FixedWindow(FixedWindow::new(limit, window_us)),
                "sliding_window_log" => {
                    Algorithm::SlidingWindowLog(SlidingWindowLog::new(limit, window_us))
                }
                _ => {
                    let window_ms = window_us / 1_000;
                    // The weighted sum reaches 3 x limit x window_ms; the Lua mirror needs it exact.
                    if u128::from(limit) * u128::from(window_ms)
                        >= u128::from(EXACT_INTEGER_LIMIT / 4)
                    {
                        issues.add(
                            format!("{path}.limit"),
                            "limit x window (in ms) must stay below 2^51 for exact weighting; shorten the window or lower the limit",
                        );
                        return None;
                    }
                    Algorithm::SlidingWindowCounter(SlidingWindowCounter::new(limit, window_ms))
                }
            })
        }
    }
}

fn rate(issues: &mut Issues, path: &str, value: f64) -> Option<f64> {
    if value.is_finite() && value > 0.0 && value <= MAX_RATE {
        Some(value)
    } else {
        issues.add(
            path,
            format!(
                "{value} is out of range; use a number above 0 and at most {MAX_RATE:e} per second"
            ),
        );
        None
    }
}

fn window(issues: &mut Issues, path: &str, text: &str) -> Option<u64> {
    let micros = match parse_duration(text) {
        Ok(duration) => u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        Err(message) => {
            issues.add(path, message);
            return None;
        }
    };
    if micros < 1_000 || micros % 1_000 != 0 || micros > MAX_WINDOW_US {
        issues.add(
            path,
            format!("`{text}` is out of range; use whole milliseconds from \"1ms\" to \"366d\""),
        );
        return None;
    }
    Some(micros)
}

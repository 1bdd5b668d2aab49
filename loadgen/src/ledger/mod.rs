//! The correctness ledger: for every key, was the admitted cost within what the rule allows
//! over the run (over-admission), and was anything denied while budget clearly remained
//! (under-admission)? Then: do the service's own counters agree with what the client saw?
//! `key` holds what workers record per key during the run; this module judges it after.

pub mod key;

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::{
    engine::RunResult,
    wire::{AlgorithmKind, LimitBound},
};
pub use key::KeyLedger;

/// When a run sent: its start (Unix microseconds) and how long it went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSpan {
    pub start_us: u64,
    pub elapsed_us: u64,
}

impl RunSpan {
    /// Clock difference allowed between the generator and the server when counting the
    /// aligned windows a run touched.
    const SKEW_US: u64 = 1_000_000;

    /// A run of `elapsed_us` from the Unix epoch (tests of the windowless bounds).
    pub const fn of_length(elapsed_us: u64) -> Self {
        Self {
            start_us: 0,
            elapsed_us,
        }
    }

    /// How many windows of `window_us` aligned to the epoch (as Sluice and envoyproxy/ratelimit
    /// align fixed windows) the run touched, allowing for clock skew.
    fn aligned_windows(self, window_us: u64) -> u64 {
        let window = window_us.max(1);
        let first = self.start_us.saturating_sub(Self::SKEW_US) / window;
        let last = (self.start_us + self.elapsed_us + Self::SKEW_US) / window;
        last - first + 1
    }
}

/// The most a key may be admitted over `span` under `algorithm` with `limit` per `window_us`
/// (the policy window the service reports), plus one unit for rounding.
pub fn admission_bound(algorithm: AlgorithmKind, limit: u64, window_us: u64, span: RunSpan) -> f64 {
    let limit = limit as f64;
    let window = window_us.max(1) as f64;
    let elapsed = span.elapsed_us as f64;
    let bound = match algorithm {
        // A bucket of `limit` refilled at limit / window: capacity + rate x elapsed.
        AlgorithmKind::TokenBucket | AlgorithmKind::Gcra => limit + limit * elapsed / window,
        // Exact sliding window: each window-long stretch holds at most `limit`.
        AlgorithmKind::SlidingWindowLog => limit * (elapsed / window).floor().max(0.0) + limit,
        // Any stretch spans at most floor(elapsed / window) + 2 windows; fewer when the
        // epoch-aligned windows the run touched say so (a run inside one hour: one window).
        AlgorithmKind::FixedWindow => {
            let spanned =
                ((elapsed / window).floor() + 2.0).min(span.aligned_windows(window_us) as f64);
            limit * spanned
        }
        AlgorithmKind::SlidingWindowCounter => limit * ((elapsed / window).floor() + 2.0),
    };
    bound + 1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyFinding {
    pub key: String,
    pub algorithm: Option<AlgorithmKind>,
    pub limit: u64,
    pub window_ms: f64,
    pub requested_cost: u64,
    pub admitted_cost: u64,
    /// Over-admission: the bound exceeded. Under-admission: the least that had to be admitted.
    pub threshold: f64,
}

/// A key a rule in shadow mode let through past its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowFinding {
    pub key: String,
    /// Cost admitted under the rule's enforced decisions.
    pub admitted_cost: u64,
    /// Cost let through that enforcing the rule would have refused.
    pub would_refuse_cost: u64,
}

/// The service's own counters against the client's, over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub service_allowed: u64,
    pub service_denied: u64,
    pub client_allowed: u64,
    pub client_denied: u64,
    /// Requests whose fate the client cannot know (errors, timeouts): the allowed slack.
    pub client_errors: u64,
    pub agrees: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerReport {
    pub keys_checked: usize,
    pub elapsed_ms: f64,
    pub over_admitted: Vec<KeyFinding>,
    pub under_admitted: Vec<KeyFinding>,
    /// Keys shadowed rules let through past their limits (not a failure: a rollout preview).
    #[serde(default)]
    pub shadow_denied: Vec<ShadowFinding>,
    pub reconciliation: Option<Reconciliation>,
}

impl LedgerReport {
    pub fn passed(&self) -> bool {
        self.over_admitted.is_empty()
            && self.under_admitted.is_empty()
            && self.reconciliation.as_ref().is_none_or(|r| r.agrees)
    }
}

/// Checks every key the run touched. `elapsed` is the whole sending window (warm-up included:
/// the ledger counts every request).
pub fn check(result: &RunResult) -> LedgerReport {
    let elapsed_us = result.elapsed.as_micros() as u64;
    let span = RunSpan {
        start_us: result
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64),
        elapsed_us,
    };
    let mut report = LedgerReport {
        elapsed_ms: elapsed_us as f64 / 1e3,
        ..LedgerReport::default()
    };
    for (index, key) in result.ledger.iter().enumerate() {
        let requested = key.requested_cost.load(Ordering::Relaxed);
        if requested == 0 {
            continue;
        }
        let Some(algorithm) = key.algorithm() else {
            continue;
        };
        report.keys_checked += 1;
        let reported = LimitBound {
            algorithm,
            limit: key.greatest_limit.load(Ordering::Relaxed),
            window_us: key.window_us.load(Ordering::Relaxed),
        };
        let (binding, bound) = binding_limit(key, reported, span);
        let LimitBound {
            algorithm,
            limit,
            window_us,
        } = binding;
        let admitted = key.admitted_cost.load(Ordering::Relaxed);
        let would_refuse = key.shadow_denied_cost.load(Ordering::Relaxed);
        if would_refuse > 0 {
            report.shadow_denied.push(ShadowFinding {
                key: result.keys.name(index).to_owned(),
                admitted_cost: admitted,
                would_refuse_cost: would_refuse,
            });
        }
        let finding = |threshold| KeyFinding {
            key: result.keys.name(index).to_owned(),
            algorithm: Some(algorithm),
            limit,
            window_ms: window_us as f64 / 1e3,
            requested_cost: requested,
            admitted_cost: admitted,
            threshold,
        };

        if admitted as f64 > bound {
            report.over_admitted.push(finding(bound));
        }
        // Starting from a fresh state, at least min(requested, limit) must get through; under
        // stacked limits, the least of them (every limit admits its own limit from fresh).
        if result.config.reset {
            let floor = requested.min(key.least_limit().unwrap_or(limit)) as f64;
            if (admitted as f64) < floor {
                report.under_admitted.push(finding(floor));
            }
        }
    }
    report
}

/// The limit that bounds what `key` may be admitted over `span`, with that bound: a stacked
/// rule's tightest limit over this run, else the limit the answers reported.
pub fn binding_limit(key: &KeyLedger, reported: LimitBound, span: RunSpan) -> (LimitBound, f64) {
    let bound_of =
        |limit: &LimitBound| admission_bound(limit.algorithm, limit.limit, limit.window_us, span);
    let binding = key
        .stacked_limits()
        .and_then(|limits| {
            limits
                .iter()
                .min_by(|a, b| bound_of(a).total_cmp(&bound_of(b)))
        })
        .copied()
        .unwrap_or(reported);
    (binding, bound_of(&binding))
}

/// Compares the service's counter deltas with what the client saw.
pub fn reconcile(result: &RunResult, before: (u64, u64), after: (u64, u64)) -> Reconciliation {
    let cost = result.config.cost.max(1);
    let sum = |field: fn(&KeyLedger) -> u64| result.ledger.iter().map(field).sum::<u64>();
    // The service counts a shadowed denial as let through, as the client saw it.
    let client_allowed = sum(|key| {
        key.admitted_cost.load(Ordering::Relaxed) + key.shadow_denied_cost.load(Ordering::Relaxed)
    }) / cost;
    let client_denied = sum(|key| key.denied.load(Ordering::Relaxed));
    let client_errors = sum(|key| key.errors.load(Ordering::Relaxed));
    let service_allowed = after.0.saturating_sub(before.0);
    let service_denied = after.1.saturating_sub(before.1);
    let gap = service_allowed.abs_diff(client_allowed) + service_denied.abs_diff(client_denied);
    Reconciliation {
        service_allowed,
        service_denied,
        client_allowed,
        client_denied,
        client_errors,
        agrees: gap <= client_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stacked_rule_is_bounded_by_its_tightest_limit_over_the_run() {
        let burst = LimitBound {
            algorithm: AlgorithmKind::TokenBucket,
            limit: 10,
            window_us: 10_000_000,
        };
        let daily = LimitBound {
            algorithm: AlgorithmKind::FixedWindow,
            limit: 1_000,
            window_us: 86_400_000_000,
        };
        let key = KeyLedger::default();
        let answer = |limits| crate::wire::Answer {
            allowed: true,
            banned: false,
            shadow_denied: false,
            limit: 1_000,
            remaining: 5,
            reset_after_us: 0,
            retry_after_us: 0,
            policy_window_us: daily.window_us,
            algorithm: Some(AlgorithmKind::FixedWindow),
            failed_over: false,
            limits,
        };
        let listed = crate::wire::LimitBounds::from_list(&[burst, daily]);
        key.record(1, &Ok(answer(listed)));
        let second = 1_000_000;
        // Over 2 s the burst (10, refilling 1/s) binds: about 12; the daily limit, not the
        // last one reported, would have allowed 1,000.
        let (binding, bound) = binding_limit(&key, daily, RunSpan::of_length(2 * second));
        assert_eq!(binding, burst);
        assert!(bound < 20.0, "{bound}");
        // Without the listed limits the reported one is all there is.
        let (binding, _) =
            binding_limit(&KeyLedger::default(), daily, RunSpan::of_length(2 * second));
        assert_eq!(binding, daily);
    }

    #[test]
    fn bounds_follow_each_algorithm() {
        let second = 1_000_000;
        // 10 tokens refilled over 1 s, for 2 s: 10 + 20, plus rounding.
        assert_eq!(
            admission_bound(
                AlgorithmKind::TokenBucket,
                10,
                second,
                RunSpan::of_length(2 * second)
            ),
            31.0
        );
        assert_eq!(
            admission_bound(
                AlgorithmKind::SlidingWindowLog,
                10,
                second,
                RunSpan::of_length(second / 2)
            ),
            11.0
        );
        assert_eq!(
            admission_bound(
                AlgorithmKind::FixedWindow,
                10,
                second,
                RunSpan::of_length(second / 2)
            ),
            21.0
        );
        // Half a second in the middle of an hour touches one aligned hourly window.
        let hour = 3_600 * second;
        let mid_hour = RunSpan {
            start_us: 1_000 * hour + hour / 2,
            elapsed_us: second / 2,
        };
        assert_eq!(
            admission_bound(AlgorithmKind::FixedWindow, 40, hour, mid_hour),
            41.0
        );
        // Across the hour's end: two windows.
        let across = RunSpan {
            start_us: 1_001 * hour - second / 4,
            elapsed_us: second / 2,
        };
        assert_eq!(
            admission_bound(AlgorithmKind::FixedWindow, 40, hour, across),
            81.0
        );
    }
}

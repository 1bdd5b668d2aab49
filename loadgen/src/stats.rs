//! What a run measured. Workers record into a few [`Recorder`]s, two per core, each behind a
//! lock its workers rarely meet at; the timeline is merged once per interval. (The per-key
//! ledger's atomics are `crate::ledger::key`'s.)

use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, Serializer, V2DeflateSerializer},
};
use serde::{Deserialize, Serialize};

use crate::wire::{Answer, ErrorKind};

/// Latencies are microseconds, tracked up to a minute at 3 significant digits.
pub const MAX_LATENCY_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
    histogram.auto(true);
    histogram
}

/// Per-interval histograms, one per interval for the whole run, so they must stay small:
/// 2 significant digits, 32-bit counts, and a range that starts tiny and grows only to the
/// largest latency the interval saw (a few KB where a full-range one takes 20 KB).
pub fn interval_histogram() -> Histogram<u32> {
    let mut histogram = Histogram::new(2).expect("valid precision");
    histogram.auto(true);
    histogram
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    Banned,
    /// Let through by a rule in shadow mode that would have denied it.
    ShadowDenied,
    Error(ErrorKind),
}

impl Outcome {
    pub fn of(answer: &Answer) -> Self {
        if answer.banned {
            Outcome::Banned
        } else if answer.shadow_denied {
            Outcome::ShadowDenied
        } else if answer.allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub allowed: u64,
    pub denied: u64,
    pub banned: u64,
    /// Let through, but a shadowed rule would have denied them (absent before schema 2).
    #[serde(default)]
    pub shadow_denied: u64,
    pub timeout: u64,
    pub unavailable: u64,
    pub refused: u64,
    pub invalid_argument: u64,
    pub other: u64,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome) {
        let slot = match outcome {
            Outcome::Allowed => &mut self.allowed,
            Outcome::Denied => &mut self.denied,
            Outcome::Banned => &mut self.banned,
            Outcome::ShadowDenied => &mut self.shadow_denied,
            Outcome::Error(ErrorKind::Timeout) => &mut self.timeout,
            Outcome::Error(ErrorKind::Unavailable) => &mut self.unavailable,
            Outcome::Error(ErrorKind::Refused) => &mut self.refused,
            Outcome::Error(ErrorKind::InvalidArgument) => &mut self.invalid_argument,
            Outcome::Error(ErrorKind::Other) => &mut self.other,
        };
        *slot += 1;
    }

    pub fn merge(&mut self, other: &Counts) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.banned += other.banned;
        self.shadow_denied += other.shadow_denied;
        self.timeout += other.timeout;
        self.unavailable += other.unavailable;
        self.refused += other.refused;
        self.invalid_argument += other.invalid_argument;
        self.other += other.other;
    }

    pub fn errors(&self) -> u64 {
        self.timeout + self.unavailable + self.refused + self.invalid_argument + self.other
    }

    pub fn total(&self) -> u64 {
        self.allowed + self.denied + self.banned + self.shadow_denied + self.errors()
    }

    /// "timeout 3, refused 2": the error kinds that occurred, or "" when none did.
    pub fn error_summary(&self) -> String {
        let kinds: Vec<String> = self
            .error_kinds()
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        kinds.join(", ")
    }

    /// (label, count) for each error kind.
    pub fn error_kinds(&self) -> [(&'static str, u64); 5] {
        [
            (ErrorKind::Timeout.label(), self.timeout),
            (ErrorKind::Unavailable.label(), self.unavailable),
            (ErrorKind::Refused.label(), self.refused),
            (ErrorKind::InvalidArgument.label(), self.invalid_argument),
            (ErrorKind::Other.label(), self.other),
        ]
    }
}

/// Latency by outcome, measured from the intended send time.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub all: Histogram<u64>,
    pub allowed: Histogram<u64>,
    pub denied: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            all: histogram(),
            allowed: histogram(),
            denied: histogram(),
        }
    }
}

impl Latencies {
    fn record(&mut self, outcome: Outcome, us: u64) {
        self.all.saturating_record(us);
        match outcome {
            // A shadowed denial was let through: the caller went ahead, as on an allowance.
            Outcome::Allowed | Outcome::ShadowDenied => self.allowed.saturating_record(us),
            Outcome::Denied | Outcome::Banned => self.denied.saturating_record(us),
            Outcome::Error(_) => {}
        }
    }

    fn merge(&mut self, other: &Latencies) {
        self.all.add(&other.all).expect("same bounds");
        self.allowed.add(&other.allowed).expect("same bounds");
        self.denied.add(&other.denied).expect("same bounds");
    }
}

/// One target's share of a run.
#[derive(Debug, Clone)]
pub struct TargetRecord {
    pub counts: Counts,
    pub latency: Histogram<u64>,
    /// The most recent decision this target returned, and when (us since the run started).
    pub last: Option<(u64, Answer)>,
}

impl Default for TargetRecord {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            latency: histogram(),
            last: None,
        }
    }
}

/// One interval of the timeline.
#[derive(Debug, Clone)]
pub struct Interval {
    pub counts: Counts,
    pub latency: Histogram<u32>,
    pub per_target: Vec<TargetInterval>,
    /// How late sends were against the schedule (open model).
    pub lag: Histogram<u32>,
}

/// One target's share of an interval.
#[derive(Debug, Clone)]
pub struct TargetInterval {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram<u32>,
}

impl Interval {
    pub fn new(targets: usize) -> Self {
        Self {
            counts: Counts::default(),
            latency: interval_histogram(),
            per_target: (0..targets)
                .map(|_| TargetInterval {
                    requests: 0,
                    errors: 0,
                    latency: interval_histogram(),
                })
                .collect(),
            lag: interval_histogram(),
        }
    }

    /// Counts one request. Resizes the histograms as needed (saturating_record would clamp to
    /// their small starting range); latencies past a minute count as a minute.
    pub fn record(&mut self, target: usize, outcome: Outcome, latency_us: u64) {
        let latency_us = latency_us.clamp(1, MAX_LATENCY_US);
        self.counts.add(outcome);
        self.latency
            .record(latency_us)
            .expect("an auto-resizing histogram takes any value up to a minute");
        let share = &mut self.per_target[target];
        share.requests += 1;
        share.errors += u64::from(matches!(outcome, Outcome::Error(_)));
        share
            .latency
            .record(latency_us)
            .expect("an auto-resizing histogram takes any value up to a minute");
    }

    pub fn record_lag(&mut self, lag_us: u64) {
        self.lag
            .record(lag_us.clamp(1, MAX_LATENCY_US))
            .expect("an auto-resizing histogram takes any value up to a minute");
    }

    pub fn merge(&mut self, other: &Interval) {
        self.counts.merge(&other.counts);
        self.latency
            .add(&other.latency)
            .expect("auto-resizing histograms merge");
        for (mine, theirs) in self.per_target.iter_mut().zip(&other.per_target) {
            mine.requests += theirs.requests;
            mine.errors += theirs.errors;
            mine.latency
                .add(&theirs.latency)
                .expect("auto-resizing histograms merge");
        }
        self.lag
            .add(&other.lag)
            .expect("auto-resizing histograms merge");
    }
}

/// A finished interval in the form a run keeps until its end: counts, each target's requests
/// and errors, the percentiles the charts draw, and the latency histogram compressed for the
/// interval log. A few hundred bytes where the open [`Interval`] takes several KB, so a long
/// run's memory stays flat.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedInterval {
    pub counts: Counts,
    /// (requests, errors) per target.
    pub per_target: Vec<(u64, u64)>,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    /// The latency histogram, V2-serialized with deflate.
    latency: Vec<u8>,
}

impl SealedInterval {
    pub fn seal(interval: &Interval) -> Self {
        let mut sealed = Self {
            counts: interval.counts,
            per_target: interval
                .per_target
                .iter()
                .map(|share| (share.requests, share.errors))
                .collect(),
            p50_us: 0,
            p95_us: 0,
            p99_us: 0,
            latency: Vec::new(),
        };
        sealed.store_latency(&interval.latency);
        sealed
    }

    /// The interval's latency histogram, as it was recorded.
    pub fn latency(&self) -> Histogram<u32> {
        let mut histogram: Histogram<u32> = Deserializer::new()
            .deserialize(&mut self.latency.as_slice())
            .expect("a histogram this process serialized reads back");
        histogram.auto(true);
        histogram
    }

    /// Adds what a worker recorded in this interval after it was sealed (a slow request).
    pub fn absorb(&mut self, late: &Interval) {
        self.counts.merge(&late.counts);
        for (mine, theirs) in self.per_target.iter_mut().zip(&late.per_target) {
            mine.0 += theirs.requests;
            mine.1 += theirs.errors;
        }
        let mut latency = self.latency();
        latency
            .add(&late.latency)
            .expect("auto-resizing histograms merge");
        self.store_latency(&latency);
    }

    fn store_latency(&mut self, latency: &Histogram<u32>) {
        let at = |quantile| {
            if latency.is_empty() {
                0
            } else {
                latency.value_at_quantile(quantile)
            }
        };
        (self.p50_us, self.p95_us, self.p99_us) = (at(0.50), at(0.95), at(0.99));
        self.latency.clear();
        V2DeflateSerializer::new()
            .serialize(latency, &mut self.latency)
            .expect("serializing into memory cannot fail");
    }
}

/// Everything one worker measured.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub counts: Counts,
    /// From the intended send time (the honest figure).
    pub corrected: Latencies,
    /// From the actual send time (what a closed-loop tool would report).
    pub uncorrected: Histogram<u64>,
    /// How late the generator sent each request against its schedule.
    pub lag: Histogram<u64>,
    pub targets: Vec<TargetRecord>,
}

impl Recorder {
    pub fn new(targets: usize) -> Self {
        Self {
            counts: Counts::default(),
            corrected: Latencies::default(),
            uncorrected: histogram(),
            lag: histogram(),
            targets: vec![TargetRecord::default(); targets],
        }
    }

    pub fn record(
        &mut self,
        target: usize,
        outcome: Outcome,
        corrected_us: u64,
        uncorrected_us: u64,
    ) {
        self.counts.add(outcome);
        self.corrected.record(outcome, corrected_us);
        self.uncorrected.saturating_record(uncorrected_us);
        let record = &mut self.targets[target];
        record.counts.add(outcome);
        record.latency.saturating_record(corrected_us);
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.counts.merge(&other.counts);
        self.corrected.merge(&other.corrected);
        self.uncorrected
            .add(&other.uncorrected)
            .expect("same bounds");
        self.lag.add(&other.lag).expect("same bounds");
        for (mine, theirs) in self.targets.iter_mut().zip(&other.targets) {
            mine.counts.merge(&theirs.counts);
            mine.latency.add(&theirs.latency).expect("same bounds");
            if theirs.last.map(|(at, _)| at) > mine.last.map(|(at, _)| at) {
                mine.last = theirs.last;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_and_name_their_errors() {
        let mut counts = Counts::default();
        for outcome in [
            Outcome::Allowed,
            Outcome::Denied,
            Outcome::Error(ErrorKind::Timeout),
            Outcome::Error(ErrorKind::Timeout),
            Outcome::Error(ErrorKind::Refused),
        ] {
            counts.add(outcome);
        }
        assert_eq!((counts.total(), counts.errors()), (5, 3));
        assert_eq!(counts.error_summary(), "timeout 2, refused 1");
        assert_eq!(Counts::default().error_summary(), "");
    }

    fn interval_of(latencies_us: &[u64]) -> Interval {
        let mut interval = Interval::new(2);
        for (i, &us) in latencies_us.iter().enumerate() {
            let outcome = if i % 3 == 0 {
                Outcome::Error(ErrorKind::Timeout)
            } else {
                Outcome::Allowed
            };
            interval.record(i % 2, outcome, us);
        }
        interval
    }

    #[test]
    fn a_sealed_interval_keeps_its_counts_percentiles_and_histogram() {
        let latencies: Vec<u64> = (1..=1000).map(|i| i * 7).collect();
        let open = interval_of(&latencies);
        let sealed = SealedInterval::seal(&open);
        assert_eq!(sealed.counts, open.counts);
        assert_eq!(sealed.per_target, vec![(500, 167), (500, 167)]);
        assert_eq!(sealed.latency(), open.latency);
        assert_eq!(sealed.p50_us, open.latency.value_at_quantile(0.5));
        assert_eq!(sealed.p99_us, open.latency.value_at_quantile(0.99));
        assert!(
            sealed.latency.len() < 1024,
            "sealed: {} bytes",
            sealed.latency.len()
        );
    }

    #[test]
    fn a_late_worker_is_merged_into_a_sealed_interval() {
        let mut sealed = SealedInterval::seal(&interval_of(&[100; 99]));
        assert_eq!(sealed.p99_us, 100);
        let late = interval_of(&[900_000; 3]);
        sealed.absorb(&late);
        assert_eq!(sealed.counts.total(), 102);
        assert_eq!(sealed.per_target[0].0 + sealed.per_target[1].0, 102);
        assert_eq!(sealed.latency().len(), 102);
        assert!(sealed.p99_us >= 890_000, "p99 {}", sealed.p99_us);
    }
}

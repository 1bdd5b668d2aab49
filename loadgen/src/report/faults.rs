//! The faults of a chaos run (`loadgen chaos`) as the report shows them: each with the outcome
//! counts of the equally long spans before it, during it and after it, read from the timeline.

use serde::{Deserialize, Serialize};

use super::summary::TimelinePoint;

/// A fault as a run's caller names it: what, and from when to when (seconds from the start of
/// the load).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpan {
    pub fault: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// The records of `spans`, with the timeline's outcomes around each.
pub fn records(
    spans: &[FaultSpan],
    timeline: &[TimelinePoint],
    interval_s: f64,
) -> Vec<FaultRecord> {
    spans
        .iter()
        .map(|span| {
            record(
                span.fault.clone(),
                span.start_s,
                span.end_s,
                timeline,
                interval_s,
            )
        })
        .collect()
}

/// One fault: what it was, when (seconds from the start of the load), and the outcomes around.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub fault: String,
    pub start_s: f64,
    pub end_s: f64,
    pub before: Outcomes,
    pub during: Outcomes,
    pub after: Outcomes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
}

impl Outcomes {
    fn add(&mut self, point: &TimelinePoint) {
        self.allowed += point.allowed;
        self.denied += point.denied;
        self.errors += point.errors;
    }
}

impl std::fmt::Display for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {} / {}", self.allowed, self.denied, self.errors)
    }
}

/// The fault `fault` from `start_s` to `end_s`, with the timeline's outcomes in the spans as
/// long as it just before, during and just after it. An interval (ending at its `t_s`,
/// `interval_s` long) counts in the span holding its middle.
pub fn record(
    fault: String,
    start_s: f64,
    end_s: f64,
    timeline: &[TimelinePoint],
    interval_s: f64,
) -> FaultRecord {
    let length = end_s - start_s;
    let mut record = FaultRecord {
        fault,
        start_s,
        end_s,
        before: Outcomes::default(),
        during: Outcomes::default(),
        after: Outcomes::default(),
    };
    for point in timeline {
        let middle = point.t_s - interval_s / 2.0;
        if (start_s - length..start_s).contains(&middle) {
            record.before.add(point);
        } else if (start_s..end_s).contains(&middle) {
            record.during.add(point);
        } else if (end_s..end_s + length).contains(&middle) {
            record.after.add(point);
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_s: f64, allowed: u64, denied: u64, errors: u64) -> TimelinePoint {
        TimelinePoint {
            t_s,
            allowed,
            denied,
            errors,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            per_target: Vec::new(),
        }
    }

    #[test]
    fn each_interval_counts_in_the_span_holding_its_middle() {
        // Ten 1 s intervals; the fault from 4 s to 6 s.
        let timeline: Vec<TimelinePoint> = (1..=10)
            .map(|second| point(second as f64, second, 10 * second, 100 * second))
            .collect();
        let record = record("partition=2".into(), 4.0, 6.0, &timeline, 1.0);
        // Before: the intervals ending at 3 and 4 s; during: 5 and 6; after: 7 and 8.
        assert_eq!(
            record.before,
            Outcomes {
                allowed: 7,
                denied: 70,
                errors: 700
            }
        );
        assert_eq!(record.during.allowed, 11);
        assert_eq!(record.after.allowed, 15);
    }

    #[test]
    fn a_fault_at_the_start_has_nothing_before_it() {
        let timeline = vec![point(0.5, 1, 0, 0), point(1.0, 2, 0, 0)];
        let record = record("loss=5".into(), 0.0, 0.5, &timeline, 0.5);
        assert_eq!(record.before, Outcomes::default());
        assert_eq!(record.during.allowed, 1);
        assert_eq!(record.after.allowed, 2);
    }
}

//! Sliding window log: the exact sliding window. Every admitted request is logged with its
//! time and cost; a request is allowed when the cost logged in the last `window_us`, plus its
//! own, is at most `limit`. Memory grows with the limit (one entry per admitting microsecond),
//! so configuration caps the limit.
//!
//! Bound: any interval shorter than a window admits at most `limit`.

use std::collections::VecDeque;

use super::{Decision, NEVER};

#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindowLog {
    limit: u64,
    window_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingWindowLogState {
    /// (time admitted, cost), oldest first. Same-microsecond admissions share one entry.
    pub entries: VecDeque<(u64, u64)>,
    /// Sum of the costs in `entries`.
    pub total: u64,
}

impl SlidingWindowLog {
    /// `limit >= 1`, `window_us >= 1`; configuration validates both.
    pub fn new(limit: u64, window_us: u64) -> Self {
        Self { limit, window_us }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn window_us(&self) -> u64 {
        self.window_us
    }

    #[inline]
    pub fn check(&self, state: &mut SlidingWindowLogState, cost: u64, now_us: u64) -> Decision {
        // An entry logged at `t` leaves the window once `now >= t + window`.
        while let Some(&(at, logged)) = state.entries.front() {
            if at.saturating_add(self.window_us) > now_us {
                break;
            }
            state.entries.pop_front();
            state.total -= logged;
        }
        let allowed = cost <= self.limit - state.total;
        if allowed && cost > 0 {
            state.total += cost;
            match state.entries.back_mut() {
                Some((at, logged)) if *at >= now_us => *logged += cost,
                _ => state.entries.push_back((now_us, cost)),
            }
        }
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit - state.total,
            reset_after_us: state
                .entries
                .back()
                .map_or(0, |&(at, _)| (at + self.window_us).saturating_sub(now_us)),
            retry_after_us: if allowed {
                0
            } else {
                self.retry_after_us(state, cost, now_us)
            },
        }
    }

    /// Time until enough of the oldest entries have left the window for `cost` to fit.
    fn retry_after_us(&self, state: &SlidingWindowLogState, cost: u64, now_us: u64) -> u64 {
        if cost > self.limit {
            return NEVER;
        }
        let mut total = state.total;
        for &(at, logged) in &state.entries {
            total -= logged;
            if total + cost <= self.limit {
                return (at + self.window_us).saturating_sub(now_us);
            }
        }
        unreachable!("an empty log fits any cost <= limit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;
    use crate::algorithm::testkit::{assert_interval_bound, run_sequence, sequences};
    use proptest::prelude::*;

    #[test]
    fn exact_window_slides() {
        let log = SlidingWindowLog::new(3, 1_000_000);
        let mut state = SlidingWindowLogState::default();
        assert!(log.check(&mut state, 2, 100_000).allowed);
        assert!(log.check(&mut state, 1, 600_000).allowed);
        let denied = log.check(&mut state, 2, 700_000);
        assert!(!denied.allowed);
        // Needs the 2 logged at 0.1 s to leave: at 1.1 s.
        assert_eq!(denied.retry_after_us, 400_000);
        assert_eq!(denied.reset_after_us, 900_000);
        assert!(!log.check(&mut state, 2, 1_099_999).allowed);
        assert!(log.check(&mut state, 2, 1_100_000).allowed);
        assert_eq!(state.total, 3);
    }

    #[test]
    fn same_microsecond_admissions_share_an_entry() {
        let log = SlidingWindowLog::new(100, 1_000);
        let mut state = SlidingWindowLogState::default();
        for _ in 0..50 {
            log.check(&mut state, 1, 7);
        }
        assert_eq!(state.entries.len(), 1);
        assert_eq!(state.total, 50);
    }

    proptest! {
        #[test]
        fn any_interval_shorter_than_the_window_admits_at_most_limit(
            limit in 1u64..40,
            window_ms in 1u64..2_000,
            requests in sequences(40, 300_000),
        ) {
            let window_us = window_ms * 1000;
            let admitted = run_sequence(&Algorithm::SlidingWindowLog(SlidingWindowLog::new(limit, window_us)), &requests);
            assert_interval_bound(&admitted, |span_us| {
                if span_us < window_us { limit as f64 } else { f64::INFINITY }
            });
        }
    }
}

//! GCRA (generic cell rate algorithm): the token bucket as one timestamp, the theoretical
//! arrival time (TAT). `rate` units per second are emitted one every `emission_interval_us`;
//! up to `burst` may be spent at once.
//!
//! Bound: over any interval of `d` microseconds the admitted cost is at most
//! `burst + d / emission_interval_us`.

use super::{Decision, NEVER};

#[derive(Debug, Clone, PartialEq)]
pub struct Gcra {
    rate_per_second: f64,
    burst: u64,
    emission_interval_us: u64,
    /// How far ahead of `now` the TAT may run: `burst * emission_interval_us`.
    tolerance_us: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcraState {
    /// Theoretical arrival time, microseconds; 0 for a fresh key.
    pub tat_us: u64,
}

impl Gcra {
    /// The emission interval is rounded up to whole microseconds, so rounding can only make
    /// the limit stricter, never looser. Configuration validates `rate_per_second > 0` and
    /// `burst >= 1`, and keeps `burst * emission_interval_us` below 2^53.
    pub fn new(rate_per_second: f64, burst: u64) -> Self {
        let emission_interval_us = Self::emission_interval_us_for(rate_per_second);
        Self {
            rate_per_second,
            burst,
            emission_interval_us,
            tolerance_us: emission_interval_us.saturating_mul(burst),
        }
    }

    /// Microseconds between emissions at `rate_per_second`, rounded up, at least 1.
    pub fn emission_interval_us_for(rate_per_second: f64) -> u64 {
        ((1e6 / rate_per_second).ceil() as u64).max(1)
    }

    pub fn rate_per_second(&self) -> f64 {
        self.rate_per_second
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    pub fn emission_interval_us(&self) -> u64 {
        self.emission_interval_us
    }

    pub fn full_refill_us(&self) -> u64 {
        self.tolerance_us
    }

    #[inline]
    pub fn check(&self, state: &mut GcraState, cost: u64, now_us: u64) -> Decision {
        let tat = state.tat_us.max(now_us);
        let new_tat = tat.saturating_add(self.emission_interval_us.saturating_mul(cost));
        let horizon = now_us.saturating_add(self.tolerance_us);
        let allowed = new_tat <= horizon;
        let retry_after_us = if allowed {
            0
        } else if cost > self.burst {
            NEVER
        } else {
            new_tat - horizon
        };
        if allowed {
            state.tat_us = new_tat;
        }
        let tat_after = state.tat_us.max(now_us);
        Decision {
            allowed,
            limit: self.burst,
            // Saturating: a clock that stepped back can leave the TAT beyond the horizon.
            remaining: horizon.saturating_sub(tat_after) / self.emission_interval_us,
            reset_after_us: tat_after - now_us,
            retry_after_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;
    use crate::algorithm::testkit::{assert_interval_bound, run_sequence, sequences};
    use proptest::prelude::*;

    #[test]
    fn burst_then_one_per_interval() {
        let gcra = Gcra::new(10.0, 3);
        assert_eq!(gcra.emission_interval_us(), 100_000);
        let mut state = GcraState::default();
        let now = 5_000_000;
        for remaining in [2, 1, 0] {
            let d = gcra.check(&mut state, 1, now);
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
        }
        let denied = gcra.check(&mut state, 1, now);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_us, 100_000);
        assert_eq!(denied.reset_after_us, 300_000);
        assert!(!gcra.check(&mut state, 1, now + 99_999).allowed);
        assert!(gcra.check(&mut state, 1, now + 100_000).allowed);
    }

    #[test]
    fn fractional_rates_round_the_interval_up() {
        let gcra = Gcra::new(3.0, 1);
        assert_eq!(gcra.emission_interval_us(), 333_334);
        let gcra = Gcra::new(0.5, 1);
        assert_eq!(gcra.emission_interval_us(), 2_000_000);
    }

    #[test]
    fn cost_above_burst_is_never_allowed() {
        let gcra = Gcra::new(100.0, 5);
        let mut state = GcraState::default();
        let d = gcra.check(&mut state, 6, 1);
        assert_eq!(
            (d.allowed, d.retry_after_us, d.remaining),
            (false, NEVER, 5)
        );
    }

    proptest! {
        #[test]
        fn admitted_cost_respects_burst_plus_rate(
            burst in 1u64..40,
            rate_milli in 1u64..50_000,
            requests in sequences(40, 300_000),
        ) {
            let gcra = Gcra::new(rate_milli as f64 / 1000.0, burst);
            let interval = gcra.emission_interval_us();
            let admitted = run_sequence(&Algorithm::Gcra(gcra), &requests);
            assert_interval_bound(&admitted, |span_us| burst as f64 + span_us as f64 / interval as f64);
        }

        #[test]
        fn extreme_inputs_do_not_overflow(
            rate in 1e-3f64..1e9,
            burst in 1u64..1_000_000,
            steps in proptest::collection::vec((0u64..u64::MAX / 4, 0u64..u64::MAX), 1..40),
        ) {
            let gcra = Gcra::new(rate, burst);
            let mut state = GcraState::default();
            let mut now = 0u64;
            for (dt, cost) in steps {
                now = now.saturating_add(dt);
                let d = gcra.check(&mut state, cost, now);
                prop_assert!(d.remaining <= burst);
            }
        }
    }
}

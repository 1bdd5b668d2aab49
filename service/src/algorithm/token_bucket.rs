//! Token bucket: a bucket of `capacity` tokens refilled continuously at `refill_per_second`.
//!
//! Bound: over any interval of `d` microseconds the admitted cost is at most
//! `capacity + refill_per_second * d / 1e6`.

use super::{Decision, NEVER};

/// Slack in token comparisons. Refilling adds `elapsed * rate` in floating point, and many
/// small additions can land a hair under a whole token (2,000 refills of 0.0005 sum to
/// 0.99999…), which would deny a request the bucket has earned. A billionth of a token absorbs
/// that drift while letting through at most one extra token per billion decisions.
pub const TOKEN_EPSILON: f64 = 1e-9;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: u64,
    refill_per_second: f64,
    /// Tokens per microsecond: the unit every computation below uses.
    refill_per_us: f64,
}

/// Tokens are fractional so a slow refill (0.5/s) polled often still refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucketState {
    pub tokens: f64,
    pub last_refill_us: u64,
}

impl TokenBucket {
    /// `capacity >= 1`, `refill_per_second > 0` and finite; configuration validates both.
    pub fn new(capacity: u64, refill_per_second: f64) -> Self {
        debug_assert!(capacity >= 1 && refill_per_second > 0.0 && refill_per_second.is_finite());
        Self {
            capacity,
            refill_per_second,
            refill_per_us: refill_per_second / 1e6,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn refill_per_second(&self) -> f64 {
        self.refill_per_second
    }

    /// Tokens per microsecond, the exact `f64` every computation uses (the Lua mirror gets it too).
    pub fn refill_per_us(&self) -> f64 {
        self.refill_per_us
    }

    /// Microseconds an empty bucket takes to fill.
    pub fn full_refill_us(&self) -> u64 {
        self.micros_to_gain(self.capacity as f64, 0.0)
    }

    pub fn fresh_state(&self, now_us: u64) -> TokenBucketState {
        TokenBucketState {
            tokens: self.capacity as f64,
            last_refill_us: now_us,
        }
    }

    #[inline]
    pub fn check(&self, state: &mut TokenBucketState, cost: u64, now_us: u64) -> Decision {
        let capacity = self.capacity as f64;
        let elapsed = now_us.saturating_sub(state.last_refill_us);
        let tokens = capacity.min(state.tokens + elapsed as f64 * self.refill_per_us);
        // Refilled state is kept even on a denial, so retry-after below is computed from
        // exactly the state the retry will start from.
        state.last_refill_us = state.last_refill_us.max(now_us);
        let wanted = cost as f64;
        let allowed = wanted <= tokens + TOKEN_EPSILON;
        state.tokens = if allowed {
            (tokens - wanted).max(0.0)
        } else {
            tokens
        };
        let retry_after_us = if allowed {
            0
        } else if cost > self.capacity {
            NEVER
        } else {
            self.micros_to_gain(wanted, state.tokens)
        };
        Decision {
            allowed,
            limit: self.capacity,
            remaining: state.tokens.floor() as u64,
            reset_after_us: self.micros_to_gain(capacity, state.tokens),
            retry_after_us,
        }
    }

    /// The fewest whole microseconds after which `tokens` has refilled to at least `target`,
    /// evaluated with the very expression `check` uses, so a retry at that time is allowed.
    fn micros_to_gain(&self, target: f64, tokens: f64) -> u64 {
        let reached = |us: u64| tokens + us as f64 * self.refill_per_us + TOKEN_EPSILON >= target;
        if reached(0) {
            return 0;
        }
        let mut us = ((target - tokens) / self.refill_per_us).ceil() as u64;
        // The division is off by at most a few units of rounding; configuration keeps every
        // refill time below 2^53 us, where one more microsecond always changes the sum, so these
        // corrections finish in a step or two. The bound only guards against a hang.
        for _ in 0..64 {
            if reached(us) {
                break;
            }
            us = us.saturating_add(1);
        }
        for _ in 0..64 {
            if us == 0 || !reached(us - 1) {
                break;
            }
            us -= 1;
        }
        us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testkit::{assert_interval_bound, run_sequence, sequences};
    use crate::algorithm::{Algorithm, State};
    use proptest::prelude::*;

    #[test]
    fn spends_capacity_then_denies_with_honest_retry() {
        let bucket = TokenBucket::new(3, 1.0);
        let mut state = bucket.fresh_state(0);
        for expected_remaining in [2, 1, 0] {
            let d = bucket.check(&mut state, 1, 0);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
        }
        let denied = bucket.check(&mut state, 1, 0);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_us, 1_000_000);
        assert_eq!(denied.reset_after_us, 3_000_000);
        assert!(!bucket.check(&mut state, 1, 999_999).allowed);
        assert!(bucket.check(&mut state, 1, 1_000_000).allowed);
    }

    #[test]
    fn fractional_refill_accumulates_across_frequent_polls() {
        let bucket = TokenBucket::new(1, 0.5);
        let mut state = bucket.fresh_state(0);
        assert!(bucket.check(&mut state, 1, 0).allowed);
        // Polling every millisecond must not lose the fractional refill.
        let mut t = 0;
        while t < 1_999_000 {
            t += 1_000;
            assert!(
                !bucket.check(&mut state, 1, t).allowed,
                "allowed early at {t}"
            );
        }
        assert!(bucket.check(&mut state, 1, 2_000_000).allowed);
    }

    #[test]
    fn cost_above_capacity_is_never_allowed() {
        let bucket = TokenBucket::new(5, 10.0);
        let mut state = bucket.fresh_state(0);
        let d = bucket.check(&mut state, 6, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, NEVER);
        assert_eq!(d.remaining, 5, "a denial spends nothing");
    }

    #[test]
    fn clock_stepping_back_adds_nothing() {
        let bucket = TokenBucket::new(2, 1.0);
        let mut state = bucket.fresh_state(10_000_000);
        assert!(bucket.check(&mut state, 2, 10_000_000).allowed);
        assert!(!bucket.check(&mut state, 1, 5_000_000).allowed);
        assert_eq!(state.last_refill_us, 10_000_000);
    }

    #[test]
    fn huge_idle_gap_refills_to_capacity_without_overflow() {
        let bucket = TokenBucket::new(10, 1e9);
        let mut state = bucket.fresh_state(0);
        bucket.check(&mut state, 10, 0);
        let d = bucket.check(&mut state, 1, u64::MAX);
        assert!(d.allowed);
        assert_eq!(d.remaining, 9);
    }

    proptest! {
        #[test]
        fn admitted_cost_respects_capacity_plus_refill(
            capacity in 1u64..50,
            refill_milli in 1u64..20_000,
            requests in sequences(50, 400_000),
        ) {
            let refill = refill_milli as f64 / 1000.0;
            let algorithm = Algorithm::TokenBucket(TokenBucket::new(capacity, refill));
            let admitted = run_sequence(&algorithm, &requests);
            assert_interval_bound(&admitted, |span_us| capacity as f64 + refill * span_us as f64 / 1e6 + requests.len() as f64 * TOKEN_EPSILON);
        }

        #[test]
        fn state_never_goes_negative_or_above_capacity(
            capacity in 1u64..1_000_000_000,
            refill in 1.0f64..1e9,
            steps in proptest::collection::vec((0u64..u64::MAX / 4, 0u64..2_000_000_000), 1..40),
        ) {
            let bucket = TokenBucket::new(capacity, refill);
            let mut state = bucket.fresh_state(0);
            let mut now = 0u64;
            for (dt, cost) in steps {
                now = now.saturating_add(dt);
                let d = bucket.check(&mut state, cost, now);
                prop_assert!(state.tokens >= 0.0 && state.tokens <= capacity as f64);
                prop_assert!(d.remaining <= capacity);
                let _ = Algorithm::TokenBucket(bucket.clone()).peek(&State::TokenBucket(state), now);
            }
        }
    }
}

//! Sliding window counter: two aligned window counts, the previous one weighted by how much of
//! it still overlaps the sliding window: `prev * (W - elapsed) / W + curr`. Constant memory,
//! smoother than a fixed window; an approximation of the exact log.
//!
//! Weights are computed in whole milliseconds with integer arithmetic (never floats), so Redis
//! and every node compute the same answer.
//!
//! Bound: each aligned window admits at most `limit`; any interval shorter than a window
//! admits at most `2 * limit`.

use super::{Decision, NEVER, window_start};

const MICROS_PER_MS: u64 = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindowCounter {
    limit: u64,
    window_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlidingWindowCounterState {
    pub window_start_us: u64,
    pub current: u64,
    pub previous: u64,
}

impl SlidingWindowCounter {
    /// `limit >= 1`, `window_ms >= 1`, `limit * window_ms < 2^51`; configuration validates them.
    pub fn new(limit: u64, window_ms: u64) -> Self {
        Self { limit, window_ms }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub fn window_us(&self) -> u64 {
        self.window_ms * MICROS_PER_MS
    }

    #[inline]
    pub fn check(&self, state: &mut SlidingWindowCounterState, cost: u64, now_us: u64) -> Decision {
        let window_us = self.window_us();
        let start = window_start(now_us, window_us);
        if start > state.window_start_us {
            let previous = if start - state.window_start_us == window_us {
                state.current
            } else {
                0
            };
            *state = SlidingWindowCounterState {
                window_start_us: start,
                current: 0,
                previous,
            };
        }
        let elapsed_ms =
            (now_us.saturating_sub(state.window_start_us) / MICROS_PER_MS).min(self.window_ms - 1);
        let w = u128::from(self.window_ms);
        let budget = u128::from(self.limit) * w;
        // Everything is scaled by the window length in ms to stay in integers.
        let weighted = |previous: u64, elapsed_ms: u64, current: u64| {
            u128::from(previous) * u128::from(self.window_ms - elapsed_ms) + u128::from(current) * w
        };
        let allowed =
            weighted(state.previous, elapsed_ms, state.current) + u128::from(cost) * w <= budget;
        if allowed {
            state.current += cost;
        }
        let used = weighted(state.previous, elapsed_ms, state.current);
        Decision {
            allowed,
            limit: self.limit,
            remaining: (budget.saturating_sub(used) / w) as u64,
            reset_after_us: self.reset_after_us(state, now_us),
            retry_after_us: if allowed {
                0
            } else {
                self.retry_after_us(state, cost, now_us)
            },
        }
    }

    fn reset_after_us(&self, state: &SlidingWindowCounterState, now_us: u64) -> u64 {
        let windows_to_wait = if state.current > 0 {
            2
        } else if state.previous > 0 {
            1
        } else {
            return 0;
        };
        (state.window_start_us + windows_to_wait * self.window_us()).saturating_sub(now_us)
    }

    /// The earliest time the denied `cost` fits: later in this window as the previous window's
    /// weight decays, or else in the next window, where this window's count is the weighted one.
    fn retry_after_us(&self, state: &SlidingWindowCounterState, cost: u64, now_us: u64) -> u64 {
        if cost > self.limit {
            return NEVER;
        }
        let w = self.window_ms;
        // The first elapsed-ms `e` at which `weight * (w - e) + (base + cost) * w <= limit * w`.
        let first_fitting_ms = |weight: u64, base: u64| -> Option<u64> {
            let room = self.limit.checked_sub(base + cost)?;
            if weight == 0 {
                return Some(0);
            }
            let max_remaining_ms = (u128::from(room) * u128::from(w) / u128::from(weight)) as u64;
            Some(w.saturating_sub(max_remaining_ms))
        };
        let at_us = match first_fitting_ms(state.previous, state.current) {
            Some(ms) if ms < w => state.window_start_us + ms * MICROS_PER_MS,
            _ => {
                let next_start = state.window_start_us + self.window_us();
                // `cost <= limit`, so it fits at the latest when the next window ends.
                let ms = first_fitting_ms(state.current, 0).unwrap_or(w);
                next_start + ms * MICROS_PER_MS
            }
        };
        at_us.saturating_sub(now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;
    use crate::algorithm::testkit::{
        assert_aligned_window_bound, assert_interval_bound, run_sequence, sequences,
    };
    use proptest::prelude::*;

    #[test]
    fn previous_window_weight_decays() {
        let counter = SlidingWindowCounter::new(10, 1_000);
        let mut state = SlidingWindowCounterState::default();
        for _ in 0..10 {
            assert!(counter.check(&mut state, 1, 500_000).allowed);
        }
        // At 1.25 s the previous window (10) still weighs 75%: 7.5 used, 2 fit.
        let d = counter.check(&mut state, 2, 1_250_000);
        assert_eq!((d.allowed, d.remaining), (true, 0));
        let denied = counter.check(&mut state, 1, 1_250_000);
        assert!(!denied.allowed);
        // 10 * (1000 - e) + 3 * 1000 <= 10 * 1000  <=>  e >= 300 ms.
        assert_eq!(denied.retry_after_us, 50_000);
        assert!(counter.check(&mut state, 1, 1_300_000).allowed);
    }

    #[test]
    fn a_full_current_window_waits_into_the_next() {
        let counter = SlidingWindowCounter::new(4, 100);
        let mut state = SlidingWindowCounterState::default();
        assert!(counter.check(&mut state, 4, 10_000).allowed);
        let denied = counter.check(&mut state, 2, 20_000);
        // Next window starts at 100 ms with previous = 4: 4 * (100 - e) + 2 * 100 <= 400 at e = 50.
        assert_eq!(denied.retry_after_us, 130_000);
        assert!(!counter.check(&mut state, 2, 149_999).allowed);
        assert!(counter.check(&mut state, 2, 150_000).allowed);
    }

    proptest! {
        #[test]
        fn bounded_per_aligned_window_and_per_sliding_interval(
            limit in 1u64..40,
            window_ms in 1u64..2_000,
            requests in sequences(40, 300_000),
        ) {
            let window_us = window_ms * 1000;
            let algorithm = Algorithm::SlidingWindowCounter(SlidingWindowCounter::new(limit, window_ms));
            let admitted = run_sequence(&algorithm, &requests);
            assert_aligned_window_bound(&admitted, window_us, limit);
            assert_interval_bound(&admitted, |span_us| {
                if span_us < window_us { 2.0 * limit as f64 } else { f64::INFINITY }
            });
        }
    }
}

//! Fixed window: at most `limit` per aligned window of `window_us` (windows start at multiples
//! of the window length, so every node and Redis agree on the boundaries).
//!
//! Bound: each aligned window admits at most `limit`; any interval shorter than a window spans
//! two windows and so admits at most `2 * limit`.

use super::{Decision, NEVER, window_start};

#[derive(Debug, Clone, PartialEq)]
pub struct FixedWindow {
    limit: u64,
    window_us: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FixedWindowState {
    pub window_start_us: u64,
    pub count: u64,
}

impl FixedWindow {
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
    pub fn check(&self, state: &mut FixedWindowState, cost: u64, now_us: u64) -> Decision {
        let start = window_start(now_us, self.window_us);
        if start > state.window_start_us {
            *state = FixedWindowState {
                window_start_us: start,
                count: 0,
            };
        }
        // A clock that stepped back into an earlier window keeps counting in the newer one.
        let window_end = state.window_start_us.saturating_add(self.window_us);
        let until_window_end = window_end.saturating_sub(now_us);
        let allowed = cost <= self.limit - state.count.min(self.limit);
        if allowed {
            state.count += cost;
        }
        let retry_after_us = if allowed {
            0
        } else if cost > self.limit {
            NEVER
        } else {
            until_window_end
        };
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit - state.count,
            reset_after_us: if state.count == 0 {
                0
            } else {
                until_window_end
            },
            retry_after_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;
    use crate::algorithm::testkit::{assert_aligned_window_bound, run_sequence, sequences};
    use proptest::prelude::*;

    #[test]
    fn counts_per_aligned_window() {
        let window = FixedWindow::new(2, 1_000_000);
        let mut state = FixedWindowState::default();
        assert!(window.check(&mut state, 1, 1_200_000).allowed);
        let second = window.check(&mut state, 1, 1_500_000);
        assert_eq!((second.allowed, second.remaining), (true, 0));
        let denied = window.check(&mut state, 1, 1_700_000);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_us, 300_000);
        assert_eq!(denied.reset_after_us, 300_000);
        assert!(!window.check(&mut state, 1, 1_999_999).allowed);
        assert!(window.check(&mut state, 1, 2_000_000).allowed);
    }

    proptest! {
        #[test]
        fn each_aligned_window_admits_at_most_limit(
            limit in 1u64..40,
            window_ms in 1u64..2_000,
            requests in sequences(40, 300_000),
        ) {
            let window_us = window_ms * 1000;
            let admitted = run_sequence(&Algorithm::FixedWindow(FixedWindow::new(limit, window_us)), &requests);
            assert_aligned_window_bound(&admitted, window_us, limit);
        }
    }
}

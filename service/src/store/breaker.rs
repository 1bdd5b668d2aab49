//! A circuit breaker that tells a failing store from a busy one: it opens when, within the
//! current 100 ms window, at least `threshold` calls failed AND they are at least half of the
//! window's calls. A dead or partitioned store fails every call, so it opens after
//! `threshold` failures; a healthy store with a few slow calls among thousands stays closed.
//! Open, the store is not called for `backoff`; then exactly one request probes it, and its
//! outcome closes or reopens the circuit. Requests meanwhile are answered at local speed by
//! the rule's failure mode.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// The length of the window failures are counted in: short, so the successes before an
/// outage stop diluting its failures within a tenth of a second.
const WINDOW_US: u64 = 100_000;

/// A window's counts, packed in one word so they change together: the window's number (24
/// bits), its calls (20 bits) and its failures (20 bits), each count saturating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    window: u64,
    calls: u64,
    failures: u64,
}

const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const WINDOW_MASK: u64 = (1 << 24) - 1;

impl Counts {
    fn unpack(word: u64) -> Self {
        Self {
            window: word >> (2 * COUNT_BITS),
            calls: (word >> COUNT_BITS) & COUNT_MAX,
            failures: word & COUNT_MAX,
        }
    }

    fn pack(self) -> u64 {
        (self.window & WINDOW_MASK) << (2 * COUNT_BITS)
            | self.calls.min(COUNT_MAX) << COUNT_BITS
            | self.failures.min(COUNT_MAX)
    }

    /// These counts with one more call in `window` (a new window starts from zero).
    fn with_call(self, window: u64, failed: bool) -> Self {
        let window = window & WINDOW_MASK;
        let base = if self.window == window {
            self
        } else {
            Counts {
                window,
                calls: 0,
                failures: 0,
            }
        };
        Counts {
            window,
            calls: base.calls + 1,
            failures: base.failures + u64::from(failed),
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u64,
    backoff_us: u64,
    origin: Instant,
    counts: AtomicU64,
    /// 0 while closed; else microseconds since `origin` before which no call goes through
    /// (after it, one probe may).
    open_until_us: AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, backoff: Duration) -> Self {
        Self {
            threshold: u64::from(threshold.max(1)),
            backoff_us: backoff.as_micros() as u64,
            origin: Instant::now(),
            counts: AtomicU64::new(0),
            open_until_us: AtomicU64::new(0),
        }
    }

    /// May this call go to the store? In the half-open state only one caller wins the probe.
    pub fn allow(&self) -> bool {
        let until = self.open_until_us.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_us().max(1);
        now >= until
            && self
                .open_until_us
                .compare_exchange(
                    until,
                    now + self.backoff_us,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    pub fn on_success(&self) {
        self.count(false);
        if self.open_until_us.swap(0, Ordering::AcqRel) != 0 {
            // Closed again: the failures that opened it no longer count.
            self.counts.store(0, Ordering::Release);
        }
    }

    pub fn on_failure(&self) {
        let counts = self.count(true);
        let failing = counts.failures >= self.threshold && 2 * counts.failures >= counts.calls;
        let closed = self.open_until_us.load(Ordering::Acquire) == 0;
        if failing || !closed {
            // Opening, or a failed probe (or a call in flight while open) keeping it open.
            let until = self.now_us().max(1) + self.backoff_us;
            if self.open_until_us.swap(until, Ordering::AcqRel) == 0 {
                tracing::warn!(
                    failures = counts.failures,
                    calls = counts.calls,
                    backoff_ms = self.backoff_us / 1_000,
                    "store failing; opening the circuit"
                );
            }
        }
    }

    pub fn state(&self) -> CircuitState {
        let until = self.open_until_us.load(Ordering::Acquire);
        if until == 0 {
            CircuitState::Closed
        } else if self.now_us() < until {
            CircuitState::Open
        } else {
            CircuitState::HalfOpen
        }
    }

    /// Counts one call in the current window; the counts after it.
    fn count(&self, failed: bool) -> Counts {
        let window = self.now_us() / WINDOW_US;
        let mut word = self.counts.load(Ordering::Acquire);
        loop {
            let next = Counts::unpack(word).with_call(window, failed);
            match self.counts.compare_exchange_weak(
                word,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next,
                Err(actual) => word = actual,
            }
        }
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_lets_one_probe_through_after_backoff() {
        let breaker = Breaker::new(2, Duration::from_millis(30));
        breaker.on_failure();
        assert!(breaker.allow(), "one failure is under the threshold");
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(35));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(breaker.allow(), "the probe");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.on_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(breaker.allow());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let breaker = Breaker::new(1, Duration::from_millis(20));
        breaker.on_failure();
        std::thread::sleep(Duration::from_millis(25));
        assert!(breaker.allow());
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(!breaker.allow());
    }

    #[test]
    fn a_few_failures_among_many_successes_keep_it_closed() {
        let breaker = Breaker::new(3, Duration::from_millis(500));
        for call in 0..1_000 {
            if call % 50 == 0 {
                breaker.on_failure();
            } else {
                breaker.on_success();
            }
        }
        assert_eq!(breaker.state(), CircuitState::Closed, "20 of 1,000 failed");
        // The same store starting to fail every call opens it once failures are half.
        for _ in 0..1_000 {
            breaker.on_failure();
        }
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[test]
    fn counts_pack_and_saturate() {
        let counts = Counts {
            window: 7,
            calls: COUNT_MAX + 5,
            failures: 3,
        };
        let unpacked = Counts::unpack(counts.pack());
        assert_eq!(unpacked.window, 7);
        assert_eq!(unpacked.calls, COUNT_MAX);
        assert_eq!(unpacked.failures, 3);
        let next = unpacked.with_call(8, true);
        assert_eq!((next.window, next.calls, next.failures), (8, 1, 1));
    }
}

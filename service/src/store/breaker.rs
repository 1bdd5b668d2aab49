//! A circuit breaker: after `threshold` consecutive failures the store is not called for
//! `backoff`; then exactly one request probes it, and its outcome closes or reopens the circuit.
//! Requests meanwhile are answered at local speed by the rule's failure mode.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    backoff_us: u64,
    origin: Instant,
    consecutive_failures: AtomicU32,
    /// Microseconds since `origin` before which no call goes through.
    open_until_us: AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, backoff: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            backoff_us: backoff.as_micros() as u64,
            origin: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_us: AtomicU64::new(0),
        }
    }

    /// May this call go to the store? In the half-open state only one caller wins the probe.
    pub fn allow(&self) -> bool {
        if self.consecutive_failures.load(Ordering::Acquire) < self.threshold {
            return true;
        }
        let now = self.now_us();
        let until = self.open_until_us.load(Ordering::Acquire);
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
        if self.consecutive_failures.swap(0, Ordering::AcqRel) != 0 {
            self.open_until_us.store(0, Ordering::Release);
        }
    }

    pub fn on_failure(&self) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures == self.threshold {
            tracing::warn!(
                failures,
                backoff_ms = self.backoff_us / 1_000,
                "store failing; opening the circuit"
            );
        }
        if failures >= self.threshold {
            self.open_until_us
                .store(self.now_us() + self.backoff_us, Ordering::Release);
        }
    }

    pub fn state(&self) -> CircuitState {
        if self.consecutive_failures.load(Ordering::Acquire) < self.threshold {
            CircuitState::Closed
        } else if self.now_us() < self.open_until_us.load(Ordering::Acquire) {
            CircuitState::Open
        } else {
            CircuitState::HalfOpen
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
}

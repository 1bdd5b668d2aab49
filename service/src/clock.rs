//! Time for stores that keep state in this process. Algorithms never read a clock; stores do,
//! once per decision, and tests drive a [`Clock::manual`] one by hand.
//!
//! The system clock reads the CPU's time-stamp counter through quanta (falling back to the
//! OS's monotonic clock where the counter is not invariant): the memory store reads the clock
//! on every decision, and the OS clock costs several times the rest of a decision
//! (`cargo bench --bench decisions -- clock`, results/benchmarks/service-decisions.md).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

#[derive(Debug, Clone)]
pub enum Clock {
    /// Microseconds since the Unix epoch, read once at start and advanced by a monotonic clock,
    /// so windows align with wall time yet time never runs backwards.
    System {
        clock: quanta::Clock,
        origin_raw: u64,
        origin_us: u64,
    },
    /// Time that only moves when a test says so.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Self {
        let origin_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        let clock = quanta::Clock::new();
        Clock::System {
            origin_raw: clock.raw(),
            clock,
            origin_us,
        }
    }

    pub fn manual(start_us: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(start_us)))
    }

    pub fn now_us(&self) -> u64 {
        match self {
            Clock::System {
                clock,
                origin_raw,
                origin_us,
            } => origin_us + clock.delta_as_nanos(*origin_raw, clock.raw()) / 1_000,
            Clock::Manual(now) => now.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; a system clock ignores it.
    pub fn advance_us(&self, by_us: u64) {
        if let Clock::Manual(now) = self {
            now.fetch_add(by_us, Ordering::Relaxed);
        }
    }
}

//! Whether a store call past its deadline is worth waiting on: pure arithmetic on two times
//! the store notes as replies arrive, and an explicit `now`.
//!
//! A call late because Redis is busy answering a burst, or because this node's own threads
//! were starved of CPU (the reply sat unread), looks the same from here as a little of a slow
//! Redis. What tells them apart is that Redis keeps answering, and answering calls sent
//! shortly before this one. The tolerance for both is [`LIVENESS`], not the deadline: on a
//! 2-core machine a healthy Redis under a 2,000-call burst leaves this node without any reply
//! for tens of milliseconds (results/reliability.md has the measurements), and failing those
//! calls opened the breaker on a healthy Redis. So a silent Redis (partition, pause, crash) is
//! called after `LIVENESS`, one much slower than the deadline (replies for calls sent more
//! than `LIVENESS` earlier) at the deadline, and a burst is waited out.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long Redis may answer none of a node's calls, or answer only calls sent this long
/// before a late one, before that call fails: longer than the stalls a burst causes on a busy
/// machine, short enough that an outage is called within a tenth of a second.
pub const LIVENESS: Duration = Duration::from_millis(100);

/// When Redis last answered any of this node's calls, and the send time of the newest call it
/// answered, in microseconds since the store started.
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    last_reply_us: AtomicU64,
    newest_answered_sent_us: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_reply_us: AtomicU64::new(0),
            newest_answered_sent_us: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// Microseconds since the store started: the clock of every time here.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Notes that the call sent at `sent_us` was answered at `now_us`.
    pub fn answered(&self, sent_us: u64, now_us: u64) {
        self.last_reply_us.fetch_max(now_us, Ordering::Relaxed);
        self.newest_answered_sent_us
            .fetch_max(sent_us, Ordering::Relaxed);
    }

    /// Whether a call sent at `sent_us`, still unanswered at `now_us` past its deadline, is
    /// worth waiting on: Redis answered within `tolerance_us`, and answered calls sent at most
    /// `tolerance_us` before this one (replies come back in order, so this one is queued
    /// right behind those).
    pub fn worth_waiting(&self, sent_us: u64, now_us: u64, tolerance_us: u64) -> bool {
        let silent_for = now_us.saturating_sub(self.last_reply_us.load(Ordering::Relaxed));
        let behind_by =
            sent_us.saturating_sub(self.newest_answered_sent_us.load(Ordering::Relaxed));
        silent_for <= tolerance_us && behind_by <= tolerance_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: u64 = 100_000;

    fn liveness(last_reply_us: u64, newest_answered_sent_us: u64) -> Liveness {
        let liveness = Liveness::default();
        liveness.answered(newest_answered_sent_us, last_reply_us);
        liveness
    }

    #[test]
    fn a_burst_on_a_healthy_redis_is_waited_on() {
        // Sent at 1 s, judged 40 ms later; Redis answered calls sent 30 ms before it, 20 ms ago.
        assert!(liveness(1_020_000, 970_000).worth_waiting(1_000_000, 1_040_000, TOLERANCE));
    }

    #[test]
    fn a_silent_redis_fails_after_the_tolerance() {
        // The last reply came 100 ms before: the call waits on; a microsecond later it fails.
        let quiet = liveness(1_000_000, 999_000);
        assert!(quiet.worth_waiting(1_050_000, 1_100_000, TOLERANCE));
        assert!(!quiet.worth_waiting(1_050_000, 1_100_001, TOLERANCE));
        // A store that never answered anything.
        assert!(!Liveness::default().worth_waiting(1_000_000, 1_010_000, TOLERANCE));
    }

    #[test]
    fn a_redis_far_slower_than_the_tolerance_fails_at_once() {
        // 200 ms added latency: replies keep coming, each for a call sent 200 ms earlier.
        assert!(!liveness(2_009_000, 1_810_000).worth_waiting(2_000_000, 2_010_000, TOLERANCE));
        // 100 ms behind is the most tolerated.
        assert!(liveness(2_009_000, 1_900_000).worth_waiting(2_000_000, 2_010_000, TOLERANCE));
        assert!(!liveness(2_009_000, 1_899_999).worth_waiting(2_000_000, 2_010_000, TOLERANCE));
    }

    #[test]
    fn times_only_move_forward() {
        let liveness = liveness(5_000_000, 4_000_000);
        liveness.answered(1_000_000, 2_000_000);
        assert!(liveness.worth_waiting(4_050_000, 5_050_000, TOLERANCE));
    }
}

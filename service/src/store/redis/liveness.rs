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
//! than `LIVENESS` earlier) at the deadline, and a burst is waited out. One more case is told
//! apart when this node keeps time: one connection silent while the others answer is stuck
//! behind a lost packet, and its call fails at the deadline.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long Redis may answer none of a node's calls, or answer only calls sent this long
/// before a late one, before that call fails: longer than the stalls a burst causes on a busy
/// machine, short enough that an outage is called within a tenth of a second.
pub const LIVENESS: Duration = Duration::from_millis(100);

/// How late a call's own deadline timer may fire for this node to count as keeping time (not
/// starved of CPU): tokio's timers have a 1 ms grain.
pub const PUNCTUAL: Duration = Duration::from_millis(3);

/// When Redis last answered any of this node's calls, and on each connection (lane), and the
/// send time of the newest call it answered, in microseconds since the store started.
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    last_reply_us: AtomicU64,
    newest_answered_sent_us: AtomicU64,
    lane_last_reply_us: Vec<AtomicU64>,
}

/// A call past its deadline, as the store judges it.
#[derive(Debug, Clone, Copy)]
pub struct LateCall {
    /// Its connection's lane.
    pub lane: usize,
    pub sent_us: u64,
    pub now_us: u64,
    pub deadline_us: u64,
    /// How long Redis may be silent, or behind, before the call fails.
    pub tolerance_us: u64,
    /// Whether this node's timer fired on time ([`PUNCTUAL`]): its tasks were running, so a
    /// lane's replies were read as they came.
    pub punctual: bool,
    /// Whether a reconnect has replaced its connection since it was sent: the lane's new
    /// connection answering tells nothing of the old socket.
    pub abandoned: bool,
}

impl Liveness {
    /// Tracking for `lanes` connections.
    pub fn new(lanes: usize) -> Self {
        Self {
            epoch: Instant::now(),
            last_reply_us: AtomicU64::new(0),
            newest_answered_sent_us: AtomicU64::new(0),
            lane_last_reply_us: (0..lanes.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Microseconds since the store started: the clock of every time here.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Notes that the call sent at `sent_us` on `lane` was answered at `now_us`.
    pub fn answered(&self, lane: usize, sent_us: u64, now_us: u64) {
        self.last_reply_us.fetch_max(now_us, Ordering::Relaxed);
        self.newest_answered_sent_us
            .fetch_max(sent_us, Ordering::Relaxed);
        self.lane(lane).fetch_max(now_us, Ordering::Relaxed);
    }

    fn lane(&self, lane: usize) -> &AtomicU64 {
        &self.lane_last_reply_us[lane % self.lane_last_reply_us.len()]
    }

    /// Whether a call still unanswered past its deadline is worth waiting on. Never when its
    /// connection was abandoned for a new pool. Not when Redis has been silent for the
    /// tolerance, nor when it only answers calls sent over the tolerance before this one
    /// (replies come back in order, so this one is queued right behind those); twice the
    /// tolerance when this node's own timer fired late (starved of CPU, it reads replies late:
    /// a burst with another process on one core showed 100 ms). Nor, when this node keeps
    /// time, when the call's own connection is stuck: silent, since this call was sent, for
    /// half the tolerance and twice what calls take now (the age of the newest call answered),
    /// while the others answered within a deadline; that is a lost packet waiting out TCP's
    /// retransmission timeout, not Redis slow. A starved node reads replies late and unevenly
    /// across connections, so then only the silence and the order apply.
    pub fn worth_waiting(&self, call: LateCall) -> bool {
        if call.abandoned {
            return false;
        }
        let silent_for = call
            .now_us
            .saturating_sub(self.last_reply_us.load(Ordering::Relaxed));
        let newest_answered_sent_us = self.newest_answered_sent_us.load(Ordering::Relaxed);
        let behind_by = call.sent_us.saturating_sub(newest_answered_sent_us);
        // A node that was starved (its own timer late) reads replies late: give it twice as long.
        let tolerance_us = if call.punctual {
            call.tolerance_us
        } else {
            2 * call.tolerance_us
        };
        if silent_for > tolerance_us || behind_by > tolerance_us {
            return false;
        }
        let taking_us = call.now_us.saturating_sub(newest_answered_sent_us);
        let lane_quiet_since = self
            .lane(call.lane)
            .load(Ordering::Relaxed)
            .max(call.sent_us);
        let lane_silent_for = call.now_us.saturating_sub(lane_quiet_since);
        let stuck = lane_silent_for > (call.tolerance_us / 2).max(2 * taking_us)
            && silent_for <= call.deadline_us;
        !(call.punctual && stuck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: u64 = 100_000;
    const DEADLINE: u64 = 10_000;

    /// A store of two lanes whose lane 0 last answered at `last_reply_us` a call sent at
    /// `newest_answered_sent_us`.
    fn liveness(last_reply_us: u64, newest_answered_sent_us: u64) -> Liveness {
        let liveness = Liveness::new(2);
        liveness.answered(0, newest_answered_sent_us, last_reply_us);
        liveness
    }

    fn call(lane: usize, sent_us: u64, now_us: u64) -> LateCall {
        LateCall {
            lane,
            sent_us,
            now_us,
            deadline_us: DEADLINE,
            tolerance_us: TOLERANCE,
            punctual: true,
            abandoned: false,
        }
    }

    #[test]
    fn a_burst_on_a_healthy_redis_is_waited_on() {
        // Sent at 1 s, judged 40 ms later; Redis answered calls sent 30 ms before it, 20 ms ago.
        let late = LateCall {
            punctual: false,
            ..call(1, 1_000_000, 1_040_000)
        };
        assert!(liveness(1_020_000, 970_000).worth_waiting(late));
        // Punctual, on the lane that just answered.
        assert!(liveness(1_039_000, 999_000).worth_waiting(call(0, 1_000_000, 1_010_500)));
    }

    #[test]
    fn a_silent_redis_fails_after_the_tolerance() {
        // The last reply came 100 ms before: the call waits on; a microsecond later it fails.
        let quiet = liveness(1_000_000, 999_000);
        assert!(quiet.worth_waiting(call(0, 1_050_000, 1_100_000)));
        assert!(!quiet.worth_waiting(call(0, 1_050_000, 1_100_001)));
        // A store that never answered anything.
        assert!(!Liveness::new(1).worth_waiting(call(0, 1_000_000, 1_010_000)));
    }

    #[test]
    fn a_starved_node_gets_twice_the_tolerance() {
        // Redis silent for 150 ms: a node keeping time calls it; one whose own timer fired late
        // may have its replies unread, and waits up to 200 ms.
        let quiet = liveness(1_000_000, 999_000);
        let starved = |now_us| LateCall {
            punctual: false,
            ..call(0, 1_100_000, now_us)
        };
        assert!(!quiet.worth_waiting(call(0, 1_100_000, 1_150_000)));
        assert!(quiet.worth_waiting(starved(1_150_000)));
        assert!(quiet.worth_waiting(starved(1_200_000)));
        assert!(!quiet.worth_waiting(starved(1_200_001)));
    }

    #[test]
    fn a_redis_far_slower_than_the_tolerance_fails_at_once() {
        // 200 ms added latency: replies keep coming, each for a call sent 200 ms earlier.
        assert!(!liveness(2_009_000, 1_810_000).worth_waiting(call(0, 2_000_000, 2_010_000)));
        // 100 ms behind is the most tolerated.
        assert!(liveness(2_009_000, 1_900_000).worth_waiting(call(0, 2_000_000, 2_010_000)));
        assert!(!liveness(2_009_000, 1_899_999).worth_waiting(call(0, 2_000_000, 2_010_000)));
    }

    #[test]
    fn a_stuck_connection_fails_at_half_the_tolerance_while_the_others_answer() {
        // A call sent at 950 ms on lane 1, which answered nothing since; lane 0 answers calls
        // within 0.5 ms, the last just now.
        let liveness = liveness(1_000_000, 999_500);
        liveness.answered(1, 939_000, 940_000);
        // At one deadline: waited on; past half the tolerance: stuck.
        assert!(liveness.worth_waiting(call(1, 950_000, 960_500)));
        assert!(liveness.worth_waiting(call(1, 950_000, 1_000_000)));
        assert!(!liveness.worth_waiting(call(1, 950_000, 1_000_001)));
        // Unless this node itself was late: its replies may just be unread.
        let starved = LateCall {
            punctual: false,
            ..call(1, 950_000, 1_000_500)
        };
        assert!(liveness.worth_waiting(starved));
        // A lane that answered since the call was sent is not stuck.
        liveness.answered(1, 949_000, 995_000);
        assert!(liveness.worth_waiting(call(1, 950_000, 1_000_500)));
    }

    #[test]
    fn a_uniformly_slow_redis_is_not_a_stuck_connection() {
        // Every call takes 40 ms: lane 0 just answered a call sent 40 ms ago. A call sent 75 ms
        // ago on quiet lane 1 is within twice that.
        let liveness = liveness(1_000_000, 960_000);
        assert!(liveness.worth_waiting(call(1, 925_000, 1_000_000)));
        // Past twice what calls take, it is stuck.
        assert!(!liveness.worth_waiting(call(1, 919_000, 1_000_000)));
    }

    #[test]
    fn every_lane_quiet_is_redis_slow_not_one_connection_stuck() {
        // Nothing answered for 20 ms on any lane: within the tolerance, waited on.
        let liveness = liveness(980_000, 979_000);
        liveness.answered(1, 978_000, 979_000);
        assert!(liveness.worth_waiting(call(1, 985_000, 1_000_000)));
    }

    #[test]
    fn a_call_on_an_abandoned_connection_is_not_waited_on() {
        // A partition heals: the probe's new pool answers on every lane, including the lane of
        // a call sent just before on the old pool, whose socket sits in TCP's backoff. Without
        // the pool telling them apart that call looks queued, and waited out `queue_timeout`
        // (a fresh clone's CI saw a 1 s answer).
        let liveness = liveness(1_010_000, 1_009_500);
        liveness.answered(1, 1_009_000, 1_010_000);
        let starved = LateCall {
            punctual: false,
            ..call(1, 1_000_000, 1_010_500)
        };
        assert!(liveness.worth_waiting(starved), "what the lanes alone show");
        for late in [starved, call(1, 1_000_000, 1_010_500)] {
            let abandoned = LateCall {
                abandoned: true,
                ..late
            };
            assert!(!liveness.worth_waiting(abandoned));
        }
    }

    #[test]
    fn times_only_move_forward() {
        let liveness = liveness(5_000_000, 4_000_000);
        liveness.answered(0, 1_000_000, 2_000_000);
        assert!(liveness.worth_waiting(LateCall {
            punctual: false,
            ..call(0, 4_050_000, 5_050_000)
        }));
    }
}

//! Shared property-test machinery: random request sequences, a driver that also checks that
//! every retry-after is honest and tight, and the bound assertions.

use proptest::prelude::*;

use super::{Algorithm, NEVER};

/// One generated request: wait `gap_us` after the previous one, then ask for `cost`.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub gap_us: u64,
    pub cost: u64,
}

/// Up to 120 requests with gaps below `max_gap_us` (many of them zero, so bursts happen) and
/// costs up to `max_cost`.
pub fn sequences(max_cost: u64, max_gap_us: u64) -> impl Strategy<Value = Vec<Request>> {
    let gap = prop_oneof![Just(0u64), 0..1_000u64, 0..max_gap_us];
    proptest::collection::vec(
        (gap, 1..=max_cost).prop_map(|(gap_us, cost)| Request { gap_us, cost }),
        1..120,
    )
}

/// Runs `requests` from time 10^12 us and returns the admitted (time, cost) pairs.
///
/// For every denial it also proves retry-after honest: the same request, at exactly
/// `now + retry_after` with nothing in between, is allowed; and tight: one microsecond earlier
/// it is still denied.
pub fn run_sequence(algorithm: &Algorithm, requests: &[Request]) -> Vec<(u64, u64)> {
    let mut now = 1_000_000_000_000u64;
    let mut state = algorithm.fresh_state(now);
    let mut admitted = Vec::new();
    for request in requests {
        now += request.gap_us;
        let decision = algorithm.check(&mut state, request.cost, now);
        assert!(decision.remaining <= decision.limit, "{decision:?}");
        if decision.allowed {
            assert_eq!(decision.retry_after_us, 0);
            admitted.push((now, request.cost));
            continue;
        }
        if request.cost > algorithm.limit() {
            assert_eq!(decision.retry_after_us, NEVER);
            continue;
        }
        let retry_at = now + decision.retry_after_us;
        assert!(
            decision.retry_after_us > 0,
            "denied with no wait: {decision:?}"
        );
        let mut later = state.clone();
        assert!(
            algorithm.check(&mut later, request.cost, retry_at).allowed,
            "{algorithm:?}: denied again at its own retry-after ({decision:?})"
        );
        let mut earlier = state.clone();
        assert!(
            !algorithm
                .check(&mut earlier, request.cost, retry_at - 1)
                .allowed,
            "{algorithm:?}: retry-after is later than needed ({decision:?})"
        );
    }
    admitted
}

/// For every pair of admitted requests, the cost admitted between them (inclusive) is within
/// `bound(span_us)`.
pub fn assert_interval_bound(admitted: &[(u64, u64)], bound: impl Fn(u64) -> f64) {
    for (i, &(start, _)) in admitted.iter().enumerate() {
        let mut sum = 0u64;
        for &(at, cost) in &admitted[i..] {
            sum += cost;
            let limit = bound(at - start);
            assert!(
                sum as f64 <= limit,
                "admitted {sum} in [{start}, {at}] ({} us), bound {limit}",
                at - start
            );
        }
    }
}

/// Each aligned window of `window_us` admits at most `limit`.
pub fn assert_aligned_window_bound(admitted: &[(u64, u64)], window_us: u64, limit: u64) {
    let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
    for &(at, cost) in admitted {
        *per_window.entry(at / window_us).or_default() += cost;
    }
    for (window, sum) in per_window {
        assert!(sum <= limit, "window {window} admitted {sum} > {limit}");
    }
}

//! Stacked limits: a rule's several limits decided together, all or nothing.
//!
//! A request is allowed only if every limit allows it, and then every limit is charged; if any
//! limit denies, none is charged. Like the algorithms this is pure arithmetic over the key's
//! states and an explicit `now` (the store supplies both under the key's one lock, and
//! `lua/stacked.lua` mirrors it inside one Redis script).
//!
//! Retry-after of a denial is the longest retry-after among the denying limits. It is honest:
//! a limit that allows now still allows later if nothing is spent, and each denying limit allows
//! at its own retry-after, so at the longest one every limit allows. It is tight: one
//! microsecond earlier the limit that set it still denies.

use super::{
    Algorithm, Decision, State,
    ban::{Ban, BanState},
};

/// The most limits one rule may stack (configuration enforces it).
pub const MAX_LIMITS: usize = 8;

/// One limit of a rule: a short name (for headers, responses and storage keys) and its algorithm.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub name: String,
    pub algorithm: Algorithm,
}

impl Limit {
    pub fn new(name: impl Into<String>, algorithm: Algorithm) -> Self {
        Self {
            name: name.into(),
            algorithm,
        }
    }

    /// A rule of one limit, named after its algorithm (tests and benchmarks).
    pub fn alone(algorithm: Algorithm) -> [Limit; 1] {
        [Limit::new(algorithm.name(), algorithm)]
    }
}

/// Every limit's answer to one request, in the rule's order, and which of them decided.
///
/// Rules of one or two limits (nearly all) keep their answers inline; larger stacks spill to
/// the heap. A plain struct rather than an enum of the two, so building one writes its fields
/// in place: copying a just-built enum stalled the memory store's hot path (store forwarding,
/// results/benchmarks/service-decisions.md).
#[derive(Debug, Clone)]
pub struct Decisions {
    inline: [Decision; INLINE],
    /// How many of `inline` are answers; 0 once they spilled.
    len: u8,
    /// Every answer, once there are more than fit inline.
    spilled: Vec<Decision>,
    /// Microseconds of ban left, when the key is banned (0 otherwise); see [`check_banned`].
    banned_for_us: u64,
    /// This request's denial started the ban.
    ban_started: bool,
}

/// Decisions kept inline.
const INLINE: usize = 2;

const EMPTY: Decision = Decision {
    allowed: true,
    limit: 0,
    remaining: 0,
    reset_after_us: 0,
    retry_after_us: 0,
};

impl Default for Decisions {
    fn default() -> Self {
        Self {
            inline: [EMPTY; INLINE],
            len: 0,
            spilled: Vec::new(),
            banned_for_us: 0,
            ban_started: false,
        }
    }
}

impl PartialEq for Decisions {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
            && self.banned_for_us == other.banned_for_us
            && self.ban_started == other.ban_started
    }
}

impl Eq for Decisions {}

impl Decisions {
    /// The answer of a rule of one limit.
    #[inline]
    pub fn one(decision: Decision) -> Self {
        Self {
            inline: [decision, EMPTY],
            len: 1,
            spilled: Vec::new(),
            banned_for_us: 0,
            ban_started: false,
        }
    }

    /// One decision per limit, in order.
    pub fn from_slice(decisions: &[Decision]) -> Self {
        let mut all = Self::default();
        for decision in decisions {
            all.push(*decision);
        }
        all
    }

    #[inline]
    pub fn push(&mut self, decision: Decision) {
        let len = usize::from(self.len);
        if !self.spilled.is_empty() {
            self.spilled.push(decision);
        } else if len < INLINE {
            self.inline[len] = decision;
            self.len += 1;
        } else {
            let mut spilled = Vec::with_capacity(MAX_LIMITS);
            spilled.extend_from_slice(&self.inline);
            spilled.push(decision);
            self.spilled = spilled;
            self.len = 0;
        }
    }

    #[inline]
    pub fn as_slice(&self) -> &[Decision] {
        if self.spilled.is_empty() {
            &self.inline[..usize::from(self.len)]
        } else {
            &self.spilled
        }
    }

    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Decision] {
        if self.spilled.is_empty() {
            &mut self.inline[..usize::from(self.len)]
        } else {
            &mut self.spilled
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// True when every limit allowed and the key is not banned.
    #[inline]
    pub fn allowed(&self) -> bool {
        self.banned_for_us == 0 && self.as_slice().iter().all(|decision| decision.allowed)
    }

    /// Microseconds of ban left, when the key is banned.
    pub fn banned_for_us(&self) -> Option<u64> {
        (self.banned_for_us > 0).then_some(self.banned_for_us)
    }

    /// Whether this request's denial started the ban.
    pub fn ban_started(&self) -> bool {
        self.ban_started
    }

    /// Marks the key banned for `remaining_us` more microseconds (`started`: by this request).
    pub fn set_banned(&mut self, remaining_us: u64, started: bool) {
        self.banned_for_us = remaining_us;
        self.ban_started = started;
    }

    /// The index of the limit that decided: when denied, the denying limit with the longest
    /// retry-after; when allowed, the limit with the least remaining. Ties go to the first.
    #[inline]
    pub fn deciding(&self) -> usize {
        let decisions = self.as_slice();
        let denied = decisions
            .iter()
            .enumerate()
            .filter(|(_, decision)| !decision.allowed)
            .fold(
                None,
                |best: Option<(usize, u64)>, (index, decision)| match best {
                    Some((_, retry)) if retry >= decision.retry_after_us => best,
                    _ => Some((index, decision.retry_after_us)),
                },
            );
        if let Some((index, _)) = denied {
            return index;
        }
        decisions
            .iter()
            .enumerate()
            .fold((0, u64::MAX), |(best, least), (index, decision)| {
                if decision.remaining < least {
                    (index, decision.remaining)
                } else {
                    (best, least)
                }
            })
            .0
    }

    /// The deciding limit's answer: the whole request's answer (allowed only if all allowed);
    /// for a banned key denied, with the ban's end as its retry-after.
    #[inline]
    pub fn decision(&self) -> Decision {
        self.decision_of(self.deciding())
    }

    /// [`Decisions::decision`] when the deciding index is already known.
    #[inline]
    pub fn decision_of(&self, deciding: usize) -> Decision {
        let mut decision = self.as_slice()[deciding];
        if self.banned_for_us > 0 {
            decision.allowed = false;
            decision.retry_after_us = self.banned_for_us;
        }
        decision
    }

    /// Microseconds until every limit's state is back to fresh.
    #[inline]
    pub fn reset_after_us(&self) -> u64 {
        self.as_slice()
            .iter()
            .map(|decision| decision.reset_after_us)
            .max()
            .unwrap_or(0)
    }
}

/// Fresh states for `limits`, in order.
pub fn fresh_states(limits: &[Limit], now_us: u64) -> Vec<State> {
    limits
        .iter()
        .map(|limit| limit.algorithm.fresh_state(now_us))
        .collect()
}

/// Decides `cost` at `now_us` against every limit, updating `states` (one per limit, in
/// order): all charged when all allow, none charged otherwise. A `cost` of 0 is a query.
///
/// On a denial every state is still brought forward to `now_us` exactly as a lone algorithm's
/// denial does (a token bucket keeps its refill), so each retry-after is computed from the
/// state the retry will start from.
#[inline(always)]
pub fn check(limits: &[Limit], states: &mut [State], cost: u64, now_us: u64) -> Decisions {
    debug_assert_eq!(limits.len(), states.len());
    debug_assert!(limits.len() <= MAX_LIMITS);
    if let ([limit], [state]) = (limits, &mut *states) {
        return Decisions::one(limit.algorithm.check(state, cost, now_us));
    }
    let mut decisions = Decisions::default();
    let mut trials: [Option<State>; MAX_LIMITS] = Default::default();
    for ((limit, state), trial) in limits.iter().zip(states.iter()).zip(&mut trials) {
        let mut charged = state.clone();
        decisions.push(limit.algorithm.check(&mut charged, cost, now_us));
        *trial = Some(charged);
    }
    let allowed = decisions.allowed();
    // By reference: moving the array into the iterator would copy all of it.
    for (((limit, state), trial), decision) in limits
        .iter()
        .zip(states.iter_mut())
        .zip(trials.iter_mut())
        .zip(decisions.as_mut_slice())
    {
        match trial.take() {
            // A denying limit's trial charged nothing; an allowing one's stands if all allowed.
            Some(trial) if allowed || !decision.allowed => *state = trial,
            // Allowed here, but another limit denied: charge nothing and report what is left.
            _ => *decision = limit.algorithm.check(state, 0, now_us),
        }
    }
    decisions
}

/// [`check`] under a ban policy, with the key's ban state: a banned key is answered from its
/// ban (its limits only read, never charged); otherwise the limits decide, and a denial counts
/// as an offence that may start a ban, which then answers this very request.
pub fn check_banned(
    limits: &[Limit],
    states: &mut [State],
    ban: &Ban,
    ban_state: &mut BanState,
    cost: u64,
    now_us: u64,
) -> Decisions {
    if let Some(refused) = banned_answer(limits, states, ban_state, now_us) {
        return refused;
    }
    let mut decisions = check(limits, states, cost, now_us);
    if !decisions.allowed()
        && cost > 0
        && let Some(duration) = ban.record_denial(ban_state, now_us)
    {
        decisions.set_banned(duration, true);
    }
    decisions
}

/// The answer for a key that `ban_state` bans at `now_us`: its limits read, nothing charged.
/// `None` when it is not banned.
pub fn banned_answer(
    limits: &[Limit],
    states: &[State],
    ban_state: &BanState,
    now_us: u64,
) -> Option<Decisions> {
    let remaining = ban_state.remaining_us(now_us)?;
    let mut decisions = peek(limits, states, now_us);
    decisions.set_banned(remaining, false);
    Some(decisions)
}

/// What the key's states and ban state mean at `now_us`, changing nothing.
pub fn peek_banned(
    limits: &[Limit],
    states: &[State],
    ban_state: &BanState,
    now_us: u64,
) -> Decisions {
    banned_answer(limits, states, ban_state, now_us).unwrap_or_else(|| peek(limits, states, now_us))
}

/// What the key's states mean at `now_us`, changing nothing.
pub fn peek(limits: &[Limit], states: &[State], now_us: u64) -> Decisions {
    let mut decisions = Decisions::default();
    for (limit, state) in limits.iter().zip(states) {
        decisions.push(limit.algorithm.peek(state, now_us));
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::testkit::{Request, assert_interval_bound, sequences};
    use crate::algorithm::{
        FixedWindow, Gcra, NEVER, SlidingWindowCounter, SlidingWindowLog, TokenBucket,
    };
    use proptest::prelude::*;

    fn limit(name: &str, algorithm: Algorithm) -> Limit {
        Limit::new(name, algorithm)
    }

    /// 2 per second, and 5 per minute.
    fn burst_and_minute() -> Vec<Limit> {
        vec![
            limit("burst", Algorithm::TokenBucket(TokenBucket::new(2, 2.0))),
            limit(
                "minute",
                Algorithm::FixedWindow(FixedWindow::new(5, 60_000_000)),
            ),
        ]
    }

    #[test]
    fn allowed_only_when_every_limit_allows_and_then_charges_every_limit() {
        let limits = burst_and_minute();
        let mut states = fresh_states(&limits, 0);
        let first = check(&limits, &mut states, 1, 0);
        assert!(first.allowed());
        assert_eq!(
            first
                .as_slice()
                .iter()
                .map(|d| d.remaining)
                .collect::<Vec<_>>(),
            [1, 4]
        );
        assert_eq!(first.deciding(), 0, "least remaining decides an allowance");
        assert!(check(&limits, &mut states, 1, 0).allowed());
        let denied = check(&limits, &mut states, 1, 0);
        assert!(!denied.allowed());
        assert_eq!(denied.deciding(), 0);
        assert_eq!(
            denied.as_slice()[1].remaining,
            3,
            "the minute limit was not charged for the denial"
        );
        assert!(denied.as_slice()[1].allowed, "the minute limit had room");
    }

    #[test]
    fn the_tighter_limit_over_time_decides_and_its_retry_after_is_reported() {
        let limits = burst_and_minute();
        let mut states = fresh_states(&limits, 0);
        let mut now = 0;
        for _ in 0..5 {
            assert!(check(&limits, &mut states, 1, now).allowed());
            now += 1_000_000;
        }
        let denied = check(&limits, &mut states, 1, now);
        assert!(!denied.allowed());
        assert_eq!(denied.deciding(), 1, "the minute limit is spent");
        assert_eq!(denied.decision().retry_after_us, 60_000_000 - now);
        assert_eq!(
            denied.as_slice()[0].remaining,
            2,
            "burst full again, and not charged for the denial"
        );
    }

    #[test]
    fn the_longest_denying_retry_after_decides() {
        let limits = vec![
            limit("a", Algorithm::Gcra(Gcra::new(1.0, 1))),
            limit("b", Algorithm::Gcra(Gcra::new(0.25, 1))),
            limit("c", Algorithm::Gcra(Gcra::new(0.5, 1))),
        ];
        let mut states = fresh_states(&limits, 0);
        assert!(check(&limits, &mut states, 1, 0).allowed());
        let denied = check(&limits, &mut states, 1, 0);
        assert_eq!(denied.deciding(), 1);
        assert_eq!(denied.decision().retry_after_us, 4_000_000);
        assert!(!check(&limits, &mut states, 1, 3_999_999).allowed());
        assert!(check(&limits, &mut states, 1, 4_000_000).allowed());
    }

    #[test]
    fn a_query_charges_nothing() {
        let limits = burst_and_minute();
        let mut states = fresh_states(&limits, 0);
        check(&limits, &mut states, 1, 0);
        let before = states.clone();
        let query = check(&limits, &mut states, 0, 0);
        assert!(query.allowed());
        assert_eq!(query, peek(&limits, &before, 0));
    }

    fn stacks() -> impl Strategy<Value = Vec<Limit>> {
        let one = prop_oneof![
            (1u64..6, 1u64..4_000).prop_map(|(capacity, refill_milli)| Algorithm::TokenBucket(
                TokenBucket::new(capacity, refill_milli as f64 / 1000.0)
            )),
            (1u64..6, 1u64..4_000).prop_map(|(burst, rate_milli)| Algorithm::Gcra(Gcra::new(
                rate_milli as f64 / 1000.0,
                burst
            ))),
            (1u64..12, 1u64..3_000)
                .prop_map(|(limit, ms)| Algorithm::FixedWindow(FixedWindow::new(limit, ms * 1000))),
            (1u64..12, 1u64..3_000).prop_map(|(limit, ms)| Algorithm::SlidingWindowLog(
                SlidingWindowLog::new(limit, ms * 1000)
            )),
            (1u64..12, 1u64..3_000).prop_map(|(limit, ms)| Algorithm::SlidingWindowCounter(
                SlidingWindowCounter::new(limit, ms)
            )),
        ];
        proptest::collection::vec(one, 1..=4).prop_map(|algorithms| {
            algorithms
                .into_iter()
                .enumerate()
                .map(|(index, algorithm)| limit(&format!("l{index}"), algorithm))
                .collect()
        })
    }

    /// The admitted (time, cost) pairs; checks every denial's retry-after honest and tight,
    /// and that a denial charged nothing.
    fn run(limits: &[Limit], requests: &[Request]) -> Vec<(u64, u64)> {
        let mut now = 1_000_000_000_000u64;
        let mut states = fresh_states(limits, now);
        let max_cost = limits.iter().map(|l| l.algorithm.limit()).min().unwrap();
        let mut admitted = Vec::new();
        for request in requests {
            now += request.gap_us;
            let cost = request.cost.min(max_cost);
            let before = peek(limits, &states, now);
            let decisions = check(limits, &mut states, cost, now);
            if decisions.allowed() {
                admitted.push((now, cost));
                continue;
            }
            assert_eq!(
                peek(limits, &states, now),
                before,
                "a denial charged something"
            );
            let retry = decisions.decision().retry_after_us;
            assert!(retry > 0 && retry != NEVER, "{decisions:?}");
            let mut later = states.clone();
            assert!(
                check(limits, &mut later, cost, now + retry).allowed(),
                "denied again at its own retry-after: {decisions:?}"
            );
            let mut earlier = states.clone();
            assert!(
                !check(limits, &mut earlier, cost, now + retry - 1).allowed(),
                "retry-after later than needed: {decisions:?}"
            );
        }
        admitted
    }

    proptest! {
        #[test]
        fn every_limit_keeps_its_own_bound_and_retry_after_is_honest_and_tight(
            limits in stacks(),
            requests in sequences(6, 2_000_000),
        ) {
            let admitted = run(&limits, &requests);
            for limit in &limits {
                match &limit.algorithm {
                    Algorithm::TokenBucket(a) => assert_interval_bound(&admitted, |span| {
                        a.capacity() as f64 + a.refill_per_second() * span as f64 / 1e6
                            + requests.len() as f64 * crate::algorithm::token_bucket::TOKEN_EPSILON
                    }),
                    Algorithm::Gcra(a) => assert_interval_bound(&admitted, |span| {
                        a.burst() as f64 + span as f64 / a.emission_interval_us() as f64
                    }),
                    Algorithm::FixedWindow(a) => crate::algorithm::testkit::assert_aligned_window_bound(
                        &admitted, a.window_us(), a.limit(),
                    ),
                    Algorithm::SlidingWindowLog(a) => assert_interval_bound(&admitted, |span| {
                        if span < a.window_us() { a.limit() as f64 } else { f64::INFINITY }
                    }),
                    // Approximate by design; its own tests bound it.
                    Algorithm::SlidingWindowCounter(_) => {}
                }
            }
        }
    }
}

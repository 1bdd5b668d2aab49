//! Concurrency limits (issue 18, a first part): at most `max_in_flight` leases per key at once.
//! `acquire` grants a lease that ends at `release` or, if never released (a crashed caller), at
//! its expiry `lease_ttl_us` later, so no caller can leak capacity for longer than that.
//!
//! Pure, like the rate algorithms: the state is the set of live leases with their expiries,
//! `now` comes from the caller; expired leases are dropped on every call. [`acquire_stacked`]
//! takes a lease together with a rule's rate limits, all or nothing. A Redis mirror (a sorted
//! set of expiries under the key's hash tag), the stores and the API are not built yet.

use super::{
    State,
    stacked::{self, Decisions, Limit},
};

/// `max_in_flight` leases at once, each expiring `lease_ttl_us` after it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    max_in_flight: u64,
    lease_ttl_us: u64,
}

/// The live leases of one key: (lease id, expiry), in the order granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConcurrencyState {
    leases: Vec<(u64, u64)>,
}

/// The answer to an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Granted; the lease ends at `expires_at_us` unless released first.
    Granted { expires_at_us: u64 },
    /// Full: the earliest a lease ends by itself (a release may free one sooner).
    Full { retry_after_us: u64 },
}

impl Concurrency {
    /// `None` when either is 0.
    pub fn new(max_in_flight: u64, lease_ttl_us: u64) -> Option<Self> {
        (max_in_flight > 0 && lease_ttl_us > 0).then_some(Self {
            max_in_flight,
            lease_ttl_us,
        })
    }

    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight
    }

    pub fn lease_ttl_us(&self) -> u64 {
        self.lease_ttl_us
    }

    /// Grants lease `lease` at `now` if fewer than `max_in_flight` are live. An id already live
    /// is granted again (a retried acquire), its expiry renewed, without taking a second slot.
    pub fn acquire(&self, state: &mut ConcurrencyState, lease: u64, now: u64) -> Acquired {
        state.expire(now);
        let expires_at_us = now.saturating_add(self.lease_ttl_us);
        if let Some(live) = state.leases.iter_mut().find(|(id, _)| *id == lease) {
            live.1 = expires_at_us;
            return Acquired::Granted { expires_at_us };
        }
        if (state.leases.len() as u64) < self.max_in_flight {
            state.leases.push((lease, expires_at_us));
            return Acquired::Granted { expires_at_us };
        }
        let earliest = state.leases.iter().map(|(_, expiry)| *expiry).min();
        Acquired::Full {
            retry_after_us: earliest.map_or(0, |expiry| expiry.saturating_sub(now)),
        }
    }

    /// Ends lease `lease`; false when it was not live (released already, or expired).
    pub fn release(&self, state: &mut ConcurrencyState, lease: u64, now: u64) -> bool {
        state.expire(now);
        let before = state.leases.len();
        state.leases.retain(|(id, _)| *id != lease);
        state.leases.len() < before
    }

    /// Leases live at `now`.
    pub fn in_flight(&self, state: &ConcurrencyState, now: u64) -> u64 {
        state
            .leases
            .iter()
            .filter(|(_, expiry)| *expiry > now)
            .count() as u64
    }
}

impl ConcurrencyState {
    /// Whether some lease is live at `now`.
    pub fn any_live(&self, now: u64) -> bool {
        self.leases.iter().any(|(_, expiry)| *expiry > now)
    }

    fn expire(&mut self, now: u64) {
        self.leases.retain(|(_, expiry)| *expiry > now);
    }
}

/// What an acquire under a rule of rate limits and a concurrency limit answered: every rate
/// limit's decision, and the lease's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackedAcquire {
    pub decisions: Decisions,
    /// `None` when a rate limit denied: no slot was asked for.
    pub lease: Option<Acquired>,
}

impl StackedAcquire {
    /// Whether the lease was granted (and every rate limit charged).
    pub fn granted(&self) -> bool {
        matches!(self.lease, Some(Acquired::Granted { .. }))
    }
}

/// Acquires lease `lease` for `cost` at `now` under `limits` and `concurrency` together, all or
/// nothing: granted only when every rate limit allows `cost` and a slot is free (or `lease` is
/// live already, a retried acquire); then every limit is charged and the lease recorded.
/// Otherwise nothing is charged and no lease taken: a full key leaves its rate limits as they
/// were, a rate limit's denial asks for no slot.
pub fn acquire_stacked(
    limits: &[Limit],
    states: &mut [State],
    concurrency: &Concurrency,
    leases: &mut ConcurrencyState,
    lease: u64,
    cost: u64,
    now: u64,
) -> StackedAcquire {
    leases.expire(now);
    let live = leases.leases.iter().any(|(id, _)| *id == lease);
    if !live && leases.leases.len() as u64 >= concurrency.max_in_flight {
        let earliest = leases.leases.iter().map(|(_, expiry)| *expiry).min();
        return StackedAcquire {
            decisions: stacked::peek(limits, states, now),
            lease: Some(Acquired::Full {
                retry_after_us: earliest.map_or(0, |expiry| expiry.saturating_sub(now)),
            }),
        };
    }
    let decisions = stacked::check(limits, states, cost, now);
    if !decisions.allowed() {
        return StackedAcquire {
            decisions,
            lease: None,
        };
    }
    let lease = concurrency.acquire(leases, lease, now);
    debug_assert!(matches!(lease, Acquired::Granted { .. }));
    StackedAcquire {
        decisions,
        lease: Some(lease),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limit() -> Concurrency {
        Concurrency::new(2, 1_000).unwrap()
    }

    #[test]
    fn leases_are_granted_up_to_the_limit_and_a_release_frees_one() {
        let (limit, mut state) = (limit(), ConcurrencyState::default());
        assert_eq!(
            limit.acquire(&mut state, 1, 0),
            Acquired::Granted {
                expires_at_us: 1_000
            }
        );
        assert!(matches!(
            limit.acquire(&mut state, 2, 100),
            Acquired::Granted { .. }
        ));
        assert_eq!(
            limit.acquire(&mut state, 3, 200),
            Acquired::Full {
                retry_after_us: 800
            }
        );
        assert!(limit.release(&mut state, 1, 300));
        assert!(!limit.release(&mut state, 1, 300), "released once only");
        assert!(matches!(
            limit.acquire(&mut state, 3, 300),
            Acquired::Granted { .. }
        ));
    }

    #[test]
    fn a_lease_never_released_ends_at_its_expiry() {
        let (limit, mut state) = (limit(), ConcurrencyState::default());
        limit.acquire(&mut state, 1, 0);
        limit.acquire(&mut state, 2, 0);
        assert!(matches!(
            limit.acquire(&mut state, 3, 999),
            Acquired::Full { retry_after_us: 1 }
        ));
        assert!(matches!(
            limit.acquire(&mut state, 3, 1_000),
            Acquired::Granted { .. }
        ));
        assert!(!limit.release(&mut state, 1, 1_000), "expired, not live");
    }

    #[test]
    fn a_retried_acquire_renews_without_a_second_slot() {
        let (limit, mut state) = (limit(), ConcurrencyState::default());
        limit.acquire(&mut state, 7, 0);
        assert_eq!(
            limit.acquire(&mut state, 7, 500),
            Acquired::Granted {
                expires_at_us: 1_500
            }
        );
        assert_eq!(limit.in_flight(&state, 500), 1);
    }

    #[test]
    fn zero_is_no_limit_at_all() {
        assert!(Concurrency::new(0, 1).is_none());
        assert!(Concurrency::new(1, 0).is_none());
    }

    #[test]
    fn a_full_key_charges_no_rate_limit_and_a_denying_limit_takes_no_slot() {
        use crate::algorithm::{Algorithm, FixedWindow};
        let limits = [Limit::new(
            "minute",
            Algorithm::FixedWindow(FixedWindow::new(3, 60_000_000)),
        )];
        let mut states = stacked::fresh_states(&limits, 0);
        let concurrency = Concurrency::new(1, 1_000).unwrap();
        let mut leases = ConcurrencyState::default();
        let acquire = |states: &mut [State], leases: &mut ConcurrencyState, lease, now| {
            acquire_stacked(&limits, states, &concurrency, leases, lease, 1, now)
        };
        let first = acquire(&mut states, &mut leases, 1, 0);
        assert!(first.granted());
        assert_eq!(first.decisions.decision().remaining, 2);
        let full = acquire(&mut states, &mut leases, 2, 10);
        assert_eq!(
            full.lease,
            Some(Acquired::Full {
                retry_after_us: 990
            })
        );
        assert_eq!(full.decisions.decision().remaining, 2, "nothing charged");
        assert!(concurrency.release(&mut leases, 1, 20));
        assert!(acquire(&mut states, &mut leases, 2, 30).granted());
        concurrency.release(&mut leases, 2, 40);
        assert!(acquire(&mut states, &mut leases, 3, 50).granted());
        concurrency.release(&mut leases, 3, 60);
        let denied = acquire(&mut states, &mut leases, 4, 70);
        assert_eq!(
            denied.lease, None,
            "the minute's 3 are spent: no slot asked for"
        );
        assert_eq!(concurrency.in_flight(&leases, 70), 0);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Acquire(u64),
        Release(u64),
    }

    fn steps() -> impl Strategy<Value = Vec<(Step, u64)>> {
        proptest::collection::vec(
            (
                prop_oneof![
                    (0u64..8).prop_map(Step::Acquire),
                    (0u64..8).prop_map(Step::Release)
                ],
                0u64..400,
            ),
            0..100,
        )
    }

    proptest! {
        #[test]
        fn never_more_than_the_limit_live_and_every_grant_honest(
            max in 1u64..4,
            ttl in 1u64..2_000,
            steps in steps(),
        ) {
            let limit = Concurrency::new(max, ttl).unwrap();
            let mut state = ConcurrencyState::default();
            let mut now = 0u64;
            // A model: each lease's expiry, kept by hand.
            let mut model: std::collections::HashMap<u64, u64> = Default::default();
            for (step, advance) in steps {
                now += advance;
                model.retain(|_, expiry| *expiry > now);
                match step {
                    Step::Acquire(lease) => match limit.acquire(&mut state, lease, now) {
                        Acquired::Granted { expires_at_us } => {
                            prop_assert!(model.contains_key(&lease) || (model.len() as u64) < max);
                            model.insert(lease, expires_at_us);
                        }
                        Acquired::Full { retry_after_us } => {
                            prop_assert_eq!(model.len() as u64, max);
                            prop_assert!(!model.contains_key(&lease));
                            // Honest: at exactly that time a slot is free.
                            let earliest = model.values().min().unwrap();
                            prop_assert_eq!(now + retry_after_us, *earliest);
                        }
                    },
                    Step::Release(lease) => {
                        prop_assert_eq!(limit.release(&mut state, lease, now), model.remove(&lease).is_some());
                    }
                }
                prop_assert!(limit.in_flight(&state, now) <= max);
                prop_assert_eq!(limit.in_flight(&state, now), model.len() as u64);
            }
        }

        #[test]
        fn stacked_acquires_are_all_or_nothing(
            max in 1u64..4,
            rate_limit in 1u64..6,
            steps in steps(),
        ) {
            use crate::algorithm::{Algorithm, FixedWindow};
            let limits = [Limit::new(
                "window",
                Algorithm::FixedWindow(FixedWindow::new(rate_limit, 1_000)),
            )];
            let concurrency = Concurrency::new(max, 700).unwrap();
            let mut states = stacked::fresh_states(&limits, 0);
            let mut leases = ConcurrencyState::default();
            let mut now = 0u64;
            for (step, advance) in steps {
                now += advance;
                match step {
                    Step::Acquire(lease) => {
                        let before_states = states.clone();
                        let was_live = concurrency.in_flight(&leases, now);
                        let answer = acquire_stacked(
                            &limits, &mut states, &concurrency, &mut leases, lease, 1, now,
                        );
                        let spent_before = stacked::peek(&limits, &before_states, now).decision().remaining;
                        let spent_after = stacked::peek(&limits, &states, now).decision().remaining;
                        if answer.granted() {
                            prop_assert!(answer.decisions.allowed());
                            prop_assert_eq!(spent_after + 1, spent_before, "every limit charged once");
                        } else {
                            prop_assert_eq!(spent_after, spent_before, "nothing charged");
                            prop_assert!(concurrency.in_flight(&leases, now) <= was_live, "no lease taken");
                        }
                    }
                    Step::Release(lease) => {
                        concurrency.release(&mut leases, lease, now);
                    }
                }
                prop_assert!(concurrency.in_flight(&leases, now) <= max);
            }
        }
    }
}

//! The per-key ledger's record of a run: atomics every worker adds each answer to (what was
//! asked, admitted, denied, and the limits the service reported). Depends only on the wire
//! types, so the engine records into it without depending on the ledger's checks.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use crate::wire::{AlgorithmKind, Answer, ErrorKind, LimitBound};

/// Per-key accounting for the correctness ledger, shared by all workers.
#[derive(Debug, Default)]
pub struct KeyLedger {
    pub requested_cost: AtomicU64,
    pub admitted_cost: AtomicU64,
    /// Cost let through by a shadowed rule that would have denied it: not admissions the
    /// rule's bound covers, but refusals it would have made.
    pub shadow_denied_cost: AtomicU64,
    pub denied: AtomicU64,
    pub errors: AtomicU64,
    /// Rule parameters as the service reported them (last seen: a stacked rule reports its
    /// deciding limit, so this is one of its limits).
    pub limit: AtomicU64,
    /// The greatest limit any answer reported: when the rules change during a run (a live
    /// reload), the loosest limit the key ran under bounds what it may have been admitted.
    pub greatest_limit: AtomicU64,
    /// The least limit any answer reported, stored bitwise-inverted so that `fetch_max` keeps
    /// it and a new ledger's 0 means none yet: the most a stacked rule admits from fresh.
    least_limit_inverted: AtomicU64,
    /// Every limit of the key's rule when it stacks several, from the first answer listing
    /// them (read once per key; the rule does not change during a run).
    stacked: OnceLock<Box<[LimitBound]>>,
    pub window_us: AtomicU64,
    /// `AlgorithmKind as u64 + 1`; 0 when unknown.
    pub algorithm: AtomicU64,
}

impl Clone for KeyLedger {
    /// A copy of the counts as they are now (workers may be adding to them).
    fn clone(&self) -> Self {
        let copy = |value: &AtomicU64| AtomicU64::new(value.load(Ordering::Relaxed));
        Self {
            requested_cost: copy(&self.requested_cost),
            admitted_cost: copy(&self.admitted_cost),
            shadow_denied_cost: copy(&self.shadow_denied_cost),
            denied: copy(&self.denied),
            errors: copy(&self.errors),
            limit: copy(&self.limit),
            greatest_limit: copy(&self.greatest_limit),
            least_limit_inverted: copy(&self.least_limit_inverted),
            stacked: self.stacked.clone(),
            window_us: copy(&self.window_us),
            algorithm: copy(&self.algorithm),
        }
    }
}

impl KeyLedger {
    pub fn record(&self, cost: u64, result: &Result<Answer, ErrorKind>) {
        match result {
            Ok(answer) => {
                // A failure-mode answer is not the store's decision; it is not the limiter's to check.
                if answer.failed_over {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.requested_cost.fetch_add(cost, Ordering::Relaxed);
                if answer.shadow_denied {
                    self.shadow_denied_cost.fetch_add(cost, Ordering::Relaxed);
                } else if answer.allowed {
                    self.admitted_cost.fetch_add(cost, Ordering::Relaxed);
                } else {
                    self.denied.fetch_add(1, Ordering::Relaxed);
                }
                self.limit.store(answer.limit, Ordering::Relaxed);
                self.greatest_limit
                    .fetch_max(answer.limit, Ordering::Relaxed);
                self.least_limit_inverted
                    .fetch_max(!answer.limit, Ordering::Relaxed);
                if self.stacked.get().is_none()
                    && let Some(limits) = answer.limits.stacked()
                {
                    let _ = self.stacked.set(limits.collect());
                }
                self.window_us
                    .store(answer.policy_window_us, Ordering::Relaxed);
                if let Some(algorithm) = answer.algorithm {
                    self.algorithm
                        .store(algorithm as u64 + 1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every limit of the key's rule, when it stacks several.
    pub fn stacked_limits(&self) -> Option<&[LimitBound]> {
        self.stacked.get().map(|limits| &**limits)
    }

    /// The least limit any answer for this key reported, if any did.
    pub fn least_limit(&self) -> Option<u64> {
        let inverted = self.least_limit_inverted.load(Ordering::Relaxed);
        (inverted != 0).then_some(!inverted)
    }

    pub fn algorithm(&self) -> Option<AlgorithmKind> {
        const KINDS: [AlgorithmKind; 5] = [
            AlgorithmKind::TokenBucket,
            AlgorithmKind::Gcra,
            AlgorithmKind::FixedWindow,
            AlgorithmKind::SlidingWindowCounter,
            AlgorithmKind::SlidingWindowLog,
        ];
        let code = self.algorithm.load(Ordering::Relaxed);
        (code > 0).then(|| KINDS[(code - 1) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_keeps_the_least_limit_a_stacked_rule_reported() {
        let ledger = KeyLedger::default();
        assert_eq!(ledger.least_limit(), None);
        for limit in [50, 1_000, 60] {
            let answer = crate::wire::Answer {
                allowed: true,
                banned: false,
                shadow_denied: false,
                limit,
                remaining: 0,
                reset_after_us: 0,
                retry_after_us: 0,
                policy_window_us: 1_000_000,
                algorithm: None,
                failed_over: false,
                limits: Default::default(),
            };
            ledger.record(1, &Ok(answer));
        }
        assert_eq!(ledger.least_limit(), Some(50));
        assert_eq!(ledger.limit.load(Ordering::Relaxed), 60, "the last seen");
    }
}

//! Remembers keys the shared store denied, so repeated requests from an abusive key are
//! answered locally until their retry-after instead of costing a Redis round trip each.
//!
//! Exact for the requests it answers: a denial at `t` with retry-after `r` means the same or a
//! larger cost fails until `t + r` (other nodes can only spend more, never less). With stacked
//! limits `r` is the deciding limit's, and that limit alone keeps denying until then. Smaller costs
//! still go to the store. A denial (a ban too) answers for at most [`MAX_ANSWER_US`] before the
//! store is asked again, so an admin's reset or lifted ban on any node holds on every node
//! within that time, at the cost of one store call a second per denied key and node.

use std::hash::BuildHasher;

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::algorithm::stacked::Decisions;

const SHARDS: usize = 16;

/// The longest one remembered denial answers before the store is asked again.
pub const MAX_ANSWER_US: u64 = 1_000_000;

#[derive(Debug, Clone)]
struct Denial {
    at_us: u64,
    until_us: u64,
    min_cost: u64,
    decisions: Decisions,
}

type Shard = Mutex<HashMap<Box<str>, Denial>>;

#[derive(Debug)]
pub struct DenyCache {
    shards: Box<[Shard]>,
    keys_per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

impl DenyCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            keys_per_shard: capacity.div_ceil(SHARDS),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The cached denial of `cost` at `now_us`, its waits counted down to `now_us` (what each
    /// limit reported remaining is kept as it was: refill since then is not counted).
    pub fn lookup(&self, key: &str, cost: u64, now_us: u64) -> Option<Decisions> {
        if self.keys_per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(key).lock();
        let denial = shard.get(key)?;
        if now_us >= denial.until_us {
            shard.remove(key);
            return None;
        }
        if cost < denial.min_cost {
            return None;
        }
        let elapsed = now_us.saturating_sub(denial.at_us);
        let mut decisions = denial.decisions.clone();
        if let Some(banned_for) = decisions.banned_for_us() {
            decisions.set_banned(banned_for.saturating_sub(elapsed).max(1), false);
        }
        for decision in decisions.as_mut_slice() {
            decision.reset_after_us = decision.reset_after_us.saturating_sub(elapsed);
            if !decision.allowed {
                decision.retry_after_us = decision.retry_after_us.saturating_sub(elapsed).max(1);
            }
        }
        Some(decisions)
    }

    /// Remembers that `cost` was denied at `now_us` with the answers `denied`.
    pub fn remember(&self, key: &str, cost: u64, now_us: u64, denied: &Decisions) {
        if self.keys_per_shard == 0 {
            return;
        }
        let mut shard = self.shard(key).lock();
        if shard.len() >= self.keys_per_shard && !shard.contains_key(key) {
            shard.retain(|_, denial| denial.until_us > now_us);
            if shard.len() >= self.keys_per_shard {
                return;
            }
        }
        shard.insert(
            key.into(),
            Denial {
                at_us: now_us,
                until_us: now_us
                    .saturating_add(denied.decision().retry_after_us.min(MAX_ANSWER_US)),
                min_cost: cost,
                decisions: denied.clone(),
            },
        );
    }

    pub fn forget(&self, key: &str) {
        self.shard(key).lock().remove(key);
    }

    /// Forgets every denial: they were decided under rules that have just changed.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Decision;

    fn denial(retry_after_us: u64, reset_after_us: u64, remaining: u64) -> Decisions {
        Decisions::from_slice(&[Decision {
            allowed: false,
            limit: 10,
            remaining,
            reset_after_us,
            retry_after_us,
        }])
    }

    #[test]
    fn answers_equal_or_larger_costs_until_retry_after() {
        let cache = DenyCache::new(100);
        cache.remember("k", 3, 1_000, &denial(500, 2_000, 2));
        assert_eq!(cache.lookup("k", 3, 1_100), Some(denial(400, 1_900, 2)));
        assert!(cache.lookup("k", 5, 1_100).is_some());
        assert!(
            cache.lookup("k", 2, 1_100).is_none(),
            "a smaller cost may fit"
        );
        assert!(
            cache.lookup("k", 3, 1_500).is_none(),
            "expired at retry-after"
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn stays_within_capacity_and_can_be_off() {
        let cache = DenyCache::new(32);
        for i in 0..1_000 {
            cache.remember(&format!("key-{i}"), 1, 0, &denial(1_000_000, 1_000_000, 0));
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        let off = DenyCache::new(0);
        off.remember("k", 1, 0, &denial(10, 10, 0));
        assert!(off.lookup("k", 1, 1).is_none());
    }
}

//! Remembers keys the shared store denied, so repeated requests from an abusive key are
//! answered locally until their retry-after instead of costing a Redis round trip each.
//!
//! Exact for the requests it answers: a denial at `t` with retry-after `r` means the same or a
//! larger cost fails until `t + r` (other nodes can only spend more, never less). Smaller costs
//! still go to the store. A reset on another node is not seen here: such a key stays denied
//! on this node until its cached retry-after at most.

use std::hash::BuildHasher;

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::algorithm::Decision;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Denial {
    until_us: u64,
    reset_at_us: u64,
    min_cost: u64,
    remaining: u64,
}

type Shard = Mutex<HashMap<Box<str>, Denial>>;

#[derive(Debug)]
pub struct DenyCache {
    shards: Box<[Shard]>,
    keys_per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

/// A cached denial: how long until the request may succeed, and until the state is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedDenial {
    pub retry_after_us: u64,
    pub reset_after_us: u64,
    /// What the store reported remaining at the denial (refill since then is not counted).
    pub remaining: u64,
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

    pub fn lookup(&self, key: &str, cost: u64, now_us: u64) -> Option<CachedDenial> {
        if self.keys_per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(key).lock();
        let denial = *shard.get(key)?;
        if now_us >= denial.until_us {
            shard.remove(key);
            return None;
        }
        (cost >= denial.min_cost).then(|| CachedDenial {
            retry_after_us: denial.until_us - now_us,
            reset_after_us: denial.reset_at_us.saturating_sub(now_us),
            remaining: denial.remaining,
        })
    }

    /// Remembers that `cost` was denied at `now_us` with the decision `denied`.
    pub fn remember(&self, key: &str, cost: u64, now_us: u64, denied: &Decision) {
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
                until_us: now_us.saturating_add(denied.retry_after_us),
                reset_at_us: now_us.saturating_add(denied.reset_after_us),
                min_cost: cost,
                remaining: denied.remaining,
            },
        );
    }

    pub fn forget(&self, key: &str) {
        self.shard(key).lock().remove(key);
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

    fn denial(retry_after_us: u64, reset_after_us: u64, remaining: u64) -> Decision {
        Decision {
            allowed: false,
            limit: 10,
            remaining,
            reset_after_us,
            retry_after_us,
        }
    }

    #[test]
    fn answers_equal_or_larger_costs_until_retry_after() {
        let cache = DenyCache::new(100);
        cache.remember("k", 3, 1_000, &denial(500, 2_000, 2));
        assert_eq!(
            cache.lookup("k", 3, 1_100),
            Some(CachedDenial {
                retry_after_us: 400,
                reset_after_us: 1_900,
                remaining: 2,
            })
        );
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

//! A shard's concurrency leases: per (resource, key), the live leases of its concurrency limit
//! ([`ConcurrencyState`]). They sit beside the shard's table under the shard's one lock, so an
//! acquire decides the key's rate limits and its lease together; a set whose leases have all
//! expired is dropped by the sweep, and a shard holds at most as many sets as it holds keys.

use std::collections::HashMap;

use crate::algorithm::concurrency::ConcurrencyState;

/// (resource, key) → its live leases.
#[derive(Debug, Default)]
pub(super) struct Leases(HashMap<(Box<str>, Box<str>), ConcurrencyState>);

impl Leases {
    /// The pair's leases, taken out (fresh when it has none); `None` when it has none and the
    /// shard already holds `capacity` sets.
    pub(super) fn take(
        &mut self,
        resource: &str,
        key: &str,
        capacity: usize,
    ) -> Option<ConcurrencyState> {
        let pair = (Box::from(resource), Box::from(key));
        match self.0.remove(&pair) {
            Some(leases) => Some(leases),
            None if self.0.len() >= capacity => None,
            None => Some(ConcurrencyState::default()),
        }
    }

    /// Puts the pair's leases back, unless none is live at `now`.
    pub(super) fn put(&mut self, resource: &str, key: &str, leases: ConcurrencyState, now: u64) {
        if leases.any_live(now) {
            self.0.insert((Box::from(resource), Box::from(key)), leases);
        }
    }

    /// Drops every set with no live lease at `now`.
    pub(super) fn sweep(&mut self, now: u64) {
        self.0.retain(|_, leases| leases.any_live(now));
    }
}

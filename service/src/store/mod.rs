//! Where counters live. The [`Store`] trait is the seam between deciding (the limiter, the
//! pure algorithms) and storage: a store applies a rule's limits to one key's states
//! atomically, all or nothing ([`crate::algorithm::stacked`]), with its own notion of `now`. Every store passes the same contract tests
//! (`tests/store_contract.rs`).

mod breaker;
mod deny_cache;
mod memory;
mod redis;

use std::{future::Future, sync::Arc};

pub use breaker::{Breaker, CircuitState};
pub use deny_cache::DenyCache;
pub use memory::MemoryStore;
pub use redis::{DECISION_SCRIPT, LIVENESS, RedisMetrics, RedisStore, escape_into};

use crate::{
    adaptive::{Aimd, Window},
    algorithm::{
        ban::Bans,
        concurrency::{Concurrency, StackedAcquire},
        stacked::{Decisions, Limit},
    },
};

/// A change of rules as a store sees it.
pub trait Remapping: Send + Sync + std::fmt::Debug {
    /// For a (resource, key): the limits its state was kept under and those it is decided
    /// under next, when the change changed them ([`crate::rules::same_layout`]).
    fn layouts(&self, resource: &str, key: &str) -> Option<(&[Limit], &[Limit])>;
}

/// For a (resource, key): the limits it is decided under now, if any rule applies.
pub type LimitsOf<'a> = dyn Fn(&str, &str) -> Option<&'a [Limit]> + 'a;

/// Identifies one key's state: the client key spending one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketKey<'a> {
    pub resource: &'a str,
    pub key: &'a str,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out after {0} ms")]
    Timeout(u64),
    #[error("store circuit open after repeated failures; not calling it until the backoff ends")]
    CircuitOpen,
    #[error(
        "store full: no key could be forgotten without giving quota back (backend.memory.full_policy = \"deny_new\"); raise backend.memory.max_keys"
    )]
    Full,
    #[error(
        "store busy: this call waited {0} ms for one of backend.redis.max_in_flight slots; raise it, or add nodes"
    )]
    Busy(u64),
}

impl StoreError {
    /// Every [`StoreError::kind`].
    pub const KINDS: [&'static str; 5] = ["unavailable", "timeout", "circuit_open", "full", "busy"];

    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[match self {
            StoreError::Unavailable(_) => 0,
            StoreError::Timeout(_) => 1,
            StoreError::CircuitOpen => 2,
            StoreError::Full => 3,
            StoreError::Busy(_) => 4,
        }]
    }
}

pub trait Store: Send + Sync + 'static {
    /// Spends `cost` of `key` under every one of `limits` if all allow, else under none; under
    /// `bans` answers a banned key from its ban and counts a denial as an offence of the rule's
    /// policy; all in one atomic step per key. One decision per limit, in order.
    fn check(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
    ) -> impl Future<Output = Result<Decisions, StoreError>> + Send;

    /// Reads what `key`'s states (and ban) mean now without changing them.
    fn peek(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
    ) -> impl Future<Output = Result<Decisions, StoreError>> + Send;

    /// Forgets `key`'s state under `limits`; true when there was any. Bans stay: reset is on
    /// the public API, and a banned client must not be able to lift its own ban.
    fn reset(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Carries keys' states over `change`, and calls `commit` (which swaps the rules in).
    /// A state under a limit of the same name and algorithm carries over; the rest start
    /// fresh. Stores that keep each limit's state under its name and algorithm (Redis) need do
    /// nothing but commit.
    fn remap(&self, change: Arc<dyn Remapping>, commit: &mut dyn FnMut()) {
        let _ = change;
        commit();
    }

    /// Lifts `key`'s ban under `bans` (the rule's own, and the key-wide one when the rule
    /// watches it), offences included; true when there was a ban record. Limit states stay.
    fn lift_ban(
        &self,
        key: BucketKey<'_>,
        bans: Bans<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Acquires lease `lease` of `key` under `concurrency` together with `limits` (charged
    /// `1` each), all or nothing, in one atomic step per key
    /// ([`crate::algorithm::concurrency::acquire_stacked`]).
    fn acquire(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        concurrency: &Concurrency,
        lease: u64,
    ) -> impl Future<Output = Result<StackedAcquire, StoreError>> + Send;

    /// Ends lease `lease` of `key`; false when it was not live (released, or expired).
    fn release(
        &self,
        key: BucketKey<'_>,
        concurrency: &Concurrency,
        lease: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds `reported` (what this node was told of `resource`'s backend since its last call)
    /// to the resource's adaptive state, which every node on this store shares, and returns
    /// its factor in parts per million ([`Aimd::merge`]): windows of `window_us` on the
    /// store's clock, so a fleet moves one factor together.
    fn adapt(
        &self,
        resource: &str,
        aimd: &Aimd,
        window_us: u64,
        reported: Window,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The rules changed: forget any decision remembered to answer without the store (the
    /// Redis store's deny cache), since it was made under the old rules.
    fn rules_changed(&self) {}

    /// Keys currently held, where the store can tell cheaply.
    fn active_keys(&self) -> Option<u64>;

    /// Keys banned now, where the store can tell cheaply (Redis cannot: it would have to scan).
    fn active_bans(&self) -> Option<u64> {
        None
    }

    /// False while the store is known to be unreachable.
    fn healthy(&self) -> bool {
        true
    }

    /// Periodic housekeeping (the server calls it every sweep interval); `limits_of` names the
    /// limits each pair is decided under now.
    fn upkeep(&self, limits_of: &LimitsOf<'_>) {
        let _ = limits_of;
    }
}

/// The store a server runs on, chosen by configuration.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per process, behind an Arc; boxing would only add an indirection per request"
)]
pub enum Backend {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store for Backend {
    async fn check(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
    ) -> Result<Decisions, StoreError> {
        match self {
            Backend::Memory(store) => store.check(key, limits, bans, cost).await,
            Backend::Redis(store) => store.check(key, limits, bans, cost).await,
        }
    }

    async fn peek(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
    ) -> Result<Decisions, StoreError> {
        match self {
            Backend::Memory(store) => store.peek(key, limits, bans).await,
            Backend::Redis(store) => store.peek(key, limits, bans).await,
        }
    }

    async fn reset(&self, key: BucketKey<'_>, limits: &[Limit]) -> Result<bool, StoreError> {
        match self {
            Backend::Memory(store) => store.reset(key, limits).await,
            Backend::Redis(store) => store.reset(key, limits).await,
        }
    }

    fn active_keys(&self) -> Option<u64> {
        match self {
            Backend::Memory(store) => store.active_keys(),
            Backend::Redis(store) => store.active_keys(),
        }
    }

    fn active_bans(&self) -> Option<u64> {
        match self {
            Backend::Memory(store) => Store::active_bans(store),
            Backend::Redis(store) => store.active_bans(),
        }
    }

    fn healthy(&self) -> bool {
        match self {
            Backend::Memory(_) => true,
            Backend::Redis(store) => store.healthy(),
        }
    }

    fn upkeep(&self, limits_of: &LimitsOf<'_>) {
        if let Backend::Memory(store) = self {
            store.upkeep(limits_of);
        }
    }

    async fn lift_ban(&self, key: BucketKey<'_>, bans: Bans<'_>) -> Result<bool, StoreError> {
        match self {
            Backend::Memory(store) => store.lift_ban(key, bans).await,
            Backend::Redis(store) => store.lift_ban(key, bans).await,
        }
    }

    async fn acquire(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        concurrency: &Concurrency,
        lease: u64,
    ) -> Result<StackedAcquire, StoreError> {
        match self {
            Backend::Memory(store) => Store::acquire(store, key, limits, concurrency, lease).await,
            Backend::Redis(store) => Store::acquire(store, key, limits, concurrency, lease).await,
        }
    }

    async fn release(
        &self,
        key: BucketKey<'_>,
        concurrency: &Concurrency,
        lease: u64,
    ) -> Result<bool, StoreError> {
        match self {
            Backend::Memory(store) => Store::release(store, key, concurrency, lease).await,
            Backend::Redis(store) => Store::release(store, key, concurrency, lease).await,
        }
    }

    async fn adapt(
        &self,
        resource: &str,
        aimd: &Aimd,
        window_us: u64,
        reported: Window,
    ) -> Result<u64, StoreError> {
        match self {
            Backend::Memory(store) => store.adapt(resource, aimd, window_us, reported).await,
            Backend::Redis(store) => store.adapt(resource, aimd, window_us, reported).await,
        }
    }

    fn rules_changed(&self) {
        match self {
            Backend::Memory(store) => store.rules_changed(),
            Backend::Redis(store) => store.rules_changed(),
        }
    }

    fn remap(&self, change: Arc<dyn Remapping>, commit: &mut dyn FnMut()) {
        match self {
            Backend::Memory(store) => Store::remap(store, change, commit),
            Backend::Redis(store) => Store::remap(store, change, commit),
        }
    }
}

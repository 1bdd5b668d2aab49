//! Where counters live. The [`Store`] trait is the seam between deciding (the limiter, the
//! pure algorithms) and storage: a store applies an algorithm to one key's state atomically,
//! with its own notion of `now`. Every store passes the same contract tests
//! (`tests/store_contract.rs`).

mod breaker;
mod deny_cache;
mod memory;
mod redis;

use std::future::Future;

pub use breaker::{Breaker, CircuitState};
pub use deny_cache::DenyCache;
pub use memory::MemoryStore;
pub use redis::{RedisMetrics, RedisStore, TOKEN_BUCKET_SCRIPT, escape_into};

use crate::algorithm::{Algorithm, Decision};

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
}

impl StoreError {
    /// Every [`StoreError::kind`].
    pub const KINDS: [&'static str; 3] = ["unavailable", "timeout", "circuit_open"];

    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[match self {
            StoreError::Unavailable(_) => 0,
            StoreError::Timeout(_) => 1,
            StoreError::CircuitOpen => 2,
        }]
    }
}

pub trait Store: Send + Sync + 'static {
    /// Spends `cost` of `key` under `algorithm` if allowed; atomic per key.
    fn check(
        &self,
        key: BucketKey<'_>,
        algorithm: &Algorithm,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Reads what `key`'s state means now without changing it.
    fn peek(
        &self,
        key: BucketKey<'_>,
        algorithm: &Algorithm,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Forgets `key`'s state; true when there was any.
    fn reset(&self, key: BucketKey<'_>) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Keys currently held, where the store can tell cheaply.
    fn active_keys(&self) -> Option<u64>;

    /// False while the store is known to be unreachable.
    fn healthy(&self) -> bool {
        true
    }

    /// Periodic housekeeping (the server calls it every sweep interval).
    fn upkeep(&self) {}
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

impl Store for RedisStore {
    async fn check(
        &self,
        key: BucketKey<'_>,
        algorithm: &Algorithm,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        RedisStore::check(self, key, algorithm, cost).await
    }

    async fn peek(
        &self,
        key: BucketKey<'_>,
        algorithm: &Algorithm,
    ) -> Result<Decision, StoreError> {
        RedisStore::peek(self, key, algorithm).await
    }

    async fn reset(&self, key: BucketKey<'_>) -> Result<bool, StoreError> {
        RedisStore::reset(self, key).await
    }

    fn active_keys(&self) -> Option<u64> {
        None
    }

    fn healthy(&self) -> bool {
        self.circuit_state() == CircuitState::Closed
    }
}

impl Store for Backend {
    async fn check(
        &self,
        key: BucketKey<'_>,
        algorithm: &Algorithm,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        match self {
            Backend::Memory(store) => store.check(key, algorithm, cost).await,
            Backend::Redis(store) => store.check(key, algorithm, cost).await,
        }
    }

    async fn peek(
        &self,
        key: BucketKey<'_>,
        algorithm: &Algorithm,
    ) -> Result<Decision, StoreError> {
        match self {
            Backend::Memory(store) => store.peek(key, algorithm).await,
            Backend::Redis(store) => store.peek(key, algorithm).await,
        }
    }

    async fn reset(&self, key: BucketKey<'_>) -> Result<bool, StoreError> {
        match self {
            Backend::Memory(store) => store.reset(key).await,
            Backend::Redis(store) => store.reset(key).await,
        }
    }

    fn active_keys(&self) -> Option<u64> {
        match self {
            Backend::Memory(store) => store.active_keys(),
            Backend::Redis(store) => Store::active_keys(store),
        }
    }

    fn healthy(&self) -> bool {
        match self {
            Backend::Memory(_) => true,
            Backend::Redis(store) => store.healthy(),
        }
    }

    fn upkeep(&self) {
        if let Backend::Memory(store) = self {
            store.upkeep();
        }
    }
}

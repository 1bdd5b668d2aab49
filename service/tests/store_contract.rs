//! The contract every store must keep, run against each backend with injected time.

mod common;

use std::sync::Arc;

use common::redis::{LocalRedis, LocalRedisCluster};

use sluice::{
    algorithm::{
        Algorithm, FixedWindow, Gcra, SlidingWindowCounter, SlidingWindowLog, TokenBucket,
    },
    clock::Clock,
    config::MemoryConfig,
    metrics::Metrics,
    store::{BucketKey, MemoryStore, RedisStore, Store},
};

/// A store plus the means to move its time.
trait Harness: Send + Sync + 'static {
    type S: Store;
    fn store(&self) -> &Self::S;
    fn advance_us(&self, us: u64);
}

struct Memory(MemoryStore);

impl Harness for Memory {
    type S = MemoryStore;
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    fn advance_us(&self, us: u64) {
        self.0.clock().advance_us(us);
    }
}

/// A Redis store on its own real redis-server (or cluster), time pinned to a manual clock.
struct Redis<Server> {
    store: RedisStore,
    _server: Server,
}

impl<Server: Send + Sync + 'static> Harness for Redis<Server> {
    type S = RedisStore;
    fn store(&self) -> &RedisStore {
        &self.store
    }
    fn advance_us(&self, us: u64) {
        self.store.clock().advance_us(us);
    }
}

async fn redis_store(urls: Vec<String>, cluster: bool) -> RedisStore {
    let config = common::redis_config(urls, cluster);
    RedisStore::connect(&config, Metrics::new().redis())
        .await
        .expect("connects to the test redis")
        .pin_time(Clock::manual(1_700_000_000_000_000))
}

async fn redis() -> Redis<LocalRedis> {
    let server = common::redis::server();
    Redis {
        store: redis_store(vec![server.url()], false).await,
        _server: server,
    }
}

async fn redis_cluster() -> Redis<LocalRedisCluster> {
    let cluster = common::redis::cluster();
    Redis {
        store: redis_store(cluster.urls(), true).await,
        _server: cluster,
    }
}

async fn memory() -> Memory {
    let config = MemoryConfig {
        shards: 16,
        max_keys: 100_000,
        sweep_interval: std::time::Duration::from_secs(1),
    };
    Memory(MemoryStore::new(
        &config,
        Clock::manual(1_700_000_000_000_000),
    ))
}

/// Every algorithm with a limit of 3.
fn algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::TokenBucket(TokenBucket::new(3, 2.0)),
        Algorithm::Gcra(Gcra::new(2.0, 3)),
        Algorithm::FixedWindow(FixedWindow::new(3, 1_000_000)),
        Algorithm::SlidingWindowCounter(SlidingWindowCounter::new(3, 1_000)),
        Algorithm::SlidingWindowLog(SlidingWindowLog::new(3, 1_000_000)),
    ]
}

fn key<'a>(resource: &'a str, key: &'a str) -> BucketKey<'a> {
    BucketKey { resource, key }
}

macro_rules! contract {
    ($($backend:ident),*) => {$(
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn spends_the_limit_then_denies_until_retry_after() {
                contract_spends_the_limit(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn peek_reads_without_consuming() {
                contract_peek(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn reset_forgets_one_key() {
                contract_reset(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn keys_and_resources_never_share_state() {
                contract_isolation(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn a_changed_rule_starts_fresh() {
                contract_rule_change(&super::$backend().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_storm_admits_exactly_capacity() {
                contract_storm(Arc::new(super::$backend().await)).await;
            }
        }
    )*};
}

contract!(memory, redis, redis_cluster);

async fn contract_spends_the_limit<H: Harness>(harness: &H) {
    for algorithm in algorithms() {
        let store = harness.store();
        let bucket = key("spend", algorithm.name());
        for expected_remaining in [2, 1, 0] {
            let decision = store.check(bucket, &algorithm, 1).await.unwrap();
            assert!(decision.allowed, "{algorithm:?}");
            assert_eq!(decision.remaining, expected_remaining, "{algorithm:?}");
            assert_eq!(decision.limit, 3);
        }
        let denied = store.check(bucket, &algorithm, 1).await.unwrap();
        assert!(!denied.allowed, "{algorithm:?}");
        assert!(
            denied.retry_after_us > 0 && denied.reset_after_us > 0,
            "{denied:?}"
        );
        harness.advance_us(denied.retry_after_us - 1);
        assert!(
            !store.check(bucket, &algorithm, 1).await.unwrap().allowed,
            "{algorithm:?} early"
        );
        harness.advance_us(1);
        assert!(
            store.check(bucket, &algorithm, 1).await.unwrap().allowed,
            "{algorithm:?} at retry-after"
        );
    }
}

async fn contract_peek<H: Harness>(harness: &H) {
    for algorithm in algorithms() {
        let store = harness.store();
        let bucket = key("peek", algorithm.name());
        let fresh = store.peek(bucket, &algorithm).await.unwrap();
        assert_eq!(
            (fresh.remaining, fresh.reset_after_us),
            (3, 0),
            "{algorithm:?}"
        );
        store.check(bucket, &algorithm, 2).await.unwrap();
        for _ in 0..3 {
            let peeked = store.peek(bucket, &algorithm).await.unwrap();
            assert_eq!(peeked.remaining, 1, "{algorithm:?}");
        }
        assert!(store.check(bucket, &algorithm, 1).await.unwrap().allowed);
    }
}

async fn contract_reset<H: Harness>(harness: &H) {
    let store = harness.store();
    let algorithm = &algorithms()[0];
    let (a, b) = (key("reset", "a"), key("reset", "b"));
    store.check(a, algorithm, 3).await.unwrap();
    store.check(b, algorithm, 3).await.unwrap();
    assert!(store.reset(a).await.unwrap());
    assert!(!store.reset(a).await.unwrap(), "nothing left to reset");
    assert_eq!(
        store.check(a, algorithm, 3).await.unwrap().remaining,
        0,
        "a starts full again"
    );
    assert!(
        !store.check(b, algorithm, 1).await.unwrap().allowed,
        "b keeps its state"
    );
}

async fn contract_isolation<H: Harness>(harness: &H) {
    let store = harness.store();
    let algorithm = Algorithm::FixedWindow(FixedWindow::new(1, 60_000_000));
    // Pairs that would collide under naive "resource:key" concatenation or hash tags.
    let buckets = [
        key("r", "a:b"),
        key("r:a", "b"),
        key("r", "{a}"),
        key("r", "{a"),
        key("{r}", "a"),
        key("r", "a\u{0}b"),
        key("r", "a"),
        key("s", "a"),
        key("r", "ä"),
    ];
    for bucket in buckets {
        assert!(
            store.check(bucket, &algorithm, 1).await.unwrap().allowed,
            "{bucket:?} was already spent"
        );
    }
    for bucket in buckets {
        assert!(
            !store.check(bucket, &algorithm, 1).await.unwrap().allowed,
            "{bucket:?}"
        );
    }
}

async fn contract_rule_change<H: Harness>(harness: &H) {
    let store = harness.store();
    let bucket = key("change", "k");
    let before = Algorithm::FixedWindow(FixedWindow::new(2, 60_000_000));
    store.check(bucket, &before, 2).await.unwrap();
    let after = Algorithm::SlidingWindowLog(SlidingWindowLog::new(5, 60_000_000));
    assert_eq!(store.check(bucket, &after, 1).await.unwrap().remaining, 4);
}

async fn contract_storm<H: Harness>(harness: Arc<H>) {
    let capacity = 1_000;
    let algorithm = Arc::new(Algorithm::TokenBucket(TokenBucket::new(capacity, 1e-6)));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (harness, algorithm) = (harness.clone(), algorithm.clone());
            tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..200 {
                    if harness
                        .store()
                        .check(key("storm", "hot"), &algorithm, 1)
                        .await
                        .unwrap()
                        .allowed
                    {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, capacity, "64 x 200 requests on one key");
}

//! The contract every store must keep, run against each backend with injected time.

mod common;

use std::sync::Arc;

use common::redis::{LocalRedis, LocalRedisCluster};

use sluice::{
    adaptive::{Aimd, WHOLE, Window},
    algorithm::{
        Algorithm, Decision, FixedWindow, Gcra, SlidingWindowCounter, SlidingWindowLog,
        TokenBucket,
        ban::{Ban, BanScope, Bans},
        concurrency::{Acquired, Concurrency},
        stacked::{self, Decisions, Limit},
    },
    clock::Clock,
    config::MemoryConfig,
    metrics::Metrics,
    store::{BucketKey, MemoryStore, RedisStore, Remapping, Store},
};

/// A store plus the means to move its time.
trait Harness: Send + Sync + 'static {
    type S: Store;
    fn store(&self) -> &Self::S;
    fn advance_us(&self, us: u64);
    /// Moves time on by `us` and lets the store drop whatever it holds for that long: the
    /// memory store sweeps, Redis expires keys (on its own clock: this waits in real time).
    async fn pass_and_expire(&self, us: u64);
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
    async fn pass_and_expire(&self, us: u64) {
        self.advance_us(us);
        self.0.sweep_expired();
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
    async fn pass_and_expire(&self, us: u64) {
        self.advance_us(us);
        // A key lives a second past its state's reset (lua/prelude.lua's ttl_ms).
        tokio::time::sleep(std::time::Duration::from_micros(us + 1_200_000)).await;
    }
}

async fn redis_store(urls: Vec<String>, cluster: bool) -> RedisStore {
    let config = common::redis_config(urls, cluster);
    RedisStore::connect(&config, Metrics::new().redis())
        .await
        .expect("connects to the test redis")
        .pin_time(Clock::manual(START_US))
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
        full_policy: sluice::config::FullPolicy::Evict,
        sweep_interval: std::time::Duration::from_secs(1),
    };
    Memory(MemoryStore::new(&config, Clock::manual(START_US)))
}

/// Where every harness's clock starts.
const START_US: u64 = 1_700_000_000_000_000;

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

/// One request under a rule of one limit.
async fn check<S: Store>(
    store: &S,
    bucket: BucketKey<'_>,
    algorithm: &Algorithm,
    cost: u64,
) -> Decision {
    let decisions = store
        .check(bucket, &Limit::alone(algorithm.clone()), Bans::NONE, cost)
        .await
        .unwrap();
    assert_eq!(decisions.len(), 1);
    decisions.decision()
}

async fn peek<S: Store>(store: &S, bucket: BucketKey<'_>, algorithm: &Algorithm) -> Decision {
    store
        .peek(bucket, &Limit::alone(algorithm.clone()), Bans::NONE)
        .await
        .unwrap()
        .decision()
}

/// A burst of 2 (refilled at 1/s) and 3 per minute, stacked.
fn burst_and_minute() -> Vec<Limit> {
    vec![
        Limit::new("burst", Algorithm::TokenBucket(TokenBucket::new(2, 1.0))),
        Limit::new(
            "minute",
            Algorithm::SlidingWindowLog(SlidingWindowLog::new(3, 60_000_000)),
        ),
    ]
}

fn remaining(decisions: &Decisions) -> Vec<u64> {
    decisions.as_slice().iter().map(|d| d.remaining).collect()
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

            #[tokio::test]
            async fn a_reload_keeps_each_limits_state_by_name_and_applies_the_new_numbers() {
                contract_remap(&super::$backend().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_storm_admits_exactly_capacity() {
                contract_storm(Arc::new(super::$backend().await)).await;
            }

            #[tokio::test]
            async fn stacked_limits_charge_all_or_nothing() {
                contract_stacked(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn stacked_limits_decide_exactly_like_the_pure_model() {
                contract_stacked_model(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn stacked_state_lives_as_long_as_its_slowest_limit() {
                contract_stacked_lifetime(&super::$backend().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stacked_storm_admits_exactly_the_tightest_bound() {
                contract_stacked_storm(Arc::new(super::$backend().await)).await;
            }

            #[tokio::test]
            async fn a_ban_starts_at_the_after_th_denial_and_charges_nothing_until_it_ends() {
                contract_ban(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn lifting_a_ban_frees_the_key_and_keeps_its_limits() {
                contract_lift_ban(&super::$backend().await).await;
            }

            #[tokio::test]
            async fn a_key_wide_ban_holds_on_every_resource() {
                contract_key_ban(&super::$backend().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ban_storm_bans_at_exactly_the_after_th_denial() {
                contract_ban_storm(Arc::new(super::$backend().await)).await;
            }

            #[tokio::test]
            async fn leases_are_taken_with_the_rate_limits_all_or_nothing_and_end() {
                contract_leases(&super::$backend().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_lease_storm_never_holds_more_than_max_in_flight() {
                contract_lease_storm(Arc::new(super::$backend().await)).await;
            }

            #[tokio::test]
            async fn an_adaptive_factor_sums_every_callers_reports_and_moves_once_a_window() {
                contract_adaptive(&super::$backend().await).await;
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
            let decision = check(store, bucket, &algorithm, 1).await;
            assert!(decision.allowed, "{algorithm:?}");
            assert_eq!(decision.remaining, expected_remaining, "{algorithm:?}");
            assert_eq!(decision.limit, 3);
        }
        let denied = check(store, bucket, &algorithm, 1).await;
        assert!(!denied.allowed, "{algorithm:?}");
        assert!(
            denied.retry_after_us > 0 && denied.reset_after_us > 0,
            "{denied:?}"
        );
        harness.advance_us(denied.retry_after_us - 1);
        assert!(
            !check(store, bucket, &algorithm, 1).await.allowed,
            "{algorithm:?} early"
        );
        harness.advance_us(1);
        assert!(
            check(store, bucket, &algorithm, 1).await.allowed,
            "{algorithm:?} at retry-after"
        );
    }
}

async fn contract_peek<H: Harness>(harness: &H) {
    for algorithm in algorithms() {
        let store = harness.store();
        let bucket = key("peek", algorithm.name());
        let fresh = peek(store, bucket, &algorithm).await;
        assert_eq!(
            (fresh.remaining, fresh.reset_after_us),
            (3, 0),
            "{algorithm:?}"
        );
        check(store, bucket, &algorithm, 2).await;
        for _ in 0..3 {
            let peeked = peek(store, bucket, &algorithm).await;
            assert_eq!(peeked.remaining, 1, "{algorithm:?}");
        }
        assert!(check(store, bucket, &algorithm, 1).await.allowed);
    }
}

async fn contract_reset<H: Harness>(harness: &H) {
    let store = harness.store();
    let algorithm = &algorithms()[0];
    let (a, b) = (key("reset", "a"), key("reset", "b"));
    check(store, a, algorithm, 3).await;
    check(store, b, algorithm, 3).await;
    assert!(
        store
            .reset(a, &Limit::alone(algorithm.clone()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .reset(a, &Limit::alone(algorithm.clone()))
            .await
            .unwrap(),
        "nothing left to reset"
    );
    assert_eq!(
        check(store, a, algorithm, 3).await.remaining,
        0,
        "a starts full again"
    );
    assert!(
        !check(store, b, algorithm, 1).await.allowed,
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
            check(store, bucket, &algorithm, 1).await.allowed,
            "{bucket:?} was already spent"
        );
    }
    for bucket in buckets {
        assert!(
            !check(store, bucket, &algorithm, 1).await.allowed,
            "{bucket:?}"
        );
    }
}

async fn contract_rule_change<H: Harness>(harness: &H) {
    let store = harness.store();
    let bucket = key("change", "k");
    let before = Algorithm::FixedWindow(FixedWindow::new(2, 60_000_000));
    check(store, bucket, &before, 2).await;
    let after = Algorithm::SlidingWindowLog(SlidingWindowLog::new(5, 60_000_000));
    assert_eq!(check(store, bucket, &after, 1).await.remaining, 4);
}

/// Rules change under live keys (a reload): limits are reordered, one is added, the numbers
/// change. Each limit that keeps its name and algorithm keeps its state, whatever its new
/// position, and is read with its new numbers: a count against a grown limit, tokens clamped to
/// a shrunk capacity. A new limit starts fresh.
async fn contract_remap<H: Harness>(harness: &H) {
    let store = harness.store();
    let day = 86_400_000_000;
    let before = [
        Limit::new("burst", Algorithm::TokenBucket(TokenBucket::new(5, 1e-6))),
        Limit::new("daily", Algorithm::FixedWindow(FixedWindow::new(10, day))),
    ];
    let after = [
        Limit::new("daily", Algorithm::FixedWindow(FixedWindow::new(20, day))),
        Limit::new(
            "extra",
            Algorithm::SlidingWindowLog(SlidingWindowLog::new(4, 60_000_000)),
        ),
        Limit::new("burst", Algorithm::TokenBucket(TokenBucket::new(3, 1e-6))),
    ];
    let (spent, light) = (key("remap", "spent"), key("remap", "light"));
    let remaining = |decisions: &Decisions| -> Vec<u64> {
        decisions.as_slice().iter().map(|d| d.remaining).collect()
    };
    let first = store.check(spent, &before, Bans::NONE, 3).await.unwrap();
    assert_eq!(remaining(&first), [2, 7]);
    let first = store.check(light, &before, Bans::NONE, 1).await.unwrap();
    assert_eq!(remaining(&first), [4, 9]);

    let mut committed = false;
    store.remap(
        ResourceChange::shared("remap", &before, &after),
        &mut || committed = true,
    );
    assert!(committed, "the new rules go live");

    let next = store.check(spent, &after, Bans::NONE, 1).await.unwrap();
    assert!(next.allowed());
    assert_eq!(
        remaining(&next),
        [16, 3, 1],
        "daily counted 3 of 20 now, extra fresh, burst kept its 2 tokens"
    );
    let next = store.check(light, &after, Bans::NONE, 1).await.unwrap();
    assert_eq!(
        remaining(&next),
        [18, 3, 2],
        "4 tokens clamp to the new capacity of 3"
    );

    // Two limits of one algorithm change places: each state follows its name, not its slot.
    let hour = 3_600_000_000;
    let windows = |first: (&'static str, u64, u64), second: (&'static str, u64, u64)| {
        [first, second].map(|(name, limit, window)| {
            Limit::new(
                name,
                Algorithm::FixedWindow(FixedWindow::new(limit, window)),
            )
        })
    };
    let (swapped_before, swapped_after) = (
        windows(("daily", 100, day), ("hourly", 10, hour)),
        windows(("hourly", 10, hour), ("daily", 100, day)),
    );
    let twin = key("twins", "k");
    let first = store
        .check(twin, &swapped_before, Bans::NONE, 4)
        .await
        .unwrap();
    assert_eq!(remaining(&first), [96, 6]);
    store.remap(
        ResourceChange::shared("twins", &swapped_before, &swapped_after),
        &mut || {},
    );
    let next = store
        .check(twin, &swapped_after, Bans::NONE, 1)
        .await
        .unwrap();
    assert_eq!(remaining(&next), [5, 95]);
}

/// A reload that changed one resource's limits from `before` to `after`.
#[derive(Debug)]
struct ResourceChange {
    resource: &'static str,
    before: Vec<Limit>,
    after: Vec<Limit>,
}

impl ResourceChange {
    fn shared(resource: &'static str, before: &[Limit], after: &[Limit]) -> Arc<dyn Remapping> {
        Arc::new(Self {
            resource,
            before: before.to_vec(),
            after: after.to_vec(),
        })
    }
}

impl Remapping for ResourceChange {
    fn layouts(&self, resource: &str, _key: &str) -> Option<(&[Limit], &[Limit])> {
        (resource == self.resource).then_some((self.before.as_slice(), self.after.as_slice()))
    }
}

async fn contract_storm<H: Harness>(harness: Arc<H>) {
    let capacity = 1_000;
    let algorithm = Arc::new(Limit::alone(Algorithm::TokenBucket(TokenBucket::new(
        capacity, 1e-6,
    ))));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (harness, algorithm) = (harness.clone(), algorithm.clone());
            tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..200 {
                    if harness
                        .store()
                        .check(key("storm", "hot"), &*algorithm, Bans::NONE, 1)
                        .await
                        .unwrap()
                        .allowed()
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

async fn contract_stacked<H: Harness>(harness: &H) {
    let store = harness.store();
    let limits = burst_and_minute();
    let bucket = key("stacked", "k");
    let first = store.check(bucket, &limits, Bans::NONE, 2).await.unwrap();
    assert!(first.allowed());
    assert_eq!(remaining(&first), [0, 1], "both limits charged");
    let denied = store.check(bucket, &limits, Bans::NONE, 1).await.unwrap();
    assert!(!denied.allowed());
    assert_eq!(denied.deciding(), 0, "the burst denies");
    assert_eq!(
        remaining(&denied),
        [0, 1],
        "the minute limit was not charged"
    );
    assert_eq!(denied.decision().retry_after_us, 1_000_000);
    harness.advance_us(1_000_000);
    assert!(
        store
            .check(bucket, &limits, Bans::NONE, 1)
            .await
            .unwrap()
            .allowed()
    );
    harness.advance_us(2_000_000);
    let minute_spent = store.check(bucket, &limits, Bans::NONE, 1).await.unwrap();
    assert!(!minute_spent.allowed());
    assert_eq!(minute_spent.deciding(), 1, "now the minute limit denies");
    assert_eq!(
        remaining(&minute_spent),
        [2, 0],
        "the burst was not charged"
    );
    assert_eq!(
        minute_spent.decision().retry_after_us,
        57_000_000,
        "until the first two leave the minute"
    );
    assert_eq!(
        store
            .peek(bucket, &limits, Bans::NONE)
            .await
            .unwrap()
            .as_slice()[0]
            .remaining,
        2
    );
    assert!(store.reset(bucket, &limits).await.unwrap());
    assert_eq!(
        remaining(&store.check(bucket, &limits, Bans::NONE, 1).await.unwrap()),
        [1, 2],
        "reset forgets every limit"
    );
}

/// A fast limit that keeps writing (a refilling bucket) and a slow one that a denial leaves
/// unwritten: the slow limit's count must outlive the fast limit's state.
async fn contract_stacked_lifetime<H: Harness>(harness: &H) {
    let store = harness.store();
    let limits = [
        Limit::new("fast", Algorithm::TokenBucket(TokenBucket::new(1, 1_000.0))),
        Limit::new(
            "hour",
            Algorithm::FixedWindow(FixedWindow::new(2, 3_600_000_000)),
        ),
    ];
    let bucket = key("lifetime", "k");
    let first = store.check(bucket, &limits, Bans::NONE, 1).await.unwrap();
    assert_eq!(remaining(&first), [0, 1]);
    let denied = store.check(bucket, &limits, Bans::NONE, 1).await.unwrap();
    assert_eq!(
        (denied.allowed(), denied.deciding()),
        (false, 0),
        "the fast limit denies"
    );
    harness.pass_and_expire(2_000).await;
    let second = store.check(bucket, &limits, Bans::NONE, 1).await.unwrap();
    assert_eq!(
        remaining(&second),
        [0, 0],
        "the hour still counts the first request after the fast limit's state went fresh"
    );
    harness.advance_us(2_000);
    let spent = store.check(bucket, &limits, Bans::NONE, 1).await.unwrap();
    assert_eq!((spent.allowed(), spent.deciding()), (false, 1));
}

async fn contract_stacked_model<H: Harness>(harness: &H) {
    let store = harness.store();
    let limits = vec![
        Limit::new("tb", Algorithm::TokenBucket(TokenBucket::new(4, 3.0))),
        Limit::new("gcra", Algorithm::Gcra(Gcra::new(2.0, 5))),
        Limit::new("fw", Algorithm::FixedWindow(FixedWindow::new(9, 2_000_000))),
        Limit::new(
            "swc",
            Algorithm::SlidingWindowCounter(SlidingWindowCounter::new(8, 1_500)),
        ),
        Limit::new(
            "swl",
            Algorithm::SlidingWindowLog(SlidingWindowLog::new(7, 3_000_000)),
        ),
    ];
    let bucket = key("model", "k");
    let mut now = START_US;
    let mut states = stacked::fresh_states(&limits, now);
    // A fixed walk through bursts, pauses and peeks: gaps in us, costs (0 = peek).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for step in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let gap = [0, 0, 137, 90_000, 400_000, 1_300_000][(seed % 6) as usize];
        let cost = (seed >> 8) % 4;
        harness.advance_us(gap);
        now += gap;
        let (expected, actual) = if cost == 0 {
            (
                stacked::peek(&limits, &states, now),
                store.peek(bucket, &limits, Bans::NONE).await.unwrap(),
            )
        } else {
            (
                stacked::check(&limits, &mut states, cost, now),
                store
                    .check(bucket, &limits, Bans::NONE, cost)
                    .await
                    .unwrap(),
            )
        };
        assert_eq!(actual, expected, "step {step}: cost {cost} after {gap} us");
    }
}

async fn contract_stacked_storm<H: Harness>(harness: Arc<H>) {
    let limits = Arc::new(vec![
        Limit::new(
            "burst",
            Algorithm::TokenBucket(TokenBucket::new(1_000, 1e-6)),
        ),
        Limit::new(
            "hour",
            Algorithm::SlidingWindowLog(SlidingWindowLog::new(700, 3_600_000_000)),
        ),
    ]);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (harness, limits) = (harness.clone(), limits.clone());
            tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..200 {
                    let decisions = harness
                        .store()
                        .check(key("stacked-storm", "hot"), &limits, Bans::NONE, 1)
                        .await
                        .unwrap();
                    if decisions.allowed() {
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
    assert_eq!(admitted, 700, "64 x 200 requests; the tighter limit is 700");
    let after = harness
        .store()
        .peek(key("stacked-storm", "hot"), &limits, Bans::NONE)
        .await
        .unwrap();
    assert_eq!(
        remaining(&after),
        [300, 0],
        "denials charged nothing: the burst holds what the hour limit refused"
    );
}

/// Banned for 10 s (then 20 s, at most 30 s) after 3 denials within a minute.
fn ban(scope: BanScope) -> Ban {
    Ban {
        after: 3,
        within_us: 60_000_000,
        duration_us: 10_000_000,
        factor: 2.0,
        max_duration_us: 30_000_000,
        lookback_us: 60_000_000,
        scope,
    }
}

async fn contract_lift_ban<H: Harness>(harness: &H) {
    let store = harness.store();
    let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(2, 3_600_000_000)));
    let ban = ban(BanScope::Resource);
    let bucket = key("lift", "abuser");
    let check = async || {
        store
            .check(bucket, &limits, Bans::policy(&ban), 1)
            .await
            .unwrap()
    };
    for _ in 0..5 {
        check().await;
    }
    assert!(
        check().await.banned_for_us().is_some(),
        "2 allowed, the 3rd denial bans"
    );
    assert!(store.lift_ban(bucket, Bans::policy(&ban)).await.unwrap());
    assert!(
        !store.lift_ban(bucket, Bans::policy(&ban)).await.unwrap(),
        "nothing left to lift"
    );
    let after = check().await;
    assert!(after.banned_for_us().is_none(), "lifted: {after:?}");
    assert!(!after.allowed(), "the limit stays spent");
    assert!(
        !store
            .lift_ban(key("lift", "stranger"), Bans::NONE)
            .await
            .unwrap(),
        "a rule without bans has nothing to lift"
    );
}

async fn contract_ban<H: Harness>(harness: &H) {
    let store = harness.store();
    let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(1, 3_600_000_000)));
    let ban = ban(BanScope::Resource);
    let bucket = key("ban", "abuser");
    let check = async |cost| {
        store
            .check(bucket, &limits, Bans::policy(&ban), cost)
            .await
            .unwrap()
    };
    assert!(check(1).await.allowed());
    for _ in 0..2 {
        let denied = check(1).await;
        assert!(!denied.allowed() && denied.banned_for_us().is_none());
    }
    let third = check(1).await;
    assert_eq!(
        third.banned_for_us(),
        Some(10_000_000),
        "the 3rd denial bans"
    );
    assert!(third.ban_started());
    assert_eq!(third.decision().retry_after_us, 10_000_000);
    harness.advance_us(4_000_000);
    let during = check(1).await;
    assert_eq!(during.banned_for_us(), Some(6_000_000));
    assert!(!during.ban_started());
    assert_eq!(
        store
            .peek(bucket, &limits, Bans::policy(&ban))
            .await
            .unwrap()
            .banned_for_us(),
        Some(6_000_000),
        "a peek sees the ban"
    );
    harness.advance_us(6_000_000);
    let after = check(1).await;
    assert!(after.banned_for_us().is_none(), "over at its end");
    assert!(!after.allowed(), "and the limit is still spent");
    check(1).await;
    let again = check(1).await;
    assert_eq!(
        again.banned_for_us(),
        Some(20_000_000),
        "a repeat within the look-back lasts twice as long"
    );
    assert!(store.reset(bucket, &limits).await.unwrap());
    let after_reset = check(1).await;
    assert!(
        after_reset.banned_for_us().is_some(),
        "a reset never lifts a ban: {after_reset:?}"
    );
    harness.advance_us(20_000_000);
    assert!(
        check(1).await.allowed(),
        "the reset limits answer once the ban ends"
    );
}

async fn contract_key_ban<H: Harness>(harness: &H) {
    let store = harness.store();
    let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(1, 3_600_000_000)));
    let ban = ban(BanScope::Key);
    let (login, search, other) = (
        key("login", "mallory"),
        key("search", "mallory"),
        key("search", "trent"),
    );
    assert!(
        store
            .check(search, &limits, Bans::policy(&ban), 1)
            .await
            .unwrap()
            .allowed()
    );
    store
        .check(login, &limits, Bans::policy(&ban), 1)
        .await
        .unwrap();
    for _ in 0..3 {
        store
            .check(login, &limits, Bans::policy(&ban), 1)
            .await
            .unwrap();
    }
    let elsewhere = store
        .check(search, &limits, Bans::policy(&ban), 1)
        .await
        .unwrap();
    assert_eq!(
        elsewhere.banned_for_us(),
        Some(10_000_000),
        "banned on login, banned on search"
    );
    let innocent = store
        .check(other, &limits, Bans::policy(&ban), 1)
        .await
        .unwrap();
    assert!(innocent.allowed(), "another key is not banned");
    // A resource whose rule has no ban of its own still honours the key-wide one.
    let watching = Bans {
        policy: None,
        key_wide: true,
    };
    let feed = key("feed", "mallory");
    let refused = store.check(feed, &limits, watching, 1).await.unwrap();
    assert_eq!(refused.banned_for_us(), Some(10_000_000));
    assert_eq!(
        store
            .peek(feed, &limits, watching)
            .await
            .unwrap()
            .banned_for_us(),
        Some(10_000_000)
    );
    assert!(
        store
            .check(feed, &limits, Bans::NONE, 1)
            .await
            .unwrap()
            .allowed(),
        "nothing was charged while refused"
    );
    harness.advance_us(10_000_000);
    assert!(
        store
            .check(key("feed2", "mallory"), &limits, watching, 1)
            .await
            .unwrap()
            .allowed(),
        "the ban ends everywhere at once"
    );
}

async fn contract_ban_storm<H: Harness>(harness: Arc<H>) {
    let limits = Arc::new(Limit::alone(Algorithm::TokenBucket(TokenBucket::new(
        100, 1e-6,
    ))));
    let ban = Arc::new(Ban {
        after: 50,
        ..ban(BanScope::Resource)
    });
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (harness, limits, ban) = (harness.clone(), limits.clone(), ban.clone());
            tokio::spawn(async move {
                let mut counts = [0u64; 4]; // allowed, denied, banned by this, banned
                for _ in 0..20 {
                    let decisions = harness
                        .store()
                        .check(key("ban-storm", "hot"), &*limits, Bans::policy(&ban), 1)
                        .await
                        .unwrap();
                    let slot = match (decisions.allowed(), decisions.banned_for_us()) {
                        (true, _) => 0,
                        (false, None) => 1,
                        (false, Some(_)) if decisions.ban_started() => 2,
                        (false, Some(_)) => 3,
                    };
                    counts[slot] += 1;
                }
                counts
            })
        })
        .collect();
    let mut totals = [0u64; 4];
    for task in tasks {
        for (total, count) in totals.iter_mut().zip(task.await.unwrap()) {
            *total += count;
        }
    }
    assert_eq!(
        totals,
        [100, 49, 1, 640 - 150],
        "32 x 20 requests: exactly the capacity admitted, the 50th denial bans, the rest are banned"
    );
}

/// Two callers (nodes) report one resource's backend: the factor answers what all of them
/// reported in a window, once the next window begins, and no other resource's.
async fn contract_adaptive<H: Harness>(harness: &H) {
    let store = harness.store();
    let aimd = Aimd {
        target_latency_us: 50_000,
        max_error_ppm: 50_000,
        floor_ppm: 100_000,
        increase_ppm: 50_000,
        decrease_ppm: 700_000,
        min_reports: 20,
    };
    const WINDOW_US: u64 = 1_000_000;
    let report = |reports, slow| Window {
        reports,
        errors: 0,
        slow,
    };
    let adapt = async |resource: &str, reported: Window| {
        store
            .adapt(resource, &aimd, WINDOW_US, reported)
            .await
            .unwrap()
    };
    // Window 1: neither caller alone is over a tenth slow; together they are.
    assert_eq!(adapt("api", report(60, 6)).await, WHOLE);
    assert_eq!(
        adapt("api", report(40, 5)).await,
        WHOLE,
        "not before the window ends"
    );
    assert_eq!(adapt("other", report(100, 0)).await, WHOLE);
    harness.advance_us(WINDOW_US);
    // Window 2 closes window 1; one caller alone would be overloaded, together they are not.
    assert_eq!(adapt("api", report(30, 30)).await, 700_000);
    assert_eq!(adapt("api", report(270, 0)).await, 700_000);
    assert_eq!(adapt("other", Window::default()).await, WHOLE);
    harness.advance_us(WINDOW_US);
    assert_eq!(adapt("api", Window::default()).await, 750_000);
    // A window with no reports is no evidence: the factor stays.
    harness.advance_us(3 * WINDOW_US);
    assert_eq!(adapt("api", Window::default()).await, 750_000);
}

/// A lease comes with the rule's charge or not at all; a full key charges nothing; a release
/// or the lease's expiry frees its slot.
async fn contract_leases<H: Harness>(harness: &H) {
    let store = harness.store();
    let bucket = key("jobs", "contract-leases");
    let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(4, 60_000_000)));
    let concurrency = Concurrency::new(2, 1_000_000).unwrap();
    let acquire = async |lease| {
        store
            .acquire(bucket, &limits, &concurrency, lease)
            .await
            .unwrap()
    };
    let first = acquire(1).await;
    assert!(first.granted());
    assert_eq!(first.decisions.decision().remaining, 3);
    assert!(acquire(2).await.granted());
    let full = acquire(3).await;
    assert_eq!(
        full.lease,
        Some(Acquired::Full {
            retry_after_us: 1_000_000
        })
    );
    assert_eq!(
        full.decisions.decision().remaining,
        2,
        "a full key is not charged"
    );
    assert!(store.release(bucket, &concurrency, 1).await.unwrap());
    assert!(
        !store.release(bucket, &concurrency, 1).await.unwrap(),
        "once"
    );
    assert!(acquire(3).await.granted());
    // Lease 2 was never released: it ends by itself at its expiry.
    harness.advance_us(1_000_000);
    assert!(acquire(4).await.granted(), "lease 2 expired, lease 3 too");
    let spent = acquire(5).await;
    assert_eq!(
        spent.lease, None,
        "the window's 4 are spent: no slot asked for"
    );
    assert!(!spent.decisions.allowed());
    // Another key's leases are its own.
    assert!(
        store
            .acquire(
                key("jobs", "contract-leases-other"),
                &limits,
                &concurrency,
                1
            )
            .await
            .unwrap()
            .granted()
    );
}

/// Many callers acquire and release concurrently: the leases held, counted as each caller
/// sees them (after its grant, before its release), never exceed max_in_flight, and every
/// slot is used.
async fn contract_lease_storm<H: Harness>(harness: Arc<H>) {
    const MAX: u64 = 3;
    const CALLERS: u64 = 12;
    const ROUNDS: u64 = 15;
    let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let most = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let (harness, held, most) = (harness.clone(), held.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let limits = Limit::alone(Algorithm::TokenBucket(TokenBucket::new(1_000_000, 1e6)));
            let concurrency = Concurrency::new(MAX, 60_000_000).unwrap();
            let bucket = key("jobs", "contract-lease-storm");
            let mut granted = 0;
            for round in 0..ROUNDS {
                let lease = caller * 1_000 + round;
                let answer = harness
                    .store()
                    .acquire(bucket, &limits, &concurrency, lease)
                    .await
                    .unwrap();
                if answer.granted() {
                    granted += 1;
                    let now = held.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    assert!(
                        harness
                            .store()
                            .release(bucket, &concurrency, lease)
                            .await
                            .unwrap()
                    );
                }
            }
            granted
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= MAX, "{most} leases held at once, over {MAX}");
    assert!(granted >= MAX, "only {granted} leases granted");
}

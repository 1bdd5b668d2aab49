//! The Lua script against the pure Rust algorithms and their stacking: the same random rules
//! of one to three limits, and the same random requests at the same timestamps, must give
//! identical decisions for every limit (allowed, remaining, reset-after, retry-after).

mod common;

use proptest::{prelude::*, test_runner::TestRunner};
use sluice::{
    algorithm::{
        Algorithm, FixedWindow, Gcra, SlidingWindowCounter, SlidingWindowLog, TokenBucket,
        stacked::{self, Limit},
    },
    clock::Clock,
    metrics::Metrics,
    store::{BucketKey, RedisStore},
};

const START_US: u64 = 1_764_000_000_000_000;

fn algorithm_strategy() -> impl Strategy<Value = Algorithm> {
    let limit = 1u64..20;
    prop_oneof![
        (limit.clone(), 1u64..5_000_000).prop_map(|(capacity, refill_milli)| {
            Algorithm::TokenBucket(TokenBucket::new(capacity, refill_milli as f64 / 1000.0))
        }),
        (limit.clone(), 1u64..5_000_000).prop_map(|(burst, rate_milli)| Algorithm::Gcra(
            Gcra::new(rate_milli as f64 / 1000.0, burst)
        )),
        (limit.clone(), 1u64..3_000)
            .prop_map(|(limit, ms)| Algorithm::FixedWindow(FixedWindow::new(limit, ms * 1000))),
        (limit.clone(), 1u64..3_000).prop_map(|(limit, ms)| Algorithm::SlidingWindowCounter(
            SlidingWindowCounter::new(limit, ms)
        )),
        (limit, 1u64..3_000).prop_map(|(limit, ms)| Algorithm::SlidingWindowLog(
            SlidingWindowLog::new(limit, ms * 1000)
        )),
    ]
}

/// One to three limits, named l0, l1, ...
fn limits_strategy() -> impl Strategy<Value = Vec<Limit>> {
    proptest::collection::vec(algorithm_strategy(), 1..=3).prop_map(|algorithms| {
        algorithms
            .into_iter()
            .enumerate()
            .map(|(index, algorithm)| Limit::new(format!("l{index}"), algorithm))
            .collect()
    })
}

/// (gap before the request in us, cost; 0 = a peek)
fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let gap = prop_oneof![Just(0u64), 0..2_000u64, 0..1_500_000u64];
    proptest::collection::vec((gap, 0u64..25), 1..60)
}

#[test]
fn lua_scripts_decide_exactly_like_the_rust_algorithms() {
    let server = common::redis::server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let clock = Clock::manual(START_US);
    let store = runtime.block_on(async {
        RedisStore::connect(
            &common::redis_config(vec![server.url()], false),
            Metrics::new().redis(),
        )
        .await
        .unwrap()
        .pin_time(clock.clone())
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 500,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&(limits_strategy(), requests()), |(limits, requests)| {
            let key = format!(
                "case-{}",
                case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let bucket = BucketKey {
                resource: "diff",
                key: &key,
            };
            let mut now = clock.now_us();
            let mut states = stacked::fresh_states(&limits, now);
            for (index, &(gap, cost)) in requests.iter().enumerate() {
                clock.advance_us(gap);
                now += gap;
                let (expected, actual) = if cost == 0 {
                    (
                        stacked::peek(&limits, &states, now),
                        runtime.block_on(store.peek(bucket, &limits)).unwrap(),
                    )
                } else {
                    (
                        stacked::check(&limits, &mut states, cost, now),
                        runtime
                            .block_on(store.check(bucket, &limits, cost))
                            .unwrap(),
                    )
                };
                prop_assert_eq!(
                    expected,
                    actual,
                    "request {} (cost {}) of {:?}",
                    index,
                    cost,
                    limits
                );
            }
            Ok(())
        })
        .unwrap();
}

//! The Lua scripts against the pure Rust algorithms: the same random requests at the same
//! timestamps must give identical decisions (allowed, remaining, reset-after, retry-after).

mod common;

use proptest::{prelude::*, test_runner::TestRunner};
use sluice::{
    algorithm::{
        Algorithm, FixedWindow, Gcra, SlidingWindowCounter, SlidingWindowLog, TokenBucket,
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
        .run(
            &(algorithm_strategy(), requests()),
            |(algorithm, requests)| {
                let key = format!(
                    "case-{}",
                    case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let bucket = BucketKey {
                    resource: "diff",
                    key: &key,
                };
                let mut now = clock.now_us();
                let mut state = algorithm.fresh_state(now);
                for (index, &(gap, cost)) in requests.iter().enumerate() {
                    clock.advance_us(gap);
                    now += gap;
                    let (expected, actual) = if cost == 0 {
                        (
                            algorithm.peek(&state, now),
                            runtime.block_on(store.peek(bucket, &algorithm)).unwrap(),
                        )
                    } else {
                        (
                            algorithm.check(&mut state, cost, now),
                            runtime
                                .block_on(store.check(bucket, &algorithm, cost))
                                .unwrap(),
                        )
                    };
                    prop_assert_eq!(
                        expected,
                        actual,
                        "request {} (cost {}) of {:?}",
                        index,
                        cost,
                        algorithm
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

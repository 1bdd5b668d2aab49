//! The Lua script against the pure Rust algorithms, their stacking and bans: the same random
//! rules of one to three limits, with or without a random ban policy, and the same random
//! requests at the same timestamps, must give identical decisions for every limit (allowed,
//! remaining, reset-after, retry-after) and identical bans (when, how long). The adaptive
//! script against [`Aimd::merge`] the same way: random reports at random times, the same factor;
//! and leases taken with a rule's limits and released against `acquire_stacked`.

mod common;

use proptest::{prelude::*, test_runner::TestRunner};
use sluice::{
    adaptive::{Aimd, Window},
    algorithm::{
        Algorithm, FixedWindow, Gcra, SlidingWindowCounter, SlidingWindowLog, State, TokenBucket,
        ban::{Ban, BanScope, BanState, Bans},
        stacked::{self, Limit},
    },
    clock::Clock,
    metrics::Metrics,
    store::{BucketKey, RedisStore, Store},
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

/// No ban, or a ban quick enough to start, grow, end and be forgotten within a sequence.
fn ban_strategy() -> impl Strategy<Value = Option<Ban>> {
    let ban = (
        1u64..5,
        1u64..3_000,
        1u64..2_000,
        prop_oneof![Just(1.0), Just(1.5), Just(2.0), Just(2.7)],
        0u64..4_000,
        0u64..5_000,
        any::<bool>(),
    )
        .prop_map(
            |(after, within_ms, duration_ms, factor, extra_ms, lookback_ms, key_scope)| Ban {
                after,
                within_us: within_ms * 1000,
                duration_us: duration_ms * 1000 + 7,
                factor,
                max_duration_us: (duration_ms + extra_ms) * 1000 + 7,
                lookback_us: lookback_ms * 1000,
                scope: if key_scope {
                    BanScope::Key
                } else {
                    BanScope::Resource
                },
            },
        );
    prop_oneof![Just(None), ban.prop_map(Some)]
}

/// (gap before the request in us, cost; 0 = a peek)
fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let gap = prop_oneof![Just(0u64), 0..2_000u64, 0..1_500_000u64];
    proptest::collection::vec((gap, 0u64..25), 1..60)
}

/// A Redis store on `server` whose scripts read `clock` instead of Redis TIME.
fn pinned_store(
    runtime: &tokio::runtime::Runtime,
    server: &common::redis::LocalRedis,
    clock: &Clock,
) -> RedisStore {
    runtime.block_on(async {
        RedisStore::connect(
            &common::redis_config(vec![server.url()], false),
            Metrics::new().redis(),
        )
        .await
        .unwrap()
        .pin_time(clock.clone())
    })
}

/// Each limit's state-hash field as the script wrote it after a charge, next to the Rust
/// state: the same doubles to the last bit. Decisions round (whole tokens, whole
/// microseconds), so a script storing a number less than exactly would drift from the Rust
/// algorithm unseen.
fn stored_state_mismatches(
    runtime: &tokio::runtime::Runtime,
    store: &RedisStore,
    bucket: BucketKey<'_>,
    limits: &[Limit],
    states: &[State],
) -> Vec<String> {
    let state_key = store.state_key(bucket);
    let mut mismatches = Vec::new();
    for (limit, state) in limits.iter().zip(states) {
        let (tag, expected): (&str, Vec<f64>) = match state {
            State::TokenBucket(s) => ("tb", vec![s.tokens, s.last_refill_us as f64]),
            State::Gcra(s) => ("gcra", vec![s.tat_us as f64]),
            State::FixedWindow(s) => ("fw", vec![s.window_start_us as f64, s.count as f64]),
            State::SlidingWindowCounter(s) => (
                "swc",
                vec![
                    s.window_start_us as f64,
                    s.current as f64,
                    s.previous as f64,
                ],
            ),
            State::SlidingWindowLog(_) => continue,
        };
        let field = format!("{}:{tag}", limit.name);
        let stored: Option<Vec<u8>> = runtime
            .block_on(store.query(redis::cmd("HGET").arg(&state_key).arg(&field)))
            .unwrap();
        // A charge writes every limit kept in the hash.
        let Some(stored) = stored else {
            mismatches.push(format!("{field}: not stored, Rust {expected:?}"));
            continue;
        };
        // Little-endian doubles, one after another (struct.pack's '<d...' in lua/prelude.lua).
        let numbers: Vec<f64> = stored
            .chunks(8)
            .map(|bytes| bytes.try_into().map_or(f64::NAN, f64::from_le_bytes))
            .collect();
        let same = |a: &[f64], b: &[f64]| {
            a.iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits()))
        };
        if !same(&numbers, &expected) {
            mismatches.push(format!("{field}: stored {numbers:?}, Rust {expected:?}"));
        }
    }
    mismatches
}

#[test]
fn lua_scripts_decide_exactly_like_the_rust_algorithms() {
    let server = common::redis::server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let clock = Clock::manual(START_US);
    let store = pinned_store(&runtime, &server, &clock);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 500,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(
            &(limits_strategy(), ban_strategy(), requests()),
            |(limits, ban, requests)| {
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
                let mut ban_state = BanState::default();
                let bans = Bans {
                    policy: ban.as_ref(),
                    key_wide: false,
                };
                for (index, &(gap, cost)) in requests.iter().enumerate() {
                    clock.advance_us(gap);
                    now += gap;
                    let expected = match (&ban, cost) {
                        (None, 0) => stacked::peek(&limits, &states, now),
                        (None, _) => stacked::check(&limits, &mut states, cost, now),
                        (Some(_), 0) => stacked::peek_banned(&limits, &states, &ban_state, now),
                        (Some(ban), _) => stacked::check_banned(
                            &limits,
                            &mut states,
                            ban,
                            &mut ban_state,
                            cost,
                            now,
                        ),
                    };
                    let actual = if cost == 0 {
                        runtime.block_on(store.peek(bucket, &limits, bans))
                    } else {
                        runtime.block_on(store.check(bucket, &limits, bans, cost))
                    }
                    .unwrap();
                    // A charge writes every hash-kept limit's state; a denial may leave some as
                    // they were in Redis while the Rust state moved (a rolled window, unwritten).
                    let charged = cost > 0 && expected.allowed();
                    prop_assert_eq!(
                        expected,
                        actual,
                        "request {} (cost {}) of {:?} under {:?}",
                        index,
                        cost,
                        limits,
                        ban
                    );
                    if !charged {
                        continue;
                    }
                    let mismatches =
                        stored_state_mismatches(&runtime, &store, bucket, &limits, &states);
                    prop_assert!(
                        mismatches.is_empty(),
                        "request {} of {:?}: {:?}",
                        index,
                        limits,
                        mismatches
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

fn aimd_strategy() -> impl Strategy<Value = Aimd> {
    (
        prop_oneof![Just(100_000u64), 0u64..=1_000_000],
        1u64..=1_000_000,
        1u64..=1_000_000,
        1u64..1_000_000,
        0u64..10,
    )
        .prop_map(|(max_error, floor, increase, decrease, min_reports)| Aimd {
            target_latency_us: 1,
            max_error_ppm: max_error,
            floor_ppm: floor,
            increase_ppm: increase,
            decrease_ppm: decrease,
            min_reports,
        })
}

fn reports_strategy() -> impl Strategy<Value = Vec<(u64, Window)>> {
    let gap = prop_oneof![Just(0u64), 0..500u64, 0..3_000u64];
    // Shares at the bounds (exactly a tenth slow, exactly the error ratio) are the likeliest to
    // be decided differently, so a third of the windows sit on them.
    let window =
        (0u64..20, 0u64..200, 0u64..200, 0u8..3).prop_map(|(tenth, errors, slow, edge)| {
            let reports = tenth * 10;
            match edge {
                0 => Window {
                    reports,
                    errors: tenth,
                    slow: tenth,
                },
                _ => Window {
                    reports: reports + u64::from(edge) - 1,
                    errors: errors.min(reports),
                    slow: slow.min(reports),
                },
            }
        });
    proptest::collection::vec((gap, window), 1..40)
}

#[test]
fn the_adaptive_script_moves_the_factor_exactly_like_aimd_merge() {
    let server = common::redis::server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let clock = Clock::manual(START_US);
    let store = pinned_store(&runtime, &server, &clock);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(
            &(aimd_strategy(), 1u64..2_000, reports_strategy()),
            |(aimd, window_ms, reports)| {
                let resource = format!(
                    "case-{}",
                    case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let window_us = window_ms * 1_000;
                let mut shared = None;
                for (index, &(gap_ms, reported)) in reports.iter().enumerate() {
                    clock.advance_us(gap_ms * 1_000);
                    let expected = aimd.merge(shared, clock.now_us(), window_us, reported);
                    shared = Some(expected);
                    let actual = runtime
                        .block_on(store.adapt(&resource, &aimd, window_us, reported))
                        .unwrap();
                    prop_assert_eq!(
                        expected.factor_ppm,
                        actual,
                        "report {} of {:?} under {:?}",
                        index,
                        reports,
                        aimd
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

#[derive(Debug, Clone)]
enum LeaseStep {
    Acquire(u64),
    Release(u64),
}

fn lease_steps() -> impl Strategy<Value = Vec<(u64, LeaseStep)>> {
    let gap = prop_oneof![Just(0u64), 0..2_000u64, 0..1_500_000u64];
    let step = prop_oneof![
        (0u64..6).prop_map(LeaseStep::Acquire),
        (0u64..6).prop_map(LeaseStep::Release),
    ];
    proptest::collection::vec((gap, step), 1..60)
}

#[test]
fn leases_are_acquired_and_released_exactly_like_acquire_stacked() {
    use sluice::algorithm::concurrency::{Concurrency, ConcurrencyState, acquire_stacked};
    let server = common::redis::server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let clock = Clock::manual(START_US);
    let store = pinned_store(&runtime, &server, &clock);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(
            &(limits_strategy(), 1u64..4, 1u64..3_000_000, lease_steps()),
            |(limits, max_in_flight, ttl_us, steps)| {
                let key = format!(
                    "lease-case-{}",
                    case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let bucket = BucketKey {
                    resource: "diff",
                    key: &key,
                };
                let concurrency = Concurrency::new(max_in_flight, ttl_us).unwrap();
                let mut now = clock.now_us();
                let mut states = stacked::fresh_states(&limits, now);
                let mut leases = ConcurrencyState::default();
                for (index, (gap, step)) in steps.iter().enumerate() {
                    clock.advance_us(*gap);
                    now += gap;
                    match step {
                        LeaseStep::Acquire(lease) => {
                            let expected = acquire_stacked(
                                &limits,
                                &mut states,
                                &concurrency,
                                &mut leases,
                                *lease,
                                1,
                                now,
                            );
                            let actual = runtime
                                .block_on(store.acquire_lease(
                                    bucket,
                                    &limits,
                                    &concurrency,
                                    *lease,
                                ))
                                .unwrap();
                            prop_assert_eq!(
                                expected,
                                actual,
                                "step {} of {:?} under {:?}, {:?}",
                                index,
                                steps,
                                limits,
                                concurrency
                            );
                        }
                        LeaseStep::Release(lease) => {
                            let expected = concurrency.release(&mut leases, *lease, now);
                            let actual = runtime
                                .block_on(store.release_lease(bucket, *lease))
                                .unwrap();
                            prop_assert_eq!(expected, actual, "release at step {}", index);
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn a_lease_ends_exactly_at_its_expiry_in_lua_as_in_rust() {
    use sluice::algorithm::concurrency::{Acquired, Concurrency};
    let server = common::redis::server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let clock = Clock::manual(START_US);
    let store = pinned_store(&runtime, &server, &clock);
    let bucket = BucketKey {
        resource: "diff",
        key: "expiry",
    };
    let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(100, 60_000_000)));
    let concurrency = Concurrency::new(1, 1_000).unwrap();
    let acquire = |lease| {
        runtime
            .block_on(store.acquire_lease(bucket, &limits, &concurrency, lease))
            .unwrap()
            .lease
    };
    assert_eq!(
        acquire(1),
        Some(Acquired::Granted {
            expires_at_us: START_US + 1_000
        })
    );
    clock.advance_us(999);
    assert_eq!(acquire(2), Some(Acquired::Full { retry_after_us: 1 }));
    clock.advance_us(1);
    // At its expiry the lease is over: not releasable, and its slot is free.
    assert!(!runtime.block_on(store.release_lease(bucket, 1)).unwrap());
    assert!(matches!(acquire(2), Some(Acquired::Granted { .. })));
}

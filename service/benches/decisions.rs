//! Decision cost: each pure algorithm, and the memory store's whole hot path (hash, shard lock,
//! clock read, algorithm) on one thread and on two.
//!
//! `cargo bench -p sluice-service --bench decisions`; figures and the command that produced
//! them are recorded in results/benchmarks/service-decisions.md.

use std::{hint::black_box, sync::Arc, thread, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::{
    algorithm::{
        Algorithm, FixedWindow, Gcra, SlidingWindowCounter, SlidingWindowLog, TokenBucket,
        ban::{Ban, BanScope, Bans},
        stacked::Limit,
    },
    clock::Clock,
    config::MemoryConfig,
    store::{BucketKey, MemoryStore},
};

/// Generous limits so the measured path is the common one: allowed, state updated.
fn algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::TokenBucket(TokenBucket::new(1_000_000, 1_000_000.0)),
        Algorithm::Gcra(Gcra::new(1_000_000.0, 1_000_000)),
        Algorithm::FixedWindow(FixedWindow::new(1_000_000_000, 1_000_000)),
        Algorithm::SlidingWindowCounter(SlidingWindowCounter::new(1_000_000_000, 1_000)),
        Algorithm::SlidingWindowLog(SlidingWindowLog::new(100_000, 1_000)),
    ]
}

fn pure_algorithms(c: &mut Criterion) {
    let mut group = c.benchmark_group("algorithm");
    for algorithm in algorithms() {
        group.bench_function(algorithm.name(), |b| {
            let mut now = 1_700_000_000_000_000u64;
            let mut state = algorithm.fresh_state(now);
            b.iter(|| {
                now += 1;
                black_box(algorithm.check(&mut state, black_box(1), now))
            });
        });
    }
    // The same, through the stacked-limits combination with one limit: what answering with
    // `Decisions` adds to the bare algorithm.
    for algorithm in algorithms().into_iter().take(2) {
        let limits = Limit::alone(algorithm);
        group.bench_function(format!("one_limit_stack/{}", limits[0].name), |b| {
            let mut now = 1_700_000_000_000_000u64;
            let mut states = sluice::algorithm::stacked::fresh_states(&limits, now);
            b.iter(|| {
                now += 1;
                black_box(sluice::algorithm::stacked::check(
                    &limits,
                    &mut states,
                    black_box(1),
                    now,
                ))
            });
        });
    }
    group.finish();
}

fn store() -> MemoryStore {
    let config = MemoryConfig {
        shards: 64,
        max_keys: 1_000_000,
        full_policy: sluice::config::FullPolicy::Evict,
        sweep_interval: std::time::Duration::from_secs(1),
    };
    MemoryStore::new(&config, Clock::system())
}

fn memory_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_store");
    for algorithm in algorithms() {
        let limits = Limit::alone(algorithm);
        group.bench_function(format!("existing_key/{}", limits[0].name), |b| {
            let store = store();
            let key = BucketKey {
                resource: "api",
                key: "client-42",
            };
            store.check_now(key, &limits, Bans::NONE, 1);
            b.iter(|| black_box(store.check_now(black_box(key), &limits, Bans::NONE, 1)));
        });
    }
    // A rule stacking two limits (the aim: at most 1.5x the one-limit token bucket above).
    let stacked = [
        Limit::new("burst", algorithms().remove(0)),
        Limit::new(
            "daily",
            Algorithm::FixedWindow(FixedWindow::new(1_000_000_000, 86_400_000_000)),
        ),
    ];
    group.bench_function("existing_key/stacked_token_bucket_and_fixed_window", |b| {
        let store = store();
        let key = BucketKey {
            resource: "api",
            key: "client-42",
        };
        store.check_now(key, &stacked, Bans::NONE, 1);
        b.iter(|| black_box(store.check_now(black_box(key), &stacked, Bans::NONE, 1)));
    });
    // The same one-limit token bucket under a ban policy: every decision also reads the key's
    // ban state (one more table lookup under the same lock).
    let banned_rule = Limit::alone(algorithms().remove(0));
    let ban = Ban {
        after: 1_000,
        within_us: 60_000_000,
        duration_us: 60_000_000,
        factor: 1.0,
        max_duration_us: 60_000_000,
        lookback_us: 0,
        scope: BanScope::Resource,
    };
    group.bench_function("existing_key/token_bucket_with_ban_policy", |b| {
        let store = store();
        let key = BucketKey {
            resource: "api",
            key: "client-42",
        };
        store.check_now(key, &banned_rule, Bans::policy(&ban), 1);
        b.iter(|| black_box(store.check_now(black_box(key), &banned_rule, Bans::policy(&ban), 1)));
    });
    let limits = Arc::new(Limit::alone(algorithms().remove(0)));
    let algorithm = Arc::new(algorithms().remove(0));
    // Time per decision per thread while two threads decide at once: equal to the one-thread
    // figure when the store scales, higher when they contend.
    for (name, hot) in [
        ("two_threads/different_keys", false),
        ("two_threads/one_hot_key", true),
    ] {
        group.bench_function(name, |b| {
            let store = Arc::new(store());
            b.iter_custom(|iters| {
                let start = Instant::now();
                let workers: Vec<_> = (0..2)
                    .map(|thread| {
                        let (store, limits) = (store.clone(), limits.clone());
                        thread::spawn(move || {
                            let key = if hot {
                                "hot"
                            } else if thread == 0 {
                                "left"
                            } else {
                                "right"
                            };
                            let key = BucketKey {
                                resource: "api",
                                key,
                            };
                            for _ in 0..iters {
                                black_box(store.check_now(key, &*limits, Bans::NONE, 1));
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    worker.join().unwrap();
                }
                start.elapsed()
            });
        });
    }
    // Baseline: two threads running the pure algorithm on private state share nothing, so
    // their slowdown against one thread is what this machine's cores give, not the store's cost.
    group.bench_function("two_threads/pure_algorithm_baseline", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let algorithm = algorithm.clone();
                    thread::spawn(move || {
                        let mut now = 1_700_000_000_000_000u64;
                        let mut state = algorithm.fresh_state(now);
                        for _ in 0..iters {
                            now += 1;
                            black_box(algorithm.check(&mut state, black_box(1), now));
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.join().unwrap();
            }
            start.elapsed()
        });
    });
    group.finish();
}

/// The same decision in governor's keyed limiter (GCRA on one atomic per key, a DashMap of
/// keys, quanta's clock), in this process: `memory_store/existing_key/gcra` above must be at
/// least as fast.
fn versus_governor(c: &mut Criterion) {
    let mut group = c.benchmark_group("versus_governor");
    group.bench_function("governor_keyed_gcra/existing_key", |b| {
        let quota = governor::Quota::per_second(std::num::NonZeroU32::new(1_000_000).unwrap());
        let limiter = governor::DefaultKeyedRateLimiter::<String>::keyed(quota);
        let key = String::from("client-42");
        limiter.check_key(&key).expect("a fresh key is allowed");
        b.iter(|| black_box(limiter.check_key(black_box(&key)).is_ok()));
    });
    group.finish();
}

/// What a decision pays to know `now`: the store's clock against the OS's monotonic clock.
fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    let store_clock = Clock::system();
    group.bench_function("store_clock_now_us", |b| {
        b.iter(|| black_box(store_clock.now_us()))
    });
    let origin = Instant::now();
    group.bench_function("std_instant_elapsed_us", |b| {
        b.iter(|| black_box(origin.elapsed().as_micros() as u64))
    });
    group.finish();
}

criterion_group!(
    benches,
    pure_algorithms,
    memory_store,
    versus_governor,
    clock
);
criterion_main!(benches);

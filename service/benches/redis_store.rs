//! Redis store throughput against redis-benchmark, in one run on one machine.
//!
//! Starts a private redis-server, drives the service's store API (`RedisStore::check`, token
//! bucket, deny cache off so every decision runs the script) with 64 concurrent tasks, then runs
//! `redis-benchmark -c 50 -P 1` with EVALSHA of the same script and arguments on the same Redis,
//! and a rule stacking two limits (token bucket + fixed window, still one script call) through
//! the store API; writes both ratios to results/benchmarks/redis-store.md.
//!
//! `cargo bench -p sluice-service --bench redis_store` (SLUICE_BENCH_SECS per run, default 3;
//! SLUICE_BENCH_ROUNDS of one limit then two, default 5).

mod support;

use sluice_testkit::local_redis::LocalRedis;
use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sluice::{
    algorithm::{Algorithm, FixedWindow, TokenBucket, ban::Bans, stacked::Limit},
    metrics::Metrics,
    store::{BucketKey, DECISION_SCRIPT, RedisStore, Store},
};

const TASKS: usize = 64;
const KEYS: u64 = 10_000;
const POOL_SIZE: usize = 4;

/// Decisions per second through the store API with `TASKS` concurrent tasks.
async fn store_rate(store: Arc<RedisStore>, limits: Arc<Vec<Limit>>, duration: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|task| {
            let (store, limits, stop, done) =
                (store.clone(), limits.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let keys: Vec<String> = (0..KEYS / TASKS as u64)
                    .map(|i| format!("k{}", task * 1_000_000 + i))
                    .collect();
                let mut count = 0u64;
                for key in keys.iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let decision = store
                        .check(
                            BucketKey {
                                resource: "bench",
                                key,
                            },
                            &limits,
                            Bans::NONE,
                            1,
                        )
                        .await
                        .unwrap();
                    assert!(decision.allowed());
                    count += 1;
                }
                done.fetch_add(count, Ordering::Relaxed);
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// EVALSHA of the decision script on one token bucket, 50 clients, no pipelining, random keys.
fn redis_benchmark_rate(redis: &LocalRedis, algorithm: &Algorithm, requests: u64) -> f64 {
    let sha = redis
        .cli(&["SCRIPT", "LOAD", DECISION_SCRIPT])
        .unwrap()
        .trim()
        .to_owned();
    let Algorithm::TokenBucket(bucket) = algorithm else {
        unreachable!()
    };
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &redis.port.to_string(),
            "-c",
            "50",
            "-P",
            "1",
        ])
        .args([
            "-n",
            &requests.to_string(),
            "-r",
            &KEYS.to_string(),
            "--csv",
        ])
        .args([
            "EVALSHA",
            &sha,
            "1",
            "bench:rb:__rand_int__",
            "",      // now: Redis TIME
            "1",     // cost
            "0",     // no key-wide ban to watch
            "0",     // no ban policy
            "0",     // no lease to acquire
            "tb",    // one limit: a token bucket
            "limit", // named
        ])
        .args([
            bucket.capacity().to_string(),
            bucket.refill_per_us().to_string(),
        ])
        .output()
        .expect("redis-benchmark runs (apt-get install redis-server)");
    let text = String::from_utf8_lossy(&output.stdout);
    // CSV: "test","rps","avg_latency_ms",...
    let line = text.lines().last().unwrap_or_default();
    line.split(',')
        .nth(1)
        .and_then(|rps| rps.trim_matches('"').parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "cannot read redis-benchmark output (did the script's arguments change?): \
                 {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn main() {
    let secs: u64 = std::env::var("SLUICE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let redis = LocalRedis::start().unwrap_or_else(|err| panic!("{err}"));
    let algorithm = Algorithm::TokenBucket(TokenBucket::new(1_000_000_000, 1_000_000.0));
    let one = Arc::new(Limit::alone(algorithm.clone()).to_vec());
    let two = Arc::new(vec![
        Limit::new("burst", algorithm.clone()),
        Limit::new(
            "daily",
            Algorithm::FixedWindow(FixedWindow::new(1_000_000_000, 86_400_000_000)),
        ),
    ]);
    let rounds: usize = std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // One limit and two in turn, round after round: this machine's speed drifts, and
    // alternating puts the drift into both sides of each round's ratio alike.
    let pairs: Vec<(f64, f64)> = runtime.block_on(async {
        let store = Arc::new(
            RedisStore::connect(
                &support::redis_store::config(redis.url(), POOL_SIZE),
                Metrics::new().redis(),
            )
            .await
            .unwrap(),
        );
        store_rate(store.clone(), one.clone(), Duration::from_secs(1)).await; // warm-up
        let mut pairs = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let single = store_rate(store.clone(), one.clone(), Duration::from_secs(secs)).await;
            let stacked = store_rate(store.clone(), two.clone(), Duration::from_secs(secs)).await;
            println!("round: one limit {single:.0}/s, two limits {stacked:.0}/s");
            pairs.push((single, stacked));
        }
        pairs
    });
    drop(runtime);
    let store_rate = median(pairs.iter().map(|pair| pair.0).collect());
    let stacked_rate = median(pairs.iter().map(|pair| pair.1).collect());
    let benchmark_rate =
        redis_benchmark_rate(&redis, &algorithm, (store_rate * secs as f64) as u64);
    let rates = Rates {
        store: store_rate,
        stacked: stacked_rate,
        benchmark: benchmark_rate,
        stacked_ratio: median(pairs.iter().map(|(one, two)| two / one).collect()),
        pairs,
    };
    println!("store API, {TASKS} tasks, pool {POOL_SIZE}: {store_rate:.0} decisions/s");
    println!("  the same, two stacked limits:  {stacked_rate:.0} decisions/s");
    println!("redis-benchmark -c 50 -P 1 EVALSHA:     {benchmark_rate:.0} requests/s");
    println!(
        "ratios: store/redis-benchmark {:.2}x, two limits/one {:.2}x (median of rounds)",
        store_rate / benchmark_rate,
        rates.stacked_ratio
    );
    write_report(secs, &rates);
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Rates {
    /// Medians over the rounds.
    store: f64,
    stacked: f64,
    benchmark: f64,
    /// The median of each round's two-limit / one-limit ratio.
    stacked_ratio: f64,
    /// Each round's (one limit, two limits) rates.
    pairs: Vec<(f64, f64)>,
}

fn write_report(secs: u64, rates: &Rates) {
    let Rates {
        store: store_rate,
        stacked: stacked_rate,
        benchmark: benchmark_rate,
        stacked_ratio,
        ..
    } = *rates;
    let ratio = store_rate / benchmark_rate;
    let rounds: String = rates
        .pairs
        .iter()
        .enumerate()
        .map(|(round, (one, two))| {
            format!(
                "| {} | {one:.0}/s | {two:.0}/s | {:.2}x |\n",
                round + 1,
                two / one
            )
        })
        .collect();
    let round_count = rates.pairs.len();
    let (commit, machine) = (support::commit(), support::machine());
    let redis_version = support::command_output("redis-server", &["--version"]);
    let report = format!(
        "# Redis store throughput vs redis-benchmark\n\n\
         - Command: `cargo bench -p sluice-service --bench redis_store` (SLUICE_BENCH_SECS={secs}, SLUICE_BENCH_ROUNDS={round_count})\n\
         - Commit: {commit}\n\
         - Machine: {machine}; {redis_version}\n\
         - Load generator, service code and Redis share the same cores.\n\n\
         | what | rate |\n|---|---|\n\
         | `RedisStore::check`, token bucket, {TASKS} concurrent tasks, {POOL_SIZE} multiplexed connections, deny cache off (median of rounds) | {store_rate:.0} decisions/s |\n\
         | `redis-benchmark -c 50 -P 1 -r {KEYS} EVALSHA <decision script> ... tb ...` on the same Redis | {benchmark_rate:.0} requests/s |\n\
         | ratio (store / redis-benchmark) | **{ratio:.2}x** |\n\
         | `RedisStore::check`, a rule stacking a token bucket and a fixed window (one script call; median of rounds) | {stacked_rate:.0} decisions/s |\n\
         | ratio (two limits / one limit, median of the rounds' ratios; aim at least 0.8x) | **{stacked_ratio:.2}x** |\n\n\
         One limit and two ran in turn for {secs} s each, {round_count} rounds:\n\n\
         | round | one limit | two limits | ratio |\n|---|---|---|---|\n{rounds}\n\
         Both run the same script with the same arguments over {KEYS} keys, every decision allowed and written.\n\
         The store shares round trips: concurrent calls are pipelined on a few multiplexed connections,\n\
         where redis-benchmark sends one request per client at a time.\n"
    );
    support::write_report("redis-store.md", &report);
}

//! Memory per key: the memory store against the governor crate's keyed limiter, 1,000,000
//! keys of 20 bytes each, every figure from a process of its own.
//!
//! Each limiter runs in a child process (this binary again, `SLUICE_MEASURE=<limiter>`), so
//! one's freed memory never flatters the next. A child counts two things after holding every
//! key: the bytes its allocations asked for (a counting global allocator: what the data
//! structures need) and its resident set growth (what the machine pays, allocator overhead
//! and hash-table slack included). Writes results/benchmarks/service-memory-per-key.md.
//!
//! `cargo bench -p sluice-service --bench memory_per_key` (SLUICE_BENCH_KEYS, default 1,000,000).

mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    num::NonZeroU32,
    process::Command,
    sync::atomic::{AtomicIsize, Ordering},
    time::Duration,
};

use sluice::{
    algorithm::{
        Algorithm, FixedWindow, Gcra, TokenBucket,
        ban::{Ban, BanScope, Bans},
        stacked::Limit,
    },
    clock::Clock,
    config::MemoryConfig,
    store::{BucketKey, MemoryStore},
};

/// Counts the bytes live allocations asked for.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What each child measures, in the order of the report.
const LIMITERS: [(&str, &str); 5] = [
    (
        "sluice-token-bucket",
        "Sluice memory store, token bucket (1 limit)",
    ),
    ("sluice-gcra", "Sluice memory store, GCRA (1 limit)"),
    (
        "sluice-stacked",
        "Sluice memory store, token bucket + fixed window (2 limits)",
    ),
    (
        "sluice-stacked-banned",
        "Sluice memory store, 2 limits, and each key with a ban record (one denial counted)",
    ),
    (
        "governor",
        "governor 0.10 keyed GCRA (`DefaultKeyedRateLimiter<String>`)",
    ),
];

fn main() {
    let keys: usize = std::env::var("SLUICE_BENCH_KEYS")
        .ok()
        .and_then(|keys| keys.parse().ok())
        .unwrap_or(1_000_000);
    if let Ok(limiter) = std::env::var("SLUICE_MEASURE") {
        let (live, resident) = measure(&limiter, keys);
        println!("{live} {resident}");
        return;
    }
    let me = std::env::current_exe().expect("the benchmark's own path");
    let mut rows = String::new();
    for (limiter, description) in LIMITERS {
        let output = Command::new(&me)
            .env("SLUICE_MEASURE", limiter)
            .env("SLUICE_BENCH_KEYS", keys.to_string())
            .output()
            .expect("run a measuring child");
        assert!(
            output.status.success(),
            "{limiter}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let figures: Vec<f64> = stdout
            .split_whitespace()
            .map(|figure| figure.parse().expect("two numbers"))
            .collect();
        let (live, resident) = (figures[0] / keys as f64, figures[1] / keys as f64);
        println!("{description}: {live:.0} B/key allocated, {resident:.0} B/key resident");
        rows.push_str(&format!("| {description} | {live:.0} | {resident:.0} |\n"));
    }
    let report = format!(
        "# Memory per key: the memory store and governor\n\n\
         - Command: `cargo bench -p sluice-service --bench memory_per_key` (SLUICE_BENCH_KEYS={keys})\n\
         - Commit: {}\n\
         - Machine: {}; glibc malloc\n\n\
         {keys} keys of 20 bytes (`client-0000000000042`) on one resource (`api`), each checked once\n\
         (the banned rows: twice, the second a denial), every limiter in a fresh process of its own.\n\
         *Allocated* is what the data structures asked the allocator for; *resident* is how much the\n\
         process grew, allocator overhead and hash-table slack included. The key strings the\n\
         benchmark made before measuring are not counted; each limiter's own copy of a key is.\n\
         The memory store runs with 64 shards (the default) and room for every key.\n\n\
         | limiter | allocated B/key | resident B/key |\n|---|---|---|\n{rows}",
        support::commit(),
        support::machine(),
    );
    support::write_report("service-memory-per-key.md", &report);
}

/// Bytes allocated and resident bytes grown while `limiter` came to hold `keys` keys.
fn measure(limiter: &str, keys: usize) -> (isize, u64) {
    let names: Vec<String> = (0..keys).map(|i| format!("client-{i:013}")).collect();
    let (live_before, resident_before) = (LIVE_BYTES.load(Ordering::Relaxed), resident_bytes());
    // Kept alive until both figures are read.
    let held: Box<dyn std::any::Any> = match limiter {
        "governor" => {
            let quota = governor::Quota::per_second(NonZeroU32::new(1_000).unwrap());
            let governor = governor::DefaultKeyedRateLimiter::<String>::keyed(quota);
            for name in &names {
                black_box(governor.check_key(name).is_ok());
            }
            Box::new(governor)
        }
        sluice => {
            let store = MemoryStore::new(
                &MemoryConfig {
                    shards: 64,
                    max_keys: keys * 4,
                    full_policy: sluice::config::FullPolicy::Evict,
                    sweep_interval: Duration::from_secs(1),
                },
                Clock::system(),
            );
            let ban = Ban {
                after: 1_000,
                within_us: 3_600_000_000,
                duration_us: 60_000_000,
                factor: 1.0,
                max_duration_us: 60_000_000,
                lookback_us: 0,
                scope: BanScope::Resource,
            };
            let (limits, bans, checks) = match sluice {
                "sluice-token-bucket" => (
                    Limit::alone(Algorithm::TokenBucket(TokenBucket::new(1_000, 1_000.0))).to_vec(),
                    Bans::NONE,
                    1,
                ),
                "sluice-gcra" => (
                    Limit::alone(Algorithm::Gcra(Gcra::new(1_000.0, 1_000))).to_vec(),
                    Bans::NONE,
                    1,
                ),
                "sluice-stacked" | "sluice-stacked-banned" => {
                    let limits = vec![
                        Limit::new("burst", Algorithm::TokenBucket(TokenBucket::new(1, 1.0))),
                        Limit::new(
                            "daily",
                            Algorithm::FixedWindow(FixedWindow::new(1_000, 86_400_000_000)),
                        ),
                    ];
                    match sluice {
                        "sluice-stacked" => (limits, Bans::NONE, 1),
                        _ => (limits, Bans::policy(&ban), 2),
                    }
                }
                other => panic!("unknown limiter {other}"),
            };
            for name in &names {
                let key = BucketKey {
                    resource: "api",
                    key: name,
                };
                for _ in 0..checks {
                    black_box(store.check_now(key, &limits, bans, 1));
                }
            }
            let expected = if checks == 2 { 2 * keys } else { keys };
            assert_eq!(store.len(), expected, "every key (and ban record) held");
            Box::new(store)
        }
    };
    let live = LIVE_BYTES.load(Ordering::Relaxed) - live_before;
    let resident = resident_bytes().saturating_sub(resident_before);
    drop(held);
    (live, resident)
}

/// This process's resident set, from /proc/self/statm.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .expect("statm's second field");
    pages * 4096
}

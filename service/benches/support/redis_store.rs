//! The Redis store settings the Redis benchmarks share: every call reaches the script (no
//! deny cache), a generous deadline, calls in flight bounded well above the benchmark's tasks.

use std::time::Duration;

use sluice::{config::RedisConfig, rules::FailureMode};

pub fn config(url: String, pool_size: usize) -> RedisConfig {
    RedisConfig {
        urls: vec![url],
        cluster: false,
        sentinel: None,
        pool_size,
        deadline: Duration::from_secs(1),
        prefix: "bench:".into(),
        failure_mode: FailureMode::Deny,
        fallback_share: 1.0,
        fallback_max_keys: 100_000,
        breaker_failures: 3,
        breaker_backoff: Duration::from_millis(500),
        deny_cache_keys: 0,
        max_in_flight: 128,
        fallback_share_live: false,
        queue_timeout: Duration::from_secs(1),
    }
}

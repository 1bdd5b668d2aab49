//! `[backend.redis]`: where Redis is (one server, a Cluster's seeds, or Sentinels naming the
//! primary), how long a call may take, and what a node answers when Redis fails.

use std::time::Duration;

use serde::Deserialize;

use super::{
    DEFAULT_REDIS_MAX_IN_FLIGHT, DEFAULT_REDIS_URL, Issues, MAX_MAX_KEYS, count_field,
    duration_field,
};
use crate::rules::FailureMode;

#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// One `redis://host:port` for a single Redis; the seed nodes when `cluster`; empty
    /// when `sentinel` names the primary.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Sentinels that name the primary: found at start, and again whenever the circuit opens,
    /// so a failover moves every node to the new primary.
    pub sentinel: Option<SentinelConfig>,
    /// Multiplexed connections to a single Redis; requests are spread across them.
    pub pool_size: usize,
    /// The longest one store call may take before it counts as failed.
    pub deadline: Duration,
    /// Prepended to every key, to share a Redis between environments.
    pub prefix: String,
    /// The default for rules that set no `failure_mode`.
    pub failure_mode: FailureMode,
    /// The share of each limit a node allows on its own in `local` mode (e.g. 1 / nodes).
    /// With `fallback_share_live`, the share before the first count of live nodes.
    pub fallback_share: f64,
    /// `fallback_share = "live"`: nodes announce themselves in Redis, and each uses 1 / the
    /// last count of live nodes, so scaling out never multiplies a limit during an outage.
    pub fallback_share_live: bool,
    /// The most keys the `local` mode's memory holds (it evicts past that, as the memory
    /// backend does by default).
    pub fallback_max_keys: usize,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit answers without calling Redis before one probe is let through.
    pub breaker_backoff: Duration,
    /// Most keys the local deny cache remembers; 0 turns it off.
    pub deny_cache_keys: usize,
    /// Most store calls this node has in flight at once; more wait for a slot (a burst queues
    /// here instead of deep in the connections, where waiting would count against `deadline`).
    pub max_in_flight: usize,
    /// Longest a call waits for a slot before the rule's failure mode answers it ("store busy";
    /// local overload, not a Redis failure: the breaker does not count it).
    pub queue_timeout: Duration,
}

/// `[backend.redis.sentinel]`: the primary's name as the Sentinels know it, and where they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub master: String,
    pub urls: Vec<String>,
}

impl RedisConfig {
    /// Where this node looks for Redis, for messages: the URLs, or the Sentinels and the name.
    pub fn addresses(&self) -> String {
        match &self.sentinel {
            Some(sentinel) => format!(
                "primary `{}` of sentinels {}",
                sentinel.master,
                sentinel.urls.join(", ")
            ),
            None => self.urls.join(", "),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) urls: Option<Vec<String>>,
    cluster: Option<bool>,
    pub(super) sentinel: Option<RawSentinel>,
    pool_size: Option<u64>,
    deadline: Option<String>,
    prefix: Option<String>,
    failure_mode: Option<String>,
    fallback_share: Option<FallbackShare>,
    fallback_max_keys: Option<u64>,
    breaker_failures: Option<u64>,
    breaker_backoff: Option<String>,
    deny_cache_keys: Option<u64>,
    max_in_flight: Option<u64>,
    queue_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSentinel {
    master: Option<String>,
    urls: Option<Vec<String>>,
}

/// `backend.redis.fallback_share`: a fixed fraction, or `"live"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FallbackShare {
    Fixed(f64),
    Named(String),
}

impl RawRedis {
    pub(super) fn validate(self, issues: &mut Issues) -> RedisConfig {
        let cluster = self.cluster.unwrap_or(false);
        let sentinel = self.sentinel.map(|raw| raw.validate(issues));
        let urls = match (&sentinel, self.urls) {
            (Some(_), Some(_)) => {
                issues.add(
                    "backend.redis.urls",
                    "with [backend.redis.sentinel] the Sentinels name the primary; remove urls",
                );
                Vec::new()
            }
            (Some(_), None) => Vec::new(),
            (None, urls) => {
                let urls = urls.unwrap_or_else(|| vec![DEFAULT_REDIS_URL.to_owned()]);
                if urls.is_empty() || (!cluster && urls.len() > 1) {
                    issues.add(
                        "backend.redis.urls",
                        "give one URL (e.g. [\"redis://127.0.0.1:6379\"]), or several with cluster = true",
                    );
                }
                check_urls(issues, "backend.redis.urls", &urls);
                urls
            }
        };
        if cluster && sentinel.is_some() {
            issues.add(
                "backend.redis.sentinel",
                "Sentinel watches one primary and a Redis Cluster fails over by itself; remove either [backend.redis.sentinel] or cluster = true",
            );
        }
        let pool_size = self.pool_size.unwrap_or(4);
        if !(1..=64).contains(&pool_size) {
            issues.add(
                "backend.redis.pool_size",
                format!("{pool_size} is out of range; use 1 to 64"),
            );
        }
        let deadline = duration_field(
            issues,
            "backend.redis.deadline",
            self.deadline,
            Duration::from_millis(10),
        );
        if deadline.is_zero() || deadline > Duration::from_secs(10) {
            issues.add(
                "backend.redis.deadline",
                "use a deadline from \"1ms\" to \"10s\"; well under Envoy's 20 ms suits a gateway",
            );
        }
        let failure_mode = match self.failure_mode.as_deref() {
            None => FailureMode::Deny,
            Some(text) => FailureMode::parse(text).unwrap_or_else(|| {
                issues.add(
                    "backend.redis.failure_mode",
                    format!(
                        "unknown failure mode `{text}`; use one of {}",
                        FailureMode::NAMES.join(", ")
                    ),
                );
                FailureMode::Deny
            }),
        };
        let (fallback_share, fallback_share_live) = match self.fallback_share {
            None => (1.0, false),
            Some(FallbackShare::Fixed(share)) => (share, false),
            Some(FallbackShare::Named(name)) if name == "live" => (1.0, true),
            Some(FallbackShare::Named(name)) => {
                issues.add(
                    "backend.redis.fallback_share",
                    format!("`{name}` is not a share; give a fraction (e.g. 0.25) or \"live\" (1 / the nodes announced in Redis)"),
                );
                (1.0, false)
            }
        };
        if !(fallback_share > 0.0 && fallback_share <= 1.0) {
            issues.add(
                "backend.redis.fallback_share",
                format!("{fallback_share} is out of range; use a fraction above 0 and at most 1, e.g. 1 / number of nodes"),
            );
        }
        let fallback_max_keys = self.fallback_max_keys.unwrap_or(100_000);
        if !(1..=MAX_MAX_KEYS).contains(&fallback_max_keys) {
            issues.add(
                "backend.redis.fallback_max_keys",
                format!("{fallback_max_keys} is out of range; use 1 to {MAX_MAX_KEYS}"),
            );
        }
        let breaker_failures = self.breaker_failures.unwrap_or(3);
        if !(1..=1_000).contains(&breaker_failures) {
            issues.add(
                "backend.redis.breaker_failures",
                format!("{breaker_failures} is out of range; use 1 to 1000"),
            );
        }
        let breaker_backoff = duration_field(
            issues,
            "backend.redis.breaker_backoff",
            self.breaker_backoff,
            Duration::from_millis(500),
        );
        let deny_cache_keys = self.deny_cache_keys.unwrap_or(100_000);
        if deny_cache_keys > MAX_MAX_KEYS {
            issues.add(
                "backend.redis.deny_cache_keys",
                format!("{deny_cache_keys} is out of range; use 0 (off) to {MAX_MAX_KEYS}"),
            );
        }
        let max_in_flight = count_field(
            issues,
            "backend.redis.max_in_flight",
            self.max_in_flight,
            DEFAULT_REDIS_MAX_IN_FLIGHT,
            100_000,
            "",
        );
        let queue_timeout = duration_field(
            issues,
            "backend.redis.queue_timeout",
            self.queue_timeout,
            Duration::from_secs(1),
        );
        if queue_timeout.is_zero() || queue_timeout > Duration::from_secs(60) {
            issues.add(
                "backend.redis.queue_timeout",
                "use \"1ms\" to \"60s\"; it bounds how long a burst queues for a free slot",
            );
        }
        RedisConfig {
            max_in_flight: max_in_flight as usize,
            queue_timeout,
            urls,
            cluster,
            sentinel,
            pool_size: pool_size.clamp(1, 64) as usize,
            deadline,
            prefix: self.prefix.unwrap_or_else(|| "sluice:".to_owned()),
            failure_mode,
            fallback_share,
            fallback_share_live,
            fallback_max_keys: fallback_max_keys.clamp(1, MAX_MAX_KEYS) as usize,
            breaker_failures: breaker_failures.clamp(1, 1_000) as u32,
            breaker_backoff,
            deny_cache_keys: deny_cache_keys.min(MAX_MAX_KEYS) as usize,
        }
    }
}

impl RawSentinel {
    fn validate(self, issues: &mut Issues) -> SentinelConfig {
        let master = self.master.unwrap_or_default();
        if master.is_empty() {
            issues.add(
                "backend.redis.sentinel.master",
                "name the primary as the Sentinels monitor it (their `sentinel monitor <name> ...` line), e.g. master = \"mymaster\"",
            );
        }
        let urls = self.urls.unwrap_or_default();
        if urls.is_empty() {
            issues.add(
                "backend.redis.sentinel.urls",
                "list the Sentinels, e.g. [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\", \"redis://10.0.0.3:26379\"]",
            );
        }
        check_urls(issues, "backend.redis.sentinel.urls", &urls);
        SentinelConfig { master, urls }
    }
}

/// Each URL parsed as the Redis client will parse it at start, so a port out of range or a bad
/// host fails here, named, instead of when the node starts.
fn check_urls(issues: &mut Issues, field: &str, urls: &[String]) {
    for (index, url) in urls.iter().enumerate() {
        let problem = match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            _ if !url.starts_with("redis://") => Some("is not a redis:// URL".to_owned()),
            Err(err) => Some(format!(
                "is not a valid Redis URL: check its host and its port (1 to 65535) ({err})"
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            issues.add(
                format!("{field}[{index}]"),
                format!("`{url}` {problem}; write e.g. \"redis://127.0.0.1:6379\""),
            );
        }
    }
}

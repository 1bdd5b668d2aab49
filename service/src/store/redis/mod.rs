//! The shared store: each key's state lives in Redis and every decision, all of a rule's
//! limits together, runs as one atomic Lua script (lua/*.lua mirror the Rust algorithms and
//! their stacking operation for operation), with time from Redis `TIME`, so any number of
//! stateless nodes agree exactly.
//!
//! At most `max_in_flight` calls are in flight; a burst waits for a slot (up to
//! `queue_timeout`) rather than deep in the connections, so a call's deadline measures Redis,
//! not the queue in front of it. Every call has a deadline, past which it waits on only while
//! Redis shows the reply is queued behind a burst ([`liveness`]); a circuit breaker
//! stops calling a failing Redis, and a probe reconnects (asking Sentinels for the primary
//! again) until it answers; a deny cache answers keys Redis just denied without a round trip.

mod connections;
mod liveness;

use std::{fmt::Write as _, time::Instant};

use connections::{Connections, Link, Picked};
pub use liveness::LIVENESS;
use liveness::{LateCall, Liveness, PUNCTUAL};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use redis::Script;

use super::{
    BucketKey, Store, StoreError,
    breaker::{Breaker, CircuitState},
    deny_cache::DenyCache,
};
use crate::{
    adaptive::{Aimd, Window},
    algorithm::{
        Algorithm, Decision, NEVER,
        ban::{BanScope, Bans},
        concurrency::{Acquired, Concurrency, StackedAcquire},
        stacked::{Decisions, Limit},
    },
    clock::Clock,
    config::RedisConfig,
};

/// The one decision script exactly as the store runs it (the benchmark loads it too): the
/// shared prelude, each algorithm's decide function, then `lua/stacked.lua`, which decides a
/// rule's limits together. Compiled in, so the binary never depends on its working directory.
pub const DECISION_SCRIPT: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/token_bucket.lua"),
    include_str!("../../../../lua/gcra.lua"),
    include_str!("../../../../lua/fixed_window.lua"),
    include_str!("../../../../lua/sliding_window_counter.lua"),
    include_str!("../../../../lua/sliding_window_log.lua"),
    include_str!("../../../../lua/ban.lua"),
    include_str!("../../../../lua/stacked.lua"),
);

/// The script sharing an adaptive resource's factor ([`crate::adaptive::Aimd::merge`]).
pub const ADAPTIVE_SCRIPT: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/adaptive.lua"),
);

/// The script ending a lease: expired leases dropped, then the lease removed; 1 when it was
/// live (`release` in service/src/algorithm/concurrency.rs).
pub const RELEASE_SCRIPT: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/release.lua"),
);

/// An adaptive resource's shared state outlives this many of its windows without reports
/// (at least a minute): after that its factor starts again from 1.
const ADAPTIVE_TTL_WINDOWS: u64 = 60;

/// The tag naming an algorithm in the script's arguments and in its state fields.
fn tag_of(algorithm: &Algorithm) -> &'static str {
    match algorithm {
        Algorithm::TokenBucket(_) => "tb",
        Algorithm::Gcra(_) => "gcra",
        Algorithm::FixedWindow(_) => "fw",
        Algorithm::SlidingWindowCounter(_) => "swc",
        Algorithm::SlidingWindowLog(_) => "swl",
    }
}

/// Appends the two parameters the algorithm's decide function takes, as the script reads
/// them. Numbers go in as numbers: integers in decimal, the one float as its shortest decimal
/// that round-trips (ryu), so Lua computes with the very same double, and no per-call
/// strings are built.
fn push_parameters(invocation: &mut redis::Cmd, algorithm: &Algorithm) {
    match algorithm {
        Algorithm::TokenBucket(a) => invocation.arg(a.capacity()).arg(a.refill_per_us()),
        Algorithm::Gcra(a) => invocation.arg(a.emission_interval_us()).arg(a.burst()),
        Algorithm::FixedWindow(a) => invocation.arg(a.limit()).arg(a.window_us()),
        Algorithm::SlidingWindowCounter(a) => invocation.arg(a.limit()).arg(a.window_ms()),
        Algorithm::SlidingWindowLog(a) => invocation.arg(a.limit()).arg(a.window_us()),
    };
}

/// Store metrics, registered by [`crate::metrics::Metrics`].
#[derive(Debug, Clone)]
pub struct RedisMetrics {
    pub latency: Histogram,
    pub errors: IntCounterVec,
    pub circuit_state: IntGauge,
    pub deny_cache_hits: IntCounter,
    pub script_calls: IntCounter,
}

pub struct RedisStore {
    connections: Connections,
    cluster: bool,
    script: Script,
    adaptive_script: Script,
    release_script: Script,
    prefix: String,
    deadline: std::time::Duration,
    /// One permit per call in flight (`max_in_flight`).
    in_flight: tokio::sync::Semaphore,
    liveness: Liveness,
    queue_timeout: std::time::Duration,
    breaker: Breaker,
    deny_cache: DenyCache,
    /// Local time for the deny cache; with [`RedisStore::pin_time`] also the scripts' `now`.
    clock: Clock,
    pinned_time: bool,
    metrics: RedisMetrics,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(err: redis::RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// How long between health probes while the circuit is not closed.
pub const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl RedisStore {
    /// Connects, and loads every script (SCRIPT LOAD) so the first requests are EVALSHA.
    pub async fn connect(config: &RedisConfig, metrics: RedisMetrics) -> Result<Self, StoreError> {
        let connections = Connections::connect(config).await.map_err(unavailable)?;
        let store = Self {
            connections,
            cluster: config.cluster,
            script: Script::new(DECISION_SCRIPT),
            adaptive_script: Script::new(ADAPTIVE_SCRIPT),
            release_script: Script::new(RELEASE_SCRIPT),
            prefix: config.prefix.clone(),
            deadline: config.deadline,
            in_flight: tokio::sync::Semaphore::new(config.max_in_flight),
            liveness: Liveness::new(if config.cluster { 1 } else { config.pool_size }),
            queue_timeout: config.queue_timeout,
            breaker: Breaker::new(config.breaker_failures, config.breaker_backoff),
            deny_cache: DenyCache::new(config.deny_cache_keys),
            clock: Clock::system(),
            pinned_time: false,
            metrics,
        };
        store.load_scripts().await?;
        // Redis just answered the connection and the script load: a new node's first calls
        // are judged against that, not against a Redis that never answered (which fails any
        // call past its deadline, as a cold debug build's first calls can be).
        let now_us = store.liveness.now_us();
        for lane in 0..config.pool_size.max(1) {
            store.liveness.answered(lane, now_us, now_us);
        }
        Ok(store)
    }

    /// Makes the scripts use `clock` instead of Redis `TIME`: for deterministic tests only.
    pub fn pin_time(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self.pinned_time = true;
        self
    }

    /// The `now_us` argument every script takes (`lua/prelude.lua`): `now` when time is
    /// pinned, else empty (the script reads Redis TIME).
    fn script_now(&self, now: u64) -> String {
        if self.pinned_time {
            now.to_string()
        } else {
            String::new()
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Loads the decision script (a Cluster loads it on the node owning the key, on first
    /// use, answering NOSCRIPT; so does a new primary after a failover).
    async fn load_scripts(&self) -> Result<(), StoreError> {
        if self.cluster {
            return Ok(());
        }
        self.script
            .load_async(&mut self.pick().connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The Redis key of `bucket`'s state hash, `{prefix}s:{<key>}:<resource>`, where every
    /// limit of its rule but a sliding log keeps its fields (see `lua/prelude.lua`). The braces
    /// make a Redis Cluster hash tag on the client key alone, so every state of one client (all
    /// its resources, limits and bans) shares a slot and one script can decide them together.
    /// Every part is escaped so no pair can produce another's key (see [`escape_into`]).
    pub fn state_key(&self, bucket: BucketKey<'_>) -> String {
        self.key_of("s", bucket, None)
    }

    /// The Redis key of a sliding log's sorted set, `{prefix}swl:{<key>}:<resource>:<limit>`
    /// (its sum is at the same key plus `:total`).
    pub fn log_key(&self, bucket: BucketKey<'_>, limit: &Limit) -> String {
        self.key_of("swl", bucket, Some(&limit.name))
    }

    fn key_of(&self, kind: &str, bucket: BucketKey<'_>, limit: Option<&str>) -> String {
        let mut key = String::with_capacity(
            self.prefix.len()
                + kind.len()
                + bucket.key.len()
                + bucket.resource.len()
                + limit.map_or(0, str::len)
                + 8,
        );
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push_str(":{");
        escape_into(&mut key, bucket.key);
        key.push_str("}:");
        escape_into(&mut key, bucket.resource);
        if let Some(limit) = limit {
            key.push(':');
            escape_into(&mut key, limit);
        }
        key
    }

    /// The Redis key of `bucket`'s ban state: `{prefix}ban:{<key>}:<resource>`, or for a
    /// key-wide ban `{prefix}ban:{<key>}`; under the client key's hash tag like its limits.
    pub fn ban_key(&self, bucket: BucketKey<'_>, scope: BanScope) -> String {
        let mut key =
            String::with_capacity(self.prefix.len() + bucket.key.len() + bucket.resource.len() + 8);
        key.push_str(&self.prefix);
        key.push_str("ban:{");
        escape_into(&mut key, bucket.key);
        key.push('}');
        if scope == BanScope::Resource {
            key.push(':');
            escape_into(&mut key, bucket.resource);
        }
        key
    }

    /// The Redis key of an adaptive resource's shared factor: `{prefix}adaptive:{<resource>}`.
    pub fn adaptive_key(&self, resource: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + resource.len() + 12);
        key.push_str(&self.prefix);
        key.push_str("adaptive:{");
        escape_into(&mut key, resource);
        key.push('}');
        key
    }

    /// Every Redis key holding `bucket`'s state under `limits`, in the script's order: the
    /// state hash, then each sliding log's set and sum.
    fn push_state_keys(&self, keys: &mut Vec<String>, bucket: BucketKey<'_>, limits: &[Limit]) {
        keys.push(self.state_key(bucket));
        for limit in limits {
            if matches!(limit.algorithm, Algorithm::SlidingWindowLog(_)) {
                let log = self.log_key(bucket, limit);
                let total = format!("{log}:total");
                keys.push(log);
                keys.push(total);
            }
        }
    }

    fn pick(&self) -> Picked {
        self.connections.pick()
    }

    /// Runs one call under the breaker, a slot of `max_in_flight` and the deadline (from the
    /// moment it has a slot), and accounts for it.
    async fn run<T>(
        &self,
        call: impl AsyncFnOnce(&mut Link) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        // An open circuit answers at once, without queueing (the probe is claimed below).
        if self.breaker.state() == CircuitState::Open {
            return Err(self.circuit_open());
        }
        let _slot = match tokio::time::timeout(self.queue_timeout, self.in_flight.acquire()).await {
            Ok(Ok(slot)) => slot,
            // Waiting is this node's overload, not Redis failing: the breaker is not told.
            _ => {
                let busy = StoreError::Busy(self.queue_timeout.as_millis() as u64);
                self.metrics.errors.with_label_values(&[busy.kind()]).inc();
                return Err(busy);
            }
        };
        // The breaker may have opened while this call waited.
        self.circuit_allows()?;
        let started = Instant::now();
        let Picked {
            mut connection,
            lane,
            generation,
        } = self.pick();
        let sent_us = self.liveness.now_us();
        let deadline_us = self.deadline.as_micros() as u64;
        let tolerance_us = LIVENESS.max(self.deadline).as_micros() as u64;
        let timed_out = StoreError::Timeout(self.deadline.as_millis() as u64);
        let call = call(&mut connection);
        tokio::pin!(call);
        let result = loop {
            let timer_from_us = self.liveness.now_us();
            match tokio::time::timeout(self.deadline, &mut call).await {
                Ok(Ok(value)) => {
                    self.liveness
                        .answered(lane, sent_us, self.liveness.now_us());
                    break Ok(value);
                }
                // The connection's own response timeout (the longest wait) fired.
                Ok(Err(err)) if err.is_timeout() => break Err(timed_out),
                Ok(Err(err)) => break Err(unavailable(err)),
                // No answer within the deadline: wait on only while Redis shows this call is
                // merely queued (see `liveness`), and at most `queue_timeout` in all. Yield
                // first, so replies due with the timer are read before judging.
                Err(_) => {
                    let late_by = self
                        .liveness
                        .now_us()
                        .saturating_sub(timer_from_us + deadline_us);
                    let punctual = late_by <= PUNCTUAL.as_micros() as u64;
                    tokio::task::yield_now().await;
                    let late = LateCall {
                        lane,
                        sent_us,
                        now_us: self.liveness.now_us(),
                        deadline_us,
                        tolerance_us,
                        punctual,
                        abandoned: self.connections.replaced_since(generation),
                    };
                    if !self.liveness.worth_waiting(late) || started.elapsed() >= self.queue_timeout
                    {
                        break Err(timed_out);
                    }
                }
            }
        };
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.breaker.on_success(),
            Err(err) => {
                self.metrics.errors.with_label_values(&[err.kind()]).inc();
                self.breaker.on_failure();
            }
        }
        self.update_circuit_gauge();
        result
    }

    /// Whether the breaker lets this call through (claiming the probe when half-open).
    fn circuit_allows(&self) -> Result<(), StoreError> {
        if self.breaker.allow() {
            Ok(())
        } else {
            Err(self.circuit_open())
        }
    }

    fn circuit_open(&self) -> StoreError {
        self.metrics
            .errors
            .with_label_values(&["circuit_open"])
            .inc();
        self.update_circuit_gauge();
        StoreError::CircuitOpen
    }

    fn update_circuit_gauge(&self) {
        self.metrics.circuit_state.set(self.breaker.state() as i64);
    }

    /// The decision script's keys for `bucket` under `limits` and `bans`: the state hash
    /// first (it names the bucket in the deny cache), then sliding logs and ban states.
    fn script_keys(&self, bucket: BucketKey<'_>, limits: &[Limit], bans: Bans<'_>) -> Vec<String> {
        let mut keys = Vec::with_capacity(3);
        self.push_state_keys(&mut keys, bucket, limits);
        if let Some(ban) = bans.policy {
            keys.push(self.ban_key(bucket, ban.scope));
        }
        if bans.watches_key_wide() {
            keys.push(self.ban_key(bucket, BanScope::Key));
        }
        keys
    }

    /// Runs the decision script on `keys` (a lease's sorted set last, with `lease`): its flat
    /// reply (see `lua/stacked.lua`).
    async fn run_script(
        &self,
        keys: &[String],
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
        lease: Option<(&Concurrency, u64)>,
        now: u64,
    ) -> Result<Vec<i64>, StoreError> {
        // EVALSHA built as one command buffer (a script invocation would allocate per argument).
        let mut invocation = redis::cmd("EVALSHA");
        invocation
            .arg(self.script.get_hash())
            .arg(keys.len())
            .arg(keys);
        invocation
            .arg(self.script_now(now))
            .arg(cost)
            .arg(if bans.watches_key_wide() { "1" } else { "0" });
        match bans.policy {
            Some(ban) => {
                invocation
                    .arg("1")
                    .arg(ban.after)
                    .arg(ban.within_us)
                    .arg(ban.duration_us)
                    // The shortest decimal that round-trips: Lua multiplies by the same double.
                    .arg(ban.factor)
                    .arg(ban.max_duration_us)
                    .arg(ban.lookback_us);
            }
            None => {
                invocation.arg("0");
            }
        }
        match lease {
            Some((concurrency, id)) => {
                invocation
                    .arg("1")
                    .arg(id)
                    .arg(concurrency.max_in_flight())
                    .arg(concurrency.lease_ttl_us());
            }
            None => {
                invocation.arg("0");
            }
        }
        for limit in limits {
            invocation.arg(tag_of(&limit.algorithm)).arg(&limit.name);
            push_parameters(&mut invocation, &limit.algorithm);
        }
        self.metrics.script_calls.inc();
        self.run(
            async |connection| match invocation.query_async(connection).await {
                // Redis restarted or its scripts were flushed: load it, then ask again.
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.script.load_async(connection).await?;
                    invocation.query_async(connection).await
                }
                result => result,
            },
        )
        .await
    }

    async fn decide(
        &self,
        bucket: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
    ) -> Result<Decisions, StoreError> {
        let keys = self.script_keys(bucket, limits, bans);
        let now = self.clock.now_us();
        if cost > 0
            && let Some(cached) = self.deny_cache.lookup(&keys[0], cost, now)
        {
            self.metrics.deny_cache_hits.inc();
            return Ok(cached);
        }
        let reply = self
            .run_script(&keys, limits, bans, cost, None, now)
            .await?;
        let decisions = decisions_of(&reply, limits)?;
        let banned = decisions.banned_for_us().is_some();
        // Under a ban policy every denial must reach the script to count as an offence, so
        // only the ban itself is cached: it answers every cost until it ends. Without one, a
        // denial answers this cost and larger ones until its retry-after.
        let cacheable = if bans.policy.is_some() {
            banned
        } else {
            !decisions.allowed() && decisions.decision().retry_after_us != NEVER
        };
        if cacheable {
            let cost = if banned { 1 } else { cost };
            self.deny_cache.remember(&keys[0], cost, now, &decisions);
        }
        Ok(decisions)
    }

    /// The Redis key of `bucket`'s leases: `{prefix}lease:{<key>}:<resource>`, a sorted set of
    /// lease ids scored by their expiry, under the client key's hash tag like its limits.
    pub fn lease_key(&self, bucket: BucketKey<'_>) -> String {
        self.key_of("lease", bucket, None)
    }

    /// Acquires lease `lease` of `bucket` under `concurrency` together with `limits`, all or
    /// nothing, in one script call ([`acquire_stacked`] in Lua). Never answered from the
    /// deny cache: a release may free a slot at any moment.
    pub async fn acquire_lease(
        &self,
        bucket: BucketKey<'_>,
        limits: &[Limit],
        concurrency: &Concurrency,
        lease: u64,
    ) -> Result<StackedAcquire, StoreError> {
        let mut keys = self.script_keys(bucket, limits, Bans::NONE);
        keys.push(self.lease_key(bucket));
        let now = self.clock.now_us();
        let reply = self
            .run_script(
                &keys,
                limits,
                Bans::NONE,
                1,
                Some((concurrency, lease)),
                now,
            )
            .await?;
        let (decided, leased) = reply.split_at(reply.len().saturating_sub(2));
        let decisions = decisions_of(decided, limits)?;
        let lease = match *leased {
            [1, expires_at] => Some(Acquired::Granted {
                expires_at_us: expires_at as u64,
            }),
            [2, retry_after] => Some(Acquired::Full {
                retry_after_us: retry_after as u64,
            }),
            [0, 0] => None,
            _ => {
                return Err(StoreError::Unavailable(format!(
                    "decision script answered lease {leased:?}; is another version of it loaded?"
                )));
            }
        };
        Ok(StackedAcquire { decisions, lease })
    }

    /// Ends lease `lease` of `bucket`; false when it was not live (released already, or
    /// expired).
    pub async fn release_lease(
        &self,
        bucket: BucketKey<'_>,
        lease: u64,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.release_script.prepare_invoke();
        invocation
            .key(self.lease_key(bucket))
            .arg(self.script_now(self.clock.now_us()))
            .arg(lease);
        let released: i64 = self
            .run(async |connection| invocation.invoke_async(connection).await)
            .await?;
        Ok(released == 1)
    }

    /// Announces node `node` alive for `ttl` and counts the nodes announced within their own
    /// `ttl`: one sorted set, `{prefix}nodes`, scored by each announcement's wall time.
    pub async fn announce(&self, node: &str, ttl: std::time::Duration) -> Result<u64, StoreError> {
        let key = format!("{}nodes", self.prefix);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let ttl_ms = ttl.as_millis() as u64;
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .zadd(&key, node, now_ms)
            .ignore()
            .zrembyscore(&key, "-inf", now_ms.saturating_sub(ttl_ms))
            .ignore()
            .pexpire(&key, (2 * ttl_ms) as i64)
            .ignore()
            .zcard(&key);
        let (count,): (u64,) = self
            .run(async |connection| pipeline.query_async(connection).await)
            .await?;
        Ok(count)
    }

    /// Withdraws node `node`'s announcement (a node shutting down).
    pub async fn withdraw(&self, node: &str) -> Result<(), StoreError> {
        let key = format!("{}nodes", self.prefix);
        let mut command = redis::cmd("ZREM");
        command.arg(&key).arg(node);
        self.run(async |connection| command.query_async::<()>(connection).await)
            .await
    }

    /// Deletes `keys` (of one client key: one slot) in one call; true when any existed.
    async fn delete(&self, keys: &[String]) -> Result<bool, StoreError> {
        let mut command = redis::cmd("DEL");
        for key in keys {
            command.arg(key);
        }
        let removed: u64 = self
            .run(async |connection| command.query_async(connection).await)
            .await?;
        Ok(removed > 0)
    }

    /// While the circuit is not closed, connects afresh (behind Sentinels: to the primary they
    /// name now) and closes the circuit as soon as the new connections answer a PING within the
    /// deadline, so service returns within a probe interval of Redis returning, on sockets
    /// that never sat in a partition's retransmission backoff. Runs until dropped.
    pub async fn watch_health(&self) {
        let mut ticker = tokio::time::interval(PROBE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.breaker.state() == CircuitState::Closed {
                continue;
            }
            match self
                .connections
                .reconnect::<()>(&redis::cmd("PING"), self.deadline)
                .await
            {
                Ok(()) => {
                    tracing::info!("store answers again; closing the circuit");
                    if let Err(err) = self.load_scripts().await {
                        tracing::debug!(%err, "loading the script after reconnecting");
                    }
                    self.breaker.on_success();
                    self.update_circuit_gauge();
                }
                Err(err) => tracing::debug!(%err, "store probe failed"),
            }
        }
    }

    /// Sends any command to the store (tests use it for INFO and FLUSHALL).
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        command
            .query_async(&mut self.pick().connection)
            .await
            .map_err(unavailable)
    }
}

/// The script's flat reply (four numbers per limit, then the ban's two) as decisions.
fn decisions_of(reply: &[i64], limits: &[Limit]) -> Result<Decisions, StoreError> {
    if reply.len() != limits.len() * 4 + 2 {
        return Err(StoreError::Unavailable(format!(
            "decision script answered {} numbers for {} limits; is another version of it loaded?",
            reply.len(),
            limits.len()
        )));
    }
    let mut decisions = Decisions::default();
    let whole = |value: i64| u64::try_from(value).unwrap_or(0);
    let (per_limit, ban) = reply.split_at(limits.len() * 4);
    for (fields, limit) in per_limit.chunks_exact(4).zip(limits) {
        decisions.push(Decision {
            allowed: fields[0] == 1,
            limit: limit.algorithm.limit(),
            remaining: whole(fields[1]),
            reset_after_us: whole(fields[2]),
            retry_after_us: u64::try_from(fields[3]).unwrap_or(NEVER),
        });
    }
    if ban[0] > 0 {
        decisions.set_banned(whole(ban[0]), ban[1] == 1);
    }
    Ok(decisions)
}

impl Store for RedisStore {
    async fn check(
        &self,
        bucket: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
    ) -> Result<Decisions, StoreError> {
        self.decide(bucket, limits, bans, cost).await
    }

    async fn peek(
        &self,
        bucket: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
    ) -> Result<Decisions, StoreError> {
        self.decide(bucket, limits, bans, 0).await
    }

    async fn reset(&self, bucket: BucketKey<'_>, limits: &[Limit]) -> Result<bool, StoreError> {
        let mut keys = Vec::with_capacity(1);
        self.push_state_keys(&mut keys, bucket, limits);
        self.deny_cache.forget(&keys[0]);
        self.delete(&keys).await
    }

    /// Deletes the ban records `bans` reads for `bucket` (one call: they share the client
    /// key's slot) and forgets this node's cached answer for it.
    async fn lift_ban(&self, bucket: BucketKey<'_>, bans: Bans<'_>) -> Result<bool, StoreError> {
        let mut keys = Vec::with_capacity(2);
        if let Some(ban) = bans.policy {
            keys.push(self.ban_key(bucket, ban.scope));
        }
        if bans.watches_key_wide() {
            keys.push(self.ban_key(bucket, BanScope::Key));
        }
        keys.dedup();
        self.deny_cache.forget(&self.state_key(bucket));
        if keys.is_empty() {
            return Ok(false);
        }
        self.delete(&keys).await
    }

    /// Empties this node's deny cache: its answers were made under the old rules.
    async fn adapt(
        &self,
        resource: &str,
        aimd: &Aimd,
        window_us: u64,
        reported: Window,
    ) -> Result<u64, StoreError> {
        let pinned = self.script_now(self.clock.now_us());
        let ttl_ms = (window_us / 1_000)
            .saturating_mul(ADAPTIVE_TTL_WINDOWS)
            .max(60_000);
        let mut invocation = self.adaptive_script.prepare_invoke();
        invocation
            .key(self.adaptive_key(resource))
            .arg(pinned)
            .arg(window_us)
            .arg(reported.reports)
            .arg(reported.errors)
            .arg(reported.slow)
            .arg(aimd.min_reports)
            .arg(aimd.max_error_ppm)
            .arg(aimd.floor_ppm)
            .arg(aimd.increase_ppm)
            .arg(aimd.decrease_ppm)
            .arg(ttl_ms);
        self.run(async |connection| invocation.invoke_async(connection).await)
            .await
    }

    async fn acquire(
        &self,
        bucket: BucketKey<'_>,
        limits: &[Limit],
        concurrency: &Concurrency,
        lease: u64,
    ) -> Result<StackedAcquire, StoreError> {
        self.acquire_lease(bucket, limits, concurrency, lease).await
    }

    async fn release(
        &self,
        bucket: BucketKey<'_>,
        _concurrency: &Concurrency,
        lease: u64,
    ) -> Result<bool, StoreError> {
        self.release_lease(bucket, lease).await
    }

    fn rules_changed(&self) {
        self.deny_cache.clear();
    }

    /// Redis cannot tell without a scan.
    fn active_keys(&self) -> Option<u64> {
        None
    }

    fn healthy(&self) -> bool {
        self.circuit_state() == CircuitState::Closed
    }
}

/// Appends `part` with every byte outside `A-Z a-z 0-9 _ - . /` written as `%XX`, so the result
/// holds no `{`, `}`, `:` or `%` of its own: the encoding is injective, and the separator and
/// hash-tag braces around it are unambiguous.
pub fn escape_into(out: &mut String, part: &str) {
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b'/') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

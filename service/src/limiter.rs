//! The decision core, independent of any API: validates a request, finds its rule, asks the
//! store, and counts the outcome. gRPC, HTTP (and later Envoy RLS) are thin adapters over it.

use std::{sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::{
    adaptive::{Controllers, WHOLE},
    algorithm::{
        Decision,
        concurrency::Acquired,
        stacked::{Decisions, Limit},
    },
    clock::Clock,
    config::{
        BackendConfig, Config, MemoryConfig, RedisConfig, RequestLimits,
        rule_config::MAX_RESOURCE_BYTES,
    },
    decision_log::{LINES_PER_SECOND, LogBudget, key_hash},
    heavy_hitters::{HeavyHitters, Hitter},
    metrics::Metrics,
    policy::Policy,
    rules::{DEFAULT_RESOURCE, FailureMode, Rule, RuleSet, same_layout},
    store::{BucketKey, MemoryStore, Remapping, Store, StoreError},
};

/// The rules before and after a reload, as the store needs them to carry keys' states over.
#[derive(Debug)]
struct PolicyChange {
    old: Arc<Policy>,
    new: Arc<Policy>,
}

impl Remapping for PolicyChange {
    fn layouts(&self, resource: &str, key: &str) -> Option<(&[Limit], &[Limit])> {
        let before = self.old.rules().rule_of_bucket(resource, key)?;
        let after = self.new.rules().rule_of_bucket(resource, key)?;
        (!same_layout(&before.limits, &after.limits))
            .then_some((before.limits.as_slice(), after.limits.as_slice()))
    }
}

/// "May `key` spend `cost` of `resource` now?"
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRequest<'a> {
    pub key: &'a str,
    /// Empty means [`DEFAULT_RESOURCE`].
    pub resource: &'a str,
    /// `None` means 1.
    pub cost: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The store is down and rules fail closed: send traffic elsewhere.
    StoreDown,
    /// The store is down; rules still answer by this failure mode.
    Degraded(FailureMode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    /// The rule is in shadow mode and would have denied: the caller may go ahead.
    ShadowDenied,
    /// The key is banned for repeated denials: refused until the ban ends.
    Banned,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::ShadowDenied => "shadow_denied",
            Outcome::Banned => "banned",
        }
    }

    /// Whether the caller may proceed.
    pub fn proceeds(self) -> bool {
        matches!(self, Outcome::Allowed | Outcome::ShadowDenied)
    }
}

/// A decision with the rule that made it (and the policy that rule belongs to, which a reload
/// may have replaced since).
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    pub outcome: Outcome,
    /// The deciding limit's answer, which is the request's: see [`Decisions::deciding`].
    pub decision: Decision,
    /// Every limit's answer, in the rule's order.
    pub decisions: Decisions,
    /// The index of the deciding limit in the rule's limits.
    pub deciding: usize,
    policy: Arc<Policy>,
    rule: RuleRef,
    /// The resource decided for (the request's, or [`DEFAULT_RESOURCE`]).
    pub resource: &'a str,
    /// Why the decision is not the store's own, when a failure mode made it.
    pub reason: Option<&'static str>,
    /// The store failed and the rule's failure mode decided.
    pub store_failed: bool,
    /// The adaptive factor the rule's limits were scaled by, in parts per million
    /// ([`crate::adaptive::WHOLE`] when as configured).
    pub factor_ppm: u64,
    /// Denied only because the factor is reduced: the configured limit would have allowed it.
    pub reduced_capacity: bool,
}

/// The rule a verdict was decided under: one of the policy's, or one the request gave (an
/// Envoy descriptor's own `limit`).
#[derive(Debug, Clone)]
enum RuleRef {
    InPolicy(usize),
    Given(Arc<Rule>),
}

impl RuleRef {
    /// The rule, one of `policy`'s or the request's own.
    fn in_policy<'a>(&'a self, policy: &'a Policy) -> &'a Rule {
        match self {
            RuleRef::InPolicy(id) => policy.rule(*id),
            RuleRef::Given(rule) => rule,
        }
    }
}

impl Verdict<'_> {
    /// The rule that decided.
    pub fn rule(&self) -> &Rule {
        self.rule.in_policy(&self.policy)
    }

    /// The metrics handles of the rule that decided.
    pub fn policy_metrics(&self) -> &crate::metrics::RuleMetrics {
        self.policy.metrics_of(self.rule())
    }

    /// The limit that decided.
    pub fn limit(&self) -> &Limit {
        &self.rule().limits[self.deciding]
    }

    /// The window the deciding limit is restored over, for `RateLimit-Policy`.
    pub fn policy_window_us(&self) -> u64 {
        self.limit().algorithm.policy_window_us()
    }

    /// Each limit with its answer, in the rule's order.
    pub fn limits(&self) -> impl Iterator<Item = (&Limit, &Decision)> {
        self.rule().limits.iter().zip(self.decisions.as_slice())
    }
}

/// A request that can never be answered as asked. Each names its field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "key is empty; send the client identity to limit (gRPC `key`, HTTP `X-API-Key` header)"
    )]
    EmptyKey,
    #[error(
        "key is {len} bytes, over the limit of {max} (limits.max_key_bytes); send a shorter identity, e.g. a hash"
    )]
    KeyTooLong { len: usize, max: usize },
    #[error("resource is {len} bytes, over the limit of {max}; use a short resource name")]
    ResourceTooLong { len: usize, max: usize },
    #[error("cost must be at least 1; omit it to spend 1")]
    ZeroCost,
    #[error(
        "cost {cost} exceeds {limit}, the most rule `{rule}` can ever allow; send at most {limit}"
    )]
    CostAboveLimit { cost: u64, limit: u64, rule: String },
    #[error(
        "resource `{resource}` has no rule and there is no default_rule; add [rules.{resource}] or a [default_rule]"
    )]
    UnknownResource { resource: String },
    #[error(
        "resource names starting `{}` belong to Envoy's rate limit service; name another resource",
        crate::rls::RESOURCE_PREFIX
    )]
    ReservedResource,
    #[error(
        "rule `{rule}` limits requests in flight: call Acquire before the work and Release after it, not Check"
    )]
    NeedsLease { rule: String },
    #[error(
        "rule `{rule}` has no concurrency limit: Acquire and Release are for rules with [rules.<resource>.concurrency]; call Check"
    )]
    NoConcurrency { rule: String },
}

impl RequestError {
    /// The request field at fault, also a metrics label.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::EmptyKey | RequestError::KeyTooLong { .. } => "key",
            RequestError::ResourceTooLong { .. }
            | RequestError::UnknownResource { .. }
            | RequestError::ReservedResource => "resource",
            RequestError::ZeroCost | RequestError::CostAboveLimit { .. } => "cost",
            RequestError::NeedsLease { .. } | RequestError::NoConcurrency { .. } => "resource",
        }
    }
}

/// Most reports one call may carry.
pub const MAX_REPORTS: usize = 10_000;

/// One report of the backend behind an adaptive resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendReport<'a> {
    pub resource: &'a str,
    pub latency_us: u64,
    pub failed: bool,
}

/// A report that cannot be counted. Each names its field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error(
        "reports[{index}].resource `{resource}` has no adaptive rule; report only resources with [rules.<resource>.adaptive]"
    )]
    NotAdaptive { index: usize, resource: String },
    #[error("{count} reports in one call, over {MAX_REPORTS}; send them in smaller batches")]
    TooMany { count: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    #[error(transparent)]
    Invalid(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters of the denied-keys sketch: memory stays at this many keys whatever the traffic,
/// and any key with more than 1/64 of a window's denials is listed.
pub const TOP_DENIED_CAPACITY: usize = 64;

/// The denied-keys sketch's window; a listing covers the current and the last one.
pub const TOP_DENIED_WINDOW_US: u64 = 60_000_000;

/// The `reason` of an Acquire refused because the key already has `max_in_flight` leases.
pub const CONCURRENCY_REASON: &str =
    "too many requests in flight for this key: retry when one ends";

/// A lease an Acquire granted: Release it (key, resource and id) when the work is done; it
/// ends by itself `ttl_us` after it was granted otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub ttl_us: u64,
}

/// The `reason` of a denial the adaptive factor caused.
pub const REDUCED_CAPACITY_REASON: &str =
    "backend overloaded: the limit is reduced until it recovers";

/// The `reason` of a banned key's answer.
pub const BANNED_REASON: &str = "key banned for repeatedly exceeding its limits";

/// Retry-after suggested when failing closed: about when the breaker probes the store again.
const STORE_DOWN_RETRY_US: u64 = 1_000_000;

/// How rules answer when the store fails.
#[derive(Debug)]
pub struct FailurePolicy {
    /// For rules without a `failure_mode` of their own.
    pub default_mode: FailureMode,
    /// This node's memory for the `local` mode (holding each rule's limits scaled to
    /// `fallback_share`), if the store can fail at all.
    pub local: Option<MemoryStore>,
    pub fallback_share: Option<f64>,
    /// The share in force (f64 bits): `fallback_share`, until [`Limiter::set_fallback_share`].
    share_now: std::sync::atomic::AtomicU64,
}

impl FailurePolicy {
    /// For a store that cannot fail (memory).
    pub fn infallible() -> Self {
        Self {
            default_mode: FailureMode::Deny,
            local: None,
            fallback_share: None,
            share_now: std::sync::atomic::AtomicU64::new(1.0f64.to_bits()),
        }
    }

    pub fn for_redis(config: &RedisConfig) -> Self {
        let memory = MemoryConfig {
            shards: 16,
            max_keys: config.fallback_max_keys,
            full_policy: crate::config::FullPolicy::Evict,
            sweep_interval: std::time::Duration::from_secs(1),
        };
        Self {
            default_mode: config.failure_mode,
            local: Some(MemoryStore::new(&memory, Clock::system())),
            fallback_share: Some(config.fallback_share),
            share_now: std::sync::atomic::AtomicU64::new(config.fallback_share.to_bits()),
        }
    }

    /// The share of each limit this node allows alone in `local` mode now.
    fn share(&self) -> Option<f64> {
        self.fallback_share
            .map(|_| f64::from_bits(self.share_now.load(std::sync::atomic::Ordering::Acquire)))
    }
}

#[derive(Debug)]
pub struct Limiter<S> {
    /// Swapped whole by [`Limiter::replace_rules`].
    policy: ArcSwap<Policy>,
    limits: RequestLimits,
    store: S,
    metrics: Metrics,
    failure: FailurePolicy,
    /// Bounds the lines logged about shadowed denials.
    shadow_log: LogBudget,
    /// Bounds the lines logged about bans started.
    ban_log: LogBudget,
    /// The keys denied (or banned) most lately, for the admin API.
    denied: Mutex<HeavyHitters>,
    /// The origin of `denied`'s clock.
    started: Instant,
    /// Every adaptive resource's controller, kept across reloads.
    controllers: Controllers,
    /// Lease ids: a keyed hash (random keys per node) of a counter and the time.
    lease_ids: std::collections::hash_map::RandomState,
    leases_granted: std::sync::atomic::AtomicU64,
}

impl<S: Store> Limiter<S> {
    /// `version`: which configuration the rules came from (see [`crate::policy::Version`]).
    pub fn new(
        rules: RuleSet,
        version: String,
        limits: RequestLimits,
        store: S,
        metrics: Metrics,
        failure: FailurePolicy,
    ) -> Self {
        let controllers = Controllers::new(&metrics);
        let policy = Policy::new(rules, &metrics, &controllers, failure.share(), version);
        metrics.set_config_version(&policy.version().id, policy.version().loaded_at);
        if let Some(share) = failure.share() {
            metrics.set_fallback_share(share);
        }
        Self {
            policy: ArcSwap::from_pointee(policy),
            limits,
            store,
            metrics,
            failure,
            shadow_log: LogBudget::new(LINES_PER_SECOND),
            ban_log: LogBudget::new(LINES_PER_SECOND),
            denied: Mutex::new(HeavyHitters::new(TOP_DENIED_CAPACITY, TOP_DENIED_WINDOW_US)),
            started: Instant::now(),
            controllers,
            lease_ids: std::collections::hash_map::RandomState::new(),
            leases_granted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A limiter for `config` over `store`, recording into `metrics`.
    pub fn from_config(config: &Config, store: S, metrics: Metrics) -> Self {
        let failure = match &config.backend {
            BackendConfig::Memory(_) => FailurePolicy::infallible(),
            BackendConfig::Redis(redis) => FailurePolicy::for_redis(redis),
        };
        Self::new(
            config.rules.clone(),
            config.version.clone(),
            config.limits,
            store,
            metrics,
            failure,
        )
    }

    /// Whether this node should receive traffic: the store is reachable, or its failure mode
    /// still answers usefully (anything but failing closed).
    pub fn ready(&self) -> Readiness {
        if self.store.healthy() {
            Readiness::Ready
        } else if self.failure.default_mode == FailureMode::Deny {
            Readiness::StoreDown
        } else {
            Readiness::Degraded(self.failure.default_mode)
        }
    }

    pub async fn check<'a>(
        &'a self,
        request: CheckRequest<'a>,
    ) -> Result<Verdict<'a>, LimiterError> {
        let policy = self.policy.load_full();
        let (rule, resource) = self.resolve(&policy, request.key, request.resource)?;
        let rule = RuleRef::InPolicy(rule.id);
        let bucket = BucketKey {
            resource,
            key: request.key,
        };
        self.decide(policy, rule, bucket, request.cost.unwrap_or(1))
            .await
    }

    /// Decides `bucket` under rule `rule` of `policy` (a policy from [`Limiter::policy`],
    /// whose rule set the caller matched in, as Envoy's descriptors are). The bucket's key is
    /// the caller's to bound ([`Limiter::check_key`]).
    pub async fn check_rule<'a>(
        &'a self,
        policy: Arc<Policy>,
        rule: usize,
        bucket: BucketKey<'a>,
        cost: u64,
    ) -> Result<Verdict<'a>, LimiterError> {
        self.decide(policy, RuleRef::InPolicy(rule), bucket, cost)
            .await
    }

    /// Decides `bucket` under a rule the request itself gave (an Envoy descriptor's `limit`
    /// override), counted under one shared metrics series. Its failure mode is the store's
    /// default (it has no local share, so `local` answers as `deny`).
    pub async fn check_given<'a>(
        &'a self,
        policy: Arc<Policy>,
        rule: Rule,
        bucket: BucketKey<'a>,
        cost: u64,
    ) -> Result<Verdict<'a>, LimiterError> {
        let rule = Rule {
            id: crate::policy::GIVEN_RULE_ID,
            ..rule
        };
        self.decide(policy, RuleRef::Given(Arc::new(rule)), bucket, cost)
            .await
    }

    /// Takes a lease of `request.key` on `request.resource` together with a charge of 1 on
    /// its rule's limits, all or nothing (a rule with a concurrency limit): the verdict, and
    /// the lease when granted. Denied when a limit denies or the key's leases are all taken
    /// (reason [`CONCURRENCY_REASON`], retry-after until the earliest lease ends by itself).
    pub async fn acquire<'a>(
        &'a self,
        request: CheckRequest<'a>,
    ) -> Result<(Verdict<'a>, Option<Lease>), LimiterError> {
        let policy = self.policy.load_full();
        let (rule, resource) = self.resolve(&policy, request.key, request.resource)?;
        let Some(concurrency) = rule.concurrency else {
            return Err(RequestError::NoConcurrency {
                rule: rule.name.clone(),
            }
            .into());
        };
        let rule_ref = RuleRef::InPolicy(rule.id);
        let bucket = BucketKey {
            resource,
            key: request.key,
        };
        let scaled = policy.scaled_limits(rule);
        let limits = scaled
            .as_ref()
            .map_or(&rule.limits[..], |scaled| &scaled.limits[..]);
        let id = std::hash::BuildHasher::hash_one(
            &self.lease_ids,
            (
                self.started.elapsed().as_nanos(),
                self.leases_granted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ),
        );
        match self.store.acquire(bucket, limits, &concurrency, id).await {
            Ok(acquired) => {
                self.metrics.set_fallback_active(false);
                let (full, lease) = match acquired.lease {
                    Some(Acquired::Full { retry_after_us }) => (Some(retry_after_us), None),
                    Some(Acquired::Granted { .. }) => (
                        None,
                        Some(Lease {
                            id,
                            ttl_us: concurrency.lease_ttl_us(),
                        }),
                    ),
                    None => (None, None),
                };
                let verdict =
                    self.verdict(policy, rule_ref, bucket, acquired.decisions, None, full);
                Ok((verdict, lease))
            }
            // Without the store there is no lease to give: the failure mode answers for the
            // rule's limits, and an allowed caller goes ahead holding none.
            Err(err) => Ok((
                self.decide_without_store(policy, rule_ref, bucket, 1, err)?,
                None,
            )),
        }
    }

    /// Ends lease `lease` of `key` on `resource`; false when it was not live (released
    /// already, or expired).
    pub async fn release(
        &self,
        key: &str,
        resource: &str,
        lease: u64,
    ) -> Result<bool, LimiterError> {
        let policy = self.policy.load_full();
        let (rule, resource) = self.resolve(&policy, key, resource)?;
        let Some(concurrency) = rule.concurrency else {
            return Err(RequestError::NoConcurrency {
                rule: rule.name.clone(),
            }
            .into());
        };
        Ok(self
            .store
            .release(BucketKey { resource, key }, &concurrency, lease)
            .await?)
    }

    /// Bounds a bucket key built by an adapter, as a request's key is bounded.
    pub fn check_key(&self, key: &str) -> Result<(), RequestError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(RequestError::KeyTooLong {
                len: key.len(),
                max: self.limits.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Counts a denial of rule `rule` that no store was asked about (a limit of zero).
    pub fn count_refused(&self, policy: &Policy, rule: usize) {
        policy.metrics_of(policy.rule(rule)).denied.inc();
    }

    async fn decide<'a>(
        &'a self,
        policy: Arc<Policy>,
        rule_ref: RuleRef,
        bucket: BucketKey<'a>,
        cost: u64,
    ) -> Result<Verdict<'a>, LimiterError> {
        let rule = rule_ref.in_policy(&policy);
        if rule.concurrency.is_some() {
            return Err(RequestError::NeedsLease {
                rule: rule.name.clone(),
            }
            .into());
        }
        let limit = rule.max_cost();
        if cost == 0 {
            return Err(RequestError::ZeroCost.into());
        }
        if cost > limit {
            return Err(RequestError::CostAboveLimit {
                cost,
                limit,
                rule: rule.name.clone(),
            }
            .into());
        }
        let scaled = policy.scaled_limits(rule);
        let (limits, factor_ppm) = match &scaled {
            Some(scaled) => (scaled.limits.as_slice(), scaled.factor_ppm),
            None => (rule.limits.as_slice(), WHOLE),
        };
        let decisions = match self
            .store
            .check(bucket, limits, rule.bans(policy.key_wide_bans()), cost)
            .await
        {
            Ok(decisions) => {
                self.metrics.set_fallback_active(false);
                decisions
            }
            Err(err) => return self.decide_without_store(policy, rule_ref, bucket, cost, err),
        };
        let mut verdict = self.verdict(policy, rule_ref, bucket, decisions, None, None);
        verdict.factor_ppm = factor_ppm;
        if factor_ppm < WHOLE && !verdict.decision.allowed && verdict.outcome != Outcome::Banned {
            // Charged at the configured limit, would the same request have fit?
            let configured = verdict.limit().algorithm.limit();
            let used = verdict
                .decision
                .limit
                .saturating_sub(verdict.decision.remaining);
            if configured.saturating_sub(used) >= cost {
                verdict.reduced_capacity = true;
                verdict.reason = verdict.reason.or(Some(REDUCED_CAPACITY_REASON));
                if let Some(controller) = verdict.policy.controller_of(verdict.rule()) {
                    controller.count_reduced_denial();
                }
            }
        }
        Ok(verdict)
    }

    /// The verdict of `decisions`, counted under its rule. A shadowed rule's denial becomes
    /// `ShadowDenied`: the caller proceeds, and the limits stay uncharged exactly as an enforced
    /// denial leaves them, so the shadow count is what enforcing the rule would deny.
    /// `full`: an Acquire found the key's leases all taken, to retry after so long; the
    /// request is then refused whatever its limits said.
    fn verdict<'a>(
        &self,
        policy: Arc<Policy>,
        rule_ref: RuleRef,
        bucket: BucketKey<'a>,
        decisions: Decisions,
        reason: Option<&'static str>,
        full: Option<u64>,
    ) -> Verdict<'a> {
        let rule = rule_ref.in_policy(&policy);
        let deciding = decisions.deciding();
        let mut decision = decisions.decision_of(deciding);
        if let Some(retry_after_us) = full {
            decision.allowed = false;
            decision.retry_after_us = retry_after_us;
        }
        let reason = match full {
            Some(_) => reason.or(Some(CONCURRENCY_REASON)),
            None => reason,
        };
        let (outcome, reason) = if decisions.banned_for_us().is_some() {
            if decisions.ban_started() {
                policy.metrics_of(rule).bans_started.inc();
                self.log_ban(rule, bucket, decision.retry_after_us);
            }
            (Outcome::Banned, reason.or(Some(BANNED_REASON)))
        } else if decision.allowed {
            (Outcome::Allowed, reason)
        } else if rule.shadow {
            self.log_shadow_denial(rule, &rule.limits[deciding], bucket);
            (Outcome::ShadowDenied, reason)
        } else {
            (Outcome::Denied, reason)
        };
        let outcome = Self::count(&policy, rule, &decision, outcome);
        if matches!(outcome, Outcome::Denied | Outcome::Banned) {
            let now_us = self.started.elapsed().as_micros() as u64;
            self.denied
                .lock()
                .record(bucket.resource, bucket.key, now_us);
        }
        Verdict {
            outcome,
            decision,
            decisions,
            deciding,
            policy,
            rule: rule_ref,
            resource: bucket.resource,
            reason,
            store_failed: false,
            factor_ppm: WHOLE,
            reduced_capacity: false,
        }
    }

    fn log_ban(&self, rule: &Rule, bucket: BucketKey<'_>, duration_us: u64) {
        if let (Some(suppressed), Some(ban)) = (self.ban_log.admit(), &rule.ban) {
            tracing::warn!(
                rule = %rule.name,
                resource = bucket.resource,
                scope = ban.scope.label(),
                key_hash = %key_hash(bucket.key),
                duration_ms = duration_us / 1_000,
                suppressed,
                "ban started for repeated denials"
            );
        }
    }

    fn log_shadow_denial(&self, rule: &Rule, limit: &Limit, bucket: BucketKey<'_>) {
        if let Some(suppressed) = self.shadow_log.admit() {
            tracing::info!(
                rule = %rule.name,
                resource = bucket.resource,
                limit = %limit.name,
                key_hash = %key_hash(bucket.key),
                suppressed,
                "shadow mode: would have denied"
            );
        }
    }

    /// The rule's failure mode answers when the store could not.
    fn decide_without_store<'a>(
        &'a self,
        policy: Arc<Policy>,
        rule_ref: RuleRef,
        bucket: BucketKey<'a>,
        cost: u64,
        err: StoreError,
    ) -> Result<Verdict<'a>, LimiterError> {
        let rule = rule_ref.in_policy(&policy);
        let mode = rule.failure_mode.unwrap_or(self.failure.default_mode);
        tracing::debug!(rule = %rule.name, error = %err, mode = mode.label(), "store failed");
        // A full memory store is not an outage: it refuses new keys only.
        let full = err == StoreError::Full;
        if !full {
            self.metrics.set_fallback_active(true);
        }
        self.metrics.fallback_decision(mode.label());
        // Without the store every limit answers alike: open, closed, or this node's share.
        let every_limit = |answer: &dyn Fn(u64) -> Decision| {
            let mut decisions = Decisions::default();
            for limit in &rule.limits {
                decisions.push(answer(limit.algorithm.limit()));
            }
            decisions
        };
        let local = self.failure.local.as_ref().zip(policy.local_limits(rule));
        let (decisions, reason) = match (mode, local) {
            (FailureMode::Allow, _) => (
                every_limit(&|limit| Decision {
                    allowed: true,
                    limit,
                    remaining: limit - cost,
                    reset_after_us: 0,
                    retry_after_us: 0,
                }),
                if full {
                    "store full; failing open"
                } else {
                    "store unavailable; failing open"
                },
            ),
            (FailureMode::Local, Some((store, limits))) => (
                store.check_now(bucket, limits, rule.bans(policy.key_wide_bans()), cost),
                "store unavailable; decided on this node's share of the limit",
            ),
            (FailureMode::Deny | FailureMode::Local, _) => (
                every_limit(&|limit| Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_after_us: 0,
                    retry_after_us: STORE_DOWN_RETRY_US,
                }),
                if full {
                    "store full; new keys are refused until keys expire"
                } else {
                    "store unavailable"
                },
            ),
        };
        let mut verdict = self.verdict(policy, rule_ref, bucket, decisions, Some(reason), None);
        verdict.store_failed = true;
        Ok(verdict)
    }

    /// Counts a decision's outcome under its rule, and returns it.
    fn count(policy: &Policy, rule: &Rule, decision: &Decision, outcome: Outcome) -> Outcome {
        let counters = policy.metrics_of(rule);
        counters
            .remaining_ratio
            .observe(decision.remaining as f64 / decision.limit as f64);
        match outcome {
            Outcome::Allowed => counters.allowed.inc(),
            Outcome::Denied => counters.denied.inc(),
            Outcome::ShadowDenied => counters.shadow_denied.inc(),
            Outcome::Banned => counters.banned.inc(),
        }
        outcome
    }

    /// Periodic upkeep: sweeps in-process state that is back to fresh.
    pub fn upkeep(&self) {
        let policy = self.policy.load_full();
        let limits_of = |resource: &str, key: &str| {
            Some(
                policy
                    .rules()
                    .rule_of_bucket(resource, key)?
                    .limits
                    .as_slice(),
            )
        };
        self.store.upkeep(&limits_of);
        if let Some(local) = &self.failure.local {
            let local_limits_of = |resource: &str, key: &str| {
                policy.local_limits(policy.rules().rule_of_bucket(resource, key)?)
            };
            local.sweep_expired_under(&local_limits_of);
        }
    }

    /// The key's state now, consuming nothing.
    pub async fn status<'a>(
        &'a self,
        key: &str,
        resource: &'a str,
    ) -> Result<Verdict<'a>, LimiterError> {
        let policy = self.policy.load_full();
        let (rule, resource) = self.resolve(&policy, key, resource)?;
        let rule = rule.id;
        // The bucket borrows `key` only while the store reads it.
        let bucket = BucketKey { resource, key };
        let decisions = self.peek(&policy, rule, bucket).await?;
        Ok(Self::status_verdict(policy, rule, resource, decisions))
    }

    /// Bucket `bucket`'s state under rule `rule` of `policy`, consuming nothing (see
    /// [`Limiter::check_rule`]).
    pub async fn status_rule<'a>(
        &'a self,
        policy: Arc<Policy>,
        rule: usize,
        bucket: BucketKey<'a>,
    ) -> Result<Verdict<'a>, LimiterError> {
        let decisions = self.peek(&policy, rule, bucket).await?;
        Ok(Self::status_verdict(
            policy,
            rule,
            bucket.resource,
            decisions,
        ))
    }

    async fn peek(
        &self,
        policy: &Policy,
        rule: usize,
        bucket: BucketKey<'_>,
    ) -> Result<Decisions, StoreError> {
        let rule = policy.rule(rule);
        // An adaptive rule is read at its factor now, as a check would decide it.
        let scaled = policy.scaled_limits(rule);
        let limits = scaled
            .as_ref()
            .map_or(&rule.limits[..], |scaled| &scaled.limits[..]);
        self.store
            .peek(bucket, limits, rule.bans(policy.key_wide_bans()))
            .await
    }

    fn status_verdict(
        policy: Arc<Policy>,
        rule: usize,
        resource: &str,
        decisions: Decisions,
    ) -> Verdict<'_> {
        let deciding = decisions.deciding();
        let decision = decisions.decision_of(deciding);
        Verdict {
            outcome: if decisions.banned_for_us().is_some() {
                Outcome::Banned
            } else if decision.remaining > 0 {
                Outcome::Allowed
            } else {
                Outcome::Denied
            },
            decision,
            decisions,
            deciding,
            policy,
            rule: RuleRef::InPolicy(rule),
            resource,
            reason: None,
            store_failed: false,
            factor_ppm: WHOLE,
            reduced_capacity: false,
        }
    }

    /// Forgets the key's state; true when it had any.
    pub async fn reset(&self, key: &str, resource: &str) -> Result<bool, LimiterError> {
        let policy = self.policy.load_full();
        let (rule, resource) = self.resolve(&policy, key, resource)?;
        Ok(self
            .store
            .reset(BucketKey { resource, key }, &rule.limits)
            .await?)
    }

    /// Lifts the key's ban on the resource (and its key-wide ban, if some rule bans
    /// key-wide); true when there was one. Its limit states stay.
    pub async fn lift_ban(&self, key: &str, resource: &str) -> Result<bool, LimiterError> {
        let policy = self.policy.load_full();
        let (rule, resource) = self.resolve(&policy, key, resource)?;
        Ok(self
            .store
            .lift_ban(
                BucketKey { resource, key },
                rule.bans(policy.key_wide_bans()),
            )
            .await?)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The keys denied or banned most over the last one to two minutes, most first: a
    /// space-saving sketch of [`TOP_DENIED_CAPACITY`] counters ([`HeavyHitters`]).
    pub fn top_denied(&self, limit: usize) -> Vec<Hitter> {
        let now_us = self.started.elapsed().as_micros() as u64;
        self.denied.lock().top(limit, now_us)
    }

    /// The policy requests are decided under now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Decides every request from now on under `rules` (from the configuration `version`):
    /// one swap, so no request sees a mix. Each key's state under a limit whose name and
    /// algorithm are unchanged carries over (the algorithm applies the new numbers to it); a
    /// new limit starts fresh, a removed one is forgotten ([`Store::remap`]).
    pub fn replace_rules(&self, rules: RuleSet, version: String) {
        let new = Arc::new(Policy::new(
            rules,
            &self.metrics,
            &self.controllers,
            self.failure.share(),
            version,
        ));
        let old = self.policy.load_full();
        let mut swap = || self.policy.store(new.clone());
        if old.rules().same_layouts(new.rules()) {
            swap();
        } else {
            let change: Arc<dyn Remapping> = Arc::new(PolicyChange {
                old,
                new: new.clone(),
            });
            if let Some(local) = &self.failure.local {
                local.remap(change.clone(), || {});
            }
            self.store.remap(change, &mut swap);
        }
        // A denial remembered under the old rules must not answer under the new ones (a raised
        // limit would stay denied until the cached retry-after).
        self.store.rules_changed();
        self.metrics
            .set_config_version(&new.version().id, new.version().loaded_at);
    }

    /// From now on, this node allows `share` of each limit alone while the store fails
    /// (`local` mode), e.g. 1 / the nodes alive: the policy is rebuilt with the same rules at
    /// that share; local states carry over (same layout, new numbers). Nothing changes for a
    /// store that cannot fail.
    pub fn set_fallback_share(&self, share: f64) {
        if self.failure.fallback_share.is_none() || !(share > 0.0 && share <= 1.0) {
            return;
        }
        let previous = self
            .failure
            .share_now
            .swap(share.to_bits(), std::sync::atomic::Ordering::AcqRel);
        if f64::from_bits(previous) == share {
            return;
        }
        let current = self.policy.load_full();
        self.policy.store(Arc::new(Policy::new(
            current.rules().clone(),
            &self.metrics,
            &self.controllers,
            Some(share),
            current.version().id.clone(),
        )));
        self.metrics.set_fallback_share(share);
        tracing::info!(share, "local failure mode: share of each limit changed");
    }

    /// Counts reports of the backend behind adaptive resources: each a resource, how long
    /// the backend took and whether it failed. All or none: a batch naming a resource that
    /// is not adaptive counts nothing.
    pub fn report(&self, reports: &[BackendReport<'_>]) -> Result<(), ReportError> {
        if reports.len() > MAX_REPORTS {
            return Err(ReportError::TooMany {
                count: reports.len(),
            });
        }
        let policy = self.policy.load();
        let mut controllers = Vec::with_capacity(reports.len());
        for (index, report) in reports.iter().enumerate() {
            let controller =
                policy
                    .controller(report.resource)
                    .ok_or_else(|| ReportError::NotAdaptive {
                        index,
                        resource: report.resource.chars().take(MAX_RESOURCE_BYTES).collect(),
                    })?;
            controllers.push(controller);
        }
        for (report, controller) in reports.iter().zip(controllers) {
            controller.record(report.latency_us, report.failed);
        }
        Ok(())
    }

    /// Hands each adaptive resource's counts to the store when due (a few times a window),
    /// and takes the factor the fleet shares back; the server calls it on a short tick.
    pub async fn flush_reports(&self) {
        let now_us = self.started.elapsed().as_micros() as u64;
        let mut changed = false;
        for controller in self.controllers.all() {
            if !controller.due(now_us) {
                continue;
            }
            let reported = controller.take();
            let policy = controller.policy();
            changed |= match self
                .store
                .adapt(
                    controller.resource(),
                    &policy.aimd,
                    policy.window_us,
                    reported,
                )
                .await
            {
                Ok(factor_ppm) => controller.settle(factor_ppm),
                Err(err) => {
                    tracing::debug!(resource = controller.resource(), %err, "adaptive factor on this node alone while the store fails");
                    controller.settle_alone(reported, now_us)
                }
            };
        }
        // A denial remembered at the old factor must not outlive it (the deny cache).
        if changed {
            self.store.rules_changed();
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text exposition, with gauges read from the store first.
    pub fn render_metrics(&self) -> String {
        if let Some(keys) = self.store.active_keys() {
            self.metrics.set_active_keys(keys);
        }
        if let Some(bans) = self.store.active_bans() {
            self.metrics.set_active_bans(bans);
        }
        self.metrics.render()
    }

    fn resolve<'p, 'a>(
        &self,
        policy: &'p Policy,
        key: &str,
        resource: &'a str,
    ) -> Result<(&'p Rule, &'a str), RequestError> {
        if key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(RequestError::KeyTooLong {
                len: key.len(),
                max: self.limits.max_key_bytes,
            });
        }
        let resource = if resource.is_empty() {
            DEFAULT_RESOURCE
        } else {
            resource
        };
        if resource.len() > MAX_RESOURCE_BYTES {
            return Err(RequestError::ResourceTooLong {
                len: resource.len(),
                max: MAX_RESOURCE_BYTES,
            });
        }
        if resource.starts_with(crate::rls::RESOURCE_PREFIX) {
            return Err(RequestError::ReservedResource);
        }
        let rule =
            policy
                .rules()
                .resolve(resource, key)
                .ok_or_else(|| RequestError::UnknownResource {
                    resource: resource.to_owned(),
                })?;
        Ok((rule, resource))
    }
}

//! The decision core, independent of any API: validates a request, finds its rule, asks the
//! store, and counts the outcome. gRPC, HTTP (and later Envoy RLS) are thin adapters over it.

use crate::{
    algorithm::{Algorithm, Decision},
    clock::Clock,
    config::{
        BackendConfig, Config, FailureMode, MemoryConfig, RedisConfig, RequestLimits,
        rule_config::MAX_RESOURCE_BYTES,
    },
    metrics::{Metrics, RuleMetrics},
    rules::{DEFAULT_RESOURCE, Rule, RuleSet},
    store::{BucketKey, MemoryStore, Store, StoreError},
};

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
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

/// A decision with the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict<'a> {
    pub outcome: Outcome,
    pub decision: Decision,
    pub rule: &'a Rule,
    /// The resource decided for (the request's, or [`DEFAULT_RESOURCE`]).
    pub resource: &'a str,
    /// Why the decision is not the store's own, when a failure mode made it.
    pub reason: Option<&'static str>,
}

impl Verdict<'_> {
    /// The window `limit` is restored over, for `RateLimit-Policy`.
    pub fn policy_window_us(&self) -> u64 {
        self.rule.algorithm.policy_window_us()
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
}

impl RequestError {
    /// The request field at fault, also a metrics label.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::EmptyKey | RequestError::KeyTooLong { .. } => "key",
            RequestError::ResourceTooLong { .. } | RequestError::UnknownResource { .. } => {
                "resource"
            }
            RequestError::ZeroCost | RequestError::CostAboveLimit { .. } => "cost",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    #[error(transparent)]
    Invalid(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Retry-after suggested when failing closed: about when the breaker probes the store again.
const STORE_DOWN_RETRY_US: u64 = 1_000_000;

/// How rules answer when the store fails.
#[derive(Debug)]
pub struct FailurePolicy {
    /// For rules without a `failure_mode` of their own.
    pub default_mode: FailureMode,
    /// The node-local limiter of `local` mode, if the store can fail at all.
    pub local: Option<LocalFallback>,
}

/// This node's memory, holding each rule scaled to its share of the limit.
#[derive(Debug)]
pub struct LocalFallback {
    pub store: MemoryStore,
    /// Indexed by rule id.
    pub algorithms: Vec<Algorithm>,
}

impl FailurePolicy {
    /// For a store that cannot fail (memory).
    pub fn infallible() -> Self {
        Self {
            default_mode: FailureMode::Deny,
            local: None,
        }
    }

    pub fn for_redis(config: &RedisConfig, rules: &RuleSet) -> Self {
        let memory = MemoryConfig {
            shards: 16,
            max_keys: 100_000,
            sweep_interval: std::time::Duration::from_secs(1),
        };
        Self {
            default_mode: config.failure_mode,
            local: Some(LocalFallback {
                store: MemoryStore::new(&memory, Clock::system()),
                algorithms: rules
                    .rules()
                    .iter()
                    .map(|rule| rule.algorithm.scaled(config.fallback_share))
                    .collect(),
            }),
        }
    }
}

#[derive(Debug)]
pub struct Limiter<S> {
    rules: RuleSet,
    rule_metrics: Vec<RuleMetrics>,
    limits: RequestLimits,
    store: S,
    metrics: Metrics,
    failure: FailurePolicy,
}

impl<S: Store> Limiter<S> {
    pub fn new(
        rules: RuleSet,
        limits: RequestLimits,
        store: S,
        metrics: Metrics,
        failure: FailurePolicy,
    ) -> Self {
        let rule_metrics = rules
            .rules()
            .iter()
            .map(|rule| metrics.for_rule(rule))
            .collect();
        Self {
            rules,
            rule_metrics,
            limits,
            store,
            metrics,
            failure,
        }
    }

    /// A limiter for `config` over `store`, recording into `metrics`.
    pub fn from_config(config: &Config, store: S, metrics: Metrics) -> Self {
        let failure = match &config.backend {
            BackendConfig::Memory(_) => FailurePolicy::infallible(),
            BackendConfig::Redis(redis) => FailurePolicy::for_redis(redis, &config.rules),
        };
        Self::new(config.rules.clone(), config.limits, store, metrics, failure)
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
        let (rule, resource) = self.resolve(request.key, request.resource)?;
        let cost = request.cost.unwrap_or(1);
        let limit = rule.algorithm.limit();
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
        let bucket = BucketKey {
            resource,
            key: request.key,
        };
        let decision = match self.store.check(bucket, &rule.algorithm, cost).await {
            Ok(decision) => {
                self.metrics.set_fallback_active(false);
                decision
            }
            Err(err) => return self.decide_without_store(rule, bucket, cost, err),
        };
        Ok(Verdict {
            outcome: self.count(rule, &decision),
            decision,
            rule,
            resource,
            reason: None,
        })
    }

    /// The rule's failure mode answers when the store could not.
    fn decide_without_store<'a>(
        &'a self,
        rule: &'a Rule,
        bucket: BucketKey<'a>,
        cost: u64,
        err: StoreError,
    ) -> Result<Verdict<'a>, LimiterError> {
        let mode = rule.failure_mode.unwrap_or(self.failure.default_mode);
        tracing::debug!(rule = %rule.name, error = %err, mode = mode.label(), "store failed");
        self.metrics.set_fallback_active(true);
        self.metrics.fallback_decision(mode.label());
        let limit = rule.algorithm.limit();
        let (decision, reason) = match (mode, &self.failure.local) {
            (FailureMode::Allow, _) => (
                Decision {
                    allowed: true,
                    limit,
                    remaining: limit - cost,
                    reset_after_us: 0,
                    retry_after_us: 0,
                },
                "store unavailable; failing open",
            ),
            (FailureMode::Local, Some(local)) => (
                local
                    .store
                    .check_now(bucket, &local.algorithms[rule.id], cost),
                "store unavailable; decided on this node's share of the limit",
            ),
            (FailureMode::Deny | FailureMode::Local, _) => (
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_after_us: 0,
                    retry_after_us: STORE_DOWN_RETRY_US,
                },
                "store unavailable",
            ),
        };
        Ok(Verdict {
            outcome: self.count(rule, &decision),
            decision,
            rule,
            resource: bucket.resource,
            reason: Some(reason),
        })
    }

    /// Counts a decision under its rule and names its outcome.
    fn count(&self, rule: &Rule, decision: &Decision) -> Outcome {
        let counters = &self.rule_metrics[rule.id];
        counters
            .remaining_ratio
            .observe(decision.remaining as f64 / decision.limit as f64);
        if decision.allowed {
            counters.allowed.inc();
            Outcome::Allowed
        } else {
            counters.denied.inc();
            Outcome::Denied
        }
    }

    /// Periodic upkeep: sweeps in-process state that is back to fresh.
    pub fn upkeep(&self) {
        self.store.upkeep();
        if let Some(local) = &self.failure.local {
            local.store.sweep_expired();
        }
    }

    /// The key's state now, consuming nothing.
    pub async fn status<'a>(
        &'a self,
        key: &str,
        resource: &'a str,
    ) -> Result<Verdict<'a>, LimiterError> {
        let (rule, resource) = self.resolve(key, resource)?;
        let decision = self
            .store
            .peek(BucketKey { resource, key }, &rule.algorithm)
            .await?;
        Ok(Verdict {
            outcome: if decision.remaining > 0 {
                Outcome::Allowed
            } else {
                Outcome::Denied
            },
            decision,
            rule,
            resource,
            reason: None,
        })
    }

    /// Forgets the key's state; true when it had any.
    pub async fn reset(&self, key: &str, resource: &str) -> Result<bool, LimiterError> {
        let (_, resource) = self.resolve(key, resource)?;
        Ok(self.store.reset(BucketKey { resource, key }).await?)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text exposition, with gauges read from the store first.
    pub fn render_metrics(&self) -> String {
        if let Some(keys) = self.store.active_keys() {
            self.metrics.set_active_keys(keys);
        }
        self.metrics.render()
    }

    fn resolve<'a>(
        &'a self,
        key: &str,
        resource: &'a str,
    ) -> Result<(&'a Rule, &'a str), RequestError> {
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
        let rule =
            self.rules
                .resolve(resource, key)
                .ok_or_else(|| RequestError::UnknownResource {
                    resource: resource.to_owned(),
                })?;
        Ok((rule, resource))
    }
}

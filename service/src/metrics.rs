//! Prometheus metrics, in a registry per server (so several servers can share a process).
//! No label ever carries a client key: every label value comes from configuration or code.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::rules::Rule;

/// Request latency buckets, 25 us to 1 s: a healthy in-memory decision sits at the bottom.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

/// Remaining quota as a fraction of the limit, after each allowed decision.
const REMAINING_RATIO_BUCKETS: &[f64] = &[0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    remaining_ratio: HistogramVec,
    request_duration: HistogramVec,
    invalid_requests: IntCounterVec,
    store_errors: IntCounterVec,
    active_keys: IntGauge,
    active_bans: IntGauge,
    store_latency: Histogram,
    circuit_state: IntGauge,
    deny_cache_hits: IntCounter,
    script_calls: IntCounter,
    fallback_decisions: IntCounterVec,
    fallback_active: IntGauge,
    bans_started: IntCounterVec,
    admin_requests: IntCounterVec,
    config_info: IntGaugeVec,
    config_reloads: IntCounterVec,
    config_loaded_at: prometheus::Gauge,
    connections_open: IntGaugeVec,
    connections_refused: IntCounterVec,
    central_version: IntGauge,
    near_limit: IntCounterVec,
    envoy_detailed: IntCounterVec,
    fallback_share: prometheus::Gauge,
    live_nodes: IntGauge,
}

/// One HTTP listener's connections: open now, and refused over its cap.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    pub open: IntGauge,
    pub refused: IntCounter,
}

/// Handles resolved once per rule, so the hot path never looks up a label set.
#[derive(Debug, Clone)]
pub struct RuleMetrics {
    pub allowed: IntCounter,
    pub denied: IntCounter,
    pub shadow_denied: IntCounter,
    pub banned: IntCounter,
    pub bans_started: IntCounter,
    pub remaining_ratio: Histogram,
    /// Allowed decisions that left more than the near-limit share of the limit spent (Envoy
    /// RLS decisions; `envoy.near_limit_ratio`).
    pub near_limit: IntCounter,
}

/// The API a request came through, a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Grpc,
    Http,
}

impl Api {
    pub fn label(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Http => "http",
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "sluice_decisions_total",
                "Rate-limit decisions by resource and outcome.",
            ),
            &["resource", "outcome"],
        )
        .expect("valid metric");
        let remaining_ratio = HistogramVec::new(
            HistogramOpts::new(
                "sluice_remaining_ratio",
                "Remaining quota divided by the limit, observed on each decision.",
            )
            .buckets(REMAINING_RATIO_BUCKETS.to_vec()),
            &["resource"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_request_duration_seconds",
                "Time to answer a request, by API and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["api", "method"],
        )
        .expect("valid metric");
        let invalid_requests = IntCounterVec::new(
            Opts::new(
                "sluice_invalid_requests_total",
                "Requests rejected as invalid, by API and field.",
            ),
            &["api", "field"],
        )
        .expect("valid metric");
        let store_errors = IntCounterVec::new(
            Opts::new(
                "sluice_store_errors_total",
                "Store operations that failed, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        // Every kind exists from the start at 0, so dashboards and alerts see "no errors"
        // rather than no data.
        for kind in crate::store::StoreError::KINDS {
            store_errors.with_label_values(&[kind]);
        }
        let active_keys = IntGauge::new(
            "sluice_active_keys",
            "Keys with state in the store (memory store only).",
        )
        .expect("valid metric");
        let active_bans = IntGauge::new(
            "sluice_active_bans",
            "Keys banned now, as of the last sweep (memory store only).",
        )
        .expect("valid metric");
        let store_latency = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_store_duration_seconds",
                "Time of one shared-store call.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let circuit_state = IntGauge::new(
            "sluice_store_circuit_state",
            "Store circuit breaker: 0 closed, 1 open, 2 half-open.",
        )
        .expect("valid metric");
        let deny_cache_hits = IntCounter::new(
            "sluice_deny_cache_hits_total",
            "Requests denied from the local deny cache without a store round trip.",
        )
        .expect("valid metric");
        let script_calls = IntCounter::new(
            "sluice_store_script_calls_total",
            "Decision scripts sent to the shared store.",
        )
        .expect("valid metric");
        let fallback_decisions = IntCounterVec::new(
            Opts::new(
                "sluice_fallback_decisions_total",
                "Decisions made by a failure mode because the store failed, by mode.",
            ),
            &["mode"],
        )
        .expect("valid metric");
        for mode in crate::rules::FailureMode::NAMES {
            fallback_decisions.with_label_values(&[mode]);
        }
        let fallback_active = IntGauge::new(
            "sluice_fallback_active",
            "1 while the last store call failed and failure modes are answering.",
        )
        .expect("valid metric");
        let bans_started = IntCounterVec::new(
            Opts::new(
                "sluice_bans_started_total",
                "Bans started for keys a rule kept denying, by resource.",
            ),
            &["resource"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "sluice_build_info",
                "Build of the running service; always 1.",
            ),
            &["version", "commit"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::BUILD_COMMIT])
            .set(1);
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "sluice_admin_requests_total",
                "Admin API requests by action and result (ok, invalid, error, unauthenticated, forbidden).",
            ),
            &["action", "result"],
        )
        .expect("valid metric");
        let config_info = IntGaugeVec::new(
            Opts::new(
                "sluice_config_info",
                "1 for the configuration version this node decides under (a hash of its text).",
            ),
            &["version"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "sluice_config_reloads_total",
                "Configuration reloads by result: applied, unchanged, invalid, refused (a change that needs a restart), unreadable.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_loaded_at = prometheus::Gauge::new(
            "sluice_config_last_reload_timestamp_seconds",
            "When the running rules were loaded, in Unix seconds.",
        )
        .expect("valid metric");
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "sluice_http_connections",
                "Connections open now, by listener (public and admin HTTP, grpc).",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "sluice_http_connections_refused_total",
                "Connections closed on arrival because the listener held its cap (server.http_max_connections, server.grpc_max_connections).",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let central_version = IntGauge::new(
            "sluice_central_rules_version",
            "The version of the central rules document this node last applied (0: none; rules_source.kind = \"redis\").",
        )
        .expect("valid metric");
        let near_limit = IntCounterVec::new(
            Opts::new(
                "sluice_near_limit_total",
                "Allowed Envoy RLS decisions that left more than envoy.near_limit_ratio of the limit spent, by resource.",
            ),
            &["resource"],
        )
        .expect("valid metric");
        let envoy_detailed = IntCounterVec::new(
            Opts::new(
                "sluice_envoy_detailed_decisions_total",
                "Envoy RLS decisions of detailed_metric descriptors, by descriptor value and outcome; past envoy.detailed_metric_max_series descriptors, counted under descriptor=\"_other_\".",
            ),
            &["descriptor", "outcome"],
        )
        .expect("valid metric");
        let fallback_share = prometheus::Gauge::new(
            "sluice_fallback_share",
            "The share of each limit this node allows alone while Redis fails (local failure mode).",
        )
        .expect("valid metric");
        let live_nodes = IntGauge::new(
            "sluice_live_nodes",
            "Nodes announced in Redis within the last few seconds (fallback_share = \"live\"), as this node last counted them.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(fallback_share.clone()),
            Box::new(live_nodes.clone()),
            Box::new(near_limit.clone()),
            Box::new(envoy_detailed.clone()),
            Box::new(remaining_ratio.clone()),
            Box::new(request_duration.clone()),
            Box::new(invalid_requests.clone()),
            Box::new(store_errors.clone()),
            Box::new(active_keys.clone()),
            Box::new(active_bans.clone()),
            Box::new(store_latency.clone()),
            Box::new(circuit_state.clone()),
            Box::new(deny_cache_hits.clone()),
            Box::new(script_calls.clone()),
            Box::new(fallback_decisions.clone()),
            Box::new(fallback_active.clone()),
            Box::new(bans_started.clone()),
            Box::new(admin_requests.clone()),
            Box::new(config_info.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_loaded_at.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(central_version.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            decisions,
            remaining_ratio,
            request_duration,
            invalid_requests,
            store_errors,
            active_keys,
            active_bans,
            store_latency,
            circuit_state,
            deny_cache_hits,
            script_calls,
            fallback_decisions,
            fallback_active,
            bans_started,
            admin_requests,
            config_info,
            config_reloads,
            config_loaded_at,
            connections_open,
            connections_refused,
            central_version,
            near_limit,
            envoy_detailed,
            fallback_share,
            live_nodes,
        }
    }

    /// Adds a metric family another module owns (adaptive limits' own).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric names are unique");
    }

    pub fn set_fallback_share(&self, share: f64) {
        self.fallback_share.set(share);
    }

    pub fn set_live_nodes(&self, nodes: u64) {
        self.live_nodes.set(nodes as i64);
    }

    /// The central rules document's version this node runs.
    pub fn set_central_version(&self, version: u64) {
        self.central_version.set(version as i64);
    }

    /// The handles of one HTTP listener (`public` or `admin`).
    pub fn connections(&self, listener: &str) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.connections_open.with_label_values(&[listener]),
            refused: self.connections_refused.with_label_values(&[listener]),
        }
    }

    /// The version now running, and when it was loaded; the previous version's series goes.
    pub fn set_config_version(&self, version: &str, loaded_at: std::time::SystemTime) {
        self.config_info.reset();
        self.config_info.with_label_values(&[version]).set(1);
        let seconds = loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        self.config_loaded_at.set(seconds);
    }

    /// One reload attempt; `result` is one of the documented results, from code.
    pub fn config_reload(&self, result: &str) {
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// One admin request: `action` is a route's name, from code, never from the request.
    pub fn admin_request(&self, action: &str, result: &str) {
        self.admin_requests
            .with_label_values(&[action, result])
            .inc();
    }

    /// An admin request refused before it reached an action.
    pub fn admin_refused(&self, result: &str) {
        self.admin_request("any", result);
    }

    /// The handles the Redis store records into.
    pub fn redis(&self) -> crate::store::RedisMetrics {
        crate::store::RedisMetrics {
            latency: self.store_latency.clone(),
            errors: self.store_errors.clone(),
            circuit_state: self.circuit_state.clone(),
            deny_cache_hits: self.deny_cache_hits.clone(),
            script_calls: self.script_calls.clone(),
        }
    }

    pub fn fallback_decision(&self, mode: &str) {
        self.fallback_decisions.with_label_values(&[mode]).inc();
    }

    pub fn set_fallback_active(&self, active: bool) {
        self.fallback_active.set(i64::from(active));
    }

    pub fn for_rule(&self, rule: &Rule) -> RuleMetrics {
        self.for_label(&rule.resource_label)
    }

    /// The handles of rules counted under the `resource` label `resource`.
    pub fn for_label(&self, resource: &str) -> RuleMetrics {
        RuleMetrics {
            allowed: self.decisions.with_label_values(&[resource, "allowed"]),
            denied: self.decisions.with_label_values(&[resource, "denied"]),
            shadow_denied: self
                .decisions
                .with_label_values(&[resource, "shadow_denied"]),
            banned: self.decisions.with_label_values(&[resource, "banned"]),
            bans_started: self.bans_started.with_label_values(&[resource]),
            remaining_ratio: self.remaining_ratio.with_label_values(&[resource]),
            near_limit: self.near_limit.with_label_values(&[resource]),
        }
    }

    /// Counts a decision of a `detailed_metric` descriptor under its own series; the caller
    /// bounds how many distinct descriptors it passes ([`DetailedSeries`]).
    pub fn envoy_detailed(&self, descriptor: &str, outcome: &str) {
        self.envoy_detailed
            .with_label_values(&[descriptor, outcome])
            .inc();
    }

    pub fn request_duration(&self, api: Api, method: &str) -> Histogram {
        self.request_duration
            .with_label_values(&[api.label(), method])
    }

    pub fn invalid_request(&self, api: Api, field: &str) {
        self.invalid_requests
            .with_label_values(&[api.label(), field])
            .inc();
    }

    pub fn set_active_keys(&self, keys: u64) {
        self.active_keys.set(keys as i64);
    }

    pub fn set_active_bans(&self, bans: u64) {
        self.active_bans.set(bans as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The descriptors given series of their own, at most `cap`: envoyproxy/ratelimit's detailed
/// metrics grow without bound (its issues #275, #1132); here the first `cap` distinct
/// descriptors keep theirs and every later one shares [`DetailedSeries::OTHER`].
#[derive(Debug)]
pub struct DetailedSeries {
    cap: usize,
    admitted: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl DetailedSeries {
    pub const OTHER: &'static str = "_other_";

    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            admitted: parking_lot::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The label to count `descriptor` under.
    pub fn label<'a>(&self, descriptor: &'a str) -> &'a str {
        let mut admitted = self.admitted.lock();
        if admitted.contains(descriptor) {
            return descriptor;
        }
        if admitted.len() < self.cap {
            admitted.insert(descriptor.to_owned());
            return descriptor;
        }
        Self::OTHER
    }
}

//! A node's side of adaptive limits: per adaptive resource, a [`Controller`] counts the
//! reports callers send (lock-free: three atomic counters) and holds the factor the resource's
//! rules are scaled by now. Every quarter window the node hands its counts to the store, which
//! merges every node's into one shared state ([`crate::store::Store::adapt`]) and answers the
//! factor; while the store fails, the node moves a factor of its own on its own reports.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
};

use super::{AdaptivePolicy, Shared, WHOLE, Window};
use crate::metrics::Metrics;

/// Reported backend latency buckets, 1 ms to 10 s.
const BACKEND_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How many times a window a node hands its counts to the store (and reads the factor back).
pub const FLUSHES_PER_WINDOW: u64 = 4;

/// One resource's controller on this node.
#[derive(Debug)]
pub struct Controller {
    resource: String,
    policy: AdaptivePolicy,
    reports: AtomicU64,
    errors: AtomicU64,
    slow: AtomicU64,
    factor_ppm: AtomicU64,
    /// When this node next hands its counts over, in the caller's microseconds.
    next_flush_us: AtomicU64,
    /// The node's own state while the store fails.
    alone: Mutex<Option<Shared>>,
    metrics: ControllerMetrics,
}

#[derive(Debug)]
struct ControllerMetrics {
    factor: Gauge,
    succeeded: IntCounter,
    failed: IntCounter,
    latency: Histogram,
    reduced_denials: IntCounter,
}

impl Controller {
    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn policy(&self) -> &AdaptivePolicy {
        &self.policy
    }

    /// Counts one report of the backend: how long it took, and whether it failed.
    pub fn record(&self, latency_us: u64, failed: bool) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.metrics.failed.inc();
        } else {
            self.metrics.succeeded.inc();
        }
        if latency_us > self.policy.aimd.target_latency_us {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.latency.observe(latency_us as f64 / 1e6);
    }

    /// The factor the resource's limits are scaled by now, in parts per million.
    pub fn factor_ppm(&self) -> u64 {
        self.factor_ppm.load(Ordering::Acquire)
    }

    /// Counts a denial the reduced factor caused.
    pub fn count_reduced_denial(&self) {
        self.metrics.reduced_denials.inc();
    }

    /// Whether the counts are due at the store at `now_us`; when they are, the next flush is
    /// a quarter window on.
    pub fn due(&self, now_us: u64) -> bool {
        let next = self.next_flush_us.load(Ordering::Acquire);
        let period = (self.policy.window_us / FLUSHES_PER_WINDOW).max(1);
        now_us >= next
            && self
                .next_flush_us
                .compare_exchange(next, now_us + period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The counts since the last call, which start again from zero.
    pub fn take(&self) -> Window {
        Window {
            reports: self.reports.swap(0, Ordering::AcqRel),
            errors: self.errors.swap(0, Ordering::AcqRel),
            slow: self.slow.swap(0, Ordering::AcqRel),
        }
    }

    /// Takes the factor the store answered; true when it changed.
    pub fn settle(&self, factor_ppm: u64) -> bool {
        let factor_ppm = factor_ppm.clamp(self.policy.aimd.floor_ppm, WHOLE);
        self.metrics.factor.set(factor_ppm as f64 / WHOLE as f64);
        // The node's own state starts from the fleet's when the store fails next.
        *self.alone.lock() = None;
        self.factor_ppm.swap(factor_ppm, Ordering::AcqRel) != factor_ppm
    }

    /// The store failed: moves this node's own factor on `reported` at `now_us`; true when it
    /// changed.
    pub fn settle_alone(&self, reported: Window, now_us: u64) -> bool {
        let mut alone = self.alone.lock();
        let start = alone.unwrap_or(Shared {
            epoch: now_us / self.policy.window_us.max(1),
            counting: Window::default(),
            factor_ppm: self.factor_ppm(),
        });
        let merged = self
            .policy
            .aimd
            .merge(Some(start), now_us, self.policy.window_us, reported);
        *alone = Some(merged);
        drop(alone);
        self.metrics
            .factor
            .set(merged.factor_ppm as f64 / WHOLE as f64);
        self.factor_ppm.swap(merged.factor_ppm, Ordering::AcqRel) != merged.factor_ppm
    }
}

/// Every adaptive resource's controller, kept across reloads: a resource that stays adaptive
/// keeps its factor (and, with unchanged parameters, its counts).
#[derive(Debug)]
pub struct Controllers {
    current: Mutex<HashMap<String, Arc<Controller>>>,
    factor: GaugeVec,
    reports: IntCounterVec,
    latency: HistogramVec,
    reduced_denials: IntCounterVec,
}

impl Controllers {
    pub fn new(metrics: &Metrics) -> Self {
        let factor = GaugeVec::new(
            Opts::new(
                "sluice_adaptive_factor",
                "The factor each adaptive resource's limits are scaled by now (1: as configured).",
            ),
            &["resource"],
        )
        .expect("valid metric");
        let reports = IntCounterVec::new(
            Opts::new(
                "sluice_backend_reports_total",
                "Backend reports received for adaptive resources, by resource and result (ok, error).",
            ),
            &["resource", "result"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sluice_backend_latency_seconds",
                "Backend latency as callers reported it, by adaptive resource.",
            )
            .buckets(BACKEND_LATENCY_BUCKETS.to_vec()),
            &["resource"],
        )
        .expect("valid metric");
        let reduced_denials = IntCounterVec::new(
            Opts::new(
                "sluice_reduced_capacity_denials_total",
                "Denials the adaptive factor caused (the configured limit would have allowed them), by resource.",
            ),
            &["resource"],
        )
        .expect("valid metric");
        metrics.register(Box::new(factor.clone()));
        metrics.register(Box::new(reports.clone()));
        metrics.register(Box::new(latency.clone()));
        metrics.register(Box::new(reduced_denials.clone()));
        Self {
            current: Mutex::default(),
            factor,
            reports,
            latency,
            reduced_denials,
        }
    }

    /// The controllers of the `adaptive` resources (each with its policy), from now on: a
    /// resource already adaptive keeps its controller (or, with new parameters, its factor).
    pub fn sync<'a>(
        &self,
        adaptive: impl Iterator<Item = (&'a str, &'a AdaptivePolicy)>,
    ) -> HashMap<String, Arc<Controller>> {
        let mut current = self.current.lock();
        let next: HashMap<String, Arc<Controller>> = adaptive
            .map(|(resource, policy)| {
                let kept = current.get(resource);
                let controller = match kept {
                    Some(kept) if kept.policy == *policy => kept.clone(),
                    _ => Arc::new(self.controller(
                        resource,
                        *policy,
                        kept.map_or(WHOLE, |kept| kept.factor_ppm()),
                    )),
                };
                (resource.to_owned(), controller)
            })
            .collect();
        for resource in current
            .keys()
            .filter(|resource| !next.contains_key(*resource))
        {
            let _ = self.factor.remove_label_values(&[resource]);
        }
        current.clone_from(&next);
        next
    }

    /// Every controller now.
    pub fn all(&self) -> Vec<Arc<Controller>> {
        self.current.lock().values().cloned().collect()
    }

    fn controller(&self, resource: &str, policy: AdaptivePolicy, factor_ppm: u64) -> Controller {
        let factor_ppm = factor_ppm.clamp(policy.aimd.floor_ppm, WHOLE);
        let factor = self.factor.with_label_values(&[resource]);
        factor.set(factor_ppm as f64 / WHOLE as f64);
        Controller {
            resource: resource.to_owned(),
            policy,
            reports: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            factor_ppm: AtomicU64::new(factor_ppm),
            next_flush_us: AtomicU64::new(0),
            alone: Mutex::new(None),
            metrics: ControllerMetrics {
                factor,
                succeeded: self.reports.with_label_values(&[resource, "ok"]),
                failed: self.reports.with_label_values(&[resource, "error"]),
                latency: self.latency.with_label_values(&[resource]),
                reduced_denials: self.reduced_denials.with_label_values(&[resource]),
            },
        }
    }
}

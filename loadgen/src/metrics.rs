//! The generator's own Prometheus metrics (`--metrics-addr`): the client's view of latency
//! and outcomes, so dashboards can show it next to the service's.

use std::net::SocketAddr;

use axum::{Router, routing::get};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::stats::Outcome;

const OUTCOMES: [&str; 5] = ["allowed", "denied", "banned", "shadow_denied", "error"];
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Handles resolved per target and outcome before the run, so recording is a few atomics.
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    registry: Registry,
    requests: Vec<[IntCounter; OUTCOMES.len()]>,
    latency: [Histogram; OUTCOMES.len()],
    lag: Histogram,
}

impl ClientMetrics {
    pub fn new(targets: &[String]) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "loadgen_requests_total",
                "Requests completed, by target and outcome.",
            ),
            &["target", "outcome"],
        )
        .expect("valid metric");
        let latency = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "loadgen_request_duration_seconds",
                "Latency from the intended send time, by outcome.",
            )
            .buckets(BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        let lag = Histogram::with_opts(
            HistogramOpts::new(
                "loadgen_send_lag_seconds",
                "How late requests were sent against the schedule.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique");
        registry
            .register(Box::new(latency.clone()))
            .expect("unique");
        registry.register(Box::new(lag.clone())).expect("unique");
        Self {
            requests: targets
                .iter()
                .map(|target| {
                    OUTCOMES.map(|outcome| requests.with_label_values(&[target, outcome]))
                })
                .collect(),
            latency: OUTCOMES.map(|outcome| latency.with_label_values(&[outcome])),
            lag,
            registry,
        }
    }

    pub fn observe(&self, target: usize, outcome: Outcome, latency_us: u64, lag_us: u64) {
        let index = match outcome {
            Outcome::Allowed => 0,
            Outcome::Denied => 1,
            Outcome::Banned => 2,
            Outcome::ShadowDenied => 3,
            Outcome::Error(_) => 4,
        };
        self.requests[target][index].inc();
        self.latency[index].observe(latency_us as f64 / 1e6);
        self.lag.observe(lag_us as f64 / 1e6);
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Serves `/metrics` on `addr` until the process ends.
    pub async fn serve(self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = Router::new().route("/metrics", get(move || async move { self.render() }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(bound)
    }
}

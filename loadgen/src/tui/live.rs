//! What the live screen shows, as plain data: built from a running [`Run`] (and the services'
//! /metrics) by [`Tracker`], or by hand in tests, then drawn by `view`.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::{
    engine::Run,
    scrape::{get_text, metric_sum},
    stats::{Counts, Interval, interval_histogram},
};

/// Lag past this is the generator falling behind its schedule, not scheduling noise.
pub const LAG_BOTTLENECK_MS: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Finished,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThroughputPoint {
    /// Seconds since the run started.
    pub t: f64,
    /// Requests per second.
    pub allowed: f64,
    pub denied: f64,
    pub errors: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyPoint {
    pub t: f64,
    /// Milliseconds, from the intended send time.
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    pub url: String,
    pub rate: f64,
    pub errors: u64,
    pub p99_ms: f64,
}

/// One service's own counters, from its /metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceCounts {
    pub allowed: u64,
    pub denied: u64,
    pub store_errors: u64,
    pub fallback_active: bool,
}

impl ServiceCounts {
    pub fn parse(metrics_text: &str) -> Self {
        let decisions = |outcome| {
            metric_sum(
                metrics_text,
                "sluice_decisions_total",
                &[("outcome", outcome)],
            ) as u64
        };
        Self {
            allowed: decisions("allowed"),
            denied: decisions("denied"),
            store_errors: metric_sum(metrics_text, "sluice_store_errors_total", &[]) as u64,
            fallback_active: metric_sum(metrics_text, "sluice_fallback_active", &[]) > 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub url: String,
    pub counts: Result<ServiceCounts, String>,
}

/// Everything on the live screen.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveView {
    /// The key space, e.g. `200 keys zipf:1.1`.
    pub title: String,
    pub state: RunState,
    pub elapsed: Duration,
    pub duration: Duration,
    /// The open model's rate now; `None` in the closed model.
    pub rate: Option<f64>,
    pub totals: Counts,
    pub throughput: Vec<ThroughputPoint>,
    pub latency: Vec<LatencyPoint>,
    /// Percentiles of the last few seconds, in milliseconds.
    pub percentiles: Vec<(&'static str, f64)>,
    pub targets: Vec<TargetRow>,
    pub top_denied: Vec<(String, u64)>,
    /// The open model's send lag over the last few seconds (zero in the closed model).
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub service: Vec<ServiceRow>,
    /// The last thing a key did (saved a report, reset the keys, ...).
    pub message: String,
}

impl LiveView {
    pub fn is_bottleneck(&self) -> bool {
        self.lag_p99_ms > LAG_BOTTLENECK_MS
    }
}

/// The percentiles the live table shows.
pub const TABLE: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
];

/// How many of the latest intervals are re-read each frame: workers add an interval when they
/// move past it, so the newest ones still grow for a while.
const REREAD: usize = 6;
/// The window of the percentile table, target rows and lag gauge, in intervals.
const RECENT: usize = 10;

fn ms(histogram: &Histogram<u32>, percentile: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_percentile(percentile) as f64 / 1e3
    }
}

/// Follows a run's timeline frame by frame without copying all of it each time.
pub struct Tracker {
    interval_s: f64,
    targets: Vec<String>,
    counts: Vec<Counts>,
    per_target: Vec<Vec<(u64, u64)>>,
    throughput: Vec<ThroughputPoint>,
    latency: Vec<LatencyPoint>,
    recent: Vec<Interval>,
    top_denied: Vec<(String, u64)>,
    top_denied_at: Option<Instant>,
}

impl Tracker {
    pub fn new(run: &Run) -> Self {
        let config = run.config();
        Self {
            interval_s: config.interval.as_secs_f64(),
            targets: config.targets.iter().map(|t| t.url.clone()).collect(),
            counts: Vec::new(),
            per_target: Vec::new(),
            throughput: Vec::new(),
            latency: Vec::new(),
            recent: Vec::new(),
            top_denied: Vec::new(),
            top_denied_at: None,
        }
    }

    /// Reads what changed since the last frame.
    pub fn update(&mut self, run: &Run) {
        let from = run
            .timeline_len()
            .saturating_sub(REREAD)
            .min(self.counts.len());
        let fresh = run.timeline_since(from);
        self.counts.truncate(from);
        self.per_target.truncate(from);
        self.throughput.truncate(from);
        self.latency.truncate(from);
        for (offset, interval) in fresh.iter().enumerate() {
            let index = from + offset;
            let t = (index + 1) as f64 * self.interval_s;
            let per_second = |n: u64| n as f64 / self.interval_s;
            let counts = interval.counts;
            self.counts.push(counts);
            self.per_target.push(interval.per_target.clone());
            self.throughput.push(ThroughputPoint {
                t,
                // Shadow-denied requests went through; banned ones were refused.
                allowed: per_second(counts.allowed + counts.shadow_denied),
                denied: per_second(counts.denied + counts.banned),
                errors: per_second(counts.errors()),
            });
            self.latency.push(LatencyPoint {
                t,
                p50: interval.p50_us as f64 / 1e3,
                p95: interval.p95_us as f64 / 1e3,
                p99: interval.p99_us as f64 / 1e3,
            });
        }
        self.recent = run.timeline_recent(RECENT);
        if self
            .top_denied_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.top_denied = top_denied(run, 5);
            self.top_denied_at = Some(Instant::now());
        }
    }

    /// The screen as of the last update.
    pub fn view(&self, run: &Run, service: Vec<ServiceRow>, message: String) -> LiveView {
        let config = run.config();
        let mut latency = interval_histogram();
        let mut lag = interval_histogram();
        let mut target_latency: Vec<Histogram<u32>> =
            self.targets.iter().map(|_| interval_histogram()).collect();
        let mut target_requests = vec![0u64; self.targets.len()];
        for interval in &self.recent {
            let _ = latency.add(&interval.latency);
            let _ = lag.add(&interval.lag);
            for (i, share) in interval.per_target.iter().enumerate() {
                let _ = target_latency[i].add(&share.latency);
                target_requests[i] += share.requests;
            }
        }
        let window_s = (self.recent.len().max(1) as f64 * self.interval_s).max(f64::EPSILON);
        let mut totals = Counts::default();
        for counts in &self.counts {
            totals.merge(counts);
        }
        let mut percentiles: Vec<(&'static str, f64)> = TABLE
            .iter()
            .map(|&(name, percentile)| (name, ms(&latency, percentile)))
            .collect();
        percentiles.push(("max", latency.max() as f64 / 1e3));
        let state = if run.is_done() {
            RunState::Finished
        } else if run.is_paused() {
            RunState::Paused
        } else {
            RunState::Running
        };
        // Points still filling are left off the charts: a half-counted interval is a false dip.
        let complete = self
            .throughput
            .len()
            .min((run.elapsed().as_secs_f64() / self.interval_s) as usize)
            .saturating_sub(1);
        let complete = if state == RunState::Finished {
            self.throughput.len()
        } else {
            complete
        };
        LiveView {
            title: format!(
                "{} key{} {}",
                config.keys,
                if config.keys == 1 { "" } else { "s" },
                config.distribution
            ),
            state,
            elapsed: run.elapsed(),
            duration: config.send_window(),
            rate: run.rate(),
            totals,
            throughput: self.throughput[..complete].to_vec(),
            latency: self.latency[..complete].to_vec(),
            percentiles,
            targets: self
                .targets
                .iter()
                .enumerate()
                .map(|(i, url)| TargetRow {
                    url: url.clone(),
                    rate: target_requests[i] as f64 / window_s,
                    errors: self.per_target.iter().map(|shares| shares[i].1).sum(),
                    p99_ms: ms(&target_latency[i], 99.0),
                })
                .collect(),
            top_denied: self.top_denied.clone(),
            lag_p50_ms: ms(&lag, 50.0),
            lag_p99_ms: ms(&lag, 99.0),
            service,
            message,
        }
    }
}

/// The `count` keys denied most often so far.
fn top_denied(run: &Run, count: usize) -> Vec<(String, u64)> {
    let mut top: Vec<(usize, u64)> = Vec::with_capacity(count + 1);
    for (index, key) in run.ledger().iter().enumerate() {
        let denied = key.denied.load(Ordering::Relaxed);
        if denied == 0 || top.len() == count && top[count - 1].1 >= denied {
            continue;
        }
        let at = top.partition_point(|&(_, d)| d >= denied);
        top.insert(at, (index, denied));
        top.truncate(count);
    }
    top.into_iter()
        .map(|(index, denied)| (run.keys().name(index).to_owned(), denied))
        .collect()
}

/// Scrapes each service's /metrics once a second in the background.
pub struct ServiceWatch {
    rows: Arc<Mutex<Vec<ServiceRow>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServiceWatch {
    pub fn start(urls: Vec<String>, runtime: &tokio::runtime::Handle) -> Self {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let shared = rows.clone();
        let task = runtime.spawn(async move {
            if urls.is_empty() {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let mut fresh = Vec::with_capacity(urls.len());
                for url in &urls {
                    let counts = tokio::time::timeout(Duration::from_millis(800), get_text(url))
                        .await
                        .map_err(|_| "no answer within 800 ms".to_string())
                        .and_then(|page| page.map_err(|err| err.to_string()))
                        .map(|page| ServiceCounts::parse(&page));
                    fresh.push(ServiceRow {
                        url: url.clone(),
                        counts,
                    });
                }
                *shared.lock() = fresh;
            }
        });
        Self { rows, task }
    }

    pub fn rows(&self) -> Vec<ServiceRow> {
        self.rows.lock().clone()
    }
}

impl Drop for ServiceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_counters_are_read_from_a_metrics_page() {
        let page = "sluice_decisions_total{outcome=\"allowed\",resource=\"*\"} 7\n\
                    sluice_decisions_total{outcome=\"denied\",resource=\"*\"} 3\n\
                    sluice_decisions_total{outcome=\"allowed\",resource=\"api\"} 2\n\
                    sluice_store_errors_total{kind=\"timeout\"} 4\n\
                    sluice_store_errors_total{kind=\"unavailable\"} 1\n\
                    sluice_fallback_active 1\n";
        assert_eq!(
            ServiceCounts::parse(page),
            ServiceCounts {
                allowed: 9,
                denied: 3,
                store_errors: 5,
                fallback_active: true,
            }
        );
        assert!(!ServiceCounts::parse("sluice_fallback_active 0\n").fallback_active);
    }
}

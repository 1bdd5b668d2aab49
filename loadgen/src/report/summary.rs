//! `summary.json`: the stable, versioned record of one run. Reports and charts are rebuilt from
//! it (and `latency.hgrm`), and `loadgen compare` reads it.

use std::time::UNIX_EPOCH;

use hdrhistogram::{Counter, Histogram};
use serde::{Deserialize, Serialize};

use super::faults::FaultRecord;
use crate::{
    engine::{LoadModel, RunResult},
    ledger::LedgerReport,
    stats::Counts,
};

pub const SCHEMA: &str = "sluice-loadgen/summary";
/// 2: shadow-denied outcomes (`totals.shadow_denied`, `ledger.shadow_denied`), banned answers
/// read from HTTP 403. 3: the open model's send lag in full (`generator.lag_ms`). 4: a chaos
/// run's `faults`.
pub const SCHEMA_VERSION: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema: String,
    pub schema_version: u32,
    pub provenance: Provenance,
    pub config: ConfigSummary,
    pub totals: Counts,
    pub measured_s: f64,
    pub throughput_rps: f64,
    pub latency_ms: LatencySummary,
    pub generator: GeneratorSummary,
    pub targets: Vec<TargetSummary>,
    pub interval_s: f64,
    pub timeline: Vec<TimelinePoint>,
    pub ledger: Option<LedgerReport>,
    /// A chaos run's faults (`loadgen chaos`), each with the outcomes around it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub command: String,
    pub commit: String,
    pub loadgen_version: String,
    pub started_at_unix_ms: u64,
    pub machine: Machine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub os: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub targets: Vec<String>,
    pub model: String,
    pub rate: Option<f64>,
    pub workers: usize,
    pub connections: usize,
    pub requests: Option<u64>,
    pub duration_s: Option<f64>,
    pub warmup_s: f64,
    pub keys: usize,
    pub distribution: String,
    pub resource: String,
    /// Envoy RLS runs: the domain and descriptors every request asked (`{key}` for the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rls: Option<String>,
    pub cost: u64,
    pub timeout_ms: f64,
    pub retries: u32,
    pub seed: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of<T: Counter>(histogram: &Histogram<T>) -> Self {
        let ms = |us: u64| us as f64 / 1e3;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean: histogram.mean() / 1e3,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// From the intended send time: the honest figure.
    pub all: Percentiles,
    pub allowed: Percentiles,
    pub denied: Percentiles,
    /// From the actual send time: what a closed-loop tool would show.
    pub uncorrected: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorSummary {
    /// Open model: how late each request left after its intended send time (empty in the
    /// closed model, which has no schedule).
    #[serde(default)]
    pub lag_ms: Percentiles,
    /// `lag_ms.p99` and `lag_ms.max`, kept for readers of schema versions 1 and 2.
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub missed_sends: u64,
    /// Set when the generator, not the service, limited the run.
    pub bottleneck_warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub url: String,
    pub counts: Counts,
    pub throughput_rps: f64,
    pub latency_ms: Percentiles,
    pub last: Option<LastDecision>,
}

/// The most recent metadata a target returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDecision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_ms: f64,
    pub retry_after_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub per_target: Vec<u64>,
}

/// Decides whether the generator held the run back: it fell behind its schedule (lag or
/// missed sends) while the service itself answered quickly.
fn bottleneck(
    lag: &Percentiles,
    uncorrected: &Percentiles,
    missed: u64,
    due: u64,
) -> Option<String> {
    let behind = lag.p99 > 10.0_f64.max(2.0 * uncorrected.p99) || missed as f64 > 0.01 * due as f64;
    behind.then(|| {
        format!(
            "THE GENERATOR IS THE BOTTLENECK: it sent late (lag p99 {:.1} ms, {missed} sends missed) while the service answered in p99 {:.1} ms; raise --workers or --connections, or lower --rate",
            lag.p99, uncorrected.p99
        )
    })
}

impl Summary {
    pub fn from_run(result: &RunResult, command: String, ledger: Option<LedgerReport>) -> Self {
        let config = &result.config;
        let recorder = &result.recorder;
        let measured_s = result.measured.as_secs_f64().max(1e-9);
        let (model, rate, workers) = match &config.model {
            LoadModel::Closed { concurrency } => ("closed", None, *concurrency),
            LoadModel::Open { schedule, workers } => ("open", schedule.rate(), *workers),
        };
        let uncorrected = Percentiles::of(&recorder.uncorrected);
        let lag = Percentiles::of(&recorder.lag);
        let interval_s = config.interval.as_secs_f64();
        Summary {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            provenance: Provenance {
                command,
                commit: super::git_commit(),
                loadgen_version: env!("CARGO_PKG_VERSION").into(),
                started_at_unix_ms: result
                    .started_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                machine: Machine::current(),
            },
            config: ConfigSummary {
                targets: config.targets.iter().map(|t| t.url.clone()).collect(),
                model: model.into(),
                rate,
                workers,
                connections: config.connections,
                requests: config.requests,
                duration_s: config.duration.map(|d| d.as_secs_f64()),
                warmup_s: config.warmup.as_secs_f64(),
                keys: config.keys,
                distribution: config.distribution.to_string(),
                resource: config.resource.clone(),
                rls: config.rls.as_ref().map(ToString::to_string),
                cost: config.cost,
                timeout_ms: config.timeout.as_secs_f64() * 1e3,
                retries: config.retries,
                seed: config.seed,
            },
            totals: recorder.counts,
            measured_s,
            throughput_rps: recorder.counts.total() as f64 / measured_s,
            latency_ms: LatencySummary {
                all: Percentiles::of(&recorder.corrected.all),
                allowed: Percentiles::of(&recorder.corrected.allowed),
                denied: Percentiles::of(&recorder.corrected.denied),
                uncorrected,
            },
            generator: GeneratorSummary {
                lag_ms: lag,
                lag_p99_ms: lag.p99,
                lag_max_ms: lag.max,
                missed_sends: result.missed_sends,
                bottleneck_warning: bottleneck(
                    &lag,
                    &uncorrected,
                    result.missed_sends,
                    recorder.counts.total(),
                ),
            },
            targets: config
                .targets
                .iter()
                .zip(&recorder.targets)
                .map(|(endpoint, record)| TargetSummary {
                    url: endpoint.url.clone(),
                    counts: record.counts,
                    throughput_rps: record.counts.total() as f64 / measured_s,
                    latency_ms: Percentiles::of(&record.latency),
                    last: record.last.map(|(_, answer)| LastDecision {
                        allowed: answer.allowed,
                        limit: answer.limit,
                        remaining: answer.remaining,
                        reset_after_ms: answer.reset_after_us as f64 / 1e3,
                        retry_after_ms: answer.retry_after_us as f64 / 1e3,
                    }),
                })
                .collect(),
            interval_s,
            timeline: result
                .timeline
                .iter()
                .enumerate()
                .map(|(index, interval)| TimelinePoint {
                    t_s: (index + 1) as f64 * interval_s,
                    allowed: interval.counts.allowed,
                    denied: interval.counts.denied + interval.counts.banned,
                    errors: interval.counts.errors(),
                    p50_ms: interval.p50_us as f64 / 1e3,
                    p95_ms: interval.p95_us as f64 / 1e3,
                    p99_ms: interval.p99_us as f64 / 1e3,
                    per_target: interval.per_target.iter().map(|t| t.0).collect(),
                })
                .collect(),
            ledger,
            faults: Vec::new(),
        }
    }
}

impl Machine {
    pub fn current() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split(':').nth(1))
            .map_or_else(|| "unknown".into(), |model| model.trim().to_owned());
        Machine {
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            os: format!(
                "{} {}",
                std::env::consts::OS,
                read("/proc/sys/kernel/osrelease").trim()
            ),
        }
    }
}

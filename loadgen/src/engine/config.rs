//! What a run is asked to do: its targets, load model, bounds and keys, and the check that
//! names every problem with a flag before anything is sent.

use std::time::Duration;

use crate::{
    admin::AdminAccess,
    client::{rls::RlsTemplate, socket::TlsOptions},
    keys::Distribution,
    metrics::ClientMetrics,
    schedule::Schedule,
    wire::{Call, Endpoint, Protocol},
};

/// The longest run the generator accepts, whatever the flags say.
pub const MAX_RUN: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub enum LoadModel {
    /// `concurrency` workers, each sending as soon as its last request completes.
    Closed { concurrency: usize },
    /// Requests due on `schedule`, sent by up to `workers` requests in flight.
    Open { schedule: Schedule, workers: usize },
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub targets: Vec<Endpoint>,
    /// How `grpcs://` and `https://` targets are verified.
    pub tls: TlsOptions,
    /// gRPC: HTTP/2 connections per target (HTTP: one connection per worker).
    pub connections: usize,
    pub model: LoadModel,
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    /// Measured from the start; requests due before it are sent but not measured.
    pub warmup: Duration,
    pub seed: u64,
    pub keys: usize,
    pub key_prefix: String,
    pub distribution: Distribution,
    pub resource: String,
    /// Envoy RLS targets (`rls://`): the domain and descriptors every request asks.
    pub rls: Option<RlsTemplate>,
    pub cost: u64,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Retry denied requests after the retry-after the service returned (within `retries`).
    pub honor_retry_after: bool,
    /// Reset the limiter's state of every key before the run (through `admin`).
    pub reset: bool,
    /// The limiter's admin API, which a reset goes through.
    pub admin: Option<AdminAccess>,
    pub interval: Duration,
    pub call: Call,
    /// The generator's own Prometheus metrics, when served (`--metrics-addr`).
    pub metrics: Option<ClientMetrics>,
}

impl RunConfig {
    /// A config with the defaults `loadgen run` uses, aimed at `targets`.
    pub fn new(targets: Vec<Endpoint>) -> Self {
        Self {
            targets,
            tls: TlsOptions::default(),
            connections: 4,
            model: LoadModel::Closed { concurrency: 64 },
            requests: None,
            duration: Some(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            seed: 1,
            keys: 100,
            key_prefix: "key-".into(),
            distribution: Distribution::Uniform,
            resource: String::new(),
            rls: None,
            cost: 1,
            timeout: Duration::from_secs(2),
            retries: 0,
            retry_backoff: Duration::from_millis(50),
            honor_retry_after: false,
            reset: false,
            admin: None,
            interval: Duration::from_secs(1),
            call: Call::Check,
            metrics: None,
        }
    }

    /// Every problem with the config, each naming its flag and the fix.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.targets.is_empty() {
            problems
                .push("--target: give at least one, e.g. --target grpc://127.0.0.1:50051".into());
        }
        let staged =
            matches!(&self.model, LoadModel::Open { schedule, .. } if schedule.length().is_some());
        if self.reset && self.admin.is_none() {
            problems.push(format!(
                "--reset: resetting keys is an admin call; give --admin-addr HOST:PORT (the service's admin.addr) and an admin token in {}",
                crate::admin::TOKEN_ENV
            ));
        }
        if self.requests.is_none() && self.duration.is_none() && !staged {
            problems.push("--requests or --duration: a run must be bounded; give one".into());
        }
        if self.duration.is_some_and(|d| d > MAX_RUN) {
            problems.push(format!(
                "--duration: at most {} h",
                MAX_RUN.as_secs() / 3600
            ));
        }
        if let LoadModel::Open { schedule, .. } = &self.model
            && schedule
                .rate()
                .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            problems.push("--rate: must be above 0 requests per second".into());
        }
        let plain = |text: &str| {
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
        };
        if !plain(&self.resource) {
            problems.push(format!(
                "--resource: `{}` has characters a URL cannot carry as is; use A-Z a-z 0-9 _ - . : /",
                self.resource
            ));
        }
        if !plain(&self.key_prefix) {
            problems.push(format!(
                "--key-prefix: `{}` has characters a header cannot carry as is; use A-Z a-z 0-9 _ - . : /",
                self.key_prefix
            ));
        }
        match &self.model {
            LoadModel::Closed { concurrency } if *concurrency == 0 => {
                problems.push("--concurrency: must be at least 1".into())
            }
            LoadModel::Open { workers, .. } if *workers == 0 => {
                problems.push("--workers: must be at least 1".into())
            }
            _ => {}
        }
        let rls_targets = self
            .targets
            .iter()
            .filter(|target| target.protocol == Protocol::Rls)
            .count();
        match (&self.rls, rls_targets) {
            (_, count) if count > 0 && count < self.targets.len() => problems.push(
                "--target: rls:// targets take Envoy RLS requests; run them apart from grpc:// and http:// targets".into(),
            ),
            (None, count) if count > 0 => problems.push(
                "--domain and --descriptor: an rls:// target needs them, e.g. --domain edge --descriptor generic_key=api,user={key}".into(),
            ),
            (Some(template), count) if count > 0 => {
                problems.extend(template.problems(self.keys));
                if self.reset {
                    problems.push("--reset: an RLS server's counters are not reset through an admin API; start on fresh keys with another --key-prefix".into());
                }
            }
            (Some(_), _) => problems.push(
                "--domain and --descriptor: only rls:// targets take them; give an rls://HOST:PORT target".into(),
            ),
            _ => {}
        }
        if self.keys == 0 {
            problems.push("--keys: must be at least 1".into());
        }
        if self.cost == 0 {
            problems.push("--cost: must be at least 1".into());
        }
        if self.timeout.is_zero() {
            problems.push("--timeout: must be above 0".into());
        }
        if self.interval < Duration::from_millis(10) {
            problems.push("--interval: at least 10ms".into());
        }
        problems
    }

    /// How long sending may go on: the duration, the staged schedule's length, or [`MAX_RUN`].
    pub fn send_window(&self) -> Duration {
        let staged = match &self.model {
            LoadModel::Open { schedule, .. } => schedule.length(),
            LoadModel::Closed { .. } => None,
        };
        self.duration.or(staged).unwrap_or(MAX_RUN).min(MAX_RUN)
    }
}

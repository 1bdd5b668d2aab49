//! Drives load. Open model: workers take tickets from one counter; ticket `k` is due at
//! `schedule.due(k)`, and its latency runs from that intended time, so requests queued behind a
//! slow response are charged their wait (no coordinated omission); the uncorrected figure
//! (from the actual send) is kept beside it. Closed model: each worker sends as soon as its
//! previous request completes. Every run is bounded by a request count or a duration and
//! stops itself.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use timeline::Timeline;

use crate::{
    keys::{Distribution, KeyPicker, KeySpace},
    metrics::ClientMetrics,
    schedule::Schedule,
    stats::{Interval, KeyLedger, Outcome, Recorder},
    target::{Call, Endpoint, ErrorKind, Requests, TargetClient},
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
    pub cost: u64,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Retry denied requests after the retry-after the service returned (within `retries`).
    pub honor_retry_after: bool,
    /// Reset the limiter's state of every key before the run.
    pub reset: bool,
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
            cost: 1,
            timeout: Duration::from_secs(2),
            retries: 0,
            retry_backoff: Duration::from_millis(50),
            honor_retry_after: false,
            reset: false,
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

/// What a run produced, before it is written anywhere.
#[derive(Debug)]
pub struct RunResult {
    pub config: RunConfig,
    pub started_at: SystemTime,
    /// From the end of warm-up to the last response.
    pub measured: Duration,
    /// From the first send to the last response, warm-up included (the ledger's window).
    pub elapsed: Duration,
    pub recorder: Recorder,
    pub timeline: Vec<Interval>,
    pub keys: KeySpace,
    pub ledger: Vec<KeyLedger>,
    /// Open model: requests due within the run that were never sent.
    pub missed_sends: u64,
}

mod timeline {
    //! The shared timeline: workers add a finished interval under a lock, once per interval.
    use parking_lot::Mutex;

    use crate::stats::Interval;

    pub struct Timeline {
        intervals: Mutex<Vec<Interval>>,
        targets: usize,
    }

    impl Timeline {
        pub fn new(targets: usize) -> Self {
            Self {
                intervals: Mutex::new(Vec::new()),
                targets,
            }
        }

        pub fn add(&self, index: usize, interval: &Interval) {
            let mut intervals = self.intervals.lock();
            while intervals.len() <= index {
                intervals.push(Interval::new(self.targets));
            }
            intervals[index].merge(interval);
        }

        pub fn into_inner(self) -> Vec<Interval> {
            self.intervals.into_inner()
        }
    }
}

struct Shared {
    config: RunConfig,
    keys: KeySpace,
    requests: Requests,
    ledger: Vec<KeyLedger>,
    timeline: Timeline,
    /// Every worker takes tickets from here; padded so it bounces alone between cores.
    tickets: CachePadded<AtomicU64>,
    start: Instant,
    stop_sending: Instant,
    stopped: AtomicBool,
}

/// Keeps a hot atomic on its own cache lines.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Runs the load described by `config` and returns what it measured.
pub async fn run(config: RunConfig) -> anyhow::Result<RunResult> {
    let problems = config.problems();
    anyhow::ensure!(problems.is_empty(), "invalid run: {}", problems.join("; "));
    let mut clients = Vec::with_capacity(config.targets.len());
    for endpoint in &config.targets {
        clients.push(TargetClient::connect(endpoint, config.connections).await?);
    }
    let keys = KeySpace::new(&config.key_prefix, config.keys);
    let requests = Requests::new(
        keys.names().iter().map(String::as_str),
        &config.resource,
        config.cost,
    )?;
    if config.reset {
        reset_keys(&mut clients[0], &keys, &config.resource).await?;
    }
    let workers = match &config.model {
        LoadModel::Closed { concurrency } => *concurrency,
        LoadModel::Open { workers, .. } => *workers,
    };
    let started_at = SystemTime::now();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        ledger: (0..keys.len()).map(|_| KeyLedger::default()).collect(),
        timeline: Timeline::new(config.targets.len()),
        keys,
        requests,
        tickets: CachePadded(AtomicU64::new(0)),
        start,
        stop_sending: start + config.send_window(),
        stopped: AtomicBool::new(false),
        config,
    });
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let target = worker % clients.len();
            let client = clients[target].for_worker(worker / clients.len());
            let shared = shared.clone();
            tokio::spawn(async move { work(&shared, worker, target, client).await })
        })
        .collect();
    let mut recorder = Recorder::new(shared.config.targets.len());
    for task in tasks {
        recorder.merge(&task.await?);
    }
    let finished = Instant::now();
    let shared = Arc::into_inner(shared).expect("workers are done");
    let missed_sends = match &shared.config.model {
        LoadModel::Open { schedule, .. } => {
            let window = finished
                .duration_since(start)
                .min(shared.config.send_window());
            let mut due = due_before(schedule, window);
            if let Some(limit) = shared.config.requests {
                due = due.min(limit);
            }
            // Every ticket taken was sent, but the last one each worker drew, which ended it.
            let sent = shared
                .tickets
                .load(Ordering::Relaxed)
                .saturating_sub(workers as u64);
            due.saturating_sub(sent)
        }
        LoadModel::Closed { .. } => 0,
    };
    let elapsed = finished.duration_since(start);
    Ok(RunResult {
        measured: elapsed.saturating_sub(shared.config.warmup),
        elapsed,
        started_at,
        recorder,
        timeline: shared.timeline.into_inner(),
        keys: shared.keys,
        ledger: shared.ledger,
        missed_sends,
        config: shared.config,
    })
}

/// How many requests `schedule` has due before `window`.
fn due_before(schedule: &Schedule, window: Duration) -> u64 {
    let (mut low, mut high) = (0u64, 1u64);
    while schedule.due(high).is_some_and(|due| due < window) {
        high *= 2;
    }
    while low < high {
        let mid = low + (high - low) / 2;
        if schedule.due(mid).is_some_and(|due| due < window) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

async fn reset_keys(
    client: &mut TargetClient,
    keys: &KeySpace,
    resource: &str,
) -> anyhow::Result<()> {
    for name in keys.names() {
        client.reset(name, resource).await?;
    }
    Ok(())
}

/// The next request's intended send time, or `None` when the run is over for this worker.
fn next_due(shared: &Shared, model: &LoadModel) -> Option<Instant> {
    let config = &shared.config;
    let ticket = shared.tickets.fetch_add(1, Ordering::Relaxed);
    if config.requests.is_some_and(|limit| ticket >= limit)
        || shared.stopped.load(Ordering::Relaxed)
    {
        return None;
    }
    let due = match model {
        LoadModel::Open { schedule, .. } => shared.start + schedule.due(ticket)?,
        LoadModel::Closed { .. } => Instant::now(),
    };
    (due < shared.stop_sending).then_some(due)
}

async fn work(shared: &Shared, worker: usize, target: usize, mut client: TargetClient) -> Recorder {
    let config = &shared.config;
    let targets = config.targets.len();
    let mut recorder = Recorder::new(targets);
    let mut picker = KeyPicker::new(
        config.distribution,
        shared.keys.len(),
        config.seed.wrapping_add(worker as u64),
    );
    let mut interval = (0usize, Interval::new(targets));
    let measure_from = shared.start + config.warmup;
    // One timer per worker, re-armed per request.
    let mut deadline = Box::pin(tokio::time::sleep(config.timeout));
    while let Some(intended) = next_due(shared, &config.model) {
        if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
        }
        let sent = Instant::now();
        let lag_us = sent.duration_since(intended).as_micros() as u64;
        if matches!(config.model, LoadModel::Open { .. }) {
            recorder.lag.saturating_record(lag_us);
        }
        let key = picker.next_index();
        let result = send_with_retries(shared, &mut client, &mut picker, &mut deadline, key).await;
        let done = Instant::now();
        if intended < measure_from {
            continue;
        }
        let outcome = match &result {
            Ok(answer) => Outcome::of(answer),
            Err(kind) => Outcome::Error(*kind),
        };
        let corrected = done.duration_since(intended).as_micros() as u64;
        let uncorrected = done.duration_since(sent).as_micros() as u64;
        recorder.record(target, outcome, corrected, uncorrected);
        if let Some(metrics) = &config.metrics {
            metrics.observe(target, outcome, corrected, lag_us);
        }
        if let Ok(answer) = result {
            recorder.targets[target].last =
                Some((done.duration_since(shared.start).as_micros() as u64, answer));
        }
        let index = (intended.duration_since(measure_from).as_nanos() / config.interval.as_nanos())
            as usize;
        if index != interval.0 {
            shared.timeline.add(interval.0, &interval.1);
            interval = (index, Interval::new(targets));
        }
        interval.1.record(target, outcome, corrected);
    }
    if interval.1.counts.total() > 0 {
        shared.timeline.add(interval.0, &interval.1);
    }
    recorder
}

/// One request, retried on transient errors (and, if asked, after a denial's retry-after).
async fn send_with_retries(
    shared: &Shared,
    client: &mut TargetClient,
    picker: &mut KeyPicker,
    deadline: &mut Pin<Box<tokio::time::Sleep>>,
    key: usize,
) -> Result<crate::target::Answer, ErrorKind> {
    let config = &shared.config;
    let mut attempt = 0;
    loop {
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + config.timeout);
        let result = tokio::select! {
            biased;
            result = client.call(config.call, &shared.requests, key) => result,
            () = deadline.as_mut() => {
                client.abandon();
                Err(ErrorKind::Timeout)
            }
        };
        // Health probes carry no rule; the ledger has nothing to check.
        if config.call == Call::Check {
            shared.ledger[key].record(config.cost, &result);
        }
        let wait = match &result {
            Err(kind) if kind.is_transient() => {
                let backoff = config.retry_backoff.as_secs_f64() * 2f64.powi(attempt as i32);
                Duration::from_secs_f64(backoff * (0.5 + picker.unit()))
            }
            Ok(answer) if !answer.allowed && config.honor_retry_after => {
                Duration::from_micros(answer.retry_after_us)
            }
            _ => return result,
        };
        if attempt >= config.retries || Instant::now() + wait >= shared.stop_sending {
            return result;
        }
        attempt += 1;
        tokio::time::sleep(wait).await;
    }
}

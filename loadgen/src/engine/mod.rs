//! Drives load. Open model: each worker draws the next ticket of the schedule and sends it when
//! it falls due; its latency runs from that intended time, so requests queued behind a slow
//! response are charged their wait (no coordinated omission), and the uncorrected figure (from
//! the actual send) is kept beside it. Closed model: each worker sends as soon as its previous
//! request completes. Every run is bounded by a request count or a duration and stops itself.
//!
//! `config` says what to run, `pacing` when each request is due, `worker` sends and records,
//! `timeline` keeps the per-interval figures; this module starts, steers and finishes a run.

mod config;
mod pacing;
mod precise_timer;
mod timeline;
mod worker;

pub use config::{LoadModel, MAX_RUN, RunConfig};
pub use pacing::LIVE_RATES;

use anyhow::Context as _;
use parking_lot::Mutex;
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    admin,
    client::{Requests, TargetClient},
    keys::KeySpace,
    ledger::key::KeyLedger,
    stats::{Interval, Recorder, SealedInterval},
};
use pacing::{CachePadded, Pacing};
use timeline::Timeline;
use worker::Shared;

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
    pub timeline: Vec<SealedInterval>,
    pub keys: KeySpace,
    pub ledger: Vec<KeyLedger>,
    /// Open model: requests due within the run that were never sent.
    pub missed_sends: u64,
}

/// A run in progress: watch it, steer it, and [`finish`](Run::finish) it for the result.
/// Dropping it unfinished stops it.
pub struct Run {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started_at: SystemTime,
    workers: usize,
}

/// Runs the load described by `config` and returns what it measured.
pub async fn run(config: RunConfig) -> anyhow::Result<RunResult> {
    start(config).await?.finish().await
}

/// Connects to every target and starts the workers.
pub async fn start(config: RunConfig) -> anyhow::Result<Run> {
    let problems = config.problems();
    anyhow::ensure!(problems.is_empty(), "invalid run: {}", problems.join("; "));
    let mut clients = Vec::with_capacity(config.targets.len());
    for endpoint in &config.targets {
        clients.push(TargetClient::connect(endpoint, config.connections, &config.tls).await?);
    }
    let keys = KeySpace::new(&config.key_prefix, config.keys);
    let requests = Requests::new(
        keys.names().iter().map(String::as_str),
        &config.resource,
        config.cost,
        config.rls.as_ref(),
    )?;
    if config.reset
        && let Some(admin) = &config.admin
    {
        admin::reset_keys(admin, &keys, &config.resource).await?;
    }
    let workers = match &config.model {
        LoadModel::Closed { concurrency } => *concurrency,
        LoadModel::Open { workers, .. } => *workers,
    };
    let targets = config.targets.len();
    let started_at = SystemTime::now();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        ledger: (0..keys.len()).map(|_| KeyLedger::default()).collect(),
        timeline: Timeline::new(targets),
        recorders: (0..recorder_slots(workers))
            .map(|_| CachePadded(Mutex::new(Recorder::new(targets))))
            .collect(),
        keys,
        requests,
        pacing: Pacing::new(&config.model, config.requests, start, config.send_window()),
        last_done: Mutex::new(None),
        config,
    });
    let waiters = (0..workers)
        .map(|_| shared.pacing.waiter())
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| {
            format!(
                "creating the pacing timers of {workers} workers (each holds a file descriptor): \
                 use fewer --workers or raise the open-file limit (ulimit -n)"
            )
        })?;
    let tasks = waiters
        .into_iter()
        .enumerate()
        .map(|(worker, waiter)| {
            let target = worker % clients.len();
            let client = clients[target].for_worker(worker / clients.len());
            let shared = shared.clone();
            tokio::spawn(async move { worker::work(&shared, worker, target, client, waiter).await })
        })
        .collect();
    Ok(Run {
        shared,
        tasks,
        started_at,
        workers,
    })
}

impl Run {
    pub fn config(&self) -> &RunConfig {
        &self.shared.config
    }

    pub fn keys(&self) -> &KeySpace {
        &self.shared.keys
    }

    pub fn ledger(&self) -> &[KeyLedger] {
        &self.shared.ledger
    }

    /// Time since the first send.
    pub fn elapsed(&self) -> Duration {
        self.shared.pacing.start.elapsed()
    }

    /// The timeline's intervals from `from` on (workers add an interval once they pass it).
    pub fn timeline_since(&self, from: usize) -> Vec<SealedInterval> {
        self.shared.timeline.since(from)
    }

    /// The newest `count` intervals with their full histograms (per target, lag).
    pub fn timeline_recent(&self, count: usize) -> Vec<Interval> {
        self.shared.timeline.recent(count)
    }

    pub fn timeline_len(&self) -> usize {
        self.shared.timeline.len()
    }

    /// Every worker has stopped: the run reached its end, or was stopped.
    pub fn is_done(&self) -> bool {
        self.tasks.iter().all(|task| task.is_finished())
    }

    pub fn is_paused(&self) -> bool {
        self.shared.pacing.is_paused()
    }

    /// Stops sending; requests in flight complete. Resume continues at the rate of the moment.
    pub fn pause(&self) {
        self.shared.pacing.pause();
    }

    pub fn resume(&self) {
        self.shared.pacing.resume();
    }

    /// The open model's rate now (requests per second); `None` in the closed model.
    pub fn rate(&self) -> Option<f64> {
        self.shared.pacing.rate()
    }

    /// Sends at `rate` requests per second from now on (open model; the closed model's pace
    /// is its concurrency, so this returns `None` there). The rate is kept within [`LIVE_RATES`].
    pub fn set_rate(&self, rate: f64) -> Option<f64> {
        self.shared.pacing.set_rate(rate)
    }

    /// Ends the run early: no new requests; those in flight complete.
    pub fn stop(&self) {
        self.shared.pacing.stop();
    }

    /// What the run measured so far, as a result a report can be written from. Requests of
    /// the interval each worker is in are in the totals but not yet in the timeline.
    pub fn snapshot(&self) -> RunResult {
        let shared = &self.shared;
        let mut recorder = Recorder::new(shared.config.targets.len());
        for slot in &shared.recorders {
            recorder.merge(&slot.lock());
        }
        let elapsed = shared.pacing.start.elapsed();
        RunResult {
            config: shared.config.clone(),
            started_at: self.started_at,
            measured: elapsed.saturating_sub(shared.config.warmup),
            elapsed,
            recorder,
            timeline: shared.timeline.since(0),
            keys: shared.keys.clone(),
            ledger: shared.ledger.clone(),
            missed_sends: shared.pacing.missed_sends(Instant::now(), 0),
        }
    }

    /// Waits for every worker and returns what the run measured.
    pub async fn finish(mut self) -> anyhow::Result<RunResult> {
        for task in std::mem::take(&mut self.tasks) {
            task.await?;
        }
        let (started_at, workers) = (self.started_at, self.workers);
        let shared = self.shared.clone();
        drop(self);
        let shared = Arc::into_inner(shared).context("a finished run still has workers")?;
        let finished = shared.last_done.lock().unwrap_or_else(Instant::now);
        // Every worker drew one ticket it did not send, which ended it.
        let missed_sends = shared.pacing.missed_sends(finished, workers as u64);
        let mut recorder = Recorder::new(shared.config.targets.len());
        for slot in shared.recorders {
            recorder.merge(&slot.0.into_inner());
        }
        let elapsed = finished.duration_since(shared.pacing.start);
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
}

impl Drop for Run {
    /// A run dropped unfinished (a console closed mid-run) stops, so its workers end instead
    /// of sending on until the end of the run's window.
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.stop();
        }
    }
}

/// Resets the limiter's state of every key (a live run's `r` key), through its admin API.
pub async fn reset_all(config: &RunConfig) -> anyhow::Result<()> {
    let admin = config.admin.as_ref().with_context(|| {
        format!(
            "reset needs the limiter's admin API: start with --admin-addr and {}",
            crate::admin::TOKEN_ENV
        )
    })?;
    let keys = KeySpace::new(&config.key_prefix, config.keys);
    admin::reset_keys(admin, &keys, &config.resource).await
}

/// How many recorders `workers` share: two per core the generator may run on, at most one
/// per worker.
fn recorder_slots(workers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    workers.clamp(1, 2 * cores)
}

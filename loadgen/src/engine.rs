//! Drives load. Open model: workers take tickets from one counter; ticket `k` is due at
//! `schedule.due(k)`, and its latency runs from that intended time, so requests queued behind a
//! slow response are charged their wait (no coordinated omission); the uncorrected figure
//! (from the actual send) is kept beside it. Closed model: each worker sends as soon as its
//! previous request completes. Every run is bounded by a request count or a duration and
//! stops itself.

use anyhow::Context as _;
use parking_lot::{Mutex, RwLock};
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use timeline::Timeline;
use tokio::sync::watch;

use crate::{
    admin::{self, AdminAccess},
    keys::{Distribution, KeyPicker, KeySpace},
    metrics::ClientMetrics,
    schedule::Schedule,
    stats::{Interval, KeyLedger, Outcome, Recorder, SealedInterval},
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
    pub timeline: Vec<SealedInterval>,
    pub keys: KeySpace,
    pub ledger: Vec<KeyLedger>,
    /// Open model: requests due within the run that were never sent.
    pub missed_sends: u64,
}

mod timeline {
    //! The shared timeline: workers add a finished interval under a lock, once per interval.
    //! The newest intervals stay open (full histograms, for the live console); older ones are
    //! sealed into their compact form, so memory grows by a few hundred bytes per interval.
    use std::collections::VecDeque;

    use parking_lot::Mutex;

    use crate::stats::{Interval, SealedInterval};

    /// How many of the newest intervals stay open. A worker adds an interval when it moves past
    /// it, so a slow request can add to one already sealed; that is merged too, only slower.
    const OPEN: usize = 32;

    pub struct Timeline {
        inner: Mutex<Inner>,
        targets: usize,
    }

    #[derive(Default)]
    struct Inner {
        sealed: Vec<SealedInterval>,
        /// Intervals `sealed.len()..`.
        open: VecDeque<Interval>,
    }

    impl Timeline {
        pub fn new(targets: usize) -> Self {
            Self {
                inner: Mutex::default(),
                targets,
            }
        }

        pub fn add(&self, index: usize, interval: &Interval) {
            let mut inner = self.inner.lock();
            let Inner { sealed, open } = &mut *inner;
            let Some(offset) = index.checked_sub(sealed.len()) else {
                sealed[index].absorb(interval);
                return;
            };
            while open.len() <= offset {
                open.push_back(Interval::new(self.targets));
            }
            open[offset].merge(interval);
            while open.len() > OPEN {
                let oldest = open.pop_front().expect("more than OPEN are open");
                sealed.push(SealedInterval::seal(&oldest));
            }
        }

        /// The intervals from `from` on, as they are now.
        pub fn since(&self, from: usize) -> Vec<SealedInterval> {
            let inner = self.inner.lock();
            let sealed = inner.sealed.get(from..).unwrap_or_default().iter().cloned();
            let skip = from.saturating_sub(inner.sealed.len());
            let open = inner.open.iter().skip(skip).map(SealedInterval::seal);
            sealed.chain(open).collect()
        }

        /// The newest `count` intervals in full (fewer when fewer are open).
        pub fn recent(&self, count: usize) -> Vec<Interval> {
            let inner = self.inner.lock();
            let skip = inner.open.len().saturating_sub(count);
            inner.open.iter().skip(skip).cloned().collect()
        }

        pub fn len(&self) -> usize {
            let inner = self.inner.lock();
            inner.sealed.len() + inner.open.len()
        }

        pub fn into_inner(self) -> Vec<SealedInterval> {
            let Inner { mut sealed, open } = self.inner.into_inner();
            sealed.extend(open.iter().map(SealedInterval::seal));
            sealed
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::stats::Outcome;

        fn one_request(latency_us: u64) -> Interval {
            let mut interval = Interval::new(1);
            interval.record(0, Outcome::Allowed, latency_us);
            interval
        }

        #[test]
        fn old_intervals_are_sealed_and_read_back_whole() {
            let timeline = Timeline::new(1);
            for index in 0..100 {
                timeline.add(index, &one_request(10 + index as u64));
            }
            assert_eq!(timeline.len(), 100);
            assert_eq!(timeline.inner.lock().open.len(), OPEN);
            // A slow worker reports interval 3 long after it was sealed.
            timeline.add(3, &one_request(5_000));
            let recent = timeline.recent(5);
            assert_eq!(recent.len(), 5);
            assert_eq!(recent[4].latency.max(), 109);
            let all = timeline.into_inner();
            assert_eq!(all.len(), 100);
            for (index, interval) in all.iter().enumerate() {
                let requests = if index == 3 { 2 } else { 1 };
                assert_eq!(interval.counts.allowed, requests, "interval {index}");
                assert_eq!(interval.latency().len(), requests);
            }
            assert_eq!(all[50].p50_us, 60);
            assert!(all[3].p99_us >= 4_990);
        }

        #[test]
        fn since_reads_across_sealed_and_open_intervals() {
            let timeline = Timeline::new(1);
            for index in 0..40 {
                timeline.add(index, &one_request(1 + index as u64));
            }
            let tail = timeline.since(5);
            assert_eq!(tail.len(), 35);
            assert_eq!(tail[0].p50_us, 6);
            assert_eq!(tail[34].p50_us, 40);
            assert!(timeline.since(40).is_empty());
        }
    }
}

struct Shared {
    config: RunConfig,
    keys: KeySpace,
    requests: Requests,
    ledger: Vec<KeyLedger>,
    timeline: Timeline,
    /// Worker `w` records into slot `w % len`. A recorder's histograms span a minute at three
    /// digits (~140 KB each, six per recorder): one per worker would spread each request's
    /// records over tens of megabytes that no cache holds (`perf` at the gRPC ceiling, 64
    /// workers: HDR recording took 6.0% of the generator's CPU with one recorder per worker,
    /// 2.6% with four). Two slots per core let workers on different threads meet at one lock
    /// only rarely.
    recorders: Vec<CachePadded<Mutex<Recorder>>>,
    /// Every worker takes tickets from here; padded so it bounces alone between cores.
    tickets: CachePadded<AtomicU64>,
    start: Instant,
    stop_sending: Instant,
    stopped: AtomicBool,
    /// When [`Run::stop`] was called: requests due after it were not missed.
    stopped_at: Mutex<Option<Instant>>,
    /// When the last worker ended: the run's end, however long its caller takes to notice.
    last_done: Mutex<Option<Instant>>,
    pacing: Pacing,
}

/// Live changes to the load (the TUI's keys). After a pause or a new rate, an open model's
/// requests fall due at a constant rate from an anchor instead of on the configured schedule,
/// so a resumed run does not send the paused time's requests in a burst.
struct Pacing {
    /// Set once the schedule was replaced: runs never changed skip the lock.
    retimed: AtomicBool,
    anchor: RwLock<Anchor>,
    paused: AtomicBool,
    /// Wakes paused workers on resume or stop.
    resumed: watch::Sender<bool>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ticket: u64,
    at: Instant,
    rate: f64,
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

/// The fastest and slowest rates a live change may set.
pub const LIVE_RATES: std::ops::RangeInclusive<f64> = 0.1..=10_000_000.0;

/// A run in progress: watch it, steer it, and [`finish`](Run::finish) it for the result.
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
        clients.push(TargetClient::connect(endpoint, config.connections).await?);
    }
    let keys = KeySpace::new(&config.key_prefix, config.keys);
    let requests = Requests::new(
        keys.names().iter().map(String::as_str),
        &config.resource,
        config.cost,
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
        tickets: CachePadded(AtomicU64::new(0)),
        start,
        stop_sending: start + config.send_window(),
        stopped: AtomicBool::new(false),
        stopped_at: Mutex::new(None),
        last_done: Mutex::new(None),
        pacing: Pacing {
            retimed: AtomicBool::new(false),
            anchor: RwLock::new(Anchor {
                ticket: 0,
                at: start,
                rate: 0.0,
            }),
            paused: AtomicBool::new(false),
            resumed: watch::Sender::new(false),
        },
        config,
    });
    let tasks = (0..workers)
        .map(|worker| {
            let target = worker % clients.len();
            let client = clients[target].for_worker(worker / clients.len());
            let shared = shared.clone();
            tokio::spawn(async move { work(&shared, worker, target, client).await })
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
        self.shared.start.elapsed()
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
        self.shared.pacing.paused.load(Ordering::Relaxed)
    }

    /// Stops sending; requests in flight complete. Resume continues at the rate of the moment.
    pub fn pause(&self) {
        if !self.is_paused() {
            self.shared.pacing.paused.store(true, Ordering::Relaxed);
            self.shared.pacing.resumed.send_replace(false);
        }
    }

    pub fn resume(&self) {
        if self.is_paused() {
            if let Some(rate) = self.rate() {
                self.retime(rate);
            }
            self.shared.pacing.paused.store(false, Ordering::Relaxed);
            self.shared.pacing.resumed.send_replace(true);
        }
    }

    /// The open model's rate now (requests per second); `None` in the closed model.
    pub fn rate(&self) -> Option<f64> {
        let LoadModel::Open { schedule, .. } = &self.shared.config.model else {
            return None;
        };
        if self.shared.pacing.retimed.load(Ordering::Relaxed) {
            return Some(self.shared.pacing.anchor.read().rate);
        }
        // The schedule's rate at the next ticket: the inverse of the gap to the one after.
        let ticket = self.shared.tickets.load(Ordering::Relaxed);
        let gap = schedule
            .due(ticket + 1)?
            .checked_sub(schedule.due(ticket)?)?;
        Some((1.0 / gap.as_secs_f64()).clamp(*LIVE_RATES.start(), *LIVE_RATES.end()))
    }

    /// Sends at `rate` requests per second from now on (open model; the closed model's pace
    /// is its concurrency, so this returns `None` there). The rate is kept within [`LIVE_RATES`].
    pub fn set_rate(&self, rate: f64) -> Option<f64> {
        matches!(self.shared.config.model, LoadModel::Open { .. }).then(|| {
            let rate = rate.clamp(*LIVE_RATES.start(), *LIVE_RATES.end());
            self.retime(rate);
            rate
        })
    }

    fn retime(&self, rate: f64) {
        let pacing = &self.shared.pacing;
        *pacing.anchor.write() = Anchor {
            ticket: self.shared.tickets.load(Ordering::Relaxed),
            at: Instant::now(),
            rate,
        };
        pacing.retimed.store(true, Ordering::Relaxed);
    }

    /// Ends the run early: no new requests; those in flight complete.
    pub fn stop(&self) {
        self.shared
            .stopped_at
            .lock()
            .get_or_insert_with(Instant::now);
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.pacing.resumed.send_replace(true);
    }

    /// What the run measured so far, as a result a report can be written from. Requests of
    /// the interval each worker is in are in the totals but not yet in the timeline.
    pub fn snapshot(&self) -> RunResult {
        let shared = &self.shared;
        let mut recorder = Recorder::new(shared.config.targets.len());
        for slot in &shared.recorders {
            recorder.merge(&slot.lock());
        }
        let elapsed = shared.start.elapsed();
        RunResult {
            config: shared.config.clone(),
            started_at: self.started_at,
            measured: elapsed.saturating_sub(shared.config.warmup),
            elapsed,
            recorder,
            timeline: shared.timeline.since(0),
            keys: shared.keys.clone(),
            ledger: shared.ledger.clone(),
            missed_sends: missed_sends(shared, Instant::now(), 0),
        }
    }

    /// Waits for every worker and returns what the run measured.
    pub async fn finish(self) -> anyhow::Result<RunResult> {
        for task in self.tasks {
            task.await?;
        }
        let shared = Arc::into_inner(self.shared).expect("workers are done");
        let finished = shared.last_done.lock().unwrap_or_else(Instant::now);
        // Every worker drew one ticket it did not send, which ended it.
        let missed_sends = missed_sends(&shared, finished, self.workers as u64);
        let mut recorder = Recorder::new(shared.config.targets.len());
        for slot in shared.recorders {
            recorder.merge(&slot.0.into_inner());
        }
        let elapsed = finished.duration_since(shared.start);
        Ok(RunResult {
            measured: elapsed.saturating_sub(shared.config.warmup),
            elapsed,
            started_at: self.started_at,
            recorder,
            timeline: shared.timeline.into_inner(),
            keys: shared.keys,
            ledger: shared.ledger,
            missed_sends,
            config: shared.config,
        })
    }
}

/// Open model: requests due by `now` that were never sent. `unsent` tickets were drawn without
/// being sent (each finished worker drew one).
fn missed_sends(shared: &Shared, now: Instant, unsent: u64) -> u64 {
    let LoadModel::Open { schedule, .. } = &shared.config.model else {
        return 0;
    };
    if shared.pacing.paused.load(Ordering::Relaxed) {
        // A pause leaves the schedule behind on purpose; nothing counts as missed.
        return 0;
    }
    let now = now
        .min(shared.stop_sending)
        .min(shared.stopped_at.lock().unwrap_or(now));
    let mut due = if shared.pacing.retimed.load(Ordering::Relaxed) {
        let anchor = *shared.pacing.anchor.read();
        let since = now.saturating_duration_since(anchor.at).as_secs_f64();
        anchor.ticket + (since * anchor.rate) as u64
    } else {
        due_before(schedule, now.duration_since(shared.start))
    };
    if let Some(limit) = shared.config.requests {
        due = due.min(limit);
    }
    let sent = shared
        .tickets
        .load(Ordering::Relaxed)
        .saturating_sub(unsent);
    due.saturating_sub(sent)
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

/// The next request's intended send time, or `None` when the run is over for this worker.
async fn next_due(shared: &Shared) -> Option<Instant> {
    let config = &shared.config;
    if shared.pacing.paused.load(Ordering::Relaxed) {
        let mut resumed = shared.pacing.resumed.subscribe();
        let _ = tokio::time::timeout_at(shared.stop_sending.into(), resumed.wait_for(|r| *r)).await;
    }
    let ticket = shared.tickets.fetch_add(1, Ordering::Relaxed);
    if config.requests.is_some_and(|limit| ticket >= limit)
        || shared.stopped.load(Ordering::Relaxed)
    {
        return None;
    }
    let due = match &config.model {
        LoadModel::Open { .. } if shared.pacing.retimed.load(Ordering::Relaxed) => {
            let anchor = *shared.pacing.anchor.read();
            let after = ticket.saturating_sub(anchor.ticket) as f64 / anchor.rate;
            anchor.at + Duration::from_secs_f64(after)
        }
        LoadModel::Open { schedule, .. } => shared.start + schedule.due(ticket)?,
        LoadModel::Closed { .. } => Instant::now(),
    };
    (due < shared.stop_sending).then_some(due)
}

async fn work(shared: &Shared, worker: usize, target: usize, mut client: TargetClient) {
    let config = &shared.config;
    let targets = config.targets.len();
    let mut picker = KeyPicker::new(
        config.distribution,
        shared.keys.len(),
        config.seed.wrapping_add(worker as u64),
    );
    let mut interval = (0usize, Interval::new(targets));
    let measure_from = shared.start + config.warmup;
    let open = matches!(config.model, LoadModel::Open { .. });
    // One timer per worker, re-armed per request.
    let mut deadline = Box::pin(tokio::time::sleep(config.timeout));
    while let Some(intended) = next_due(shared).await {
        if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
        }
        let sent = Instant::now();
        let lag_us = sent.duration_since(intended).as_micros() as u64;
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
        {
            let mut recorder = shared.recorders[worker % shared.recorders.len()].lock();
            if open {
                recorder.lag.saturating_record(lag_us);
            }
            recorder.record(target, outcome, corrected, uncorrected);
            if let Ok(answer) = result {
                recorder.targets[target].last =
                    Some((done.duration_since(shared.start).as_micros() as u64, answer));
            }
        }
        if let Some(metrics) = &config.metrics {
            metrics.observe(target, outcome, corrected, lag_us);
        }
        let index = (intended.duration_since(measure_from).as_nanos() / config.interval.as_nanos())
            as usize;
        if index != interval.0 {
            shared.timeline.add(interval.0, &interval.1);
            interval = (index, Interval::new(targets));
        }
        interval.1.record(target, outcome, corrected);
        if open {
            interval.1.record_lag(lag_us);
        }
    }
    if interval.1.counts.total() > 0 {
        shared.timeline.add(interval.0, &interval.1);
    }
    let now = Instant::now();
    let mut last_done = shared.last_done.lock();
    *last_done = Some(last_done.map_or(now, |last| last.max(now)));
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

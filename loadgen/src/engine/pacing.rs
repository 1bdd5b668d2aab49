//! When each request is due, and the live changes to it (pause, resume, a new rate, stop).
//!
//! Open model: ticket `k` is due at `schedule.due(k)` after the start. One pacing task releases
//! tickets as they fall due, one semaphore permit each, sleeping on a [`PreciseTimer`] in
//! between; a worker holding a permit draws the next ticket and sends it at once, and its
//! latency runs from the ticket's intended time. Closed model: a ticket is due whenever a
//! worker asks for one. results/benchmarks/pacing.md has the measured send lag and CPU cost.

use parking_lot::{Mutex, RwLock};
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};
use tokio::sync::{Notify, Semaphore, watch};

use super::{config::LoadModel, precise_timer::PreciseTimer};
use crate::schedule::Schedule;

/// The fastest and slowest rates a live change may set.
pub const LIVE_RATES: std::ops::RangeInclusive<f64> = 0.1..=10_000_000.0;

/// The longest the pacing task sleeps before looking at pause, stop and rate changes again
/// (those also wake it at once; this bounds a missed wake-up).
const NAP: Duration = Duration::from_millis(50);

/// The most tickets released in one go, so a backlog (a slow start, a huge rate) does not keep
/// the pacing task from noticing a stop.
const BATCH: usize = 4096;

pub(super) struct Pacing {
    /// `None` in the closed model.
    schedule: Option<Schedule>,
    /// The run's request count, when it has one.
    limit: Option<u64>,
    pub(super) start: Instant,
    pub(super) stop_sending: Instant,
    /// Every worker draws tickets from here; padded so it bounces alone between cores.
    tickets: CachePadded<AtomicU64>,
    /// Open model: one permit per released ticket, and one per worker when sending ends.
    released_permits: Semaphore,
    /// Tickets released so far (the pacing task's count).
    released: AtomicU64,
    /// Tickets from here on end the worker that draws them (`u64::MAX` while sending goes on).
    end: AtomicU64,
    stopped: AtomicBool,
    /// When [`Pacing::stop`] was called: requests due after it were not missed.
    stopped_at: Mutex<Option<Instant>>,
    /// Set once the schedule was replaced: runs never changed skip the lock.
    retimed: AtomicBool,
    /// After a pause or a new rate, requests fall due at a constant rate from an anchor instead
    /// of on the configured schedule, so a resumed run does not send the paused time's requests
    /// in a burst.
    anchor: RwLock<Anchor>,
    paused: AtomicBool,
    /// Wakes the closed model's paused workers on resume or stop.
    resumed: watch::Sender<bool>,
    /// Wakes the pacing task on a live change (pause, resume, rate, stop).
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ticket: u64,
    at: Instant,
    rate: f64,
}

/// Keeps a hot value on its own cache lines.
#[repr(align(128))]
pub(super) struct CachePadded<T>(pub(super) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Pacing {
    pub(super) fn new(
        model: &LoadModel,
        limit: Option<u64>,
        start: Instant,
        window: Duration,
    ) -> Self {
        let schedule = match model {
            LoadModel::Open { schedule, .. } => Some(schedule.clone()),
            LoadModel::Closed { .. } => None,
        };
        Self {
            schedule,
            limit,
            start,
            stop_sending: start + window,
            tickets: CachePadded(AtomicU64::new(0)),
            released_permits: Semaphore::new(0),
            released: AtomicU64::new(0),
            end: AtomicU64::new(u64::MAX),
            stopped: AtomicBool::new(false),
            stopped_at: Mutex::new(None),
            retimed: AtomicBool::new(false),
            anchor: RwLock::new(Anchor {
                ticket: 0,
                at: start,
                rate: 0.0,
            }),
            paused: AtomicBool::new(false),
            resumed: watch::Sender::new(false),
            changed: Notify::new(),
        }
    }

    /// Whether this run needs the pacing task ([`Pacing::pace`]).
    pub(super) fn is_open(&self) -> bool {
        self.schedule.is_some()
    }

    /// When `ticket` is due, or `None` when the schedule has ended before it.
    fn due_at(&self, ticket: u64) -> Option<Instant> {
        let schedule = self.schedule.as_ref()?;
        if self.retimed.load(Ordering::Relaxed) {
            let anchor = *self.anchor.read();
            let after = ticket.saturating_sub(anchor.ticket) as f64 / anchor.rate;
            return Some(anchor.at + Duration::from_secs_f64(after));
        }
        Some(self.start + schedule.due(ticket)?)
    }

    fn beyond_limit(&self, ticket: u64) -> bool {
        self.limit.is_some_and(|limit| ticket >= limit)
    }

    /// A worker's next request: its intended send time, or `None` when the run is over for
    /// this worker. Open model: waits until the pacing task has released a ticket.
    pub(super) async fn next(&self) -> Option<Instant> {
        if self.is_open() {
            // Never closed, so acquiring fails only if the semaphore is gone with the run.
            self.released_permits.acquire().await.ok()?.forget();
        } else if self.paused.load(Ordering::Relaxed) {
            let mut resumed = self.resumed.subscribe();
            let _ =
                tokio::time::timeout_at(self.stop_sending.into(), resumed.wait_for(|r| *r)).await;
        }
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if ticket >= self.end.load(Ordering::Acquire)
            || self.beyond_limit(ticket)
            || self.stopped.load(Ordering::Relaxed)
        {
            return None;
        }
        let due = if self.is_open() {
            self.due_at(ticket)?
        } else {
            Instant::now()
        };
        (due < self.stop_sending).then_some(due)
    }

    /// The pacing task (open model): releases each ticket when it falls due, until the run's
    /// bound, its end of sending or a stop; then releases one ending ticket per worker.
    pub(super) async fn pace(&self, workers: usize, mut timer: PreciseTimer) {
        let mut next = 0u64;
        loop {
            if self.stopped.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            let wake_at = if self.paused.load(Ordering::Relaxed) {
                if now >= self.stop_sending {
                    break;
                }
                now + NAP
            } else {
                let mut count = 0;
                let upcoming = loop {
                    if self.beyond_limit(next) {
                        break None;
                    }
                    match self.due_at(next) {
                        Some(due) if due >= self.stop_sending => break None,
                        Some(due) if due <= now && count < BATCH => {
                            next += 1;
                            count += 1;
                        }
                        other => break other,
                    }
                };
                if count > 0 {
                    self.released.store(next, Ordering::Relaxed);
                    self.released_permits.add_permits(count);
                }
                let Some(due) = upcoming else { break };
                due.min(now + NAP)
            };
            tokio::select! {
                biased;
                () = self.changed.notified() => {}
                slept = timer.sleep_until(wake_at) => {
                    if let Err(error) = slept {
                        tracing::error!(%error, "the pacing timer failed; stopping the run");
                        self.stop();
                    }
                }
            }
        }
        self.released.store(next, Ordering::Relaxed);
        self.end.store(next, Ordering::Release);
        self.released_permits.add_permits(workers);
    }

    fn wake_pacer(&self) {
        self.changed.notify_one();
    }

    pub(super) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub(super) fn pause(&self) {
        if !self.is_paused() {
            self.paused.store(true, Ordering::Relaxed);
            self.resumed.send_replace(false);
        }
    }

    pub(super) fn resume(&self) {
        if self.is_paused() {
            if let Some(rate) = self.rate() {
                self.retime(rate);
            }
            self.paused.store(false, Ordering::Relaxed);
            self.resumed.send_replace(true);
            self.wake_pacer();
        }
    }

    /// The open model's rate now (requests per second); `None` in the closed model.
    pub(super) fn rate(&self) -> Option<f64> {
        let schedule = self.schedule.as_ref()?;
        if self.retimed.load(Ordering::Relaxed) {
            return Some(self.anchor.read().rate);
        }
        // The schedule's rate at the next ticket: the inverse of the gap to the one after.
        let ticket = self.released.load(Ordering::Relaxed);
        let gap = schedule
            .due(ticket + 1)?
            .checked_sub(schedule.due(ticket)?)?;
        Some((1.0 / gap.as_secs_f64()).clamp(*LIVE_RATES.start(), *LIVE_RATES.end()))
    }

    /// Sends at `rate` requests per second from now on (open model; `None` in the closed
    /// model, whose pace is its concurrency). The rate is kept within [`LIVE_RATES`].
    pub(super) fn set_rate(&self, rate: f64) -> Option<f64> {
        self.is_open().then(|| {
            let rate = rate.clamp(*LIVE_RATES.start(), *LIVE_RATES.end());
            self.retime(rate);
            self.wake_pacer();
            rate
        })
    }

    fn retime(&self, rate: f64) {
        *self.anchor.write() = Anchor {
            ticket: self.released.load(Ordering::Relaxed),
            at: Instant::now(),
            rate,
        };
        self.retimed.store(true, Ordering::Relaxed);
    }

    /// No new requests from now on; those in flight complete.
    pub(super) fn stop(&self) {
        self.stopped_at.lock().get_or_insert_with(Instant::now);
        self.stopped.store(true, Ordering::Relaxed);
        self.resumed.send_replace(true);
        self.wake_pacer();
    }

    /// Open model: requests due by `now` that were never sent. `unsent` tickets were drawn
    /// without being sent (each finished worker drew one).
    pub(super) fn missed_sends(&self, now: Instant, unsent: u64) -> u64 {
        let Some(schedule) = &self.schedule else {
            return 0;
        };
        if self.is_paused() {
            // A pause leaves the schedule behind on purpose; nothing counts as missed.
            return 0;
        }
        let now = now
            .min(self.stop_sending)
            .min(self.stopped_at.lock().unwrap_or(now));
        let mut due = if self.retimed.load(Ordering::Relaxed) {
            let anchor = *self.anchor.read();
            let since = now.saturating_duration_since(anchor.at).as_secs_f64();
            anchor.ticket + (since * anchor.rate) as u64
        } else {
            due_before(schedule, now.duration_since(self.start))
        };
        if let Some(limit) = self.limit {
            due = due.min(limit);
        }
        let sent = self.tickets.load(Ordering::Relaxed).saturating_sub(unsent);
        due.saturating_sub(sent)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn open(rate: f64, limit: Option<u64>, window: Duration) -> Arc<Pacing> {
        let model = LoadModel::Open {
            schedule: Schedule::constant(rate),
            workers: 1,
        };
        Arc::new(Pacing::new(&model, limit, Instant::now(), window))
    }

    /// Runs the pacing task and `workers` workers that only draw tickets; returns each
    /// worker's intended times.
    async fn draw(pacing: Arc<Pacing>, workers: usize) -> Vec<Vec<Instant>> {
        let drawn = draw_timed(pacing, workers).await;
        drawn
            .into_iter()
            .map(|worker| worker.into_iter().map(|(due, _)| due).collect())
            .collect()
    }

    /// As [`draw`], with the moment each ticket was drawn beside its intended time.
    async fn draw_timed(pacing: Arc<Pacing>, workers: usize) -> Vec<Vec<(Instant, Instant)>> {
        let pacer = {
            let pacing = pacing.clone();
            tokio::spawn(async move {
                let timer = PreciseTimer::new().unwrap();
                pacing.pace(workers, timer).await
            })
        };
        let drawers: Vec<_> = (0..workers)
            .map(|_| {
                let pacing = pacing.clone();
                tokio::spawn(async move {
                    let mut drawn = Vec::new();
                    while let Some(due) = pacing.next().await {
                        let now = Instant::now();
                        assert!(now >= due, "a ticket came out before its time");
                        drawn.push((due, now));
                    }
                    drawn
                })
            })
            .collect();
        let mut all = Vec::new();
        for drawer in drawers {
            all.push(drawer.await.unwrap());
        }
        pacer.await.unwrap();
        all
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_ticket_up_to_the_limit_is_sent_once_and_every_worker_ends() {
        let pacing = open(20_000.0, Some(500), Duration::from_secs(10));
        let drawn = draw(pacing.clone(), 7).await;
        let mut all: Vec<Instant> = drawn.into_iter().flatten().collect();
        assert_eq!(all.len(), 500);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 500, "a ticket was drawn twice");
        // Each worker drew one ticket past the end, which ended it.
        assert_eq!(pacing.tickets.load(Ordering::Relaxed), 500 + 7);
        assert_eq!(pacing.missed_sends(Instant::now(), 7), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sending_ends_with_the_window() {
        let window = Duration::from_millis(300);
        let pacing = open(1_000.0, None, window);
        let drawn: usize = draw(pacing.clone(), 3).await.iter().map(Vec::len).sum();
        // 300 due in the window; a ticket due at or after its end is never released.
        assert!((295..=300).contains(&drawn), "{drawn} sent");
        // The last one went out at 299 ms; sending ended then, not before.
        assert!(pacing.start.elapsed() >= window - Duration::from_millis(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_ends_a_slow_schedule_at_once() {
        // One request every ten seconds: without a wake-up on stop the run would last that long.
        let pacing = open(0.1, None, Duration::from_secs(60));
        let running = tokio::spawn(draw(pacing.clone(), 2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        pacing.stop();
        let drawn = tokio::time::timeout(Duration::from_secs(2), running)
            .await
            .expect("stop ended the run")
            .unwrap();
        // Ticket 0 was due at the start.
        assert_eq!(drawn.iter().map(Vec::len).sum::<usize>(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_rate_applies_from_the_moment_it_is_set() {
        let pacing = open(0.1, Some(201), Duration::from_secs(60));
        let running = tokio::spawn(draw_timed(pacing.clone(), 4));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let changed = Instant::now();
        assert_eq!(pacing.set_rate(2_000.0), Some(2_000.0));
        let drawn = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the new rate woke the pacing task")
            .unwrap();
        let mut all: Vec<(Instant, Instant)> = drawn.into_iter().flatten().collect();
        all.sort();
        assert_eq!(all.len(), 201);
        // The change woke the pacing task, which was asleep until ticket 1's time ten seconds
        // on: the first ticket at the new rate went out at once, not at its next look.
        let (due, drawn_at) = all[1];
        assert!(
            drawn_at - due < NAP / 2,
            "the first ticket at the new rate went out {:?} late",
            drawn_at - due
        );
        // The 200 after the change are 0.5 ms apart from the moment of the change.
        let last = all.last().unwrap().0;
        let span = last.duration_since(changed).as_secs_f64();
        assert!(
            (0.098..0.102).contains(&span),
            "{span} s for 200 at 2,000/s"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_released_while_paused() {
        let pacing = open(1_000.0, Some(50), Duration::from_secs(60));
        pacing.pause();
        let running = tokio::spawn(draw(pacing.clone(), 2));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pacing.released.load(Ordering::Relaxed), 0);
        pacing.resume();
        let drawn = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("resume woke the pacing task")
            .unwrap();
        assert_eq!(drawn.iter().map(Vec::len).sum::<usize>(), 50);
    }
}

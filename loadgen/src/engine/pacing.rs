//! When each request is due, and the live changes to it (pause, resume, a new rate, stop).
//!
//! Open model: ticket `k` is due at `schedule.due(k)` after the start. A free worker draws the
//! next ticket, sleeps on its own [`PreciseTimer`] until the ticket is due and sends it; its
//! latency runs from that intended time. Tickets are drawn in order, so when every worker is
//! busy the tickets falling due wait undrawn and go out, oldest first, as workers free up.
//! Each worker waiting on its own timer, instead of one pacing task handing due tickets to
//! workers, saves waking a second task for every request. Closed model: a ticket is due
//! whenever a worker asks for one. results/benchmarks/pacing.md has the measured send lag and
//! CPU cost.
//!
//! A live change (pause, a new rate, stop) wakes every waiting worker, which times the ticket
//! it holds again. After a pause or a new rate, tickets fall due at a constant rate from an
//! [`Anchor`] instead of on the configured schedule, so a resumed run does not send the paused
//! time's requests in a burst.

use parking_lot::{Mutex, RwLock};
use std::{
    io,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};
use tokio::sync::watch;

use super::{config::LoadModel, precise_timer::PreciseTimer};
use crate::schedule::Schedule;

/// The fastest and slowest rates a live change may set.
pub const LIVE_RATES: std::ops::RangeInclusive<f64> = 0.1..=10_000_000.0;

pub(super) struct Pacing {
    /// `None` in the closed model.
    schedule: Option<Schedule>,
    /// The run's request count, when it has one.
    limit: Option<u64>,
    pub(super) start: Instant,
    pub(super) stop_sending: Instant,
    /// Every worker draws tickets from here; padded so it bounces alone between cores.
    tickets: CachePadded<AtomicU64>,
    stopped: AtomicBool,
    /// When [`Pacing::stop`] was called: requests due after it were not missed.
    stopped_at: Mutex<Option<Instant>>,
    /// Set (inside the anchor's write lock) once a live change anchored the timing: runs never
    /// changed skip the lock.
    anchored: AtomicBool,
    /// The timing once `anchored`; live changes hold its write lock while they decide.
    anchor: RwLock<Anchor>,
    paused: AtomicBool,
    /// Every live change (pause, resume, rate, stop) sends here, waking the waiting workers.
    changes: watch::Sender<()>,
}

/// From ticket `ticket` on, tickets fall due `1 / rate` apart starting `at`.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    ticket: u64,
    at: Instant,
    rate: f64,
}

impl Anchor {
    /// Tickets before the anchor's are overdue when it is set: they are due at once.
    fn due(&self, ticket: u64) -> Instant {
        let after = ticket.saturating_sub(self.ticket) as f64 / self.rate;
        self.at + Duration::from_secs_f64(after)
    }

    /// How many tickets are due before `now`.
    fn due_before(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_secs_f64();
        self.ticket + (since * self.rate).ceil() as u64
    }
}

/// What one worker waits with: its own timer (open model) and its view of the live changes.
pub(super) struct Waiter {
    timer: Option<PreciseTimer>,
    changes: watch::Receiver<()>,
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
            stopped: AtomicBool::new(false),
            stopped_at: Mutex::new(None),
            anchored: AtomicBool::new(false),
            anchor: RwLock::new(Anchor {
                ticket: 0,
                at: start,
                rate: 0.0,
            }),
            paused: AtomicBool::new(false),
            changes: watch::Sender::new(()),
        }
    }

    /// Whether requests are paced on a schedule (the open model).
    pub(super) fn is_open(&self) -> bool {
        self.schedule.is_some()
    }

    /// A worker's means of waiting for its tickets.
    pub(super) fn waiter(&self) -> io::Result<Waiter> {
        Ok(Waiter {
            timer: self.is_open().then(PreciseTimer::new).transpose()?,
            changes: self.changes.subscribe(),
        })
    }

    /// When `ticket` is due, or `None` when the schedule has ended before it.
    fn due_at(&self, ticket: u64) -> Option<Instant> {
        let schedule = self.schedule.as_ref()?;
        if self.anchored.load(Ordering::Acquire) {
            return Some(self.anchor.read().due(ticket));
        }
        Some(self.start + schedule.due(ticket)?)
    }

    /// How many tickets are due before `now`, under `anchor` when the timing is anchored
    /// (the caller holds the anchor's lock).
    fn tickets_due_before(&self, schedule: &Schedule, anchor: &Anchor, now: Instant) -> u64 {
        if self.anchored.load(Ordering::Acquire) {
            anchor.due_before(now)
        } else {
            due_before(schedule, now.saturating_duration_since(self.start))
        }
    }

    fn beyond_limit(&self, ticket: u64) -> bool {
        self.limit.is_some_and(|limit| ticket >= limit)
    }

    /// A worker's next request: its intended send time, or `None` when the run is over for
    /// this worker. Open model: returns when the ticket it drew is due.
    pub(super) async fn next(&self, waiter: &mut Waiter) -> Option<Instant> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if self.beyond_limit(ticket) {
            return None;
        }
        loop {
            // Marked seen before the state is read, so a change from here on ends the waits
            // (the version is read with Acquire, the change's Release makes its state visible;
            // unlike `borrow_and_update`, no lock shared by every worker per request).
            waiter.changes.mark_unchanged();
            if self.stopped.load(Ordering::Relaxed) {
                return None;
            }
            if self.is_paused() {
                let resumed = waiter.changes.changed();
                if tokio::time::timeout_at(self.stop_sending.into(), resumed)
                    .await
                    .is_err()
                {
                    return None;
                }
                continue;
            }
            let Some(timer) = &mut waiter.timer else {
                let now = Instant::now();
                return (now < self.stop_sending).then_some(now);
            };
            let due = self.due_at(ticket).filter(|due| *due < self.stop_sending)?;
            if due <= Instant::now() {
                return Some(due);
            }
            tokio::select! {
                biased;
                _ = waiter.changes.changed() => {}
                slept = timer.sleep_until(due) => {
                    if let Err(error) = slept {
                        tracing::error!(%error, "a pacing timer failed; stopping the run");
                        self.stop();
                        return None;
                    }
                    return Some(due);
                }
            }
        }
    }

    fn announce_change(&self) {
        self.changes.send_replace(());
    }

    pub(super) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Stops sending; a worker holding a ticket keeps it until the resume.
    pub(super) fn pause(&self) {
        let mut anchor = self.anchor.write();
        if self.is_paused() {
            return;
        }
        if let Some(schedule) = &self.schedule {
            // Anchored at the pause, with the rate of the moment: the resume moves the anchor
            // to its own time, and the tickets not due at the pause follow from there.
            let now = Instant::now();
            if let Some(rate) = self.rate_locked(schedule, &anchor, now) {
                *anchor = Anchor {
                    ticket: self.tickets_due_before(schedule, &anchor, now),
                    at: now,
                    rate,
                };
                self.anchored.store(true, Ordering::Release);
            }
        }
        self.paused.store(true, Ordering::Relaxed);
        drop(anchor);
        self.announce_change();
    }

    pub(super) fn resume(&self) {
        let mut anchor = self.anchor.write();
        if !self.is_paused() {
            return;
        }
        anchor.at = Instant::now();
        self.paused.store(false, Ordering::Relaxed);
        drop(anchor);
        self.announce_change();
    }

    /// The open model's rate now (requests per second); `None` in the closed model.
    pub(super) fn rate(&self) -> Option<f64> {
        let schedule = self.schedule.as_ref()?;
        self.rate_locked(schedule, &self.anchor.read(), Instant::now())
    }

    /// The rate at `now`, under `anchor` when the timing is anchored (the caller holds the
    /// anchor's lock); `None` once a staged schedule has ended.
    fn rate_locked(&self, schedule: &Schedule, anchor: &Anchor, now: Instant) -> Option<f64> {
        if self.anchored.load(Ordering::Acquire) {
            return Some(anchor.rate);
        }
        // The schedule's rate at the next ticket: the inverse of the gap to the one after.
        let ticket = self.tickets_due_before(schedule, anchor, now);
        let gap = schedule
            .due(ticket + 1)?
            .checked_sub(schedule.due(ticket)?)?;
        Some((1.0 / gap.as_secs_f64()).clamp(*LIVE_RATES.start(), *LIVE_RATES.end()))
    }

    /// Sends at `rate` requests per second from now on (or from the resume, when paused): open
    /// model; `None` in the closed model, whose pace is its concurrency. The rate is kept
    /// within [`LIVE_RATES`].
    pub(super) fn set_rate(&self, rate: f64) -> Option<f64> {
        let schedule = self.schedule.as_ref()?;
        let rate = rate.clamp(*LIVE_RATES.start(), *LIVE_RATES.end());
        let mut anchor = self.anchor.write();
        let now = Instant::now();
        // Paused, the tickets due were counted at the pause; none have fallen due since.
        let ticket = if self.is_paused() && self.anchored.load(Ordering::Acquire) {
            anchor.ticket
        } else {
            self.tickets_due_before(schedule, &anchor, now)
        };
        *anchor = Anchor {
            ticket,
            at: now,
            rate,
        };
        self.anchored.store(true, Ordering::Release);
        drop(anchor);
        self.announce_change();
        Some(rate)
    }

    /// No new requests from now on; those in flight complete.
    pub(super) fn stop(&self) {
        self.stopped_at.lock().get_or_insert_with(Instant::now);
        self.stopped.store(true, Ordering::Relaxed);
        self.announce_change();
    }

    /// Open model: requests due by `now` that were never sent. `unsent` tickets were drawn
    /// without being sent (each finished worker drew one). A ticket a worker holds for later
    /// is drawn but not due, so mid-run the count is exact as well: tickets are drawn in
    /// order, and while any due ticket waits undrawn, no worker holds a later one.
    pub(super) fn missed_sends(&self, now: Instant, unsent: u64) -> u64 {
        let Some(schedule) = &self.schedule else {
            return 0;
        };
        let anchor = self.anchor.read();
        if self.is_paused() {
            // A pause leaves the schedule behind on purpose; nothing counts as missed.
            return 0;
        }
        let now = now
            .min(self.stop_sending)
            .min(self.stopped_at.lock().unwrap_or(now));
        let mut due = self.tickets_due_before(schedule, &anchor, now);
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
    use tokio::task::JoinHandle;

    fn open(rate: f64, limit: Option<u64>, window: Duration) -> Arc<Pacing> {
        let model = LoadModel::Open {
            schedule: Schedule::constant(rate),
            workers: 1,
        };
        Arc::new(Pacing::new(&model, limit, Instant::now(), window))
    }

    /// Runs `workers` workers that only draw tickets; returns each worker's intended times.
    async fn draw(pacing: Arc<Pacing>, workers: usize) -> Vec<Vec<Instant>> {
        let drawn = draw_timed(pacing, workers).await;
        drawn
            .into_iter()
            .map(|worker| worker.into_iter().map(|(due, _)| due).collect())
            .collect()
    }

    /// Resumes a paused run and waits for its drawing workers to finish; returns the moment of
    /// the resume and what they drew.
    async fn resume_and_finish<T>(pacing: &Pacing, running: JoinHandle<T>) -> (Instant, T) {
        let resumed = Instant::now();
        pacing.resume();
        let drawn = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("resume woke the workers")
            .unwrap();
        (resumed, drawn)
    }

    /// As [`draw`], with the moment each ticket came out beside its intended time.
    async fn draw_timed(pacing: Arc<Pacing>, workers: usize) -> Vec<Vec<(Instant, Instant)>> {
        let drawers: Vec<_> = (0..workers)
            .map(|_| {
                let pacing = pacing.clone();
                let mut waiter = pacing.waiter().unwrap();
                tokio::spawn(async move {
                    let mut drawn = Vec::new();
                    while let Some(due) = pacing.next(&mut waiter).await {
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
        // 300 due in the window; a ticket due at or after its end is never sent.
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
        // Ticket 0 was due at the start; the two workers held tickets 1 and 2, not yet due.
        assert_eq!(drawn.iter().map(Vec::len).sum::<usize>(), 1);
        assert_eq!(pacing.tickets.load(Ordering::Relaxed), 3);
        assert_eq!(pacing.missed_sends(Instant::now(), 2), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_rate_applies_from_the_moment_it_is_set() {
        let pacing = open(0.1, Some(201), Duration::from_secs(60));
        let running = tokio::spawn(draw_timed(pacing.clone(), 4));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let changed = Instant::now();
        assert_eq!(pacing.set_rate(2_000.0), Some(2_000.0));
        assert_eq!(pacing.rate(), Some(2_000.0));
        let drawn = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the new rate woke the workers")
            .unwrap();
        let mut all: Vec<(Instant, Instant)> = drawn.into_iter().flatten().collect();
        all.sort();
        assert_eq!(all.len(), 201);
        // The workers held tickets 1 to 4, due ten seconds apart; the change woke them, and
        // the first ticket at the new rate went out at once, not at its old time.
        let (due, drawn_at) = all[1];
        assert!(due >= changed);
        assert!(
            drawn_at - due < Duration::from_millis(25),
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
    async fn nothing_is_sent_while_paused_and_the_paused_time_is_not_made_up() {
        let pacing = open(1_000.0, Some(50), Duration::from_secs(60));
        pacing.pause();
        let running = tokio::spawn(draw(pacing.clone(), 2));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (resumed, drawn) = resume_and_finish(&pacing, running).await;
        let mut all: Vec<Instant> = drawn.into_iter().flatten().collect();
        assert_eq!(all.len(), 50);
        all.sort();
        // Ticket 0 was due at the start, before the pause took hold: it and ticket 1 are due
        // at the resume, and the rest follow a millisecond apart (no burst of the 200 due
        // while paused).
        assert!(all[0] >= resumed, "a ticket was due while paused");
        let span = all[49].duration_since(all[0]);
        assert!(
            (Duration::from_millis(47)..=Duration::from_millis(49)).contains(&span),
            "{span:?} for 50 at 1,000/s"
        );
    }

    /// Workers hold tickets drawn before a pause; none may go out until the resume, and a rate
    /// set while paused applies from the resume.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pause_holds_the_drawn_tickets_and_a_rate_set_while_paused_waits_for_the_resume() {
        let pacing = open(1_000.0, Some(200), Duration::from_secs(60));
        let running = tokio::spawn(draw_timed(pacing.clone(), 4));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let paused = Instant::now();
        pacing.pause();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pacing.set_rate(4_000.0), Some(4_000.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (resumed, drawn) = resume_and_finish(&pacing, running).await;
        let mut all: Vec<(Instant, Instant)> = drawn.into_iter().flatten().collect();
        assert_eq!(all.len(), 200);
        all.sort();
        // A worker already waking when the pause came may still send (its timer fired, or it
        // is spinning out the last microseconds): allow a millisecond.
        let during_pause = all
            .iter()
            .filter(|(_, sent)| *sent > paused + Duration::from_millis(1) && *sent < resumed)
            .count();
        assert_eq!(during_pause, 0, "tickets went out while paused");
        let after: Vec<Instant> = all
            .iter()
            .map(|(due, _)| *due)
            .filter(|due| *due >= resumed)
            .collect();
        // About 50 went out before the pause; the rest at 4,000/s from the resume.
        assert!((140..=155).contains(&after.len()), "{} after", after.len());
        let span = after.last().unwrap().duration_since(resumed).as_secs_f64();
        let expected = (after.len() - 1) as f64 / 4_000.0;
        assert!(
            (span - expected).abs() < 0.002,
            "{span} s for {} at 4,000/s",
            after.len()
        );
        assert_eq!(pacing.missed_sends(Instant::now(), 4), 0);
    }
}

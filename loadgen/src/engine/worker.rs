//! A worker: waits for its next due request from the pacing, sends it (with retries), and
//! records the answer into its recorder slot, the timeline and the ledger.

use parking_lot::Mutex;
use std::{
    pin::Pin,
    time::{Duration, Instant},
};

use super::{
    RunConfig,
    pacing::{CachePadded, Pacing, Waiter},
    timeline::Timeline,
};
use crate::{
    client::{Requests, TargetClient},
    keys::{KeyPicker, KeySpace},
    ledger::key::KeyLedger,
    stats::{Interval, Outcome, Recorder},
    wire::{Answer, Call, ErrorKind},
};

/// What every worker of a run shares.
pub(super) struct Shared {
    pub(super) config: RunConfig,
    pub(super) keys: KeySpace,
    pub(super) requests: Requests,
    pub(super) ledger: Vec<KeyLedger>,
    pub(super) timeline: Timeline,
    /// Worker `w` records into slot `w % len`. A recorder's histograms span a minute at three
    /// digits (~140 KB each, six per recorder): one per worker would spread each request's
    /// records over tens of megabytes that no cache holds, and `perf` at the gRPC ceiling showed
    /// HDR recording cost twice as much that way. Two slots per core let workers on different
    /// threads meet at one lock only rarely.
    pub(super) recorders: Vec<CachePadded<Mutex<Recorder>>>,
    pub(super) pacing: Pacing,
    /// When the last worker ended: the run's end, however long its caller takes to notice.
    pub(super) last_done: Mutex<Option<Instant>>,
}

pub(super) async fn work(
    shared: &Shared,
    worker: usize,
    target: usize,
    mut client: TargetClient,
    mut waiter: Waiter,
) {
    let config = &shared.config;
    let targets = config.targets.len();
    let mut picker = KeyPicker::new(
        config.distribution,
        shared.keys.len(),
        config.seed.wrapping_add(worker as u64),
    );
    let mut interval = (0usize, Interval::new(targets));
    let measure_from = shared.pacing.start + config.warmup;
    let open = shared.pacing.is_open();
    // One timer per worker, re-armed per request.
    let mut deadline = Box::pin(tokio::time::sleep(config.timeout));
    // A ticket comes out due, so the worker sends at once.
    while let Some(intended) = shared.pacing.next(&mut waiter).await {
        let sent = Instant::now();
        let lag_us = sent.saturating_duration_since(intended).as_micros() as u64;
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
                recorder.targets[target].last = Some((
                    done.duration_since(shared.pacing.start).as_micros() as u64,
                    answer,
                ));
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
) -> Result<Answer, ErrorKind> {
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
        if attempt >= config.retries || Instant::now() + wait >= shared.pacing.stop_sending {
            return result;
        }
        attempt += 1;
        tokio::time::sleep(wait).await;
    }
}

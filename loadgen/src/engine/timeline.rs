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

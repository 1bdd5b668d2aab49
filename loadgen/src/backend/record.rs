//! What the backend saw, request by request, and the limiter's factor as its reports were
//! answered: kept whole (a run is tens of thousands of requests) and cut into intervals
//! afterwards, so every series and percentile comes from the same events.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// The limiter let it through and the backend answered.
    Served,
    /// The limiter refused it by quota (429) or ban (403): shed before any work.
    Denied,
    /// The limiter refused it because the adaptive factor is reduced (503): shed before any
    /// work.
    Shed,
    /// Let through, but it waited in line past the timeout (504).
    Failed,
    /// The limiter could not be asked.
    LimiterError,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    /// Arrival, from the record's start.
    at_us: u64,
    fate: Fate,
    /// The backend's own latency (line plus work), for served and failed requests.
    latency_us: u64,
}

/// Every request's fate, and every factor the limiter answered.
#[derive(Debug)]
pub struct Record {
    started: Instant,
    events: Mutex<Vec<Event>>,
    factors: Mutex<Vec<(u64, f64)>>,
}

/// One interval of a run, as the backend saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// The interval's end, in seconds from the start.
    pub t_s: f64,
    pub served_rps: f64,
    pub denied_rps: f64,
    pub shed_rps: f64,
    pub failed_rps: f64,
    /// Latency of the requests served that arrived in the interval (0 without any).
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// The limiter's factor at the interval's end (1 before any answer said otherwise).
    pub factor: f64,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            events: Mutex::default(),
            factors: Mutex::default(),
        }
    }
}

impl Record {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// A request that arrived `latency` ago met `fate`.
    pub fn request(&self, arrived: Instant, fate: Fate, latency: Duration) {
        let at_us = arrived.saturating_duration_since(self.started).as_micros() as u64;
        self.events.lock().push(Event {
            at_us,
            fate,
            latency_us: latency.as_micros() as u64,
        });
    }

    /// The limiter answered a report with this factor.
    pub fn factor(&self, factor: f64) {
        let now = self.now_us();
        self.factors.lock().push((now, factor));
    }

    /// The run so far, cut into intervals of `interval`.
    pub fn series(&self, interval: Duration) -> Vec<Point> {
        let interval_us = interval.as_micros().max(1) as u64;
        let events = self.events.lock().clone();
        let factors = self.factors.lock().clone();
        let end_us = events.iter().map(|event| event.at_us).max().unwrap_or(0);
        let mut points = Vec::new();
        let mut from_us = 0;
        while from_us <= end_us {
            let to_us = from_us + interval_us;
            let inside = || {
                events
                    .iter()
                    .filter(move |event| (from_us..to_us).contains(&event.at_us))
            };
            let rate = |fate: Fate| {
                inside().filter(|event| event.fate == fate).count() as f64 / interval.as_secs_f64()
            };
            let mut served: Vec<u64> = inside()
                .filter(|event| event.fate == Fate::Served)
                .map(|event| event.latency_us)
                .collect();
            served.sort_unstable();
            let factor = factors
                .iter()
                .take_while(|(at, _)| *at < to_us)
                .last()
                .map_or(1.0, |(_, factor)| *factor);
            points.push(Point {
                t_s: to_us as f64 / 1e6,
                served_rps: rate(Fate::Served),
                denied_rps: rate(Fate::Denied),
                shed_rps: rate(Fate::Shed),
                failed_rps: rate(Fate::Failed),
                p50_ms: percentile_ms(&served, 0.5),
                p90_ms: percentile_ms(&served, 0.9),
                p99_ms: percentile_ms(&served, 0.99),
                factor,
            });
            from_us = to_us;
        }
        points
    }

    /// The latency quantile `q` of requests served that arrived from `from` on (from the
    /// start), and how many there were.
    pub fn served_latency_since(&self, from: Duration, q: f64) -> (f64, usize) {
        let from_us = from.as_micros() as u64;
        let mut served: Vec<u64> = self
            .events
            .lock()
            .iter()
            .filter(|event| event.fate == Fate::Served && event.at_us >= from_us)
            .map(|event| event.latency_us)
            .collect();
        served.sort_unstable();
        (percentile_ms(&served, q), served.len())
    }

    /// How many requests met each fate, arriving from `from` on.
    pub fn fates_since(&self, from: Duration) -> Vec<(Fate, usize)> {
        let from_us = from.as_micros() as u64;
        let events = self.events.lock();
        [
            Fate::Served,
            Fate::Denied,
            Fate::Shed,
            Fate::Failed,
            Fate::LimiterError,
        ]
        .into_iter()
        .map(|fate| {
            let count = events
                .iter()
                .filter(|event| event.fate == fate && event.at_us >= from_us)
                .count();
            (fate, count)
        })
        .collect()
    }
}

/// The `q` quantile of sorted microseconds, in milliseconds (nearest rank; 0 when empty).
fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_count_rates_and_served_latency_by_arrival() {
        let record = Record::default();
        let at = |ms: u64| record.started + Duration::from_millis(ms);
        for (ms, fate, latency_ms) in [
            (10, Fate::Served, 5),
            (20, Fate::Served, 15),
            (30, Fate::Shed, 0),
            (110, Fate::Served, 50),
            (120, Fate::Failed, 900),
        ] {
            record.request(at(ms), fate, Duration::from_millis(latency_ms));
        }
        let points = record.series(Duration::from_millis(100));
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].served_rps, points[0].shed_rps), (20.0, 10.0));
        assert_eq!((points[0].p50_ms, points[0].p99_ms), (5.0, 15.0));
        assert_eq!((points[1].served_rps, points[1].failed_rps), (10.0, 10.0));
        assert_eq!(
            points[1].p90_ms, 50.0,
            "a failed request's wait is not a served latency"
        );
        assert_eq!(
            record.served_latency_since(Duration::from_millis(100), 0.99),
            (50.0, 1)
        );
    }
}

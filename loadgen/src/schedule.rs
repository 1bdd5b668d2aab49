//! When requests are due. In the open model request `k` is due at a time fixed before the run
//! (constant rate, or linear ramps between stages), whatever the server does; latency is then
//! measured from that intended time, so a slow server cannot hide (no coordinated omission).

use std::{str::FromStr, time::Duration};

/// A stage ramps linearly from the previous stage's rate to `rate` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub rate: f64,
}

impl FromStr for Stage {
    type Err = String;

    /// `DURATION:RATE`, e.g. `10s:5000`.
    fn from_str(text: &str) -> Result<Self, String> {
        let fix = "write stages as DURATION:RATE, e.g. 10s:5000";
        let (duration, rate) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: {fix}"))?;
        let duration = sluice::config::parse_duration(duration)?;
        let rate: f64 = rate
            .parse()
            .map_err(|_| format!("rate `{rate}` is not a number; {fix}"))?;
        if !(rate >= 0.0 && rate.is_finite()) || duration.is_zero() {
            return Err(format!(
                "`{text}`: the rate must be >= 0 and the duration > 0; {fix}"
            ));
        }
        Ok(Stage { duration, rate })
    }
}

/// Intended send times of an open-model run.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// (start offset in s, start rate, end rate, duration in s) per segment.
    segments: Vec<(f64, f64, f64, f64)>,
    /// Requests due before each segment starts.
    counts_before: Vec<f64>,
    /// A constant rate after the last segment, when there are no stages (None: the run ends).
    steady: Option<f64>,
}

impl Schedule {
    pub fn constant(rate: f64) -> Self {
        Self {
            segments: Vec::new(),
            counts_before: Vec::new(),
            steady: Some(rate),
        }
    }

    /// Ramps from `start_rate` through each stage.
    pub fn stages(start_rate: f64, stages: &[Stage]) -> Self {
        let mut segments = Vec::new();
        let mut counts_before = Vec::new();
        let (mut offset, mut rate, mut count) = (0.0, start_rate, 0.0);
        for stage in stages {
            let length = stage.duration.as_secs_f64();
            segments.push((offset, rate, stage.rate, length));
            counts_before.push(count);
            count += (rate + stage.rate) / 2.0 * length;
            offset += length;
            rate = stage.rate;
        }
        Self {
            segments,
            counts_before,
            steady: None,
        }
    }

    /// The constant rate, when the schedule is one.
    pub fn rate(&self) -> Option<f64> {
        self.steady
    }

    /// The total length of a staged schedule.
    pub fn length(&self) -> Option<Duration> {
        self.steady.is_none().then(|| {
            Duration::from_secs_f64(
                self.segments
                    .last()
                    .map_or(0.0, |&(offset, _, _, length)| offset + length),
            )
        })
    }

    /// When request `k` (0-based) is due, from the start of the run; `None` past the end.
    pub fn due(&self, k: u64) -> Option<Duration> {
        let position = k as f64;
        if let Some(rate) = self.steady {
            return (rate > 0.0).then(|| Duration::from_secs_f64(position / rate));
        }
        // The segment in which the cumulative count passes k.
        let index = self
            .counts_before
            .partition_point(|&before| before <= position)
            .checked_sub(1)?;
        let (offset, r0, r1, length) = self.segments[index];
        let wanted = position - self.counts_before[index];
        // count(t) = r0 t + (r1 - r0) t^2 / (2 length); solve count(t) = wanted.
        let slope = (r1 - r0) / length;
        let t = if slope.abs() < 1e-12 {
            if r0 <= 0.0 {
                return self.due_after(index, k);
            }
            wanted / r0
        } else {
            let discriminant = r0 * r0 + 2.0 * slope * wanted;
            if discriminant < 0.0 {
                return self.due_after(index, k);
            }
            (discriminant.sqrt() - r0) / slope
        };
        if t >= length {
            return self.due_after(index, k);
        }
        Some(Duration::from_secs_f64(offset + t.max(0.0)))
    }

    /// Request `k` falls in a later segment than `index` (or past the end).
    fn due_after(&self, index: usize, k: u64) -> Option<Duration> {
        let next = index + 1;
        if next >= self.segments.len() || (k as f64) < self.counts_before[next] {
            return None;
        }
        self.due(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_spaces_requests_evenly() {
        let schedule = Schedule::constant(1_000.0);
        assert_eq!(schedule.due(0), Some(Duration::ZERO));
        assert_eq!(schedule.due(2_500), Some(Duration::from_millis(2_500)));
        assert_eq!(schedule.length(), None);
    }

    #[test]
    fn ramps_are_integrated() {
        // 0 -> 100/s over 10 s (500 requests), then 100/s for 10 s (1,000 more).
        let schedule = Schedule::stages(
            0.0,
            &[
                Stage {
                    duration: Duration::from_secs(10),
                    rate: 100.0,
                },
                Stage {
                    duration: Duration::from_secs(10),
                    rate: 100.0,
                },
            ],
        );
        // count(t) = 5 t^2 on the ramp: request 125 is due at 5 s.
        let due = schedule.due(125).unwrap().as_secs_f64();
        assert!((due - 5.0).abs() < 1e-9, "{due}");
        let due = schedule.due(1_000).unwrap().as_secs_f64();
        assert!((due - 15.0).abs() < 1e-9, "{due}");
        assert!(schedule.due(1_500).is_none(), "past the end");
        assert_eq!(schedule.length(), Some(Duration::from_secs(20)));
    }

    #[test]
    fn stages_parse_with_clear_errors() {
        assert_eq!(
            "10s:5000".parse::<Stage>(),
            Ok(Stage {
                duration: Duration::from_secs(10),
                rate: 5000.0
            })
        );
        assert!(
            "10s"
                .parse::<Stage>()
                .unwrap_err()
                .contains("DURATION:RATE")
        );
        assert!("10:5".parse::<Stage>().unwrap_err().contains("no unit"));
        assert!("1s:-5".parse::<Stage>().unwrap_err().contains(">= 0"));
    }
}

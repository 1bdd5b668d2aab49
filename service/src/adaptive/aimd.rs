//! The adaptive limit's controller: a factor in `[floor, 1]` that every `adaptive` rule's limits
//! are multiplied by, moved once per window by what callers reported of the backend in it. AIMD,
//! as TCP moves its window: a window whose p90 latency stays under the target and whose error
//! ratio stays under its bound adds `increase`; any other multiplies by `decrease`; a window with
//! too few reports changes nothing.
//!
//! Pure integer arithmetic on the factor (in parts per million) and one window's counts, like the
//! algorithms, so `lua/adaptive.lua` computes exactly the same: the caller owns time and where
//! the shared state is kept (a node's memory, or Redis for a fleet). A window is kept as counts,
//! not latencies: "p90 above the target" is "more than a tenth of the reports were slower than
//! the target", which adds up across nodes and batches where percentiles do not.

/// A factor of 1: the configured limits unchanged.
pub const WHOLE: u64 = 1_000_000;

/// How the factor moves. Ratios are in parts per million of [`WHOLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aimd {
    /// A report slower than this is slow; a window with more than a tenth slow is overloaded.
    pub target_latency_us: u64,
    /// A window whose failed share is above this is overloaded.
    pub max_error_ppm: u64,
    /// The lowest factor: the least of its limits a rule keeps.
    pub floor_ppm: u64,
    /// Added after a healthy window.
    pub increase_ppm: u64,
    /// Multiplied by (over [`WHOLE`]) after an overloaded window.
    pub decrease_ppm: u64,
    /// Fewer reports than this in a window are no evidence either way.
    pub min_reports: u64,
}

/// What callers reported of the backend in (part of) one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub reports: u64,
    pub errors: u64,
    /// Reports slower than the target latency.
    pub slow: u64,
}

impl Window {
    /// Both windows' reports together.
    pub fn plus(self, other: Window) -> Window {
        Window {
            reports: self.reports.saturating_add(other.reports),
            errors: self.errors.saturating_add(other.errors),
            slow: self.slow.saturating_add(other.slow),
        }
    }
}

/// What a window said of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Overloaded,
    /// Too few reports to say.
    Unknown,
}

/// The state a fleet shares for one resource: the factor and the window being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    /// The window counted now: time / window length.
    pub epoch: u64,
    /// What was reported in it so far.
    pub counting: Window,
    pub factor_ppm: u64,
}

impl Aimd {
    /// Checks the parameters, naming the first one out of range and its range.
    pub fn validated(self) -> Result<Self, (&'static str, &'static str)> {
        let checks: [(bool, &'static str, &'static str); 5] = [
            (self.target_latency_us > 0, "target_latency", "above 0"),
            (
                self.max_error_ppm <= WHOLE,
                "max_error_ratio",
                "from 0 to 1",
            ),
            (
                self.floor_ppm > 0 && self.floor_ppm <= WHOLE,
                "floor",
                "above 0 and at most 1 (in steps of 0.000001)",
            ),
            (
                self.increase_ppm > 0 && self.increase_ppm <= WHOLE,
                "increase",
                "above 0 and at most 1 (in steps of 0.000001)",
            ),
            (
                self.decrease_ppm > 0 && self.decrease_ppm < WHOLE,
                "decrease",
                "above 0 and below 1 (in steps of 0.000001)",
            ),
        ];
        match checks.into_iter().find(|(ok, _, _)| !ok) {
            Some((_, field, range)) => Err((field, range)),
            None => Ok(self),
        }
    }

    pub fn verdict(&self, window: &Window) -> Verdict {
        if window.reports < self.min_reports.max(1) {
            return Verdict::Unknown;
        }
        // Integer comparisons of the shares, exact however large the counts (u128).
        let reports = u128::from(window.reports);
        let slow = u128::from(window.slow) * 10 > reports;
        let failing = u128::from(window.errors) * u128::from(WHOLE)
            > reports * u128::from(self.max_error_ppm);
        if slow || failing {
            Verdict::Overloaded
        } else {
            Verdict::Healthy
        }
    }

    /// The factor after `window`, from `factor_ppm` (itself brought into `[floor, 1]` first).
    pub fn next(&self, factor_ppm: u64, window: &Window) -> u64 {
        let factor = factor_ppm.clamp(self.floor_ppm, WHOLE);
        match self.verdict(window) {
            Verdict::Unknown => factor,
            Verdict::Healthy => (factor + self.increase_ppm).min(WHOLE),
            Verdict::Overloaded => (factor * self.decrease_ppm / WHOLE).max(self.floor_ppm),
        }
    }

    /// Adds `reported` at `now_us` to the shared state (none yet: a fresh factor of 1). The
    /// first report of a new window closes the last one, which moves the factor; the windows
    /// between, which nobody reported in, leave it as it is. Mirrored by `lua/adaptive.lua`.
    pub fn merge(
        &self,
        shared: Option<Shared>,
        now_us: u64,
        window_us: u64,
        reported: Window,
    ) -> Shared {
        let epoch = now_us / window_us.max(1);
        match shared {
            None => Shared {
                epoch,
                counting: reported,
                factor_ppm: WHOLE,
            },
            Some(shared) if epoch > shared.epoch => Shared {
                epoch,
                counting: reported,
                factor_ppm: self.next(shared.factor_ppm, &shared.counting),
            },
            // The same window (or a clock that stepped back: counted in the current one).
            Some(shared) => Shared {
                counting: shared.counting.plus(reported),
                ..shared
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn aimd() -> Aimd {
        Aimd {
            target_latency_us: 50_000,
            max_error_ppm: 50_000,
            floor_ppm: 100_000,
            increase_ppm: 50_000,
            decrease_ppm: 700_000,
            min_reports: 20,
        }
    }

    const HEALTHY: Window = Window {
        reports: 100,
        errors: 1,
        slow: 10,
    };
    const SLOW: Window = Window {
        reports: 100,
        errors: 0,
        slow: 11,
    };
    const FAILING: Window = Window {
        reports: 100,
        errors: 6,
        slow: 0,
    };

    #[test]
    fn slow_or_failing_windows_cut_the_factor_and_healthy_ones_restore_it() {
        let aimd = aimd();
        assert_eq!(aimd.next(WHOLE, &SLOW), 700_000);
        assert_eq!(aimd.next(WHOLE, &FAILING), 700_000);
        assert_eq!(aimd.next(700_000, &HEALTHY), 750_000);
        assert_eq!(aimd.next(980_000, &HEALTHY), WHOLE);
        assert_eq!(aimd.next(120_000, &SLOW), 100_000);
    }

    #[test]
    fn exactly_a_tenth_slow_or_the_error_bound_is_still_healthy() {
        let at_the_bounds = Window {
            reports: 100,
            errors: 5,
            slow: 10,
        };
        assert_eq!(aimd().verdict(&at_the_bounds), Verdict::Healthy);
    }

    #[test]
    fn a_window_of_few_reports_changes_nothing() {
        let few = Window {
            reports: 19,
            errors: 19,
            slow: 19,
        };
        assert_eq!(aimd().next(500_000, &few), 500_000);
        assert_eq!(aimd().verdict(&Window::default()), Verdict::Unknown);
    }

    #[test]
    fn parameters_out_of_range_are_named() {
        let bad = |change: fn(&mut Aimd)| {
            let mut aimd = aimd();
            change(&mut aimd);
            aimd.validated().unwrap_err().0
        };
        assert_eq!(bad(|a| a.floor_ppm = 0), "floor");
        assert_eq!(bad(|a| a.decrease_ppm = WHOLE), "decrease");
        assert_eq!(bad(|a| a.increase_ppm = 0), "increase");
        assert_eq!(bad(|a| a.max_error_ppm = WHOLE + 1), "max_error_ratio");
        assert_eq!(bad(|a| a.target_latency_us = 0), "target_latency");
        assert!(aimd().validated().is_ok());
    }

    #[test]
    fn merging_counts_a_window_and_moves_the_factor_when_the_next_begins() {
        let aimd = aimd();
        let first = aimd.merge(None, 1_500, 1_000, SLOW);
        assert_eq!((first.epoch, first.factor_ppm), (1, WHOLE));
        let same = aimd.merge(Some(first), 1_999, 1_000, SLOW);
        assert_eq!(same.counting.reports, 200);
        let next = aimd.merge(Some(same), 2_000, 1_000, HEALTHY);
        assert_eq!(
            (next.epoch, next.factor_ppm, next.counting),
            (2, 700_000, HEALTHY)
        );
        // Silent windows between move nothing more.
        let later = aimd.merge(Some(next), 9_000, 1_000, Window::default());
        assert_eq!(later.factor_ppm, 750_000);
        let stepped_back = aimd.merge(Some(later), 100, 1_000, HEALTHY);
        assert_eq!((stepped_back.epoch, stepped_back.counting), (9, HEALTHY));
    }

    fn any_window() -> impl Strategy<Value = Window> {
        (0u64..1_000, 0u64..1_000, 0u64..1_000).prop_map(|(reports, errors, slow)| Window {
            reports,
            errors: errors.min(reports),
            slow: slow.min(reports),
        })
    }

    proptest! {
        #[test]
        fn the_factor_stays_between_the_floor_and_one(
            start in 0u64..2_000_000,
            windows in proptest::collection::vec(any_window(), 0..50),
        ) {
            let aimd = aimd();
            let mut factor = start;
            for window in &windows {
                factor = aimd.next(factor, window);
                prop_assert!((aimd.floor_ppm..=WHOLE).contains(&factor), "{factor}");
            }
        }

        #[test]
        fn steady_input_converges_within_the_windows_arithmetic_says(start in 100_000u64..=WHOLE) {
            let aimd = aimd();
            // Healthy: back to 1 within (1 - floor) / increase windows.
            let mut factor = start;
            for _ in 0..(WHOLE - aimd.floor_ppm).div_ceil(aimd.increase_ppm) {
                factor = aimd.next(factor, &HEALTHY);
            }
            prop_assert_eq!(factor, WHOLE);
            // Overloaded: down to the floor within log(floor) / log(decrease) windows.
            let windows = ((aimd.floor_ppm as f64 / 1e6).ln() / (aimd.decrease_ppm as f64 / 1e6).ln()).ceil();
            let mut factor = start;
            for _ in 0..windows as usize {
                factor = aimd.next(factor, &SLOW);
            }
            prop_assert_eq!(factor, aimd.floor_ppm);
        }

        #[test]
        fn one_overloaded_window_always_cuts_unless_at_the_floor(start in 100_000u64..=WHOLE) {
            let aimd = aimd();
            let next = aimd.next(start, &SLOW);
            prop_assert!(next < start || start == aimd.floor_ppm);
        }

        #[test]
        fn merging_in_any_split_counts_every_report_once(
            parts in proptest::collection::vec(any_window(), 1..20),
        ) {
            let aimd = aimd();
            let mut shared = None;
            for part in &parts {
                shared = Some(aimd.merge(shared, 5_000, 1_000, *part));
            }
            let total = parts.iter().fold(Window::default(), |sum, part| sum.plus(*part));
            prop_assert_eq!(shared.unwrap().counting, total);
        }
    }
}

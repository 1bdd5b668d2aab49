//! The adaptive limit's controller (issue 18, its first part): a factor in `[floor, 1]` that
//! every `adaptive` rule's limit will be multiplied by, moved once per window by what callers
//! reported of the backend in it. AIMD, as TCP moves its window: a window whose latency (p90)
//! stays under the target and whose error ratio stays under its bound adds `increase`; any
//! other multiplies by `decrease`; a window with too few reports changes nothing.
//!
//! Pure arithmetic on the factor and one window's figures, like the algorithms: the caller owns
//! time, the windows and where the factor is kept (a node, or Redis for a fleet).

/// How the factor moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    /// A window's p90 latency above this is overload.
    pub target_latency_us: u64,
    /// A window's share of failed calls above this is overload.
    pub max_error_ratio: f64,
    /// The lowest factor: the least of its limit a rule keeps.
    pub floor: f64,
    /// Added after a healthy window.
    pub increase: f64,
    /// Multiplied by after an overloaded window.
    pub decrease: f64,
    /// Fewer reports than this in a window are no evidence either way.
    pub min_reports: u64,
}

/// What callers reported of the backend in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub reports: u64,
    pub errors: u64,
    pub latency_p90_us: u64,
}

/// What a window said of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Overloaded,
    /// Too few reports to say.
    Unknown,
}

impl Aimd {
    /// Checks the parameters, naming the first one out of range and its range.
    pub fn validated(self) -> Result<Self, (&'static str, &'static str)> {
        let checks: [(bool, &'static str, &'static str); 5] = [
            (self.target_latency_us > 0, "target_latency", "above 0"),
            (
                (0.0..=1.0).contains(&self.max_error_ratio),
                "max_error_ratio",
                "from 0 to 1",
            ),
            (
                self.floor > 0.0 && self.floor <= 1.0,
                "floor",
                "above 0 and at most 1",
            ),
            (
                self.increase > 0.0 && self.increase <= 1.0,
                "increase",
                "above 0 and at most 1",
            ),
            (
                self.decrease > 0.0 && self.decrease < 1.0,
                "decrease",
                "above 0 and below 1",
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
        let error_ratio = window.errors as f64 / window.reports as f64;
        if window.latency_p90_us > self.target_latency_us || error_ratio > self.max_error_ratio {
            Verdict::Overloaded
        } else {
            Verdict::Healthy
        }
    }

    /// The factor after `window`, from `factor` (itself brought into `[floor, 1]` first).
    pub fn next(&self, factor: f64, window: &Window) -> f64 {
        let factor = if factor.is_nan() {
            1.0
        } else {
            factor.clamp(self.floor, 1.0)
        };
        match self.verdict(window) {
            Verdict::Unknown => factor,
            Verdict::Healthy => (factor + self.increase).min(1.0),
            Verdict::Overloaded => (factor * self.decrease).max(self.floor),
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
            max_error_ratio: 0.05,
            floor: 0.1,
            increase: 0.05,
            decrease: 0.7,
            min_reports: 20,
        }
    }

    const HEALTHY: Window = Window {
        reports: 100,
        errors: 1,
        latency_p90_us: 20_000,
    };
    const SLOW: Window = Window {
        reports: 100,
        errors: 0,
        latency_p90_us: 80_000,
    };
    const FAILING: Window = Window {
        reports: 100,
        errors: 10,
        latency_p90_us: 20_000,
    };

    #[test]
    fn slow_or_failing_windows_cut_the_factor_and_healthy_ones_restore_it() {
        let aimd = aimd();
        assert!((aimd.next(1.0, &SLOW) - 0.7).abs() < 1e-12);
        assert!((aimd.next(1.0, &FAILING) - 0.7).abs() < 1e-12);
        assert!((aimd.next(0.7, &HEALTHY) - 0.75).abs() < 1e-12);
        assert_eq!(aimd.next(0.98, &HEALTHY), 1.0);
        assert_eq!(aimd.next(0.12, &SLOW), 0.1);
    }

    #[test]
    fn a_window_of_few_reports_changes_nothing() {
        let few = Window {
            reports: 19,
            errors: 19,
            latency_p90_us: 1_000_000,
        };
        assert_eq!(aimd().next(0.5, &few), 0.5);
        assert_eq!(aimd().verdict(&Window::default()), Verdict::Unknown);
    }

    #[test]
    fn parameters_out_of_range_are_named() {
        let bad = |change: fn(&mut Aimd)| {
            let mut aimd = aimd();
            change(&mut aimd);
            aimd.validated().unwrap_err().0
        };
        assert_eq!(bad(|a| a.floor = 0.0), "floor");
        assert_eq!(bad(|a| a.decrease = 1.0), "decrease");
        assert_eq!(bad(|a| a.increase = 0.0), "increase");
        assert_eq!(bad(|a| a.max_error_ratio = 1.5), "max_error_ratio");
        assert_eq!(bad(|a| a.target_latency_us = 0), "target_latency");
        assert!(aimd().validated().is_ok());
    }

    fn any_window() -> impl Strategy<Value = Window> {
        (0u64..1_000, 0u64..1_000, 0u64..200_000).prop_map(|(reports, errors, latency)| Window {
            reports,
            errors: errors.min(reports),
            latency_p90_us: latency,
        })
    }

    proptest! {
        #[test]
        fn the_factor_stays_between_the_floor_and_one(
            start in -1.0f64..2.0,
            windows in proptest::collection::vec(any_window(), 0..50),
        ) {
            let aimd = aimd();
            let mut factor = start;
            for window in &windows {
                factor = aimd.next(factor, window);
                prop_assert!((aimd.floor..=1.0).contains(&factor), "{factor}");
            }
        }

        #[test]
        fn steady_input_converges_within_the_windows_arithmetic_says(start in 0.1f64..=1.0) {
            let aimd = aimd();
            // Healthy: back to 1 within (1 - floor) / increase windows.
            let mut factor = start;
            for _ in 0..((1.0 - aimd.floor) / aimd.increase).ceil() as usize {
                factor = aimd.next(factor, &HEALTHY);
            }
            prop_assert_eq!(factor, 1.0);
            // Overloaded: down to the floor within log(floor) / log(decrease) windows.
            let mut factor = start;
            for _ in 0..(aimd.floor.ln() / aimd.decrease.ln()).ceil() as usize {
                factor = aimd.next(factor, &SLOW);
            }
            prop_assert_eq!(factor, aimd.floor);
        }

        #[test]
        fn one_overloaded_window_always_cuts_unless_at_the_floor(start in 0.1f64..=1.0) {
            let aimd = aimd();
            let next = aimd.next(start, &SLOW);
            prop_assert!(next < start || start == aimd.floor);
        }
    }
}

//! Rate-limiting algorithms as pure arithmetic.
//!
//! Every algorithm is a function of (parameters, state, cost, `now`) to a [`Decision`] and a new
//! state. There is no clock, lock or I/O in here: the caller (a store) owns time and storage, so
//! the same code decides in memory, and the Lua scripts in `lua/` mirror it operation for
//! operation for Redis.
//!
//! Time is in microseconds on any monotonic-enough scale (a store's clock, Redis `TIME`). A clock
//! that steps backwards is treated as "no time passed", never as negative time.

pub mod ban;
pub mod concurrency;
mod fixed_window;
mod gcra;
mod sliding_window_counter;
mod sliding_window_log;
pub mod stacked;
mod token_bucket;

pub use fixed_window::{FixedWindow, FixedWindowState};
pub use gcra::{Gcra, GcraState};
pub use sliding_window_counter::{SlidingWindowCounter, SlidingWindowCounterState};
pub use sliding_window_log::{SlidingWindowLog, SlidingWindowLogState};
pub use token_bucket::{TokenBucket, TokenBucketState};

/// Microseconds per second.
pub const MICROS_PER_SEC: u64 = 1_000_000;

/// Retry-after reported when waiting can never help (the cost exceeds what the rule can ever allow).
pub const NEVER: u64 = u64::MAX;

/// Largest integer every value stays below, so that the Lua mirror (IEEE doubles) computes
/// exactly what Rust computes. Configuration validation keeps parameters under it.
pub const EXACT_INTEGER_LIMIT: u64 = 1 << 53;

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The most the key can spend at once under this rule.
    pub limit: u64,
    /// What the key can still spend now, after this request.
    pub remaining: u64,
    /// Microseconds until the key's state is back to fresh (full quota) if it spends nothing.
    pub reset_after_us: u64,
    /// Microseconds until the same request would be allowed; 0 when allowed, [`NEVER`] if never.
    pub retry_after_us: u64,
}

/// One configured algorithm with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    TokenBucket(TokenBucket),
    Gcra(Gcra),
    FixedWindow(FixedWindow),
    SlidingWindowCounter(SlidingWindowCounter),
    SlidingWindowLog(SlidingWindowLog),
}

/// A key's state under one of the algorithms. The sliding log's queue is boxed so every other
/// state stays small: the memory store holds one of these per key.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    TokenBucket(TokenBucketState),
    Gcra(GcraState),
    FixedWindow(FixedWindowState),
    SlidingWindowCounter(SlidingWindowCounterState),
    SlidingWindowLog(Box<SlidingWindowLogState>),
}

/// The algorithm names accepted in configuration, in the order they are documented.
pub const ALGORITHM_NAMES: [&str; 5] = [
    "token_bucket",
    "gcra",
    "fixed_window",
    "sliding_window_counter",
    "sliding_window_log",
];

impl Algorithm {
    /// The configuration name of this algorithm (one of [`ALGORITHM_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::TokenBucket(_) => ALGORITHM_NAMES[0],
            Algorithm::Gcra(_) => ALGORITHM_NAMES[1],
            Algorithm::FixedWindow(_) => ALGORITHM_NAMES[2],
            Algorithm::SlidingWindowCounter(_) => ALGORITHM_NAMES[3],
            Algorithm::SlidingWindowLog(_) => ALGORITHM_NAMES[4],
        }
    }

    /// The most a key can spend at once; a cost above it can never be allowed.
    pub fn limit(&self) -> u64 {
        match self {
            Algorithm::TokenBucket(a) => a.capacity(),
            Algorithm::Gcra(a) => a.burst(),
            Algorithm::FixedWindow(a) => a.limit(),
            Algorithm::SlidingWindowCounter(a) => a.limit(),
            Algorithm::SlidingWindowLog(a) => a.limit(),
        }
    }

    /// The time over which `limit` is restored, for the `w` of a `RateLimit-Policy` header.
    pub fn policy_window_us(&self) -> u64 {
        match self {
            Algorithm::TokenBucket(a) => a.full_refill_us(),
            Algorithm::Gcra(a) => a.full_refill_us(),
            Algorithm::FixedWindow(a) => a.window_us(),
            Algorithm::SlidingWindowCounter(a) => a.window_us(),
            Algorithm::SlidingWindowLog(a) => a.window_us(),
        }
    }

    /// The same algorithm with `share` (0 < share <= 1) of the limit and of the rate: what one
    /// node allows on its own while the shared store is down. Never below 1.
    pub fn scaled(&self, share: f64) -> Algorithm {
        let part = |value: u64| ((value as f64 * share).floor() as u64).max(1);
        match self {
            Algorithm::TokenBucket(a) => Algorithm::TokenBucket(TokenBucket::new(
                part(a.capacity()),
                a.refill_per_second() * share,
            )),
            Algorithm::Gcra(a) => {
                Algorithm::Gcra(Gcra::new(a.rate_per_second() * share, part(a.burst())))
            }
            Algorithm::FixedWindow(a) => {
                Algorithm::FixedWindow(FixedWindow::new(part(a.limit()), a.window_us()))
            }
            Algorithm::SlidingWindowCounter(a) => Algorithm::SlidingWindowCounter(
                SlidingWindowCounter::new(part(a.limit()), a.window_ms()),
            ),
            Algorithm::SlidingWindowLog(a) => {
                Algorithm::SlidingWindowLog(SlidingWindowLog::new(part(a.limit()), a.window_us()))
            }
        }
    }

    /// The state of a key that has never been seen (or whose state expired).
    pub fn fresh_state(&self, now_us: u64) -> State {
        match self {
            Algorithm::TokenBucket(a) => State::TokenBucket(a.fresh_state(now_us)),
            Algorithm::Gcra(_) => State::Gcra(GcraState::default()),
            Algorithm::FixedWindow(_) => State::FixedWindow(FixedWindowState::default()),
            Algorithm::SlidingWindowCounter(_) => {
                State::SlidingWindowCounter(SlidingWindowCounterState::default())
            }
            Algorithm::SlidingWindowLog(_) => State::SlidingWindowLog(Box::default()),
        }
    }

    /// Decides whether `cost` may be spent at `now_us`, updating `state`.
    ///
    /// A `state` of another algorithm (the rule changed) is replaced by a fresh one first.
    /// A `cost` of 0 is a pure query: always allowed, it reports what remains.
    #[inline]
    pub fn check(&self, state: &mut State, cost: u64, now_us: u64) -> Decision {
        if !self.owns(state) {
            *state = self.fresh_state(now_us);
        }
        match (self, state) {
            (Algorithm::TokenBucket(a), State::TokenBucket(s)) => a.check(s, cost, now_us),
            (Algorithm::Gcra(a), State::Gcra(s)) => a.check(s, cost, now_us),
            (Algorithm::FixedWindow(a), State::FixedWindow(s)) => a.check(s, cost, now_us),
            (Algorithm::SlidingWindowCounter(a), State::SlidingWindowCounter(s)) => {
                a.check(s, cost, now_us)
            }
            (Algorithm::SlidingWindowLog(a), State::SlidingWindowLog(s)) => {
                a.check(s, cost, now_us)
            }
            _ => unreachable!("state was replaced by one of this algorithm above"),
        }
    }

    /// What a key's state means at `now_us`, without changing it.
    pub fn peek(&self, state: &State, now_us: u64) -> Decision {
        let mut scratch = state.clone();
        self.check(&mut scratch, 0, now_us)
    }

    fn owns(&self, state: &State) -> bool {
        matches!(
            (self, state),
            (Algorithm::TokenBucket(_), State::TokenBucket(_))
                | (Algorithm::Gcra(_), State::Gcra(_))
                | (Algorithm::FixedWindow(_), State::FixedWindow(_))
                | (
                    Algorithm::SlidingWindowCounter(_),
                    State::SlidingWindowCounter(_)
                )
                | (Algorithm::SlidingWindowLog(_), State::SlidingWindowLog(_))
        )
    }
}

/// Start of the window of length `window_us` that contains `now_us`.
pub(crate) fn window_start(now_us: u64, window_us: u64) -> u64 {
    now_us - now_us % window_us
}

#[cfg(test)]
pub(crate) mod testkit;

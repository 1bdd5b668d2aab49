//! Adaptive limits: callers report how the backend behind a resource answers; a controller
//! per resource lowers every `adaptive` rule's limits while the backend is slow or failing and
//! restores them as it recovers. [`aimd`] is the pure arithmetic; [`Controller`] a node's side.

pub mod aimd;
mod controller;

pub use aimd::{Aimd, Shared, Verdict, WHOLE, Window};
pub use controller::{Controller, Controllers, FLUSHES_PER_WINDOW};

/// A resource's adaptive policy: how its factor moves, and over what window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePolicy {
    pub aimd: Aimd,
    pub window_us: u64,
}

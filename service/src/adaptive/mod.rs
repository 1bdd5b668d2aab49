//! Adaptive limits: callers report how the backend behind a resource answers; a controller
//! per resource lowers every `adaptive` rule's limits while the backend is slow or failing and
//! restores them as it recovers. [`aimd`] is the pure arithmetic.

pub mod aimd;

pub use aimd::{Aimd, Shared, Verdict, WHOLE, Window};

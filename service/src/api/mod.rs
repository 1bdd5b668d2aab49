//! The network APIs: thin adapters that translate a protocol into [`crate::limiter`] calls.

pub mod answer;
pub mod capped;
pub mod grpc;
pub mod http;
pub(crate) mod problem;
pub mod report;
pub mod rls;
pub mod serve;

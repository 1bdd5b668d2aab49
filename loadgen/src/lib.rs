//! Sluice's load generator: drives the limiter over gRPC or HTTP in an open or closed model,
//! measures latency honestly (from the intended send time), writes HDR reports with charts,
//! and checks per key that the limiter admitted what its rule allows (the ledger).
//!
//! `engine` drives load into `stats`; `session` runs one test end to end (ledger, `report`);
//! `demo` embeds the service and runs a session against it; `main.rs` only parses flags.

pub mod admin;
pub mod compare;
pub mod demo;
pub mod engine;
pub mod grpc;
mod hpack;
mod http1;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod report;
pub mod schedule;
pub mod session;
pub mod stack;
pub mod stats;
pub mod target;
pub mod tui;

//! Sluice's load generator: drives the limiter over gRPC or HTTP in an open or closed model,
//! measures latency honestly (from the intended send time), writes HDR reports with charts,
//! and checks per key that the limiter admitted what its rule allows (the ledger).
//!
//! `engine` drives load through `client` (one module per protocol, sharing the types of
//! `wire`) into `stats`; `session` runs one test end to end (`ledger`, `scrape`, `report`);
//! `demo` embeds the service and runs a session against it; `chaos` runs one through nodes on
//! a network it breaks on a schedule; `main.rs` parses flags.

pub mod admin;
pub mod backend;
pub mod chaos;
pub mod client;
pub mod compare;
pub mod demo;
pub mod engine;
pub use sluice_keys as keys;
pub mod ledger;
pub mod metrics;
pub mod report;
pub mod schedule;
pub mod scrape;
pub mod session;
pub mod stack;
pub mod stats;
pub mod tui;
pub mod wire;

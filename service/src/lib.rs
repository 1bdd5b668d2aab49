//! Sluice: a distributed rate-limiting service.
//!
//! A request flows `api::{grpc,http}` → [`limiter::Limiter`] (validation, rule lookup,
//! metrics) → [`store::Store`] (state, atomically per key) → [`algorithm`] (pure decision).
//! See `docs/architecture.md`.

pub mod adaptive;
pub mod admin;
pub mod algorithm;
pub mod api;
pub mod auth;
pub mod central;
pub mod clock;
pub mod config;
pub mod decision_log;
pub mod heavy_hitters;
pub mod limiter;
pub mod metrics;
pub mod policy;
pub mod probe;
pub mod reload;
pub mod rls;
pub mod rules;
pub mod server;
pub mod shutdown;
pub mod store;

/// The git commit this binary was built from ("unknown" outside a checkout).
pub const BUILD_COMMIT: &str = env!("SLUICE_BUILD_COMMIT");

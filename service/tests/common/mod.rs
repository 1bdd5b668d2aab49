//! Starts real servers in-process on free loopback ports, through the same entry point the
//! binary uses, and connects real clients to them.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod binary;
pub mod redis;

use sluice::{
    config::{Config, Overrides},
    server::{self, RunningServer},
};
use sluice_proto::v1::{admin_client::AdminClient, rate_limiter_client::RateLimiterClient};
use tonic::transport::Channel;

/// The admin-role token of every test server.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The read-role token of every test server.
pub const READ_TOKEN: &str = "test-read-token-0123456789";
/// The report-role token of every test server (backend reports for adaptive limits).
pub const REPORT_TOKEN: &str = "test-report-token-0123456789";

/// Every listener on a free loopback port, the admin API on, with [`ADMIN_TOKEN`] (caller
/// `ops`), [`READ_TOKEN`] (caller `grafana`) and [`REPORT_TOKEN`] (caller `backend`).
pub fn loopback_overrides() -> Overrides {
    Overrides::loopback(&format!(
        "ops:admin:{ADMIN_TOKEN},grafana:read:{READ_TOKEN},backend:report:{REPORT_TOKEN}"
    ))
}

pub fn config(toml: &str) -> Config {
    Config::parse(toml, "test", &loopback_overrides()).expect("test config is valid")
}

pub async fn start(toml: &str) -> RunningServer {
    server::start(config(toml)).await.expect("server starts")
}

pub async fn grpc_channel(server: &RunningServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr))
        .expect("valid uri")
        .connect()
        .await
        .expect("gRPC connects")
}

pub async fn grpc_client(server: &RunningServer) -> RateLimiterClient<Channel> {
    RateLimiterClient::new(grpc_channel(server).await)
}

pub fn http_url(server: &RunningServer, path: &str) -> String {
    format!("http://{}{}", server.http_addr, path)
}

pub fn admin_url(server: &RunningServer, path: &str) -> String {
    let addr = server.admin_addr.expect("test servers run the admin API");
    format!("http://{addr}{path}")
}

/// An admin gRPC client; its calls carry no token unless the test adds one.
pub async fn admin_grpc_client(server: &RunningServer) -> AdminClient<Channel> {
    let url = admin_url(server, "");
    let channel = Channel::from_shared(url)
        .expect("valid uri")
        .connect()
        .await
        .expect("admin gRPC connects");
    AdminClient::new(channel)
}

/// Resets `key` on `resource` through the admin API with the admin token; whether it had state.
pub async fn admin_reset(server: &RunningServer, key: &str, resource: &str) -> bool {
    let response = reqwest::Client::new()
        .post(admin_url(server, "/v1/keys/reset"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "key": key, "resource": resource }))
        .send()
        .await
        .expect("admin reset answers");
    assert_eq!(response.status(), 200, "admin reset");
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    body["existed"].as_bool().expect("existed is a bool")
}

/// The server's Prometheus text page, fetched over HTTP as a scraper would.
pub async fn metrics_text(server: &RunningServer) -> String {
    reqwest::get(http_url(server, "/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a text body")
}

/// A token bucket of `capacity` that refills one token per ~12 days: "no refill" for a test,
/// while every parameter stays valid.
pub fn no_refill_bucket(resource: &str, capacity: u64) -> String {
    format!(
        "[rules.{resource}]\nalgorithm = \"token_bucket\"\ncapacity = {capacity}\nrefill_per_second = 0.000001\n"
    )
}

/// Redis store settings for tests: generous deadline (debug builds on 2 shared cores), no deny
/// cache unless a test turns it on.
pub fn redis_config(urls: Vec<String>, cluster: bool) -> sluice::config::RedisConfig {
    sluice::config::RedisConfig {
        urls,
        cluster,
        sentinel: None,
        pool_size: 2,
        deadline: std::time::Duration::from_millis(250),
        prefix: "test:".into(),
        failure_mode: sluice::rules::FailureMode::Deny,
        fallback_share: 1.0,
        fallback_max_keys: 100_000,
        breaker_failures: 3,
        breaker_backoff: std::time::Duration::from_millis(300),
        deny_cache_keys: 0,
        max_in_flight: 128,
        fallback_share_live: false,
        queue_timeout: std::time::Duration::from_secs(1),
    }
}

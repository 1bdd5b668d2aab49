//! Failure modes against a real redis-server that is paused (SIGSTOP) or killed under load:
//! no request waits past the deadline, each rule answers by its failure mode, readiness and
//! metrics tell the truth, and service recovers within a second of Redis returning.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::redis::LocalRedis;
use sluice::server::RunningServer;
use sluice_proto::v1::{CheckRequest, CheckResponse, rate_limiter_client::RateLimiterClient};
use tonic::transport::Channel;

const DEADLINE_MS: u64 = 50;
/// Scheduling slack on two shared cores in a debug build, on top of the deadline.
const SLACK_MS: u64 = 150;

fn config(redis: &LocalRedis, mode: &str) -> String {
    format!(
        r#"
[backend]
kind = "redis"
[backend.redis]
urls = ["{}"]
deadline = "{DEADLINE_MS}ms"
failure_mode = "{mode}"
fallback_share = 0.5
breaker_failures = 3
breaker_backoff = "300ms"

[rules.api]
algorithm = "token_bucket"
capacity = 1000
refill_per_second = 1000

[rules.small]
algorithm = "fixed_window"
limit = 10
window = "1h"

[rules.strict]
algorithm = "fixed_window"
limit = 10
window = "1h"
failure_mode = "deny"

[rules.stacked]
[[rules.stacked.limits]]
name = "burst"
algorithm = "fixed_window"
limit = 6
window = "1h"
[[rules.stacked.limits]]
name = "hourly"
algorithm = "fixed_window"
limit = 20
window = "1h"
"#,
        redis.url()
    )
}

fn request(key: &str, resource: &str) -> CheckRequest {
    CheckRequest {
        key: key.into(),
        resource: resource.into(),
        cost: None,
    }
}

#[derive(Default, Debug)]
struct LoadReport {
    requests: u64,
    failed_over: u64,
    max_latency: Duration,
}

/// Four clients checking in a loop until stopped; every call's latency is recorded.
fn start_load(channel: Channel, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<LoadReport>> {
    (0..4)
        .map(|client| {
            let mut grpc = RateLimiterClient::new(channel.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut report = LoadReport::default();
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let started = Instant::now();
                    let response = grpc
                        .check(request(&format!("load-{client}"), "api"))
                        .await
                        .unwrap()
                        .into_inner();
                    report.max_latency = report.max_latency.max(started.elapsed());
                    report.requests += 1;
                    report.failed_over += u64::from(!response.reason.is_empty());
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                report
            })
        })
        .collect()
}

async fn finish_load(
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<LoadReport>>,
) -> LoadReport {
    stop.store(true, Ordering::Relaxed);
    let mut total = LoadReport::default();
    for task in tasks {
        let report = task.await.unwrap();
        total.requests += report.requests;
        total.failed_over += report.failed_over;
        total.max_latency = total.max_latency.max(report.max_latency);
    }
    total
}

async fn check(grpc: &mut RateLimiterClient<Channel>, key: &str, resource: &str) -> CheckResponse {
    grpc.check(request(key, resource))
        .await
        .unwrap()
        .into_inner()
}

async fn metric(node: &RunningServer, line_prefix: &str) -> f64 {
    let text = reqwest::get(common::http_url(node, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(line_prefix))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn readyz(node: &RunningServer) -> (u16, String) {
    let response = reqwest::get(common::http_url(node, "/readyz"))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Polls until a check is answered by Redis again; returns how long that took.
async fn time_to_recover(grpc: &mut RateLimiterClient<Channel>) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if check(grpc, "probe", "api").await.reason.is_empty() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("did not recover within 5 s");
}

#[derive(Clone, Copy)]
enum Outage {
    Pause,
    Kill,
}

async fn outage_scenario(mode: &str, outage: Outage) {
    let mut redis = common::redis::server();
    let node = common::start(&config(&redis, mode)).await;
    let channel = common::grpc_channel(&node).await;
    let mut grpc = RateLimiterClient::new(channel.clone());
    assert!(check(&mut grpc, "warm", "api").await.reason.is_empty());
    assert_eq!(readyz(&node).await.0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(channel, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    match outage {
        Outage::Pause => redis.pause().unwrap(),
        Outage::Kill => redis.kill(),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Each rule answers by its failure mode, with a reason.
    let during = check(&mut grpc, "fresh-key", "small").await;
    assert!(!during.reason.is_empty(), "{during:?}");
    match mode {
        "deny" => assert!(
            !during.allowed && during.reason == "store unavailable",
            "{during:?}"
        ),
        "allow" => assert!(during.allowed, "{during:?}"),
        _ => {
            assert!(during.allowed, "{during:?}");
            let mut admitted = 1;
            for _ in 0..20 {
                admitted += u32::from(check(&mut grpc, "fresh-key", "small").await.allowed);
            }
            assert_eq!(
                admitted, 5,
                "local mode allows fallback_share (0.5) of the limit of 10"
            );
        }
    }
    // A stacked rule's failure mode answers for every one of its limits.
    let stacked = check(&mut grpc, "fresh-key", "stacked").await;
    assert_eq!(stacked.limits.len(), 2, "{stacked:?}");
    assert!(!stacked.reason.is_empty(), "{stacked:?}");
    match mode {
        "deny" => assert!(
            stacked.limits.iter().all(|limit| !limit.allowed),
            "{stacked:?}"
        ),
        "allow" => assert!(
            stacked.allowed && stacked.limits.iter().all(|limit| limit.allowed),
            "{stacked:?}"
        ),
        _ => {
            let mut admitted = u32::from(stacked.allowed);
            for _ in 0..20 {
                admitted += u32::from(check(&mut grpc, "fresh-key", "stacked").await.allowed);
            }
            assert_eq!(
                admitted, 3,
                "local mode scales every limit by fallback_share: the tighter 6 becomes 3"
            );
        }
    }
    let strict = check(&mut grpc, "k", "strict").await;
    assert!(
        !strict.allowed,
        "a rule's own failure_mode = deny wins over the default: {strict:?}"
    );

    let (status, body) = readyz(&node).await;
    if mode == "deny" {
        assert_eq!(
            (status, body.as_str()),
            (503, "store unavailable; rules fail closed\n")
        );
    } else {
        assert_eq!(status, 200);
        assert!(body.starts_with("degraded"), "{body}");
    }
    assert_eq!(metric(&node, "sluice_fallback_active ").await, 1.0);
    assert!(
        metric(
            &node,
            &format!("sluice_fallback_decisions_total{{mode=\"{mode}\"}} ")
        )
        .await
            > 0.0
    );
    assert!(metric(&node, "sluice_store_errors_total{kind=\"circuit_open\"} ").await > 0.0);
    let failure_kind = match outage {
        Outage::Pause => "timeout",
        Outage::Kill => "unavailable",
    };
    assert!(
        metric(
            &node,
            &format!("sluice_store_errors_total{{kind=\"{failure_kind}\"}} ")
        )
        .await
            > 0.0
    );

    match outage {
        Outage::Pause => redis.resume().unwrap(),
        Outage::Kill => redis.restart().unwrap(),
    }
    let recovery = time_to_recover(&mut grpc).await;
    assert!(
        recovery <= Duration::from_secs(1),
        "recovered after {recovery:?}"
    );
    let report = finish_load(&stop, load).await;
    assert!(report.failed_over > 0, "{report:?}");
    assert!(
        report.max_latency <= Duration::from_millis(DEADLINE_MS + SLACK_MS),
        "a request waited {:?} (deadline {DEADLINE_MS} ms): {report:?}",
        report.max_latency
    );
    assert_eq!(readyz(&node).await.0, 200);
    assert_eq!(metric(&node, "sluice_store_circuit_state ").await, 0.0);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_with_redis_paused() {
    outage_scenario("deny", Outage::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_with_redis_killed_and_restarted() {
    outage_scenario("deny", Outage::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_with_redis_paused() {
    outage_scenario("allow", Outage::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_with_redis_killed_and_restarted() {
    outage_scenario("allow", Outage::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_with_redis_paused() {
    outage_scenario("local", Outage::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_with_redis_killed_and_restarted() {
    outage_scenario("local", Outage::Kill).await;
}

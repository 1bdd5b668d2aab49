//! Concurrency limits end to end over real HTTP and gRPC: Acquire takes a lease with the
//! rule's charge, a full key is refused until a lease ends (released, or expired), Check
//! refuses such a rule; and three nodes on one Redis never hold more than max_in_flight.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use sluice_proto::v1::{AcquireRequest, CheckRequest, ReleaseRequest};

/// "jobs": 2 in flight per key, a lease lasting 300 ms unless released; 100 a minute.
const RULES: &str = r#"
[rules.jobs]
algorithm = "fixed_window"
limit = 100
window = "1m"
[rules.jobs.concurrency]
max_in_flight = 2
lease_ttl = "300ms"

[rules.plain]
algorithm = "fixed_window"
limit = 5
window = "1m"
"#;

async fn post(server: &sluice::server::RunningServer, path: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(common::http_url(server, path))
        .header("x-api-key", key)
        .send()
        .await
        .expect("the node answers")
}

#[tokio::test]
async fn http_leases_are_granted_up_to_max_in_flight_and_end_on_release_or_expiry() {
    let server = common::start(RULES).await;
    let acquire = || post(&server, "/acquire?resource=jobs", "alice");
    let mut leases = Vec::new();
    for _ in 0..2 {
        let granted = acquire().await;
        assert_eq!(granted.status(), 200);
        let body: Value = granted.json().await.unwrap();
        assert_eq!(body["lease_ttl_ms"], 300.0);
        leases.push(body["lease"].as_str().unwrap().to_owned());
    }
    let full = acquire().await;
    assert_eq!(full.status(), 429);
    assert!(full.headers().contains_key("retry-after"));
    let body: Value = full.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("in flight"),
        "{body}"
    );
    assert!(body.get("lease").is_none());
    assert_eq!(body["remaining"], 98, "a full key is not charged");

    let release = async |lease: &str| {
        post(
            &server,
            &format!("/release?resource=jobs&lease={lease}"),
            "alice",
        )
        .await
    };
    let released: Value = release(&leases[0]).await.json().await.unwrap();
    assert_eq!(released["released"], true);
    let again: Value = release(&leases[0]).await.json().await.unwrap();
    assert_eq!(again["released"], false, "a lease ends once");
    assert_eq!(acquire().await.status(), 200);
    // Another key's slots are its own.
    assert_eq!(
        post(&server, "/acquire?resource=jobs", "bob")
            .await
            .status(),
        200
    );
    // Never released, the leases end by themselves (bounded wait: 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while acquire().await.status() != 200 {
        assert!(std::time::Instant::now() < deadline, "leases never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Check refuses a concurrency rule, Acquire a rule without one; a bad lease is named.
    for (path, field) in [
        ("/check?resource=jobs", "resource"),
        ("/acquire?resource=plain", "resource"),
        ("/release?resource=jobs&lease=nope", "lease"),
        ("/release?resource=jobs", "lease"),
    ] {
        let refused = post(&server, path, "alice").await;
        assert_eq!(refused.status(), 400, "{path}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
    server.shutdown();
}

#[tokio::test]
async fn grpc_acquire_answers_a_lease_and_release_ends_it() {
    let server = common::start(RULES).await;
    let mut client = common::grpc_client(&server).await;
    let acquire = AcquireRequest {
        key: "carol".into(),
        resource: "jobs".into(),
    };
    let first = client.acquire(acquire.clone()).await.unwrap().into_inner();
    assert!(first.decision.as_ref().unwrap().allowed);
    assert!(!first.lease.is_empty());
    assert_eq!(first.lease_ttl.unwrap().nanos, 300_000_000);
    client.acquire(acquire.clone()).await.unwrap();
    let full = client.acquire(acquire.clone()).await.unwrap().into_inner();
    let decision = full.decision.unwrap();
    assert!(!decision.allowed && full.lease.is_empty());
    assert!(decision.reason.contains("in flight"));
    let released = client
        .release(ReleaseRequest {
            key: "carol".into(),
            resource: "jobs".into(),
            lease: first.lease.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(released.released);
    assert!(
        client
            .acquire(acquire)
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
            .allowed
    );
    let check = client
        .check(CheckRequest {
            key: "carol".into(),
            resource: "jobs".into(),
            cost: None,
        })
        .await
        .unwrap_err();
    assert_eq!(check.code(), tonic::Code::InvalidArgument);
    assert!(check.message().contains("Acquire"), "{}", check.message());
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_never_hold_more_than_max_in_flight() {
    const MAX: u64 = 2;
    const CALLERS_PER_NODE: usize = 8;
    const ROUNDS: usize = 20;
    let redis = common::redis::server();
    let config = format!(
        "{}[rules.jobs]\nalgorithm = \"fixed_window\"\nlimit = 100000\nwindow = \"1m\"\n[rules.jobs.concurrency]\nmax_in_flight = {MAX}\nlease_ttl = \"1m\"\n",
        common::redis::backend(&[redis.url()], false)
    );
    let nodes = [
        common::start(&config).await,
        common::start(&config).await,
        common::start(&config).await,
    ];
    let held = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let granted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for node in &nodes {
        let channel = common::grpc_channel(node).await;
        for _ in 0..CALLERS_PER_NODE {
            let mut client =
                sluice_proto::v1::rate_limiter_client::RateLimiterClient::new(channel.clone());
            let (held, most, granted) = (held.clone(), most.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    let answer = client
                        .acquire(AcquireRequest {
                            key: "shared".into(),
                            resource: "jobs".into(),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    if answer.lease.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    // Counted after the grant arrived and before the release is sent: what this
                    // caller sees held is never more than what the store holds.
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    granted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    held.fetch_sub(1, Ordering::SeqCst);
                    let released = client
                        .release(ReleaseRequest {
                            key: "shared".into(),
                            resource: "jobs".into(),
                            lease: answer.lease,
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(released.released);
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (most, granted) = (most.load(Ordering::SeqCst), granted.load(Ordering::SeqCst));
    assert!(
        most <= MAX,
        "{most} leases held at once across the nodes, over {MAX}"
    );
    assert!(granted >= 10, "only {granted} leases granted");
    for node in nodes {
        node.shutdown();
    }
}

//! `fallback_share = "live"`: nodes announce themselves in Redis and each allows 1 / the nodes
//! alive of every limit while Redis is down, so scaling out from 3 to 6 nodes never
//! multiplies a limit during an outage (a fixed share of 1/3 would admit twice the limit).

mod common;

use std::time::{Duration, Instant};

use sluice::server::RunningServer;
use sluice_proto::v1::CheckRequest;

async fn gauge(node: &RunningServer, name: &str) -> f64 {
    let text = common::metrics_text(node).await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Waits (up to 5 s) until every node counts `expected` live nodes.
async fn until_every_node_counts(nodes: &[RunningServer], expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut counts = Vec::new();
        for node in nodes {
            counts.push(gauge(node, "sluice_live_nodes").await as usize);
        }
        if counts.iter().all(|count| *count == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "live nodes counted: {counts:?}, want {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_share_follows_the_nodes_alive() {
    let mut redis = common::redis::server();
    let config = format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\nfailure_mode = \"local\"\nfallback_share = \"live\"\n[rules.api]\nalgorithm = \"fixed_window\"\nlimit = 12\nwindow = \"1h\"\n",
        redis.url()
    );
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(common::start(&config).await);
    }
    until_every_node_counts(&nodes, 3).await;
    assert!((gauge(&nodes[0], "sluice_fallback_share").await - 1.0 / 3.0).abs() < 1e-9);
    for _ in 0..3 {
        nodes.push(common::start(&config).await);
    }
    until_every_node_counts(&nodes, 6).await;

    redis.kill();
    // Every node decides alone now: a fresh key gets 12 / 6 = 2 on each, 12 in all.
    let mut admitted = 0;
    let mut failed_over = 0;
    for node in &nodes {
        let mut grpc = common::grpc_client(node).await;
        for _ in 0..6 {
            let answer = grpc
                .check(CheckRequest {
                    key: "outage-key".into(),
                    resource: "api".into(),
                    cost: None,
                })
                .await
                .unwrap()
                .into_inner();
            admitted += u32::from(answer.allowed);
            failed_over += u32::from(!answer.reason.is_empty());
        }
    }
    assert_eq!(
        failed_over, 36,
        "every answer came from the local failure mode"
    );
    assert_eq!(
        admitted, 12,
        "6 nodes x 1/6 of 12: the limit, not a multiple of it"
    );

    // Back to Redis, nodes that stop withdraw: the survivors count 3 again.
    redis.restart().unwrap();
    for node in nodes.drain(3..) {
        node.stop().await.unwrap();
    }
    until_every_node_counts(&nodes, 3).await;
    for node in nodes {
        node.stop().await.unwrap();
    }
}

//! Envoy's rate limit service on Redis: three stateless nodes on one Redis (and on a Redis
//! Cluster) admit exactly each descriptor's limit under an RLS storm; when Redis stops
//! answering, each rule's failure mode answers (or the call fails UNAVAILABLE, for Envoy's
//! own `failure_mode_deny`) within the store deadline, far inside Envoy's 20 ms timeout.

mod common;

use std::{collections::HashMap, time::Instant};

use sluice::server::RunningServer;
use sluice_proto::envoy::{
    extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    service::ratelimit::v3::{
        RateLimitRequest, rate_limit_response::Code,
        rate_limit_service_client::RateLimitServiceClient,
    },
};
use sluice_testkit::folder::Folder;

const USERS: usize = 5;
const CLIENTS_PER_NODE: usize = 100;

const YAML: &str = "
domain: storm
descriptors:
  - key: route
    value: checkout
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 60}
  - key: route
    value: search
    descriptors:
      - key: user
        sluice: {algorithm: token_bucket, capacity: 40, refill_per_second: 0.0001}
";

fn toml(folder: &Folder, urls: &[String], cluster: bool, extra: &str) -> String {
    let yaml = folder.path().join("storm.yaml");
    std::fs::write(&yaml, YAML).expect("write YAML");
    let urls: Vec<String> = urls.iter().map(|url| format!("\"{url}\"")).collect();
    format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [{}]\ncluster = {cluster}\ndeadline = \"1s\"\npool_size = 2\n{extra}[envoy]\nconfig_paths = [\"{}\"]\n",
        urls.join(", "),
        yaml.display()
    )
}

fn request(route: &str, user: &str) -> RateLimitRequest {
    let entry = |key: &str, value: &str| Entry {
        key: key.into(),
        value: value.into(),
    };
    RateLimitRequest {
        domain: "storm".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![entry("route", route), entry("user", user)],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    }
}

/// Every node gets `CLIENTS_PER_NODE` concurrent clients, each asking `requests` times for
/// descriptors that cycle over both routes and the users; admissions per descriptor.
async fn storm(nodes: &[RunningServer], requests: usize) -> HashMap<(String, String), u64> {
    let mut tasks = Vec::new();
    for (node_index, node) in nodes.iter().enumerate() {
        let channel = common::grpc_channel(node).await;
        for client in 0..CLIENTS_PER_NODE {
            let mut rls = RateLimitServiceClient::new(channel.clone());
            tasks.push(tokio::spawn(async move {
                let mut admitted = HashMap::<(String, String), u64>::new();
                for request_index in 0..requests {
                    let turn = node_index + client + request_index;
                    let route = if turn % 2 == 0 { "checkout" } else { "search" };
                    let user = format!("user-{}", (turn / 2) % USERS);
                    let response = rls
                        .should_rate_limit(request(route, &user))
                        .await
                        .expect("ShouldRateLimit answers")
                        .into_inner();
                    *admitted.entry((route.to_owned(), user)).or_default() +=
                        u64::from(response.overall_code() == Code::Ok);
                }
                admitted
            }));
        }
    }
    let mut admitted = HashMap::new();
    for task in tasks {
        for (descriptor, count) in task.await.expect("client task") {
            *admitted.entry(descriptor).or_default() += count;
        }
    }
    admitted
}

fn assert_exact(admitted: &HashMap<(String, String), u64>) {
    assert_eq!(admitted.len(), 2 * USERS, "{admitted:?}");
    for ((route, user), count) in admitted {
        let limit = if route == "checkout" { 60 } else { 40 };
        assert_eq!(
            *count, limit,
            "{route}/{user}: 3 nodes on one store admit exactly the descriptor's limit"
        );
    }
}

async fn start_nodes(config: &str) -> Vec<RunningServer> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(common::start(config).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_admit_exactly_each_descriptors_limit() {
    let redis = common::redis::server();
    let folder = Folder::new("rls-storm");
    let nodes = start_nodes(&toml(&folder, &[redis.url()], false, "")).await;
    // 3 nodes x 100 clients x 4 = 1,200 requests for 10 descriptors holding 500 in all.
    assert_exact(&storm(&nodes, 4).await);
    for node in nodes {
        node.stop().await.expect("node stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_admit_exactly_each_descriptors_limit() {
    let cluster = common::redis::cluster();
    let folder = Folder::new("rls-storm-cluster");
    let nodes = start_nodes(&toml(&folder, &cluster.urls(), true, "")).await;
    assert_exact(&storm(&nodes, 4).await);
    for node in nodes {
        node.stop().await.expect("node stops");
    }
}

/// With Redis paused (SIGSTOP: connections hang, nothing is refused), a call answers within
/// the store deadline by the rule's failure mode, or fails UNAVAILABLE when configured so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_answers_by_failure_mode_within_the_deadline() {
    let redis = common::redis::server();
    let folder = Folder::new("rls-failure");
    let yaml = folder.path().join("modes.yaml");
    std::fs::write(
        &yaml,
        "
domain: modes
descriptors:
  - key: strict
    rate_limit: {unit: hour, requests_per_unit: 5}
    sluice: {failure_mode: deny}
  - key: lenient
    rate_limit: {unit: hour, requests_per_unit: 5}
    sluice: {failure_mode: allow}
",
    )
    .unwrap();
    let backend = |store_failure: &str| {
        format!(
            "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"5ms\"\nbreaker_failures = 1000\n[envoy]\nconfig_paths = [\"{}\"]\nstore_failure = \"{store_failure}\"\n",
            redis.url(),
            yaml.display()
        )
    };
    let by_rule = common::start(&backend("rule")).await;
    let handed_over = common::start(&backend("unavailable")).await;
    let one = |key: &str| RateLimitRequest {
        domain: "modes".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: key.into(),
                value: "v".into(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    };
    let mut rule_client = RateLimitServiceClient::new(common::grpc_channel(&by_rule).await);
    let mut handed_client = RateLimitServiceClient::new(common::grpc_channel(&handed_over).await);
    // Healthy first: both limited normally.
    let healthy = rule_client
        .should_rate_limit(one("strict"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(healthy.statuses[0].limit_remaining, 4);

    redis.pause().expect("SIGSTOP redis");
    let started = Instant::now();
    let strict = rule_client
        .should_rate_limit(one("strict"))
        .await
        .unwrap()
        .into_inner();
    let lenient = rule_client
        .should_rate_limit(one("lenient"))
        .await
        .unwrap()
        .into_inner();
    let handed = handed_client.should_rate_limit(one("strict")).await;
    let elapsed = started.elapsed();
    redis.resume().expect("SIGCONT redis");

    assert_eq!(strict.overall_code(), Code::OverLimit, "failure_mode deny");
    assert_eq!(lenient.overall_code(), Code::Ok, "failure_mode allow");
    let status = handed.expect_err("store_failure = unavailable fails the call");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    // Three calls, each bounded by the 5 ms deadline; generous for a loaded debug build, and
    // far from the seconds a hung connection would take.
    assert!(elapsed.as_millis() < 1_000, "{elapsed:?}");
    for node in [by_rule, handed_over] {
        node.stop().await.expect("node stops");
    }
}

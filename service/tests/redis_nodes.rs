//! Many stateless nodes, one Redis: exact limits under a storm, on a single Redis and on a
//! Redis Cluster; and the same storm on per-node memory, which over-admits (the proof that the
//! check can fail).

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use sluice::server::RunningServer;
use sluice_proto::v1::{CheckRequest, rate_limiter_client::RateLimiterClient};

const KEYS: usize = 5;
const CLIENTS_PER_NODE: usize = 200;

async fn start_nodes(config: &str, count: usize) -> Vec<RunningServer> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(common::start(config).await);
    }
    nodes
}

struct StormResult {
    admitted: HashMap<String, u64>,
    elapsed: Duration,
}

/// Every node gets `CLIENTS_PER_NODE` concurrent clients, each sending `requests` checks that
/// cycle over the keys.
async fn storm(nodes: &[RunningServer], resource: &str, requests: usize) -> StormResult {
    let mut channels = Vec::new();
    for node in nodes {
        channels.push(vec![
            common::grpc_channel(node).await,
            common::grpc_channel(node).await,
        ]);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (node, node_channels) in channels.iter().enumerate() {
        for client in 0..CLIENTS_PER_NODE {
            let mut grpc = RateLimiterClient::new(node_channels[client % 2].clone());
            let resource = resource.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut admitted = HashMap::<String, u64>::new();
                for request in 0..requests {
                    let key = format!("key-{}", (node + client + request) % KEYS);
                    let response = grpc
                        .check(CheckRequest {
                            key: key.clone(),
                            resource: resource.clone(),
                            cost: None,
                        })
                        .await
                        .expect("check succeeds")
                        .into_inner();
                    *admitted.entry(key).or_default() += u64::from(response.allowed);
                }
                admitted
            }));
        }
    }
    let mut admitted = HashMap::new();
    for task in tasks {
        for (key, count) in task.await.unwrap() {
            *admitted.entry(key).or_default() += count;
        }
    }
    StormResult {
        admitted,
        elapsed: started.elapsed(),
    }
}

async fn stop(nodes: Vec<RunningServer>) {
    for node in nodes {
        node.stop().await.unwrap();
    }
}

fn assert_exact(result: &StormResult, capacity: u64) {
    assert_eq!(result.admitted.len(), KEYS);
    for (key, admitted) in &result.admitted {
        assert_eq!(
            *admitted, capacity,
            "{key}: 3 nodes sharing one store must admit exactly the capacity"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_admit_exactly_capacity() {
    let redis = common::redis::server();
    let config = format!(
        "{}{}",
        common::redis::backend(&[redis.url()], false),
        common::no_refill_bucket("storm", 100)
    );
    let nodes = start_nodes(&config, 3).await;
    let result = storm(&nodes, "storm", 4).await;
    assert_exact(&result, 100);
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refill_admission_stays_within_capacity_plus_rate_times_elapsed() {
    let redis = common::redis::server();
    let (capacity, rate) = (20u64, 50.0f64);
    let config = format!(
        "{}[rules.refill]\nalgorithm = \"token_bucket\"\ncapacity = {capacity}\nrefill_per_second = {rate}\n",
        common::redis::backend(&[redis.url()], false)
    );
    let nodes = start_nodes(&config, 3).await;
    let result = storm(&nodes, "refill", 6).await;
    let bound = capacity as f64 + rate * result.elapsed.as_secs_f64() + 1.0;
    for (key, admitted) in &result.admitted {
        assert!(
            *admitted as f64 <= bound,
            "{key}: admitted {admitted} > {bound:.1} over {:?}",
            result.elapsed
        );
        assert!(*admitted >= capacity, "{key}: under-admitted {admitted}");
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_their_own_memory_over_admit() {
    let nodes = start_nodes(&common::no_refill_bucket("storm", 100), 3).await;
    let result = storm(&nodes, "storm", 4).await;
    for (key, admitted) in &result.admitted {
        assert!(
            *admitted >= 250,
            "{key}: {admitted}; each node admits its own 100, about 3x in all"
        );
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_admit_exactly_capacity() {
    let cluster = common::redis::cluster();
    let config = format!(
        "{}{}",
        common::redis::backend(&cluster.urls(), true),
        common::no_refill_bucket("storm", 100)
    );
    let nodes = start_nodes(&config, 3).await;
    let result = storm(&nodes, "storm", 4).await;
    assert_exact(&result, 100);
    // The keys really are spread: more than one master holds state.
    let holding = cluster
        .nodes
        .iter()
        .filter(|node| node.cli(&["DBSIZE"]).unwrap().trim() != "0")
        .count();
    assert!(
        holding >= 2,
        "state of 5 keys landed on {holding} master(s)"
    );
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_reloaded_after_script_flush() {
    let redis = common::redis::server();
    let config = format!(
        "{}{}",
        common::redis::backend(&[redis.url()], false),
        common::no_refill_bucket("flush", 10)
    );
    let node = common::start(&config).await;
    let mut grpc = common::grpc_client(&node).await;
    let request = || CheckRequest {
        key: "k".into(),
        resource: "flush".into(),
        cost: None,
    };
    assert_eq!(
        grpc.check(request()).await.unwrap().into_inner().remaining,
        9
    );
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]).unwrap().trim(), "OK");
    let after = grpc.check(request()).await.unwrap().into_inner();
    assert!(
        after.reason.is_empty(),
        "NOSCRIPT is recovered, not failed over: {after:?}"
    );
    assert_eq!(after.remaining, 8);
    node.stop().await.unwrap();
}

/// An abusive hot key: 20 clients x 100 requests on a key with capacity 50.
async fn abuse(deny_cache_keys: u64) -> (u64, u64, u64) {
    let redis = common::redis::server();
    let config = format!(
        "{}deny_cache_keys = {deny_cache_keys}\n{}",
        common::redis::backend(&[redis.url()], false),
        common::no_refill_bucket("abuse", 50)
    );
    let node = common::start(&config).await;
    let channel = common::grpc_channel(&node).await;
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut grpc = RateLimiterClient::new(channel.clone());
            tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..100 {
                    let request = CheckRequest {
                        key: "abuser".into(),
                        resource: "abuse".into(),
                        cost: None,
                    };
                    admitted += u64::from(grpc.check(request).await.unwrap().into_inner().allowed);
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    let script_calls = redis.command_calls("evalsha").unwrap();
    let hits = node
        .limiter()
        .render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix("sluice_deny_cache_hits_total "))
        .map_or(0, |value| value.parse().unwrap());
    node.stop().await.unwrap();
    (admitted, script_calls, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_cache_cuts_redis_script_calls_for_an_abusive_key() {
    let (admitted_without, calls_without, hits_without) = abuse(0).await;
    let (admitted_with, calls_with, hits_with) = abuse(1_000).await;
    assert_eq!(
        (admitted_without, admitted_with),
        (50, 50),
        "decisions stay exact"
    );
    assert_eq!(calls_without, 2_000, "every request ran the script");
    assert_eq!(hits_without, 0);
    assert!(
        calls_with <= 100,
        "{calls_with} script calls for 2,000 requests with the cache"
    );
    assert_eq!(
        calls_with + hits_with,
        2_000,
        "every request was answered by Redis or the cache"
    );
    eprintln!("deny cache: {calls_without} -> {calls_with} EVALSHA calls for 2,000 requests");
}

/// Three nodes on one Redis, one hot key under a rule that stacks two limits (60 at once, 40 an
/// hour) and bans after 30 denials: across the nodes exactly the tighter 40 are admitted,
/// exactly 29 denied, the 30th denial bans, and every later request is banned; once banned the
/// nodes' deny caches answer the key without Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_stack_limits_and_ban_at_exactly_the_same_denial() {
    let redis = common::redis::server();
    let config = format!(
        "{}deny_cache_keys = 1000\n{}",
        common::redis::backend(&[redis.url()], false),
        r#"
[rules.hot]
[[rules.hot.limits]]
name = "burst"
algorithm = "token_bucket"
capacity = 60
refill_per_second = 0.000001
[[rules.hot.limits]]
name = "hourly"
algorithm = "sliding_window_log"
limit = 40
window = "1h"
[rules.hot.ban]
after = 30
within = "1h"
duration = "15m"
"#
    );
    let nodes = start_nodes(&config, 3).await;
    let mut tasks = Vec::new();
    for node in &nodes {
        let channel = common::grpc_channel(node).await;
        for _ in 0..20 {
            let mut grpc = RateLimiterClient::new(channel.clone());
            tasks.push(tokio::spawn(async move {
                let mut counts = HashMap::<i32, u64>::new();
                for _ in 0..20 {
                    let request = CheckRequest {
                        key: "hot-key".into(),
                        resource: "hot".into(),
                        cost: None,
                    };
                    let answer = grpc.check(request).await.unwrap().into_inner();
                    *counts.entry(answer.decision).or_default() += 1;
                }
                counts
            }));
        }
    }
    let mut counts = HashMap::<i32, u64>::new();
    for task in tasks {
        for (decision, count) in task.await.unwrap() {
            *counts.entry(decision).or_default() += count;
        }
    }
    use sluice_proto::v1::Decision;
    let count = |decision: Decision| counts.get(&(decision as i32)).copied().unwrap_or(0);
    assert_eq!(count(Decision::Allowed), 40, "the tighter limit, exactly");
    assert_eq!(count(Decision::Denied), 29, "denials before the ban");
    assert_eq!(count(Decision::Banned), 1_200 - 40 - 29);
    let mut bans_started = 0;
    let mut cache_hits = 0;
    for node in &nodes {
        let metrics = node.limiter().render_metrics();
        let value = |prefix: &str| {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(prefix))
                .map_or(0, |value| value.trim().parse::<u64>().unwrap())
        };
        bans_started += value("sluice_bans_started_total{resource=\"hot\"} ");
        cache_hits += value("sluice_deny_cache_hits_total ");
    }
    assert_eq!(bans_started, 1, "one ban, started by exactly one node");
    assert!(
        cache_hits >= 1_000,
        "banned requests answered by the nodes' deny caches: {cache_hits}"
    );
    stop(nodes).await;
}

/// Two nodes on one Redis both answer a banned key from their deny caches; a ban lifted through
/// one node's admin API ends on the other within a second (a cached denial answers at most that
/// long before Redis is asked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_lifted_through_one_node_ends_on_every_node_within_a_second() {
    let redis = common::redis::server();
    let config = format!(
        "{}deny_cache_keys = 1000\n{}",
        common::redis::backend(&[redis.url()], false),
        "[rules.login]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1h\"\n\
         [rules.login.ban]\nafter = 2\nwithin = \"1h\"\nduration = \"1h\"\n"
    );
    let nodes = start_nodes(&config, 2).await;
    let http = reqwest::Client::new();
    let status = async |node: &RunningServer| {
        http.post(common::http_url(node, "/check?resource=login"))
            .header("X-API-Key", "eve")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(&nodes[0]).await, 200);
    assert_eq!(status(&nodes[0]).await, 429);
    assert_eq!(status(&nodes[0]).await, 403, "the second denial bans");
    for _ in 0..3 {
        assert_eq!(status(&nodes[1]).await, 403, "and node 2 remembers it");
    }
    let lifted = http
        .post(common::admin_url(&nodes[0], "/v1/keys/lift-ban"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&serde_json::json!({"key": "eve", "resource": "login"}))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 200);
    let started = std::time::Instant::now();
    // The first denial after the lift is an offence again, not a ban: watch for it.
    loop {
        let answer = status(&nodes[1]).await;
        if answer != 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "node 2 still answers the lifted ban after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("node 2 followed the lift in {:?}", started.elapsed());
    stop(nodes).await;
}

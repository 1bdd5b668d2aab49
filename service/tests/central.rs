//! Central configuration: two nodes on one real Redis follow one rules document. A change
//! written through one node's admin API reaches both within a second, under load; an invalid
//! change is refused whole; a node that missed the change notice catches up on its own.

mod common;

use std::time::{Duration, Instant};

use sluice::server::{self, RunningServer};

const FILE_RULES: &str =
    "[rules.api]\nalgorithm = \"fixed_window\"\nlimit = 100\nwindow = \"1h\"\n";

fn rules(limit: u64) -> String {
    format!("[rules.api]\nalgorithm = \"fixed_window\"\nlimit = {limit}\nwindow = \"1h\"\n")
}

async fn node(redis_url: &str) -> RunningServer {
    let toml = format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{redis_url}\"]\ndeadline = \"250ms\"\n\
         [rules_source]\nkind = \"redis\"\ncheck_interval = \"200ms\"\nkey = \"test:rules\"\n{FILE_RULES}"
    );
    server::start(common::config(&toml)).await.unwrap()
}

/// The limit a node answers with for `key` on `api` (a check spends 1).
async fn limit_of(http: &reqwest::Client, node: &RunningServer, key: &str) -> (u16, u64) {
    let answer = http
        .post(common::http_url(node, "/check?resource=api"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let limit = answer.headers()["x-ratelimit-limit"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (answer.status().as_u16(), limit)
}

async fn until_limit(
    http: &reqwest::Client,
    node: &RunningServer,
    limit: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (_, seen) = limit_of(http, node, "probe").await;
        if seen == limit {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "limit {seen}, not {limit}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn put(
    http: &reqwest::Client,
    node: &RunningServer,
    query: &str,
    token: &str,
    body: String,
) -> reqwest::RequestBuilder {
    http.put(common::admin_url(node, &format!("/v1/rules{query}")))
        .bearer_auth(token)
        .header("content-type", "application/toml")
        .body(body)
}

/// `GET /v1/rules` with the read token.
async fn read_rules(http: &reqwest::Client, node: &RunningServer) -> serde_json::Value {
    http.get(common::admin_url(node, "/v1/rules"))
        .bearer_auth(common::READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_node_reaches_every_node_within_a_second() {
    let redis = common::redis::server();
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let http = reqwest::Client::new();
    assert_eq!(
        limit_of(&http, &a, "first").await,
        (200, 100),
        "the file's rules until a document exists"
    );

    // Load on both nodes across the change: every answer is the old rule's or the new one's,
    // and once a node has answered with the new one it never goes back.
    let load = |node: &RunningServer| {
        let (http, url) = (http.clone(), common::http_url(node, "/check?resource=api"));
        tokio::spawn(async move {
            let mut limits = Vec::new();
            for i in 0..300 {
                let answer = http
                    .post(&url)
                    .header("X-API-Key", format!("load-{}", i % 20))
                    .send()
                    .await
                    .unwrap();
                assert!(matches!(answer.status().as_u16(), 200 | 429));
                limits.push(
                    answer.headers()["x-ratelimit-limit"]
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            limits
        })
    };
    let loads = [load(&a), load(&b)];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let written = put(&http, &a, "", common::ADMIN_TOKEN, rules(5))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);
    let answer: serde_json::Value = written.json().await.unwrap();
    assert_eq!(answer["version"], 1);
    assert_eq!(
        answer["diff"]["changed"][0]["after"]["limits"][0]["limit"],
        5
    );
    let took = [
        until_limit(&http, &a, 5, Duration::from_secs(1)).await,
        until_limit(&http, &b, 5, Duration::from_secs(1)).await,
    ];
    for load in loads {
        let limits = load.await.unwrap();
        assert!(
            limits.iter().all(|limit| *limit == 100 || *limit == 5),
            "{limits:?}"
        );
        let switched = limits
            .iter()
            .position(|limit| *limit == 5)
            .expect("the new rule answered");
        assert!(
            limits[switched..].iter().all(|limit| *limit == 5),
            "never back: {limits:?}"
        );
    }
    eprintln!("both nodes on the new rules within {took:?}");

    // An invalid document is refused whole, with every field path; nothing changes anywhere.
    let bad = "[rules.api]\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1h\"\n[rules.other]\nalgorithm = \"leaky\"\n";
    let refused = put(&http, &b, "", common::ADMIN_TOKEN, bad.into())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let problem: serde_json::Value = refused.json().await.unwrap();
    let paths: Vec<&str> = problem["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"rules.api.limit") && paths.contains(&"rules.other.algorithm"),
        "{problem}"
    );
    let not_rules = put(
        &http,
        &b,
        "",
        common::ADMIN_TOKEN,
        format!("[server]\nshadow = true\n{}", rules(9)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(not_rules.status(), 400, "a rules document holds only rules");

    // A dry run validates and shows the difference, writing nothing; a stale if_version and a
    // read-only token are refused.
    let dry = put(&http, &b, "?dry_run=true", common::ADMIN_TOKEN, rules(6))
        .send()
        .await
        .unwrap();
    let dry: serde_json::Value = dry.json().await.unwrap();
    assert_eq!(
        (
            dry["valid"].as_bool(),
            dry["diff"]["changed"][0]["before"]["limits"][0]["limit"].as_u64()
        ),
        (Some(true), Some(5))
    );
    let stale = put(&http, &b, "?if_version=0", common::ADMIN_TOKEN, rules(6))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    let reader = put(&http, &b, "", common::READ_TOKEN, rules(6))
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);
    let current = read_rules(&http, &b).await;
    assert_eq!(
        current["document"]["version"], 1,
        "none of those wrote: {current}"
    );
    assert_eq!(current["document"]["updated_by"], "ops");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(limit_of(&http, &a, "after").await.1, 5);

    // A key denied under the old rules is remembered by the node's deny cache; the next rules
    // must not be answered from it.
    for _ in 0..6 {
        limit_of(&http, &a, "cached").await;
    }
    assert_eq!(limit_of(&http, &a, "cached").await, (429, 5));

    // A change whose notice is lost (written straight to Redis, no PUBLISH) is caught by the
    // periodic version check.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("test:rules")
        .arg(&["version", "2", "text", &rules(7), "updated_by", "by-hand"])
        .query_async(&mut connection)
        .await
        .unwrap();
    until_limit(&http, &a, 7, Duration::from_secs(1)).await;
    until_limit(&http, &b, 7, Duration::from_secs(1)).await;
    assert_eq!(
        limit_of(&http, &a, "cached").await.1,
        7,
        "a denial cached under the old rules answered under the new ones"
    );
    for node in [&a, &b] {
        let metrics = common::metrics_text(node).await;
        assert!(
            metrics.contains("sluice_central_rules_version 2"),
            "{metrics}"
        );
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_file_sourced_node_refuses_to_replace_its_rules_through_the_api() {
    let server = common::start(FILE_RULES).await;
    let http = reqwest::Client::new();
    let refused = put(&http, &server, "", common::ADMIN_TOKEN, rules(5))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("edit the file"),
        "{problem}"
    );
    let read = read_rules(&http, &server).await;
    assert_eq!(read["source"], "file");
    assert_eq!(read["rules"][0]["limits"][0]["limit"], 100);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn per_key_overrides_are_added_and_removed_at_runtime() {
    let redis = common::redis::server();
    let node = node(&redis.url()).await;
    let http = reqwest::Client::new();
    let written = put(&http, &node, "", common::ADMIN_TOKEN, rules(5))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);
    let override_call = |method: reqwest::Method, token: &'static str, body: serde_json::Value| {
        http.request(method, common::admin_url(&node, "/v1/overrides"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let vip = serde_json::json!({
        "resource": "api",
        "key": "vip",
        "rule": {"name": "api-vip", "algorithm": "fixed_window", "limit": 50, "window": "1h"},
    });
    let reader = override_call(reqwest::Method::POST, common::READ_TOKEN, vip.clone());
    assert_eq!(reader.await.unwrap().status(), 403);
    let mut bad = vip.clone();
    bad["rule"]["limit"] = 0.into();
    let refused = override_call(reqwest::Method::POST, common::ADMIN_TOKEN, bad)
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        problem["issues"][0]["path"], "rules.api.overrides[0].limit",
        "{problem}"
    );

    let added = override_call(reqwest::Method::POST, common::ADMIN_TOKEN, vip.clone())
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let poll = async |key: &str, limit: u64| {
        let deadline = Instant::now() + Duration::from_secs(1);
        while limit_of(&http, &node, key).await.1 != limit {
            assert!(Instant::now() < deadline, "{key} never got limit {limit}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    poll("vip", 50).await;
    poll("someone", 5).await;
    let removal = serde_json::json!({"resource": "api", "key": "vip"});
    let removed = override_call(
        reqwest::Method::DELETE,
        common::ADMIN_TOKEN,
        removal.clone(),
    )
    .await
    .unwrap();
    assert_eq!(removed.status(), 200);
    poll("vip", 5).await;
    let again = override_call(reqwest::Method::DELETE, common::ADMIN_TOKEN, removal)
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    node.stop().await.unwrap();
}

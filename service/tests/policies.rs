//! Policies end to end over real gRPC and HTTP: rules that stack several limits.

mod common;

use sluice_proto::v1::{CheckRequest, Decision, StatusRequest};

/// "api": 2 at once refilled at 1 per 10 s, and 3 a minute. "one": a single limit.
const RULES: &str = r#"
[rules.api]
[[rules.api.limits]]
name = "burst"
algorithm = "token_bucket"
capacity = 2
refill_per_second = 0.1
[[rules.api.limits]]
name = "minute"
algorithm = "fixed_window"
limit = 3
window = "1m"
"#;

fn check(key: &str, cost: u64) -> CheckRequest {
    CheckRequest {
        key: key.into(),
        resource: "api".into(),
        cost: Some(cost),
    }
}

#[tokio::test]
async fn grpc_answers_every_limit_and_names_the_deciding_one() {
    let server = common::start(RULES).await;
    let mut client = common::grpc_client(&server).await;
    let allowed = client.check(check("alice", 1)).await.unwrap().into_inner();
    assert_eq!(allowed.decision(), Decision::Allowed);
    let limits: Vec<(&str, u64, u64, bool)> = allowed
        .limits
        .iter()
        .map(|l| (l.name.as_str(), l.limit, l.remaining, l.allowed))
        .collect();
    assert_eq!(
        limits,
        [("burst", 2, 1, true), ("minute", 3, 2, true)],
        "every limit charged, in the rule's order"
    );
    assert_eq!(allowed.decided_by, "burst", "the least remaining decides");
    assert_eq!((allowed.limit, allowed.remaining), (2, 1));
    assert_eq!(allowed.algorithm, "token_bucket");
    assert_eq!(allowed.rule, "api");

    client.check(check("alice", 1)).await.unwrap();
    let denied = client.check(check("alice", 1)).await.unwrap().into_inner();
    assert_eq!(denied.decision(), Decision::Denied);
    assert_eq!(denied.decided_by, "burst");
    let retry = denied.retry_after.unwrap();
    let retry_s = retry.seconds as f64 + f64::from(retry.nanos) / 1e9;
    assert!(
        (9.5..=10.0).contains(&retry_s),
        "one token at 0.1/s: {retry:?}"
    );
    assert_eq!(
        denied.limits[1].remaining, 1,
        "the minute limit was not charged for the denial"
    );
    assert!(denied.limits[1].allowed && !denied.limits[0].allowed);

    let too_much = client.check(check("alice", 3)).await.unwrap_err();
    assert_eq!(too_much.code(), tonic::Code::InvalidArgument);
    assert!(
        too_much.message().contains("exceeds 2"),
        "the smallest limit bounds the cost: {}",
        too_much.message()
    );

    let status = client
        .status(StatusRequest {
            key: "alice".into(),
            resource: "api".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.limits.len(), 2);
    assert_eq!((status.limit, status.remaining), (2, 0));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_sends_one_policy_and_state_item_per_limit() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    let post = |cost: u64| {
        http.post(common::http_url(&server, "/check"))
            .header("X-API-Key", "bob")
            .json(&serde_json::json!({"resource": "api", "cost": cost}))
            .send()
    };
    let allowed = post(2).await.unwrap();
    assert_eq!(allowed.status(), 200);
    let headers = allowed.headers().clone();
    assert_eq!(
        headers["ratelimit-policy"],
        r#""burst";q=2;w=20, "minute";q=3;w=60"#
    );
    let state = headers["ratelimit"].to_str().unwrap();
    assert!(
        state.starts_with(r#""burst";r=0;t=20, "minute";r=1;t="#),
        "{state}"
    );
    assert_eq!(
        headers["x-ratelimit-remaining"], "0",
        "the deciding limit's"
    );
    let body: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(body["decided_by"], "burst");
    assert_eq!(body["limits"][1]["name"], "minute");
    assert_eq!(body["limits"][1]["remaining"], 1);

    let denied = post(1).await.unwrap();
    assert_eq!(denied.status(), 429);
    assert_eq!(denied.headers()["retry-after"], "10");
    let state = denied.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(
        state.starts_with(r#""burst";r=0;t=10, "minute";r=1;t="#),
        "a denying limit's t is its retry-after: {state}"
    );
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["violated-policies"], serde_json::json!(["burst"]));
    server.stop().await.unwrap();
}

/// The same limit twice: "enforced", and "trial" in shadow mode.
const SHADOW_RULES: &str = r#"
[rules.enforced]
algorithm = "sliding_window_log"
limit = 3
window = "1m"

[rules.trial]
algorithm = "sliding_window_log"
limit = 3
window = "1m"
shadow = true
"#;

#[tokio::test]
async fn shadow_mode_allows_what_enforcing_would_deny_and_counts_it() {
    let server = common::start(SHADOW_RULES).await;
    let mut client = common::grpc_client(&server).await;
    let mut enforced = Vec::new();
    let mut trial = Vec::new();
    for cost in [1, 2, 1, 1, 2, 1] {
        for (resource, outcomes) in [("enforced", &mut enforced), ("trial", &mut trial)] {
            let answer = client
                .check(CheckRequest {
                    key: "probe-7f3a".into(),
                    resource: resource.into(),
                    cost: Some(cost),
                })
                .await
                .unwrap()
                .into_inner();
            outcomes.push((answer.decision(), answer.allowed));
        }
    }
    let expected_enforced: Vec<_> = [true, true, false, false, false, false]
        .iter()
        .map(|&allowed| {
            let decision = if allowed {
                Decision::Allowed
            } else {
                Decision::Denied
            };
            (decision, allowed)
        })
        .collect();
    assert_eq!(enforced, expected_enforced);
    let shadowed: Vec<_> = enforced
        .iter()
        .map(|&(decision, _)| match decision {
            Decision::Denied => (Decision::ShadowDenied, true),
            other => (other, true),
        })
        .collect();
    assert_eq!(
        trial, shadowed,
        "a shadowed rule lets everything through and charges exactly what enforcing it would"
    );

    let http = reqwest::Client::new();
    let answer = http
        .post(common::http_url(&server, "/check?resource=trial"))
        .header("X-API-Key", "probe-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["sluice-shadow-denied"], "trial");
    assert!(answer.headers().get("retry-after").is_none());
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["decision"], "shadow_denied");
    assert_eq!(body["allowed"], true);

    let metrics = common::metrics_text(&server).await;
    for line in [
        r#"sluice_decisions_total{outcome="shadow_denied",resource="trial"} 5"#,
        r#"sluice_decisions_total{outcome="allowed",resource="trial"} 2"#,
        r#"sluice_decisions_total{outcome="denied",resource="enforced"} 4"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    assert!(!metrics.contains("probe-7f3a"), "metrics never carry a key");
    server.stop().await.unwrap();
}

/// One login a minute; the third denial within a minute bans the key for 15 minutes.
const BAN_RULES: &str = r#"
[rules.login]
algorithm = "fixed_window"
limit = 1
window = "1h"
[rules.login.ban]
after = 3
within = "1m"
duration = "15m"
"#;

#[tokio::test]
async fn a_repeat_offender_is_banned_with_403_and_banned_on_grpc() {
    let server = common::start(BAN_RULES).await;
    let http = reqwest::Client::new();
    let post = || {
        http.post(common::http_url(&server, "/check?resource=login"))
            .header("X-API-Key", "mallory-9c1e")
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 429, 429, 403], "the 3rd denial bans");
    let banned = post().await.unwrap();
    assert_eq!(banned.status(), 403);
    assert_eq!(banned.headers()["content-type"], "application/problem+json");
    let retry: u64 = banned.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((899..=900).contains(&retry), "until the ban ends: {retry}");
    let body: serde_json::Value = banned.json().await.unwrap();
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#abnormal-usage-detected"
    );
    assert_eq!(body["decision"], "banned");

    // A reset clears the key's quota but does not lift its ban; lifting the ban does.
    assert!(common::admin_reset(&server, "mallory-9c1e", "login").await);
    assert_eq!(
        post().await.unwrap().status(),
        403,
        "still banned after reset"
    );

    let mut client = common::grpc_client(&server).await;
    let answer = client
        .check(CheckRequest {
            key: "mallory-9c1e".into(),
            resource: "login".into(),
            cost: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision(), Decision::Banned);
    assert!(!answer.allowed);
    assert!(answer.retry_after.unwrap().seconds >= 898);
    assert!(answer.reason.contains("banned"), "{}", answer.reason);

    let metrics = common::metrics_text(&server).await;
    for line in [
        r#"sluice_bans_started_total{resource="login"} 1"#,
        r#"sluice_decisions_total{outcome="banned",resource="login"} 4"#,
        r#"sluice_decisions_total{outcome="denied",resource="login"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    assert!(!metrics.contains("mallory-9c1e"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_key_wide_ban_refuses_the_key_on_every_resource() {
    let rules = r#"
[rules.login]
algorithm = "fixed_window"
limit = 1
window = "1h"
[rules.login.ban]
after = 2
within = "1m"
duration = "5m"
scope = "key"

[rules.search]
algorithm = "gcra"
rate_per_second = 100
burst = 100
"#;
    let server = common::start(rules).await;
    let mut client = common::grpc_client(&server).await;
    let mut ask = async |key: &str, resource: &str| {
        client
            .check(CheckRequest {
                key: key.into(),
                resource: resource.into(),
                cost: None,
            })
            .await
            .unwrap()
            .into_inner()
            .decision()
    };
    assert_eq!(ask("eve-41", "search").await, Decision::Allowed);
    let on_login: Vec<Decision> = [
        ask("eve-41", "login").await,
        ask("eve-41", "login").await,
        ask("eve-41", "login").await,
    ]
    .into();
    assert_eq!(
        on_login,
        [Decision::Allowed, Decision::Denied, Decision::Banned]
    );
    assert_eq!(
        ask("eve-41", "search").await,
        Decision::Banned,
        "search has no ban of its own, yet honours the key-wide one"
    );
    assert_eq!(ask("bob-42", "search").await, Decision::Allowed);
    server.stop().await.unwrap();
}

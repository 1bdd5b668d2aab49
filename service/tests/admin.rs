//! The admin API on its own listener: bearer tokens and roles, the audit log, and reset moved
//! off the public port (where any client could clear any key's quota).

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use sluice_proto::v1::{CheckRequest, ResetRequest};
use tonic::{Code, Request};

const RULES: &str = r#"
[rules.login]
algorithm = "fixed_window"
limit = 5
window = "1m"
"#;

/// Every log line of this test process, so a test can find its audit line.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("sluice::audit=info")
            .with_ansi(false)
            .with_writer(move || SharedWriter(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn login(http: &reqwest::Client, server: &sluice::server::RunningServer, key: &str) -> u16 {
    http.post(common::http_url(server, "/check?resource=login"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn check_then_reset_on_the_public_port_no_longer_bypasses_a_limit() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    let mut allowed = 0;
    for _ in 0..50 {
        if login(&http, &server, "mallory").await == 200 {
            allowed += 1;
        }
        let reset = http
            .post(common::http_url(&server, "/reset"))
            .header("X-API-Key", "mallory")
            .body(r#"{"resource":"login"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(reset.status(), 404);
        let problem: serde_json::Value = reset.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("/v1/keys/reset on the admin listener"),
            "{problem}"
        );
    }
    assert_eq!(allowed, 5, "the probe got 50 of 50 before reset moved");
    // Nor is the admin API on the public port, with or without a token.
    let on_public = http
        .post(common::http_url(&server, "/v1/keys/reset"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&serde_json::json!({"key": "mallory", "resource": "login"}))
        .send()
        .await
        .unwrap();
    assert_eq!(on_public.status(), 404);
    assert_eq!(login(&http, &server, "mallory").await, 429);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_reset_needs_an_admin_token_and_is_audited() {
    let logs = captured_logs();
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(login(&http, &server, "carol-5d2a").await, 200);
    }
    assert_eq!(login(&http, &server, "carol-5d2a").await, 429);
    let body = serde_json::json!({"key": "carol-5d2a", "resource": "login"});
    let reset = |token: Option<&'static str>| {
        let request = http
            .post(common::admin_url(&server, "/v1/keys/reset"))
            .json(&body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };

    let none = reset(None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"sluice-admin\""
    );
    let wrong = reset(Some("test-admin-token-0123456780")).await.unwrap();
    assert_eq!(wrong.status(), 401);
    let reader = reset(Some(common::READ_TOKEN)).await.unwrap();
    assert_eq!(reader.status(), 403);
    let problem: serde_json::Value = reader.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("needs role admin"),
        "{problem}"
    );
    assert_eq!(
        login(&http, &server, "carol-5d2a").await,
        429,
        "no refused call reset anything"
    );

    let admin = reset(Some(common::ADMIN_TOKEN)).await.unwrap();
    assert_eq!(admin.status(), 200);
    assert_eq!(
        admin.json::<serde_json::Value>().await.unwrap()["existed"],
        true
    );
    assert_eq!(login(&http, &server, "carol-5d2a").await, 200);

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("admin change") && line.contains(r#"resource="login""#))
        .unwrap_or_else(|| panic!("no audit line in:\n{logs}"));
    assert!(
        line.contains("who=ops") && line.contains("action=\"reset\""),
        "{line}"
    );
    assert!(
        line.contains(r#""remaining":0"#) && line.contains(r#"{"existed":true}"#),
        "before and after: {line}"
    );
    assert!(!logs.contains("carol-5d2a"), "the raw key is never logged");

    let metrics = common::metrics_text(&server).await;
    for expected in [
        r#"sluice_admin_requests_total{action="any",result="unauthenticated"} 2"#,
        r#"sluice_admin_requests_total{action="any",result="forbidden"} 1"#,
        r#"sluice_admin_requests_total{action="reset",result="ok"} 1"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_reset_is_on_the_admin_listener_behind_the_same_tokens() {
    let server = common::start(RULES).await;
    let mut public = common::grpc_client(&server).await;
    let spend = CheckRequest {
        key: "dave".into(),
        resource: "login".into(),
        cost: Some(5),
    };
    assert!(
        public
            .check(spend.clone())
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    let mut admin = common::admin_grpc_client(&server).await;
    let reset = |token: Option<&str>| {
        let mut request = Request::new(ResetRequest {
            key: "dave".into(),
            resource: "login".into(),
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };
    let none = admin.reset(reset(None)).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    let reader = admin
        .reset(reset(Some(common::READ_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(reader.code(), Code::PermissionDenied, "{reader:?}");
    assert!(
        !public
            .check(spend.clone())
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    let done = admin
        .reset(reset(Some(common::ADMIN_TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert!(done.existed);
    assert!(public.check(spend).await.unwrap().into_inner().allowed);
    let invalid = admin
        .reset(Request::new(ResetRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::Unauthenticated, "auth comes first");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn explain_shows_a_keys_rule_and_state_to_a_reader() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        login(&http, &server, "erin").await;
    }
    let explain = |body: &'static str| {
        http.post(common::admin_url(&server, "/v1/keys/explain"))
            .bearer_auth(common::READ_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let answer = explain(r#"{"key":"erin","resource":"login"}"#)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["rule"], "login");
    assert_eq!(body["decision"], "allowed");
    assert_eq!(body["limits"][0]["remaining"], 3);
    assert_eq!(body["limits"][0]["algorithm"], "fixed_window");
    for (bad, field) in [
        (r#"{"resource":"login"}"#, "body"),
        (r#"{"key":"erin","resource":"login","extra":1}"#, "body"),
        (r#"{"key":"","resource":"login"}"#, "key"),
        (r#"{"key":"erin","resource":"nosuch"}"#, "resource"),
    ] {
        let refused = explain(bad).await.unwrap();
        assert_eq!(refused.status(), 400, "{bad}");
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(problem["field"], field, "{bad}: {problem}");
    }
    let running = http
        .get(common::admin_url(&server, "/v1/config"))
        .bearer_auth(common::READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        running["version"].as_str().unwrap(),
        common::config(RULES).version
    );
    assert_eq!(running["rules"][0]["name"], "login");
    assert_eq!(running["rules"][0]["limits"][0]["limit"], 5);
    assert_eq!(
        running["rules"][0]["limits"][0]["policy_window_ms"],
        60_000.0
    );
    let who = http
        .get(common::admin_url(&server, "/v1/whoami"))
        .bearer_auth(common::READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        who.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"name": "grafana", "role": "read"})
    );
    server.stop().await.unwrap();
}

#[test]
fn an_admin_listener_needs_valid_tokens() {
    use sluice::config::{Config, Overrides};
    let overrides = |tokens: Option<&str>| Overrides {
        admin_addr: Some("127.0.0.1:0".into()),
        admin_tokens: tokens.map(str::to_owned),
        ..Overrides::default()
    };
    let err = Config::parse(RULES, "test", &overrides(None)).unwrap_err();
    assert_eq!(err.issues()[0].path, "admin.tokens_file", "{err}");
    let err = Config::parse(RULES, "test", &overrides(Some("ops:admin:short"))).unwrap_err();
    assert_eq!(err.issues()[0].path, "SLUICE_ADMIN_TOKENS", "{err}");
    assert!(!err.to_string().contains(":short"), "{err}");
    let missing_file = "[admin]\naddr = \"127.0.0.1:0\"\ntokens_file = \"/nonexistent/tokens\"\n";
    let err = Config::parse(missing_file, "test", &Overrides::default()).unwrap_err();
    assert_eq!(err.issues()[0].path, "admin.tokens_file", "{err}");
    let file = std::env::temp_dir().join(format!("sluice-admin-tokens-{}", std::process::id()));
    std::fs::write(&file, "# name:role:token\nops:admin:0123456789abcdef\n").unwrap();
    let from_file = format!(
        "[admin]\naddr = \"127.0.0.1:0\"\ntokens_file = \"{}\"\n{RULES}",
        file.display()
    );
    let config = Config::parse(&from_file, "test", &Overrides::default());
    std::fs::remove_file(&file).unwrap();
    let admin = config.unwrap().admin.unwrap();
    let principal = admin
        .tokens
        .authenticate(Some(b"Bearer 0123456789abcdef"))
        .unwrap();
    assert_eq!(principal.name, "ops");
    let off = Config::parse(RULES, "test", &Overrides::default()).unwrap();
    assert!(off.admin.is_none(), "off unless admin.addr is set");
}

#[tokio::test]
async fn top_denied_lists_the_keys_refused_most_to_a_reader() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    for (key, tries) in [("hammer", 25), ("tapper", 8), ("polite", 5)] {
        for _ in 0..tries {
            login(&http, &server, key).await;
        }
    }
    let top = |query: &'static str| {
        http.get(common::admin_url(
            &server,
            &format!("/v1/keys/top-denied{query}"),
        ))
        .bearer_auth(common::READ_TOKEN)
        .send()
    };
    let answer: serde_json::Value = top("?limit=2").await.unwrap().json().await.unwrap();
    let listed: Vec<(&str, u64)> = answer["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["key"].as_str().unwrap(),
                entry["denials"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("hammer", 20), ("tapper", 3)],
        "5 allowed each, the rest denied; polite never denied"
    );
    assert_eq!(top("?limit=0").await.unwrap().status(), 400);
    let anonymous = http
        .get(common::admin_url(&server, "/v1/keys/top-denied"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "client keys are for token holders only"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_admin_lifts_a_ban_and_a_reader_cannot() {
    let rules = "[rules.login]\nalgorithm = \"fixed_window\"\nlimit = 2\nwindow = \"1h\"\n\
                 [rules.login.ban]\nafter = 2\nwithin = \"1m\"\nduration = \"15m\"\n";
    let server = common::start(rules).await;
    let http = reqwest::Client::new();
    let statuses: Vec<u16> = {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(login(&http, &server, "trent").await);
        }
        seen
    };
    assert_eq!(statuses, [200, 200, 429, 403, 403], "the 2nd denial bans");
    let lift = |token: &'static str| {
        http.post(common::admin_url(&server, "/v1/keys/lift-ban"))
            .bearer_auth(token)
            .json(&serde_json::json!({"key": "trent", "resource": "login"}))
            .send()
    };
    assert_eq!(lift(common::READ_TOKEN).await.unwrap().status(), 403);
    assert_eq!(login(&http, &server, "trent").await, 403, "still banned");
    let lifted = lift(common::ADMIN_TOKEN).await.unwrap();
    assert_eq!(lifted.status(), 200);
    assert_eq!(
        lifted.json::<serde_json::Value>().await.unwrap()["existed"],
        true
    );
    assert_eq!(
        login(&http, &server, "trent").await,
        429,
        "no longer banned; the limit stays spent"
    );
    server.stop().await.unwrap();
}

//! End to end: a real server on loopback, driven over real gRPC and HTTP.

mod common;

use std::time::Duration;

use sluice_proto::v1::{CheckRequest, Decision, StatusRequest};
use tonic::Code;

const RULES: &str = r#"
[limits]
max_key_bytes = 32

[rules.tight]
algorithm = "token_bucket"
capacity = 2
refill_per_second = 0.4

[rules.exact]
algorithm = "sliding_window_log"
limit = 3
window = "1m"

[[rules.exact.overrides]]
key = "vip"
name = "exact-vip"
algorithm = "sliding_window_log"
limit = 10
window = "1m"
"#;

fn check(key: &str, resource: &str, cost: Option<u64>) -> CheckRequest {
    CheckRequest {
        key: key.into(),
        resource: resource.into(),
        cost,
    }
}

#[tokio::test]
async fn grpc_check_reports_the_whole_decision() {
    let server = common::start(RULES).await;
    let mut client = common::grpc_client(&server).await;
    let first = client
        .check(check("alice", "tight", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.decision(), Decision::Allowed);
    assert!(first.allowed);
    assert_eq!((first.limit, first.remaining), (2, 1));
    assert_eq!(
        (first.rule.as_str(), first.resource.as_str()),
        ("tight", "tight")
    );
    assert_eq!(
        first.reset_after.unwrap().seconds,
        2,
        "1 token at 0.4/s takes 2.5 s"
    );
    assert_eq!(first.retry_after.unwrap(), prost_types::Duration::default());
    assert_eq!(first.policy_window.unwrap().seconds, 5);
    assert_eq!(first.algorithm, "token_bucket");

    client
        .check(check("alice", "tight", Some(1)))
        .await
        .unwrap();
    let denied = client
        .check(check("alice", "tight", Some(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.decision(), Decision::Denied);
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    let retry = denied.retry_after.unwrap();
    assert!(
        retry.seconds == 2 && retry.nanos > 400_000_000,
        "about 2.5 s, got {retry:?}"
    );

    let other = client
        .check(check("bob", "tight", None))
        .await
        .unwrap()
        .into_inner();
    assert!(other.allowed, "keys are independent");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_status_reads_a_key_without_spending() {
    let server = common::start(RULES).await;
    let mut client = common::grpc_client(&server).await;
    let status = |key: &str| StatusRequest {
        key: key.into(),
        resource: "exact".into(),
    };
    client
        .check(check("carol", "exact", Some(2)))
        .await
        .unwrap();
    for _ in 0..2 {
        let read = client.status(status("carol")).await.unwrap().into_inner();
        assert_eq!((read.limit, read.used, read.remaining), (3, 2, 1));
        assert_eq!(read.rule, "exact");
        assert!(read.reset_after.unwrap().seconds >= 59);
    }
    let vip = client
        .check(check("vip", "exact", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (vip.rule.as_str(), vip.limit),
        ("exact-vip", 10),
        "per-key override"
    );

    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_rejects_bad_input_naming_the_field() {
    let server = common::start(RULES).await;
    let mut client = common::grpc_client(&server).await;
    let cases = [
        (check("", "tight", None), "key is empty"),
        (
            check(&"k".repeat(33), "tight", None),
            "key is 33 bytes, over the limit of 32",
        ),
        (check("k", "tight", Some(0)), "cost must be at least 1"),
        (check("k", "tight", Some(3)), "cost 3 exceeds 2"),
        (
            check("k", "nowhere", None),
            "resource `nowhere` has no rule",
        ),
        (check("k", &"r".repeat(129), None), "resource is 129 bytes"),
    ];
    for (request, expected) in cases {
        let status = client.check(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().contains(expected),
            "{request:?}: {}",
            status.message()
        );
    }
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains(r#"sluice_invalid_requests_total{api="grpc",field="cost"} 2"#),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_health_and_reflection_work_without_the_proto() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let server = common::start(RULES).await;
    let channel = common::grpc_channel(&server).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "sluice.v1.RateLimiter"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    assert!(names.contains(&"sluice.v1.RateLimiter"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_storm_on_one_key_admits_exactly_capacity() {
    let capacity = 500;
    let server = common::start(&common::no_refill_bucket("storm", capacity)).await;
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(common::grpc_channel(&server).await);
    }
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let mut client = sluice_proto::v1::rate_limiter_client::RateLimiterClient::new(
                channels[task % 4].clone(),
            );
            tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..1_000 {
                    let response = client
                        .check(check("hot", "storm", None))
                        .await
                        .unwrap()
                        .into_inner();
                    admitted += u64::from(response.allowed);
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, capacity, "64 tasks x 1,000 checks on one key");
    let metrics = server.limiter().render_metrics();
    assert!(
        metrics.contains(r#"sluice_decisions_total{outcome="allowed",resource="storm"} 500"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_decisions_total{outcome="denied",resource="storm"} 63500"#),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_check_answers_with_status_headers_and_body() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    let post = |query: &str| {
        http.post(common::http_url(&server, &format!("/check{query}")))
            .header("X-API-Key", "dave")
    };
    let allowed = post("?resource=tight").send().await.unwrap();
    assert_eq!(allowed.status(), 200);
    let headers = allowed.headers().clone();
    assert_eq!(headers["ratelimit-policy"], r#""tight";q=2;w=5"#);
    assert_eq!(headers["ratelimit"], r#""tight";r=1;t=3"#);
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(headers["x-ratelimit-remaining"], "1");
    assert_eq!(headers["x-ratelimit-reset"], "3");
    assert!(headers.get("retry-after").is_none());
    let body: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(body["decision"], "allowed");
    assert_eq!(body["remaining"], 1);
    assert_eq!(body["rule"], "tight");
    assert_eq!(body["algorithm"], "token_bucket");
    assert_eq!(body["policy_window_ms"], 5_000.0);

    let denied = post("")
        .json(&serde_json::json!({"resource": "tight", "cost": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 429);
    let headers = denied.headers().clone();
    assert_eq!(headers["retry-after"], "3", "2.5 s rounds up, never down");
    assert_eq!(headers["ratelimit"], r#""tight";r=1;t=3"#);
    assert_eq!(headers["content-type"], "application/problem+json");
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["decision"], "denied");
    assert_eq!(body["violated-policies"], serde_json::json!(["tight"]));
    assert!(body["retry_after_ms"].as_f64().unwrap() > 2_400.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_rejects_bad_input_naming_the_field() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    let url = |query: &str| common::http_url(&server, &format!("/check{query}"));
    let cases = [
        (
            http.post(url("?resource=tight")),
            "key",
            "missing X-API-Key",
        ),
        (
            http.post(url("?resource=tight")).header("X-API-Key", ""),
            "key",
            "key is empty",
        ),
        (
            http.post(url("?resource=tight"))
                .header("X-API-Key", "k".repeat(40)),
            "key",
            "over the limit of 32",
        ),
        (
            http.post(url("?resource=tight&cost=abc"))
                .header("X-API-Key", "k"),
            "cost",
            "`abc` is not a whole number",
        ),
        (
            http.post(url("?resource=tight&cost=0"))
                .header("X-API-Key", "k"),
            "cost",
            "at least 1",
        ),
        (
            http.post(url("?resource=tight&cost=9"))
                .header("X-API-Key", "k"),
            "cost",
            "cost 9 exceeds 2",
        ),
        (
            http.post(url(""))
                .header("X-API-Key", "k")
                .body("{not json"),
            "body",
            "not a valid check request",
        ),
        (
            http.post(url(""))
                .header("X-API-Key", "k")
                .body(r#"{"cots": 1}"#),
            "body",
            "unknown field `cots`",
        ),
        (
            http.post(url("?resource=exact"))
                .header("X-API-Key", "k")
                .body(r#"{"resource":"tight"}"#),
            "resource",
            "both the query and the body",
        ),
        (
            http.post(url("?resource=elsewhere"))
                .header("X-API-Key", "k"),
            "resource",
            "no rule",
        ),
        (
            http.post(url("?resource=tight"))
                .header("X-API-Key", "k")
                .header("X-API-Key", "someone-else"),
            "key",
            "sent more than once",
        ),
    ];
    for (request, field, expected) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["field"], field, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains(expected),
            "{body}"
        );
    }
    let status = http
        .get(common::http_url(&server, "/status?resource=tight"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 400, "status needs a key too");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_status_reset_metrics_and_probes() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        http.post(common::http_url(&server, "/check?resource=exact"))
            .header("X-API-Key", "secret-client-key")
            .send()
            .await
            .unwrap();
    }
    let status = http
        .get(common::http_url(&server, "/status?resource=exact"))
        .header("X-API-Key", "secret-client-key")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    assert_eq!(status.headers()["ratelimit"], r#""exact";r=1;t=60"#);
    let body: serde_json::Value = status.json().await.unwrap();
    assert_eq!(
        (body["used"].as_u64(), body["remaining"].as_u64()),
        (Some(2), Some(1))
    );

    assert!(common::admin_reset(&server, "secret-client-key", "exact").await);

    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains(r#"sluice_decisions_total{outcome="allowed",resource="exact"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_request_duration_seconds_count{api="http",method="check"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_remaining_ratio_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_active_keys 0"),
        "reset removed the only key: {metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_build_info{commit=""#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("secret-client-key"),
        "client keys never become labels"
    );

    for (path, expected) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let response = http
            .get(common::http_url(&server, path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), expected);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn binary_exits_cleanly_on_sigterm_and_rejects_bad_config() {
    use std::process::{Command, Stdio};

    let binary = env!("CARGO_BIN_EXE_ratelimiter");
    let bad = Command::new(binary)
        .args(["--config", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("cannot read config file /nonexistent/sluice.toml")
    );

    let invalid = Command::new(binary)
        .args(["--shards", "3", "--backend", "etcd"])
        .output()
        .unwrap();
    assert_eq!(invalid.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.contains("backend.kind") && stderr.contains("backend.memory.shards"),
        "{stderr}"
    );

    // A Redis nobody listens on (port 1 of loopback): one line naming the URL and the field.
    let unreachable = Command::new(binary)
        .args(["--backend", "redis", "--redis-url", "redis://127.0.0.1:1"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("cannot reach Redis at redis://127.0.0.1:1 (backend.redis.urls)"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "the cause is said once: {stderr}"
    );
    let bad_port = Command::new(binary)
        .args(["--check-config", "--backend", "redis"])
        .args(["--redis-url", "redis://127.0.0.1:99999"])
        .output()
        .unwrap();
    assert_eq!(bad_port.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_port.stderr);
    assert!(
        stderr.contains("backend.redis.urls[0]") && stderr.contains("port (1 to 65535)"),
        "{stderr}"
    );

    let from_env = Command::new(binary)
        .arg("--check-config")
        .env("SLUICE_BACKEND", "etcd")
        .output()
        .unwrap();
    assert_eq!(from_env.status.code(), Some(2), "env vars are read");
    assert!(String::from_utf8_lossy(&from_env.stderr).contains("unknown backend `etcd`"));
    let flag_beats_env = Command::new(binary)
        .args(["--check-config", "--shards", "8"])
        .env("SLUICE_SHARDS", "3")
        .output()
        .unwrap();
    assert!(flag_beats_env.status.success(), "{flag_beats_env:?}");
    assert!(String::from_utf8_lossy(&flag_beats_env.stdout).contains("config is valid: 1 rule(s)"));

    let mut child = Command::new(binary)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the binary never logged {needle:?}");
    };
    wait_for("sluice listening");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for("draining in-flight requests");
    wait_for("stopped");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status:?}");
}

#[tokio::test]
async fn grpc_advertises_its_stream_limit() {
    let server = common::start(&format!(
        "[server]\ngrpc_max_concurrent_streams = 8\n{RULES}"
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(server.grpc_addr)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let client = client.ready().await.unwrap();
    // The server's SETTINGS frame arrives after the handshake; wait for it, boundedly.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while client.current_max_send_streams() != 8 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        client.current_max_send_streams(),
        8,
        "one connection may hold at most the configured streams"
    );
    driver.abort();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_refuses_two_api_keys_and_spends_neither() {
    let server = common::start(RULES).await;
    let http = reqwest::Client::new();
    let two_keys = http
        .post(common::http_url(&server, "/check?resource=exact"))
        .header("X-API-Key", "k")
        .header("X-API-Key", "k2")
        .send()
        .await
        .unwrap();
    assert_eq!(two_keys.status(), 400);
    let problem: serde_json::Value = two_keys.json().await.unwrap();
    assert_eq!(problem["field"], "key", "{problem}");
    for key in ["k", "k2"] {
        let status = http
            .get(common::http_url(&server, "/status?resource=exact"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = status.json().await.unwrap();
        assert_eq!(body["remaining"], 3, "{key} was not charged");
    }
    server.stop().await.unwrap();
}

/// Reads until the server closes the connection (or `within` passes): the bytes read, and
/// whether it closed.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: Duration,
) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => return (seen, false),
        }
    }
}

#[tokio::test]
async fn http_closes_half_sent_requests_and_idle_connections_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let server = common::start(&format!(
        "[server]\nhttp_header_timeout = \"300ms\"\n{RULES}"
    ))
    .await;
    let mut half_sent = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    half_sent
        .write_all(b"POST /check?resource=tight HTTP/1.1\r\nhost: sluice\r\nx-api-key: slow")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: sluice\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "served first"
    );
    let (_, closed) = read_until_closed(&mut half_sent, Duration::from_secs(3)).await;
    assert!(closed, "a request whose headers never end is dropped");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after about the timeout, took {:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_refuses_connections_over_its_cap_at_once_and_serves_again_below_it() {
    use tokio::io::AsyncWriteExt;
    let server = common::start(&format!(
        "[server]\nhttp_max_connections = 4\nhttp_header_timeout = \"30s\"\n{RULES}"
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: s")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    closed_on_arrival(server.http_addr).await;

    held.clear();
    // The server sees the four close and frees their slots; a new client is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let metrics = loop {
        match reqwest::get(common::http_url(&server, "/metrics")).await {
            Ok(response) => break response.text().await.unwrap(),
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("never served again: {err}"),
        }
    };
    assert!(
        metrics.contains(r#"sluice_http_connections_refused_total{listener="public"} 1"#),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_answers_a_malformed_message_with_invalid_argument() {
    let server = common::start(RULES).await;
    let tcp = tokio::net::TcpStream::connect(server.grpc_addr)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/sluice.v1.RateLimiter/Check",
        server.grpc_addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // One uncompressed message of 2 bytes: field 1 (key), length 255, and nothing after it.
    body.send_data(
        bytes::Bytes::from_static(&[0, 0, 0, 0, 2, 0x0a, 0xff]),
        true,
    )
    .unwrap();
    let response = response.await.unwrap();
    let status_of = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (head, mut rest) = response.into_parts();
    let status = match status_of(&head.headers) {
        Some(status) => status,
        None => {
            while rest.data().await.is_some() {}
            status_of(&rest.trailers().await.unwrap().unwrap()).unwrap()
        }
    };
    assert_eq!(
        status, "3",
        "INVALID_ARGUMENT, the caller's mistake, not INTERNAL (13)"
    );
    driver.abort();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_store_under_deny_new_refuses_new_keys_and_says_why() {
    let server = common::start(
        "[backend.memory]\nshards = 1\nmax_keys = 2\nfull_policy = \"deny_new\"\n\
         [rules.api]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1h\"\n",
    )
    .await;
    let http = reqwest::Client::new();
    let check = async |key: &str| {
        http.post(common::http_url(&server, "/check?resource=api"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap()
    };
    for key in ["a", "b"] {
        assert_eq!(check(key).await.status(), 200);
    }
    let refused = check("c").await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().starts_with("store full"),
        "{body}"
    );
    for key in ["a", "b"] {
        assert_eq!(check(key).await.status(), 429, "{key} was not forgotten");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_refuses_connections_over_its_cap_at_once() {
    let server = common::start(&format!("[server]\ngrpc_max_connections = 2\n{RULES}")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = common::grpc_client(&server).await;
        client.check(check("held", "tight", None)).await.unwrap();
        held.push(client);
    }
    closed_on_arrival(server.grpc_addr).await;
    held.clear();
    // Its slots free once the held connections close; a new client is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut client = common::grpc_client(&server).await;
        match client.check(check("new", "tight", None)).await {
            Ok(_) => break,
            Err(status) if std::time::Instant::now() < deadline => {
                let _ = status;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("never served again: {status}"),
        }
    }
    let metrics = common::metrics_text(&server).await;
    let refused = sluice_metric(
        &metrics,
        r#"sluice_http_connections_refused_total{listener="grpc"} "#,
    );
    assert!(refused >= 1.0, "{metrics}");
    server.stop().await.unwrap();
}

/// Connects to `addr` and asserts the server closes the connection at once (within a second),
/// as a listener over its connection cap must, rather than leave it hanging.
async fn closed_on_arrival(addr: std::net::SocketAddr) {
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut over, Duration::from_secs(2)).await;
    assert!(
        closed,
        "a connection over the cap is closed, not left hanging"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// The value of the sample whose line starts with `prefix` (0 when absent).
fn sluice_metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn the_server_sweeps_memory_keys_back_to_fresh() {
    let server = common::start(
        "[backend.memory]\nsweep_interval = \"20ms\"\n[rules.quick]\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"100ms\"\n",
    )
    .await;
    let http = reqwest::Client::new();
    for key in ["a", "b", "c"] {
        http.post(common::http_url(&server, "/check?resource=quick"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
    }
    assert!(
        common::metrics_text(&server)
            .await
            .contains("sluice_active_keys 3")
    );
    // Back to fresh 100 ms on; swept within a few sweep intervals (bounded: 3 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !common::metrics_text(&server)
        .await
        .contains("sluice_active_keys 0")
    {
        assert!(std::time::Instant::now() < deadline, "keys never swept");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.shutdown();
}

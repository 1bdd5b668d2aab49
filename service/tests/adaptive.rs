//! Adaptive limits end to end over real HTTP and gRPC: reports need a report token, slow
//! reports cut the resource's limit (denials then say so: 503 `temporary-reduced-capacity`),
//! healthy ones restore it, and the metrics show the factor.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, READ_TOKEN, REPORT_TOKEN};
use serde_json::{Value, json};
use sluice_proto::v1::{BackendReport, ReportRequest};

/// "api": 40 a minute, halved by a slow 200 ms window down to its floor of half (so a test
/// that waits for the factor 0.5 cannot miss it), +0.25 per healthy window. "plain": not
/// adaptive.
const RULES: &str = r#"
[rules.api]
algorithm = "fixed_window"
limit = 40
window = "1m"
[rules.api.adaptive]
target_latency = "50ms"
window = "200ms"
min_reports = 5
decrease = 0.5
increase = 0.25
floor = 0.5

[rules.plain]
algorithm = "fixed_window"
limit = 2
window = "1m"
"#;

async fn report(
    server: &sluice::server::RunningServer,
    token: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(common::http_url(server, "/report"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST /report answers")
}

async fn check(
    server: &sluice::server::RunningServer,
    key: &str,
    resource: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(common::http_url(
            server,
            &format!("/check?resource={resource}"),
        ))
        .header("x-api-key", key)
        .send()
        .await
        .expect("POST /check answers")
}

/// Reports `latency_ms` for "api" each 20 ms until a check of a fresh key reports the
/// capacity factor `wanted` (bounded: 5 s).
async fn report_until_factor(server: &sluice::server::RunningServer, latency_ms: f64, wanted: f64) {
    report_to_until_factor(server, server, latency_ms, wanted).await;
}

/// Reports to `reported` until a check on `checked` sees the factor `wanted` (bounded: 5 s).
async fn report_to_until_factor(
    reported: &sluice::server::RunningServer,
    checked: &sluice::server::RunningServer,
    latency_ms: f64,
    wanted: f64,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut probe = 0;
    loop {
        let batch: Vec<Value> = (0..10)
            .map(|_| json!({"resource": "api", "latency_ms": latency_ms}))
            .collect();
        let response = report(reported, Some(REPORT_TOKEN), json!({ "reports": batch })).await;
        assert_eq!(response.status(), 200);
        probe += 1;
        let answer: Value = check(checked, &format!("probe-{probe}"), "api")
            .await
            .json()
            .await
            .unwrap();
        let factor = answer["capacity_factor"].as_f64().unwrap();
        if (factor - wanted).abs() < 1e-9 {
            return;
        }
        assert!(Instant::now() < deadline, "factor {factor}, never {wanted}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reports_need_a_report_token_and_an_adaptive_resource() {
    let server = common::start(RULES).await;
    let one = json!({"resource": "api", "latency_ms": 10.0});
    let missing = report(&server, None, one.clone()).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"sluice-report\""
    );
    assert_eq!(
        report(&server, Some(READ_TOKEN), one.clone())
            .await
            .status(),
        403
    );
    assert_eq!(
        report(&server, Some("not-a-token-at-all-0000"), one.clone())
            .await
            .status(),
        401
    );
    assert_eq!(
        report(&server, Some(ADMIN_TOKEN), one.clone())
            .await
            .status(),
        200
    );

    let accepted: Value = report(&server, Some(REPORT_TOKEN), one)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["accepted"], 1);
    assert_eq!(accepted["factors"]["api"], 1.0);

    // Bad reports name their field; a batch with one bad report counts none.
    for (body, field) in [
        (json!({"resource": "plain", "latency_ms": 1.0}), "resource"),
        (json!({"resource": "api", "latency_ms": -1.0}), "latency_ms"),
        (json!({"resource": "api"}), "latency_ms"),
        (json!({"latency_ms": 1.0}), "resource"),
        (
            json!({"resource": "api", "latency_ms": 1.0, "reports": []}),
            "reports",
        ),
        (
            json!({"reports": [{"resource": "api", "latency_ms": 1.0}, {"resource": "nope", "latency_ms": 1.0}]}),
            "resource",
        ),
        (json!({"resource": "api", "latency": 1.0}), "body"),
    ] {
        let response = report(&server, Some(REPORT_TOKEN), body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("sluice_backend_reports_total{resource=\"api\",result=\"ok\"} 2"),
        "the refused batch counted nothing:\n{metrics}"
    );
    server.shutdown();
}

#[tokio::test]
async fn slow_reports_cut_the_limit_with_503s_and_healthy_ones_restore_it() {
    let server = common::start(RULES).await;
    report_until_factor(&server, 200.0, 0.5).await;

    // At half of 40, the 21st request of a key is refused for capacity, not quota.
    for n in 1..=20 {
        assert_eq!(
            check(&server, "alice", "api").await.status(),
            200,
            "request {n}"
        );
    }
    let refused = check(&server, "alice", "api").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    );
    assert_eq!(problem["limit"], 20);
    assert_eq!(problem["capacity_factor"], 0.5);
    assert!(
        problem["reason"]
            .as_str()
            .unwrap()
            .contains("backend overloaded")
    );
    // A status read shows the limit in force.
    let status: Value = reqwest::Client::new()
        .get(common::http_url(&server, "/status?resource=api"))
        .header("x-api-key", "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (status["limit"].as_u64(), status["remaining"].as_u64()),
        (Some(20), Some(0))
    );
    // A rule that is not adaptive still answers its quota with 429.
    check(&server, "alice", "plain").await;
    check(&server, "alice", "plain").await;
    assert_eq!(check(&server, "alice", "plain").await.status(), 429);

    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("sluice_adaptive_factor{resource=\"api\"} 0.5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_reduced_capacity_denials_total{resource=\"api\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_backend_latency_seconds_bucket{resource=\"api\",le=\"0.25\"}")
    );

    // Healthy reports bring the whole limit back, and alice's 21st request with it.
    report_until_factor(&server, 5.0, 1.0).await;
    let allowed: Value = check(&server, "alice", "api").await.json().await.unwrap();
    assert_eq!(
        (allowed["allowed"].as_bool(), allowed["limit"].as_u64()),
        (Some(true), Some(40))
    );
    server.shutdown();
}

#[tokio::test]
async fn grpc_reports_take_the_token_in_metadata_and_answer_the_factors() {
    let server = common::start(RULES).await;
    let mut client = common::grpc_client(&server).await;
    let reports = ReportRequest {
        reports: vec![BackendReport {
            resource: "api".into(),
            latency: Some(prost_types::Duration {
                seconds: 0,
                nanos: 7_000_000,
            }),
            failed: true,
        }],
    };
    let refused = client.report(reports.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(reports.clone());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {READ_TOKEN}").parse().unwrap(),
    );
    assert_eq!(
        client.report(request).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    let mut request = tonic::Request::new(reports);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {REPORT_TOKEN}").parse().unwrap(),
    );
    let answer = client.report(request).await.unwrap().into_inner();
    assert_eq!(answer.accepted, 1);
    assert_eq!(answer.factors.get("api"), Some(&1.0));

    let mut request = tonic::Request::new(ReportRequest {
        reports: vec![BackendReport {
            resource: "plain".into(),
            latency: None,
            failed: false,
        }],
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {REPORT_TOKEN}").parse().unwrap(),
    );
    let invalid = client.report(request).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(
        invalid.message().contains("reports[0].resource `plain`"),
        "{}",
        invalid.message()
    );
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("sluice_backend_reports_total{resource=\"api\",result=\"error\"} 1"),
        "{metrics}"
    );
    server.shutdown();
}

#[tokio::test]
async fn nodes_on_one_redis_share_one_factor() {
    let redis = common::redis::server();
    let config = format!("{}{RULES}", common::redis::backend(&[redis.url()], false));
    let reported = common::start(&config).await;
    let others = [common::start(&config).await, common::start(&config).await];
    // Only the first node hears of the backend; every node throttles.
    for other in &others {
        report_to_until_factor(&reported, other, 200.0, 0.5).await;
    }
    let shared: String = redis::cmd("HGET")
        .arg("sluice:adaptive:{api}")
        .arg("factor")
        .query_async(
            &mut redis::Client::open(redis.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(shared, "500000", "one shared state, in parts per million");
    for other in &others {
        report_to_until_factor(&reported, other, 5.0, 1.0).await;
    }
    for node in others.into_iter().chain([reported]) {
        node.shutdown();
    }
}

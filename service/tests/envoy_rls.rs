//! Envoy's rate limit service over real gRPC: envoyproxy/ratelimit's README examples with the
//! requests and answers it describes, every request and response field a gateway uses, the
//! store's failure, and the same decisions as `sluice.v1` for every algorithm.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice::server::RunningServer;
use sluice_proto::envoy::{
    extensions::common::ratelimit::v3::{
        RateLimitDescriptor,
        rate_limit_descriptor::{Entry, RateLimitOverride},
    },
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{Code, DescriptorStatus},
        rate_limit_service_client::RateLimitServiceClient,
    },
};
use sluice_testkit::folder::Folder;
use tonic::transport::Channel;

/// A node serving the YAML `files` (name, text) with `extra` TOML; the folder lives as long as
/// the node is needed.
async fn start(files: &[(&str, &str)], extra: &str) -> (RunningServer, Folder) {
    let folder = Folder::new("envoy-rls");
    for (name, text) in files {
        std::fs::write(folder.path().join(name), text).expect("write YAML");
    }
    let toml = format!(
        "[envoy]\nconfig_paths = [\"{}\"]\n{extra}",
        folder.path().display()
    );
    (common::start(&toml).await, folder)
}

async fn client(server: &RunningServer) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::new(common::grpc_channel(server).await)
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors,
        hits_addend: 0,
    }
}

async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(request)
        .await
        .expect("ShouldRateLimit answers")
        .into_inner()
}

/// One descriptor asked `times` times: each answer's code.
async fn codes(
    client: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    entries: &[(&str, &str)],
    times: usize,
) -> Vec<Code> {
    let mut codes = Vec::with_capacity(times);
    for _ in 0..times {
        let response = ask(client, request(domain, vec![descriptor(entries)])).await;
        codes.push(response.overall_code());
    }
    codes
}

fn ok_then_over(ok: usize, over: usize) -> Vec<Code> {
    let mut codes = vec![Code::Ok; ok];
    codes.extend(vec![Code::OverLimit; over]);
    codes
}

/// Waits, when needed, until a new aligned second has just begun, so a burst of requests
/// falls in one per-second window.
async fn at_start_of_second() {
    let into = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_millis();
    if into > 300 {
        tokio::time::sleep(Duration::from_millis(u64::from(1_010 - into))).await;
    }
}

fn status_limit(status: &DescriptorStatus) -> Option<(u32, i32, &str)> {
    status
        .current_limit
        .as_ref()
        .map(|limit| (limit.requests_per_unit, limit.unit, limit.name.as_str()))
}

const SECOND: i32 = 1;
const MINUTE: i32 = 2;
const HOUR: i32 = 3;
const DAY: i32 = 4;

#[tokio::test]
async fn readme_example_1_limits_each_listed_value_and_nothing_else() {
    let yaml = "
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
";
    let (server, _folder) = start(&[("mongo.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    at_start_of_second().await;
    let mut spend = request("mongo_cps", vec![descriptor(&[("database", "users")])]);
    spend.hits_addend = 500;
    let response = ask(&mut rls, spend).await;
    assert_eq!(response.overall_code(), Code::Ok);
    let status = &response.statuses[0];
    assert_eq!(status_limit(status), Some((500, SECOND, "")));
    assert_eq!(status.limit_remaining, 0);
    let reset = status
        .duration_until_reset
        .expect("a limited descriptor says when it resets");
    assert!(
        reset.seconds == 0 || (reset.seconds == 1 && reset.nanos == 0),
        "{reset:?}"
    );
    assert_eq!(
        codes(&mut rls, "mongo_cps", &[("database", "users")], 1).await,
        [Code::OverLimit]
    );
    // `default` has its own 500, untouched by `users`.
    assert_eq!(
        codes(&mut rls, "mongo_cps", &[("database", "default")], 1).await,
        [Code::Ok]
    );
    // A value with no entry, and no bare `database` default: not limited, no current_limit.
    let other = ask(
        &mut rls,
        request("mongo_cps", vec![descriptor(&[("database", "orders")])]),
    )
    .await;
    assert_eq!(other.overall_code(), Code::Ok);
    assert_eq!(other.statuses[0].current_limit, None);
}

#[tokio::test]
async fn readme_example_2_answers_every_descriptor_in_order_and_ors_them() {
    let yaml = "
domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
";
    let (server, _folder) = start(&[("messaging.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    let both = || {
        request(
            "messaging",
            vec![
                descriptor(&[("message_type", "marketing"), ("to_number", "2061111111")]),
                descriptor(&[("to_number", "2061111111")]),
            ],
        )
    };
    for sent in 1..=5u32 {
        let response = ask(&mut rls, both()).await;
        assert_eq!(response.overall_code(), Code::Ok, "message {sent}");
        assert_eq!(response.statuses.len(), 2);
        assert_eq!(status_limit(&response.statuses[0]), Some((5, DAY, "")));
        assert_eq!(response.statuses[0].limit_remaining, 5 - sent);
        assert_eq!(status_limit(&response.statuses[1]), Some((100, DAY, "")));
        assert_eq!(response.statuses[1].limit_remaining, 100 - sent);
    }
    let sixth = ask(&mut rls, both()).await;
    assert_eq!(sixth.overall_code(), Code::OverLimit);
    assert_eq!(sixth.statuses[0].code(), Code::OverLimit);
    assert_eq!(
        sixth.statuses[1].code(),
        Code::Ok,
        "each descriptor is decided on its own"
    );
    // Another number has its own 5 marketing messages.
    let other = [("message_type", "marketing"), ("to_number", "2062222222")];
    assert_eq!(codes(&mut rls, "messaging", &other, 1).await, [Code::Ok]);
}

#[tokio::test]
async fn readme_example_3_blocks_a_listed_address_and_limits_the_rest() {
    let yaml = "
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
";
    let (server, _folder) = start(&[("edge.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    at_start_of_second().await;
    let domain = "edge_proxy_per_ip";
    assert_eq!(
        codes(&mut rls, domain, &[("remote_address", "50.0.0.1")], 11).await,
        ok_then_over(10, 1)
    );
    let blocked = ask(
        &mut rls,
        request(domain, vec![descriptor(&[("remote_address", "50.0.0.5")])]),
    )
    .await;
    assert_eq!(blocked.overall_code(), Code::OverLimit);
    assert_eq!(status_limit(&blocked.statuses[0]), Some((0, SECOND, "")));
}

#[tokio::test]
async fn readme_example_4_matches_only_at_the_configured_depth() {
    let shallow = "
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit:
      requests_per_unit: 300
      unit: second
";
    let nested = "
domain: example4_nested
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit:
          requests_per_unit: 300
          unit: second
";
    let (server, _folder) = start(&[("a.yaml", shallow), ("b.yaml", nested)], "").await;
    let mut rls = client(&server).await;
    let two = [("key", "value"), ("subkey", "subvalue")];
    let response = ask(&mut rls, request("example4", vec![descriptor(&two)])).await;
    assert_eq!(
        response.statuses[0].current_limit, None,
        "two entries, one level"
    );
    let response = ask(&mut rls, request("example4_nested", vec![descriptor(&two)])).await;
    assert_eq!(status_limit(&response.statuses[0]), Some((300, SECOND, "")));
}

#[tokio::test]
async fn readme_example_5_answers_unlimited_with_the_largest_remaining() {
    let yaml = "
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true
  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
";
    let (server, _folder) = start(&[("internal.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    let response = ask(
        &mut rls,
        request(
            "internal",
            vec![descriptor(&[("ldap", "x")]), descriptor(&[("azure", "x")])],
        ),
    )
    .await;
    assert_eq!(response.overall_code(), Code::Ok);
    assert_eq!(response.statuses[0].code(), Code::Ok);
    assert_eq!(response.statuses[0].limit_remaining, u32::MAX);
    assert_eq!(response.statuses[0].current_limit, None);
    assert_eq!(status_limit(&response.statuses[1]), Some((100, MINUTE, "")));
    assert_eq!(response.statuses[1].limit_remaining, 99);
}

#[tokio::test]
async fn readme_example_6_shadow_mode_answers_ok_and_counts_what_it_would_deny() {
    let yaml = "
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit:
          requests_per_unit: 10
          unit: second
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit:
          requests_per_unit: 20
          unit: second
";
    let (server, _folder) = start(&[("example6.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    at_start_of_second().await;
    let user_a = [("service", "auth-service"), ("user", "user-a")];
    let user_b = [("service", "auth-service"), ("user", "user-b")];
    assert_eq!(
        codes(&mut rls, "example6", &user_a, 12).await,
        vec![Code::Ok; 12]
    );
    assert_eq!(
        codes(&mut rls, "example6", &user_b, 21).await,
        ok_then_over(20, 1)
    );
    let metrics = common::metrics_text(&server).await;
    let shadowed = "sluice_decisions_total{outcome=\"shadow_denied\",resource=\"envoy:example6.service.user_user-a\"} 2";
    assert!(metrics.contains(shadowed), "no `{shadowed}` in\n{metrics}");
}

#[tokio::test]
async fn readme_example_7_replaces_drops_the_named_limit_and_leaves_it_unspent() {
    let yaml = "
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
";
    let (server, _folder) = start(&[("example7.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    at_start_of_second().await;
    let first = [("key_1", "value_1"), ("user", "bkthomps")];
    let second = [("key_2", "value_2"), ("user", "bkthomps")];
    for sent in 1..=10u32 {
        let response = ask(
            &mut rls,
            request("example7", vec![descriptor(&first), descriptor(&second)]),
        )
        .await;
        assert_eq!(
            response.overall_code(),
            Code::Ok,
            "request {sent}: 10 / sec applies"
        );
        assert_eq!(response.statuses[0].current_limit, None, "replaced");
        assert_eq!(response.statuses[1].limit_remaining, 10 - sent);
    }
    // The replaced limit was never spent: its own 5 / sec are all there.
    let alone = ask(&mut rls, request("example7", vec![descriptor(&first)])).await;
    assert_eq!(
        status_limit(&alone.statuses[0]),
        Some((5, SECOND, "specific_limit"))
    );
    assert_eq!(alone.statuses[0].limit_remaining, 4);
}

#[tokio::test]
async fn readme_examples_9_and_11_wildcards_and_shared_thresholds() {
    let wildcards = "
domain: example9
descriptors:
  - key: path
    value: /api/*/action
    rate_limit:
      unit: minute
      requests_per_unit: 20
";
    let shared = "
domain: example11
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit:
      unit: hour
      requests_per_unit: 10
  - key: files_no_share
    value: files_no_share/*
    share_threshold: false
    rate_limit:
      unit: hour
      requests_per_unit: 10
";
    let (server, _folder) = start(&[("nine.yaml", wildcards), ("eleven.yaml", shared)], "").await;
    let mut rls = client(&server).await;
    let matched = ask(
        &mut rls,
        request("example9", vec![descriptor(&[("path", "/api/123/action")])]),
    )
    .await;
    assert_eq!(status_limit(&matched.statuses[0]), Some((20, MINUTE, "")));
    let missed = ask(
        &mut rls,
        request("example9", vec![descriptor(&[("path", "/api/123/other")])]),
    )
    .await;
    assert_eq!(missed.statuses[0].current_limit, None);
    // 5 + 5 on two shared files exhaust the shared 10; a third file is over.
    assert_eq!(
        codes(&mut rls, "example11", &[("files", "files/a.pdf")], 5).await,
        vec![Code::Ok; 5]
    );
    assert_eq!(
        codes(&mut rls, "example11", &[("files", "files/b.csv")], 5).await,
        vec![Code::Ok; 5]
    );
    assert_eq!(
        codes(&mut rls, "example11", &[("files", "files/c.txt")], 1).await,
        [Code::OverLimit]
    );
    let unshared = [("files_no_share", "files_no_share/a.pdf")];
    assert_eq!(
        codes(&mut rls, "example11", &unshared, 11).await,
        ok_then_over(10, 1)
    );
    let other = [("files_no_share", "files_no_share/b.csv")];
    assert_eq!(codes(&mut rls, "example11", &other, 1).await, [Code::Ok]);
    let status = ask(&mut rls, request("example11", vec![descriptor(&unshared)])).await;
    assert_eq!(status_limit(&status.statuses[0]), Some((10, HOUR, "")));
}

#[tokio::test]
async fn hits_addend_per_request_per_descriptor_and_zero_to_only_read() {
    let yaml = "
domain: hits
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 10}
";
    let (server, _folder) = start(&[("hits.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    let mut three = request("hits", vec![descriptor(&[("user", "a")])]);
    three.hits_addend = 3;
    assert_eq!(ask(&mut rls, three).await.statuses[0].limit_remaining, 7);
    // The descriptor's own hits_addend wins over the request's; zero spends nothing.
    let mut read = request("hits", vec![descriptor(&[("user", "a")])]);
    read.hits_addend = 5;
    read.descriptors[0].hits_addend = Some(0);
    let response = ask(&mut rls, read).await;
    assert_eq!(response.overall_code(), Code::Ok);
    assert_eq!(response.statuses[0].limit_remaining, 7);
    let mut four = request("hits", vec![descriptor(&[("user", "a")])]);
    four.descriptors[0].hits_addend = Some(4);
    assert_eq!(ask(&mut rls, four).await.statuses[0].limit_remaining, 3);
    // More than is left: over the limit, and nothing spent.
    let mut five = request("hits", vec![descriptor(&[("user", "a")])]);
    five.hits_addend = 5;
    assert_eq!(ask(&mut rls, five).await.overall_code(), Code::OverLimit);
    let mut three_more = request("hits", vec![descriptor(&[("user", "a")])]);
    three_more.hits_addend = 3;
    let response = ask(&mut rls, three_more).await;
    assert_eq!(response.overall_code(), Code::Ok);
    assert_eq!(response.statuses[0].limit_remaining, 0);
    // More than the limit could ever hold: over the limit, not an error.
    let mut huge = request("hits", vec![descriptor(&[("user", "b")])]);
    huge.hits_addend = 11;
    assert_eq!(ask(&mut rls, huge).await.overall_code(), Code::OverLimit);
    assert_eq!(
        codes(&mut rls, "hits", &[("user", "b")], 1).await,
        [Code::Ok]
    );
}

#[tokio::test]
async fn a_descriptors_own_limit_replaces_the_configured_one() {
    let yaml = "
domain: override
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 100}
";
    let (server, _folder) = start(&[("override.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    let with_override = || {
        let mut descriptor = descriptor(&[("user", "a")]);
        descriptor.limit = Some(RateLimitOverride {
            requests_per_unit: 3,
            unit: MINUTE,
        });
        request("override", vec![descriptor])
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(ask(&mut rls, with_override()).await);
    }
    let codes: Vec<Code> = seen.iter().map(RateLimitResponse::overall_code).collect();
    assert_eq!(codes, ok_then_over(3, 1));
    assert_eq!(status_limit(&seen[0].statuses[0]), Some((3, MINUTE, "")));
    // The configured 100 / hour is a counter of its own, unspent.
    let plain = ask(
        &mut rls,
        request("override", vec![descriptor(&[("user", "a")])]),
    )
    .await;
    assert_eq!(plain.statuses[0].limit_remaining, 99);
    // An override in an unknown domain limits nothing, as in the reference.
    let mut unknown = with_override();
    unknown.domain = "nowhere".into();
    assert_eq!(ask(&mut rls, unknown).await.statuses[0].current_limit, None);
}

#[tokio::test]
async fn headers_report_the_tightest_descriptor_in_both_drafts() {
    let yaml = "
domain: headers
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 10, name: per_user}
  - key: ip
    rate_limit: {unit: hour, requests_per_unit: 3}
";
    let (server, _folder) = start(&[("headers.yaml", yaml)], "headers = \"both\"\n").await;
    let mut rls = client(&server).await;
    let response = ask(
        &mut rls,
        request(
            "headers",
            vec![
                descriptor(&[("user", "u")]),
                descriptor(&[("ip", "1.2.3.4")]),
            ],
        ),
    )
    .await;
    let header = |name: &str| {
        response
            .response_headers_to_add
            .iter()
            .find(|header| header.key == name)
            .map(|header| header.value.clone())
            .unwrap_or_else(|| panic!("no {name} in {:?}", response.response_headers_to_add))
    };
    assert_eq!(header("x-ratelimit-limit"), "3");
    assert_eq!(header("x-ratelimit-remaining"), "2");
    let reset: u64 = header("x-ratelimit-reset").parse().expect("seconds");
    assert!((1..=3_600).contains(&reset), "{reset}");
    let policy = header("ratelimit-policy");
    assert!(policy.contains("\"per_user\";q=10;w=3600"), "{policy}");
    assert!(policy.contains("\"headers.ip\";q=3;w=3600"), "{policy}");
    let state = header("ratelimit");
    assert!(state.contains("\"per_user\";r=9;"), "{state}");
    assert!(state.contains("\"headers.ip\";r=2;"), "{state}");
}

#[tokio::test]
async fn headers_are_off_unless_configured() {
    let yaml =
        "domain: quiet\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 3}}]\n";
    let (server, _folder) = start(&[("quiet.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    let response = ask(&mut rls, request("quiet", vec![descriptor(&[("k", "v")])])).await;
    assert!(response.response_headers_to_add.is_empty());
}

#[tokio::test]
async fn bad_requests_name_the_field_and_the_fix() {
    let yaml =
        "domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 3}}]\n";
    let (server, _folder) = start(&[("d.yaml", yaml)], "").await;
    let mut rls = client(&server).await;
    let cases = [
        (
            request("", vec![descriptor(&[("k", "v")])]),
            "domain is empty",
        ),
        (request("d", vec![]), "descriptors is empty"),
        (
            {
                let mut descriptor = descriptor(&[("k", "v")]);
                descriptor.limit = Some(RateLimitOverride {
                    requests_per_unit: 1,
                    unit: 42,
                });
                request("d", vec![descriptor])
            },
            "descriptors[0].limit.unit 42",
        ),
        (
            request("d", vec![descriptor(&[("k", &"v".repeat(300))])]),
            "limits.max_key_bytes",
        ),
    ];
    for (request, expected) in cases {
        let status = rls.should_rate_limit(request).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(expected), "{}", status.message());
    }
}

#[tokio::test]
async fn the_public_api_cannot_reach_an_envoy_counter() {
    let yaml =
        "domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 3}}]\n";
    let (server, _folder) = start(
        &[("d.yaml", yaml)],
        "[default_rule]\nalgorithm = \"fixed_window\"\nlimit = 100\nwindow = \"1h\"\n",
    )
    .await;
    let mut grpc = common::grpc_client(&server).await;
    let status = grpc
        .check(sluice_proto::v1::CheckRequest {
            key: "k=v".into(),
            resource: "envoy|d|k".into(),
            cost: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("Envoy"), "{}", status.message());
}

#[tokio::test]
async fn health_reports_the_rate_limit_service_serving() {
    let yaml =
        "domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 3}}]\n";
    let (server, _folder) = start(&[("d.yaml", yaml)], "").await;
    let channel = common::grpc_channel(&server).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.ratelimit.v3.RateLimitService".into(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

/// Each algorithm, with the same parameters as a `sluice.v1` rule and as an Envoy
/// descriptor's `sluice` block, answers the same sequence of costs alike. Parameters restore
/// so slowly that the few milliseconds between the two sequences change nothing.
#[tokio::test]
async fn every_algorithm_decides_through_rls_as_through_sluice_v1() {
    let algorithms = [
        (
            "token_bucket",
            "capacity = 6\nrefill_per_second = 0.0001",
            "{algorithm: token_bucket, capacity: 6, refill_per_second: 0.0001}",
        ),
        (
            "gcra",
            "rate_per_second = 0.0001\nburst = 6",
            "{algorithm: gcra, rate_per_second: 0.0001, burst: 6}",
        ),
        (
            "fixed_window",
            "limit = 6\nwindow = \"1h\"",
            "{algorithm: fixed_window, limit: 6, window: 1h}",
        ),
        (
            "sliding_window_counter",
            "limit = 6\nwindow = \"1h\"",
            "{algorithm: sliding_window_counter, limit: 6, window: 1h}",
        ),
        (
            "sliding_window_log",
            "limit = 6\nwindow = \"1h\"",
            "{algorithm: sliding_window_log, limit: 6, window: 1h}",
        ),
        (
            "stacked",
            "[[rules.stacked.limits]]\nname = \"small\"\nalgorithm = \"fixed_window\"\nlimit = 4\nwindow = \"1h\"\n[[rules.stacked.limits]]\nname = \"large\"\nalgorithm = \"token_bucket\"\ncapacity = 6\nrefill_per_second = 0.0001",
            "{limits: [{name: small, algorithm: fixed_window, limit: 4, window: 1h}, {name: large, algorithm: token_bucket, capacity: 6, refill_per_second: 0.0001}]}",
        ),
    ];
    let mut toml = String::new();
    let mut yaml = String::from("domain: same\ndescriptors:\n");
    for (name, table, block) in algorithms {
        if name == "stacked" {
            toml.push_str(&format!("{table}\n"));
        } else {
            toml.push_str(&format!(
                "[rules.{name}]\nalgorithm = \"{name}\"\n{table}\n"
            ));
        }
        yaml.push_str(&format!("  - key: {name}\n    sluice: {block}\n"));
    }
    let (server, _folder) = start(&[("same.yaml", &yaml)], &format!("\n{toml}")).await;
    let mut rls = client(&server).await;
    let mut grpc = common::grpc_client(&server).await;
    let costs = [1u32, 2, 1, 3, 1, 1, 2, 1];
    for (name, _, _) in algorithms {
        let mut through_v1 = Vec::new();
        for cost in costs {
            let answer = grpc
                .check(sluice_proto::v1::CheckRequest {
                    key: "client".into(),
                    resource: name.into(),
                    cost: Some(u64::from(cost)),
                })
                .await
                .expect("sluice.v1 answers")
                .into_inner();
            let allowed = answer.decision() == sluice_proto::v1::Decision::Allowed;
            through_v1.push((allowed, answer.remaining, answer.limit));
        }
        let mut through_rls = Vec::new();
        for cost in costs {
            let mut ask_once = request("same", vec![descriptor(&[(name, "client")])]);
            ask_once.hits_addend = cost;
            let response = ask(&mut rls, ask_once).await;
            let status = &response.statuses[0];
            let limit = status.current_limit.as_ref().expect("limited");
            through_rls.push((
                status.code() == Code::Ok,
                u64::from(status.limit_remaining),
                u64::from(limit.requests_per_unit),
            ));
        }
        assert_eq!(through_rls, through_v1, "{name}");
        assert!(
            through_v1.iter().any(|(allowed, ..)| !allowed),
            "{name} denies some"
        );
    }
}

#[tokio::test]
async fn editing_a_yaml_file_reloads_its_limits_and_a_bad_edit_keeps_them() {
    let folder = Folder::new("envoy-reload");
    let yaml_path = folder.path().join("api.yaml");
    let yaml = |limit: u32| {
        format!(
            "domain: api\ndescriptors: [{{key: user, rate_limit: {{unit: hour, requests_per_unit: {limit}}}}}]\n"
        )
    };
    std::fs::write(&yaml_path, yaml(3)).unwrap();
    let toml_path = folder.path().join("sluice.toml");
    std::fs::write(
        &toml_path,
        format!(
            "[server]\nconfig_poll_interval = \"50ms\"\n[envoy]\nconfig_paths = [\"{}\"]\n",
            yaml_path.display()
        ),
    )
    .unwrap();
    let overrides = common::loopback_overrides();
    let config = sluice::config::Config::load(Some(&toml_path), &overrides).unwrap();
    let mut server = sluice::server::start(config).await.unwrap();
    server.follow_file(sluice::reload::ConfigSource {
        path: toml_path.clone(),
        overrides,
    });
    let mut rls = client(&server).await;
    let limit_now = |response: RateLimitResponse| {
        let status = &response.statuses[0];
        (
            status.current_limit.as_ref().unwrap().requests_per_unit,
            status.limit_remaining,
        )
    };
    let one = || request("api", vec![descriptor(&[("user", "a")])]);
    assert_eq!(limit_now(ask(&mut rls, one()).await), (3, 2));
    std::fs::write(&yaml_path, yaml(10)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (limit, remaining) = limit_now(ask(&mut rls, one()).await);
        if limit == 10 {
            // The count carried over: 1 spent before, this one now.
            assert!(remaining <= 8, "{remaining}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edit never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(
        &yaml_path,
        "domain: api\ndescriptors: [{key: user, rate_limit: {unit: fortnight}}]\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        limit_now(ask(&mut rls, one()).await).0,
        10,
        "a bad edit keeps the running limits"
    );
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"invalid\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn near_limit_and_detailed_metrics_stay_bounded() {
    let yaml = "
domain: metered
descriptors:
  - key: user
    detailed_metric: true
    rate_limit: {unit: hour, requests_per_unit: 10}
";
    let (server, _folder) = start(
        &[("metered.yaml", yaml)],
        "near_limit_ratio = 0.5\ndetailed_metric_max_series = 3\n",
    )
    .await;
    let mut rls = client(&server).await;
    // 10 requests of one user: the 6th to the 10th leave more than half spent.
    assert_eq!(
        codes(&mut rls, "metered", &[("user", "u0")], 10).await,
        vec![Code::Ok; 10]
    );
    for user in 1..8 {
        codes(&mut rls, "metered", &[("user", &format!("u{user}"))], 1).await;
    }
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("sluice_near_limit_total{resource=\"envoy:metered.user\"} 5"),
        "{metrics}"
    );
    let detailed: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("sluice_envoy_detailed_decisions_total{"))
        .collect();
    assert_eq!(detailed.len(), 4, "3 descriptors and _other_: {detailed:?}");
    assert!(metrics.contains("sluice_envoy_detailed_decisions_total{descriptor=\"metered.user_u0\",outcome=\"allowed\"} 10"), "{metrics}");
    assert!(
        metrics.contains(
            "sluice_envoy_detailed_decisions_total{descriptor=\"_other_\",outcome=\"allowed\"} 5"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn readme_examples_8_and_10_limit_unlisted_values_and_count_them_apart() {
    // Example 8: detailed_metric on the bare key; an unlisted value gets 10 / minute, the
    // listed one 20. Example 10: value_to_metric down three levels; the limit at the last.
    let eight = "
domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 20
";
    let ten = "
domain: example10
descriptors:
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit:
              unit: minute
              requests_per_unit: 60
";
    let (server, _folder) = start(&[("eight.yaml", eight), ("ten.yaml", ten)], "").await;
    let mut rls = client(&server).await;
    let limit_of = |response: &RateLimitResponse| status_limit(&response.statuses[0]).map(|l| l.0);
    for (value, limit) in [
        ("unspecified_value", 10),
        ("unspecified_value2", 10),
        ("value1", 20),
    ] {
        let response = ask(
            &mut rls,
            request("example8", vec![descriptor(&[("key1", value)])]),
        )
        .await;
        assert_eq!(limit_of(&response), Some(limit), "{value}");
    }
    let three = [
        ("route", "api"),
        ("http_method", "GET"),
        ("subject_id", "123"),
    ];
    let response = ask(&mut rls, request("example10", vec![descriptor(&three)])).await;
    assert_eq!(limit_of(&response), Some(60));
    let metrics = common::metrics_text(&server).await;
    for descriptor in [
        "example8.key1_unspecified_value",
        "example8.key1_unspecified_value2",
    ] {
        assert!(
            metrics.contains(&format!("sluice_envoy_detailed_decisions_total{{descriptor=\"{descriptor}\",outcome=\"allowed\"}} 1")),
            "no series for {descriptor}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("sluice_envoy_detailed_decisions_total{descriptor=\"example10.route_api.http_method_GET.subject_id\",outcome=\"allowed\"} 1"),
        "{metrics}"
    );
}

//! The Envoy example in `deploy/envoy/`: the descriptors its `rate_limits` actions produce
//! (derived from envoy.yaml as Envoy derives them) are limited by the Sluice configuration
//! shipped beside it, over real gRPC. No Envoy binary installs on the build machine, so this
//! is the check that the two files agree.

mod common;

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;
use sluice::{
    config::{Config, Overrides},
    server,
};
use sluice_proto::envoy::{
    extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    service::ratelimit::v3::{
        RateLimitRequest, rate_limit_response::Code,
        rate_limit_service_client::RateLimitServiceClient,
    },
};

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/envoy")
        .join(file)
}

/// A request as Envoy sees it: the client's address and its headers.
struct Downstream<'a> {
    address: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

/// The descriptor one `rate_limits` entry produces for `request`, or `None` when an action
/// has nothing to add (a missing header skips the whole descriptor, as in Envoy).
fn descriptor_of(rate_limit: &Value, request: &Downstream<'_>) -> Option<Vec<(String, String)>> {
    let mut entries = Vec::new();
    for action in rate_limit["actions"].as_sequence().expect("actions") {
        let action = action.as_mapping().expect("an action is a mapping");
        let (kind, settings) = action.iter().next().expect("one action kind");
        let text = |field: &str| settings[field].as_str().map(str::to_owned);
        match kind.as_str().expect("action name") {
            "generic_key" => entries.push((
                text("descriptor_key").unwrap_or_else(|| "generic_key".into()),
                text("descriptor_value").expect("generic_key has a value"),
            )),
            "remote_address" => entries.push(("remote_address".into(), request.address.into())),
            "request_headers" => {
                let name = text("header_name").expect("header_name");
                let value = request
                    .headers
                    .iter()
                    .find(|(header, _)| header.eq_ignore_ascii_case(&name))?
                    .1;
                entries.push((
                    text("descriptor_key").expect("descriptor_key"),
                    value.into(),
                ));
            }
            other => panic!("the example uses action `{other}`, which this test does not derive"),
        }
    }
    Some(entries)
}

#[tokio::test]
async fn the_envoy_examples_descriptors_are_limited_by_the_shipped_configuration() {
    let envoy: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(example("envoy.yaml")).unwrap())
            .expect("envoy.yaml is YAML");
    let listener = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
    let manager = &listener["typed_config"];
    let filter = manager["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|filter| filter["name"] == "envoy.filters.http.ratelimit")
        .expect("the rate limit filter");
    let domain = filter["typed_config"]["domain"].as_str().expect("domain");
    let cluster =
        filter["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
            .as_str()
            .unwrap();
    let rate_limits = manager["route_config"]["virtual_hosts"][0]["rate_limits"]
        .as_sequence()
        .expect("rate_limits");

    let overrides = Overrides {
        backend: Some("memory".into()),
        ..common::loopback_overrides()
    };
    let config = Config::load(Some(&example("sluice.toml")), &overrides)
        .unwrap_or_else(|err| panic!("deploy/envoy/sluice.toml: {err}"));
    // Envoy's cluster reaches the port the shipped configuration serves gRPC on.
    let shipped = Config::load(Some(&example("sluice.toml")), &Overrides::default()).unwrap();
    let sluice_cluster = envoy["static_resources"]["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|candidate| candidate["name"] == cluster)
        .expect("the rate limit service's cluster");
    let port = &sluice_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"]["port_value"];
    assert_eq!(
        port.as_u64(),
        Some(u64::from(shipped.server.grpc_addr.port()))
    );

    let node = server::start(config).await.expect("node starts");
    let mut rls = RateLimitServiceClient::new(common::grpc_channel(&node).await);
    let ask = |request: &Downstream<'_>| RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: rate_limits
            .iter()
            .filter_map(|rate_limit| descriptor_of(rate_limit, request))
            .map(|entries| RateLimitDescriptor {
                entries: entries
                    .into_iter()
                    .map(|(key, value)| Entry { key, value })
                    .collect(),
                ..RateLimitDescriptor::default()
            })
            .collect(),
        hits_addend: 0,
    };
    let client = Downstream {
        address: "203.0.113.7",
        headers: &[("X-API-Key", "key-1")],
    };
    let response = rls
        .should_rate_limit(ask(&client))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.overall_code(), Code::Ok);
    let names: Vec<&str> = response
        .statuses
        .iter()
        .map(|status| {
            status
                .current_limit
                .as_ref()
                .map_or("", |limit| limit.name.as_str())
        })
        .collect();
    assert_eq!(
        names,
        ["per_address", "per_api_key"],
        "both descriptors limited"
    );
    assert!(
        response
            .response_headers_to_add
            .iter()
            .any(|header| header.key == "x-ratelimit-limit"),
        "headers = \"both\" adds Envoy's draft-03 headers"
    );

    // Without the header Envoy sends one descriptor; the blocked address is over its limit.
    let blocked = Downstream {
        address: "192.0.2.66",
        headers: &[],
    };
    let response = rls
        .should_rate_limit(ask(&blocked))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.statuses.len(), 1);
    assert_eq!(response.overall_code(), Code::OverLimit);

    // The stacked per-key limit: 10 a second at most.
    let mut answers = Vec::new();
    for _ in 0..12 {
        let response = rls
            .should_rate_limit(ask(&client))
            .await
            .unwrap()
            .into_inner();
        answers.push(response.statuses[1].code());
    }
    assert!(answers.contains(&Code::OverLimit), "{answers:?}");
    node.stop().await.unwrap();
}

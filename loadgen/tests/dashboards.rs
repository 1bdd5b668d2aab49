//! The dashboards against reality: promtool checks the configuration, rules and rule tests; a
//! real Prometheus (the local stack) scrapes two Redis-backed nodes and a loadgen run, and
//! every dashboard panel query and every rule expression must return data, with the allowed
//! rate the dashboard shows agreeing with the loadgen ledger.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use loadgen::{
    engine::{LoadModel, RunConfig},
    keys::Distribution,
    metrics::ClientMetrics,
    schedule::Schedule,
    scrape::get_text,
    session::{SessionOptions, run_session},
    stack::{Stack, StackOptions},
    wire::Endpoint,
};
use serde_json::Value;
use sluice_testkit::local_redis::free_port;

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn promtool(args: &[&str], cwd: &Path) -> String {
    sluice_testkit::tools::run_ok(
        Command::new("promtool").args(args).current_dir(cwd),
        "`apt-get install prometheus` (scripts/test installs it)",
    )
}

#[test]
fn promtool_accepts_the_config_and_rules_and_the_rule_tests_pass() {
    let prometheus = dashboards().join("prometheus");
    promtool(&["check", "config", "prometheus.yml"], &prometheus);
    let said = promtool(&["check", "rules", "rules/sluice.rules.yml"], &prometheus);
    assert!(said.contains("12 rules found"), "{said}");
    let said = promtool(
        &["test", "rules", "tests/sluice.test.yml"],
        &prometheus.join("rules"),
    );
    assert!(said.contains("SUCCESS"), "{said}");
}

fn dashboard_files() -> Vec<(String, Value)> {
    let dir = dashboards().join("grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "the service and load-test dashboards");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!text.contains("${DS_"), "{name} has an import placeholder");
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect()
}

/// (dashboard, panel title, PromQL) for every panel target.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for (name, dashboard) in dashboard_files() {
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                queries.push((
                    name.clone(),
                    panel["title"].as_str().unwrap().to_owned(),
                    target["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    queries
}

#[test]
fn dashboards_are_provisionable_as_they_are() {
    let provisioning = std::fs::read_to_string(
        dashboards().join("grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    let uid_line = provisioning
        .lines()
        .find_map(|line| line.trim().strip_prefix("uid: "))
        .expect("the datasource has a fixed uid");
    let mut uids = HashSet::new();
    for (name, dashboard) in dashboard_files() {
        let uid = dashboard["uid"].as_str().unwrap().to_owned();
        assert!(uids.insert(uid.clone()), "{name}: uid {uid} is used twice");
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        assert!(
            variables.iter().any(|v| v["name"] == "instance"),
            "{name} has an $instance variable"
        );
        let mut ids = HashSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap();
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{name}: {title}: id reused"
            );
            assert_eq!(panel["datasource"]["uid"], uid_line, "{name}: {title}");
            let unit = panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or("");
            assert!(!unit.is_empty(), "{name}: {title} has no unit");
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(target["datasource"]["uid"], uid_line, "{name}: {title}");
                let expr = target["expr"].as_str().unwrap();
                if expr.contains("rate(") {
                    assert!(
                        expr.contains("[$__rate_interval]"),
                        "{name}: {title}: rates use $__rate_interval: {expr}"
                    );
                }
            }
        }
    }
}

/// Every `expr` of the rules file, recording rules and alerts alike.
fn rule_expressions() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(dashboards().join("prometheus/rules/sluice.rules.yml")).unwrap();
    // A small reader for this file's shape: `- record: X` / `- alert: X`, then `expr:` either
    // inline or as a folded block (`expr: >`) of deeper-indented lines.
    let mut rules = Vec::new();
    let mut name = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed
            .strip_prefix("- record: ")
            .or(trimmed.strip_prefix("- alert: "))
        {
            name = rest.to_owned();
        } else if let Some(expr) = trimmed.strip_prefix("expr: ") {
            let indent = line.len() - line.trim_start().len();
            let expr = if expr == ">" {
                let mut folded = Vec::new();
                while let Some(next) = lines.peek() {
                    if next.len() - next.trim_start().len() <= indent || next.trim().is_empty() {
                        break;
                    }
                    folded.push(next.trim().to_owned());
                    lines.next();
                }
                folded.join(" ")
            } else {
                expr.to_owned()
            };
            rules.push((name.clone(), expr));
        }
    }
    assert_eq!(rules.len(), 12, "{rules:?}");
    rules
}

/// An alert's expression without its threshold: the series it compares must exist even when
/// nothing is wrong ("no errors" is a 0, not an absence).
fn without_threshold(expr: &str) -> &str {
    [" > ", " < ", " >= ", " <= ", " == "]
        .iter()
        .filter_map(|op| expr.rfind(op))
        .max()
        .map_or(expr, |at| expr[..at].trim())
}

async fn query(prometheus: &str, promql: &str, at: f64) -> Vec<Value> {
    let mut url = format!("{prometheus}/api/v1/query?time={at}&query=");
    for byte in promql.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    let body: Value = serde_json::from_str(&get_text(&url).await.unwrap()).unwrap();
    assert_eq!(body["status"], "success", "{promql}: {body}");
    body["data"]["result"].as_array().unwrap().clone()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Substitutes what Grafana would: every instance, and a rate window of 10 scrapes.
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$instance", ".*")
}

/// Reports of the demo's adaptive resource to each node's POST /report, 20 every 100 ms for 16 s.
async fn report_for(nodes: Vec<String>, token: String) {
    let body = serde_json::json!({
        "reports": (0..20)
            .map(|n| serde_json::json!({"resource": "backend", "latency_ms": if n < 2 { 250.0 } else { 20.0 }}))
            .collect::<Vec<_>>()
    })
    .to_string();
    let head = format!(
        "authorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    for _ in 0..160 {
        for node in &nodes {
            let host = format!("host: {node}\r\n");
            let parts: [&[u8]; 4] = [
                b"POST /report HTTP/1.1\r\n",
                host.as_bytes(),
                head.as_bytes(),
                body.as_bytes(),
            ];
            let answer = loadgen::client::http::exchange(
                &mut None,
                &loadgen::client::socket::Dialer::plain(node),
                &parts,
            )
            .await;
            assert!(matches!(answer, Ok((200, _))), "{answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_rule_returns_data_from_a_live_run() {
    // Ports first: the generator's metrics name its targets, and the stack names the
    // generator's metrics address for Prometheus to scrape.
    let port = || free_port().unwrap();
    let node_ports = [(port(), port()), (port(), port())];
    let targets: Vec<Endpoint> = node_ports
        .iter()
        .map(|(grpc, _)| format!("grpc://127.0.0.1:{grpc}").parse().unwrap())
        .collect();
    let urls: Vec<String> = targets.iter().map(|t| t.url.clone()).collect();
    let metrics = ClientMetrics::new(&urls);
    let loadgen_metrics = metrics
        .clone()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let stack = Stack::start(&StackOptions {
        prometheus_port: 0,
        node_ports,
        loadgen_metrics,
    })
    .await
    .unwrap();
    let prometheus = stack.prometheus_url.clone();
    let mut up = 0.0;
    for _ in 0..100 {
        let result = query(&prometheus, "sum(up)", unix_now()).await;
        up = result
            .first()
            .map_or(0.0, |r| r["value"][1].as_str().unwrap().parse().unwrap());
        if up == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up, 3.0, "Prometheus scrapes both nodes and the generator");

    // Half the load on one hot key (capacity 50, 20/s: mostly denied), half spread over the
    // other 199 keys (5/s each: all allowed), so a steady ~520 allowed/s.
    let mut config = RunConfig::new(targets);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(1_000.0),
        workers: 32,
    };
    config.duration = Some(Duration::from_secs(20));
    config.keys = 200;
    config.distribution = Distribution::Hot(0.5);
    config.resource = "api".into();
    config.reset = true;
    config.admin = Some(stack.nodes.admin.clone());
    config.metrics = Some(metrics);
    let session = SessionOptions {
        command: "dashboards test".into(),
        out_dir: std::env::temp_dir().join(format!("sluice-dashboards-{}", std::process::id())),
        verify: true,
        service_metrics: stack.nodes.metrics.clone(),
        ..SessionOptions::default()
    };
    let out_dir = session.out_dir.clone();
    // Beside it, one key over a shadowed trial limit (5 at once, 1/s): its would-be denials feed
    // the shadow-denied panel.
    let mut trial = RunConfig::new(vec![config.targets[0].clone()]);
    trial.model = LoadModel::Open {
        schedule: Schedule::constant(20.0),
        workers: 2,
    };
    trial.duration = Some(Duration::from_secs(18));
    trial.keys = 1;
    trial.resource = "trial".into();
    let mut abuse = trial.clone();
    abuse.resource = "abuse".into();
    let trial = tokio::spawn(loadgen::engine::run(trial));
    // And one key that keeps hammering a rule with a short ban: bans start again and again.
    let abuse = tokio::spawn(loadgen::engine::run(abuse));
    let run = tokio::spawn(async move { run_session(config, &session).await });
    // And a backend reporting to both nodes (a tenth of its calls slow), for the adaptive panels.
    let report_to: Vec<String> = node_ports
        .iter()
        .map(|(_, http)| format!("127.0.0.1:{http}"))
        .collect();
    let reports = tokio::spawn(report_for(report_to, stack.nodes.admin.token.clone()));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let at = unix_now();
    let outcome = run.await.unwrap().unwrap();
    let trial = trial.await.unwrap().unwrap();
    reports.await.unwrap();
    let abuse = abuse.await.unwrap().unwrap();
    assert!(
        abuse.recorder.counts.banned > 0,
        "the abusive key was banned"
    );
    assert_eq!(
        trial.recorder.counts.denied, 0,
        "a shadowed rule denies nothing"
    );
    let _ = std::fs::remove_dir_all(out_dir);
    assert!(
        !outcome.ledger_failed(),
        "two nodes on one Redis pass the ledger"
    );

    let mut empty = Vec::new();
    for (dashboard, title, expr) in panel_queries() {
        if query(&prometheus, &as_grafana_sends_it(&expr), at)
            .await
            .is_empty()
        {
            empty.push(format!("{dashboard}: {title}: {expr}"));
        }
    }
    for (rule, expr) in rule_expressions() {
        if query(&prometheus, without_threshold(&expr), at)
            .await
            .is_empty()
        {
            empty.push(format!("rule {rule}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "no data for:\n{}", empty.join("\n"));

    // The service dashboard's allowed rate against the ledger's count of the same run.
    let allowed_panel = panel_queries()
        .into_iter()
        .find(|(_, title, _)| title == "Decisions per second by outcome")
        .unwrap()
        .2;
    let series = query(&prometheus, &as_grafana_sends_it(&allowed_panel), at).await;
    let allowed_rate: f64 = series
        .iter()
        .find(|s| s["metric"]["outcome"] == "allowed")
        .expect("an allowed series")["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let summary = &outcome.summary;
    let ledger_rate = summary.totals.allowed as f64 / summary.measured_s;
    assert!(
        (allowed_rate / ledger_rate - 1.0).abs() <= 0.05,
        "dashboard {allowed_rate:.1} allowed/s, ledger {ledger_rate:.1}/s"
    );
    stack.stop().await.unwrap();
}

//! The load generator against real servers on loopback: rate accuracy, coordinated-omission
//! correction, the ledger catching over-admission and passing the exact setup, and every
//! output file present and parseable.

use sluice_testkit::local_redis::LocalRedis;
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use loadgen::{
    admin::{self, AdminAccess},
    client::TargetClient,
    engine::{LoadModel, RunConfig},
    keys::KeySpace,
    report::{self, CHART_FILES},
    schedule::Schedule,
    session::{SessionOptions, run_session},
    wire::Endpoint,
};
use sluice::{
    config::{Config, Overrides},
    server::{self, RunningServer},
};

/// Load tests measure time on two cores; run them one at a time so they do not skew each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The admin token of every service these tests start.
const ADMIN_TOKEN: &str = "loadgen-test-admin-token";

async fn start_service(config: &str) -> RunningServer {
    let overrides = Overrides::loopback(&format!("loadgen:admin:{ADMIN_TOKEN}"));
    server::start(Config::parse(config, "test", &overrides).unwrap())
        .await
        .unwrap()
}

fn grpc(node: &RunningServer) -> Endpoint {
    format!("grpc://{}", node.grpc_addr).parse().unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-loadgen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(name: &str, verify: bool, metrics: Vec<String>) -> SessionOptions {
    SessionOptions {
        command: format!("test {name}"),
        out_dir: out_dir(name),
        verify,
        service_metrics: metrics,
        ..SessionOptions::default()
    }
}

const GENEROUS: &str = "[default_rule]\nalgorithm = \"token_bucket\"\ncapacity = 1000000\nrefill_per_second = 1000000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_hits_its_rate_within_three_percent() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let node = start_service(GENEROUS).await;
    let mut config = RunConfig::new(vec![grpc(&node)]);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(5_000.0),
        workers: 64,
    };
    config.duration = Some(Duration::from_secs(5));
    let outcome = run_session(config, &options("rate", false, vec![]))
        .await
        .unwrap();
    let summary = outcome.summary;
    let sent = summary.totals.total() as f64;
    assert!(
        (sent - 25_000.0).abs() <= 750.0,
        "sent {sent} of 25,000 scheduled"
    );
    assert!(
        (summary.throughput_rps - 5_000.0).abs() <= 150.0,
        "{} req/s",
        summary.throughput_rps
    );
    assert_eq!(summary.totals.errors(), 0);
    node.stop().await.unwrap();
}

/// The open model's requests leave on their schedule to well within a millisecond, so the
/// corrected latency measures the service, not the generator's timer (tokio's own timer,
/// used before, sent each request up to a millisecond late and charged that to the service).
/// Bounds are loose: a loaded machine delays a wake-up now and then, a median rarely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_sends_on_schedule_within_a_fraction_of_a_millisecond() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let node = start_service(GENEROUS).await;
    let mut config = RunConfig::new(vec![grpc(&node)]);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(2_000.0),
        workers: 16,
    };
    config.duration = Some(Duration::from_secs(3));
    config.warmup = Duration::from_millis(500);
    let summary = run_session(config, &options("on-time", false, vec![]))
        .await
        .unwrap()
        .summary;
    let lag = summary.generator.lag_ms;
    assert_eq!(lag.count, summary.totals.total());
    assert!(lag.p50 < 0.3, "send lag p50 {} ms", lag.p50);
    let latency = &summary.latency_ms;
    assert!(
        latency.all.p50 - latency.uncorrected.p50 < 0.3,
        "corrected p50 {} ms against uncorrected {} ms",
        latency.all.p50,
        latency.uncorrected.p50
    );
    node.stop().await.unwrap();
}

/// An HTTP endpoint that answers like /check but stalls everything once, for 500 ms, at 1 s.
async fn stalling_server() -> (String, Arc<AtomicBool>) {
    use axum::{Router, routing::post};
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let stalled = Arc::new(AtomicBool::new(false));
    let started = std::time::Instant::now();
    let flag = stalled.clone();
    let app = Router::new().route(
        "/check",
        post(move || {
            let (gate, flag) = (gate.clone(), flag.clone());
            async move {
                let _turn = gate.lock().await;
                if started.elapsed() > Duration::from_secs(1) && !flag.swap(true, Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                r#"{"allowed":true,"limit":10,"remaining":9,"reset_after_ms":1.0,"retry_after_ms":0.0}"#
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, stalled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_corrected_p99_but_not_uncorrected() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (url, stalled) = stalling_server().await;
    let mut config = RunConfig::new(vec![url.parse().unwrap()]);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(1_000.0),
        workers: 16,
    };
    config.duration = Some(Duration::from_secs(3));
    let summary = run_session(config, &options("stall", false, vec![]))
        .await
        .unwrap()
        .summary;
    assert!(stalled.load(Ordering::SeqCst), "the server stalled");
    let worst_interval = summary
        .timeline
        .iter()
        .map(|point| point.p99_ms)
        .fold(0.0, f64::max);
    assert!(
        worst_interval >= 300.0,
        "the timeline shows the stall too: {worst_interval} ms"
    );
    let (corrected, uncorrected) = (
        summary.latency_ms.all.p99,
        summary.latency_ms.uncorrected.p99,
    );
    assert!(
        corrected >= 300.0,
        "corrected p99 {corrected} ms should carry the 500 ms stall"
    );
    assert!(
        uncorrected < 100.0,
        "uncorrected p99 {uncorrected} ms only sees the few requests in flight"
    );
    assert!(
        summary.latency_ms.uncorrected.max >= 400.0,
        "the stalled requests themselves were slow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_timeout_count_as_timeouts() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (url, stalled) = stalling_server().await;
    let mut config = RunConfig::new(vec![url.parse().unwrap()]);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(500.0),
        workers: 8,
    };
    config.duration = Some(Duration::from_secs(2));
    config.timeout = Duration::from_millis(100);
    let summary = run_session(config, &options("timeouts", false, vec![]))
        .await
        .unwrap()
        .summary;
    assert!(stalled.load(Ordering::SeqCst));
    let totals = summary.totals;
    // The stalled request is given up at 100 ms (the server then cancels its handler, which
    // ends the stall); the worker redials instead of reusing the poisoned connection.
    assert!(totals.timeout >= 1, "{totals:?}");
    assert_eq!(
        totals.errors(),
        totals.timeout,
        "no other errors: {totals:?}"
    );
    let waited = summary.latency_ms.uncorrected.max;
    assert!(
        (100.0..300.0).contains(&waited),
        "the longest wait was the timeout, not the stall: {waited} ms"
    );
}

const NO_REFILL: &str =
    "[rules.ledger]\nalgorithm = \"token_bucket\"\ncapacity = 50\nrefill_per_second = 0.000001\n";

fn ledger_run(nodes: &[RunningServer]) -> RunConfig {
    let mut config = RunConfig::new(nodes.iter().map(grpc).collect());
    config.model = LoadModel::Closed { concurrency: 48 };
    config.requests = Some(3_000);
    config.duration = None;
    config.keys = 5;
    config.resource = "ledger".into();
    config.reset = true;
    config.admin = Some(admin_access(nodes));
    config
}

fn admin_access(nodes: &[RunningServer]) -> AdminAccess {
    AdminAccess {
        addrs: nodes
            .iter()
            .map(|node| node.admin_addr.unwrap().to_string())
            .collect(),
        token: ADMIN_TOKEN.into(),
    }
}

#[tokio::test]
async fn reset_goes_through_the_admin_api_with_its_token() {
    let node = start_service(NO_REFILL).await;
    let mut client = TargetClient::connect(&grpc(&node), 1, &Default::default())
        .await
        .unwrap();
    let mut allowed = async |cost| {
        let answer = client.check("key-0", "ledger", cost, Duration::from_secs(2));
        answer.await.unwrap().allowed
    };
    assert!(allowed(50).await && !allowed(1).await, "key-0 is spent");
    let keys = KeySpace::new("key-", 1);
    let access = admin_access(std::slice::from_ref(&node));
    let wrong = AdminAccess {
        token: "not-the-admin-token-at-all".into(),
        ..access.clone()
    };
    let refused = admin::reset_keys(&wrong, &keys, "ledger")
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("answered 401"),
        "{refused:#}"
    );
    assert!(!allowed(1).await, "a refused reset changed nothing");
    admin::reset_keys(&access, &keys, "ledger").await.unwrap();
    assert!(allowed(1).await, "reset with the admin token");

    let mut config = ledger_run(std::slice::from_ref(&node));
    config.admin = None;
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with("--reset") && problem.contains("--admin-addr")),
        "{problems:?}"
    );
    node.stop().await.unwrap();
}

fn metrics_urls(nodes: &[RunningServer]) -> Vec<String> {
    nodes
        .iter()
        .map(|node| format!("http://{}/metrics", node.http_addr))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_catches_nodes_that_do_not_share_state() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_service(NO_REFILL).await);
    }
    let outcome = run_session(
        ledger_run(&nodes),
        &options("ledger-memory", true, metrics_urls(&nodes)),
    )
    .await
    .unwrap();
    let ledger = outcome.summary.ledger.clone().unwrap();
    assert_eq!(ledger.keys_checked, 5);
    assert_eq!(
        ledger.over_admitted.len(),
        5,
        "every key over-admitted: {ledger:?}"
    );
    for finding in &ledger.over_admitted {
        assert!(finding.admitted_cost >= 120, "about 3 x 50: {finding:?}");
    }
    assert!(outcome.ledger_failed());
    let reconciliation = ledger.reconciliation.unwrap();
    assert!(
        reconciliation.agrees,
        "the services counted what the client saw: {reconciliation:?}"
    );
    for node in nodes {
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_passes_three_nodes_sharing_redis() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = LocalRedis::start().unwrap_or_else(|err| panic!("{err}"));
    let backend = format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"1s\"\n",
        redis.url()
    );
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_service(&format!("{backend}{NO_REFILL}")).await);
    }
    let outcome = run_session(
        ledger_run(&nodes),
        &options("ledger-redis", true, metrics_urls(&nodes)),
    )
    .await
    .unwrap();
    let ledger = outcome.summary.ledger.clone().unwrap();
    assert!(ledger.passed(), "{ledger:?}");
    assert_eq!(outcome.summary.totals.allowed, 250, "exactly 5 keys x 50");
    for node in nodes {
        node.stop().await.unwrap();
    }
}

/// Two nodes follow central rules in Redis; a third of the way into the run the key's limit is
/// lowered from 80 to 30 through one node's admin API. Every key spent its 80 before, and
/// nothing after: the ledger bounds each key by the loosest limit it ran under and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_passes_across_a_live_rules_change() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = LocalRedis::start().unwrap_or_else(|err| panic!("{err}"));
    let bucket = |capacity: u64| {
        format!(
            "[rules.ledger]\nalgorithm = \"token_bucket\"\ncapacity = {capacity}\nrefill_per_second = 0.000001\n"
        )
    };
    let config = format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"1s\"\n\
         [rules_source]\nkind = \"redis\"\ncheck_interval = \"200ms\"\n{}",
        redis.url(),
        bucket(80)
    );
    let nodes = [start_service(&config).await, start_service(&config).await];
    let mut run = ledger_run(&nodes);
    run.model = LoadModel::Open {
        schedule: Schedule::constant(600.0),
        workers: 16,
    };
    run.requests = None;
    run.duration = Some(Duration::from_secs(3));
    let admin = nodes[0].admin_addr.unwrap();
    let lowered = bucket(30);
    let change = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
        let request = format!(
            "PUT /v1/rules HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{lowered}",
            lowered.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
    let outcome = run_session(
        run,
        &options("ledger-live-change", true, metrics_urls(&nodes)),
    )
    .await
    .unwrap();
    change.await.unwrap();
    let ledger = outcome.summary.ledger.clone().unwrap();
    assert!(ledger.passed(), "{ledger:?}");
    assert_eq!(
        outcome.summary.totals.allowed,
        5 * 80,
        "each key spent its 80 before the change and nothing after"
    );
    for node in nodes {
        node.stop().await.unwrap();
    }
}

fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    (frame.width, frame.height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_file_is_written_parseable_and_rebuildable() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let node = start_service(GENEROUS).await;
    let mut config = RunConfig::new(vec![
        grpc(&node),
        format!("http://{}", node.http_addr).parse().unwrap(),
    ]);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(500.0),
        workers: 16,
    };
    config.duration = Some(Duration::from_secs(2));
    config.interval = Duration::from_millis(250);
    let outcome = run_session(
        config,
        &options("files", true, metrics_urls(std::slice::from_ref(&node))),
    )
    .await
    .unwrap();
    let dir = outcome.dir;
    let summary = report::read_summary(&dir).unwrap();
    assert_eq!(
        summary.totals, outcome.summary.totals,
        "summary.json round-trips"
    );
    assert_eq!(summary.timeline.len(), outcome.summary.timeline.len());
    assert!((summary.latency_ms.all.p99 - outcome.summary.latency_ms.all.p99).abs() < 1e-9);
    assert_eq!(summary.targets.len(), 2);
    assert!(
        summary.timeline.len() >= 7,
        "{} intervals",
        summary.timeline.len()
    );
    assert!(summary.provenance.command.starts_with("test files"));
    let hgrm = std::fs::read_to_string(dir.join(report::HGRM_FILE)).unwrap();
    assert!(report::parse_hgrm(&hgrm).len() > 10);
    let hlog = std::fs::read_to_string(dir.join(report::HLOG_FILE)).unwrap();
    assert!(
        hlog.starts_with("#Sluice loadgen") && hlog.contains("#[StartTime: "),
        "{hlog}"
    );
    assert!(
        hlog.lines()
            .filter(|line| !line.starts_with('#') && !line.starts_with("\"Start"))
            .count()
            >= 7
    );
    for chart in CHART_FILES {
        assert_eq!(
            png_size(&dir.join(format!("{chart}.png"))),
            (1000, 500),
            "{chart}"
        );
        let svg = std::fs::read_to_string(dir.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("</svg>"),
            "{chart}.svg"
        );
    }
    let markdown = std::fs::read_to_string(dir.join(report::REPORT_FILE)).unwrap();
    assert!(
        markdown.contains("Correctness ledger") && markdown.contains("agree"),
        "{markdown}"
    );

    // `loadgen report DIR` rebuilds what was lost; `compare` gates on regressions.
    std::fs::remove_file(dir.join(report::REPORT_FILE)).unwrap();
    std::fs::remove_file(dir.join("latency_over_time.png")).unwrap();
    let binary = env!("CARGO_BIN_EXE_loadgen");
    let rebuilt = std::process::Command::new(binary)
        .arg("report")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    assert!(dir.join(report::REPORT_FILE).exists());
    assert_eq!(png_size(&dir.join("latency_over_time.png")), (1000, 500));

    let same = std::process::Command::new(binary)
        .arg("compare")
        .arg(&dir)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(same.status.success(), "{same:?}");
    let slower = out_dir("slower");
    std::fs::create_dir_all(&slower).unwrap();
    let mut regressed = summary.clone();
    regressed.latency_ms.all.p99 = summary.latency_ms.all.p99 * 3.0 + 1.0;
    std::fs::write(
        slower.join(report::SUMMARY_FILE),
        serde_json::to_string(&regressed).unwrap(),
    )
    .unwrap();
    let gate = std::process::Command::new(binary)
        .arg("compare")
        .arg(&dir)
        .arg(&slower)
        .output()
        .unwrap();
    assert_eq!(gate.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gate.stdout).contains("REGRESSION: p99 latency rose"));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_calls_and_the_generators_own_metrics() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let node = start_service(GENEROUS).await;
    let targets = vec![
        grpc(&node),
        format!("http://{}", node.http_addr).parse().unwrap(),
    ];
    let urls: Vec<String> = targets.iter().map(|t: &Endpoint| t.url.clone()).collect();
    let metrics = loadgen::metrics::ClientMetrics::new(&urls);
    let addr = metrics
        .clone()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = RunConfig::new(targets);
    config.call = loadgen::wire::Call::Health;
    config.model = LoadModel::Closed { concurrency: 8 };
    config.requests = Some(400);
    config.duration = None;
    config.metrics = Some(metrics);
    let summary = run_session(config, &options("health", true, vec![]))
        .await
        .unwrap()
        .summary;
    assert_eq!((summary.totals.allowed, summary.totals.total()), (400, 400));
    assert_eq!(
        summary.ledger.unwrap().keys_checked,
        0,
        "health answers carry no rule to check"
    );
    let scraped = reqwest_get(&format!("http://{addr}/metrics")).await;
    let counted: u64 = scraped
        .lines()
        .filter(|line| {
            line.starts_with("loadgen_requests_total{") && line.contains("outcome=\"allowed\"")
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 400, "{scraped}");
    assert!(scraped.contains("loadgen_request_duration_seconds_bucket"));
    let decisions = sluice_decisions(&node, "default").await;
    assert_eq!(decisions, 0, "health probes make no rate-limit decisions");
    node.stop().await.unwrap();
}

async fn reqwest_get(url: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// Decisions the node made on `resource`.
async fn sluice_decisions(node: &RunningServer, resource: &str) -> u64 {
    let url = format!("http://{}/metrics", node.http_addr);
    let (allowed, denied) = loadgen::scrape::scrape_decisions(&[url], resource)
        .await
        .unwrap();
    allowed + denied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_redial_after_the_service_restarts() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let first = start_service(GENEROUS).await;
    let (grpc_addr, http_addr) = (first.grpc_addr, first.http_addr);
    let mut clients = Vec::new();
    for endpoint in [grpc(&first), format!("http://{http_addr}").parse().unwrap()] {
        clients.push(
            loadgen::client::TargetClient::connect(&endpoint, 1, &Default::default())
                .await
                .unwrap()
                .for_worker(0),
        );
    }
    let timeout = Duration::from_secs(2);
    for client in &mut clients {
        assert!(client.check("k", "", 1, timeout).await.unwrap().allowed);
    }
    first.stop().await.unwrap();
    let overrides = Overrides {
        grpc_addr: Some(grpc_addr.to_string()),
        http_addr: Some(http_addr.to_string()),
        ..Overrides::default()
    };
    let second = server::start(Config::parse(GENEROUS, "test", &overrides).unwrap())
        .await
        .unwrap();
    for client in &mut clients {
        // The first call may still find the old connection half-closed; the next one redials.
        let mut answered = false;
        for _ in 0..3 {
            if client.check("k", "", 1, timeout).await.is_ok() {
                answered = true;
                break;
            }
        }
        assert!(answered, "the client never reached the restarted service");
    }
    second.stop().await.unwrap();
}

/// A keep-alive HTTP connection the server closed while it sat idle (an idle timeout, a
/// restart between requests) is redialed before the next request, which then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_connection_closed_while_idle_is_redialed_without_an_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Endpoint = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    // Answers one request per connection, then closes it although the client asked to keep it.
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buffer = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buffer).await.unwrap() {
                    // `connect`'s own connection, dropped unused.
                    0 => break,
                    read => request.extend_from_slice(&buffer[..read]),
                }
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        }
    });
    let mut client = loadgen::client::TargetClient::connect(&endpoint, 1, &Default::default())
        .await
        .unwrap()
        .for_worker(0);
    let requests = loadgen::client::Requests::new(["k"], "", 1, None).unwrap();
    for _ in 0..3 {
        let answer = client
            .call(loadgen::wire::Call::Health, &requests, 0)
            .await
            .expect("a request after an idle close fails");
        assert!(answer.allowed);
        // Time for the server's close to arrive before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `connect` dialed once to check the target; each request then needed its own connection.
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

#[test]
fn bad_flags_name_the_flag_and_the_fix() {
    let binary = env!("CARGO_BIN_EXE_loadgen");
    let run = |args: &[&str]| {
        std::process::Command::new(binary)
            .args(args)
            .output()
            .unwrap()
    };
    let no_scheme = run(&["run", "--target", "127.0.0.1:1", "--duration", "1s"]);
    assert!(!no_scheme.status.success());
    assert!(String::from_utf8_lossy(&no_scheme.stderr).contains("needs a scheme"));
    let bad_distribution = run(&[
        "run",
        "--target",
        "grpc://127.0.0.1:1",
        "--distribution",
        "normal",
    ]);
    assert!(String::from_utf8_lossy(&bad_distribution.stderr).contains("use uniform, zipf"));
    let zero_keys = run(&[
        "run",
        "--target",
        "grpc://127.0.0.1:1",
        "--keys",
        "0",
        "--duration",
        "1s",
    ]);
    assert_eq!(zero_keys.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero_keys.stderr).contains("--keys: must be at least 1"));
    let zero_rate = run(&[
        "run",
        "--target",
        "grpc://127.0.0.1:1",
        "--rate",
        "0",
        "--duration",
        "1s",
    ]);
    assert!(String::from_utf8_lossy(&zero_rate.stderr).contains("--rate: must be above 0"));
    let spaced = run(&[
        "run",
        "--target",
        "http://127.0.0.1:1",
        "--resource",
        "a b",
        "--duration",
        "1s",
    ]);
    assert!(String::from_utf8_lossy(&spaced.stderr).contains("--resource: `a b`"));
}

/// Each open-model worker sleeps on a timer of its own (a file descriptor): past the process's
/// open-file limit the run fails at the start, saying what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_workers_than_the_open_file_limit_allows_fail_with_the_fix() {
    let node = start_service(GENEROUS).await;
    let results = out_dir("file-limit");
    let script = format!(
        "ulimit -n 64 && exec {} run --target {} --rate 100 --workers 200 --duration 1s --results {}",
        env!("CARGO_BIN_EXE_loadgen"),
        grpc(&node),
        results.display()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run started: {stderr}");
    assert!(
        stderr.contains("pacing timers of 200 workers")
            && stderr.contains("use fewer --workers or raise the open-file limit"),
        "{stderr}"
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_runs_pause_resume_and_change_rate() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let node = start_service(GENEROUS).await;
    let mut config = RunConfig::new(vec![grpc(&node)]);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(1_000.0),
        workers: 16,
    };
    config.duration = Some(Duration::from_secs(30));
    let run = loadgen::engine::start(config).await.unwrap();
    let sent = |run: &loadgen::engine::Run| run.snapshot().recorder.counts.total();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(run.rate(), Some(1_000.0));

    run.pause();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let paused_at = sent(&run);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sent(&run), paused_at, "requests were sent while paused");

    run.resume();
    let before = sent(&run);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_1000 = sent(&run) - before;
    // Resuming continues at the rate of the moment: no burst for the paused half second.
    assert!(
        (850..=1_150).contains(&at_1000),
        "{at_1000} in 1 s at 1,000/s"
    );

    assert_eq!(run.set_rate(2_000.0), Some(2_000.0));
    let before = sent(&run);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_2000 = sent(&run) - before;
    assert!(
        (1_700..=2_300).contains(&at_2000),
        "{at_2000} in 1 s at 2,000/s"
    );

    run.stop();
    let result = run.finish().await.unwrap();
    assert!(
        result.elapsed < Duration::from_secs(10),
        "stop ended the run"
    );
    // Missed sends measure the machine as much as the generator (a debug build sharing two
    // cores with the service); this test is about control, so it only bounds them.
    let total = result.recorder.counts.total();
    assert!(
        result.missed_sends * 100 <= total,
        "{} of {total} sends missed",
        result.missed_sends
    );
    assert_eq!(result.recorder.counts.errors(), 0);
}

/// A shadowed rule lets everything through: the ledger must not call that over-admission, must
/// list what enforcing would refuse, and must agree with the service's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowed_denials_are_listed_not_failed_and_bans_are_their_own_outcome() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let node = start_service(&format!("{NO_REFILL}shadow = true\n")).await;
    let outcome = run_session(
        ledger_run(std::slice::from_ref(&node)),
        &options(
            "ledger-shadow",
            true,
            metrics_urls(std::slice::from_ref(&node)),
        ),
    )
    .await
    .unwrap();
    let summary = &outcome.summary;
    assert_eq!(
        summary.schema_version,
        loadgen::report::summary::SCHEMA_VERSION
    );
    assert_eq!(
        (summary.totals.allowed, summary.totals.shadow_denied),
        (250, 2_750),
        "5 keys x 50 allowed; the rest let through by shadow mode"
    );
    let ledger = summary.ledger.clone().unwrap();
    assert!(!outcome.ledger_failed(), "{ledger:?}");
    assert_eq!(ledger.shadow_denied.len(), 5);
    assert_eq!(
        ledger
            .shadow_denied
            .iter()
            .map(|finding| finding.would_refuse_cost)
            .sum::<u64>(),
        2_750
    );
    assert!(ledger.reconciliation.unwrap().agrees);
    let report = std::fs::read_to_string(outcome.dir.join("report.md")).unwrap();
    assert!(report.contains("| shadow-denied |"), "{report}");
    node.stop().await.unwrap();

    // Bans: refused, counted apart from denials, and still not under-admission.
    let node = start_service(&format!(
        "{NO_REFILL}[rules.ledger.ban]\nafter = 10\nwithin = \"1h\"\nduration = \"1h\"\n"
    ))
    .await;
    let outcome = run_session(
        ledger_run(std::slice::from_ref(&node)),
        &options(
            "ledger-ban",
            true,
            metrics_urls(std::slice::from_ref(&node)),
        ),
    )
    .await
    .unwrap();
    let totals = outcome.summary.totals;
    assert_eq!(
        (totals.allowed, totals.denied),
        (250, 45),
        "9 denials a key, then banned"
    );
    assert_eq!(totals.banned, 3_000 - 250 - 45);
    assert!(!outcome.ledger_failed(), "{:?}", outcome.summary.ledger);
    node.stop().await.unwrap();
}

/// A stacked rule on nodes that do not share state: the ledger reads every limit from the
/// answers (gRPC and HTTP alike) and flags each key against the tightest, the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_bounds_a_stacked_rule_by_its_tightest_limit() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stacked = "[rules.ledger]\n[[rules.ledger.limits]]\nname = \"burst\"\nalgorithm = \"token_bucket\"\ncapacity = 50\nrefill_per_second = 0.000001\n[[rules.ledger.limits]]\nname = \"hourly\"\nalgorithm = \"fixed_window\"\nlimit = 100000\nwindow = \"1h\"\n";
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_service(stacked).await);
    }
    let mut config = ledger_run(&nodes);
    config.targets[1] = format!("http://{}", nodes[1].http_addr).parse().unwrap();
    let outcome = run_session(
        config,
        &options("ledger-stacked", true, metrics_urls(&nodes)),
    )
    .await
    .unwrap();
    let ledger = outcome.summary.ledger.clone().unwrap();
    assert_eq!(ledger.over_admitted.len(), 5, "{ledger:?}");
    for finding in &ledger.over_admitted {
        assert_eq!(
            (finding.algorithm, finding.limit),
            (Some(loadgen::wire::AlgorithmKind::TokenBucket), 50),
            "bounded by the burst: {finding:?}"
        );
    }
    for node in nodes {
        node.stop().await.unwrap();
    }
}

//! A rolling restart under load: three nodes on one Redis, each stopped (draining in-flight
//! requests) and started again on its own ports in turn while `loadgen` sends to all three with
//! retries on. No request fails, and every key's admissions stay exact.

use std::{net::SocketAddr, time::Duration};

use loadgen::{
    engine::{LoadModel, RunConfig},
    schedule::Schedule,
    session::{SessionOptions, run_session},
};
use sluice::{
    config::{Config, Overrides},
    server::{self, RunningServer},
};
use sluice_testkit::local_redis::{LocalRedis, free_port};

fn node_config(redis: &LocalRedis, grpc: SocketAddr, http: SocketAddr) -> Config {
    let toml = format!(
        "[server]\ngrpc_addr = \"{grpc}\"\nhttp_addr = \"{http}\"\nshutdown_grace = \"5s\"\n[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"1s\"\n[rules.api]\nalgorithm = \"fixed_window\"\nlimit = 100\nwindow = \"1h\"\n",
        redis.url()
    );
    let overrides = Overrides {
        grpc_addr: Some(grpc.to_string()),
        http_addr: Some(http.to_string()),
        ..Overrides::default()
    };
    Config::parse(&toml, "test", &overrides).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let redis = LocalRedis::start().unwrap_or_else(|err| panic!("{err}"));
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..3)
        .map(|_| {
            let port = || SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
            (port(), port())
        })
        .collect();
    let mut nodes: Vec<Option<RunningServer>> = Vec::new();
    for (grpc, http) in &addrs {
        nodes.push(Some(
            server::start(node_config(&redis, *grpc, *http))
                .await
                .unwrap(),
        ));
    }

    let mut config = RunConfig::new(
        addrs
            .iter()
            .map(|(grpc, _)| format!("grpc://{grpc}").parse().unwrap())
            .collect(),
    );
    config.model = LoadModel::Open {
        schedule: Schedule::constant(300.0),
        workers: 32,
    };
    config.duration = Some(Duration::from_secs(8));
    config.keys = 20;
    config.key_prefix = format!("roll-{}-", std::process::id());
    config.resource = "api".into();
    config.retries = 8;
    config.retry_backoff = Duration::from_millis(50);
    config.timeout = Duration::from_secs(1);
    let out_dir = std::env::temp_dir().join(format!("sluice-rolling-{}", std::process::id()));
    let options = SessionOptions {
        command: "test rolling restart".into(),
        out_dir: out_dir.clone(),
        verify: true,
        service_metrics: Vec::new(),
        ..SessionOptions::default()
    };
    let load = tokio::spawn(async move { run_session(config, &options).await });

    // One node at a time: drain it, keep it down a moment, start it again on its ports.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (index, (grpc, http)) in addrs.iter().enumerate() {
        nodes[index].take().unwrap().stop().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        nodes[index] = Some(
            server::start(node_config(&redis, *grpc, *http))
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let outcome = load.await.unwrap().unwrap();
    let totals = outcome.summary.totals;
    let failed = totals.timeout
        + totals.unavailable
        + totals.refused
        + totals.invalid_argument
        + totals.other;
    assert_eq!(failed, 0, "{totals:?}");
    assert!(totals.allowed + totals.denied >= 2_000, "{totals:?}");
    let ledger = outcome.summary.ledger.clone().unwrap();
    assert!(ledger.passed(), "{ledger:?}");
    for node in nodes.into_iter().flatten() {
        node.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(out_dir);
}

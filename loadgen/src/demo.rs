//! `loadgen demo`: the whole loop on one machine with nothing installed. Starts the service
//! in-process on free loopback ports (memory backend; or a private redis-server and two nodes
//! with `--redis`), drives a short mixed gRPC + HTTP load with the ledger on, and writes the
//! report.

use std::{path::PathBuf, time::Duration};

use sluice::{
    config::{Config, Overrides},
    local_redis::LocalRedis,
    server::{self, RunningServer},
};

use crate::{
    engine::{LoadModel, RunConfig},
    keys::Distribution,
    schedule::Schedule,
    session::{SessionOptions, SessionOutcome, run_session},
    target::Endpoint,
};

const RULES: &str = r#"
[rules.api]
algorithm = "token_bucket"
capacity = 50
refill_per_second = 20
"#;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub redis: bool,
    pub duration: Duration,
    pub rate: f64,
    pub out_dir: PathBuf,
    pub command: String,
}

async fn start_node(backend: &str) -> anyhow::Result<RunningServer> {
    let overrides = Overrides {
        grpc_addr: Some("127.0.0.1:0".into()),
        http_addr: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let config = Config::parse(&format!("{backend}{RULES}"), "demo", &overrides)?;
    Ok(server::start(config).await?)
}

pub async fn run_demo(options: &DemoOptions) -> anyhow::Result<SessionOutcome> {
    // Kept alive until the load is done; dropping it stops redis-server.
    let mut redis = None;
    let nodes = if options.redis {
        let local = LocalRedis::start().map_err(|err| anyhow::anyhow!("demo --redis: {err}"))?;
        let backend = format!(
            "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"100ms\"\n",
            local.url()
        );
        redis = Some(local);
        vec![start_node(&backend).await?, start_node(&backend).await?]
    } else {
        vec![start_node("").await?]
    };
    let mut targets = Vec::new();
    for node in &nodes {
        targets.push(
            format!("grpc://{}", node.grpc_addr)
                .parse::<Endpoint>()
                .map_err(anyhow::Error::msg)?,
        );
        targets.push(
            format!("http://{}", node.http_addr)
                .parse::<Endpoint>()
                .map_err(anyhow::Error::msg)?,
        );
    }
    let mut config = RunConfig::new(targets);
    config.model = LoadModel::Open {
        schedule: Schedule::constant(options.rate),
        workers: 64,
    };
    config.duration = Some(options.duration);
    config.keys = 200;
    config.distribution = Distribution::Zipf(1.1);
    config.resource = "api".into();
    config.reset = true;
    config.interval = Duration::from_millis(500);
    let session = SessionOptions {
        command: options.command.clone(),
        out_dir: options.out_dir.clone(),
        verify: true,
        service_metrics: nodes
            .iter()
            .map(|node| format!("http://{}/metrics", node.http_addr))
            .collect(),
    };
    let outcome = run_session(config, &session).await;
    for node in nodes {
        node.stop().await?;
    }
    drop(redis);
    outcome
}

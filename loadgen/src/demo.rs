//! `loadgen demo`: the whole loop on one machine with nothing installed. Starts the service
//! in-process on free loopback ports (memory backend; or a private redis-server and two nodes
//! with `--redis`), drives a short mixed gRPC + HTTP load with the ledger on, and writes the
//! report.

use sluice_testkit::local_redis::LocalRedis;
use std::{path::PathBuf, time::Duration};

use sluice::{
    config::{Config, Overrides},
    server::{self, RunningServer},
};

use crate::{
    admin::AdminAccess,
    engine::{LoadModel, RunConfig},
    keys::Distribution,
    schedule::Schedule,
    session::{SessionOptions, SessionOutcome, run_session},
    tui::form::Form,
    wire::Endpoint,
};

const RULES: &str = r#"
[rules.api]
algorithm = "token_bucket"
capacity = 50
refill_per_second = 20

# A limit on trial: shadow mode lets every request through and counts what it would deny.
[rules.trial]
algorithm = "token_bucket"
capacity = 5
refill_per_second = 1
shadow = true

# A key that keeps hammering after being told to stop is locked out for a while.
[rules.abuse]
algorithm = "token_bucket"
capacity = 5
refill_per_second = 1
[rules.abuse.ban]
after = 10
within = "1m"
duration = "2s"

# Limits that follow a backend's health: what it reports (POST /report) moves their factor.
[rules.backend]
algorithm = "token_bucket"
capacity = 100
refill_per_second = 50
[rules.backend.adaptive]
target_latency = "100ms"
"#;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub redis: bool,
    pub duration: Duration,
    pub rate: f64,
    pub out_dir: PathBuf,
    pub command: String,
}

async fn start_node(
    backend: &str,
    (grpc_port, http_port): (u16, u16),
    admin_token: &str,
) -> anyhow::Result<RunningServer> {
    let overrides = Overrides {
        grpc_addr: Some(format!("127.0.0.1:{grpc_port}")),
        http_addr: Some(format!("127.0.0.1:{http_port}")),
        admin_addr: Some("127.0.0.1:0".into()),
        admin_tokens: Some(format!("demo:admin:{admin_token}")),
        ..Overrides::default()
    };
    let config = Config::parse(&format!("{backend}{RULES}"), "demo", &overrides)?;
    Ok(server::start(config).await?)
}

/// The demo's service nodes, and the redis-server they share with `--redis`.
pub struct DemoNodes {
    nodes: Vec<RunningServer>,
    /// Kept alive until the nodes stop; dropping it stops redis-server.
    redis: Option<LocalRedis>,
    /// Each node's gRPC and HTTP address.
    pub targets: Vec<Endpoint>,
    /// Each node's /metrics URL.
    pub metrics: Vec<String>,
    /// Each node's admin API, with this run's admin token (random, made at start).
    pub admin: AdminAccess,
}

impl DemoNodes {
    /// One node on the memory backend, or two sharing a private redis-server, on free ports.
    pub async fn start(redis: bool) -> anyhow::Result<Self> {
        let nodes: &[(u16, u16)] = if redis { &[(0, 0); 2] } else { &[(0, 0)] };
        Self::start_on(redis, nodes).await
    }

    /// A node on each (gRPC, HTTP) port pair (0 picks a free port); with `redis` they share a
    /// private redis-server, else each keeps its state in its own memory.
    pub async fn start_on(redis: bool, ports: &[(u16, u16)]) -> anyhow::Result<Self> {
        let mut local_redis = None;
        let mut backend = String::new();
        if redis {
            let local = LocalRedis::start()
                .map_err(|err| anyhow::anyhow!("starting redis-server: {err}"))?;
            backend = format!(
                "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\ndeadline = \"100ms\"\n",
                local.url()
            );
            local_redis = Some(local);
        }
        let token = crate::admin::random_token();
        let mut nodes = Vec::new();
        for &pair in ports {
            nodes.push(start_node(&backend, pair, &token).await?);
        }
        let admin = AdminAccess {
            addrs: nodes
                .iter()
                .filter_map(|node| node.admin_addr)
                .map(|addr| addr.to_string())
                .collect(),
            token,
        };
        let mut targets = Vec::new();
        for node in &nodes {
            for url in [
                format!("grpc://{}", node.grpc_addr),
                format!("http://{}", node.http_addr),
            ] {
                targets.push(url.parse::<Endpoint>().map_err(anyhow::Error::msg)?);
            }
        }
        let metrics = nodes
            .iter()
            .map(|node| format!("http://{}/metrics", node.http_addr))
            .collect();
        Ok(Self {
            nodes,
            redis: local_redis,
            targets,
            metrics,
            admin,
        })
    }

    pub fn grpc_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nodes.iter().map(|node| node.grpc_addr).collect()
    }

    pub fn http_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nodes.iter().map(|node| node.http_addr).collect()
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        for node in self.nodes {
            node.stop().await?;
        }
        drop(self.redis);
        Ok(())
    }
}

/// The demo's load: a zipf-skewed key space on the `api` rule (capacity 50, 20/s).
pub const DEMO_KEYS: usize = 200;
pub const DEMO_RESOURCE: &str = "api";
pub const DEMO_DISTRIBUTION: Distribution = Distribution::Zipf(1.1);

/// The report folder of a demo run named `name`, or `demo-BACKEND-UNIXTIME`.
pub fn out_dir(results: &std::path::Path, name: Option<String>, redis: bool) -> PathBuf {
    let name = name.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let backend = if redis { "redis" } else { "memory" };
        format!("demo-{backend}-{}", now.as_secs())
    });
    crate::report::results_dir(results, Some(&name))
}

/// The console's form for the demo's nodes: the demo's load at `rate` for `duration`.
pub fn console_form(nodes: &DemoNodes, rate: f64, duration: Duration) -> Form {
    let mut form = Form::with_targets(&nodes.targets, &nodes.metrics);
    form.rate = rate.to_string();
    form.duration = format!("{}s", duration.as_secs());
    form.keys = DEMO_KEYS.to_string();
    form.distribution = DEMO_DISTRIBUTION.to_string();
    form.resource = DEMO_RESOURCE.into();
    form.admin = Some(nodes.admin.clone());
    form
}

pub async fn run_demo(options: &DemoOptions) -> anyhow::Result<SessionOutcome> {
    let nodes = DemoNodes::start(options.redis).await?;
    let mut config = RunConfig::new(nodes.targets.clone());
    config.model = LoadModel::Open {
        schedule: Schedule::constant(options.rate),
        workers: 64,
    };
    config.duration = Some(options.duration);
    config.keys = DEMO_KEYS;
    config.distribution = DEMO_DISTRIBUTION;
    config.resource = DEMO_RESOURCE.into();
    config.reset = true;
    config.admin = Some(nodes.admin.clone());
    config.interval = Duration::from_millis(500);
    let session = SessionOptions {
        command: options.command.clone(),
        out_dir: options.out_dir.clone(),
        verify: true,
        service_metrics: nodes.metrics.clone(),
        ..SessionOptions::default()
    };
    let outcome = run_session(config, &session).await;
    nodes.stop().await?;
    outcome
}

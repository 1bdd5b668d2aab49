//! `loadgen chaos`: a load through nodes on a real network while a fault schedule breaks it
//! (a node partitioned from Redis, a flapping link, slow or lossy Redis), with the report
//! marking each fault on the charts and counting the outcomes around it.
//!
//! `fault` reads the schedule (pure); `network` builds the namespaces and sets each fault;
//! this module runs the session with the schedule beside it.

pub mod fault;
pub mod network;

use std::{path::PathBuf, sync::Arc, time::Duration};

use fault::Fault;
use network::ChaosNetwork;

use crate::{
    engine::{LoadModel, RunConfig},
    report::faults::FaultSpan,
    schedule::Schedule,
    session::{SessionOptions, SessionOutcome, run_session},
    wire::Endpoint,
};

/// The nodes' rules when no `--config` is given: a generous limit, so what the faults do
/// (denials from the `deny` failure mode) stands out.
pub const DEFAULT_CONFIG: &str = r#"[backend]
kind = "redis"
[backend.redis]
failure_mode = "deny"

[default_rule]
algorithm = "token_bucket"
capacity = 100
refill_per_second = 100
"#;

pub struct ChaosOptions {
    pub nodes: usize,
    pub faults: Vec<Fault>,
    /// The nodes' TOML; its backend is pointed at the lab's Redis.
    pub config: Option<PathBuf>,
    pub rate: f64,
    pub duration: Duration,
    pub keys: usize,
    pub resource: String,
    pub out_dir: PathBuf,
    pub command: String,
}

impl ChaosOptions {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = fault::problems(&self.faults, self.nodes, self.duration);
        if !(1..=20).contains(&self.nodes) {
            problems.push(format!("--nodes {}: use 1 to 20", self.nodes));
        }
        if self.faults.is_empty() {
            problems.push("give at least one --fault, e.g. 2s+3s:partition=1".into());
        }
        problems
    }
}

pub async fn run_chaos(options: &ChaosOptions) -> anyhow::Result<SessionOutcome> {
    let problems = options.problems();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    let folder = sluice_testkit::folder::Folder::new("chaos-config");
    let config = match &options.config {
        Some(path) => path.canonicalize()?,
        None => {
            let path = folder.path().join("sluice.toml");
            std::fs::write(&path, DEFAULT_CONFIG)?;
            path
        }
    };
    let network = Arc::new(ChaosNetwork::start(options.nodes, &config).await?);
    let targets = network
        .grpc_addrs
        .iter()
        .map(|addr| format!("grpc://{addr}").parse::<Endpoint>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let mut run = RunConfig::new(targets);
    run.model = LoadModel::Open {
        schedule: Schedule::constant(options.rate),
        workers: 64,
    };
    run.duration = Some(options.duration);
    run.keys = options.keys;
    run.resource = options.resource.clone();
    // Fine enough to see a fault's edges.
    run.interval = Duration::from_millis(250);
    let problems = run.problems();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));

    let session = SessionOptions {
        command: options.command.clone(),
        out_dir: options.out_dir.clone(),
        verify: false,
        service_metrics: network
            .http_addrs
            .iter()
            .map(|addr| format!("http://{addr}/metrics"))
            .collect(),
        faults: options
            .faults
            .iter()
            .map(|fault| FaultSpan {
                fault: fault.kind.to_string(),
                start_s: fault.at.as_secs_f64(),
                end_s: fault.ends().as_secs_f64(),
            })
            .collect(),
    };
    let schedule = tokio::spawn(apply(network.clone(), options.faults.clone()));
    let outcome = run_session(run, &session).await;
    schedule.abort();
    // Whatever the schedule reached, every fault ends before the network goes.
    for fault in &options.faults {
        let network = network.clone();
        let kind = fault.kind.clone();
        let _ = tokio::task::spawn_blocking(move || network.set(&kind, false)).await;
    }
    outcome
}

/// Starts and ends each fault at its time from now (the start of the load).
async fn apply(network: Arc<ChaosNetwork>, faults: Vec<Fault>) {
    let started = tokio::time::Instant::now();
    let mut changes: Vec<(Duration, usize, bool)> = Vec::new();
    for (index, fault) in faults.iter().enumerate() {
        changes.push((fault.at, index, true));
        changes.push((fault.ends(), index, false));
    }
    changes.sort_by_key(|(at, _, on)| (*at, *on));
    for (at, index, on) in changes {
        tokio::time::sleep_until(started + at).await;
        let network = network.clone();
        let kind = faults[index].kind.clone();
        let result = tokio::task::spawn_blocking(move || network.set(&kind, on)).await;
        match result {
            Ok(Ok(())) => tracing::info!(fault = %faults[index].kind, on, "fault set"),
            Ok(Err(err)) => eprintln!("setting fault {}: {err:#}", faults[index].kind),
            Err(err) => eprintln!("setting fault {}: {err}", faults[index].kind),
        }
    }
}

//! `loadgen`: parses flags and calls the library. Subcommands: run, demo, report, compare.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use loadgen::{
    compare,
    demo::{DemoOptions, run_demo},
    engine::{LoadModel, RunConfig},
    keys::Distribution,
    report,
    schedule::{Schedule, Stage},
    session::{SessionOptions, console, run_session},
    target::{Call, Endpoint},
};

#[derive(Parser)]
#[command(
    version,
    about = "Load generator and correctness checker for the Sluice rate limiter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive load at one or more targets and write a report into results/.
    Run(Box<RunArgs>),
    /// Start the service in-process (memory, or Redis with --redis), load it, write a report.
    Demo(DemoArgs),
    /// Rebuild report.md and the charts of a saved run.
    Report { dir: PathBuf },
    /// Compare two saved runs; exits 1 when B regresses past --threshold.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Allowed relative regression (0.1 = 10 %).
        #[arg(long, default_value_t = 0.1)]
        threshold: f64,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    sluice::config::parse_duration(text)
}

#[derive(Args)]
struct RunArgs {
    /// grpc://HOST:PORT or http://HOST:PORT; repeat to spread load across nodes.
    #[arg(long = "target", required = true)]
    targets: Vec<Endpoint>,
    /// gRPC: HTTP/2 connections per target (HTTP uses one keep-alive connection per worker).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Closed model: requests in flight (each worker sends when its last one completes).
    #[arg(long, conflicts_with_all = ["rate", "stages"])]
    concurrency: Option<usize>,
    /// Open model: a constant arrival rate (requests per second).
    #[arg(long)]
    rate: Option<f64>,
    /// Open model: linear ramps, e.g. 10s:1000,30s:5000,10s:0 (start at --rate or 0).
    #[arg(long, value_delimiter = ',')]
    stages: Vec<Stage>,
    /// Open model: the most requests in flight.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Stop sending after this long (e.g. 30s).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Send but do not measure for this long first.
    #[arg(long, value_parser = duration, default_value = "0s")]
    warmup: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many distinct client keys.
    #[arg(long, default_value_t = 100)]
    keys: usize,
    #[arg(long, default_value = "key-")]
    key_prefix: String,
    /// uniform, zipf[:EXPONENT] or hot:SHARE.
    #[arg(long, default_value = "uniform")]
    distribution: Distribution,
    #[arg(long, default_value = "")]
    resource: String,
    #[arg(long, default_value_t = 1)]
    cost: u64,
    #[arg(long, value_parser = duration, default_value = "2s")]
    timeout: Duration,
    /// Retries of transient errors, with exponential backoff and jitter.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    #[arg(long, value_parser = duration, default_value = "50ms")]
    retry_backoff: Duration,
    /// Also retry denied requests once their retry-after has passed (within --retries).
    #[arg(long)]
    honor_retry_after: bool,
    /// Reset the limiter's state of every key before the run.
    #[arg(long)]
    reset: bool,
    /// Timeline resolution.
    #[arg(long, value_parser = duration, default_value = "1s")]
    interval: Duration,
    /// Check per key that admissions stayed within each rule's bound; exit 1 if not.
    #[arg(long)]
    verify: bool,
    /// A service's /metrics URL, to reconcile its counters with the client's (repeatable).
    #[arg(long = "service-metrics")]
    service_metrics: Vec<String>,
    /// What each request calls: the rate-limit check, or the health probe (generator ceiling).
    #[arg(long, value_enum, default_value = "check")]
    call: Call,
    /// Serve the generator's own Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// The run's folder under --results (default: run-<unix time>).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[derive(Args)]
struct DemoArgs {
    /// Start a private redis-server and two service nodes on it.
    #[arg(long)]
    redis: bool,
    #[arg(long, value_parser = duration, default_value = "5s")]
    duration: Duration,
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

fn run_config(args: &RunArgs) -> RunConfig {
    let model = match (args.concurrency, args.rate, args.stages.is_empty()) {
        (Some(concurrency), _, _) => LoadModel::Closed { concurrency },
        (None, rate, false) => LoadModel::Open {
            schedule: Schedule::stages(rate.unwrap_or(0.0), &args.stages),
            workers: args.workers,
        },
        (None, Some(rate), true) => LoadModel::Open {
            schedule: Schedule::constant(rate),
            workers: args.workers,
        },
        (None, None, true) => LoadModel::Closed { concurrency: 64 },
    };
    let mut config = RunConfig::new(args.targets.clone());
    config.connections = args.connections;
    config.model = model;
    config.requests = args.requests;
    config.duration = args
        .duration
        .or(if args.requests.is_some() || !args.stages.is_empty() {
            None
        } else {
            Some(Duration::from_secs(10))
        });
    config.warmup = args.warmup;
    config.seed = args.seed;
    config.keys = args.keys;
    config.key_prefix = args.key_prefix.clone();
    config.distribution = args.distribution;
    config.resource = args.resource.clone();
    config.cost = args.cost;
    config.timeout = args.timeout;
    config.retries = args.retries;
    config.retry_backoff = args.retry_backoff;
    config.honor_retry_after = args.honor_retry_after;
    config.reset = args.reset;
    config.interval = args.interval;
    config.call = args.call;
    config
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let mut config = run_config(&args);
            if let Some(addr) = args.metrics_addr {
                let targets: Vec<String> = config.targets.iter().map(|t| t.url.clone()).collect();
                let metrics = loadgen::metrics::ClientMetrics::new(&targets);
                let bound = metrics.clone().serve(addr).await?;
                eprintln!("generator metrics on http://{bound}/metrics");
                config.metrics = Some(metrics);
            }
            let problems = config.problems();
            anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
            let options = SessionOptions {
                command: command_line(),
                out_dir: report::results_dir(&args.results, args.name.as_deref()),
                verify: args.verify,
                service_metrics: args.service_metrics.clone(),
            };
            let outcome = run_session(config, &options).await?;
            println!("{}", console(&outcome.summary, &outcome.dir));
            Ok(if outcome.ledger_failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Demo(args) => {
            let options = DemoOptions {
                redis: args.redis,
                duration: args.duration,
                rate: args.rate,
                out_dir: report::results_dir(
                    &args.results,
                    Some(&args.name.unwrap_or_else(|| {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        format!(
                            "demo-{}-{}",
                            if args.redis { "redis" } else { "memory" },
                            now.as_secs()
                        )
                    })),
                ),
                command: command_line(),
            };
            let outcome = run_demo(&options).await?;
            println!("{}", console(&outcome.summary, &outcome.dir));
            Ok(if outcome.ledger_failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Report { dir } => {
            let summary = report::rebuild(&dir)?;
            println!("{}", console(&summary, &dir));
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { a, b, threshold } => {
            let (base, candidate) = (report::read_summary(&a)?, report::read_summary(&b)?);
            println!("{}", compare::table(&base, &candidate));
            let regressions = compare::regressions(&base, &candidate, threshold);
            for regression in &regressions {
                println!("REGRESSION: {regression}");
            }
            Ok(if regressions.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

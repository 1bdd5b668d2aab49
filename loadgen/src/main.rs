//! `loadgen`: parses flags and calls the library. Subcommands: run, tui, demo, report, stack,
//! chaos, compare (and the hidden `node`, which chaos runs in each namespace).

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use loadgen::{
    admin::AdminAccess,
    client::socket::TlsOptions,
    compare,
    demo::{self, DemoNodes, DemoOptions, run_demo},
    engine::{LoadModel, RunConfig},
    keys::Distribution,
    report,
    schedule::{Schedule, Stage},
    session::{SessionOptions, console, run_session},
    tui::{self, TuiOptions, form::Form},
    wire::{Call, Endpoint},
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
    /// An interactive console: a parameter form, live charts and tables, keys to steer the run.
    Tui(Box<TuiArgs>),
    /// Start the service in-process (memory, or Redis with --redis), load it, write a report.
    /// In a terminal it runs in the console (`tui`) unless --no-tui.
    Demo(DemoArgs),
    /// Rebuild report.md and the charts of a saved run; --k6 and --goose add their results
    /// of the same scenario to its comparison table.
    Report {
        dir: PathBuf,
        /// A k6 summary JSON (k6/README.md: RESULTS_DIR/NAME-summary.json), copied into DIR.
        #[arg(long)]
        k6: Option<PathBuf>,
        /// A Goose JSON report (sluice-goose --report-file X.json), copied into DIR.
        #[arg(long)]
        goose: Option<PathBuf>,
    },
    /// Start redis-server, two limiter nodes and Prometheus on loopback; Ctrl-C stops them.
    Stack(StackArgs),
    /// Load nodes on a real network (Linux namespaces; needs root) while a fault schedule
    /// breaks it; the report marks each fault with the outcomes around it.
    Chaos(ChaosArgs),
    /// One limiter node (what `chaos` runs in each namespace): the service's own flags.
    #[command(hide = true)]
    Node(NodeArgs),
    /// A stand-in backend behind a limiter: asks the limiter's HTTP API before each request,
    /// queues what it lets through on a few servers (latency grows with the load), and
    /// reports each latency back (adaptive limits). Drive it with `run --target http://ADDR`.
    Backend(BackendArgs),
    /// Adaptive limits shown: the same overload through a backend, under a static limit and
    /// an adaptive one, side by side in one report.
    Adaptive(AdaptiveArgs),
    /// Compare two saved runs; exits 1 when B regresses past --threshold.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Allowed relative regression (0.1 = 10 %).
        #[arg(long, default_value_t = 0.1)]
        threshold: f64,
    },
}

#[derive(Args)]
struct StackArgs {
    /// Prometheus's port.
    #[arg(long, default_value_t = 9090)]
    prometheus_port: u16,
    /// The two nodes' HTTP ports (/check, /metrics).
    #[arg(long, num_args = 2, value_delimiter = ',', default_values_t = [8081, 8082])]
    http_ports: Vec<u16>,
    /// The two nodes' gRPC ports.
    #[arg(long, num_args = 2, value_delimiter = ',', default_values_t = [50051, 50052])]
    grpc_ports: Vec<u16>,
    /// Where Prometheus scrapes the generator: give `loadgen run` the same --metrics-addr.
    #[arg(long, default_value = "127.0.0.1:9464")]
    loadgen_metrics: std::net::SocketAddr,
}

#[derive(Args)]
struct ChaosArgs {
    /// A fault: AT+FOR:KIND=VALUE, e.g. 10s+5s:partition=2 (node 2 cut off from Redis),
    /// 20s+3s:latency=200ms, 30s+3s:loss=5 (% of Redis's packets), 40s+5s:flap=1. Repeatable.
    #[arg(long = "fault", required = true)]
    faults: Vec<loadgen::chaos::fault::Fault>,
    /// Limiter nodes, each in a namespace of its own, all on one Redis.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The nodes' TOML (its Redis URL is replaced by the lab's); default: a generous token
    /// bucket with failure_mode "deny".
    #[arg(long)]
    config: Option<PathBuf>,
    /// Open-model rate across the nodes (req/s).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[arg(long, value_parser = duration, default_value = "30s")]
    duration: Duration,
    #[arg(long, default_value_t = 100)]
    keys: usize,
    #[arg(long, default_value = "")]
    resource: String,
    /// The run's folder under --results (default: chaos-<unix time>).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[derive(Args)]
struct BackendArgs {
    /// Where the backend listens.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// The limiter's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    limiter: Endpoint,
    /// The limiter resource each request spends (and reports on).
    #[arg(long, default_value = "api")]
    resource: String,
    /// A token of role `report` (also SLUICE_REPORT_TOKEN): report each served request's
    /// latency, so the resource's adaptive limit can follow the backend.
    #[arg(long, env = "SLUICE_REPORT_TOKEN", hide_env_values = true)]
    report_token: Option<String>,
    /// Requests worked on at once.
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// How long each request takes once a server has it.
    #[arg(long, value_parser = duration, default_value = "10ms")]
    service_time: Duration,
    /// A request waiting in line longer than this fails (504).
    #[arg(long, value_parser = duration, default_value = "500ms")]
    timeout: Duration,
}

#[derive(Args)]
struct AdaptiveArgs {
    #[arg(long, default_value_t = 4)]
    servers: usize,
    #[arg(long, value_parser = duration, default_value = "10ms")]
    service_time: Duration,
    #[arg(long, value_parser = duration, default_value = "500ms")]
    timeout: Duration,
    /// The adaptive rule's target for the backend's p90 latency.
    #[arg(long, value_parser = duration, default_value = "50ms")]
    target_latency: Duration,
    /// The peak load as a multiple of the backend's capacity.
    #[arg(long, default_value_t = 3.0)]
    overload: f64,
    #[arg(long, value_parser = duration, default_value = "15s")]
    ramp: Duration,
    #[arg(long, value_parser = duration, default_value = "20s")]
    hold: Duration,
    #[arg(long, default_value_t = 20)]
    keys: usize,
    /// The report's folder under --results (default: adaptive-<unix time>).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[derive(Args)]
struct NodeArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    grpc_addr: String,
    #[arg(long)]
    http_addr: String,
    #[arg(long)]
    redis_url: String,
}

fn duration(text: &str) -> Result<Duration, String> {
    sluice::config::parse_duration(text)
}

#[derive(Args)]
struct RunArgs {
    /// grpc://HOST:PORT or http://HOST:PORT (Sluice), or rls://HOST:PORT (any server of
    /// Envoy's rate limit service); grpcs://, https://, rlss:// over TLS. Repeat to spread
    /// load across nodes.
    #[arg(long = "target", required = true)]
    targets: Vec<Endpoint>,
    /// TLS targets: trust the CA certificates in this PEM file instead of the system's.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// TLS targets: accept any certificate (a test setup's self-signed one). Encrypted, but
    /// the server is not authenticated.
    #[arg(long, conflicts_with = "tls_ca")]
    tls_insecure: bool,
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
    /// rls:// targets: the domain every request names.
    #[arg(long)]
    domain: Option<String>,
    /// rls:// targets: one descriptor of every request, `key=value,key2=value2` (repeat for
    /// several); `{key}` in one entry's value is replaced by each request's key.
    #[arg(long = "descriptor", value_parser = loadgen::client::rls::RlsTemplate::parse_descriptor)]
    descriptors: Vec<Vec<(String, String)>>,
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
    /// Reset the limiter's state of every key before the run, through its admin API
    /// (needs --admin-addr).
    #[arg(long)]
    reset: bool,
    /// The service's admin API (its admin.addr), HOST:PORT, for --reset; repeat it for
    /// memory-backed nodes, which each hold their own state. The admin-role token is read
    /// from SLUICE_ADMIN_TOKEN, never from a flag (the command line goes into reports).
    #[arg(long = "admin-addr")]
    admin_addrs: Vec<String>,
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
struct TuiArgs {
    /// Prefills the form: grpc://HOST:PORT, http://HOST:PORT or rls://HOST:PORT (repeatable;
    /// give a node's addresses of each kind, and the form's protocol switch picks one).
    #[arg(long = "target")]
    targets: Vec<Endpoint>,
    /// A service's /metrics URL for the service's own view (repeatable).
    #[arg(long = "service-metrics")]
    service_metrics: Vec<String>,
    /// The service's admin API (HOST:PORT, repeatable) for the reset key; the token is read
    /// from SLUICE_ADMIN_TOKEN.
    #[arg(long = "admin-addr")]
    admin_addrs: Vec<String>,
    /// Open model rate (req/s).
    #[arg(long)]
    rate: Option<f64>,
    /// Closed model instead, with this many requests in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long)]
    duration: Option<String>,
    #[arg(long)]
    keys: Option<usize>,
    #[arg(long)]
    distribution: Option<String>,
    #[arg(long)]
    resource: Option<String>,
    /// rls:// targets: the domain.
    #[arg(long)]
    domain: Option<String>,
    /// rls:// targets: a descriptor, key=value,key2={key} (repeatable).
    #[arg(long = "descriptor")]
    descriptors: Vec<String>,
    #[arg(long)]
    cost: Option<u64>,
    #[arg(long)]
    timeout: Option<String>,
    #[arg(long)]
    retries: Option<u32>,
    /// Start the run at once instead of waiting on the form.
    #[arg(long)]
    start: bool,
    /// Quit when the run ends by itself, once its report is written.
    #[arg(long)]
    exit_when_done: bool,
    /// The run's folder under --results (default: tui-<unix time>).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

impl TuiArgs {
    fn form(&self) -> anyhow::Result<Form> {
        let mut form = Form::with_targets(&self.targets, &self.service_metrics);
        form.admin = AdminAccess::from_env(self.admin_addrs.clone())?;
        let set = |slot: &mut String, value: Option<String>| {
            if let Some(value) = value {
                *slot = value;
            }
        };
        set(&mut form.rate, self.rate.map(|r| r.to_string()));
        if let Some(concurrency) = self.concurrency {
            form.open = false;
            form.concurrency = concurrency.to_string();
        }
        set(&mut form.duration, self.duration.clone());
        set(&mut form.keys, self.keys.map(|k| k.to_string()));
        set(&mut form.distribution, self.distribution.clone());
        set(&mut form.resource, self.resource.clone());
        set(&mut form.domain, self.domain.clone());
        if !self.descriptors.is_empty() {
            form.descriptors = self.descriptors.join(" ");
        }
        set(&mut form.cost, self.cost.map(|c| c.to_string()));
        set(&mut form.timeout, self.timeout.clone());
        set(&mut form.retries, self.retries.map(|r| r.to_string()));
        Ok(form)
    }
}

#[derive(Args)]
struct DemoArgs {
    /// Start a private redis-server and two service nodes on it.
    #[arg(long)]
    redis: bool,
    /// How long the load runs (default 5s; 60s in the console).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Print a report without the console, even in a terminal.
    #[arg(long)]
    no_tui: bool,
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

fn run_config(args: &RunArgs) -> RunConfig {
    let tls = TlsOptions {
        ca_file: args.tls_ca.clone(),
        insecure: args.tls_insecure,
    };
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
    config.tls = tls;
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
    config.rls = rls_template(&args.domain, &args.descriptors);
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

/// The RLS request `--domain` and `--descriptor` describe, when either is given.
fn rls_template(
    domain: &Option<String>,
    descriptors: &[Vec<(String, String)>],
) -> Option<loadgen::client::rls::RlsTemplate> {
    (domain.is_some() || !descriptors.is_empty()).then(|| loadgen::client::rls::RlsTemplate {
        domain: domain.clone().unwrap_or_default(),
        descriptors: descriptors.to_vec(),
    })
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let mut config = run_config(&args);
            config.admin = AdminAccess::from_env(args.admin_addrs.clone())?;
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
                ..SessionOptions::default()
            };
            let outcome = run_session(config, &options).await?;
            println!("{}", console(&outcome.summary, &outcome.dir));
            Ok(if outcome.ledger_failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Tui(args) => {
            let options = TuiOptions {
                form: args.form()?,
                results: args.results.clone(),
                name: args.name.clone(),
                command: command_line(),
                start: args.start,
                exit_when_done: args.exit_when_done,
            };
            console_session(options).await
        }
        Command::Demo(args) if std::io::stdout().is_terminal() && !args.no_tui => {
            let nodes = DemoNodes::start(args.redis).await?;
            let duration = args.duration.unwrap_or(Duration::from_secs(60));
            let options = TuiOptions {
                form: demo::console_form(&nodes, args.rate, duration),
                results: args.results.clone(),
                name: args.name.clone(),
                command: command_line(),
                start: true,
                exit_when_done: false,
            };
            let outcome = console_session(options).await;
            nodes.stop().await?;
            outcome
        }
        Command::Demo(args) => {
            let options = DemoOptions {
                redis: args.redis,
                duration: args.duration.unwrap_or(Duration::from_secs(5)),
                rate: args.rate,
                out_dir: demo::out_dir(&args.results, args.name, args.redis),
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
        Command::Report { dir, k6, goose } => {
            report::tools::import(&dir, k6.as_deref(), goose.as_deref())?;
            let summary = report::rebuild(&dir)?;
            println!("{}", console(&summary, &dir));
            Ok(ExitCode::SUCCESS)
        }
        Command::Stack(args) => {
            let options = loadgen::stack::StackOptions {
                prometheus_port: args.prometheus_port,
                node_ports: [
                    (args.grpc_ports[0], args.http_ports[0]),
                    (args.grpc_ports[1], args.http_ports[1]),
                ],
                loadgen_metrics: args.loadgen_metrics,
            };
            let stack = loadgen::stack::Stack::start(&options).await?;
            for line in stack.urls() {
                println!("{line}");
            }
            println!(
                "load it: loadgen run --target grpc://{} --target grpc://{} --rate 2000 \
                 --duration 60s --resource api --metrics-addr {}",
                stack.nodes.grpc_addrs()[0],
                stack.nodes.grpc_addrs()[1],
                args.loadgen_metrics
            );
            println!("Ctrl-C stops everything");
            tokio::signal::ctrl_c().await?;
            stack.stop().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backend(args) => {
            let backend = loadgen::backend::start(loadgen::backend::BackendOptions {
                listen: args.listen,
                limiter: args.limiter,
                resource: args.resource,
                report_token: args.report_token,
                servers: args.servers,
                service_time: args.service_time,
                timeout: args.timeout,
            })
            .await?;
            println!(
                "backend on http://{} (capacity {:.0} req/s); Ctrl-C stops it",
                backend.addr, backend.capacity
            );
            tokio::signal::ctrl_c().await?;
            backend.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Adaptive(args) => {
            let name = args.name.clone().unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                format!("adaptive-{now}")
            });
            let options = loadgen::backend::experiment::ExperimentOptions {
                servers: args.servers,
                service_time: args.service_time,
                timeout: args.timeout,
                target_latency: args.target_latency,
                overload: args.overload,
                ramp: args.ramp,
                hold: args.hold,
                keys: args.keys,
                interval: Duration::from_millis(250),
                out_dir: report::results_dir(&args.results, Some(&name)),
                command: command_line(),
            };
            let summary = loadgen::backend::experiment::run(&options).await?;
            for arm in &summary.arms {
                println!(
                    "{}: served p50 {:.1} ms, p99 {:.1} ms while held at {}x capacity",
                    if arm.adaptive { "adaptive" } else { "static" },
                    arm.hold_p50_ms,
                    arm.hold_p99_ms,
                    options.overload
                );
            }
            println!(
                "report: {}",
                options.out_dir.join(report::REPORT_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Chaos(args) => {
            let name = args.name.clone().unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                format!("chaos-{now}")
            });
            let options = loadgen::chaos::ChaosOptions {
                nodes: args.nodes,
                faults: args.faults,
                config: args.config,
                rate: args.rate,
                duration: args.duration,
                keys: args.keys,
                resource: args.resource,
                out_dir: report::results_dir(&args.results, Some(&name)),
                command: command_line(),
            };
            let outcome = loadgen::chaos::run_chaos(&options).await?;
            println!("{}", console(&outcome.summary, &outcome.dir));
            for fault in &outcome.summary.faults {
                println!(
                    "fault {} {:.1}-{:.1} s: allowed / denied / errors before {}, during {}, after {}",
                    fault.fault,
                    fault.start_s,
                    fault.end_s,
                    fault.before,
                    fault.during,
                    fault.after
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Node(args) => {
            let overrides = sluice::config::Overrides {
                grpc_addr: Some(args.grpc_addr),
                http_addr: Some(args.http_addr),
                backend: Some("redis".into()),
                redis_url: Some(args.redis_url),
                ..Default::default()
            };
            let config = sluice::config::Config::load(Some(&args.config), &overrides)?;
            let source = sluice::reload::ConfigSource {
                path: args.config,
                overrides,
            };
            sluice::server::run_until_signal(config, Some(source)).await?;
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

/// Runs the console, then prints where the reports went.
async fn console_session(options: TuiOptions) -> anyhow::Result<ExitCode> {
    for dir in tui::run_console(options).await? {
        println!("report: {}", dir.join(report::REPORT_FILE).display());
    }
    Ok(ExitCode::SUCCESS)
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

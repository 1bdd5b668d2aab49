//! `loadgen stack`: the observed topology as local processes on loopback, no Docker needed: a
//! private redis-server, two limiter nodes sharing it, and Prometheus with the project's
//! scrape configuration and rules (dashboards/prometheus), scraping the nodes and the load
//! generator. The dashboard tests stand on it too.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_testkit::local_redis::free_port;

use crate::{demo::DemoNodes, scrape::get_text};

const PROMETHEUS_YML: &str = include_str!("../../dashboards/prometheus/prometheus.yml");
const RULES: &str = include_str!("../../dashboards/prometheus/rules/sluice.rules.yml");

/// Where the stack listens (`loadgen stack`'s defaults are the ports
/// dashboards/prometheus/targets names). Port 0 picks a free port.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub prometheus_port: u16,
    /// Each node's (gRPC, HTTP) port.
    pub node_ports: [(u16, u16); 2],
    /// The load generator's `--metrics-addr`, for Prometheus to scrape.
    pub loadgen_metrics: SocketAddr,
}

pub struct Stack {
    pub nodes: DemoNodes,
    pub prometheus_url: String,
    prometheus: Prometheus,
}

impl Stack {
    pub async fn start(options: &StackOptions) -> anyhow::Result<Self> {
        let nodes = DemoNodes::start_on(true, &options.node_ports).await?;
        let dir = std::env::temp_dir().join(format!(
            "sluice-stack-{}-{}",
            std::process::id(),
            free_port()?
        ));
        write_prometheus_config(&dir, &nodes, options.loadgen_metrics)?;
        let port = match options.prometheus_port {
            0 => free_port()?,
            port => port,
        };
        let mut prometheus = Prometheus::start(dir, port)?;
        let prometheus_url = format!("http://127.0.0.1:{port}");
        wait_ready(&prometheus_url, &mut prometheus).await?;
        Ok(Self {
            nodes,
            prometheus_url,
            prometheus,
        })
    }

    /// What to open, one line each.
    pub fn urls(&self) -> Vec<String> {
        let mut lines = vec![format!("prometheus  {}", self.prometheus_url)];
        let nodes = self
            .nodes
            .grpc_addrs()
            .into_iter()
            .zip(self.nodes.http_addrs());
        for (i, (grpc, http)) in nodes.enumerate() {
            lines.push(format!(
                "node {}      grpc://{grpc}  http://{http} (/metrics)",
                i + 1
            ));
        }
        lines.push(format!(
            "admin       {} (export {}={} for loadgen --reset --admin-addr)",
            self.nodes.admin.addrs.join("  "),
            crate::admin::TOKEN_ENV,
            self.nodes.admin.token
        ));
        lines
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        drop(self.prometheus);
        self.nodes.stop().await
    }
}

/// Waits for Prometheus to answer /-/ready. Its log goes into the error, since the working
/// folder that holds it is removed when the stack is dropped.
async fn wait_ready(url: &str, prometheus: &mut Prometheus) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if get_text(&format!("{url}/-/ready")).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            anyhow::bail!("Prometheus exited ({status}):\n{}", prometheus.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "Prometheus did not become ready in 30 s:\n{}",
        prometheus.log_tail()
    )
}

/// A Prometheus process and its working folder; dropping it stops the one and removes the other.
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    fn start(dir: PathBuf, port: u16) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let mut command = Command::new("prometheus");
        command
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // k6's experimental-prometheus-rw output writes here (k6/README.md).
            .arg("--web.enable-remote-write-receiver")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = sluice_testkit::tools::spawn(
            &mut command,
            "`apt-get install prometheus` (Debian's package; scripts/test installs it)",
        )?;
        Ok(Self { child, dir })
    }

    /// The last lines Prometheus logged (where it says why it stopped: a port in use, ...).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for Prometheus {
    /// SIGTERM, so Prometheus closes its database cleanly; a kill if it takes over 5 s.
    fn drop(&mut self) {
        let child = &mut self.child;
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The committed prometheus.yml and rules, with targets files naming this stack's ports.
fn write_prometheus_config(
    dir: &Path,
    nodes: &DemoNodes,
    loadgen: SocketAddr,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("rules"))?;
    std::fs::create_dir_all(dir.join("targets"))?;
    std::fs::write(dir.join("prometheus.yml"), PROMETHEUS_YML)?;
    std::fs::write(dir.join("rules/sluice.rules.yml"), RULES)?;
    let targets = |addrs: Vec<String>| {
        serde_json::to_string_pretty(
            &json!([{ "targets": addrs, "labels": { "cluster": "local" } }]),
        )
    };
    let nodes: Vec<String> = nodes.http_addrs().iter().map(ToString::to_string).collect();
    std::fs::write(dir.join("targets/sluice.json"), targets(nodes)?)?;
    std::fs::write(
        dir.join("targets/loadgen.json"),
        targets(vec![loadgen.to_string()])?,
    )?;
    Ok(())
}

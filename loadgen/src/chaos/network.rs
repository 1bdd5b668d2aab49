//! The network a chaos run breaks: Redis and each node in a Linux network namespace of their
//! own (`sluice_testkit::netns`), the nodes on Redis through a delay proxy on the host, the
//! load generator on the host. Nodes are this program again (`loadgen node`), so a chaos run
//! needs no other binary. Needs root; everything is removed when it is dropped.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use sluice_testkit::{
    delay_proxy::DelayProxy,
    netns::{Flapping, Lab},
};

use super::fault::{FLAP_PERIOD, FaultKind};

const REDIS_PORT: u16 = 6379;
const GRPC_PORT: u16 = 50051;
const HTTP_PORT: u16 = 8080;

pub struct ChaosNetwork {
    lab: Arc<Lab>,
    proxy: DelayProxy,
    processes: Vec<Process>,
    /// Each node's gRPC address, as the host reaches it.
    pub grpc_addrs: Vec<SocketAddr>,
    /// Each node's HTTP address (/metrics).
    pub http_addrs: Vec<SocketAddr>,
    flapping: Mutex<HashMap<usize, Flapping>>,
    folder: PathBuf,
}

/// A process in a namespace and its log; killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChaosNetwork {
    /// Redis in member 0, `nodes` nodes in members 1..=nodes running `config` (its backend
    /// pointed at the proxy in front of Redis).
    pub async fn start(nodes: usize, config: &Path) -> anyhow::Result<Self> {
        let lab = Lab::new(1 + nodes).context(
            "building the network namespaces (loadgen chaos needs root, iproute2 and iptables)",
        )?;
        let folder = std::env::temp_dir().join(format!("sluice-chaos-{}", std::process::id()));
        std::fs::create_dir_all(&folder)?;
        let redis_addr = SocketAddr::from((lab.address(0), REDIS_PORT));
        let mut processes = Vec::new();
        let mut redis = lab.command(0, "redis-server");
        redis
            .args(["--bind", &lab.address(0).to_string()])
            .args(["--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &folder.to_string_lossy()]);
        processes.push(spawn(
            redis,
            &folder.join("redis.log"),
            "`apt-get install redis-server`",
        )?);
        wait_listening(redis_addr, &mut processes[0]).await?;
        let proxy = DelayProxy::start((lab.host_address(), 0).into(), redis_addr)?;
        let program = std::env::current_exe().context("finding this program to run the nodes")?;
        let mut grpc_addrs = Vec::new();
        let mut http_addrs = Vec::new();
        for member in 1..=nodes {
            let address = lab.address(member);
            let grpc = SocketAddr::from((address, GRPC_PORT));
            let http = SocketAddr::from((address, HTTP_PORT));
            let mut node = lab.command(member, &program.to_string_lossy());
            node.arg("node")
                .arg("--config")
                .arg(config)
                .args(["--grpc-addr", &grpc.to_string()])
                .args(["--http-addr", &http.to_string()])
                .args(["--redis-url", &format!("redis://{}", proxy.addr)]);
            let log = folder.join(format!("node-{member}.log"));
            processes.push(spawn(node, &log, "this program")?);
            let last = processes.len() - 1;
            wait_listening(grpc, &mut processes[last]).await?;
            grpc_addrs.push(grpc);
            http_addrs.push(http);
        }
        Ok(Self {
            lab: Arc::new(lab),
            proxy,
            processes,
            grpc_addrs,
            http_addrs,
            flapping: Mutex::new(HashMap::new()),
            folder,
        })
    }

    /// Starts (`on`) or ends a fault. Blocking: it runs `ip` and `iptables`.
    pub fn set(&self, kind: &FaultKind, on: bool) -> anyhow::Result<()> {
        let (host, port) = (self.lab.host_address(), self.proxy.addr.port());
        match *kind {
            FaultKind::Partition { node } => self.lab.cut_off(node, host, port, on)?,
            FaultKind::Latency(delay) => {
                self.proxy
                    .set_delay(if on { delay } else { Duration::ZERO })
            }
            FaultKind::Loss(percent) => self.lab.lose(0, if on { percent } else { 0 })?,
            FaultKind::Flap { node } => {
                let mut flapping = self.flapping.lock().unwrap();
                // Dropping a node's guard stops its flapping with the link up.
                flapping.remove(&node);
                if on {
                    let guard = self.lab.flap(node, host, port, FLAP_PERIOD);
                    flapping.insert(node, guard);
                }
            }
        }
        Ok(())
    }
}

impl Drop for ChaosNetwork {
    fn drop(&mut self) {
        self.flapping.lock().unwrap().clear();
        self.processes.clear();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn spawn(mut command: Command, log: &Path, install: &str) -> anyhow::Result<Process> {
    let file = std::fs::File::create(log)?;
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let child = sluice_testkit::tools::spawn(&mut command, install)?;
    Ok(Process {
        child,
        log: log.to_owned(),
    })
}

/// Waits (up to 15 s) until `address` accepts connections; a process that exits first is an
/// error with the end of its log.
async fn wait_listening(address: SocketAddr, process: &mut Process) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            anyhow::bail!(
                "a chaos process exited ({status}) before listening on {address}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nothing listened on {address} within 15 s")
}

//! A private `redis-server` (or a 3-master Redis Cluster) on free loopback ports: what the
//! load generator's `demo --redis`, the tests and the benchmarks run against. Never a mock:
//! when the program is missing the error says how to install it.

use std::{
    io,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const INSTALL_HINT: &str = "redis-server is needed: install it with `apt-get install -y redis-server` (scripts/test does this)";

fn missing(program: &str, err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("cannot run {program} ({err}). {INSTALL_HINT}"),
    )
}

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One redis-server process; killed when dropped.
pub struct LocalRedis {
    pub port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl LocalRedis {
    pub fn start() -> io::Result<Self> {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> io::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("sluice-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            port,
            dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| missing("redis-server", err))?;
        self.child = Some(child);
        self.wait_until_answering()
    }

    /// Runs redis-cli against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|err| missing("redis-cli", err))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn wait_until_answering(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"])?.trim() == "PONG" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            ),
        ))
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        if let Some(child) = &self.child {
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()?;
        }
        Ok(())
    }

    /// SIGSTOP: the process keeps its socket but answers nothing.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    pub fn resume(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, empty (scripts must be reloaded: NOSCRIPT).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// How many times Redis ran a command, from INFO commandstats (e.g. "evalsha").
    pub fn command_calls(&self, command: &str) -> io::Result<u64> {
        let info = self.cli(&["INFO", "commandstats"])?;
        let prefix = format!("cmdstat_{command}:calls=");
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-master Redis Cluster on loopback, built with `redis-cli --cluster create`.
pub struct LocalRedisCluster {
    pub nodes: Vec<LocalRedis>,
}

impl LocalRedisCluster {
    pub fn start() -> io::Result<Self> {
        let nodes = (0..3)
            .map(|_| {
                LocalRedis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect::<io::Result<Vec<_>>>()?;
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|err| missing("redis-cli", err))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ready = true;
            for node in &nodes {
                ready &= node.cli(&["CLUSTER", "INFO"])?.contains("cluster_state:ok");
            }
            if ready {
                return Ok(Self { nodes });
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "cluster did not reach cluster_state:ok in 20 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(LocalRedis::url).collect()
    }
}

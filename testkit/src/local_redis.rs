//! A private `redis-server` (or a 3-master Redis Cluster) on free loopback ports: what the
//! load generator's `demo --redis`, the tests and the benchmarks run against. Never a mock:
//! when the program is missing the error says how to install it.

use std::{
    io::{self, Read, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn missing(program: &str, err: io::Error) -> io::Error {
    crate::tools::missing(
        program,
        err,
        "`apt-get install -y redis-server` (scripts/test does this)",
    )
}

/// A free loopback port (bound and released; fine for tests on one machine).
///
/// Never the same port twice in one process: the OS may hand a just-released port out again
/// at once, and a caller that asks for two ports before binding either (a node's gRPC and HTTP
/// listeners) must get two.
pub fn free_port() -> io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no loopback port this process has not handed out already",
    ))
}

/// A cluster node listens on its port and on port + 10000 (the cluster bus), so both must be
/// free, and the port at most 55535: redis-server refuses a higher one.
fn free_cluster_port() -> io::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no loopback port at most 55535 with its cluster bus port (+10000) free in 100 tries",
    ))
}

/// Attempts to start a server before giving up: a port picked free can be taken by another
/// process before redis-server binds it.
const START_ATTEMPTS: usize = 5;

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
        Self::start_on(free_port, extra_args)
    }

    /// Starts on a port from `pick_port`, on another one when redis-server exits at once (its
    /// port was taken meanwhile).
    fn start_on(pick_port: fn() -> io::Result<u16>, extra_args: &[&str]) -> io::Result<Self> {
        let mut attempt = 1;
        loop {
            let port = pick_port()?;
            let dir =
                std::env::temp_dir().join(format!("sluice-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let mut server = Self {
                port,
                dir,
                extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(err) if err.kind() == io::ErrorKind::AddrInUse && attempt < START_ATTEMPTS => {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
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

    /// One PING on a socket with timeouts: whatever else holds the port (a listener that never
    /// answers) is a no, not a hang.
    fn answers_ping(&self) -> bool {
        let timeout = Duration::from_millis(200);
        let ping = || -> io::Result<bool> {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
            let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.write_all(b"PING\r\n")?;
            let mut reply = [0; 7];
            stream.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG\r\n")
        };
        ping().unwrap_or(false)
    }

    fn wait_until_answering(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers_ping() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "redis-server on port {} exited before answering ({status}): was the port taken?",
                        self.port
                    ),
                ));
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
                LocalRedis::start_on(
                    free_cluster_port,
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                )
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    use super::*;

    static TAKEN: AtomicU16 = AtomicU16::new(0);
    static PICKS: AtomicUsize = AtomicUsize::new(0);

    /// The taken port first, as if another process grabbed it after it was picked; then free ones.
    fn taken_then_free() -> io::Result<u16> {
        match PICKS.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(TAKEN.load(Ordering::SeqCst)),
            _ => free_port(),
        }
    }

    #[test]
    fn a_server_whose_port_was_taken_starts_on_another() {
        let _one_at_a_time = crate::one_test_at_a_time();
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        TAKEN.store(taken, Ordering::SeqCst);
        let server =
            LocalRedis::start_on(taken_then_free, &[]).unwrap_or_else(|err| panic!("{err}"));
        assert_ne!(server.port, taken);
        assert_eq!(
            PICKS.load(Ordering::SeqCst),
            2,
            "one retry after the taken port"
        );
        assert_eq!(server.cli(&["PING"]).unwrap().trim(), "PONG");
    }

    #[test]
    fn cluster_ports_leave_room_for_a_free_bus_port() {
        let _one_at_a_time = crate::one_test_at_a_time();
        for _ in 0..200 {
            let port = free_cluster_port().unwrap();
            assert!(port <= 55_535, "{port}");
            assert!(TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok());
        }
    }
}

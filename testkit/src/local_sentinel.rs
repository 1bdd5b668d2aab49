//! A Redis primary, its replica and three Sentinels watching them, on free loopback ports: the
//! smallest setup in which a failover really happens (a quorum of two Sentinels agrees the
//! primary is down and promotes the replica). Sentinels are `redis-server --sentinel`, the
//! program Debian's redis-sentinel package runs.

use std::{
    io,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::local_redis::{LocalRedis, free_port};

/// What the Sentinels call the primary.
pub const MASTER_NAME: &str = "sluice-primary";

/// How long the Sentinels wait for a silent primary before voting it down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1_000);

pub struct LocalSentinels {
    pub primary: LocalRedis,
    pub replica: LocalRedis,
    sentinels: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl LocalSentinels {
    /// Starts the primary, a replica of it, then three Sentinels, and waits until the replica
    /// is in sync and every Sentinel knows the replica and the two other Sentinels (so a
    /// failover can be agreed and carried out).
    pub fn start() -> io::Result<Self> {
        let primary = LocalRedis::start()?;
        let replica =
            LocalRedis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()])?;
        let dir = std::env::temp_dir().join(format!(
            "sluice-sentinels-{}-{}",
            std::process::id(),
            primary.port
        ));
        std::fs::create_dir_all(&dir)?;
        let mut group = Self {
            primary,
            replica,
            sentinels: Vec::new(),
            dir,
        };
        group.wait_for(
            "the replica to sync",
            |group| {
                Ok(group
                    .replica
                    .cli(&["INFO", "replication"])?
                    .contains("master_link_status:up"))
            },
            Duration::from_secs(10),
        )?;
        for _ in 0..3 {
            group.spawn_sentinel()?;
        }
        group.wait_for(
            "every Sentinel to know the replica and the others",
            |group| {
                for port in group.sentinel_ports() {
                    let replicas = sentinel_cli(port, &["SENTINEL", "REPLICAS", MASTER_NAME])?;
                    let others = sentinel_cli(port, &["SENTINEL", "SENTINELS", MASTER_NAME])?;
                    let known_others = others.lines().filter(|line| *line == "name").count();
                    if !replicas.contains(&group.replica.port.to_string()) || known_others < 2 {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
            Duration::from_secs(30),
        )?;
        Ok(group)
    }

    fn spawn_sentinel(&mut self) -> io::Result<()> {
        let port = free_port()?;
        let config = self.dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = self.dir.display(),
                primary = self.primary.port,
                down = DOWN_AFTER.as_millis(),
            ),
        )?;
        let child = crate::tools::spawn(
            Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "`apt-get install -y redis-server` (scripts/test does this)",
        )?;
        self.sentinels.push((port, child));
        self.wait_for(
            "a Sentinel to answer",
            |_| Ok(sentinel_cli(port, &["PING"])?.contains("PONG")),
            Duration::from_secs(10),
        )
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(port, _)| *port).collect()
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The primary's port as the first Sentinel names it now.
    pub fn primary_port_named(&self) -> io::Result<u16> {
        let reply = sentinel_cli(
            self.sentinels[0].0,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        )?;
        reply
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no primary named: {reply:?}")))
    }

    /// Waits until `done`, checking every 50 ms, for at most `within`.
    pub fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&Self) -> io::Result<bool>,
        within: Duration,
    ) -> io::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done(self).unwrap_or(false) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("waited {within:?} for {what}"),
        ))
    }
}

fn sentinel_cli(port: u16, args: &[&str]) -> io::Result<String> {
    let output = crate::tools::output_of(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        "`apt-get install -y redis-tools` (scripts/test does this)",
    )?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Drop for LocalSentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

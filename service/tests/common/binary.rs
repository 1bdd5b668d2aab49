//! The `ratelimiter` binary as a child process: what an operator runs, signals included.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A running `ratelimiter`; killed when dropped, so a failing test leaves no process behind.
pub struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
}

impl Node {
    /// Starts the binary with `args` (ports are picked free) and waits until it listens.
    pub fn start(args: &[&str]) -> Node {
        let mut command = Command::new(Self::program());
        command
            .args(args)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
        Self::start_command(command)
    }

    /// The binary's path, for a command built around it (e.g. run in a network namespace).
    pub fn program() -> &'static str {
        env!("CARGO_BIN_EXE_ratelimiter")
    }

    /// Starts `command` (which runs the binary with its listen addresses) and waits until it
    /// listens.
    pub fn start_command(mut command: Command) -> Node {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the ratelimiter binary starts");
        let (send, lines) = mpsc::channel();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let mut node = Node {
            child,
            lines,
            http_addr: ([0, 0, 0, 0], 0).into(),
            grpc_addr: ([0, 0, 0, 0], 0).into(),
        };
        let listening = node.wait_for("sluice listening");
        let addr = |field: &str| -> SocketAddr {
            listening
                .split(&format!("{field}="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {field} in {listening:?}"))
                .parse()
                .unwrap()
        };
        node.http_addr = addr("http_addr");
        node.grpc_addr = addr("grpc_addr");
        node
    }

    /// The next log line containing `needle` (within 10 s), skipping the rest.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the binary never logged {needle:?}");
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

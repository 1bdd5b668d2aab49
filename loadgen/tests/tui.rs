//! The console end to end: the real `loadgen` binary in a real terminal (tmux), against an
//! in-process service. It must show live numbers that change, take a new rate from `+`, and
//! on `q` write the same report files as `loadgen run`.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use sluice::{
    config::{Config, Overrides},
    server,
};

/// tmux on a private socket, so a developer's own sessions are never touched.
struct Tmux {
    socket: String,
    session: &'static str,
}

impl Tmux {
    fn start(command: &str, width: u16, height: u16) -> Self {
        let tmux = Self {
            socket: format!("sluice-tui-test-{}", std::process::id()),
            session: "loadgen",
        };
        let output = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            tmux.session,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(
            output.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        sluice_testkit::tools::output(
            Command::new("tmux").args(["-L", &self.socket]).args(args),
            "`apt-get install -y tmux`",
        )
    }

    fn screen(&self) -> String {
        let output = self.run(&["capture-pane", "-p", "-t", self.session]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", self.session, keys]);
    }

    /// Waits for the screen to satisfy `check`, and returns that screen.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited 20 s for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The number after `label` on the header line, e.g. `allowed 1234`.
fn header_number(screen: &str, label: &str) -> Option<f64> {
    let header = screen.lines().next()?;
    let rest = &header[header.find(label)? + label.len()..];
    let word = rest.split_whitespace().next()?;
    let (digits, scale) = match word.strip_suffix('k') {
        Some(digits) => (digits, 1e3),
        None => (word, 1.0),
    };
    digits.parse::<f64>().ok().map(|n| n * scale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_live_numbers_takes_keys_and_saves_its_report() {
    let overrides = Overrides::loopback("loadgen:admin:loadgen-test-admin-token");
    let rules =
        "[default_rule]\nalgorithm = \"token_bucket\"\ncapacity = 20\nrefill_per_second = 5\n";
    let node = server::start(Config::parse(rules, "test", &overrides).unwrap())
        .await
        .unwrap();
    let results: PathBuf =
        std::env::temp_dir().join(format!("sluice-tui-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&results);
    let command = format!(
        "{} tui --target grpc://{} --service-metrics http://{}/metrics --rate 200 --duration 60s --keys 5 --results {} --name e2e",
        env!("CARGO_BIN_EXE_loadgen"),
        node.grpc_addr,
        node.http_addr,
        results.display()
    );
    let results = tokio::task::spawn_blocking(move || {
        let tmux = Tmux::start(&command, 100, 30);
        tmux.wait_for("the form", |s| {
            s.contains("Parameters") && s.contains("Enter start")
        });
        tmux.keys("Enter");
        let first = tmux.wait_for("live numbers", |s| {
            s.contains("RUNNING") && header_number(s, "allowed ").is_some_and(|n| n > 0.0)
        });
        let first_total =
            header_number(&first, "allowed ").unwrap() + header_number(&first, "denied ").unwrap();
        let later = tmux.wait_for("the numbers to change", |s| {
            header_number(s, "allowed ")
                .zip(header_number(s, "denied "))
                .is_some_and(|(a, d)| a + d > first_total)
        });
        assert!(later.contains("200 req/s"), "{later}");
        // The service's own counters, scraped from its /metrics.
        tmux.wait_for("the service's view", |s| s.contains("store err 0"));
        tmux.keys("+");
        tmux.wait_for("the new rate", |s| s.contains("220 req/s"));
        tmux.keys("q");
        // q writes the report, then the program ends and its tmux session with it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while tmux
            .run(&["has-session", "-t", tmux.session])
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "still running 30 s after q:\n{}",
                tmux.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        results
    })
    .await
    .unwrap();
    let dir = results.join("e2e");
    for file in loadgen::report::CHART_FILES
        .iter()
        .flat_map(|chart| [format!("{chart}.png"), format!("{chart}.svg")])
        .chain(["summary.json", "report.md", "latency.hgrm", "latency.hlog"].map(String::from))
    {
        assert!(
            dir.join(&file).exists(),
            "{file} missing from {}",
            dir.display()
        );
    }
    let summary = loadgen::report::read_summary(&dir).unwrap();
    assert!(
        summary.totals.allowed > 0 && summary.totals.denied > 0,
        "{:?}",
        summary.totals
    );
    assert_eq!(summary.totals.errors(), 0);
    assert!(
        summary.ledger.as_ref().is_some_and(|l| l.passed()),
        "{:?}",
        summary.ledger
    );
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&results);
}

//! A burst is not an outage: 2,000 concurrent checks on fresh keys against one node on a
//! healthy redis-server get no "store unavailable" answer, run after run, also while another
//! process keeps a core busy. (Before, the store deadline counted the time a call queued
//! behind the rest of the burst, a few such timeouts opened the breaker, and a healthy Redis was
//! treated as down.)

mod common;

use std::process::{Child, Command, Stdio};

use sluice_proto::v1::{CheckRequest, rate_limiter_client::RateLimiterClient};

/// The two tests would load each other's bursts; one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BURST: usize = 2_000;
const RUNS: usize = 10;

/// A process spinning on one core until dropped.
struct BusyCore(Child);

impl BusyCore {
    fn start() -> Self {
        let child = Command::new("python3")
            .args([
                "-c",
                "import time\nend = time.time() + 600\nwhile time.time() < end: pass",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs (apt-get install python3)");
        Self(child)
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `RUNS` bursts of `BURST` concurrent checks on fresh keys; the answers that came from a
/// failure mode rather than Redis, per run.
async fn false_denials(tag: &str) -> Vec<usize> {
    let redis = common::redis::server();
    // The default deadline (10 ms) and breaker: what a user starting out gets, in a process of
    // its own as it runs in production.
    let folder = sluice_testkit::folder::Folder::new("redis-burst");
    let config = folder.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"{}\"]\n{}",
            redis.url(),
            common::no_refill_bucket("burst", 5)
        ),
    )
    .unwrap();
    let node = common::binary::Node::start(&["--config", config.to_str().unwrap()]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.grpc_addr))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    let mut per_run = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let mut tasks = Vec::with_capacity(BURST);
        for index in 0..BURST {
            let mut grpc = RateLimiterClient::new(channel.clone());
            let key = format!("{tag}-{run}-{index}");
            tasks.push(tokio::spawn(async move {
                grpc.check(CheckRequest {
                    key,
                    resource: "burst".into(),
                    cost: None,
                })
                .await
                .expect("the check answers")
                .into_inner()
            }));
        }
        let mut failed_over = 0;
        for task in tasks {
            let answer = task.await.unwrap();
            if !answer.reason.is_empty() {
                failed_over += 1;
            } else {
                assert!(
                    answer.allowed,
                    "a fresh key's first check is allowed: {answer:?}"
                );
            }
        }
        per_run.push(failed_over);
    }
    per_run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_on_a_healthy_redis_get_no_false_denials() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let per_run = false_denials("idle").await;
    assert!(
        per_run.iter().all(|n| *n == 0),
        "failure-mode answers per run: {per_run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_get_no_false_denials_while_another_process_holds_a_core() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let _busy = BusyCore::start();
    let per_run = false_denials("busy").await;
    assert!(
        per_run.iter().all(|n| *n == 0),
        "failure-mode answers per run: {per_run:?}"
    );
}

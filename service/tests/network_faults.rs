//! Faults over a real network: Redis and three nodes each in a network namespace of their own
//! (`sluice_testkit::netns`), the nodes reaching Redis through a delay proxy on the host, this
//! test driving all three over gRPC. Each fault runs under load for 2 s and the test asserts:
//! no check waits past the store's bound for that fault (below), nothing is admitted beyond
//! what the `local` failure mode documents (its share per node that failed over), and every
//! node answers from Redis again within 1 s of the fault ending. results/reliability.md quotes
//! the figures each scenario prints.
//!
//! The bound: a silent Redis (a partition, a flapping link, a connection stalled on a lost
//! packet) is called after `LIVENESS` (100 ms) past the deadline, a Redis slower than that at
//! the deadline, and the open circuit then answers at once; a Redis that answers, only later
//! than the deadline (20 ms added), is waited for.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::binary::Node;
use sluice_proto::v1::{CheckRequest, rate_limiter_client::RateLimiterClient};
use sluice_testkit::{delay_proxy::DelayProxy, netns::Lab};

/// One fault at a time: they share the machine's two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODES: usize = 3;
const DEADLINE: Duration = Duration::from_millis(10);
const LIVENESS: Duration = sluice::store::LIVENESS;
/// Scheduling on two shared cores with a debug build, on top of the store's own bound.
const SLACK: Duration = Duration::from_millis(150);
const SCARCE_LIMIT: u64 = 30;
const FAULT_AT: Duration = Duration::from_secs(1);
const FAULT_FOR: Duration = Duration::from_secs(2);
const RUN_FOR: Duration = Duration::from_secs(5);

/// Redis (member 0) and three nodes (members 1 to 3), the nodes on Redis through the proxy.
struct Stack {
    lab: Arc<Lab>,
    proxy: DelayProxy,
    _redis: Child,
    nodes: Vec<Node>,
}

/// A process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Stack {
    fn start() -> Self {
        let lab = Lab::new(1 + NODES).unwrap_or_else(|err| panic!("{err}"));
        let redis_addr = lab.address(0);
        let redis = lab
            .command(0, "redis-server")
            .args(["--bind", &redis_addr.to_string(), "--port", "6379"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install -y redis-server)");
        let redis = Child(redis);
        let upstream = (redis_addr, 6379).into();
        wait_until_listening(upstream);
        let proxy = DelayProxy::start((lab.host_address(), 0).into(), upstream).unwrap();
        let folder = sluice_testkit::folder::Folder::new("network-faults");
        let config = folder.path().join("sluice.toml");
        std::fs::write(
            &config,
            format!(
                "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"redis://{}\"]\n\
                 deadline = \"{}ms\"\nfailure_mode = \"local\"\nfallback_share = {}\n\
                 [rules.api]\nalgorithm = \"fixed_window\"\nlimit = 1000000\nwindow = \"1h\"\n\
                 {}",
                proxy.addr,
                DEADLINE.as_millis(),
                1.0 / NODES as f64,
                // Never refills during the test (an hourly fixed window would, at the hour).
                common::no_refill_bucket("scarce", SCARCE_LIMIT),
            ),
        )
        .unwrap();
        let nodes = (1..=NODES)
            .map(|member| {
                let address = lab.address(member);
                let mut command = lab.command(member, Node::program());
                command.args(["--config", config.to_str().unwrap()]).args([
                    "--grpc-addr",
                    &format!("{address}:50051"),
                    "--http-addr",
                    &format!("{address}:8080"),
                ]);
                Node::start_command(command)
            })
            .collect();
        Self {
            lab: Arc::new(lab),
            proxy,
            _redis: redis,
            nodes,
        }
    }
}

fn wait_until_listening(address: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {address}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One check's answer: which node, when it was sent, what answered it, how long it took.
#[derive(Debug, Clone)]
struct Answer {
    node: usize,
    at: Duration,
    scarce: bool,
    from_redis: bool,
    allowed: bool,
    took: Duration,
}

/// Callers per node, each sending its next check 8 ms after its last answer: several calls in
/// flight at once on a node's Redis connections, as production has.
const CALLERS: usize = 4;

/// Loads every node with `CALLERS` callers for `RUN_FOR`, calling `fault(true)` at
/// `FAULT_AT` and `fault(false)` `FAULT_FOR` later; every answer.
async fn under_load(stack: &Stack, fault: impl Fn(bool)) -> Vec<Answer> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for (node, running) in stack.nodes.iter().enumerate() {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
                .unwrap()
                .connect()
                .await
                .expect("gRPC connects to the node");
        for caller in 0..CALLERS {
            let channel = channel.clone();
            workers.push(tokio::spawn(async move {
                let mut grpc = RateLimiterClient::new(channel);
                let mut answers = Vec::new();
                // Bounded by time and by count.
                for sent in 0..50_000u32 {
                    let at = started.elapsed();
                    if at >= RUN_FOR {
                        break;
                    }
                    let scarce = (sent + caller as u32).is_multiple_of(10);
                    let asked = Instant::now();
                    let answer = grpc
                        .check(CheckRequest {
                            key: if scarce {
                                "scarce".into()
                            } else {
                                format!("key-{}", sent % 100)
                            },
                            resource: if scarce { "scarce" } else { "api" }.into(),
                            cost: None,
                        })
                        .await
                        .expect("the node answers")
                        .into_inner();
                    answers.push(Answer {
                        node,
                        at,
                        scarce,
                        from_redis: answer.reason.is_empty(),
                        allowed: answer.allowed,
                        took: asked.elapsed(),
                    });
                    tokio::time::sleep(Duration::from_millis(8)).await;
                }
                answers
            }));
        }
    }
    tokio::time::sleep(FAULT_AT).await;
    fault(true);
    tokio::time::sleep(FAULT_FOR).await;
    fault(false);
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    answers
}

/// What a scenario is allowed: the slowest answer, and which nodes may fail over.
struct Expect {
    slowest: Duration,
    may_fail_over: Vec<usize>,
}

/// Checks and prints a scenario's figures.
fn judge(name: &str, answers: &[Answer], expect: Expect) {
    let healed = FAULT_AT + FAULT_FOR;
    let slowest_answer = answers.iter().max_by_key(|a| a.took).unwrap();
    let slowest = slowest_answer.took;
    let failed_over: Vec<&Answer> = answers.iter().filter(|a| !a.from_redis).collect();
    let nodes_failed_over: Vec<usize> = (0..NODES)
        .filter(|node| failed_over.iter().any(|a| a.node == *node))
        .collect();
    let last_failover = failed_over.iter().map(|a| a.at).max();
    let admitted_scarce = answers.iter().filter(|a| a.scarce && a.allowed).count() as u64;
    let share = SCARCE_LIMIT.div_ceil(NODES as u64);
    let bound = SCARCE_LIMIT + share * nodes_failed_over.len() as u64;
    eprintln!(
        "{name}: {} checks, slowest {slowest:?}, {} answered by the failure mode (nodes {:?}), \
         last at {last_failover:?} (healed at {healed:?}); scarce admitted {admitted_scarce} of \
         limit {SCARCE_LIMIT} (documented bound {bound})",
        answers.len(),
        failed_over.len(),
        nodes_failed_over,
    );
    assert!(
        slowest <= expect.slowest,
        "{name}: slowest answer {slowest_answer:?}, bound {:?}",
        expect.slowest
    );
    for node in &nodes_failed_over {
        assert!(
            expect.may_fail_over.contains(node),
            "{name}: node {node} failed over but Redis was reachable from it"
        );
    }
    assert!(
        admitted_scarce <= bound,
        "{name}: admitted {admitted_scarce} > {bound}"
    );
    if let Some(last) = last_failover {
        assert!(
            last <= healed + Duration::from_secs(1),
            "{name}: still failing over {:?} after the fault ended",
            last - healed
        );
    }
    // And every node decided on Redis again by the end.
    for node in 0..NODES {
        let last = answers.iter().rfind(|a| a.node == node).unwrap();
        assert!(last.from_redis, "{name}: node {node} ends on Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_from_redis_fails_over_alone_and_comes_back() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start();
    let (host, port) = (stack.lab.host_address(), stack.proxy.addr.port());
    // Member 1 is node 0.
    let answers = under_load(&stack, |cut| stack.lab.cut_off(1, host, port, cut).unwrap()).await;
    assert!(
        answers.iter().any(|a| a.node == 0 && !a.from_redis),
        "the partitioned node answered by its failure mode"
    );
    judge(
        "partition of one node",
        &answers,
        Expect {
            slowest: DEADLINE + LIVENESS + SLACK,
            may_fail_over: vec![0],
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_is_never_waited_on_past_the_bound() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start();
    let (host, port) = (stack.lab.host_address(), stack.proxy.addr.port());
    // The link of node 0 (member 1) goes down and up every 200 ms while the fault lasts.
    let flapping = std::sync::Mutex::new(None);
    let answers = under_load(&stack, |on| {
        *flapping.lock().unwrap() =
            on.then(|| stack.lab.flap(1, host, port, Duration::from_millis(200)));
    })
    .await;
    judge(
        "flapping link of one node",
        &answers,
        Expect {
            slowest: DEADLINE + LIVENESS + SLACK,
            may_fail_over: vec![0],
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_200_ms_slow_is_failed_over_not_waited_on() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start();
    let answers = under_load(&stack, |on| {
        stack.proxy.set_delay(if on {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        })
    })
    .await;
    assert!(
        answers.iter().any(|a| !a.from_redis),
        "the nodes failed over"
    );
    judge(
        "200 ms added latency",
        &answers,
        Expect {
            slowest: DEADLINE + LIVENESS + SLACK,
            may_fail_over: (0..NODES).collect(),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_20_ms_slow_still_decides() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start();
    let answers = under_load(&stack, |on| {
        stack.proxy.set_delay(if on {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        })
    })
    .await;
    judge(
        "20 ms added latency",
        &answers,
        Expect {
            slowest: Duration::from_millis(20) + DEADLINE + SLACK,
            may_fail_over: Vec::new(),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_packet_loss_is_never_waited_on_past_the_bound() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start();
    // Redis (member 0) loses 5% of what it sends.
    let answers = under_load(&stack, |on| {
        stack.lab.lose(0, if on { 5 } else { 0 }).unwrap()
    })
    .await;
    judge(
        "5% packet loss",
        &answers,
        Expect {
            slowest: DEADLINE + LIVENESS + SLACK,
            may_fail_over: (0..NODES).collect(),
        },
    );
}

//! Redis Sentinel: a node finds the primary through three real Sentinels, and when the primary
//! is killed under load and the Sentinels promote its replica, the node moves to the new
//! primary by itself. Measures the unavailable window and what each failure mode answered
//! during it (results/reliability.md quotes a run).

mod common;

use std::time::{Duration, Instant};

use sluice_proto::v1::CheckRequest;
use sluice_testkit::local_sentinel::{LocalSentinels, MASTER_NAME};

const DEADLINE_MS: u64 = 20;

fn config(group: &LocalSentinels) -> String {
    let urls: Vec<String> = group
        .sentinel_urls()
        .iter()
        .map(|url| format!("\"{url}\""))
        .collect();
    let mut config = format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\ndeadline = \"{DEADLINE_MS}ms\"\nfallback_share = 0.5\n\
         [backend.redis.sentinel]\nmaster = \"{MASTER_NAME}\"\nurls = [{}]\n",
        urls.join(", ")
    );
    for mode in ["deny", "allow", "local"] {
        config.push_str(&format!(
            "[rules.{mode}]\nalgorithm = \"fixed_window\"\nlimit = 1000000\nwindow = \"1h\"\nfailure_mode = \"{mode}\"\n"
        ));
    }
    // Never refills during the test (an hourly fixed window would, at the hour).
    config.push_str(&common::no_refill_bucket("kept", 50));
    config
}

fn check(key: &str, resource: &str) -> CheckRequest {
    CheckRequest {
        key: key.into(),
        resource: resource.into(),
        cost: None,
    }
}

/// One answer during the load: when, from which rule, and whether Redis decided it.
struct Answer {
    at: Duration,
    mode: &'static str,
    from_redis: bool,
    allowed: bool,
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_moves_the_node_to_the_new_primary() {
    let mut group = LocalSentinels::start().unwrap_or_else(|err| panic!("{err}"));
    let node = common::start(&config(&group)).await;
    let mut grpc = common::grpc_client(&node).await;

    // State written before the failover, and replicated, is on the new primary.
    for _ in 0..20 {
        let answer = grpc.check(check("k", "kept")).await.unwrap().into_inner();
        assert!(answer.allowed && answer.reason.is_empty(), "{answer:?}");
    }
    group
        .wait_for(
            "the replica to hold the state",
            |group| Ok(group.replica.cli(&["DBSIZE"])?.trim() != "0"),
            Duration::from_secs(5),
        )
        .unwrap();

    let started = Instant::now();
    let mut killed_at = None;
    let mut answers = Vec::new();
    // Bounded: at most 40 s or 20,000 checks.
    for sent in 0..20_000u32 {
        let at = started.elapsed();
        if at > Duration::from_secs(40) {
            break;
        }
        if killed_at.is_none() && at > Duration::from_secs(1) {
            group.primary.kill();
            killed_at = Some(at);
        }
        let mode = ["deny", "allow", "local"][sent as usize % 3];
        let asked = Instant::now();
        let answer = grpc
            .check(check(&format!("key-{}", sent % 50), mode))
            .await
            .unwrap()
            .into_inner();
        answers.push(Answer {
            at,
            mode,
            from_redis: answer.reason.is_empty(),
            allowed: answer.allowed,
            took: asked.elapsed(),
        });
        // Back on Redis for a second after the failover: done.
        if let Some(killed) = killed_at {
            let recent: Vec<&Answer> = answers
                .iter()
                .rev()
                .take_while(|a| a.at + Duration::from_secs(1) > at)
                .collect();
            let failed_over_since_kill = answers.iter().any(|a| a.at > killed && !a.from_redis);
            if failed_over_since_kill
                && at > killed + Duration::from_secs(2)
                && recent.iter().all(|a| a.from_redis)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed = killed_at.expect("the primary was killed");

    let before: Vec<&Answer> = answers.iter().filter(|a| a.at < killed).collect();
    assert!(
        before.iter().all(|a| a.from_redis && a.allowed),
        "before the kill, Redis decides"
    );
    let failed_over: Vec<&Answer> = answers.iter().filter(|a| !a.from_redis).collect();
    let first_down = failed_over
        .first()
        .expect("some answers came from failure modes");
    let last_down = failed_over.last().unwrap();
    let back = answers
        .iter()
        .find(|a| a.at > last_down.at && a.from_redis)
        .expect("the node answered from Redis again after the failover");
    let window = back.at - first_down.at;
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    let mut per_mode = String::new();
    for mode in ["deny", "allow", "local"] {
        let of_mode = failed_over.iter().filter(|a| a.mode == mode);
        let allowed = of_mode.clone().filter(|a| a.allowed).count();
        let denied = of_mode.count() - allowed;
        per_mode.push_str(&format!(" {mode}: {allowed} allowed, {denied} denied;"));
    }
    eprintln!(
        "sentinel failover: killed at {killed:?}; failure modes answered from {:?} to {:?} \
         (unavailable window {window:?});{per_mode} slowest answer {slowest:?}; {} checks",
        first_down.at,
        last_down.at,
        answers.len()
    );

    // Each failure mode answered as documented while no primary was reachable.
    for answer in &failed_over {
        match answer.mode {
            "deny" => assert!(!answer.allowed, "deny mode denies"),
            "allow" => assert!(answer.allowed, "allow mode allows"),
            _ => assert!(answer.allowed, "local mode allows within its share"),
        }
    }
    // No check waited on the dead primary: the deadline, the liveness tolerance and slack.
    assert!(
        slowest < Duration::from_millis(DEADLINE_MS + 100 + 400),
        "slowest answer {slowest:?}"
    );
    // Sentinels vote after 1 s of silence, then promote; the node follows within its probes.
    assert!(window < Duration::from_secs(15), "unavailable {window:?}");
    assert_eq!(group.primary_port_named().unwrap(), group.replica.port);

    // The 20 checks spent before the failover were replicated: 30 remain, then 29.
    let answer = grpc.check(check("k", "kept")).await.unwrap().into_inner();
    assert!(answer.reason.is_empty(), "{answer:?}");
    assert_eq!(answer.remaining, 29, "{answer:?}");
}

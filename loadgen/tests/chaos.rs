//! `loadgen chaos` as a user runs it: the real binary builds Redis and two nodes in network
//! namespaces, partitions node 1 from Redis for 2 s under load, and writes a report whose
//! summary counts the outcomes before, during and after the fault; nothing of the network is
//! left behind. Needs root, as CI has.

use std::process::Command;

use loadgen::report;

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("loadgen runs")
}

#[test]
fn a_partition_shows_in_the_report_with_the_outcomes_around_it() {
    let results = std::env::temp_dir().join(format!("sluice-chaos-test-{}", std::process::id()));
    let output = loadgen(&[
        "chaos",
        "--nodes",
        "2",
        "--rate",
        "300",
        "--duration",
        "6s",
        "--fault",
        "2s+2s:partition=1",
        "--results",
        results.to_str().unwrap(),
        "--name",
        "partition",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    let dir = results.join("partition");
    let summary = report::read_summary(&dir).unwrap();
    let [fault] = &summary.faults[..] else {
        panic!("one fault recorded: {:?}", summary.faults)
    };
    assert_eq!(fault.fault, "partition=1");
    assert_eq!((fault.start_s, fault.end_s), (2.0, 4.0));
    // The default rules are generous and fail closed: before the fault Redis allows; during
    // it, node 1's half of the load is denied by its failure mode; the other node's is not.
    // (A node's first calls may still meet a cold start: at most 1% of them.)
    let before = fault.before.allowed + fault.before.denied;
    assert!(fault.before.denied * 100 <= before, "{fault:?}");
    let during = fault.during.allowed + fault.during.denied;
    assert!(
        fault.during.denied > during / 4 && fault.during.allowed > during / 4,
        "{fault:?}"
    );
    assert!(fault.after.allowed > fault.after.denied * 4, "{fault:?}");
    let text = std::fs::read_to_string(dir.join(report::REPORT_FILE)).unwrap();
    assert!(text.contains("## Faults") && text.contains("| partition=1 | 2.0 s | 4.0 s |"));
    assert!(said.contains("fault partition=1 2.0-4.0 s"), "{said}");
    // The namespaces went with the run.
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains("slab-"),
        "namespaces left: {}",
        String::from_utf8_lossy(&namespaces.stdout)
    );
    let _ = std::fs::remove_dir_all(&results);
}

#[test]
fn a_schedule_that_cannot_run_is_refused_naming_the_fix() {
    let output = loadgen(&[
        "chaos",
        "--nodes",
        "2",
        "--duration",
        "5s",
        "--fault",
        "1s+2s:partition=3",
        "--fault",
        "4s+2s:loss=5",
    ]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("there are 2 nodes (--nodes)"), "{said}");
    assert!(said.contains("after the load (--duration"), "{said}");
    let bad = loadgen(&["chaos", "--fault", "soon:partition=1"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("AT+FOR:KIND=VALUE"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

//! `loadgen adaptive` as a user runs it (the real binary): the same 3x overload through a
//! backend under a static limit and an adaptive one. With the adaptive limit the backend's p99
//! while the overload is held stays within twice the target; under the static limit, the
//! control, it does not (so the assertion can fail); the report and its chart are written.
//! The backend serves about 200 req/s, so each 100 ms window of the factor holds well over the
//! rule's `min_reports` reports even at its lowest.

use std::process::Command;

use serde_json::Value;

#[test]
fn an_adaptive_limit_keeps_the_backend_near_its_target_at_3x_overload() {
    let results = std::env::temp_dir().join(format!("sluice-adaptive-test-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "adaptive",
            "--servers",
            "4",
            "--service-time",
            "20ms",
            "--target-latency",
            "100ms",
            "--overload",
            "3",
            "--ramp",
            "6s",
            "--hold",
            "6s",
            "--keys",
            "10",
            "--results",
            results.to_str().unwrap(),
            "--name",
            "overload",
        ])
        .output()
        .expect("loadgen runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    let dir = results.join("overload");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let target_ms = 100.0;
    let arm = |adaptive: bool| {
        summary["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|arm| arm["adaptive"] == adaptive)
            .unwrap()
            .clone()
    };
    let rate = |arm: &Value, fate: &str| {
        arm["hold_rates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pair| pair[0] == fate)
            .map_or(0.0, |pair| pair[1].as_f64().unwrap())
    };
    let (adaptive, control) = (arm(true), arm(false));
    let p99 = |arm: &Value| arm["hold_p99_ms"].as_f64().unwrap();
    assert!(
        p99(&adaptive) <= 2.0 * target_ms,
        "adaptive: backend p99 {} ms at 3x overload\n{said}",
        p99(&adaptive)
    );
    assert!(
        p99(&control) > 2.0 * target_ms,
        "the static control should overload the backend: p99 {} ms\n{said}",
        p99(&control)
    );
    assert!(
        rate(&adaptive, "shed") > 0.0,
        "the excess is shed early by the limiter"
    );
    assert!(
        rate(&adaptive, "failed") < rate(&control, "failed"),
        "fewer requests time out in the backend's line"
    );
    assert!(
        adaptive["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|point| point["factor"].as_f64().unwrap() < 0.5),
        "the factor came down"
    );
    for file in [
        "report.md",
        "adaptive.png",
        "adaptive.svg",
        "static/report.md",
        "adaptive/report.md",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    let _ = std::fs::remove_dir_all(&results);
}

//! A short Goose run against an in-process service: the reports are written, and what Goose
//! counted is what the service decided.

use goose::{config::GooseConfiguration, prelude::*};
use loadgen::{
    demo::DemoNodes, keys::Distribution, report::tools::from_goose, scrape::scrape_decisions,
};
use serde_json::Value;
use sluice_goose::{Settings, register};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_writes_its_reports_and_matches_the_services_counts() {
    let nodes = DemoNodes::start(false).await.unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-goose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let report = |ext: &str| dir.join(format!("report.{ext}")).display().to_string();
    let host = format!("http://{}", nodes.http_addrs()[0]);
    let args = [
        "--host",
        &host,
        "--users",
        "4",
        "--increase-rate",
        "100",
        "--run-time",
        "3s",
        "--report-file",
        &report("json"),
        "--report-file",
        &report("html"),
        "--report-file",
        &report("md"),
        "--quiet",
        // Count from the first request, as the service does.
        "--no-reset-metrics",
    ];
    let configuration = GooseConfiguration::parse_args_default(&args).unwrap();
    let settings = Settings::new(100, Distribution::Uniform, "api", 1, "goose-");
    let before = scrape_decisions(&nodes.metrics, "api").await.unwrap();
    let metrics = register(
        GooseAttack::initialize_with_config(configuration).unwrap(),
        settings,
    )
    .unwrap()
    .execute()
    .await
    .unwrap();
    let after = scrape_decisions(&nodes.metrics, "api").await.unwrap();
    nodes.stop().await.unwrap();

    for ext in ["json", "html", "md"] {
        let text = std::fs::read_to_string(report(ext)).unwrap();
        assert!(
            text.contains("check abuser"),
            "{ext} report names the requests"
        );
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(report("json")).unwrap()).unwrap();
    let row = from_goose(&json).unwrap();
    // Goose counted what the service decided: 200 is allowed, 429 denied, nothing else.
    assert_eq!(
        (row.allowed, row.denied),
        (Some(after.0 - before.0), Some(after.1 - before.1))
    );
    assert_eq!(row.requests, row.allowed.unwrap() + row.denied.unwrap());
    assert!(row.requests > 100, "{row:?}");
    // The abuser's key is mostly denied, and 429s are not failures.
    assert!(row.denied.unwrap() > 100, "{row:?}");
    assert_eq!(json["raw_request_metrics"][2]["number_of_failures"], 0);
    let p50 = row.p50_ms.unwrap();
    assert!(p50 > 0.0 && p50 <= row.p99_ms.unwrap(), "{row:?}");
    assert_eq!(
        metrics
            .requests
            .values()
            .map(|r| r.raw_data.counter)
            .sum::<usize>() as u64,
        row.requests
    );
    let _ = std::fs::remove_dir_all(&dir);
}

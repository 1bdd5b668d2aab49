//! One run end to end: scrape the service's counters, drive the load, check the ledger,
//! write the results folder, print the console summary.

use std::path::{Path, PathBuf};

use crate::{
    engine::{self, RunConfig, RunResult},
    ledger,
    report::{self, Summary},
    scrape,
};

#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The command line recorded in summary.json.
    pub command: String,
    /// Where the run's folder goes (e.g. `results/run-...`).
    pub out_dir: PathBuf,
    /// Check the ledger (and fail the session when it does not pass).
    pub verify: bool,
    /// The services' `/metrics` URLs, for reconciling their counters with the client's.
    pub service_metrics: Vec<String>,
    /// A chaos run's faults, marked in the report with the outcomes around each.
    pub faults: Vec<report::faults::FaultSpan>,
}

pub struct SessionOutcome {
    pub summary: Summary,
    pub dir: PathBuf,
}

impl SessionOutcome {
    /// Over-admission, under-admission or disagreeing counters.
    pub fn ledger_failed(&self) -> bool {
        self.summary
            .ledger
            .as_ref()
            .is_some_and(|ledger| !ledger.passed())
    }
}

pub async fn run_session(
    config: RunConfig,
    options: &SessionOptions,
) -> anyhow::Result<SessionOutcome> {
    let before = if options.service_metrics.is_empty() {
        None
    } else {
        Some(scrape::scrape_decisions(&options.service_metrics, &config.resource).await?)
    };
    let result = engine::run(config).await?;
    let reconciliation = match before {
        Some(before) if options.verify => {
            let after =
                scrape::scrape_decisions(&options.service_metrics, &result.config.resource).await?;
            Some(ledger::reconcile(&result, before, after))
        }
        _ => None,
    };
    let summary = write_report(&result, options, reconciliation)?;
    Ok(SessionOutcome {
        summary,
        dir: options.out_dir.clone(),
    })
}

/// Checks the ledger (when asked) and writes the run's folder.
pub fn write_report(
    result: &RunResult,
    options: &SessionOptions,
    reconciliation: Option<ledger::Reconciliation>,
) -> anyhow::Result<Summary> {
    let ledger = options.verify.then(|| {
        let mut report = ledger::check(result);
        report.reconciliation = reconciliation;
        report
    });
    let mut summary = Summary::from_run(result, options.command.clone(), ledger);
    summary.faults =
        report::faults::records(&options.faults, &summary.timeline, summary.interval_s);
    report::write_run(&options.out_dir, result, &summary)?;
    Ok(summary)
}

/// The console summary of a run.
pub fn console(summary: &Summary, dir: &Path) -> String {
    let totals = &summary.totals;
    let latency = &summary.latency_ms;
    let mut lines = vec![format!(
        "requests {}  allowed {}  denied {}  banned {}  shadow-denied {}  errors {}  throughput {:.0} req/s over {:.2} s",
        totals.total(),
        totals.allowed,
        totals.denied,
        totals.banned,
        totals.shadow_denied,
        totals.errors(),
        summary.throughput_rps,
        summary.measured_s
    )];
    if totals.errors() > 0 {
        lines.push(format!("errors by category: {}", totals.error_summary()));
    }
    lines.push("latency ms        p50      p90      p95      p99    p99.9      max".into());
    for (name, p) in [
        ("all", &latency.all),
        ("allowed", &latency.allowed),
        ("denied", &latency.denied),
        ("uncorrected", &latency.uncorrected),
    ] {
        lines.push(format!(
            "  {name:<12} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            p.p50, p.p90, p.p95, p.p99, p.p999, p.max
        ));
    }
    for target in &summary.targets {
        let last = target.last.as_ref().map_or(String::new(), |l| {
            format!(
                "  last: limit {} remaining {} reset {:.0} ms",
                l.limit, l.remaining, l.reset_after_ms
            )
        });
        lines.push(format!(
            "  {}: {:.0} req/s, {} errors, p99 {:.3} ms{last}",
            target.url,
            target.throughput_rps,
            target.counts.errors(),
            target.latency_ms.p99
        ));
    }
    let lag = &summary.generator.lag_ms;
    lines.push(format!(
        "generator send lag p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; missed sends {}",
        lag.p50, lag.p99, lag.max, summary.generator.missed_sends
    ));
    if let Some(warning) = &summary.generator.bottleneck_warning {
        lines.push(format!("WARNING: {warning}"));
    }
    if let Some(ledger) = &summary.ledger {
        lines.push(format!(
            "ledger: {} ({} keys; {} over-admitted, {} under-admitted{})",
            if ledger.passed() { "PASSED" } else { "FAILED" },
            ledger.keys_checked,
            ledger.over_admitted.len(),
            ledger.under_admitted.len(),
            ledger
                .reconciliation
                .as_ref()
                .map_or(String::new(), |r| format!(
                    "; service allowed {} vs client {}: {}",
                    r.service_allowed,
                    r.client_allowed,
                    if r.agrees { "agree" } else { "DISAGREE" }
                ))
        ));
    }
    lines.push(format!(
        "report: {}",
        dir.join(report::REPORT_FILE).display()
    ));
    lines.join("\n")
}

//! `report.md`: the run for people.

use std::fmt::Write as _;

use super::{
    CHART_FILES,
    summary::{Percentiles, Summary},
};

fn row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        p.count, p.p50, p.p90, p.p95, p.p99, p.p999, p.max
    );
}

pub fn report(summary: &Summary) -> String {
    let mut out = String::new();
    let provenance = &summary.provenance;
    let config = &summary.config;
    let totals = &summary.totals;
    let _ = writeln!(out, "# Load test report\n");
    let _ = writeln!(out, "- Command: `{}`", provenance.command);
    let _ = writeln!(
        out,
        "- Commit: `{}` (loadgen {})",
        provenance.commit, provenance.loadgen_version
    );
    let machine = &provenance.machine;
    let _ = writeln!(
        out,
        "- Machine: {} ({} cpus, {}; {})",
        machine.hostname, machine.cpus, machine.cpu_model, machine.os
    );
    let model = match config.rate {
        Some(rate) => format!("open, {rate} req/s, {} workers", config.workers),
        None => format!("{}, {} workers", config.model, config.workers),
    };
    let asked = match &config.rls {
        Some(rls) => format!("Envoy RLS {rls}"),
        None => format!("resource `{}`", config.resource),
    };
    let _ = writeln!(
        out,
        "- Load: {model}; targets {}; {} connections each; {} keys ({}); {asked}, cost {}\n",
        config.targets.join(", "),
        config.connections,
        config.keys,
        config.distribution,
        config.cost
    );
    let _ = writeln!(out, "## Outcome\n");
    let _ = writeln!(
        out,
        "| requests | allowed | denied | banned | shadow-denied | errors | throughput | measured |\n|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {:.0} req/s | {:.2} s |\n",
        totals.total(),
        totals.allowed,
        totals.denied,
        totals.banned,
        totals.shadow_denied,
        totals.errors(),
        summary.throughput_rps,
        summary.measured_s
    );
    if totals.errors() > 0 {
        let _ = writeln!(out, "Errors by category: {}\n", totals.error_summary());
    }
    if totals.shadow_denied > 0 {
        let _ = writeln!(
            out,
            "Shadow-denied: let through by a rule in shadow mode that would have refused them; enforcing it would deny these {}.\n",
            totals.shadow_denied
        );
    }
    let _ = writeln!(out, "## Latency (ms)\n");
    let _ = writeln!(
        out,
        "Measured from each request's intended send time (corrected for coordinated omission), with the uncorrected figure for comparison.\n"
    );
    let _ = writeln!(
        out,
        "| | count | p50 | p90 | p95 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|---|"
    );
    row(&mut out, "all", &summary.latency_ms.all);
    row(&mut out, "allowed", &summary.latency_ms.allowed);
    row(&mut out, "denied", &summary.latency_ms.denied);
    row(
        &mut out,
        "all, uncorrected",
        &summary.latency_ms.uncorrected,
    );
    let _ = writeln!(out, "\n## Per target\n");
    let _ = writeln!(
        out,
        "| target | requests | allowed | denied | errors | req/s | p99 ms | last limit / remaining / reset ms |\n|---|---|---|---|---|---|---|---|"
    );
    for target in &summary.targets {
        let last = target.last.as_ref().map_or("-".into(), |l| {
            format!("{} / {} / {:.0}", l.limit, l.remaining, l.reset_after_ms)
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.3} | {last} |",
            target.url,
            target.counts.total(),
            target.counts.allowed,
            target.counts.denied,
            target.counts.errors(),
            target.throughput_rps,
            target.latency_ms.p99
        );
    }
    let generator = &summary.generator;
    let _ = writeln!(out, "\n## Generator\n");
    let lag = &generator.lag_ms;
    if lag.count > 0 {
        let _ = writeln!(
            out,
            "Send lag (how late each request left after its intended time): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; missed sends: {}.",
            lag.p50, lag.p90, lag.p99, lag.p999, lag.max, generator.missed_sends
        );
    } else {
        let _ = writeln!(
            out,
            "Closed model: no schedule, so no send lag; missed sends: {}.",
            generator.missed_sends
        );
    }
    if let Some(warning) = &generator.bottleneck_warning {
        let _ = writeln!(out, "\n**{warning}**");
    }
    if let Some(ledger) = &summary.ledger {
        let _ = writeln!(out, "\n## Correctness ledger\n");
        let verdict = if ledger.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            out,
            "**{verdict}**: {} keys checked over {:.0} ms; {} over-admitted, {} under-admitted.",
            ledger.keys_checked,
            ledger.elapsed_ms,
            ledger.over_admitted.len(),
            ledger.under_admitted.len()
        );
        for finding in ledger.over_admitted.iter().take(10) {
            let _ = writeln!(
                out,
                "- over: `{}` admitted {} > bound {:.1} (limit {} per {:.0} ms)",
                finding.key,
                finding.admitted_cost,
                finding.threshold,
                finding.limit,
                finding.window_ms
            );
        }
        for finding in ledger.under_admitted.iter().take(10) {
            let _ = writeln!(
                out,
                "- under: `{}` admitted {} < {:.0} owed",
                finding.key, finding.admitted_cost, finding.threshold
            );
        }
        if !ledger.shadow_denied.is_empty() {
            let _ = writeln!(
                out,
                "\nShadow mode let {} key(s) through past their limits (not a failure; what enforcing would refuse):",
                ledger.shadow_denied.len()
            );
            for finding in ledger.shadow_denied.iter().take(10) {
                let _ = writeln!(
                    out,
                    "- shadow: `{}` admitted {}, would refuse {} more",
                    finding.key, finding.admitted_cost, finding.would_refuse_cost
                );
            }
        }
        if let Some(r) = &ledger.reconciliation {
            let _ = writeln!(
                out,
                "\nService counters vs client: allowed {} vs {}, denied {} vs {} (client errors {}): {}.",
                r.service_allowed,
                r.client_allowed,
                r.service_denied,
                r.client_denied,
                r.client_errors,
                if r.agrees { "agree" } else { "DISAGREE" }
            );
        }
    }
    if !summary.faults.is_empty() {
        let _ = writeln!(out, "\n## Faults\n");
        let _ = writeln!(
            out,
            "Outcomes (allowed / denied / errors) in spans as long as each fault, just before, \
             during and just after it; the charts shade each fault.\n"
        );
        let _ = writeln!(
            out,
            "| fault | from | to | before | during | after |\n|---|---|---|---|---|---|"
        );
        for fault in &summary.faults {
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {:.1} s | {} | {} | {} |",
                fault.fault, fault.start_s, fault.end_s, fault.before, fault.during, fault.after
            );
        }
    }
    let _ = writeln!(out, "\n## Charts\n");
    for chart in CHART_FILES {
        let _ = writeln!(out, "![{chart}]({chart}.png)\n");
    }
    let _ = writeln!(
        out,
        "Also: `latency.hgrm` (percentile table), `latency.hlog` (interval log), `summary.json`."
    );
    out
}

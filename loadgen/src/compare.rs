//! `loadgen compare A B`: two saved runs side by side, and a verdict a CI job can gate on.

use std::fmt::Write as _;

use crate::report::Summary;

/// What regressed from `base` to `candidate`, beyond `threshold` (0.1 = 10 %).
pub fn regressions(base: &Summary, candidate: &Summary, threshold: f64) -> Vec<String> {
    let mut found = Vec::new();
    if candidate.throughput_rps < base.throughput_rps * (1.0 - threshold) {
        found.push(format!(
            "throughput fell {:.0} -> {:.0} req/s",
            base.throughput_rps, candidate.throughput_rps
        ));
    }
    for (name, a, b) in [
        ("p50", base.latency_ms.all.p50, candidate.latency_ms.all.p50),
        ("p99", base.latency_ms.all.p99, candidate.latency_ms.all.p99),
    ] {
        if b > a * (1.0 + threshold) && b - a > 0.05 {
            found.push(format!("{name} latency rose {a:.3} -> {b:.3} ms"));
        }
    }
    let error_rate = |s: &Summary| s.totals.errors() as f64 / s.totals.total().max(1) as f64;
    if error_rate(candidate) > error_rate(base) + threshold / 10.0 {
        found.push(format!(
            "error rate rose {:.2}% -> {:.2}%",
            100.0 * error_rate(base),
            100.0 * error_rate(candidate)
        ));
    }
    if candidate
        .ledger
        .as_ref()
        .is_some_and(|ledger| !ledger.passed())
    {
        found.push("the candidate's ledger failed".into());
    }
    found
}

/// The side-by-side table.
pub fn table(base: &Summary, candidate: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| metric | A ({}) | B ({}) | change |",
        base.provenance.commit, candidate.provenance.commit
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let rows = [
        (
            "throughput req/s",
            base.throughput_rps,
            candidate.throughput_rps,
        ),
        (
            "p50 ms",
            base.latency_ms.all.p50,
            candidate.latency_ms.all.p50,
        ),
        (
            "p95 ms",
            base.latency_ms.all.p95,
            candidate.latency_ms.all.p95,
        ),
        (
            "p99 ms",
            base.latency_ms.all.p99,
            candidate.latency_ms.all.p99,
        ),
        (
            "p99.9 ms",
            base.latency_ms.all.p999,
            candidate.latency_ms.all.p999,
        ),
        (
            "allowed",
            base.totals.allowed as f64,
            candidate.totals.allowed as f64,
        ),
        (
            "denied",
            base.totals.denied as f64,
            candidate.totals.denied as f64,
        ),
        (
            "errors",
            base.totals.errors() as f64,
            candidate.totals.errors() as f64,
        ),
    ];
    for (name, a, b) in rows {
        let change = if a == 0.0 {
            "-".to_owned()
        } else {
            format!("{:+.1}%", 100.0 * (b - a) / a)
        };
        let _ = writeln!(out, "| {name} | {a:.3} | {b:.3} | {change} |");
    }
    out
}

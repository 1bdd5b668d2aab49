//! One table for three tools: a loadgen run beside k6's and Goose's results of the same
//! scenario. `loadgen report DIR --k6 FILE --goose FILE` copies their files into the run's
//! folder, so rebuilding the report later keeps the table.

use std::{fs, path::Path};

use anyhow::Context;
use serde_json::Value;

use super::Summary;

pub const K6_FILE: &str = "k6-summary.json";
pub const GOOSE_FILE: &str = "goose-report.json";

/// One tool's figures; `None` where the tool does not measure it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRow {
    pub tool: String,
    pub requests: u64,
    pub throughput_rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub allowed: Option<u64>,
    pub denied: Option<u64>,
}

/// Each other tool's file in a run's folder, and how to read it.
type Parse = fn(&Value) -> anyhow::Result<ToolRow>;
const TOOLS: [(&str, Parse); 2] = [(K6_FILE, from_k6), (GOOSE_FILE, from_goose)];

/// Checks that each file reads as its tool's results, then copies it into `dir`.
pub fn import(dir: &Path, k6: Option<&Path>, goose: Option<&Path>) -> anyhow::Result<()> {
    for (source, (name, parse)) in [k6, goose].into_iter().zip(TOOLS) {
        let Some(source) = source else { continue };
        let json = read_json(source)?;
        parse(&json).with_context(|| format!("{} is not a {name}", source.display()))?;
        fs::copy(source, dir.join(name))
            .with_context(|| format!("copying {} into {}", source.display(), dir.display()))?;
    }
    Ok(())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// loadgen's rows (latency from the intended send time, and uncorrected as the others measure
/// it), then k6's and Goose's where their files are in `dir`.
pub fn rows(dir: &Path, summary: &Summary) -> anyhow::Result<Vec<ToolRow>> {
    let totals = &summary.totals;
    let loadgen = |tool: &str, latency: &super::summary::Percentiles| ToolRow {
        tool: tool.to_owned(),
        requests: totals.total(),
        throughput_rps: summary.throughput_rps,
        p50_ms: Some(latency.p50),
        p95_ms: Some(latency.p95),
        p99_ms: Some(latency.p99),
        allowed: Some(totals.allowed),
        denied: Some(totals.denied + totals.banned),
    };
    let mut rows = vec![
        loadgen("loadgen (from intended send)", &summary.latency_ms.all),
        loadgen("loadgen (uncorrected)", &summary.latency_ms.uncorrected),
    ];
    for (name, parse) in TOOLS {
        let path = dir.join(name);
        if path.exists() {
            rows.push(parse(&read_json(&path)?).with_context(|| format!("reading {name}"))?);
        }
    }
    Ok(rows)
}

/// The report section; empty when no other tool's results are in `dir`.
pub fn section(dir: &Path, summary: &Summary) -> anyhow::Result<String> {
    let rows = rows(dir, summary)?;
    if rows.len() <= 2 {
        return Ok(String::new());
    }
    let cell = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
    let count = |value: Option<u64>| value.map_or("n/a".to_owned(), |v| v.to_string());
    let mut out = String::from(
        "\n## The same scenario in three tools\n\n\
         | tool | requests | req/s | p50 ms | p95 ms | p99 ms | allowed | denied |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} |\n",
            row.tool,
            row.requests,
            row.throughput_rps,
            cell(row.p50_ms),
            cell(row.p95_ms),
            cell(row.p99_ms),
            count(row.allowed),
            count(row.denied),
        ));
    }
    out.push_str(
        "\nk6 and Goose time each request from when it was actually sent, as loadgen's \
         uncorrected row does; loadgen's first row counts from when it was due, so a stall \
         shows there. Goose's figures come from its raw per-request data (microsecond times); \
         its allowed and denied are its 200 and 429 responses.\n",
    );
    Ok(out)
}

fn number(value: &Value, pointer: &str) -> anyhow::Result<f64> {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow::anyhow!("no number at {pointer}"))
}

/// A k6 summary written by k6/http.js or k6/grpc.js (`handleSummary`).
pub fn from_k6(json: &Value) -> anyhow::Result<ToolRow> {
    let trend = ["http_req_duration", "grpc_req_duration"]
        .into_iter()
        .find(|name| json.pointer(&format!("/metrics/{name}/values")).is_some())
        .ok_or_else(|| anyhow::anyhow!("no http_req_duration or grpc_req_duration"))?;
    let stat = |name: &str| number(json, &format!("/metrics/{trend}/values/{name}"));
    let counter = |name: &str| {
        json.pointer(&format!("/metrics/{name}/values/count"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0) as u64
    };
    // Shadow-denied requests were let through; banned ones were refused.
    let allowed = counter("sluice_allowed") + counter("sluice_shadow_denied");
    let denied = counter("sluice_denied") + counter("sluice_banned");
    let requests = stat("count")? as u64;
    let seconds = number(json, "/state/testRunDurationMs")? / 1e3;
    Ok(ToolRow {
        tool: format!("k6 ({})", trend.trim_end_matches("_req_duration")),
        requests,
        throughput_rps: requests as f64 / seconds,
        p50_ms: Some(stat("med")?),
        p95_ms: Some(stat("p(95)")?),
        p99_ms: Some(stat("p(99)")?),
        allowed: Some(allowed),
        denied: Some(denied),
    })
}

/// A Goose JSON report (`--report-file NAME.json`): every request added up. Its raw
/// per-request data keeps microsecond response times and status-code counts, finer than the
/// whole milliseconds of Goose's own percentile table.
pub fn from_goose(json: &Value) -> anyhow::Result<ToolRow> {
    let requests = json
        .pointer("/raw_metrics/requests")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow::anyhow!("no raw_metrics.requests"))?;
    let mut times_us: Vec<(u64, u64)> = Vec::new();
    let (mut total, mut allowed, mut denied) = (0u64, 0u64, 0u64);
    for request in requests.values() {
        let status = |code: &str| {
            request
                .pointer(&format!("/status_code_counts/{code}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        allowed += status("200");
        denied += status("429");
        total += number(request, "/raw_data/counter")? as u64;
        let times = request
            .pointer("/raw_data/times_us")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow::anyhow!("no raw_data.times_us"))?;
        for (us, count) in times {
            times_us.push((us.parse()?, count.as_u64().unwrap_or(0)));
        }
    }
    times_us.sort_unstable();
    let counted: u64 = times_us.iter().map(|(_, count)| count).sum();
    let percentile = |quantile: f64| {
        let rank = (quantile * counted as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        times_us.iter().find_map(|&(us, count)| {
            seen += count;
            (seen >= rank).then_some(us as f64 / 1e3)
        })
    };
    let seconds = number(json, "/raw_metrics/duration")?.max(1.0);
    Ok(ToolRow {
        tool: "goose (http)".to_owned(),
        requests: total,
        throughput_rps: total as f64 / seconds,
        p50_ms: percentile(0.50),
        p95_ms: percentile(0.95),
        p99_ms: percentile(0.99),
        allowed: Some(allowed),
        denied: Some(denied),
    })
}

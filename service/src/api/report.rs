//! Backend reports for adaptive limits on the public APIs: `POST /report` (HTTP) and
//! `RateLimiter.Report` (gRPC). A report moves a factor every client of the resource is
//! limited by, so each call needs a bearer token of role `report` (or `admin`); the tokens are
//! the admin API's (`admin.tokens_file`).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::problem::{Problem, auth_refusal, json_body};
use crate::{
    adaptive::WHOLE,
    auth::{self, AuthError, Principal, Role, Tokens},
    limiter::{BackendReport, Limiter, ReportError},
    store::Backend,
};

/// The longest latency a report may carry: an hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Who may report: the holder of a token of role `report` or `admin`. Without tokens
/// configured nobody may (configuration refuses adaptive rules then).
pub fn authorize(
    tokens: Option<&Tokens>,
    presented: Option<&[u8]>,
) -> Result<Principal, AuthError> {
    let principal = tokens.ok_or(AuthError::Unknown)?.authenticate(presented)?;
    principal.require(Role::Report)?;
    Ok(principal)
}

/// A latency in milliseconds as whole microseconds, or what is wrong with it.
pub fn latency_us(milliseconds: f64) -> Result<u64, String> {
    let micros = milliseconds * 1_000.0;
    if !micros.is_finite() || micros < 0.0 || micros > MAX_LATENCY_US as f64 {
        return Err(format!(
            "latency {milliseconds} ms is out of range; send 0 to {} ms",
            MAX_LATENCY_US / 1_000
        ));
    }
    Ok(micros.round() as u64)
}

/// Each reported resource's factor now (1: limits as configured).
pub fn factors(limiter: &Limiter<Backend>, reports: &[BackendReport<'_>]) -> HashMap<String, f64> {
    let policy = limiter.policy();
    reports
        .iter()
        .filter_map(|report| {
            let controller = policy.controller(report.resource)?;
            Some((
                report.resource.to_owned(),
                controller.factor_ppm() as f64 / WHOLE as f64,
            ))
        })
        .collect()
}

impl From<ReportError> for Problem {
    fn from(err: ReportError) -> Self {
        let field = match err {
            ReportError::NotAdaptive { .. } => "resource",
            ReportError::TooMany { .. } => "reports",
        };
        Problem::bad_request(field, err.to_string())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ReportBody {
    resource: Option<String>,
    latency_ms: Option<f64>,
    failed: Option<bool>,
    reports: Option<Vec<OneReport>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OneReport {
    resource: String,
    latency_ms: f64,
    #[serde(default)]
    failed: bool,
}

const EXAMPLE: &str = r#"{"resource":"api","latency_ms":12.5,"failed":false} or {"reports":[...]}"#;

/// `POST /report`: one report (`resource`, `latency_ms`, `failed`) or many (`reports`).
pub(crate) async fn http_report(
    limiter: &Arc<Limiter<Backend>>,
    tokens: Option<&Tokens>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Problem> {
    if let Err(err) = authorize(tokens, auth::presented(headers)) {
        return Ok(auth_refusal(
            &err,
            "sluice-report",
            "reports need a token of role report (admin.tokens_file)",
        ));
    }
    let body: ReportBody = json_body(body, "report", EXAMPLE)?;
    let listed = match (body.reports, body.resource, body.latency_ms) {
        (Some(reports), None, None) if body.failed.is_none() => reports,
        (None, Some(resource), Some(latency_ms)) => vec![OneReport {
            resource,
            latency_ms,
            failed: body.failed.unwrap_or(false),
        }],
        (Some(_), _, _) => {
            return Err(Problem::bad_request(
                "reports",
                "send either `reports` or one report's `resource` and `latency_ms`, not both",
            ));
        }
        (None, resource, _) => {
            let missing = if resource.is_none() {
                "resource"
            } else {
                "latency_ms"
            };
            return Err(Problem::bad_request(
                missing,
                format!("missing `{missing}`; send JSON like {EXAMPLE}"),
            ));
        }
    };
    let mut reports = Vec::with_capacity(listed.len());
    for (index, one) in listed.iter().enumerate() {
        let latency_us = latency_us(one.latency_ms).map_err(|message| {
            Problem::bad_request("latency_ms", format!("reports[{index}]: {message}"))
        })?;
        reports.push(BackendReport {
            resource: &one.resource,
            latency_us,
            failed: one.failed,
        });
    }
    limiter.report(&reports)?;
    Ok(Json(json!({
        "accepted": reports.len(),
        "factors": factors(limiter, &reports),
    }))
    .into_response())
}

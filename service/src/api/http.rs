//! The public HTTP API: `POST /check`, `GET /status`, plus `/metrics`, `/healthz` and
//! `/readyz`. Resetting a key is an admin call (`crate::admin`), never on this port. Check and status answers carry the IETF `RateLimit-Policy` / `RateLimit`
//! headers, `Retry-After` on 429, and the `X-RateLimit-*` forms gateways still expect.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use prometheus::Histogram;
use serde::Deserialize;
use serde_json::json;

use super::{
    answer::{AcquireAnswer, CheckAnswer, StatusAnswer},
    problem::{PROBLEM_JSON, Problem, json_body},
};
use crate::{
    algorithm::Decision,
    auth::Tokens,
    limiter::{CheckRequest, Lease, Limiter, LimiterError, Outcome, Readiness, Verdict},
    metrics::Api,
    store::Backend,
};

/// The header carrying the client key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// On a 200 from a rule in shadow mode: the limit that would have denied the request.
pub const SHADOW_DENIED_HEADER: &str = "sluice-shadow-denied";

struct HttpState {
    limiter: Arc<Limiter<Backend>>,
    /// Who may report the backend's health (`POST /report`).
    reporters: Option<Tokens>,
    ready: Arc<AtomicBool>,
    check_duration: Histogram,
    status_duration: Histogram,
    report_duration: Histogram,
    acquire_duration: Histogram,
    release_duration: Histogram,
}

/// The router; `ready` turns false when the server starts draining; `reporters` are the
/// tokens `POST /report` takes (the admin API's).
pub fn router(
    limiter: Arc<Limiter<Backend>>,
    ready: Arc<AtomicBool>,
    reporters: Option<Tokens>,
) -> Router {
    let metrics = limiter.metrics();
    let state = Arc::new(HttpState {
        check_duration: metrics.request_duration(Api::Http, "check"),
        status_duration: metrics.request_duration(Api::Http, "status"),
        report_duration: metrics.request_duration(Api::Http, "report"),
        acquire_duration: metrics.request_duration(Api::Http, "acquire"),
        release_duration: metrics.request_duration(Api::Http, "release"),
        reporters,
        limiter,
        ready,
    });
    Router::new()
        .route("/check", post(check))
        .route("/status", get(status))
        .route("/report", post(report))
        .route("/acquire", post(acquire))
        .route("/release", post(release))
        .route("/reset", any(reset_moved))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    resource: Option<String>,
    cost: Option<String>,
    lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    resource: Option<String>,
    cost: Option<u64>,
}

impl HttpState {
    fn problem(&self, err: LimiterError) -> Problem {
        Problem::from(err)
    }

    fn count_invalid(&self, problem: &Problem) {
        if problem.status == StatusCode::BAD_REQUEST {
            self.limiter
                .metrics()
                .invalid_request(Api::Http, problem.field);
        }
    }
}

fn api_key(headers: &HeaderMap) -> Result<&str, Problem> {
    let mut values = headers.get_all(API_KEY_HEADER).iter();
    let value = values.next().ok_or_else(|| {
        Problem::bad_request(
            "key",
            "missing X-API-Key header; send the client identity to limit",
        )
    })?;
    // Two identities in one request: whichever a proxy or this server picked, the other
    // client's quota could be spent or reset. Refuse rather than guess.
    if values.next().is_some() {
        return Err(Problem::bad_request(
            "key",
            "X-API-Key is sent more than once; send exactly one client identity",
        ));
    }
    std::str::from_utf8(value.as_bytes()).map_err(|_| {
        Problem::bad_request("key", "X-API-Key is not valid UTF-8; send a text identity")
    })
}

fn query(query: Result<Query<Params>, QueryRejection>) -> Result<Params, Problem> {
    query
        .map(|Query(params)| params)
        .map_err(|err| Problem::bad_request("query", format!("query string: {err}")))
}

async fn check(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
    body: Bytes,
) -> Response {
    respond(
        &state,
        &state.check_duration,
        check_inner(&state, &headers, params, &body),
    )
    .await
}

/// Runs one handler's work: times it, and answers a problem with its response, counting
/// invalid requests by field.
async fn respond(
    state: &HttpState,
    timer: &Histogram,
    work: impl Future<Output = Result<Response, Problem>>,
) -> Response {
    let started = Instant::now();
    let response = work.await.unwrap_or_else(|problem| {
        state.count_invalid(&problem);
        problem.into_response()
    });
    timer.observe(started.elapsed().as_secs_f64());
    response
}

async fn check_inner(
    state: &HttpState,
    headers: &HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
    body: &[u8],
) -> Result<Response, Problem> {
    let key = api_key(headers)?;
    let params = query(params)?;
    let body: CheckBody = json_body(body, "check", r#"{"resource":"api","cost":1}"#)?;
    let resource = one_resource(params.resource.as_deref(), body.resource.as_deref())?;
    let query_cost = params
        .cost
        .as_deref()
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                Problem::bad_request(
                    "cost",
                    format!("cost `{text}` is not a whole number; send an integer of at least 1"),
                )
            })
        })
        .transpose()?;
    let cost = match (query_cost, body.cost) {
        (Some(query), Some(body)) if query != body => {
            return Err(Problem::bad_request(
                "cost",
                "cost is given in both the query and the body with different values; send it once",
            ));
        }
        (query, body) => body.or(query),
    };
    let verdict = state
        .limiter
        .check(CheckRequest {
            key,
            resource,
            cost,
        })
        .await
        .map_err(|err| state.problem(err))?;
    Ok(verdict_response(&verdict, None))
}

/// The answer to a check (or, with `lease`, to an acquire that granted one).
fn verdict_response(verdict: &Verdict<'_>, lease: Option<Lease>) -> Response {
    let answer = AcquireAnswer {
        check: CheckAnswer::of(verdict),
        lease: lease.map(|lease| lease.id.to_string()),
        lease_ttl_ms: lease.map(|lease| lease.ttl_us as f64 / 1e3),
    };
    let refused = answer.check.problem.is_some();
    let mut headers = rate_limit_headers(verdict, refused);
    if verdict.outcome == Outcome::ShadowDenied {
        headers.insert(
            HeaderName::from_static(SHADOW_DENIED_HEADER),
            HeaderValue::from_str(&verdict.limit().name).expect("limit names are validated"),
        );
    }
    let (status, content_type) = match &answer.check.problem {
        Some(refusal) => (
            StatusCode::from_u16(refusal.status).expect("a refusal's status is 429, 403 or 503"),
            PROBLEM_JSON,
        ),
        None => (StatusCode::OK, "application/json"),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let body = serde_json::to_string(&answer).expect("an answer always serializes");
    (status, headers, body).into_response()
}

/// Seconds, rounded up, so a client that waits this long is never early.
pub fn whole_seconds_up(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// The RateLimit headers for a verdict: one `RateLimit-Policy` and one `RateLimit` item per
/// limit (the draft allows a list). A limit's `t` is the wait until the same request fits
/// under it when it denies (so the deciding limit's matches `Retry-After`), otherwise the time
/// until it is fully restored. `X-RateLimit-*` and `Retry-After` are the deciding limit's.
pub fn rate_limit_headers(verdict: &Verdict<'_>, denied: bool) -> HeaderMap {
    let mut policies = String::new();
    let mut states = String::new();
    push_rate_limit_items(verdict, &mut policies, &mut states);
    let Decision {
        limit,
        remaining,
        reset_after_us,
        retry_after_us,
        ..
    } = verdict.decision;
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        let value = HeaderValue::from_str(&value)
            .expect("header values are ASCII digits and validated names");
        headers.insert(HeaderName::from_static(name), value);
    };
    put("ratelimit-policy", policies);
    put("ratelimit", states);
    put("x-ratelimit-limit", limit.to_string());
    put("x-ratelimit-remaining", remaining.to_string());
    put(
        "x-ratelimit-reset",
        whole_seconds_up(reset_after_us).to_string(),
    );
    if denied {
        put(
            "retry-after",
            whole_seconds_up(retry_after_us).max(1).to_string(),
        );
    }
    headers
}

/// Appends one `RateLimit-Policy` and one `RateLimit` item per limit of `verdict` to the two
/// lists (comma-separated, as the draft allows several).
pub fn push_rate_limit_items(verdict: &Verdict<'_>, policies: &mut String, states: &mut String) {
    for (limit, decision) in verdict.limits() {
        let separator = if policies.is_empty() { "" } else { ", " };
        let window = whole_seconds_up(limit.algorithm.policy_window_us()).max(1);
        let t = if decision.allowed {
            whole_seconds_up(decision.reset_after_us)
        } else {
            whole_seconds_up(decision.retry_after_us).max(1)
        };
        let name = &limit.name;
        let _ = write!(
            policies,
            "{separator}\"{name}\";q={};w={window}",
            decision.limit
        );
        let _ = write!(
            states,
            "{separator}\"{name}\";r={};t={t}",
            decision.remaining
        );
    }
}

/// The resource from the query or the body; both only if they agree. Empty means `default`.
fn one_resource<'a>(query: Option<&'a str>, body: Option<&'a str>) -> Result<&'a str, Problem> {
    match (query, body) {
        (Some(query), Some(body)) if query != body => Err(Problem::bad_request(
            "resource",
            "resource is given in both the query and the body with different values; send it once",
        )),
        (query, body) => Ok(body.or(query).unwrap_or("")),
    }
}

fn key_and_resource(
    headers: &HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<(&str, String), Problem> {
    let key = api_key(headers)?;
    Ok((key, query(params)?.resource.unwrap_or_default()))
}

async fn status(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let work = async {
        let (key, resource) = key_and_resource(&headers, params)?;
        let verdict = state
            .limiter
            .status(key, &resource)
            .await
            .map_err(|err| state.problem(err))?;
        let body = Json(StatusAnswer::of(&verdict));
        Ok((rate_limit_headers(&verdict, false), body).into_response())
    };
    respond(&state, &state.status_duration, work).await
}

async fn report(State(state): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let work =
        super::report::http_report(&state.limiter, state.reporters.as_ref(), &headers, &body);
    respond(&state, &state.report_duration, work).await
}

/// `POST /acquire?resource=R` with `X-API-Key`: a lease of a rule with a concurrency limit,
/// answered like a check plus `lease` and `lease_ttl_ms`.
async fn acquire(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let work = async {
        let (key, resource) = key_and_resource(&headers, params)?;
        let (verdict, lease) = state
            .limiter
            .acquire(CheckRequest {
                key,
                resource: &resource,
                cost: None,
            })
            .await
            .map_err(|err| state.problem(err))?;
        Ok(verdict_response(&verdict, lease))
    };
    respond(&state, &state.acquire_duration, work).await
}

/// `POST /release?resource=R&lease=ID` with `X-API-Key`: ends a lease; `{"released": bool}`.
async fn release(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let work = async {
        let key = api_key(&headers)?;
        let params = query(params)?;
        let lease = params.lease.as_deref().ok_or_else(|| {
            Problem::bad_request("lease", "missing `lease`; send the lease Acquire answered")
        })?;
        let lease =
            super::grpc::lease_id(lease).map_err(|err| Problem::bad_request("lease", err))?;
        let released = state
            .limiter
            .release(key, params.resource.as_deref().unwrap_or(""), lease)
            .await
            .map_err(|err| state.problem(err))?;
        Ok(Json(json!({ "released": released })).into_response())
    };
    respond(&state, &state.release_duration, work).await
}

/// Reset used to be public, which let any client clear any key's quota; say where it went.
async fn reset_moved() -> Response {
    Problem {
        status: StatusCode::NOT_FOUND,
        field: "path",
        detail: "reset is an admin call now: POST /v1/keys/reset on the admin listener (admin.addr) with an admin token; see docs/admin-api.md".to_owned(),
    }
    .into_response()
}

async fn metrics_text(State(state): State<Arc<HttpState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.limiter.render_metrics(),
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match state.limiter.ready() {
        Readiness::Ready => (StatusCode::OK, "ready\n").into_response(),
        Readiness::StoreDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable; rules fail closed\n",
        )
            .into_response(),
        Readiness::Degraded(mode) => (
            StatusCode::OK,
            format!(
                "degraded: store unavailable; answering with failure mode {}\n",
                mode.label()
            ),
        )
            .into_response(),
    }
}

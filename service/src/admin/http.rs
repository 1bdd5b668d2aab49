//! The admin API's JSON endpoints. A client key always travels in the body, never in a URL,
//! so it stays out of access logs.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{KeyAction, change_key, explain_json};
use crate::{
    api::problem::Problem, auth::Principal, limiter::Limiter, metrics::Metrics, store::Backend,
};

type Shared = Arc<Limiter<Backend>>;

/// What any valid token may call.
pub(super) fn read_routes(limiter: Shared) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/config", get(running_config))
        .route("/v1/keys/explain", post(explain))
        .route("/v1/keys/top-denied", get(top_denied))
        .with_state(limiter)
}

/// What changes state: the caller adds the admin-role check around these.
pub(super) fn change_routes(limiter: Shared) -> Router {
    Router::new()
        .route("/v1/keys/reset", post(reset))
        .route("/v1/keys/lift-ban", post(lift_ban))
        .with_state(limiter)
}

/// The (resource, key) an admin call is about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    key: String,
    /// Empty or absent means `default`.
    #[serde(default)]
    resource: String,
}

fn key_body(body: &[u8]) -> Result<KeyBody, Problem> {
    serde_json::from_slice(body).map_err(|err| {
        Problem::bad_request(
            "body",
            format!(r#"body is not a key request ({err}); send JSON like {{"key":"client-42","resource":"api"}}"#),
        )
    })
}

async fn whoami(Extension(principal): Extension<Principal>) -> Json<Value> {
    Json(json!({ "name": principal.name, "role": principal.role.label() }))
}

/// The rules this node decides under now, and which configuration they came from.
async fn running_config(State(limiter): State<Shared>) -> Json<Value> {
    let policy = limiter.policy();
    let version = policy.version();
    let loaded_at = version
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let rules: Vec<Value> = policy.rules().rules().iter().map(rule_json).collect();
    limiter.metrics().admin_request("config", "ok");
    Json(json!({
        "version": version.id,
        "loaded_at_unix_seconds": loaded_at,
        "rules": rules,
    }))
}

pub(super) fn rule_json(rule: &crate::rules::Rule) -> Value {
    let limits: Vec<Value> = rule
        .limits
        .iter()
        .map(|limit| {
            json!({
                "name": limit.name,
                "algorithm": limit.algorithm.name(),
                "limit": limit.algorithm.limit(),
                "policy_window_ms": limit.algorithm.policy_window_us() as f64 / 1e3,
            })
        })
        .collect();
    json!({
        "name": rule.name,
        "resource": rule.resource_label,
        "shadow": rule.shadow,
        "failure_mode": rule.failure_mode.map(|mode| mode.label()),
        "ban": rule.ban.as_ref().map(|ban| json!({
            "after": ban.after,
            "within_ms": ban.within_us as f64 / 1e3,
            "duration_ms": ban.duration_us as f64 / 1e3,
            "factor": ban.factor,
            "max_duration_ms": ban.max_duration_us as f64 / 1e3,
            "scope": ban.scope.label(),
        })),
        "limits": limits,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopParams {
    limit: Option<usize>,
}

/// The keys denied most lately (read role: the answer names client keys).
async fn top_denied(
    State(limiter): State<Shared>,
    params: Result<Query<TopParams>, QueryRejection>,
) -> Response {
    let work = async {
        let Query(params) = params
            .map_err(|_| Problem::bad_request("limit", "the query takes only limit=<1 to 64>"))?;
        let limit = params.limit.unwrap_or(20);
        if !(1..=crate::limiter::TOP_DENIED_CAPACITY).contains(&limit) {
            return Err(Problem::bad_request("limit", "limit must be 1 to 64"));
        }
        let keys: Vec<Value> = limiter
            .top_denied(limit)
            .into_iter()
            .map(|hitter| {
                json!({
                    "key": hitter.key,
                    "resource": hitter.resource,
                    "denials": hitter.count,
                    "overcount_at_most": hitter.error,
                })
            })
            .collect();
        Ok(Json(
            json!({ "window": "the last 1 to 2 minutes", "keys": keys }),
        ))
    };
    answer(limiter.metrics(), "top_denied", work.await)
}

async fn explain(State(limiter): State<Shared>, body: Bytes) -> Response {
    let work = async {
        let body = key_body(&body)?;
        let verdict = limiter.status(&body.key, &body.resource).await?;
        Ok(Json(explain_json(&verdict)))
    };
    answer(limiter.metrics(), "explain", work.await)
}

async fn reset(
    State(limiter): State<Shared>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    key_action(&limiter, &principal, KeyAction::Reset, &body).await
}

async fn lift_ban(
    State(limiter): State<Shared>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    key_action(&limiter, &principal, KeyAction::LiftBan, &body).await
}

async fn key_action(
    limiter: &Shared,
    principal: &Principal,
    action: KeyAction,
    body: &[u8],
) -> Response {
    let work = async {
        let body = key_body(body)?;
        let existed = change_key(limiter, principal, action, &body.key, &body.resource).await?;
        Ok(Json(json!({ "existed": existed })))
    };
    answer(limiter.metrics(), action.label(), work.await)
}

/// The response, counted by `action` and result.
fn answer(metrics: &Metrics, action: &str, result: Result<Json<Value>, Problem>) -> Response {
    match result {
        Ok(body) => {
            metrics.admin_request(action, "ok");
            body.into_response()
        }
        Err(problem) => {
            let result = if problem.status.is_client_error() {
                "invalid"
            } else {
                "error"
            };
            metrics.admin_request(action, result);
            problem.into_response()
        }
    }
}

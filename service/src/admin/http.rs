//! The admin API's JSON endpoints. A client key always travels in the body, never in a URL,
//! so it stays out of access logs.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{explain_json, reset_key};
use crate::{
    api::http::Problem, auth::Principal, limiter::Limiter, metrics::Metrics, store::Backend,
};

type Shared = Arc<Limiter<Backend>>;

/// What any valid token may call.
pub(super) fn read_routes(limiter: Shared) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/keys/explain", post(explain))
        .with_state(limiter)
}

/// What changes state: the caller adds the admin-role check around these.
pub(super) fn change_routes(limiter: Shared) -> Router {
    Router::new()
        .route("/v1/keys/reset", post(reset))
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
    let work = async {
        let body = key_body(&body)?;
        let existed = reset_key(&limiter, &principal, &body.key, &body.resource).await?;
        Ok(Json(json!({ "existed": existed })))
    };
    answer(limiter.metrics(), "reset", work.await)
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

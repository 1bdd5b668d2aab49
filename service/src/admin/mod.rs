//! The admin API: its own listener (`admin.addr`), never the public ports. Every request needs
//! a bearer token ([`crate::auth`]); calls that change state need the admin role, and each one
//! is written to the audit log ([`audit`]). One listener serves both protocols: JSON over HTTP
//! (`http.rs`) and the `sluice.v1.Admin` gRPC service (`grpc.rs`), both thin adapters over the
//! same [`Limiter`].

mod audit;
mod grpc;
mod http;
mod rules;

pub use rules::RulesAdmin;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::header,
    middleware::{self, Next},
    response::Response,
};
use serde_json::json;

use crate::{
    api::{answer::LimitAnswer, problem::auth_refusal},
    auth::{AuthError, Principal, Role, Tokens},
    limiter::{Limiter, LimiterError, Verdict},
    metrics::Metrics,
    store::Backend,
};

/// The admin router: authentication around everything, the admin role around what changes
/// state.
pub fn router(limiter: Arc<Limiter<Backend>>, tokens: Tokens, rules: RulesAdmin) -> Router {
    let metrics = limiter.metrics().clone();
    let read = http::read_routes(limiter.clone()).merge(rules::routes(rules));
    let change = http::change_routes(limiter.clone())
        .merge(grpc::routes(limiter))
        .route_layer(middleware::from_fn_with_state(
            metrics.clone(),
            require_admin,
        ));
    read.merge(change).layer(middleware::from_fn_with_state(
        (Arc::new(tokens), metrics),
        authenticate,
    ))
}

/// What an admin may do to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAction {
    /// Forget its limit state (a ban stays).
    Reset,
    /// Lift its ban (its limit state stays).
    LiftBan,
}

impl KeyAction {
    fn label(self) -> &'static str {
        match self {
            KeyAction::Reset => "reset",
            KeyAction::LiftBan => "lift_ban",
        }
    }
}

/// Does `action` to a key and writes the audit line: the key's state before, and whether
/// there was anything to change. Returns that.
async fn change_key(
    limiter: &Limiter<Backend>,
    who: &Principal,
    action: KeyAction,
    key: &str,
    resource: &str,
) -> Result<bool, LimiterError> {
    let before = explain_json(&limiter.status(key, resource).await?);
    let changed = match action {
        KeyAction::Reset => limiter.reset(key, resource).await?,
        KeyAction::LiftBan => limiter.lift_ban(key, resource).await?,
    };
    let resource = before["resource"].as_str().unwrap_or(resource);
    audit::key_change(
        who,
        action.label(),
        resource,
        key,
        &before,
        &json!({ "existed": changed }),
    );
    Ok(changed)
}

/// Which rule and limits apply to a key, its state under each, and its ban.
fn explain_json(verdict: &Verdict<'_>) -> serde_json::Value {
    let rule = verdict.rule();
    json!({
        "resource": verdict.resource,
        "rule": rule.name,
        "shadow": rule.shadow,
        "failure_mode": rule.failure_mode.map(|mode| mode.label()),
        "decision": verdict.outcome.label(),
        "banned_for_ms": verdict.decisions.banned_for_us().map(|us| us as f64 / 1e3),
        "limits": LimitAnswer::list(verdict),
    })
}

async fn authenticate(
    State((tokens, metrics)): State<(Arc<Tokens>, Metrics)>,
    mut request: Request,
    next: Next,
) -> Response {
    match tokens.authenticate(crate::auth::presented(request.headers())) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => {
            metrics.admin_refused(refusal_label(&err));
            refuse(&request, &err)
        }
    }
}

async fn require_admin(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let principal = request
        .extensions()
        .get::<Principal>()
        .expect("authenticate runs first");
    match principal.require(Role::Admin) {
        Ok(()) => next.run(request).await,
        Err(err) => {
            metrics.admin_refused(refusal_label(&err));
            refuse(&request, &err)
        }
    }
}

fn refusal_label(err: &AuthError) -> &'static str {
    match err {
        AuthError::Missing | AuthError::Unknown => "unauthenticated",
        AuthError::Forbidden { .. } => "forbidden",
    }
}

/// 401 or 403, as problem JSON, or as the gRPC status a gRPC client understands.
fn refuse(request: &Request, err: &AuthError) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let status = if matches!(err, AuthError::Forbidden { .. }) {
            tonic::Status::permission_denied(err.to_string())
        } else {
            tonic::Status::unauthenticated(err.to_string())
        };
        return status.into_http::<axum::body::Body>();
    }
    auth_refusal(err, "sluice-admin", "")
}

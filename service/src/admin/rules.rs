//! The rules endpoints: read the rules a node runs and, for a fleet whose rules are central
//! ([`crate::central`]), replace them: validated first against this node's settings, answered
//! with the difference, `dry_run` to only validate, `if_version` to refuse a lost update. A
//! node whose rules come from its own file says so: edit the file (it reloads by itself).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{audit, http::rule_json};
use crate::{
    api::problem::Problem,
    auth::{Principal, Role},
    central::{CentralError, CentralRules},
    config::{Config, ConfigError},
    limiter::Limiter,
    rules::RuleSet,
    store::Backend,
};

/// What the rules endpoints work with: the limiter (the rules running now), this node's own
/// settings (a new document is validated against them), and the central document, if any.
#[derive(Clone)]
pub struct RulesAdmin {
    pub limiter: Arc<Limiter<Backend>>,
    pub config: Arc<Config>,
    pub central: Option<CentralRules>,
}

/// `GET` (read role) and `PUT` (admin role, checked here: one path, two roles), and the
/// per-key overrides (admin role), which edit the same document.
pub(super) fn routes(rules: RulesAdmin) -> Router {
    Router::new()
        .route("/v1/rules", get(read).put(replace))
        .route(
            "/v1/overrides",
            axum::routing::post(set_override).delete(remove_override),
        )
        .with_state(rules)
}

async fn read(State(rules): State<RulesAdmin>) -> Response {
    let policy = rules.limiter.policy();
    let running: Vec<Value> = policy.rules().rules().iter().map(rule_json).collect();
    let Some(central) = &rules.central else {
        rules.limiter.metrics().admin_request("rules", "ok");
        return Json(json!({
            "source": "file",
            "config_version": policy.version().id,
            "rules": running,
        }))
        .into_response();
    };
    match central.read().await {
        Ok(document) => {
            rules.limiter.metrics().admin_request("rules", "ok");
            Json(json!({
                "source": "redis",
                "config_version": policy.version().id,
                "document": document.map(|document| json!({
                    "version": document.version,
                    "updated_by": document.updated_by,
                    "updated_at_ms": document.updated_at_ms,
                    "text": document.text,
                })),
                "rules": running,
            }))
            .into_response()
        }
        Err(err) => failed(&rules, "rules", err),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceParams {
    #[serde(default)]
    dry_run: bool,
    if_version: Option<u64>,
}

async fn replace(
    State(rules): State<RulesAdmin>,
    Extension(who): Extension<Principal>,
    params: Result<Query<ReplaceParams>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let metrics = rules.limiter.metrics();
    let central = match admin_with_central(&rules, &who, "rules_replace") {
        Ok(central) => central,
        Err(refused) => return refused.into_response(),
    };
    let Ok(Query(params)) = params else {
        metrics.admin_request("rules_replace", "invalid");
        return Problem::bad_request(
            "query",
            "the query takes only dry_run=true|false and if_version=<document version>",
        )
        .into_response();
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        metrics.admin_request("rules_replace", "invalid");
        return Problem::bad_request("body", "the body must be a UTF-8 TOML rules document")
            .into_response();
    };
    apply(&rules, central, &who, text, params, "rules_replace").await
}

/// The admin role and central rules, or the answer refusing the call.
fn admin_with_central<'a>(
    rules: &'a RulesAdmin,
    who: &Principal,
    action: &str,
) -> Result<&'a CentralRules, Problem> {
    let metrics = rules.limiter.metrics();
    if let Err(err) = who.require(Role::Admin) {
        metrics.admin_refused("forbidden");
        return Err(Problem {
            status: StatusCode::FORBIDDEN,
            field: "authorization",
            detail: err.to_string(),
        });
    }
    rules.central.as_ref().ok_or_else(|| {
        metrics.admin_request(action, "invalid");
        Problem {
            status: StatusCode::CONFLICT,
            field: "rules_source",
            detail: "this node's rules come from its config file (rules_source.kind = \"file\"): edit the file and it reloads; changing rules through the API needs rules_source.kind = \"redis\"".into(),
        }
    })
}

/// Validates `text` against this node's settings, answers the difference, and (unless a dry
/// run) writes it as the next version of the central document.
async fn apply(
    rules: &RulesAdmin,
    central: &CentralRules,
    who: &Principal,
    text: &str,
    params: ReplaceParams,
    action: &str,
) -> Response {
    let metrics = rules.limiter.metrics();
    let next = match rules.config.with_rules(text, "the request body") {
        Ok(next) => next,
        Err(err) => {
            metrics.admin_request(action, "invalid");
            return invalid(&err);
        }
    };
    let running = rules.limiter.policy();
    let diff = diff(running.rules(), &next.rules);
    if params.dry_run {
        metrics.admin_request(action, "ok");
        return Json(json!({ "dry_run": true, "valid": true, "diff": diff })).into_response();
    }
    match central.write(text, params.if_version, &who.name).await {
        Ok(version) => {
            metrics.admin_request(action, "ok");
            audit::rules_change(who, &running.version().id, &next.version, version, &diff);
            Json(json!({
                "dry_run": false,
                "version": version,
                "config_version": next.version,
                "diff": diff,
            }))
            .into_response()
        }
        Err(err) => failed(rules, action, err),
    }
}

/// One key's override of a resource's rule: its limits, as a `[[rules.<resource>.overrides]]`
/// entry is written (without `key`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    resource: String,
    key: String,
    /// Absent in a removal.
    rule: Option<serde_json::Map<String, Value>>,
}

/// Adds (or replaces) the override of `key` on `resource` in the central document.
async fn set_override(
    State(rules): State<RulesAdmin>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Response {
    edit_override(&rules, &who, &body, true).await
}

/// Removes the override of `key` on `resource` from the central document.
async fn remove_override(
    State(rules): State<RulesAdmin>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Response {
    edit_override(&rules, &who, &body, false).await
}

async fn edit_override(rules: &RulesAdmin, who: &Principal, body: &[u8], set: bool) -> Response {
    let action = if set {
        "override_set"
    } else {
        "override_remove"
    };
    let metrics = rules.limiter.metrics();
    let central = match admin_with_central(rules, who, action) {
        Ok(central) => central,
        Err(refused) => return refused.into_response(),
    };
    let edited = async {
        let body: OverrideBody = serde_json::from_slice(body).map_err(|err| {
            Problem::bad_request(
                "body",
                format!(r#"not an override ({err}); send {{"resource":"login","key":"k","rule":{{"algorithm":"fixed_window","limit":100,"window":"1m"}}}}"#),
            )
        })?;
        let document = central.read().await.map_err(|err| Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            field: "rules",
            detail: err.to_string(),
        })?;
        let Some(document) = document else {
            return Err(Problem {
                status: StatusCode::CONFLICT,
                field: "rules",
                detail: "there is no central rules document yet; PUT /v1/rules first".into(),
            });
        };
        let text = with_override(&document.text, &body, set)?;
        Ok((text, document.version))
    };
    match edited.await {
        Ok((text, version)) => {
            let params = ReplaceParams {
                dry_run: false,
                if_version: Some(version),
            };
            apply(rules, central, who, &text, params, action).await
        }
        Err(problem) => {
            metrics.admin_request(action, "invalid");
            problem.into_response()
        }
    }
}

/// `text` with the override of `body.key` on `body.resource` replaced by `body.rule` (when
/// `set`) or removed.
fn with_override(text: &str, body: &OverrideBody, set: bool) -> Result<String, Problem> {
    let mut document: toml::Table = text.parse().map_err(|err| Problem {
        status: StatusCode::CONFLICT,
        field: "rules",
        detail: format!("the central document does not parse ({err}); PUT /v1/rules to repair it"),
    })?;
    let rule = document
        .get_mut("rules")
        .and_then(toml::Value::as_table_mut)
        .and_then(|rules| rules.get_mut(&body.resource))
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| {
            Problem::bad_request(
                "resource",
                format!(
                    "no [rules.{}] in the central document; overrides belong to a resource's rule",
                    body.resource
                ),
            )
        })?;
    let overrides = rule
        .entry("overrides")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let Some(list) = overrides.as_array_mut() else {
        return Err(Problem::bad_request(
            "rules",
            "this rule's overrides are not a list",
        ));
    };
    let before = list.len();
    list.retain(|entry| entry.get("key").and_then(toml::Value::as_str) != Some(&body.key));
    if set {
        let fields = body
            .rule
            .clone()
            .ok_or_else(|| Problem::bad_request("rule", "give the override's limits in `rule`"))?;
        let mut entry: toml::Table =
            serde_json::from_value(Value::Object(fields)).map_err(|err| {
                Problem::bad_request(
                    "rule",
                    format!("the override's fields cannot be written as TOML ({err})"),
                )
            })?;
        entry.insert("key".into(), toml::Value::String(body.key.clone()));
        list.push(toml::Value::Table(entry));
    } else if list.len() == before {
        return Err(Problem {
            status: StatusCode::NOT_FOUND,
            field: "key",
            detail: format!("no override of `{}` on `{}`", body.key, body.resource),
        });
    }
    toml::to_string(&document).map_err(|err| Problem {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        field: "rules",
        detail: format!("cannot write the document back ({err})"),
    })
}

fn failed(rules: &RulesAdmin, action: &str, err: CentralError) -> Response {
    let status = match err {
        CentralError::Conflict { .. } => StatusCode::CONFLICT,
        CentralError::Redis { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    let result = if status == StatusCode::CONFLICT {
        "invalid"
    } else {
        "error"
    };
    rules.limiter.metrics().admin_request(action, result);
    Problem {
        status,
        field: "rules",
        detail: err.to_string(),
    }
    .into_response()
}

/// 400 with every problem of the document, each with its field path.
fn invalid(err: &ConfigError) -> Response {
    let issues: Vec<Value> = err
        .issues()
        .iter()
        .map(|issue| json!({ "path": issue.path, "message": issue.message }))
        .collect();
    (
        StatusCode::BAD_REQUEST,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        json!({
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "field": "body",
            "detail": err.to_string(),
            "issues": issues,
        })
        .to_string(),
    )
        .into_response()
}

/// Rules added, removed and changed (by name), each changed one before and after.
fn diff(before: &RuleSet, after: &RuleSet) -> Value {
    let by_name = |set: &RuleSet| -> BTreeMap<String, Value> {
        set.rules()
            .iter()
            .map(|rule| (rule.name.clone(), rule_json(rule)))
            .collect()
    };
    let (old, new) = (by_name(before), by_name(after));
    let added: Vec<&String> = new.keys().filter(|name| !old.contains_key(*name)).collect();
    let removed: Vec<&String> = old.keys().filter(|name| !new.contains_key(*name)).collect();
    let changed: Vec<Value> = new
        .iter()
        .filter_map(|(name, rule)| {
            let was = old.get(name)?;
            (was != rule).then(|| json!({ "name": name, "before": was, "after": rule }))
        })
        .collect();
    json!({ "added": added, "removed": removed, "changed": changed })
}

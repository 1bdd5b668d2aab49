//! The audit log: one line per change made through the admin API, saying who made it, what it
//! was, and the state before and after. Lines go to the `sluice::audit` tracing target, so an
//! operator can route them apart (`RUST_LOG=sluice::audit=info`). A client key appears as its
//! short hash ([`crate::decision_log::key_hash`]), as in every other log line.

use crate::{auth::Principal, decision_log::key_hash};

/// One change: `action` by `who` on `resource` / `key`, with `before` and `after` as JSON.
pub fn key_change(
    who: &Principal,
    action: &str,
    resource: &str,
    key: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
) {
    tracing::info!(
        target: "sluice::audit",
        who = %who.name,
        role = who.role.label(),
        action,
        resource,
        key_hash = %key_hash(key),
        %before,
        %after,
        "admin change"
    );
}

/// A new central rules document: who wrote it, the configuration versions before and after,
/// the document's version, and what changed.
pub fn rules_change(
    who: &Principal,
    before: &str,
    after: &str,
    document_version: u64,
    diff: &serde_json::Value,
) {
    tracing::info!(
        target: "sluice::audit",
        who = %who.name,
        role = who.role.label(),
        action = "rules",
        document_version,
        before,
        after,
        %diff,
        "admin change"
    );
}

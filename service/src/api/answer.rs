//! The JSON bodies the HTTP API answers a check and a status read with, as typed structs: one
//! place says which fields a client gets, and a field cannot go missing from one path only.
//! A refusal carries the RFC 9457 problem fields beside the decision's own.

use serde::Serialize;

use crate::{
    adaptive::WHOLE,
    limiter::{Outcome, Verdict},
};

/// The problem type of a quota denial (IETF RateLimit headers draft).
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// The problem type of a denial only an adaptive limit's reduced factor caused.
pub const TEMPORARY_REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";
/// The problem type of a banned key.
pub const ABNORMAL_USAGE: &str =
    "https://iana.org/assignments/http-problem-types#abnormal-usage-detected";

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// A check's answer.
#[derive(Debug, Serialize)]
pub struct CheckAnswer<'a> {
    /// Present when the check was refused (429 or 403).
    #[serde(flatten)]
    pub problem: Option<Refusal<'a>>,
    /// `allowed`, `denied`, `shadow_denied` or `banned`.
    pub decision: &'static str,
    /// Whether the request may proceed (a shadowed denial may).
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_ms: f64,
    pub retry_after_ms: f64,
    pub rule: &'a str,
    pub resource: &'a str,
    pub algorithm: &'static str,
    pub policy_window_ms: f64,
    /// The limit that decided: the denying one with the longest wait, else the one with the
    /// least left.
    pub decided_by: &'a str,
    pub limits: Vec<LimitAnswer<'a>>,
    /// The adaptive factor the rule's limits are scaled by now (1: as configured).
    pub capacity_factor: f64,
    /// Why a failure mode answered (the store was unavailable, full), why a key is banned, or
    /// that a reduced adaptive factor denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The problem document fields of a refused check.
#[derive(Debug, Serialize)]
pub struct Refusal<'a> {
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    pub title: &'static str,
    pub status: u16,
    /// The limits that denied (a quota denial only).
    #[serde(rename = "violated-policies", skip_serializing_if = "Vec::is_empty")]
    pub violated_policies: Vec<&'a str>,
}

/// One limit of the verdict's rule with its answer.
#[derive(Debug, Serialize)]
pub struct LimitAnswer<'a> {
    pub name: &'a str,
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_ms: f64,
    pub retry_after_ms: f64,
    pub algorithm: &'static str,
    pub policy_window_ms: f64,
}

/// An Acquire's answer: the check's, and the lease when one was granted.
#[derive(Debug, Serialize)]
pub struct AcquireAnswer<'a> {
    #[serde(flatten)]
    pub check: CheckAnswer<'a>,
    /// Release it when the work is done (`POST /release?lease=...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// How long the lease lasts if never released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ttl_ms: Option<f64>,
}

/// A status read's answer: the deciding limit's use, and every limit's.
#[derive(Debug, Serialize)]
pub struct StatusAnswer<'a> {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    pub reset_after_ms: f64,
    pub rule: &'a str,
    pub resource: &'a str,
    pub limits: Vec<LimitAnswer<'a>>,
}

impl<'a> LimitAnswer<'a> {
    /// Every limit of `verdict`'s rule, in the rule's order.
    pub fn list(verdict: &'a Verdict<'_>) -> Vec<Self> {
        verdict
            .limits()
            .map(|(limit, decision)| LimitAnswer {
                name: &limit.name,
                allowed: decision.allowed,
                limit: decision.limit,
                remaining: decision.remaining,
                reset_after_ms: ms(decision.reset_after_us),
                retry_after_ms: ms(decision.retry_after_us),
                algorithm: limit.algorithm.name(),
                policy_window_ms: ms(limit.algorithm.policy_window_us()),
            })
            .collect()
    }
}

impl<'a> CheckAnswer<'a> {
    pub fn of(verdict: &'a Verdict<'a>) -> Self {
        let decision = &verdict.decision;
        let violated = || {
            verdict
                .limits()
                .filter(|(_, decision)| !decision.allowed)
                .map(|(limit, _)| limit.name.as_str())
                .collect()
        };
        let problem = match verdict.outcome {
            Outcome::Denied if verdict.reduced_capacity => Some(Refusal {
                problem_type: TEMPORARY_REDUCED_CAPACITY,
                title: "Request refused: the backend is overloaded, so its limit is reduced for now",
                status: 503,
                violated_policies: violated(),
            }),
            Outcome::Denied => Some(Refusal {
                problem_type: QUOTA_EXCEEDED,
                title: "Request cannot be satisfied as assigned quota has been exceeded",
                status: 429,
                violated_policies: violated(),
            }),
            Outcome::Banned => Some(Refusal {
                problem_type: ABNORMAL_USAGE,
                title: "Request refused: the client key is banned for repeatedly exceeding its quota",
                status: 403,
                violated_policies: Vec::new(),
            }),
            _ => None,
        };
        CheckAnswer {
            problem,
            decision: verdict.outcome.label(),
            allowed: verdict.outcome.proceeds(),
            limit: decision.limit,
            remaining: decision.remaining,
            reset_after_ms: ms(decision.reset_after_us),
            retry_after_ms: ms(decision.retry_after_us),
            rule: &verdict.rule().name,
            resource: verdict.resource,
            algorithm: verdict.limit().algorithm.name(),
            policy_window_ms: ms(verdict.policy_window_us()),
            decided_by: &verdict.limit().name,
            limits: LimitAnswer::list(verdict),
            capacity_factor: verdict.factor_ppm as f64 / WHOLE as f64,
            reason: verdict.reason,
        }
    }
}

impl<'a> StatusAnswer<'a> {
    pub fn of(verdict: &'a Verdict<'a>) -> Self {
        let decision = &verdict.decision;
        StatusAnswer {
            limit: decision.limit,
            used: decision.limit - decision.remaining,
            remaining: decision.remaining,
            reset_after_ms: ms(decision.reset_after_us),
            rule: &verdict.rule().name,
            resource: verdict.resource,
            limits: LimitAnswer::list(verdict),
        }
    }
}

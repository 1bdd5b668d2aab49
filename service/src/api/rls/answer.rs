//! One descriptor's answer and the RateLimitResponse made of them: codes, the limit each
//! reports, remaining, reset, and the headers a gateway adds.

use sluice_proto::envoy::{
    config::core::v3::HeaderValue,
    service::ratelimit::v3::{
        RateLimitResponse,
        rate_limit_response::{Code, DescriptorStatus, RateLimit},
    },
};

use crate::{
    algorithm::{MICROS_PER_SEC, NEVER},
    config::EnvoySettings,
    limiter::{Outcome, Verdict},
    rls::Unit,
    rules::Rule,
};

/// One descriptor's answer, before it becomes a [`DescriptorStatus`].
pub(super) struct Answer {
    pub code: Code,
    pub current_limit: Option<RateLimit>,
    pub remaining: u32,
    /// Until the limit is restored (allowed) or the same request fits (over the limit).
    pub reset_us: Option<u64>,
    pub quota_mode: bool,
    /// `RateLimit-Policy` and `RateLimit` items of the rule that decided.
    pub items: Option<(String, String)>,
}

impl Answer {
    pub(super) fn unlimited_or_unmatched(remaining: u32) -> Self {
        Self {
            code: Code::Ok,
            current_limit: None,
            remaining,
            reset_us: None,
            quota_mode: false,
            items: None,
        }
    }
}

/// The response of a request whose descriptors were answered `answers`, in order: over the
/// limit when any descriptor is (quota-mode ones only when all of them are), with the headers
/// `envoy.headers` asks for.
pub(super) fn response(settings: &EnvoySettings, answers: Vec<Answer>) -> RateLimitResponse {
    let over = |answer: &&Answer| answer.code == Code::OverLimit;
    let rate_limited = answers.iter().filter(|a| !a.quota_mode).any(|a| over(&a));
    let quotas = answers.iter().filter(|a| a.quota_mode).count();
    let quotas_over = answers.iter().filter(|a| a.quota_mode).filter(over).count();
    let overall = if rate_limited || (quotas > 0 && quotas == quotas_over) {
        Code::OverLimit
    } else {
        Code::Ok
    };
    let headers = headers(settings, &answers);
    RateLimitResponse {
        overall_code: overall as i32,
        statuses: answers
            .into_iter()
            .map(|answer| DescriptorStatus {
                code: answer.code as i32,
                current_limit: answer.current_limit,
                limit_remaining: answer.remaining,
                duration_until_reset: answer.reset_us.map(duration),
                quota: None,
            })
            .collect(),
        response_headers_to_add: headers,
        ..RateLimitResponse::default()
    }
}

/// The headers `envoy.headers` asks for. The `X-RateLimit-*` ones describe one
/// descriptor, as the reference picks it: the last one over its limit, else the one with
/// the least remaining.
fn headers(settings: &EnvoySettings, answers: &[Answer]) -> Vec<HeaderValue> {
    let mut headers = Vec::new();
    let header = |key: &str, value: String| HeaderValue {
        key: key.to_owned(),
        value,
        raw_value: Vec::new(),
    };
    if settings.headers.draft03() {
        let mut chosen: Option<&Answer> = None;
        for answer in answers.iter().filter(|a| a.current_limit.is_some()) {
            let over = answer.code == Code::OverLimit && !answer.quota_mode;
            if over
                || chosen
                    .is_none_or(|c| c.code != Code::OverLimit && answer.remaining < c.remaining)
            {
                chosen = Some(answer);
            }
        }
        if let Some(answer) = chosen {
            let limit = answer
                .current_limit
                .as_ref()
                .map_or(0, |l| l.requests_per_unit);
            headers.push(header("x-ratelimit-limit", limit.to_string()));
            headers.push(header(
                "x-ratelimit-remaining",
                answer.remaining.to_string(),
            ));
            let reset = crate::api::http::whole_seconds_up(answer.reset_us.unwrap_or(0));
            headers.push(header("x-ratelimit-reset", reset.to_string()));
        }
    }
    if settings.headers.draft10() {
        let (mut policies, mut states) = (String::new(), String::new());
        for (policy, state) in answers.iter().filter_map(|a| a.items.as_ref()) {
            for (list, item) in [(&mut policies, policy), (&mut states, state)] {
                if !list.is_empty() {
                    list.push_str(", ");
                }
                list.push_str(item);
            }
        }
        if !policies.is_empty() {
            headers.push(header("ratelimit-policy", policies));
            headers.push(header("ratelimit", states));
        }
    }
    headers
}

pub(super) fn code_of(outcome: Outcome) -> Code {
    if outcome.proceeds() {
        Code::Ok
    } else {
        Code::OverLimit
    }
}

pub(super) fn clamp(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

pub(super) fn current_limit(requests_per_unit: u32, unit: Unit, name: &str) -> RateLimit {
    RateLimit {
        name: name.to_owned(),
        requests_per_unit,
        unit: unit as i32,
    }
}

/// The wait the status reports: until the same request fits when over the limit, else until
/// the limit is fully restored.
pub(super) fn reset_us(verdict: &Verdict<'_>) -> u64 {
    let decision = &verdict.decision;
    if decision.allowed || decision.retry_after_us == NEVER {
        decision.reset_after_us
    } else {
        decision.retry_after_us
    }
}

pub(super) fn items(verdict: &Verdict<'_>) -> (String, String) {
    let (mut policies, mut states) = (String::new(), String::new());
    crate::api::http::push_rate_limit_items(verdict, &mut policies, &mut states);
    (policies, states)
}

fn duration(us: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (us / MICROS_PER_SEC) as i64,
        nanos: ((us % MICROS_PER_SEC) * 1_000) as i32,
    }
}

/// A limit of zero: every request over it, until the end of the unit's aligned window.
pub(super) fn blocked(name: String, unit: Unit, quota_mode: bool) -> Answer {
    let unit_us = unit.seconds() * MICROS_PER_SEC;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64);
    Answer {
        code: Code::OverLimit,
        current_limit: Some(current_limit(0, unit, &name)),
        remaining: 0,
        reset_us: Some(unit_us - now_us % unit_us),
        quota_mode,
        items: None,
    }
}

/// More hits than the limit holds: over the limit, nothing spent; the same request never
/// fits, so the reset reported is the limit's whole window.
pub(super) fn too_many_hits(limit: u64, unit: Unit, name: String, window_us: u64) -> Answer {
    Answer {
        code: Code::OverLimit,
        current_limit: Some(current_limit(clamp(limit), unit, &name)),
        remaining: 0,
        reset_us: Some(window_us),
        quota_mode: false,
        items: None,
    }
}

/// The longest window over which `rule`'s limits are restored.
pub(super) fn longest_window_us(rule: &Rule) -> u64 {
    rule.limits
        .iter()
        .map(|limit| limit.algorithm.policy_window_us())
        .max()
        .unwrap_or(0)
}

//! The service's HTTP API on the generator's HTTP/1.1 client ([`super::http1`]): a check is a
//! POST made of parts prepared before the run, its JSON answer read in place into an
//! [`Answer`]. [`exchange`] also carries the admin calls and scraping, so the generator has
//! one HTTP client.

use std::fmt;

use bytes::Bytes;
use hyper::Uri;
use serde::Deserialize;

use super::{http1, socket::Dialer};
use crate::wire::{AlgorithmKind, Answer, ErrorKind, LimitBound, LimitBounds};

/// Sends the request made of `parts` on the worker's connection, dialed if it has none (or
/// the server closed it while idle), and returns the status and body. A connection that failed
/// or will not be kept is dropped, so the next request redials.
pub async fn exchange(
    slot: &mut Option<http1::Connection>,
    dialer: &Dialer,
    parts: &[&[u8]],
) -> Result<(u16, Bytes), ErrorKind> {
    if slot.as_ref().is_some_and(http1::Connection::closed) {
        *slot = None;
    }
    let connection = match slot {
        Some(connection) => connection,
        None => slot.insert(http1::Connection::dial(dialer).await?),
    };
    let result = connection.exchange(parts).await;
    if !result.as_ref().is_ok_and(|response| response.keep_alive) {
        *slot = None;
    }
    result.map(|response| (response.status, response.body))
}

/// `METHOD TARGET HTTP/1.1\r\n`, once `target` is checked to be a valid request target.
pub(super) fn request_line(
    method: &str,
    target: &str,
) -> Result<Bytes, hyper::http::uri::InvalidUri> {
    let target: Uri = target.parse()?;
    Ok(format!("{method} {target} HTTP/1.1\r\n").into())
}

pub(super) const HEALTH_LINE: &[u8] = b"GET /healthz HTTP/1.1\r\n";

/// The parts of a POST with no body that carries `key` as its API key.
pub(super) fn keyed_post<'a>(line: &'a [u8], host: &'a [u8], key: &'a [u8]) -> [&'a [u8]; 5] {
    [
        line,
        host,
        b"x-api-key: ",
        key,
        b"\r\ncontent-length: 0\r\n\r\n",
    ]
}

/// Reads a check's answer: 200 allowed, 429 denied, 403 banned, 503 denied by a reduced
/// adaptive limit (a problem document carrying the decision; any other 503 is the service
/// unavailable).
pub(super) fn check_answer(status: u16, body: &[u8]) -> Result<Answer, ErrorKind> {
    match status {
        200 | 403 | 429 | 503 => {}
        400 => return Err(ErrorKind::InvalidArgument),
        _ => return Err(ErrorKind::Other),
    }
    let answer: HttpAnswer<'_> = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(_) if status == 503 => return Err(ErrorKind::Unavailable),
        Err(_) => return Err(ErrorKind::Other),
    };
    let reduced_capacity = answer
        .problem_type
        .is_some_and(|kind| kind.ends_with("#temporary-reduced-capacity"));
    if status == 503 && !reduced_capacity {
        return Err(ErrorKind::Unavailable);
    }
    let banned = answer.decision == Some("banned");
    Ok(Answer {
        allowed: answer.allowed,
        banned,
        shadow_denied: answer.decision == Some("shadow_denied"),
        limit: answer.limit,
        remaining: answer.remaining,
        reset_after_us: (answer.reset_after_ms * 1e3) as u64,
        retry_after_us: (answer.retry_after_ms * 1e3) as u64,
        policy_window_us: (answer.policy_window_ms * 1e3) as u64,
        algorithm: answer.algorithm.and_then(AlgorithmKind::parse),
        // A ban's and a reduced factor's reasons say why they refused; only other reasons
        // mean a failure mode.
        failed_over: answer.reason.is_some() && !banned && !reduced_capacity,
        limits: answer
            .limits
            .map_or_else(LimitBounds::default, |list| list.0),
    })
}

#[derive(Deserialize)]
struct HttpAnswer<'a> {
    #[serde(default, rename = "type")]
    problem_type: Option<&'a str>,
    allowed: bool,
    #[serde(default)]
    decision: Option<&'a str>,
    limit: u64,
    remaining: u64,
    reset_after_ms: f64,
    retry_after_ms: f64,
    #[serde(default)]
    policy_window_ms: f64,
    #[serde(default)]
    algorithm: Option<&'a str>,
    #[serde(default)]
    reason: Option<&'a str>,
    #[serde(default)]
    limits: Option<HttpLimits>,
}

/// Sluice's `limits` list, read element by element into [`LimitBounds`]. Reading each element
/// as a struct of its own never makes serde_json skip a nested value, which would push frames
/// onto a scratch buffer a fresh deserializer allocates once per response.
struct HttpLimits(LimitBounds);

/// The fields of one `limits` element the ledger reads.
#[derive(Deserialize)]
struct HttpLimit<'a> {
    limit: u64,
    #[serde(default)]
    policy_window_ms: f64,
    #[serde(default, borrow)]
    algorithm: Option<&'a str>,
}

impl<'de> Deserialize<'de> for HttpLimits {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements;
        impl<'de> serde::de::Visitor<'de> for Elements {
            type Value = HttpLimits;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of limits")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut elements: A,
            ) -> Result<HttpLimits, A::Error> {
                let mut bounds = LimitBounds::default();
                while let Some(limit) = elements.next_element::<HttpLimit<'de>>()? {
                    bounds.push(
                        limit
                            .algorithm
                            .and_then(AlgorithmKind::parse)
                            .map(|algorithm| LimitBound {
                                algorithm,
                                limit: limit.limit,
                                window_us: (limit.policy_window_ms * 1e3) as u64,
                            }),
                    );
                }
                Ok(HttpLimits(bounds))
            }
        }
        deserializer.deserialize_seq(Elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_is_a_denial_only_when_it_says_reduced_capacity() {
        let reduced = br#"{"type":"https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
            "allowed":false,"decision":"denied","limit":20,"remaining":0,"reset_after_ms":1.0,
            "retry_after_ms":50.0,"reason":"backend overloaded: the limit is reduced until it recovers"}"#;
        let answer = check_answer(503, reduced).unwrap();
        assert!(
            !answer.allowed && !answer.failed_over,
            "a denial, not a failover"
        );
        let store_down =
            br#"{"type":"about:blank","status":503,"detail":"store unavailable","field":"store"}"#;
        assert_eq!(
            check_answer(503, store_down).unwrap_err(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            check_answer(503, b"overloaded").unwrap_err(),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn an_http_answer_lists_a_stacked_rules_limits() {
        let body = br#"{"allowed":false,"decision":"denied","limit":10,"remaining":0,
            "reset_after_ms":5.0,"retry_after_ms":100.0,"limits":[
            {"name":"burst","allowed":false,"limit":10,"remaining":0,"policy_window_ms":1000.0,"algorithm":"gcra"},
            {"name":"hour","allowed":true,"limit":500,"remaining":9,"policy_window_ms":3600000.0,"algorithm":"sliding_window_log"}]}"#;
        let answer: HttpAnswer<'_> = serde_json::from_slice(body).unwrap();
        let listed: Vec<LimitBound> = answer.limits.unwrap().0.stacked().unwrap().collect();
        assert_eq!(
            listed,
            [
                LimitBound::new(AlgorithmKind::Gcra, 10, 1_000_000),
                LimitBound::new(AlgorithmKind::SlidingWindowLog, 500, 3_600_000_000),
            ]
        );
    }
}

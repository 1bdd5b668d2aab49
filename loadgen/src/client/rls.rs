//! Envoy's rate limit service (RLS v3) as a target: any server of
//! `envoy.service.ratelimit.v3.RateLimitService` (Sluice, envoyproxy/ratelimit, another), over
//! the generator's HTTP/2 client. A run's request is a template ([`RlsTemplate`]): a domain
//! and descriptors, one entry's value holding `{key}`, where each key of the run's key space
//! goes. The answer is read for that keyed descriptor: its code, and the limit the server
//! reports in `current_limit`, which the ledger bounds admissions by (a fixed window of
//! `requests_per_unit` per unit, the reference's algorithm and the loosest bound of any).

use std::fmt;

use bytes::Bytes;
use prost::Message as _;
use sluice_proto::envoy::{
    extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    service::ratelimit::v3::RateLimitRequest,
};

use sluice::rls::Unit;

use super::{
    http2,
    protobuf::{duration_us, take_length_delimited},
};
use crate::wire::{AlgorithmKind, Answer, ErrorKind, LimitBounds};

pub const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The placeholder a descriptor entry's value holds for the run's key.
pub const KEY_PLACEHOLDER: &str = "{key}";

/// What every RLS request of a run asks: `domain` and `descriptors`, with [`KEY_PLACEHOLDER`]
/// replaced by each key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RlsTemplate {
    pub domain: String,
    pub descriptors: Vec<Vec<(String, String)>>,
}

impl RlsTemplate {
    /// Parses one `--descriptor`: `key=value,key2=value2` (entries in order).
    pub fn parse_descriptor(text: &str) -> Result<Vec<(String, String)>, String> {
        text.split(',')
            .map(|entry| {
                let (key, value) = entry.split_once('=').ok_or_else(|| {
                    format!(
                        "--descriptor `{text}`: entry `{entry}` is not key=value; write e.g. generic_key=api,user={{key}}"
                    )
                })?;
                if key.is_empty() {
                    return Err(format!("--descriptor `{text}`: an entry has an empty key"));
                }
                Ok((key.to_owned(), value.to_owned()))
            })
            .collect()
    }

    /// Where the run's key goes: (descriptor, entry), when an entry's value holds
    /// [`KEY_PLACEHOLDER`].
    pub fn keyed(&self) -> Option<(usize, usize)> {
        self.descriptors
            .iter()
            .enumerate()
            .find_map(|(index, entries)| {
                entries
                    .iter()
                    .position(|(_, value)| value.contains(KEY_PLACEHOLDER))
                    .map(|entry| (index, entry))
            })
    }

    /// Every problem, each naming its flag and the fix.
    pub fn problems(&self, keys: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if self.domain.is_empty() {
            problems.push(
                "--domain: an rls:// target needs the domain of its rate limit configuration"
                    .into(),
            );
        }
        if self.descriptors.is_empty() {
            problems.push("--descriptor: an rls:// target needs at least one, e.g. --descriptor generic_key=api,user={key}".into());
        }
        let placeholders = self
            .descriptors
            .iter()
            .flatten()
            .filter(|(_, value)| value.contains(KEY_PLACEHOLDER))
            .count();
        if placeholders > 1 {
            problems.push("--descriptor: {key} may appear in one entry only (the ledger counts admissions per key of that descriptor)".into());
        }
        if placeholders == 0 && keys > 1 {
            problems.push(format!("--descriptor: no entry holds {{key}}, so all {keys} keys would share one counter; put {{key}} in an entry's value or give --keys 1"));
        }
        problems
    }

    /// The framed request for `key`, spending `cost` (hits_addend).
    pub fn framed(&self, key: &str, cost: u64) -> Bytes {
        let descriptors = self
            .descriptors
            .iter()
            .map(|entries| RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(name, value)| Entry {
                        key: name.clone(),
                        value: value.replace(KEY_PLACEHOLDER, key),
                    })
                    .collect(),
                ..RateLimitDescriptor::default()
            })
            .collect();
        http2::frame(&RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: u32::try_from(cost).unwrap_or(u32::MAX),
        })
    }
}

impl fmt::Display for RlsTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.domain)?;
        for entries in &self.descriptors {
            let entries: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " [{}]", entries.join(","))?;
        }
        Ok(())
    }
}

/// The fields of a RateLimitResponse the generator reads; statuses are read one at a time.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusAnswer {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(message, optional, tag = "2")]
    current_limit: Option<LimitAnswer>,
    #[prost(uint32, tag = "3")]
    limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    duration_until_reset: Option<prost_types::Duration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LimitAnswer {
    #[prost(uint32, tag = "1")]
    requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    unit: i32,
}

const OK: i32 = 1;
const OVER_LIMIT: i32 = 2;

/// A ShouldRateLimit answer as the generator reads it: allowed when the overall code is OK;
/// the limit, remaining and reset of descriptor `keyed` (the one holding the run's key).
pub fn answer(message: &Bytes, keyed: usize) -> Result<Answer, ErrorKind> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut overall = 0;
    let mut status = None;
    let mut seen = 0;
    let mut buf = message.clone();
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|_| ErrorKind::Other)?;
        match (tag, wire_type) {
            (1, WireType::Varint) => {
                overall = decode_varint(&mut buf).map_err(|_| ErrorKind::Other)? as i32;
            }
            (2, WireType::LengthDelimited) => {
                let entry = take_length_delimited(&mut buf).ok_or(ErrorKind::Other)?;
                if seen == keyed {
                    status = Some(StatusAnswer::decode(entry).map_err(|_| ErrorKind::Other)?);
                }
                seen += 1;
            }
            _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())
                .map_err(|_| ErrorKind::Other)?,
        }
    }
    if !matches!(overall, OK | OVER_LIMIT) {
        return Err(ErrorKind::Other);
    }
    let status = status.unwrap_or_default();
    let reset_us = duration_us(status.duration_until_reset);
    let allowed = overall == OK;
    let unit = status
        .current_limit
        .as_ref()
        .and_then(|limit| Some((limit.requests_per_unit, Unit::from_proto(limit.unit)?)));
    let (limit, window_us, algorithm) = match unit {
        Some((requests_per_unit, unit)) => (
            u64::from(requests_per_unit),
            unit.seconds() * 1_000_000,
            Some(AlgorithmKind::FixedWindow),
        ),
        None => (0, 0, None),
    };
    Ok(Answer {
        allowed,
        banned: false,
        shadow_denied: false,
        limit,
        remaining: u64::from(status.limit_remaining),
        reset_after_us: reset_us,
        retry_after_us: if allowed { 0 } else { reset_us },
        policy_window_us: window_us,
        algorithm,
        failed_over: false,
        limits: LimitBounds::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::envoy::service::ratelimit::v3::{
        RateLimitResponse,
        rate_limit_response::{Code, DescriptorStatus, RateLimit},
    };

    #[test]
    fn descriptors_parse_and_the_key_goes_into_its_entry() {
        let template = RlsTemplate {
            domain: "edge".into(),
            descriptors: vec![
                RlsTemplate::parse_descriptor("generic_key=api").unwrap(),
                RlsTemplate::parse_descriptor("route=checkout,user=u-{key}").unwrap(),
            ],
        };
        assert_eq!(template.keyed(), Some((1, 1)));
        assert!(template.problems(10).is_empty());
        let framed = template.framed("k7", 3);
        let request = RateLimitRequest::decode(&framed[5..]).unwrap();
        assert_eq!(request.hits_addend, 3);
        assert_eq!(request.descriptors[1].entries[1].value, "u-k7");
        assert!(RlsTemplate::parse_descriptor("novalue").is_err());
        let unkeyed = RlsTemplate {
            domain: "edge".into(),
            descriptors: vec![vec![("a".into(), "b".into())]],
        };
        assert!(unkeyed.problems(5)[0].contains("share one counter"));
        assert!(unkeyed.problems(1).is_empty());
    }

    #[test]
    fn an_answer_is_read_for_the_keyed_descriptor() {
        let status = |code: Code, limit: u32, remaining: u32| DescriptorStatus {
            code: code as i32,
            current_limit: Some(RateLimit {
                name: "n".into(),
                requests_per_unit: limit,
                unit: 2,
            }),
            limit_remaining: remaining,
            duration_until_reset: Some(prost_types::Duration {
                seconds: 12,
                nanos: 500_000_000,
            }),
            quota: None,
        };
        let response = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![status(Code::Ok, 100, 50), status(Code::OverLimit, 10, 0)],
            ..RateLimitResponse::default()
        };
        let answer = answer(&Bytes::from(response.encode_to_vec()), 1).unwrap();
        assert!(!answer.allowed);
        assert_eq!((answer.limit, answer.remaining), (10, 0));
        assert_eq!(answer.policy_window_us, 60_000_000);
        assert_eq!(answer.retry_after_us, 12_500_000);
        assert_eq!(answer.algorithm, Some(AlgorithmKind::FixedWindow));
        assert!(super::answer(&Bytes::from_static(&[0xff]), 0).is_err());
    }
}

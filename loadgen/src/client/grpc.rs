//! The service's gRPC API on the generator's HTTP/2 client ([`super::http2`]): one client per
//! connection, redialed when it closed; a Check answer read into an [`Answer`] without
//! allocating (the fields the generator reads, strings kept as slices of the response).

use bytes::Bytes;
use prost::Message as _;
use sluice_proto::v1::Decision;
use tonic_health::pb::{HealthCheckResponse, health_check_response::ServingStatus};

use super::{
    http2,
    protobuf::{duration_us, take_length_delimited},
    socket::Dialer,
};
use crate::wire::{AlgorithmKind, Answer, ErrorKind, LimitBound, LimitBounds};

pub const CHECK: &str = "/sluice.v1.RateLimiter/Check";
pub const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// One gRPC connection and the URIs of the calls made on it.
#[derive(Clone)]
pub struct GrpcClient {
    connection: http2::Connection,
    check: http2::RequestHead,
    should_rate_limit: http2::RequestHead,
    health: http2::RequestHead,
}

impl GrpcClient {
    pub(super) async fn connect(dialer: &Dialer) -> anyhow::Result<Self> {
        let connection = http2::Connection::connect(dialer).await?;
        Ok(Self {
            check: connection.request_head(CHECK),
            should_rate_limit: connection.request_head(super::rls::SHOULD_RATE_LIMIT),
            health: connection.request_head(HEALTH),
            connection,
        })
    }

    /// Redials when the connection closed (the service restarted, the network dropped it);
    /// the error of a failed dial is the request's.
    async fn reconnect_if_closed(&mut self) -> Result<(), ErrorKind> {
        if self.connection.is_closed() {
            self.connection = http2::Connection::connect(self.connection.dialer())
                .await
                .map_err(|_| ErrorKind::Refused)?;
        }
        Ok(())
    }

    /// One Check of a framed request; the answer as the generator reads it.
    pub(super) async fn check(&mut self, framed: &[u8]) -> Result<Answer, ErrorKind> {
        self.reconnect_if_closed().await?;
        let message = self.connection.unary(&self.check, framed).await?;
        let limits = stacked_limits(&message);
        let answer = CheckAnswer::decode(message).map_err(|_| ErrorKind::Other)?;
        let banned = answer.decision() == Decision::Banned;
        let reduced_capacity = 0.0 < answer.capacity_factor && answer.capacity_factor < 1.0;
        Ok(Answer {
            allowed: answer.allowed,
            banned,
            shadow_denied: answer.decision() == Decision::ShadowDenied,
            limit: answer.limit,
            remaining: answer.remaining,
            reset_after_us: duration_us(answer.reset_after),
            retry_after_us: duration_us(answer.retry_after),
            policy_window_us: duration_us(answer.policy_window),
            algorithm: std::str::from_utf8(&answer.algorithm)
                .ok()
                .and_then(AlgorithmKind::parse),
            // A ban's reason says why it refused, as does a denial a reduced adaptive factor
            // caused (a factor below 1 beside it); only other reasons mean a failure mode.
            failed_over: !answer.reason.is_empty() && !banned && !reduced_capacity,
            limits,
        })
    }

    /// One Envoy RLS ShouldRateLimit of a framed request, read for descriptor `keyed`.
    pub(super) async fn should_rate_limit(
        &mut self,
        framed: &[u8],
        keyed: usize,
    ) -> Result<Answer, ErrorKind> {
        self.reconnect_if_closed().await?;
        let message = self
            .connection
            .unary(&self.should_rate_limit, framed)
            .await?;
        super::rls::answer(&message, keyed)
    }

    /// One grpc.health.v1 Check of every service; whether it answered SERVING.
    pub(super) async fn health(&mut self) -> Result<bool, ErrorKind> {
        self.reconnect_if_closed().await?;
        // An empty HealthCheckRequest is an empty message.
        let message = self.connection.unary(&self.health, &[0; 5]).await?;
        let response = HealthCheckResponse::decode(message).map_err(|_| ErrorKind::Other)?;
        Ok(response.status() == ServingStatus::Serving)
    }
}

/// The fields of a CheckResponse the generator reads. Strings it only inspects stay shared
/// slices of the response instead of becoming new `String`s.
#[derive(Clone, PartialEq, prost::Message)]
struct CheckAnswer {
    #[prost(enumeration = "Decision", tag = "1")]
    decision: i32,
    #[prost(bool, tag = "2")]
    allowed: bool,
    #[prost(uint64, tag = "3")]
    limit: u64,
    #[prost(uint64, tag = "4")]
    remaining: u64,
    #[prost(message, optional, tag = "5")]
    reset_after: Option<prost_types::Duration>,
    #[prost(message, optional, tag = "6")]
    retry_after: Option<prost_types::Duration>,
    #[prost(message, optional, tag = "9")]
    policy_window: Option<prost_types::Duration>,
    #[prost(bytes = "bytes", tag = "10")]
    reason: Bytes,
    #[prost(bytes = "bytes", tag = "11")]
    algorithm: Bytes,
    #[prost(double, tag = "14")]
    capacity_factor: f64,
}

/// The fields of a LimitStatus the ledger reads.
#[derive(Clone, PartialEq, prost::Message)]
struct LimitAnswer {
    #[prost(uint64, tag = "2")]
    limit: u64,
    #[prost(message, optional, tag = "7")]
    policy_window: Option<prost_types::Duration>,
    #[prost(bytes = "bytes", tag = "8")]
    algorithm: Bytes,
}

/// The `limits` (field 12) of a sluice.v1 CheckResponse, skipping every other field.
fn stacked_limits(message: &Bytes) -> LimitBounds {
    use prost::encoding::{DecodeContext, WireType, decode_key, skip_field};
    let mut bounds = LimitBounds::default();
    let mut buf = message.clone();
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            break;
        };
        if tag != 12 || wire_type != WireType::LengthDelimited {
            if skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
                break;
            }
            continue;
        }
        let Some(entry) = take_length_delimited(&mut buf) else {
            break;
        };
        let entry = LimitAnswer::decode(entry).ok();
        bounds.push(entry.and_then(|entry| {
            Some(LimitBound {
                algorithm: std::str::from_utf8(&entry.algorithm)
                    .ok()
                    .and_then(AlgorithmKind::parse)?,
                limit: entry.limit,
                window_us: duration_us(entry.policy_window),
            })
        }));
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_answer_lists_a_stacked_rules_limits() {
        let status = |name: &str, limit: u64, window_s: i64, algorithm: &str| {
            sluice_proto::v1::LimitStatus {
                name: name.into(),
                limit,
                remaining: 1,
                policy_window: Some(prost_types::Duration {
                    seconds: window_s,
                    nanos: 0,
                }),
                algorithm: algorithm.into(),
                ..Default::default()
            }
        };
        let response = sluice_proto::v1::CheckResponse {
            allowed: true,
            limit: 10,
            rule: "api".into(),
            limits: vec![
                status("burst", 10, 1, "token_bucket"),
                status("daily", 1_000, 86_400, "fixed_window"),
            ],
            decided_by: "burst".into(),
            ..Default::default()
        };
        let bounds = stacked_limits(&Bytes::from(response.encode_to_vec()));
        let listed: Vec<LimitBound> = bounds.stacked().unwrap().collect();
        assert_eq!(
            listed,
            [
                LimitBound::new(AlgorithmKind::TokenBucket, 10, 1_000_000),
                LimitBound::new(AlgorithmKind::FixedWindow, 1_000, 86_400_000_000),
            ]
        );
        let single = sluice_proto::v1::CheckResponse {
            limits: vec![status("api", 10, 1, "token_bucket")],
            ..response
        };
        assert!(
            stacked_limits(&Bytes::from(single.encode_to_vec()))
                .stacked()
                .is_none(),
            "a one-limit rule's bound is the answer's own"
        );
    }
}

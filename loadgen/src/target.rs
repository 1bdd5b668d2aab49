//! One service address and the clients that talk to it: gRPC over a few HTTP/2 connections
//! (one connection multiplexes only so far), or HTTP/1.1 over one connection per worker.

use std::{fmt, str::FromStr, time::Duration};

use bytes::Bytes;
use hyper::{Uri, header::HeaderValue};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sluice_proto::v1::{CheckRequest, Decision};
use tonic_health::pb::{HealthCheckResponse, health_check_response::ServingStatus};

use crate::{grpc, http1};

/// Where load goes: `grpc://host:port` or `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub url: String,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let protocol = if text.starts_with("grpc://") {
            Protocol::Grpc
        } else if text.starts_with("http://") {
            Protocol::Http
        } else {
            return Err(format!(
                "target `{text}` needs a scheme: grpc://HOST:PORT for the gRPC API or http://HOST:PORT for HTTP"
            ));
        };
        let authority = text
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .unwrap_or_default();
        authority
            .parse::<hyper::http::uri::Authority>()
            .ok()
            .filter(|authority| authority.port().is_some())
            .ok_or_else(|| format!("target `{text}`: `{authority}` is not HOST:PORT"))?;
        Ok(Endpoint {
            url: format!(
                "{}://{authority}",
                if protocol == Protocol::Grpc {
                    "grpc"
                } else {
                    "http"
                }
            ),
            protocol,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl Endpoint {
    fn authority(&self) -> &str {
        self.url.split_once("://").map_or("", |(_, rest)| rest)
    }
}

/// Why a request failed. Errors never count as allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    Unavailable,
    Refused,
    InvalidArgument,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
        ErrorKind::Refused,
        ErrorKind::InvalidArgument,
        ErrorKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Refused => "refused",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Other => "other",
        }
    }

    /// Worth retrying: the request may succeed later.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Refused
        )
    }
}

/// The algorithms the service reports, for the ledger's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    TokenBucket,
    Gcra,
    FixedWindow,
    SlidingWindowCounter,
    SlidingWindowLog,
}

impl AlgorithmKind {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "token_bucket" => AlgorithmKind::TokenBucket,
            "gcra" => AlgorithmKind::Gcra,
            "fixed_window" => AlgorithmKind::FixedWindow,
            "sliding_window_counter" => AlgorithmKind::SlidingWindowCounter,
            "sliding_window_log" => AlgorithmKind::SlidingWindowLog,
            _ => return None,
        })
    }
}

/// One limit's parameters, as the ledger bounds what a key can be admitted under it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitBound {
    pub algorithm: AlgorithmKind,
    pub limit: u64,
    pub window_us: u64,
}

/// The limits of a stacked rule, as an answer listed them: kept only for rules of 2 to
/// [`LimitBounds::CAPACITY`] limits (a one-limit rule's are the answer's own fields; a larger
/// stack is left to the deciding limit's bound), in a fixed array so reading them allocates
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitBounds {
    len: usize,
    items: [Option<LimitBound>; LimitBounds::CAPACITY],
}

impl LimitBounds {
    pub const CAPACITY: usize = 4;

    /// A list as an answer would carry it (tests).
    #[cfg(test)]
    pub(crate) fn from_list(limits: &[LimitBound]) -> Self {
        let mut bounds = Self::default();
        for limit in limits {
            bounds.push(Some(*limit));
        }
        bounds
    }

    /// Adds a listed limit; `None` (an algorithm the ledger cannot bound) spoils the list.
    fn push(&mut self, bound: Option<LimitBound>) {
        match bound {
            Some(bound) if self.len < Self::CAPACITY => {
                self.items[self.len] = Some(bound);
                self.len += 1;
            }
            _ => self.len = Self::CAPACITY + 1,
        }
    }

    /// The listed limits, when the answer listed a complete stack of at least two.
    pub fn stacked(&self) -> Option<impl Iterator<Item = LimitBound> + '_> {
        (2..=Self::CAPACITY)
            .contains(&self.len)
            .then(|| self.items[..self.len].iter().flatten().copied())
    }

    /// Reads the `limits` (field 12) of a sluice.v1 CheckResponse, skipping every other field.
    fn from_grpc(message: &Bytes) -> Self {
        use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
        let mut bounds = Self::default();
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
            let Some(len) = decode_varint(&mut buf)
                .ok()
                .and_then(|len| usize::try_from(len).ok())
                .filter(|len| *len <= buf.len())
            else {
                break;
            };
            let entry = LimitAnswer::decode(buf.split_to(len)).ok();
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

/// A decision as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    pub allowed: bool,
    pub banned: bool,
    /// Let through by a rule in shadow mode that would have denied it.
    pub shadow_denied: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_us: u64,
    pub retry_after_us: u64,
    pub policy_window_us: u64,
    pub algorithm: Option<AlgorithmKind>,
    /// The service answered by a failure mode (its store was down).
    pub failed_over: bool,
    /// Every limit of a stacked rule, when the answer listed them.
    pub limits: LimitBounds,
}

/// What each request calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Call {
    /// The rate-limit check (gRPC Check, HTTP POST /check).
    #[default]
    Check,
    /// The health probe (gRPC grpc.health.v1.Health/Check, HTTP GET /healthz): the cheapest
    /// call, for measuring the generator's own ceiling.
    Health,
}

/// Every request a run sends, built before it starts: per key, the framed gRPC Check and the
/// HTTP API-key header; one HTTP check request line. Sending then encodes and formats nothing:
/// it copies these bytes into its connection's reused write buffer.
pub struct Requests {
    /// `POST /check?resource=..&cost=.. HTTP/1.1\r\n`: the request line of an HTTP check.
    http_check: Bytes,
    keys: Vec<KeyRequest>,
}

struct KeyRequest {
    grpc_check: Bytes,
    api_key: HeaderValue,
}

impl Requests {
    /// The requests for `keys`, checking `resource` at `cost`.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = &'a str>,
        resource: &str,
        cost: u64,
    ) -> anyhow::Result<Self> {
        let keys = keys
            .into_iter()
            .map(|key| {
                Ok(KeyRequest {
                    grpc_check: grpc::frame(&CheckRequest {
                        key: key.to_owned(),
                        resource: resource.to_owned(),
                        cost: Some(cost),
                    }),
                    api_key: HeaderValue::from_str(key).map_err(|_| {
                        anyhow::anyhow!("key `{key}` cannot be sent in an X-API-Key header")
                    })?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            http_check: request_line("POST", &format!("/check?resource={resource}&cost={cost}"))
                .map_err(|_| anyhow::anyhow!("resource `{resource}` cannot be sent in a URL"))?,
            keys,
        })
    }
}

/// One gRPC connection and the URIs of the calls made on it.
#[derive(Clone)]
pub struct GrpcClient {
    connection: grpc::Connection,
    check: grpc::RequestHead,
    health: grpc::RequestHead,
}

impl GrpcClient {
    async fn connect(authority: &str) -> anyhow::Result<Self> {
        let connection = grpc::Connection::connect(authority).await?;
        Ok(Self {
            check: connection.request_head(grpc::CHECK),
            health: connection.request_head(grpc::HEALTH),
            connection,
        })
    }

    /// Redials when the connection closed (the service restarted, the network dropped it);
    /// the error of a failed dial is the request's.
    async fn reconnect_if_closed(&mut self) -> Result<(), ErrorKind> {
        if self.connection.is_closed() {
            self.connection = grpc::Connection::connect(self.connection.authority())
                .await
                .map_err(|_| ErrorKind::Refused)?;
        }
        Ok(())
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
}

/// Clients for one endpoint.
pub enum TargetClient {
    Grpc(Vec<GrpcClient>),
    /// One keep-alive HTTP/1.1 connection per worker, dialed on first use and redialed after
    /// an error: no pool, so no lock shared between workers on the hot path.
    Http {
        authority: String,
        /// `host: AUTHORITY\r\n`
        host: Bytes,
        connection: Option<http1::Connection>,
    },
}

/// Sends the request made of `parts` on the worker's connection, dialed if it has none (or
/// the server closed it while idle), and returns the status and body. A connection that failed
/// or will not be kept is dropped, so the next request redials.
pub(crate) async fn http_exchange(
    slot: &mut Option<http1::Connection>,
    authority: &str,
    parts: &[&[u8]],
) -> Result<(u16, Bytes), ErrorKind> {
    if slot.as_ref().is_some_and(http1::Connection::closed) {
        *slot = None;
    }
    let connection = match slot {
        Some(connection) => connection,
        None => slot.insert(http1::Connection::dial(authority).await?),
    };
    let result = connection.exchange(parts).await;
    if !result.as_ref().is_ok_and(|response| response.keep_alive) {
        *slot = None;
    }
    result.map(|response| (response.status, response.body))
}

/// `METHOD TARGET HTTP/1.1\r\n`, once `target` is checked to be a valid request target.
fn request_line(method: &str, target: &str) -> Result<Bytes, hyper::http::uri::InvalidUri> {
    let target: Uri = target.parse()?;
    Ok(format!("{method} {target} HTTP/1.1\r\n").into())
}

const HEALTH_LINE: &[u8] = b"GET /healthz HTTP/1.1\r\n";

/// The parts of a POST with no body that carries `key` as its API key.
fn keyed_post<'a>(line: &'a [u8], host: &'a [u8], key: &'a [u8]) -> [&'a [u8]; 5] {
    [
        line,
        host,
        b"x-api-key: ",
        key,
        b"\r\ncontent-length: 0\r\n\r\n",
    ]
}

fn duration_us(duration: Option<prost_types::Duration>) -> u64 {
    duration.map_or(0, |d| {
        d.seconds.max(0) as u64 * 1_000_000 + d.nanos.max(0) as u64 / 1_000
    })
}

#[derive(Deserialize)]
struct HttpAnswer<'a> {
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

impl TargetClient {
    /// Opens `connections` HTTP/2 connections (gRPC), or checks an HTTP target answers.
    pub async fn connect(endpoint: &Endpoint, connections: usize) -> anyhow::Result<Self> {
        let connections = connections.max(1);
        match endpoint.protocol {
            Protocol::Grpc => {
                let mut clients = Vec::with_capacity(connections);
                for _ in 0..connections {
                    clients.push(
                        GrpcClient::connect(endpoint.authority())
                            .await
                            .map_err(|err| {
                                anyhow::anyhow!("cannot connect to {endpoint}: {err}")
                            })?,
                    );
                }
                Ok(TargetClient::Grpc(clients))
            }
            Protocol::Http => {
                let authority = endpoint.authority().to_owned();
                let connection = http1::Connection::dial(&authority).await.map_err(|kind| {
                    anyhow::anyhow!("cannot connect to {endpoint}: {}", kind.label())
                })?;
                Ok(TargetClient::Http {
                    host: format!("host: {authority}\r\n").into(),
                    authority,
                    connection: Some(connection),
                })
            }
        }
    }

    /// A client for one worker: gRPC workers are spread over the connections; an HTTP worker
    /// dials its own.
    pub fn for_worker(&self, worker: usize) -> TargetClient {
        match self {
            TargetClient::Grpc(clients) => {
                TargetClient::Grpc(vec![clients[worker % clients.len()].clone()])
            }
            TargetClient::Http {
                authority, host, ..
            } => TargetClient::Http {
                authority: authority.clone(),
                host: host.clone(),
                connection: None,
            },
        }
    }

    /// One check of `key` at `cost`, given up after `timeout`.
    pub async fn check(
        &mut self,
        key: &str,
        resource: &str,
        cost: u64,
        timeout: Duration,
    ) -> Result<Answer, ErrorKind> {
        let requests =
            Requests::new([key], resource, cost).map_err(|_| ErrorKind::InvalidArgument)?;
        match tokio::time::timeout(timeout, self.call(Call::Check, &requests, 0)).await {
            Ok(result) => result,
            Err(_) => {
                self.abandon();
                Err(ErrorKind::Timeout)
            }
        }
    }

    /// One call of `call` for key number `key` of `requests`, with no timeout of its own: the
    /// engine races it against a timer each worker reuses, which is cheaper than arming a new
    /// one per request.
    pub async fn call(
        &mut self,
        call: Call,
        requests: &Requests,
        key: usize,
    ) -> Result<Answer, ErrorKind> {
        match call {
            Call::Check => self.check_inner(requests, key).await,
            Call::Health => self.health_inner().await,
        }
    }

    /// Forgets a request the caller stopped waiting for. An HTTP/1.1 connection with an
    /// abandoned request on it is useless, so the next request redials; HTTP/2 cancels the
    /// stream by itself.
    pub fn abandon(&mut self) {
        if let TargetClient::Http { connection, .. } = self {
            *connection = None;
        }
    }

    /// One health probe; a serving answer counts as allowed.
    async fn health_inner(&mut self) -> Result<Answer, ErrorKind> {
        let serving = match self {
            TargetClient::Grpc(clients) => {
                let client = &mut clients[0];
                // An empty HealthCheckRequest (every service) is an empty message.
                client.reconnect_if_closed().await?;
                let message = client.connection.unary(&client.health, &[0; 5]).await?;
                let response =
                    HealthCheckResponse::decode(message).map_err(|_| ErrorKind::Other)?;
                response.status() == ServingStatus::Serving
            }
            TargetClient::Http {
                authority,
                host,
                connection,
            } => {
                let request = [HEALTH_LINE, host, b"\r\n"];
                let (status, _) = http_exchange(connection, authority, &request).await?;
                (200..300).contains(&status)
            }
        };
        Ok(Answer {
            allowed: serving,
            banned: false,
            shadow_denied: false,
            limit: 0,
            remaining: 0,
            reset_after_us: 0,
            retry_after_us: 0,
            policy_window_us: 0,
            algorithm: None,
            failed_over: false,
            limits: LimitBounds::default(),
        })
    }

    async fn check_inner(&mut self, requests: &Requests, key: usize) -> Result<Answer, ErrorKind> {
        let prepared = &requests.keys[key];
        match self {
            TargetClient::Grpc(clients) => {
                let client = &mut clients[0];
                client.reconnect_if_closed().await?;
                let message = client
                    .connection
                    .unary(&client.check, &prepared.grpc_check)
                    .await?;
                let limits = LimitBounds::from_grpc(&message);
                let answer = CheckAnswer::decode(message).map_err(|_| ErrorKind::Other)?;
                let banned = answer.decision() == Decision::Banned;
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
                    // A ban's reason says why it refused; only other reasons mean a failure mode.
                    failed_over: !answer.reason.is_empty() && !banned,
                    limits,
                })
            }
            TargetClient::Http {
                authority,
                host,
                connection,
            } => {
                let request = keyed_post(&requests.http_check, host, prepared.api_key.as_bytes());
                let (status, body) = http_exchange(connection, authority, &request).await?;
                match status {
                    // 403: a banned key (a problem document carrying the decision).
                    200 | 403 | 429 => {}
                    400 => return Err(ErrorKind::InvalidArgument),
                    503 => return Err(ErrorKind::Unavailable),
                    _ => return Err(ErrorKind::Other),
                }
                let answer: HttpAnswer<'_> =
                    serde_json::from_slice(&body).map_err(|_| ErrorKind::Other)?;
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
                    failed_over: answer.reason.is_some() && !banned,
                    limits: answer
                        .limits
                        .map_or_else(LimitBounds::default, |list| list.0),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(algorithm: AlgorithmKind, limit: u64, window_us: u64) -> LimitBound {
        LimitBound {
            algorithm,
            limit,
            window_us,
        }
    }

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
        let bounds = LimitBounds::from_grpc(&Bytes::from(response.encode_to_vec()));
        let listed: Vec<LimitBound> = bounds.stacked().unwrap().collect();
        assert_eq!(
            listed,
            [
                bound(AlgorithmKind::TokenBucket, 10, 1_000_000),
                bound(AlgorithmKind::FixedWindow, 1_000, 86_400_000_000),
            ]
        );
        let single = sluice_proto::v1::CheckResponse {
            limits: vec![status("api", 10, 1, "token_bucket")],
            ..response
        };
        assert!(
            LimitBounds::from_grpc(&Bytes::from(single.encode_to_vec()))
                .stacked()
                .is_none(),
            "a one-limit rule's bound is the answer's own"
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
                bound(AlgorithmKind::Gcra, 10, 1_000_000),
                bound(AlgorithmKind::SlidingWindowLog, 500, 3_600_000_000),
            ]
        );
    }

    #[test]
    fn endpoints_need_a_known_scheme() {
        let grpc: Endpoint = "grpc://127.0.0.1:50051".parse().unwrap();
        assert_eq!(
            (grpc.protocol, grpc.authority()),
            (Protocol::Grpc, "127.0.0.1:50051")
        );
        let http: Endpoint = "http://localhost:8080/".parse().unwrap();
        assert_eq!(
            (http.protocol, http.url.as_str()),
            (Protocol::Http, "http://localhost:8080")
        );
        assert!(
            "127.0.0.1:1"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("needs a scheme")
        );
        assert!(
            "grpc://localhost"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("not HOST:PORT")
        );
        assert!(
            "http://not a host"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("not HOST:PORT")
        );
    }
}

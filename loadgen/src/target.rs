//! One service address and the clients that talk to it: gRPC over a few HTTP/2 connections
//! (one tonic channel tops out far below two cores), or HTTP/1.1 through a connection pool.

use std::{fmt, str::FromStr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Uri, header::HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use sluice_proto::v1::{
    CheckRequest, Decision, ResetRequest, rate_limiter_client::RateLimiterClient,
};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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
            .map_err(|_| format!("target `{text}`: `{authority}` is not HOST:PORT"))?;
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

/// A decision as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    pub allowed: bool,
    pub banned: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_us: u64,
    pub retry_after_us: u64,
    pub policy_window_us: u64,
    pub algorithm: Option<AlgorithmKind>,
    /// The service answered by a failure mode (its store was down).
    pub failed_over: bool,
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

/// One gRPC connection's clients.
#[derive(Clone)]
pub struct GrpcClients {
    transport: H2,
    limiter: RateLimiterClient<H2>,
    health: HealthClient<H2>,
}

impl GrpcClients {
    fn new(transport: H2) -> Self {
        Self {
            limiter: RateLimiterClient::new(transport.clone()),
            health: HealthClient::new(transport.clone()),
            transport,
        }
    }

    /// Redials when the connection closed (the service restarted, the network dropped it),
    /// as tonic's Channel would; the error of a failed dial is the request's.
    async fn reconnect_if_closed(&mut self) -> Result<(), ErrorKind> {
        if self.transport.sender.is_closed() {
            let authority = self.transport.authority.to_string();
            *self = Self::new(
                H2::connect(&authority)
                    .await
                    .map_err(|_| ErrorKind::Refused)?,
            );
        }
        Ok(())
    }
}

/// gRPC over one HTTP/2 connection without tonic's `Channel`: each worker clones the sender,
/// so calls go straight onto the multiplexed connection with no buffer task in between.
#[derive(Clone)]
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    authority: hyper::http::uri::Authority,
}

impl H2 {
    async fn connect(authority: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            authority: authority.parse()?,
        })
    }
}

impl tonic::codegen::Service<hyper::Request<tonic::body::Body>> for H2 {
    type Response = hyper::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, mut request: hyper::Request<tonic::body::Body>) -> Self::Future {
        // tonic sets only the path; HTTP/2 also needs the scheme and authority.
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(hyper::http::uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        Box::pin(self.sender.send_request(request))
    }
}

/// Clients for one endpoint.
pub enum TargetClient {
    Grpc(Vec<GrpcClients>),
    /// One keep-alive HTTP/1.1 connection per worker, dialed on first use and redialed after
    /// an error: no pool, so no lock shared between workers on the hot path.
    Http {
        authority: String,
        connection: Option<SendRequest<Empty<Bytes>>>,
    },
}

/// The worker's connection, dialed if it has none or the last one closed.
async fn http_connection<'a>(
    slot: &'a mut Option<SendRequest<Empty<Bytes>>>,
    authority: &str,
) -> Result<&'a mut SendRequest<Empty<Bytes>>, ErrorKind> {
    if slot.as_ref().is_none_or(SendRequest::is_closed) {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|_| ErrorKind::Refused)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ErrorKind::Unavailable)?;
        tokio::spawn(connection);
        *slot = Some(sender);
    }
    let sender = slot.as_mut().expect("dialed above");
    sender.ready().await.map_err(|_| ErrorKind::Unavailable)?;
    Ok(sender)
}

/// Sends `request` on the worker's connection and returns the status and body; a failed
/// connection is dropped so the next request redials.
async fn http_exchange(
    slot: &mut Option<SendRequest<Empty<Bytes>>>,
    authority: &str,
    request: Request<Empty<Bytes>>,
) -> Result<(u16, Bytes), ErrorKind> {
    let sender = http_connection(slot, authority).await?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| ErrorKind::Unavailable)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| ErrorKind::Unavailable)?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    if result.is_err() {
        *slot = None;
    }
    result
}

fn duration_us(duration: Option<prost_types::Duration>) -> u64 {
    duration.map_or(0, |d| {
        d.seconds.max(0) as u64 * 1_000_000 + d.nanos.max(0) as u64 / 1_000
    })
}

fn grpc_error(status: &tonic::Status) -> ErrorKind {
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Timeout,
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::Unavailable if format!("{status:?}").contains("Connection refused") => {
            ErrorKind::Refused
        }
        Code::Unavailable => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    }
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
}

impl TargetClient {
    /// Opens `connections` HTTP/2 connections (gRPC), or checks an HTTP target answers.
    pub async fn connect(endpoint: &Endpoint, connections: usize) -> anyhow::Result<Self> {
        let connections = connections.max(1);
        match endpoint.protocol {
            Protocol::Grpc => {
                let mut clients = Vec::with_capacity(connections);
                for _ in 0..connections {
                    let connection = H2::connect(endpoint.authority())
                        .await
                        .map_err(|err| anyhow::anyhow!("cannot connect to {endpoint}: {err}"))?;
                    clients.push(GrpcClients::new(connection));
                }
                Ok(TargetClient::Grpc(clients))
            }
            Protocol::Http => {
                let authority = endpoint.authority().to_owned();
                let mut connection = None;
                http_connection(&mut connection, &authority)
                    .await
                    .map_err(|kind| {
                        anyhow::anyhow!("cannot connect to {endpoint}: {}", kind.label())
                    })?;
                Ok(TargetClient::Http {
                    authority,
                    connection,
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
            TargetClient::Http { authority, .. } => TargetClient::Http {
                authority: authority.clone(),
                connection: None,
            },
        }
    }

    pub async fn check(
        &mut self,
        key: &str,
        resource: &str,
        cost: u64,
        timeout: Duration,
    ) -> Result<Answer, ErrorKind> {
        match tokio::time::timeout(timeout, self.check_inner(key, resource, cost)).await {
            Ok(result) => result,
            Err(_) => {
                self.abandon();
                Err(ErrorKind::Timeout)
            }
        }
    }

    /// One call of `call`, with no timeout of its own: the engine races it against a timer each
    /// worker reuses, which is cheaper than arming a new one per request.
    pub async fn call(
        &mut self,
        call: Call,
        key: &str,
        resource: &str,
        cost: u64,
    ) -> Result<Answer, ErrorKind> {
        match call {
            Call::Check => self.check_inner(key, resource, cost).await,
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
        let probe = async {
            match self {
                TargetClient::Grpc(clients) => {
                    clients[0].reconnect_if_closed().await?;
                    let response = clients[0]
                        .health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map_err(|status| grpc_error(&status))?;
                    Ok(response.into_inner().status() == ServingStatus::Serving)
                }
                TargetClient::Http {
                    authority,
                    connection,
                } => {
                    let request = Request::builder()
                        .uri("/healthz")
                        .header(hyper::header::HOST, authority.as_str())
                        .body(Empty::new())
                        .map_err(|_| ErrorKind::Other)?;
                    let (status, _) = http_exchange(connection, authority, request).await?;
                    Ok((200..300).contains(&status))
                }
            }
        };
        match probe.await {
            Ok(serving) => Ok(Answer {
                allowed: serving,
                banned: false,
                limit: 0,
                remaining: 0,
                reset_after_us: 0,
                retry_after_us: 0,
                policy_window_us: 0,
                algorithm: None,
                failed_over: false,
            }),
            Err(kind) => Err(kind),
        }
    }

    async fn check_inner(
        &mut self,
        key: &str,
        resource: &str,
        cost: u64,
    ) -> Result<Answer, ErrorKind> {
        match self {
            TargetClient::Grpc(clients) => {
                clients[0].reconnect_if_closed().await?;
                let request = CheckRequest {
                    key: key.to_owned(),
                    resource: resource.to_owned(),
                    cost: Some(cost),
                };
                let response = clients[0]
                    .limiter
                    .check(request)
                    .await
                    .map_err(|status| grpc_error(&status))?
                    .into_inner();
                Ok(Answer {
                    allowed: response.allowed,
                    banned: response.decision() == Decision::Banned,
                    limit: response.limit,
                    remaining: response.remaining,
                    reset_after_us: duration_us(response.reset_after),
                    retry_after_us: duration_us(response.retry_after),
                    policy_window_us: duration_us(response.policy_window),
                    algorithm: AlgorithmKind::parse(&response.algorithm),
                    failed_over: !response.reason.is_empty(),
                })
            }
            TargetClient::Http {
                authority,
                connection,
            } => {
                let uri: Uri = format!("/check?resource={resource}&cost={cost}")
                    .parse()
                    .map_err(|_| ErrorKind::InvalidArgument)?;
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(uri)
                    .header(hyper::header::HOST, authority.as_str())
                    .header(
                        "x-api-key",
                        HeaderValue::from_str(key).map_err(|_| ErrorKind::InvalidArgument)?,
                    )
                    .body(Empty::new())
                    .map_err(|_| ErrorKind::Other)?;
                let (status, body) = http_exchange(connection, authority, request).await?;
                match status {
                    200 | 429 => {}
                    400 => return Err(ErrorKind::InvalidArgument),
                    503 => return Err(ErrorKind::Unavailable),
                    _ => return Err(ErrorKind::Other),
                }
                let answer: HttpAnswer<'_> =
                    serde_json::from_slice(&body).map_err(|_| ErrorKind::Other)?;
                Ok(Answer {
                    allowed: answer.allowed,
                    banned: answer.decision == Some("banned"),
                    limit: answer.limit,
                    remaining: answer.remaining,
                    reset_after_us: (answer.reset_after_ms * 1e3) as u64,
                    retry_after_us: (answer.retry_after_ms * 1e3) as u64,
                    policy_window_us: (answer.policy_window_ms * 1e3) as u64,
                    algorithm: answer.algorithm.and_then(AlgorithmKind::parse),
                    failed_over: answer.reason.is_some(),
                })
            }
        }
    }

    /// Forgets the limiter's state for `key` so a run starts from a full quota.
    pub async fn reset(&mut self, key: &str, resource: &str) -> anyhow::Result<()> {
        match self {
            TargetClient::Grpc(clients) => {
                clients[0]
                    .limiter
                    .reset(ResetRequest {
                        key: key.to_owned(),
                        resource: resource.to_owned(),
                    })
                    .await?;
            }
            TargetClient::Http {
                authority,
                connection,
            } => {
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(format!("/reset?resource={resource}"))
                    .header(hyper::header::HOST, authority.as_str())
                    .header("x-api-key", key)
                    .body(Empty::new())?;
                let (status, _) = http_exchange(connection, authority, request)
                    .await
                    .map_err(|kind| anyhow::anyhow!("reset of {key}: {}", kind.label()))?;
                anyhow::ensure!(
                    (200..300).contains(&status),
                    "reset of {key} answered {status}"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "http://not a host"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("not HOST:PORT")
        );
    }
}

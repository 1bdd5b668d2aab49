//! The clients that send a run's requests: gRPC over a few HTTP/2 connections per target
//! (`grpc` on `http2`, with `hpack`; `rls` for Envoy's rate limit service on the same
//! connections), or HTTP/1.1 over one connection per worker (`http` on `http1`), each over
//! plain TCP or TLS (`socket`). Every request is prepared before the run ([`Requests`]); a worker's
//! [`TargetClient`] sends them and reads the answers into [`crate::wire::Answer`].
//!
//! Dependencies run one way: this module uses the protocol modules, they use `crate::wire`,
//! and nothing here is used by `wire`.

mod grpc;
pub mod http;
mod protobuf;
pub mod rls;

pub use transport::{http1, http2, socket};

use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use sluice_proto::v1::CheckRequest;

use crate::wire::{Answer, Call, Endpoint, ErrorKind, Protocol};
use grpc::GrpcClient;
use rls::RlsTemplate;
use socket::{Dialer, TlsOptions};

/// Every request a run sends, built before it starts: per key, the framed gRPC Check and the
/// HTTP API-key header; one HTTP check request line. Sending then encodes and formats nothing:
/// it copies these bytes into its connection's reused write buffer.
pub struct Requests {
    /// `POST /check?resource=..&cost=.. HTTP/1.1\r\n`: the request line of an HTTP check.
    http_check: Bytes,
    keys: Vec<KeyRequest>,
    /// Envoy RLS requests: the descriptor holding the key, whose answer is read.
    rls_keyed: Option<usize>,
}

struct KeyRequest {
    /// The framed gRPC message: a sluice.v1 Check, or an RLS ShouldRateLimit.
    grpc_message: Bytes,
    api_key: HeaderValue,
}

impl Requests {
    /// The requests for `keys`, checking `resource` at `cost`; with `rls`, Envoy RLS requests
    /// of that template instead of gRPC checks.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = &'a str>,
        resource: &str,
        cost: u64,
        rls: Option<&RlsTemplate>,
    ) -> anyhow::Result<Self> {
        let keys = keys
            .into_iter()
            .map(|key| {
                Ok(KeyRequest {
                    grpc_message: match rls {
                        Some(template) => template.framed(key, cost),
                        None => http2::frame(&CheckRequest {
                            key: key.to_owned(),
                            resource: resource.to_owned(),
                            cost: Some(cost),
                        }),
                    },
                    api_key: HeaderValue::from_str(key).map_err(|_| {
                        anyhow::anyhow!("key `{key}` cannot be sent in an X-API-Key header")
                    })?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            http_check: http::request_line(
                "POST",
                &format!("/check?resource={resource}&cost={cost}"),
            )
            .map_err(|_| anyhow::anyhow!("resource `{resource}` cannot be sent in a URL"))?,
            keys,
            rls_keyed: rls.map(|template| template.keyed().map_or(0, |(descriptor, _)| descriptor)),
        })
    }
}

/// Clients for one endpoint.
pub enum TargetClient {
    Grpc(Vec<GrpcClient>),
    /// One keep-alive HTTP/1.1 connection per worker, dialed on first use and redialed after
    /// an error: no pool, so no lock shared between workers on the hot path.
    Http {
        dialer: Dialer,
        /// `host: AUTHORITY\r\n`
        host: Bytes,
        connection: Option<http1::Connection>,
    },
}

impl TargetClient {
    /// Opens `connections` HTTP/2 connections (gRPC), or checks an HTTP target answers; TLS
    /// targets are verified as `tls` says.
    pub async fn connect(
        endpoint: &Endpoint,
        connections: usize,
        tls: &TlsOptions,
    ) -> anyhow::Result<Self> {
        let connections = connections.max(1);
        match endpoint.protocol {
            Protocol::Grpc | Protocol::Rls => {
                let dialer = dialer(endpoint, tls, b"h2")?;
                let mut clients = Vec::with_capacity(connections);
                for _ in 0..connections {
                    clients.push(
                        GrpcClient::connect(&dialer).await.map_err(|err| {
                            anyhow::anyhow!("cannot connect to {endpoint}: {err}")
                        })?,
                    );
                }
                Ok(TargetClient::Grpc(clients))
            }
            Protocol::Http => {
                let dialer = dialer(endpoint, tls, b"http/1.1")?;
                let connection = http1::Connection::dial(&dialer).await.map_err(|kind| {
                    anyhow::anyhow!("cannot connect to {endpoint}: {}", kind.label())
                })?;
                Ok(TargetClient::Http {
                    host: format!("host: {}\r\n", endpoint.authority()).into(),
                    dialer,
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
            TargetClient::Http { dialer, host, .. } => TargetClient::Http {
                dialer: dialer.clone(),
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
            Requests::new([key], resource, cost, None).map_err(|_| ErrorKind::InvalidArgument)?;
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
            TargetClient::Grpc(clients) => clients[0].health().await?,
            TargetClient::Http {
                dialer,
                host,
                connection,
            } => {
                let request = [http::HEALTH_LINE, host, b"\r\n"];
                let (status, _) = http::exchange(connection, dialer, &request).await?;
                (200..300).contains(&status)
            }
        };
        Ok(Answer::health(serving))
    }

    async fn check_inner(&mut self, requests: &Requests, key: usize) -> Result<Answer, ErrorKind> {
        let prepared = &requests.keys[key];
        match self {
            TargetClient::Grpc(clients) => match requests.rls_keyed {
                Some(keyed) => {
                    clients[0]
                        .should_rate_limit(&prepared.grpc_message, keyed)
                        .await
                }
                None => clients[0].check(&prepared.grpc_message).await,
            },
            TargetClient::Http {
                dialer,
                host,
                connection,
            } => {
                let request =
                    http::keyed_post(&requests.http_check, host, prepared.api_key.as_bytes());
                let (status, body) = http::exchange(connection, dialer, &request).await?;
                http::check_answer(status, &body)
            }
        }
    }
}

/// How to reach `endpoint`: TLS for `grpcs://` and `https://` (offering `alpn`), else TCP.
fn dialer(endpoint: &Endpoint, tls: &TlsOptions, alpn: &[u8]) -> anyhow::Result<Dialer> {
    if !endpoint.tls {
        return Ok(Dialer::plain(endpoint.authority()));
    }
    Dialer::tls(endpoint.authority(), endpoint.host(), tls, alpn)
        .map_err(|error| anyhow::anyhow!("{endpoint}: {error:#}"))
}

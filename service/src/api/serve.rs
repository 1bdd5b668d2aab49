//! Serves an axum router (the public HTTP API, the admin API) on a TCP listener, hardened
//! against clients that hold connections open: at most `max_connections` at once (past it a
//! new connection is closed at once, never left hanging), and a request's headers must arrive
//! within `header_timeout` of the connection waiting for them, which also closes a keep-alive
//! connection left idle that long. `axum::serve` offers neither limit, hence this accept loop
//! on hyper-util's connection builder, reading connections through the same cap as the gRPC
//! listener ([`super::capped`]).

use std::time::Duration;

use axum::Router;
use futures_util::StreamExt as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::server::TcpIncoming;
use tracing::warn;

use super::capped::Capped;
use crate::metrics::ConnectionMetrics;

/// What one listener lets clients hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Accepts and serves until `shutdown` turns true, then stops accepting and waits for the open
/// connections to finish their requests (the caller bounds that wait by its grace period).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: watch::Receiver<bool>,
) {
    let stopping = crate::shutdown::requested(shutdown);
    tokio::pin!(stopping);
    let mut incoming = Capped::new(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        limits.max_connections,
        "server.http_max_connections",
        metrics,
    );
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    loop {
        let held = tokio::select! {
            accepted = incoming.next() => match accepted {
                Some(Ok(held)) => held,
                Some(Err(err)) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    warn!(error = %err, "accepting a connection failed; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => break,
            },
            () = &mut stopping => break,
        };
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(held),
                TowerToHyperService::new(router.clone()),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        // A client that goes away or times out ends its connection (and frees its slot);
        // nothing to report.
        tokio::spawn(connection);
    }
    drop(incoming);
    graceful.shutdown().await;
}

//! Serves an axum router (the public HTTP API, the admin API) on a TCP listener, hardened
//! against clients that hold connections open: at most `max_connections` at once (past it a
//! new connection is closed at once, never left hanging), and a request's headers must arrive
//! within `header_timeout` of the connection waiting for them, which also closes a keep-alive
//! connection left idle that long. `axum::serve` offers neither limit, hence this accept loop
//! on hyper-util's connection builder.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tracing::warn;

use crate::{decision_log::LogBudget, metrics::ConnectionMetrics};

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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals_log = LogBudget::new(1);
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
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    warn!(error = %err, "accepting a connection failed; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refused.inc();
            if let Some(suppressed) = refusals_log.admit() {
                warn!(
                    max_connections = limits.max_connections,
                    suppressed,
                    "connection refused: the listener holds server.http_max_connections already"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        let open = metrics.open.clone();
        open.inc();
        tokio::spawn(async move {
            // A client that goes away or times out ends its connection; nothing to report.
            let _ = connection.await;
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

//! A cap on the connections a listener holds, as a filter on its stream of accepted
//! connections: past `max_connections` open, a new connection is closed as soon as it is
//! accepted (never left hanging), counted, and logged at most once a second. tonic serves the
//! gRPC listener from such a stream; the HTTP listeners' accept loop ([`super::serve`]) reads
//! one too.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{decision_log::LogBudget, metrics::ConnectionMetrics};

/// The accepted connections of `incoming`, at most `max_connections` open at once.
pub struct Capped<S> {
    incoming: S,
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// The setting that sets the cap, named in the refusal log line.
    setting: &'static str,
    metrics: ConnectionMetrics,
    refusals_log: LogBudget,
}

impl<S> Capped<S> {
    pub fn new(
        incoming: S,
        max_connections: usize,
        setting: &'static str,
        metrics: ConnectionMetrics,
    ) -> Self {
        Self {
            incoming,
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            setting,
            metrics,
            refusals_log: LogBudget::new(1),
        }
    }
}

impl<S> Stream for Capped<S>
where
    S: Stream<Item = std::io::Result<TcpStream>> + Unpin,
{
    type Item = std::io::Result<Held>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let stream = match Pin::new(&mut self.incoming).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => stream,
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    self.metrics.open.inc();
                    return Poll::Ready(Some(Ok(Held {
                        stream,
                        open: self.metrics.open.clone(),
                        _slot: slot,
                    })));
                }
                Err(_) => {
                    self.metrics.refused.inc();
                    if let Some(suppressed) = self.refusals_log.admit() {
                        tracing::warn!(
                            max_connections = self.max_connections,
                            setting = self.setting,
                            suppressed,
                            "connection refused: the listener holds its maximum already"
                        );
                    }
                    drop(stream);
                }
            }
        }
    }
}

/// One accepted connection holding its slot until it closes.
pub struct Held {
    stream: TcpStream,
    open: prometheus::IntGauge,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connected for Held {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

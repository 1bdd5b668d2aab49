//! gRPC unary calls over one HTTP/2 connection, framed by hand on the `h2` crate. A load
//! generator's request is known before the run, so it is encoded once and sent as shared bytes;
//! tonic's client would encode it again per call into a fresh 8 KiB buffer and give its response
//! decoder another. hyper's HTTP/2 client, under tonic or alone, spawns a task per request to
//! drive its response and moves that future onto the heap (measured: memmove under tokio's
//! task spawn led the profile at the generator's ceiling); here the worker awaits its own
//! stream, so a call costs what h2 itself costs.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use hyper::{
    HeaderMap, Method, Request, StatusCode, Uri,
    header::{CONTENT_TYPE, HeaderValue, TE},
    http::uri::{Authority, PathAndQuery, Scheme},
};
use tokio::net::TcpStream;

use crate::target::{ErrorKind, append_chunk};

pub const CHECK: &str = "/sluice.v1.RateLimiter/Check";
pub const RESET: &str = "/sluice.v1.RateLimiter/Reset";
pub const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// One HTTP/2 connection; clones share it (calls multiplex as streams).
#[derive(Clone)]
pub struct Connection {
    sender: h2::client::SendRequest<Bytes>,
    /// Set when the connection's task ends: h2's sender only learns it on its next call.
    closed: Arc<AtomicBool>,
    authority: Authority,
}

impl Connection {
    pub async fn connect(authority: &str) -> anyhow::Result<Self> {
        let authority: Authority = authority.parse()?;
        let stream = TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = h2::client::handshake(stream).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let on_close = Arc::clone(&closed);
        tokio::spawn(async move {
            if let Err(error) = (Batched {
                inner: connection,
                deferred: false,
            })
            .await
            {
                tracing::debug!(%error, "gRPC connection ended");
            }
            on_close.store(true, Ordering::Release);
        });
        Ok(Self {
            sender,
            closed,
            authority,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// The full URI of `path` on this connection; built once, cloned per call without copying.
    pub fn uri(&self, path: &'static str) -> Uri {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .expect("scheme, authority and a static path make a URI")
    }

    /// Sends one framed message (see [`frame`]) to `uri` and returns the response message,
    /// unframed.
    pub async fn unary(&mut self, uri: &Uri, message: Bytes) -> Result<Bytes, ErrorKind> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        poll_fn(|cx| self.sender.poll_ready(cx))
            .await
            .map_err(|_| ErrorKind::Unavailable)?;
        let (response, mut send) = self
            .sender
            .send_request(request, false)
            .map_err(|_| ErrorKind::Unavailable)?;
        // The message is far below the stream's initial window: h2 queues it whole.
        send.send_data(message, true)
            .map_err(|_| ErrorKind::Unavailable)?;
        let response = response.await.map_err(|_| ErrorKind::Unavailable)?;
        if response.status() != StatusCode::OK {
            return Err(ErrorKind::Unavailable);
        }
        // A trailers-only response carries its status in the headers: an error, no message.
        if let Some(status) = response.headers().get("grpc-status") {
            status_result(status)?;
            return Err(ErrorKind::Other);
        }
        let (message, trailers) = read_stream(response.into_body()).await?;
        let status = trailers
            .as_ref()
            .and_then(|trailers| trailers.get("grpc-status"))
            .map_or(Err(ErrorKind::Unavailable), status_result);
        status?;
        unframe(message)
    }
}

/// Defers each wake-up of a connection by one turn of the scheduler. A worker that queues a
/// request wakes its connection, and tokio runs a task woken that way next (its LIFO slot):
/// the connection would write each request on its own, one `writev` per call (measured: 0.67
/// per request, against h2load's 0.06). Deferred behind the other ready workers, it writes
/// every request they queued in one go.
struct Batched<F> {
    inner: F,
    deferred: bool,
}

impl<F: Future + Unpin> Future for Batched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.deferred {
            self.deferred = true;
            // A task that wakes itself while polled goes to the back of the run queue.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.deferred = false;
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// A stream's whole body and its trailers, giving back the flow-control window as data is
/// read (h2 would otherwise hold it until the stream is dropped). A small body arrives as one
/// frame and is returned as it came, with no copy.
async fn read_stream(mut body: h2::RecvStream) -> Result<(Bytes, Option<HeaderMap>), ErrorKind> {
    let mut data: Option<Bytes> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| ErrorKind::Unavailable)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data = Some(append_chunk(data.take(), chunk));
    }
    let trailers = body.trailers().await.map_err(|_| ErrorKind::Unavailable)?;
    Ok((data.unwrap_or_default(), trailers))
}

/// `message` as one gRPC length-prefixed message: no compression, a 4-byte big-endian length.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(length as u32);
    message
        .encode(&mut framed)
        .expect("the buffer was sized to the message");
    framed.freeze()
}

fn unframe(mut framed: Bytes) -> Result<Bytes, ErrorKind> {
    if framed.len() < 5 || framed[0] != 0 {
        // Too short, or compressed: we never ask for compression.
        return Err(ErrorKind::Other);
    }
    let length = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
    if framed.len() != 5 + length {
        return Err(ErrorKind::Other);
    }
    Ok(framed.split_off(5))
}

/// A `grpc-status` value as the call's result.
fn status_result(status: &HeaderValue) -> Result<(), ErrorKind> {
    match status.as_bytes() {
        b"0" => Ok(()),
        // CANCELLED, DEADLINE_EXCEEDED
        b"1" | b"4" => Err(ErrorKind::Timeout),
        b"3" => Err(ErrorKind::InvalidArgument),
        b"14" => Err(ErrorKind::Unavailable),
        _ => Err(ErrorKind::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_errors() {
        let request = sluice_proto::v1::CheckRequest {
            key: "k".into(),
            resource: "r".into(),
            cost: Some(3),
        };
        let framed = frame(&request);
        assert_eq!(framed[0], 0);
        let message = unframe(framed.clone()).unwrap();
        assert_eq!(
            <sluice_proto::v1::CheckRequest as prost::Message>::decode(message).unwrap(),
            request
        );
        assert_eq!(
            unframe(framed.slice(..framed.len() - 1)),
            Err(ErrorKind::Other)
        );
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert_eq!(unframe(compressed.into()), Err(ErrorKind::Other));
    }

    #[test]
    fn grpc_status_codes_map_to_error_kinds() {
        let code = |text: &'static str| status_result(&HeaderValue::from_static(text));
        assert_eq!(code("0"), Ok(()));
        assert_eq!(code("4"), Err(ErrorKind::Timeout));
        assert_eq!(code("3"), Err(ErrorKind::InvalidArgument));
        assert_eq!(code("14"), Err(ErrorKind::Unavailable));
        assert_eq!(code("13"), Err(ErrorKind::Other));
    }
}

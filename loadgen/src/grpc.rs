//! gRPC unary calls over one HTTP/2 connection, framed by hand on hyper. A load generator's
//! request is known before the run, so it is encoded once and sent as shared bytes; tonic's
//! client would encode it again per call into a fresh 8 KiB buffer, give its response decoder
//! another, and spawn a task to stream each one-message body (measured: ~20% of the
//! generator's CPU at its ceiling).

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::Full;
use hyper::{
    Method, Request, StatusCode, Uri,
    client::conn::http2::SendRequest,
    header::{CONTENT_TYPE, HeaderValue, TE},
    http::uri::{Authority, PathAndQuery, Scheme},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::target::{ErrorKind, read_body};

pub const CHECK: &str = "/sluice.v1.RateLimiter/Check";
pub const RESET: &str = "/sluice.v1.RateLimiter/Reset";
pub const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// One HTTP/2 connection; clones share it (calls multiplex as streams).
#[derive(Clone)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: Authority,
}

impl Connection {
    pub async fn connect(authority: &str) -> anyhow::Result<Self> {
        let authority: Authority = authority.parse()?;
        let stream = TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(connection);
        Ok(Self { sender, authority })
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
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
        let mut request = Request::new(Full::new(message));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        self.sender
            .ready()
            .await
            .map_err(|_| ErrorKind::Unavailable)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|_| ErrorKind::Unavailable)?;
        if response.status() != StatusCode::OK {
            return Err(ErrorKind::Unavailable);
        }
        // A trailers-only response carries its status in the headers: an error, no message.
        if let Some(status) = response.headers().get("grpc-status") {
            status_result(status)?;
            return Err(ErrorKind::Other);
        }
        let (message, trailers) = read_body(response.into_body()).await?;
        let status = trailers
            .as_ref()
            .and_then(|trailers| trailers.get("grpc-status"))
            .map_or(Err(ErrorKind::Unavailable), status_result);
        status?;
        unframe(message)
    }
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

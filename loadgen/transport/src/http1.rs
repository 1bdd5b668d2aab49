//! HTTP/1.1 on one keep-alive connection owned by one worker. The generator's requests have no
//! body and are known before the run, so a request is its parts copied into a reused buffer
//! and sent in one write; the response is parsed in place (httparse) and its body split off
//! the read buffer without a copy; this is what wrk does.
//!
//! Why own this instead of hyper's connection-level client (`hyper::client::conn::http1`, one
//! connection per worker, as oha runs): `scripts/bench-clients` measured hyper at 0.75x this
//! client's rate on GET /healthz with 64 connections, at 1.4x the client CPU per call (header
//! maps, a request per call, its dispatch channel), while this client reached 1.05x wrk
//! (results/benchmarks/clients.md). The rule for keeping it was hyper losing more than 10%.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ErrorKind;
use crate::socket::{Dialer, Socket};

/// Larger response heads or bodies are errors, not memory the generator gives away.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 4 << 20;
const MAX_HEADERS: usize = 64;
const READ_BUFFER: usize = 8 * 1024;

pub struct Connection {
    socket: Socket,
    request: Vec<u8>,
    received: BytesMut,
}

pub struct Response {
    pub status: u16,
    pub body: Bytes,
    /// The connection may carry another request.
    pub keep_alive: bool,
}

/// How a response's body ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

impl Connection {
    pub async fn dial(dialer: &Dialer) -> Result<Self, ErrorKind> {
        let socket = dialer.dial().await.map_err(|_| ErrorKind::Refused)?;
        Ok(Self {
            socket,
            request: Vec::with_capacity(512),
            received: BytesMut::with_capacity(READ_BUFFER),
        })
    }

    /// Whether the server closed the connection (or sent something unasked) since the last
    /// exchange. Only looks at what already arrived: with nothing new, tokio answers from its
    /// readiness flags without a syscall.
    pub fn closed(&self) -> bool {
        self.socket.closed_while_idle()
    }

    /// Sends the request made of `parts` and reads the whole response.
    pub async fn exchange(&mut self, parts: &[&[u8]]) -> Result<Response, ErrorKind> {
        self.request.clear();
        for part in parts {
            self.request.extend_from_slice(part);
        }
        self.socket
            .write_all(&self.request)
            .await
            .map_err(|_| ErrorKind::Unavailable)?;
        // A no-op on TCP; TLS sends the records it buffered.
        self.socket
            .flush()
            .await
            .map_err(|_| ErrorKind::Unavailable)?;
        let head = loop {
            let head = self.read_head().await?;
            // 1xx answers precede the real one.
            if !(100..200).contains(&head.status) {
                break head;
            }
        };
        let body = match head.framing {
            Framing::None => Bytes::new(),
            Framing::Length(length) => self.read_exactly(length).await?,
            Framing::Chunked => self.read_chunked().await?,
            Framing::UntilClose => self.read_until_close().await?,
        };
        Ok(Response {
            status: head.status,
            body,
            keep_alive: head.keep_alive && head.framing != Framing::UntilClose,
        })
    }

    /// Reads more of the response; the server closing first is an error.
    async fn fill(&mut self) -> Result<(), ErrorKind> {
        if self.received.capacity() - self.received.len() < READ_BUFFER / 2 {
            self.received.reserve(READ_BUFFER);
        }
        // tokio's read takes a short read as proof the socket is drained, so the next read
        // waits for readiness instead of asking the kernel to be told EAGAIN.
        match self.socket.read_buf(&mut self.received).await {
            Ok(0) | Err(_) => Err(ErrorKind::Unavailable),
            Ok(_) => Ok(()),
        }
    }

    async fn read_head(&mut self) -> Result<Head, ErrorKind> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.received) {
                Ok(httparse::Status::Complete(length)) => {
                    let head = head(&response)?;
                    self.received.advance(length);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if self.received.len() < MAX_HEAD => {}
                _ => return Err(ErrorKind::Other),
            }
            self.fill().await?;
        }
    }

    async fn read_exactly(&mut self, length: usize) -> Result<Bytes, ErrorKind> {
        if length > MAX_BODY {
            return Err(ErrorKind::Other);
        }
        while self.received.len() < length {
            self.received.reserve(length - self.received.len());
            self.fill().await?;
        }
        Ok(self.received.split_to(length).freeze())
    }

    async fn read_chunked(&mut self) -> Result<Bytes, ErrorKind> {
        let mut body = BytesMut::new();
        loop {
            let (consumed, size) = loop {
                match httparse::parse_chunk_size(&self.received) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.received.len() < MAX_HEAD => {}
                    _ => return Err(ErrorKind::Other),
                }
                self.fill().await?;
            };
            self.received.advance(consumed);
            let size = usize::try_from(size).map_err(|_| ErrorKind::Other)?;
            if size == 0 {
                self.skip_trailers().await?;
                return Ok(body.freeze());
            }
            if body.len() + size > MAX_BODY {
                return Err(ErrorKind::Other);
            }
            let chunk = self.read_exactly(size + 2).await?;
            if !chunk.ends_with(b"\r\n") {
                return Err(ErrorKind::Other);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    /// The trailer section after the last chunk: header lines up to an empty one.
    async fn skip_trailers(&mut self) -> Result<(), ErrorKind> {
        loop {
            if let Some(end) = self.received.windows(2).position(|pair| pair == b"\r\n") {
                self.received.advance(end + 2);
                if end == 0 {
                    return Ok(());
                }
                continue;
            }
            if self.received.len() >= MAX_HEAD {
                return Err(ErrorKind::Other);
            }
            self.fill().await?;
        }
    }

    async fn read_until_close(&mut self) -> Result<Bytes, ErrorKind> {
        loop {
            if self.received.len() > MAX_BODY {
                return Err(ErrorKind::Other);
            }
            self.received.reserve(READ_BUFFER);
            match self.socket.read_buf(&mut self.received).await {
                Ok(0) => return Ok(self.received.split().freeze()),
                Ok(_) => {}
                Err(_) => return Err(ErrorKind::Unavailable),
            }
        }
    }
}

fn head(response: &httparse::Response<'_, '_>) -> Result<Head, ErrorKind> {
    let status = response.code.ok_or(ErrorKind::Other)?;
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 the reverse.
    let mut keep_alive = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.trim().parse::<usize>().ok())
                .ok_or(ErrorKind::Other)?;
            if length.is_some_and(|known| known != parsed) {
                return Err(ErrorKind::Other);
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(|&byte| byte == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(|&byte| byte == b',') {
                let option = option.trim_ascii();
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        status,
        framing,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A real socket whose server sends `answer` (in pieces, to exercise partial reads) after
    /// reading a request head, then keeps the connection open unless `close`.
    async fn exchange_with(answer: &'static [u8], close: bool) -> Result<Response, ErrorKind> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0; 1];
                if socket.read(&mut byte).await.unwrap() == 0 {
                    return;
                }
                request.push(byte[0]);
            }
            for piece in answer.chunks(7) {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if !close {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
        let mut connection = Connection::dial(&Dialer::plain(&address)).await.unwrap();
        let response = connection
            .exchange(&[b"GET / HTTP/1.1\r\n", b"host: x\r\n", b"\r\n"])
            .await;
        server.abort();
        response
    }

    #[tokio::test]
    async fn bodies_end_by_length_chunks_or_close() {
        let by_length = exchange_with(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 5\r\n\r\nhello",
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            (by_length.status, &by_length.body[..], by_length.keep_alive),
            (429, &b"hello"[..], true)
        );
        let chunked = exchange_with(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\ntrailer: x\r\n\r\n",
            false,
        )
        .await
        .unwrap();
        assert_eq!(&chunked.body[..], b"hello world");
        assert!(chunked.keep_alive);
        let until_close = exchange_with(b"HTTP/1.1 200 OK\r\n\r\nall of it", true)
            .await
            .unwrap();
        assert_eq!(&until_close.body[..], b"all of it");
        assert!(!until_close.keep_alive);
        let continued = exchange_with(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
            false,
        )
        .await
        .unwrap();
        assert_eq!((continued.status, continued.body.len()), (204, 0));
        assert!(!continued.keep_alive);
        let old = exchange_with(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false)
            .await
            .unwrap();
        assert!(
            !old.keep_alive,
            "HTTP/1.0 closes unless asked to keep alive"
        );
    }

    #[tokio::test]
    async fn malformed_or_cut_responses_are_errors() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
                ErrorKind::Unavailable,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                ErrorKind::Other,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
                ErrorKind::Other,
            ),
            (b"not http at all\r\n\r\n", ErrorKind::Other),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                ErrorKind::Other,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n",
                ErrorKind::Other,
            ),
            (b"HTTP/1.1 200 O", ErrorKind::Unavailable),
        ] {
            let result = exchange_with(answer, true).await;
            assert_eq!(
                result.err(),
                Some(expected),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}

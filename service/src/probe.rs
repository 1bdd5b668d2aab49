//! `ratelimiter --probe HOST:PORT`: asks a node's `/readyz` and exits 0 when it answers 200.
//! It is the container healthcheck of an image with no shell and no curl (distroless). One
//! fixed HTTP/1.0 GET and the status line of the answer, over a blocking socket: no client
//! crate is worth its build time for that.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

/// How long the whole probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the node at `addr` (HOST:PORT of its HTTP listener) is ready; the reason when not.
pub fn ready(addr: &str) -> Result<(), String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|err| format!("`{addr}` is not HOST:PORT ({err})"))?
        .next()
        .ok_or_else(|| format!("`{addr}` resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)
        .map_err(|err| format!("cannot connect to {target}: {err}"))?;
    let io = |err: std::io::Error| format!("{target}: {err}");
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    stream
        .write_all(format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(io)?;
    let mut answer = Vec::new();
    stream.take(4096).read_to_end(&mut answer).map_err(io)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("{target}: no HTTP status in the answer"))?;
    if status == "200" {
        Ok(())
    } else {
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        Err(format!("{target}/readyz answered {status}: {body}"))
    }
}

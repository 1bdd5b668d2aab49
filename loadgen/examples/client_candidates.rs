//! The well-kept crates loadgen's own clients are measured against (scripts/bench-clients):
//! the same closed loop as `loadgen run --call health`, on `h2` (gRPC) or on hyper's
//! connection-level HTTP/1.1 client. Prints the calls completed; the script times the CPU.
//!
//! - `grpc-h2 HOST:PORT CONNECTIONS IN_FLIGHT SECONDS [check]`: grpc.health.v1 Check (or
//!   sluice.v1 Check of key `k`) over h2 0.4, used directly. Each connection's task polls the h2 connection and its share of the
//!   in-flight calls as futures of the same task (no task per call, and writes batch: h2's
//!   connection flushes on every poll, so calls on other tasks cost one writev each).
//! - `http1-hyper HOST:PORT CONNECTIONS SECONDS`: GET /healthz on
//!   `hyper::client::conn::http1`, one connection per worker, as oha does.

use std::{
    future::poll_fn,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{StreamExt as _, stream::FuturesUnordered};
use http_body_util::{BodyExt as _, Empty};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize| -> anyhow::Result<u64> {
        args.get(index)
            .with_context(|| format!("argument {} is missing", index + 1))?
            .parse()
            .with_context(|| format!("argument {} is not a number", index + 1))
    };
    let calls = match args.first().map(String::as_str) {
        Some("grpc-h2") => {
            let seconds = Duration::from_secs(number(4)?);
            let call = match args.get(5).map(String::as_str) {
                Some("check") => Call::check(),
                _ => Call::health(),
            };
            let (connections, in_flight) = (number(2)? as usize, number(3)? as usize);
            grpc_h2(&args[1], connections, in_flight, seconds, call).await?
        }
        Some("http1-hyper") => {
            let seconds = Duration::from_secs(number(3)?);
            http1_hyper(&args[1], number(2)? as usize, seconds).await?
        }
        _ => anyhow::bail!(
            "usage: client_candidates grpc-h2 HOST:PORT CONNECTIONS IN_FLIGHT SECONDS [check] | http1-hyper HOST:PORT CONNECTIONS SECONDS"
        ),
    };
    println!("calls {calls}");
    Ok(())
}

/// The gRPC call each in-flight slot repeats: its path and its one framed message.
#[derive(Clone)]
struct Call {
    path: &'static str,
    message: Bytes,
}

impl Call {
    fn health() -> Self {
        // An empty HealthCheckRequest as one gRPC message: flag 0, length 0.
        Self {
            path: "/grpc.health.v1.Health/Check",
            message: Bytes::from_static(&[0; 5]),
        }
    }

    fn check() -> Self {
        let request = sluice_proto::v1::CheckRequest {
            key: "k".into(),
            resource: String::new(),
            cost: Some(1),
        };
        Self {
            path: "/sluice.v1.RateLimiter/Check",
            message: loadgen::client::http2::frame(&request),
        }
    }
}

async fn grpc_h2(
    authority: &str,
    connections: usize,
    in_flight: usize,
    seconds: Duration,
    call: Call,
) -> anyhow::Result<u64> {
    let end = Instant::now() + seconds;
    let uri: http::Uri = format!("http://{authority}{}", call.path).parse()?;
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let socket = TcpStream::connect(authority).await?;
        socket.set_nodelay(true)?;
        let (client, mut driver) = h2::client::handshake(socket).await?;
        let share = in_flight / connections + usize::from(connection < in_flight % connections);
        let (uri, message) = (uri.clone(), call.message.clone());
        tasks.push(tokio::spawn(async move {
            let mut callers: FuturesUnordered<_> = (0..share)
                .map(|_| caller(client.clone(), uri.clone(), message.clone(), end))
                .collect();
            let mut calls = 0;
            loop {
                tokio::select! {
                    result = &mut driver => {
                        result?;
                        break;
                    }
                    done = callers.next() => match done {
                        Some(result) => calls += result?,
                        None => break,
                    },
                }
            }
            anyhow::Ok(calls)
        }));
    }
    let mut calls = 0;
    for task in tasks {
        calls += task.await??;
    }
    Ok(calls)
}

/// One in-flight slot: calls back to back until `end`.
async fn caller(
    mut client: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
    message: Bytes,
    end: Instant,
) -> anyhow::Result<u64> {
    let mut calls = 0;
    while Instant::now() < end {
        client = client.ready().await?;
        let request = http::Request::post(uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (response, mut body) = client.send_request(request, false)?;
        body.send_data(message.clone(), true)?;
        let mut received = response.await?.into_body();
        while let Some(chunk) = received.data().await {
            let chunk = chunk?;
            let _ = received.flow_control().release_capacity(chunk.len());
        }
        let trailers = poll_fn(|cx| received.poll_trailers(cx)).await?;
        anyhow::ensure!(
            trailers
                .as_ref()
                .and_then(|trailers| trailers.get("grpc-status"))
                .is_some_and(|status| status == "0"),
            "the call failed: {trailers:?}"
        );
        calls += 1;
    }
    Ok(calls)
}

async fn http1_hyper(
    authority: &str,
    connections: usize,
    seconds: Duration,
) -> anyhow::Result<u64> {
    let end = Instant::now() + seconds;
    let uri: http::Uri = format!("http://{authority}/healthz").parse()?;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let socket = TcpStream::connect(authority).await?;
        socket.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(socket)).await?;
        tokio::spawn(connection);
        let uri = uri.clone();
        let host = authority.to_owned();
        workers.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < end {
                sender.ready().await?;
                let request = http::Request::get(uri.clone())
                    .header("host", host.as_str())
                    .body(Empty::<Bytes>::new())?;
                let response = sender.send_request(request).await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await?;
                calls += 1;
            }
            anyhow::Ok(calls)
        }));
    }
    let mut calls = 0;
    for worker in workers {
        calls += worker.await??;
    }
    Ok(calls)
}

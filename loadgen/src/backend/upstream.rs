//! The backend's calls to the rate limiter's HTTP API, on the generator's own HTTP/1.1 client:
//! a check before each request (connections pooled, one request on each at a time) and, when
//! it reports, every served request's latency, batched a few times a window.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::record::Record;
use crate::{
    client::{http, http1, socket::Dialer},
    wire::{Endpoint, ErrorKind},
};

/// How often batched reports go to the limiter.
pub const REPORT_EVERY: Duration = Duration::from_millis(20);

/// The limiter's HTTP API, for checks.
pub struct Upstream {
    dialer: Dialer,
    check_line: Vec<u8>,
    host: Vec<u8>,
    idle: Mutex<Vec<http1::Connection>>,
}

impl Upstream {
    pub fn new(limiter: &Endpoint, resource: &str) -> Self {
        Self {
            dialer: Dialer::plain(limiter.authority()),
            check_line: format!("POST /check?resource={resource} HTTP/1.1\r\n").into_bytes(),
            host: format!("host: {}\r\n", limiter.authority()).into_bytes(),
            idle: Mutex::default(),
        }
    }

    /// Asks the limiter whether `key` may go on; its status and body.
    pub async fn check(&self, key: &[u8]) -> Result<(u16, Bytes), ErrorKind> {
        let mut slot = self.idle.lock().pop();
        let parts: [&[u8]; 5] = [
            &self.check_line,
            &self.host,
            b"x-api-key: ",
            key,
            b"\r\ncontent-length: 0\r\n\r\n",
        ];
        let result = http::exchange(&mut slot, &self.dialer, &parts).await;
        if let Some(connection) = slot {
            self.idle.lock().push(connection);
        }
        result
    }
}

/// One served (or failed) request, to report.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub latency: Duration,
    pub failed: bool,
}

/// Sends what it is given to the limiter's `POST /report` every [`REPORT_EVERY`], and records
/// the factor each answer carries. Ends when every sender is dropped.
pub async fn report(
    limiter: Endpoint,
    resource: String,
    token: String,
    mut served: mpsc::UnboundedReceiver<Served>,
    record: Arc<Record>,
) {
    let dialer = Dialer::plain(limiter.authority());
    let line = b"POST /report HTTP/1.1\r\n";
    let host = format!("host: {}\r\n", limiter.authority());
    let authorization =
        format!("authorization: Bearer {token}\r\ncontent-type: application/json\r\n");
    let mut connection = None;
    let mut batch = Vec::new();
    let mut ticker = tokio::time::interval(REPORT_EVERY);
    loop {
        ticker.tick().await;
        let open = loop {
            match served.try_recv() {
                Ok(one) => batch.push(json!({
                    "resource": resource,
                    "latency_ms": one.latency.as_secs_f64() * 1e3,
                    "failed": one.failed,
                })),
                Err(mpsc::error::TryRecvError::Empty) => break true,
                Err(mpsc::error::TryRecvError::Disconnected) => break false,
            }
        };
        if !batch.is_empty() {
            let body = json!({ "reports": batch }).to_string();
            let length = format!("content-length: {}\r\n\r\n", body.len());
            let parts: [&[u8]; 5] = [
                line,
                host.as_bytes(),
                authorization.as_bytes(),
                length.as_bytes(),
                body.as_bytes(),
            ];
            match http::exchange(&mut connection, &dialer, &parts).await {
                Ok((200, answer)) => {
                    let factor = serde_json::from_slice::<Value>(&answer)
                        .ok()
                        .and_then(|answer| answer["factors"][&resource].as_f64());
                    if let Some(factor) = factor {
                        record.factor(factor);
                    }
                }
                Ok((status, answer)) => tracing::warn!(
                    status,
                    answer = %String::from_utf8_lossy(&answer),
                    "the limiter refused the backend's reports"
                ),
                Err(kind) => tracing::warn!(error = kind.label(), "reporting to the limiter"),
            }
            batch.clear();
        }
        if !open {
            return;
        }
    }
}

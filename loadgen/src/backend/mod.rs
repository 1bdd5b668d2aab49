//! `loadgen backend`: a stand-in for the service a rate limiter protects, so a run can show
//! what a limiter does for the service behind it (issue 18: adaptive limits). Every request,
//! on any path, asks the limiter's HTTP API first (`POST /check`, the caller's `X-API-Key`);
//! a refusal is passed back as the limiter gave it (shed before any work); an allowed request
//! waits for one of the backend's servers ([`queue`]), so its latency grows with the load, and
//! its latency is then reported to the limiter (`POST /report`, batched) when a report token
//! is given. `loadgen run --target http://BACKEND` drives load through it like any target.

pub mod experiment;
pub mod queue;
pub mod record;
pub mod upstream;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::sync::{mpsc, oneshot};

use self::{
    queue::Queue,
    record::{Fate, Record},
    upstream::{Served, Upstream},
};
use crate::wire::Endpoint;

#[derive(Debug, Clone)]
pub struct BackendOptions {
    pub listen: SocketAddr,
    /// The limiter's HTTP API (`http://HOST:PORT`).
    pub limiter: Endpoint,
    pub resource: String,
    /// A token of role `report`: report each served request's latency to the limiter.
    pub report_token: Option<String>,
    /// Requests worked on at once.
    pub servers: usize,
    /// How long each takes once a server has it.
    pub service_time: std::time::Duration,
    /// A request waiting in line longer than this fails (504), reported as failed.
    pub timeout: std::time::Duration,
}

struct Shared {
    upstream: Upstream,
    queue: Queue,
    record: Arc<Record>,
    reports: Option<mpsc::UnboundedSender<Served>>,
}

/// A backend serving until [`RunningBackend::stop`].
pub struct RunningBackend {
    pub addr: SocketAddr,
    /// What it saw.
    pub record: Arc<Record>,
    /// Requests a second its servers can serve.
    pub capacity: f64,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBackend {
    /// Stops serving; the reporter sends what it holds and ends.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

pub async fn start(options: BackendOptions) -> anyhow::Result<RunningBackend> {
    anyhow::ensure!(
        options.limiter.protocol == crate::wire::Protocol::Http && !options.limiter.tls,
        "--limiter `{}`: the backend asks the limiter's HTTP API; give http://HOST:PORT",
        options.limiter
    );
    let record = Arc::new(Record::default());
    let reports = options.report_token.clone().map(|token| {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(upstream::report(
            options.limiter.clone(),
            options.resource.clone(),
            token,
            receiver,
            record.clone(),
        ));
        sender
    });
    let queue = Queue::new(options.servers, options.service_time, options.timeout);
    let capacity = queue.capacity();
    let shared = Arc::new(Shared {
        upstream: Upstream::new(&options.limiter, &options.resource),
        queue,
        record: record.clone(),
        reports,
    });
    let router = Router::new().fallback(handle).with_state(shared);
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(RunningBackend {
        addr,
        record,
        capacity,
        stop,
        task,
    })
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let arrived = Instant::now();
    let key = headers
        .get("x-api-key")
        .map_or(&b"anonymous"[..], |value| value.as_bytes());
    let (status, answer) = match shared.upstream.check(key).await {
        Ok(answer) => answer,
        Err(kind) => {
            shared
                .record
                .request(arrived, Fate::LimiterError, arrived.elapsed());
            return (
                StatusCode::BAD_GATEWAY,
                format!("the limiter could not be asked: {}\n", kind.label()),
            )
                .into_response();
        }
    };
    let passed_back = |status: u16| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "application/json")],
            answer.clone(),
        )
            .into_response()
    };
    if status != 200 {
        let fate = if status == 503 {
            Fate::Shed
        } else {
            Fate::Denied
        };
        shared.record.request(arrived, fate, arrived.elapsed());
        return passed_back(status);
    }
    // The backend's own latency runs from when its work was asked for: the line and the work.
    let (fate, latency, response) = match shared.queue.serve().await {
        Ok(latency) => (Fate::Served, latency, passed_back(200)),
        Err(timed_out) => (
            Fate::Failed,
            timed_out.waited,
            (
                StatusCode::GATEWAY_TIMEOUT,
                "the backend's line was longer than its timeout\n",
            )
                .into_response(),
        ),
    };
    shared.record.request(arrived, fate, latency);
    if let Some(reports) = &shared.reports {
        let _ = reports.send(Served {
            latency,
            failed: fate == Fate::Failed,
        });
    }
    response
}

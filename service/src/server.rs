//! Starts the APIs on their listeners, runs the store's upkeep, and shuts down gracefully.
//! Tests, the load generator's demo and `main.rs` all start the service through [`start`].

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::{
    admin::{self, RulesAdmin},
    api::{
        capped::Capped,
        grpc::GrpcApi,
        http,
        rls::RlsApi,
        serve::{self, ConnectionLimits},
    },
    central::{self, CentralRules},
    clock::Clock,
    config::{BackendConfig, Config, RulesSource},
    limiter::Limiter,
    metrics::Metrics,
    reload::{self, ConfigSource},
    shutdown,
    store::{Backend, MemoryStore, RedisStore},
};

type RlsServer =
    sluice_proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer<
        RlsApi,
    >;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({api}): {source}")]
    Bind {
        api: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The store's error is part of this message, not a source, so it prints once.
    #[error("{0} (rules_source.url)")]
    Central(crate::central::CentralError),
    #[error("cannot reach Redis at {urls} ({field}): {reason}")]
    Store {
        urls: String,
        field: &'static str,
        reason: crate::store::StoreError,
    },
}

/// A started service. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The admin API's address, when `admin.addr` is configured.
    pub admin_addr: Option<SocketAddr>,
    limiter: Arc<Limiter<Backend>>,
    shutdown: watch::Sender<bool>,
    done: JoinHandle<Result<(), ServerError>>,
    /// The configuration it started with: what a file reload compares against.
    config: Config,
    /// Asks whatever follows the rules (the central document, or a file once
    /// [`RunningServer::follow_file`] starts) to look again now.
    reloads: mpsc::Sender<()>,
    /// The receiving end, until a file follower takes it (central rules take it at start).
    reload_requests: Option<mpsc::Receiver<()>>,
}

impl RunningServer {
    pub fn limiter(&self) -> &Arc<Limiter<Backend>> {
        &self.limiter
    }

    /// Reloads the rules from the config file `source` on [`RunningServer::request_reload`]
    /// and whenever the file changes ([`reload::watch`]). Nothing when the rules are central.
    pub fn follow_file(&mut self, source: ConfigSource) {
        let Some(requests) = self.reload_requests.take() else {
            return;
        };
        let poll = self.config.server.config_poll_interval;
        info!(path = %source.path.display(), ?poll, "rules reload on SIGHUP and when the file changes");
        tokio::spawn(reload::watch(
            self.limiter.clone(),
            self.config.clone(),
            source,
            poll,
            requests,
            self.shutdown.subscribe(),
        ));
    }

    /// Asks for the rules to be read again now (SIGHUP); false when nothing follows them (no
    /// config file, central rules off).
    pub fn request_reload(&self) -> bool {
        if self.reload_requests.is_some() {
            return false;
        }
        let _ = self.reloads.try_send(());
        true
    }

    /// Starts draining: readiness turns false, listeners close, in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until both APIs have stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.done.await.expect("server task does not panic")
    }

    /// Shuts down and waits.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown();
        self.wait().await
    }
}

/// Builds the store named by the configuration; a Redis store connects and loads its scripts.
pub async fn build_backend(config: &Config, metrics: &Metrics) -> Result<Backend, ServerError> {
    Ok(match &config.backend {
        BackendConfig::Memory(memory) => Backend::Memory(MemoryStore::new(memory, Clock::system())),
        BackendConfig::Redis(redis) => Backend::Redis(
            RedisStore::connect(redis, metrics.redis())
                .await
                .map_err(|reason| ServerError::Store {
                    urls: redis.addresses(),
                    field: if redis.sentinel.is_some() {
                        "backend.redis.sentinel"
                    } else {
                        "backend.redis.urls"
                    },
                    reason,
                })?,
        ),
    })
}

/// Binds both listeners and serves until [`RunningServer::shutdown`].
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let metrics = Metrics::new();
    let backend = build_backend(&config, &metrics).await?;
    let limiter = Arc::new(Limiter::from_config(&config, backend, metrics));
    start_with(config, limiter).await
}

/// As [`start`], with a limiter built by the caller (tests use a manual clock this way).
pub async fn start_with(
    config: Config,
    limiter: Arc<Limiter<Backend>>,
) -> Result<RunningServer, ServerError> {
    let bind = |api, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { api, addr, source })
    };
    let grpc_listener = bind("gRPC", config.server.grpc_addr).await?;
    let http_listener = bind("HTTP", config.server.http_addr).await?;
    let local = |listener: &TcpListener, api, addr| {
        listener
            .local_addr()
            .map_err(|source| ServerError::Bind { api, addr, source })
    };
    let grpc_addr = local(&grpc_listener, "gRPC", config.server.grpc_addr)?;
    let http_addr = local(&http_listener, "HTTP", config.server.http_addr)?;
    let admin_listener = match &config.admin {
        Some(admin) => {
            let listener = bind("admin", admin.addr).await?;
            let addr = local(&listener, "admin", admin.addr)?;
            Some((listener, addr, admin.tokens.clone()))
        }
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(|(_, addr, _)| *addr);

    let central = match &config.rules_source {
        RulesSource::Redis(source) => Some(
            CentralRules::connect(source)
                .await
                .map_err(ServerError::Central)?,
        ),
        RulesSource::File => None,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<sluice_proto::v1::rate_limiter_server::RateLimiterServer<GrpcApi>>()
        .await;
    health_reporter.set_serving::<RlsServer>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("embedded descriptors are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("embedded descriptors are valid");

    // Backend reports (adaptive limits) take the admin API's tokens.
    let reporters = config.admin.as_ref().map(|admin| admin.tokens.clone());
    let grpc = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.server.grpc_max_concurrent_streams))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GrpcApi::server(limiter.clone(), reporters.clone()))
        .add_service(RlsApi::server(
            limiter.clone(),
            config.envoy.settings.clone(),
        ))
        .serve_with_incoming_shutdown(
            Capped::new(
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                config.server.grpc_max_connections,
                "server.grpc_max_connections",
                limiter.metrics().connections("grpc"),
            ),
            shutdown::requested(shutdown_rx.clone()),
        );
    let connection_limits = ConnectionLimits {
        max_connections: config.server.http_max_connections,
        header_timeout: config.server.http_header_timeout,
    };
    let http = serve::serve(
        http_listener,
        http::router(limiter.clone(), ready.clone(), reporters),
        connection_limits,
        limiter.metrics().connections("public"),
        shutdown_rx.clone(),
    );

    let admin = admin_listener.map(|(listener, _, tokens)| {
        serve::serve(
            listener,
            admin::router(
                limiter.clone(),
                tokens,
                RulesAdmin {
                    limiter: limiter.clone(),
                    config: Arc::new(config.clone()),
                    central: central.clone(),
                },
            ),
            connection_limits,
            limiter.metrics().connections("admin"),
            shutdown_rx.clone(),
        )
    });

    let (reloads, reload_requests) = mpsc::channel(1);
    let reload_requests = match central {
        Some(central) => {
            info!("rules follow the central document in Redis");
            tokio::spawn(central::follow(
                limiter.clone(),
                config.clone(),
                central,
                reload_requests,
                shutdown_rx.clone(),
            ));
            None
        }
        None => Some(reload_requests),
    };
    let upkeep = spawn_upkeep(&config, limiter.clone(), shutdown_rx.clone());
    if let BackendConfig::Redis(redis) = &config.backend
        && redis.fallback_share_live
    {
        tokio::spawn(follow_live_nodes(limiter.clone(), shutdown_rx.clone()));
    }
    let grace = config.server.shutdown_grace;
    let mut on_shutdown = shutdown_rx;
    let done = tokio::spawn(async move {
        let grpc = tokio::spawn(grpc);
        let http = tokio::spawn(http);
        let admin = tokio::spawn(async move {
            if let Some(admin) = admin {
                admin.await;
            }
        });
        let _ = on_shutdown.wait_for(|stop| *stop).await;
        ready.store(false, Ordering::Relaxed);
        health_reporter
            .set_not_serving::<sluice_proto::v1::rate_limiter_server::RateLimiterServer<GrpcApi>>()
            .await;
        health_reporter.set_not_serving::<RlsServer>().await;
        info!(grace = ?grace, "draining in-flight requests");
        let drain = async {
            let grpc = grpc.await.expect("gRPC task does not panic");
            http.await.expect("HTTP task does not panic");
            admin.await.expect("admin task does not panic");
            grpc.map_err(ServerError::from)
        };
        let result = match tokio::time::timeout(grace, drain).await {
            Ok(result) => result,
            Err(_) => {
                warn!(grace = ?grace, "requests still in flight after the grace period; closing");
                Ok(())
            }
        };
        upkeep.abort();
        result
    });
    match admin_addr {
        Some(admin_addr) => info!(%grpc_addr, %http_addr, %admin_addr, "sluice listening"),
        None => info!(%grpc_addr, %http_addr, "sluice listening (admin API off: no admin.addr)"),
    }
    Ok(RunningServer {
        config,
        reloads,
        reload_requests,
        grpc_addr,
        http_addr,
        admin_addr,
        limiter,
        shutdown,
        done,
    })
}

/// Background upkeep: sweeping in-memory state that is back to fresh, and for Redis, probing
/// a failing store so the circuit closes as soon as it answers.
/// How often the node looks whether an adaptive resource's reports are due at the store.
const ADAPTIVE_TICK: Duration = Duration::from_millis(20);

fn spawn_upkeep(
    config: &Config,
    limiter: Arc<Limiter<Backend>>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let interval = match &config.backend {
        BackendConfig::Memory(memory) => memory.sweep_interval,
        BackendConfig::Redis(_) => Duration::from_secs(1),
    };
    tokio::spawn(async move {
        // Only Redis has health to watch; this branch must not end the select below for
        // memory, or the sweep and the adaptive flush would stop with it.
        let health = async {
            match limiter.store() {
                Backend::Redis(store) => store.watch_health().await,
                Backend::Memory(_) => std::future::pending().await,
            }
        };
        // Adaptive resources hand their reports over a few times a window.
        let adapt = async {
            let mut ticker = tokio::time::interval(ADAPTIVE_TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !*shutdown.borrow() {
                ticker.tick().await;
                limiter.flush_reports().await;
            }
        };
        let sweep = async {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !*shutdown.borrow() {
                ticker.tick().await;
                limiter.upkeep();
            }
        };
        tokio::select! {
            () = health => {}
            () = sweep => {}
            () = adapt => {}
        }
    })
}

/// How often a node announces itself in Redis (`fallback_share = "live"`), and how long an
/// announcement counts: a node gone for longer is no longer counted.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
const ANNOUNCEMENT_TTL: Duration = Duration::from_secs(3);

/// `fallback_share = "live"`: announces this node in Redis every second and sets the local
/// failure mode's share to 1 / the nodes announced; while Redis is down the last count holds
/// (that is when the share is used). Withdraws the announcement when shutting down.
async fn follow_live_nodes(limiter: Arc<Limiter<Backend>>, mut shutdown: watch::Receiver<bool>) {
    let Backend::Redis(store) = limiter.store() else {
        return;
    };
    let node = format!(
        "{:016x}",
        std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            (std::process::id(), std::time::SystemTime::now()),
        )
    );
    let mut ticker = tokio::time::interval(ANNOUNCE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        if let Ok(nodes) = store.announce(&node, ANNOUNCEMENT_TTL).await {
            let nodes = nodes.max(1);
            limiter.metrics().set_live_nodes(nodes);
            limiter.set_fallback_share(1.0 / nodes as f64);
        }
    }
    let _ = store.withdraw(&node).await;
}

/// Runs until SIGINT or SIGTERM, then drains: what the `ratelimiter` binary does. With a
/// config `source`, its rules reload on SIGHUP and when the file changes ([`reload`]).
pub async fn run_until_signal(config: Config, source: Option<ConfigSource>) -> anyhow::Result<()> {
    // Handlers go in before the listeners open: a SIGTERM that arrives as soon as the node
    // says it listens (a rollout, a test) must drain it, not kill it with the default action.
    let signal = shutdown_signal().context("installing the SIGINT and SIGTERM handlers")?;
    let reloads = reload_requests().context("installing the SIGHUP handler")?;
    let mut server = start(config).await?;
    if let Some(source) = source {
        server.follow_file(source);
    }
    let server = Arc::new(server);
    let forward = {
        let server = server.clone();
        let mut reloads = reloads;
        tokio::spawn(async move {
            while reloads.recv().await.is_some() {
                if !server.request_reload() {
                    warn!("SIGHUP: no config file to reload (start with --config to reload rules)");
                }
            }
        })
    };
    signal.await;
    forward.abort();
    let _ = forward.await;
    let server = Arc::into_inner(server).expect("the SIGHUP task has ended");
    info!("shutdown signal received");
    server.stop().await?;
    info!("stopped");
    Ok(())
}

/// Installs the SIGHUP handler now; each SIGHUP sends one message (a burst collapses into one).
fn reload_requests() -> std::io::Result<tokio::sync::mpsc::Receiver<()>> {
    let (send, receive) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let _ = send.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(send);
    Ok(receive)
}

/// Installs the handlers now; the future completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(Box::pin(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }))
    }
    #[cfg(not(unix))]
    Ok(Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    }))
}

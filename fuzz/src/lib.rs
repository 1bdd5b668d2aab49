//! What the fuzz targets share: one runtime, one limiter on the memory backend with rules of
//! every kind (stacked limits, a ban, shadow mode, an adaptive resource, a concurrency limit, an
//! Envoy domain), built once per process.

use std::sync::{Arc, OnceLock};

use sluice::{
    config::{Config, Overrides},
    limiter::Limiter,
    metrics::Metrics,
    store::Backend,
};

/// Rules that give every request path something to decide.
const CONFIG: &str = r#"
[envoy]
config_paths = ["edge.yaml"]
headers = "both"

[rules.api]
algorithm = "token_bucket"
capacity = 5
refill_per_second = 1

[rules.stacked]
[[rules.stacked.limits]]
name = "burst"
algorithm = "fixed_window"
limit = 3
window = "1s"
[[rules.stacked.limits]]
name = "daily"
algorithm = "sliding_window_log"
limit = 10
window = "1d"

[rules.login]
algorithm = "gcra"
rate_per_second = 1
burst = 2
[rules.login.ban]
after = 2
within = "1m"
duration = "1m"

[rules.trial]
algorithm = "sliding_window_counter"
limit = 2
window = "1m"
shadow = true

[rules.backend]
algorithm = "gcra"
rate_per_second = 10
burst = 5
[rules.backend.adaptive]
target_latency = "50ms"
window = "100ms"
min_reports = 1

[rules.jobs]
algorithm = "fixed_window"
limit = 10
window = "1m"
[rules.jobs.concurrency]
max_in_flight = 2
lease_ttl = "1s"
"#;

/// The report-role token the public APIs take (seeds/http_request/report sends it).
pub const REPORT_TOKEN: &str = "fuzz-report-token-0123";

const ENVOY_YAML: &str = r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 2
  - key: path
    value: /login
    descriptors:
      - key: user
        rate_limit:
          unit: minute
          requests_per_unit: 3
  - key: plan
    value: "gold*"
    rate_limit:
      unit: hour
      requests_per_unit: 100
"#;

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The configuration [`limiter`] runs, from files in a folder of this process's own.
pub fn config() -> &'static Config {
    static CONFIG_ONCE: OnceLock<Config> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        std::fs::write(dir.join("edge.yaml"), ENVOY_YAML).expect("the YAML written");
        let path = dir.join("sluice.toml");
        std::fs::write(&path, CONFIG).expect("the config written");
        let overrides = Overrides {
            admin_addr: Some("127.0.0.1:0".into()),
            admin_tokens: Some(format!("backend:report:{REPORT_TOKEN}")),
            ..Overrides::default()
        };
        Config::load(Some(&path), &overrides).expect("the fuzz config is valid")
    })
}

pub fn limiter() -> Arc<Limiter<Backend>> {
    static LIMITER: OnceLock<Arc<Limiter<Backend>>> = OnceLock::new();
    LIMITER
        .get_or_init(|| {
            let config = config();
            let metrics = Metrics::new();
            let backend = runtime()
                .block_on(sluice::server::build_backend(config, &metrics))
                .expect("the memory backend");
            Arc::new(Limiter::from_config(config, backend, metrics))
        })
        .clone()
}

/// The tokens backend reports take: the configuration's admin tokens.
pub fn reporters() -> Option<sluice::auth::Tokens> {
    config().admin.as_ref().map(|admin| admin.tokens.clone())
}

/// A loopback listener for the client targets' scripted servers, bound once.
pub fn listener() -> &'static tokio::net::TcpListener {
    static LISTENER: OnceLock<tokio::net::TcpListener> = OnceLock::new();
    LISTENER.get_or_init(|| {
        runtime()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port")
    })
}

/// Serves one connection on [`listener`]: reads `until` (the request's end) or 64 KiB, then
/// writes `reply` and closes.
pub async fn reply_once(reply: Vec<u8>, until: &'static [u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = listener().accept().await.expect("the client connects");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !seen.windows(until.len()).any(|window| window == until) && seen.len() < 65_536 {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => seen.extend_from_slice(&buffer[..read]),
        }
    }
    let _ = socket.write_all(&reply).await;
    let _ = socket.shutdown().await;
}

//! Configuration: a TOML file, overridden by flags and environment variables, validated as a
//! whole. Validation reports every problem at once, each with its field path and the fix, and
//! yields either a complete [`Config`] or nothing: the service never starts half-configured.

mod adaptive_config;
mod admin_config;
mod ban_config;
mod concurrency_config;
mod duration;
mod envoy_config;
pub mod envoy_yaml;
mod redis_config;
pub mod rule_config;
mod rules_source;

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use admin_config::AdminConfig;
pub use duration::parse_duration;
pub use envoy_config::{EnvoyConfig, EnvoyHeaders, EnvoySettings, StoreFailure, source_files};
use redis_config::RawRedis;
pub use redis_config::{RedisConfig, SentinelConfig};
pub use rules_source::{CentralSource, DEFAULT_RULES_KEY, RulesSource};

use crate::rules::RuleSet;

/// Used when no config file is given: every resource gets 100 tokens, refilled at 10/s.
pub const BUILTIN_CONFIG: &str = r#"
[default_rule]
name = "default"
algorithm = "token_bucket"
capacity = 100
refill_per_second = 10
"#;

pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_KEY_BYTES: u64 = 256;
pub const MAX_MAX_KEY_BYTES: u64 = 65_536;
pub const DEFAULT_SHARDS: u64 = 64;
pub const MAX_SHARDS: u64 = 4_096;
pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const MAX_MAX_KEYS: u64 = 1_000_000_000;
/// Default of `backend.redis.max_in_flight`: deep enough to keep Redis busy, shallow enough
/// that a call's wait behind the others stays far inside the deadline.
pub const DEFAULT_REDIS_MAX_IN_FLIGHT: u64 = 128;

/// A validated, complete configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: RequestLimits,
    pub backend: BackendConfig,
    pub rules: RuleSet,
    /// Off unless `admin.addr` is set.
    pub admin: Option<AdminConfig>,
    /// Where the rules come from: this file, or a document in Redis shared by a fleet.
    pub rules_source: RulesSource,
    /// Envoy's rate limit service: its settings and YAML files (whose limits are in `rules`).
    pub envoy: EnvoyConfig,
    /// A stable hash of the configuration's text (before overrides): every node that loaded
    /// the same file reports the same version.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Port 0 picks a free port (tests and the demo do this).
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long SIGTERM waits for in-flight requests before closing.
    pub shutdown_grace: Duration,
    /// Every rule in shadow mode: nothing is denied; would-be denials are counted and logged.
    pub shadow: bool,
    /// Streams one gRPC connection may have open at once (advertised in HTTP/2 SETTINGS), so
    /// one client cannot hold unbounded work on the node.
    pub grpc_max_concurrent_streams: u32,
    /// How often the config file is reread for changes (zero: only on SIGHUP).
    pub config_poll_interval: Duration,
    /// Connections one HTTP listener (public or admin) holds open at most; more are closed
    /// on arrival.
    pub http_max_connections: usize,
    /// Connections the gRPC listener holds open at most; more are closed on arrival.
    pub grpc_max_connections: usize,
    /// How long an HTTP connection may take to send a request's headers, and stay idle
    /// between requests.
    pub http_header_timeout: Duration,
}

/// Default of `server.http_max_connections`.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: u64 = 4096;

/// Default of `server.grpc_max_concurrent_streams`.
pub const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Bounds on what a request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_key_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    Memory(MemoryConfig),
    Redis(RedisConfig),
}

/// What the memory store does when it holds `max_keys` keys and a new one arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Forget the key whose loss costs least, from a small sample: an expired one, else the
    /// one with the most quota left (a spent key goes only when the sample holds nothing else).
    #[default]
    Evict,
    /// Forget only a key whose loss costs nothing (expired, or at full quota); with none, the
    /// new key is refused and its rule's failure mode answers (deny, unless it says otherwise).
    DenyNew,
}

impl FullPolicy {
    pub const NAMES: [&'static str; 2] = ["evict", "deny_new"];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Independent locks; a power of two.
    pub shards: usize,
    /// The most keys held; past it `full_policy` decides.
    pub max_keys: usize,
    pub full_policy: FullPolicy,
    /// How often keys whose state is back to fresh are dropped.
    pub sweep_interval: Duration,
}

/// Values from flags or environment variables; each replaces the file's value when set.
#[derive(Clone, Default, PartialEq)]
pub struct Overrides {
    pub grpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub backend: Option<String>,
    /// Replaces `backend.redis.urls` with this one URL.
    pub redis_url: Option<String>,
    pub max_keys: Option<u64>,
    pub max_key_bytes: Option<u64>,
    pub shards: Option<u64>,
    /// `Some(true)` puts every rule in shadow mode (`server.shadow`).
    pub shadow: Option<bool>,
    /// `admin.addr`.
    pub admin_addr: Option<String>,
    /// Admin tokens as `name:role:token` entries; replaces `admin.tokens_file`.
    pub admin_tokens: Option<String>,
}

impl Overrides {
    /// A node on loopback: every listener (gRPC, HTTP, admin) on a port the OS picks, the
    /// admin API taking `admin_tokens` (`name:role:token` entries). What tests, the demo and
    /// embedded nodes start with.
    pub fn loopback(admin_tokens: &str) -> Self {
        Self {
            grpc_addr: Some("127.0.0.1:0".into()),
            http_addr: Some("127.0.0.1:0".into()),
            admin_addr: Some("127.0.0.1:0".into()),
            admin_tokens: Some(admin_tokens.into()),
            ..Self::default()
        }
    }
}

/// Never prints the admin tokens.
impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url)
            .field("max_keys", &self.max_keys)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("shards", &self.shards)
            .field("shadow", &self.shadow)
            .field("admin_addr", &self.admin_addr)
            .field(
                "admin_tokens",
                &self.admin_tokens.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One problem found by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where, as a TOML path: `rules.login.window`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin} is not valid: {message}")]
    Parse { origin: String, message: String },
    #[error("{}", IssueList(.0))]
    Invalid(Vec<ConfigIssue>),
}

struct IssueList<'a>(&'a [ConfigIssue]);

impl fmt::Display for IssueList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config has {} problem(s):", self.0.len())?;
        for issue in self.0 {
            write!(f, "\n  - {}: {}", issue.path, issue.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The problems found, when validation (not reading or parsing) failed.
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            _ => &[],
        }
    }
}

impl Config {
    /// Reads `path` (or the built-in default when `None`), applies `overrides`, validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse_in(&text, &path.display().to_string(), path.parent(), overrides)
            }
            None => Self::parse(BUILTIN_CONFIG, "(built-in default)", overrides),
        }
    }

    /// Parses TOML `text`; `origin` names it in errors. Relative paths in it are read from
    /// the working directory.
    pub fn parse(text: &str, origin: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::parse_in(text, origin, None, overrides)
    }

    /// Parses TOML `text` whose file is in `directory`: `envoy.config_paths` are read from
    /// there, as a file mounted beside its YAML files expects.
    fn parse_in(
        text: &str,
        origin: &str,
        directory: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.to_owned(),
            message: err.to_string(),
        })?;
        raw.apply(overrides);
        let mut config = raw.validate(directory)?;
        config.version = version_of(text, &config.envoy);
        Ok(config)
    }
}

/// A configuration's version: its text and every Envoy YAML file it read, hashed together.
fn version_of(text: &str, envoy: &EnvoyConfig) -> String {
    if envoy.sources.is_empty() {
        return crate::decision_log::short_hash(text.as_bytes());
    }
    let mut all = text.as_bytes().to_vec();
    for source in &envoy.sources {
        all.extend_from_slice(b"\0");
        all.extend_from_slice(source.name.as_bytes());
        all.extend_from_slice(b"\0");
        all.extend_from_slice(source.text.as_bytes());
    }
    crate::decision_log::short_hash(&all)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    admin: admin_config::RawAdmin,
    rules_source: rules_source::RawRulesSource,
    envoy: envoy_config::RawEnvoy,
    limits: RawLimits,
    backend: RawBackend,
    default_rule: Option<rule_config::RawRule>,
    rules: std::collections::BTreeMap<String, rule_config::RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    grpc_addr: Option<String>,
    http_addr: Option<String>,
    shutdown_grace: Option<String>,
    shadow: Option<bool>,
    grpc_max_concurrent_streams: Option<u64>,
    config_poll_interval: Option<String>,
    http_max_connections: Option<u64>,
    http_header_timeout: Option<String>,
    grpc_max_connections: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_key_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawBackend {
    kind: Option<String>,
    memory: RawMemory,
    redis: RawRedis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMemory {
    shards: Option<u64>,
    max_keys: Option<u64>,
    sweep_interval: Option<String>,
    full_policy: Option<String>,
}

/// Collects problems so validation can report all of them at once.
#[derive(Debug, Default)]
pub(crate) struct Issues(Vec<ConfigIssue>);

impl Issues {
    /// The problems as an error, if there are any.
    pub(crate) fn into_error(self) -> Option<ConfigError> {
        (!self.0.is_empty()).then_some(ConfigError::Invalid(self.0))
    }

    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl RawConfig {
    fn apply(&mut self, overrides: &Overrides) {
        let replace = |slot: &mut Option<String>, value: &Option<String>| {
            if value.is_some() {
                slot.clone_from(value);
            }
        };
        replace(&mut self.server.grpc_addr, &overrides.grpc_addr);
        replace(&mut self.server.http_addr, &overrides.http_addr);
        replace(&mut self.backend.kind, &overrides.backend);
        if let Some(url) = &overrides.redis_url {
            // The flag names one Redis: it replaces the file's URLs and any Sentinels.
            self.backend.redis.urls = Some(vec![url.clone()]);
            self.backend.redis.sentinel = None;
        }
        self.backend.memory.max_keys = overrides.max_keys.or(self.backend.memory.max_keys);
        self.backend.memory.shards = overrides.shards.or(self.backend.memory.shards);
        self.limits.max_key_bytes = overrides.max_key_bytes.or(self.limits.max_key_bytes);
        self.server.shadow = overrides.shadow.or(self.server.shadow);
        replace(&mut self.admin.addr, &overrides.admin_addr);
        self.admin.tokens_env.clone_from(&overrides.admin_tokens);
    }

    fn validate(self, directory: Option<&Path>) -> Result<Config, ConfigError> {
        let mut issues = Issues::default();
        let server = self.server.validate(&mut issues);
        let admin = self.admin.validate(&server, &mut issues);
        let limits = self.limits.validate(&mut issues);
        let backend = self.backend.validate(&mut issues);
        let rules_source = self.rules_source.validate(&backend, &mut issues);
        let envoy = self.envoy.validate(directory, &mut issues);
        let mut rules = rule_config::build_rule_set(
            self.default_rule,
            self.rules,
            limits.max_key_bytes,
            !envoy.sources.is_empty(),
            &mut issues,
        );
        envoy_yaml::build(&envoy.sources, &mut rules, &mut issues);
        rule_config::check_reports_can_arrive(&rules, admin.is_some(), &mut issues);
        if server.shadow {
            rules.shadow_all();
        }
        if issues.0.is_empty() {
            Ok(Config {
                server,
                limits,
                backend,
                rules,
                admin,
                rules_source,
                envoy,
                version: String::new(),
            })
        } else {
            Err(ConfigError::Invalid(issues.0))
        }
    }
}

impl RawServer {
    fn validate(self, issues: &mut Issues) -> ServerConfig {
        let mut addr = |field: &str, value: Option<String>, default: &str| {
            let text = value.unwrap_or_else(|| default.to_owned());
            text.parse::<SocketAddr>().unwrap_or_else(|_| {
                issues.add(
                    format!("server.{field}"),
                    format!("`{text}` is not a socket address; write ip:port, e.g. \"{default}\" (port 0 picks a free port)"),
                );
                default.parse().expect("default addresses parse")
            })
        };
        let grpc_addr = addr("grpc_addr", self.grpc_addr, DEFAULT_GRPC_ADDR);
        let http_addr = addr("http_addr", self.http_addr, DEFAULT_HTTP_ADDR);
        if grpc_addr == http_addr && grpc_addr.port() != 0 {
            issues.add(
                "server.http_addr",
                format!("{http_addr} is also server.grpc_addr; give the HTTP API its own port"),
            );
        }
        let shutdown_grace = duration_field(
            issues,
            "server.shutdown_grace",
            self.shutdown_grace,
            Duration::from_secs(10),
        );
        let streams = count_field(
            issues,
            "server.grpc_max_concurrent_streams",
            self.grpc_max_concurrent_streams,
            DEFAULT_GRPC_MAX_CONCURRENT_STREAMS.into(),
            1_000_000,
            "",
        );
        let config_poll_interval = duration_field(
            issues,
            "server.config_poll_interval",
            self.config_poll_interval,
            Duration::from_secs(1),
        );
        let below_fd_limit = ", below the process's open-file limit";
        let http_max_connections = count_field(
            issues,
            "server.http_max_connections",
            self.http_max_connections,
            DEFAULT_HTTP_MAX_CONNECTIONS,
            1_000_000,
            below_fd_limit,
        );
        let grpc_max_connections = count_field(
            issues,
            "server.grpc_max_connections",
            self.grpc_max_connections,
            DEFAULT_HTTP_MAX_CONNECTIONS,
            1_000_000,
            below_fd_limit,
        );
        let http_header_timeout = duration_field(
            issues,
            "server.http_header_timeout",
            self.http_header_timeout,
            Duration::from_secs(10),
        );
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&http_header_timeout) {
            issues.add(
                "server.http_header_timeout",
                "use \"100ms\" to \"5m\"; a client slower than that is holding the connection, not using it",
            );
        }
        ServerConfig {
            http_max_connections: http_max_connections as usize,
            grpc_max_connections: grpc_max_connections as usize,
            http_header_timeout,
            config_poll_interval,
            grpc_addr,
            http_addr,
            shutdown_grace,
            shadow: self.shadow.unwrap_or(false),
            grpc_max_concurrent_streams: streams as u32,
        }
    }
}

impl RawLimits {
    fn validate(self, issues: &mut Issues) -> RequestLimits {
        let max_key_bytes = self.max_key_bytes.unwrap_or(DEFAULT_MAX_KEY_BYTES);
        if !(1..=MAX_MAX_KEY_BYTES).contains(&max_key_bytes) {
            issues.add(
                "limits.max_key_bytes",
                format!("{max_key_bytes} is out of range; use 1 to {MAX_MAX_KEY_BYTES} (default {DEFAULT_MAX_KEY_BYTES})"),
            );
        }
        RequestLimits {
            max_key_bytes: max_key_bytes.clamp(1, MAX_MAX_KEY_BYTES) as usize,
        }
    }
}

impl RawBackend {
    fn validate(self, issues: &mut Issues) -> BackendConfig {
        let kind = self.kind.as_deref().unwrap_or("memory");
        if !matches!(kind, "memory" | "redis") {
            issues.add(
                "backend.kind",
                format!("unknown backend `{kind}`; use \"memory\" or \"redis\""),
            );
        }
        let memory = self.memory.validate(issues);
        let redis = self.redis.validate(issues);
        if kind == "redis" {
            BackendConfig::Redis(redis)
        } else {
            BackendConfig::Memory(memory)
        }
    }
}

impl RawMemory {
    fn validate(self, issues: &mut Issues) -> MemoryConfig {
        let shards = self.shards.unwrap_or(DEFAULT_SHARDS);
        if !(1..=MAX_SHARDS).contains(&shards) || !shards.is_power_of_two() {
            issues.add(
                "backend.memory.shards",
                format!("{shards} is not a power of two from 1 to {MAX_SHARDS}; use e.g. {DEFAULT_SHARDS}"),
            );
        }
        let max_keys = self.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if max_keys < shards || max_keys > MAX_MAX_KEYS {
            issues.add(
                "backend.memory.max_keys",
                format!("{max_keys} is out of range; use at least backend.memory.shards ({shards}) and at most {MAX_MAX_KEYS}"),
            );
        }
        let sweep_interval = duration_field(
            issues,
            "backend.memory.sweep_interval",
            self.sweep_interval,
            Duration::from_secs(1),
        );
        if sweep_interval < Duration::from_millis(10) {
            issues.add(
                "backend.memory.sweep_interval",
                "must be at least \"10ms\"; sweeping more often only burns CPU",
            );
        }
        let full_policy = match self.full_policy.as_deref() {
            None | Some("evict") => FullPolicy::Evict,
            Some("deny_new") => FullPolicy::DenyNew,
            Some(other) => {
                issues.add(
                    "backend.memory.full_policy",
                    format!(
                        "unknown policy `{other}`; use one of {}",
                        FullPolicy::NAMES.join(", ")
                    ),
                );
                FullPolicy::Evict
            }
        };
        MemoryConfig {
            full_policy,
            shards: shards.clamp(1, MAX_SHARDS).next_power_of_two() as usize,
            max_keys: max_keys.clamp(1, MAX_MAX_KEYS) as usize,
            sweep_interval,
        }
    }
}

/// A count from 1 to `max` (`default` when absent); out of range is an issue (with `note`
/// after the range in its fix) and the value is clamped into it.
fn count_field(
    issues: &mut Issues,
    path: &str,
    value: Option<u64>,
    default: u64,
    max: u64,
    note: &str,
) -> u64 {
    let value = value.unwrap_or(default);
    if !(1..=max).contains(&value) {
        issues.add(
            path,
            format!("{value} is out of range; use 1 to {max} (default {default}){note}"),
        );
    }
    value.clamp(1, max)
}

pub(crate) fn duration_field(
    issues: &mut Issues,
    path: &str,
    value: Option<String>,
    default: Duration,
) -> Duration {
    match value.map(|text| parse_duration(&text)) {
        None => default,
        Some(Ok(duration)) => duration,
        Some(Err(message)) => {
            issues.add(path, message);
            default
        }
    }
}

#[cfg(test)]
mod tests;

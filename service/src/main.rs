//! `ratelimiter`: parses flags and configuration, then runs the service until SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use sluice::{
    config::{Config, Overrides},
    reload::ConfigSource,
};
use tracing_subscriber::EnvFilter;

/// Sluice rate-limiting service: gRPC and HTTP APIs over one decision core.
///
/// Every flag can also be set by its environment variable; flags win over the environment,
/// which wins over the config file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file; without it every resource gets a 100-token bucket refilled at 10/s.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (server.grpc_addr).
    #[arg(long, env = "SLUICE_GRPC_ADDR")]
    grpc_addr: Option<String>,
    /// HTTP listen address (server.http_addr).
    #[arg(long, env = "SLUICE_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Storage backend (backend.kind).
    #[arg(long, env = "SLUICE_BACKEND")]
    backend: Option<String>,
    /// Redis URL for the redis backend (replaces backend.redis.urls).
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis_url: Option<String>,
    /// Most keys the memory backend holds (backend.memory.max_keys).
    #[arg(long, env = "SLUICE_MAX_KEYS")]
    max_keys: Option<u64>,
    /// Lock shards of the memory backend (backend.memory.shards).
    #[arg(long, env = "SLUICE_SHARDS")]
    shards: Option<u64>,
    /// Longest accepted client key in bytes (limits.max_key_bytes).
    #[arg(long, env = "SLUICE_MAX_KEY_BYTES")]
    max_key_bytes: Option<u64>,
    /// Answer every rule in shadow mode: deny nothing, count and log would-be denials
    /// (server.shadow).
    #[arg(long, env = "SLUICE_SHADOW")]
    shadow: bool,
    /// Admin API listen address (admin.addr); off unless set. Its tokens come from
    /// admin.tokens_file or the SLUICE_ADMIN_TOKENS environment variable (`name:role:token`
    /// entries, comma-separated), never from a flag, which any local user could read.
    #[arg(long, env = "SLUICE_ADMIN_ADDR")]
    admin_addr: Option<String>,
    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    check_config: bool,
    /// Ask the node whose HTTP listener is HOST:PORT for /readyz; exit 0 when ready, 1 when
    /// not (a container healthcheck in an image without a shell).
    #[arg(long, value_name = "HOST:PORT")]
    probe: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; log collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Some(addr) = &args.probe {
        return match sluice::probe::ready(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("not ready: {reason}");
                ExitCode::FAILURE
            }
        };
    }
    let overrides = Overrides {
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        backend: args.backend,
        redis_url: args.redis_url,
        max_keys: args.max_keys,
        max_key_bytes: args.max_key_bytes,
        shards: args.shards,
        shadow: args.shadow.then_some(true),
        admin_addr: args.admin_addr,
        admin_tokens: std::env::var("SLUICE_ADMIN_TOKENS").ok(),
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("config is valid: {} rule(s)", config.rules.rules().len());
        for rule in config.rules.rules() {
            let describe = |limit: &sluice::algorithm::stacked::Limit| {
                format!(
                    "{} limit {}",
                    limit.algorithm.name(),
                    limit.algorithm.limit()
                )
            };
            let limits: Vec<String> = match rule.limits.as_slice() {
                [only] => vec![describe(only)],
                stacked => stacked
                    .iter()
                    .map(|limit| format!("{}: {}", limit.name, describe(limit)))
                    .collect(),
            };
            let ban = rule.ban.as_ref().map_or(String::new(), |ban| {
                format!(
                    "; ban after {} denials within {} ms for {} ms ({})",
                    ban.after,
                    ban.within_us / 1_000,
                    ban.duration_us / 1_000,
                    ban.scope.label()
                )
            });
            println!(
                "  {} (resource {}): {}{ban}{}",
                rule.name,
                rule.resource_label,
                limits.join(", "),
                if rule.shadow { " (shadow)" } else { "" }
            );
        }
        match &config.admin {
            Some(admin) => println!("admin API on {}: {:?}", admin.addr, admin.tokens),
            None => println!("admin API off (no admin.addr)"),
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let source = args.config.map(|path| ConfigSource { path, overrides });
    match runtime.block_on(sluice::server::run_until_signal(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

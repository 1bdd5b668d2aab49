//! Live configuration from a file: a node rereads its config file on SIGHUP and when the
//! file's content changes (polled, so an edit in place, a rename over it and the symlink swap
//! of a Kubernetes ConfigMap are all seen alike), validates it in full, and swaps the new rules
//! in whole ([`Limiter::replace_rules`]). An invalid file changes nothing: the node keeps its
//! rules and logs every problem with its path. Only rules reload: a change to the listeners,
//! the backend, the request limits or the admin API needs a restart, and a file that changes
//! them is refused whole, so nothing half-applies.

use std::{path::PathBuf, time::Duration};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    config::{Config, ConfigError, Overrides},
    decision_log::short_hash,
    limiter::Limiter,
    store::Backend,
};

/// Where a node's configuration comes from, to read it again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// The flags and environment the node started with; they apply to every reload too.
    pub overrides: Overrides,
}

/// What one reload did.
#[derive(Debug)]
pub enum Reloaded {
    /// The new rules are live.
    Applied { version: String },
    /// The file's configuration is the one running.
    Unchanged,
    /// The file is invalid; nothing changed.
    Invalid(ConfigError),
    /// The file changes settings only a restart applies; nothing changed.
    Refused { sections: Vec<&'static str> },
}

impl Reloaded {
    /// The `result` label of `sluice_config_reloads_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Reloaded::Applied { .. } => "applied",
            Reloaded::Unchanged => "unchanged",
            Reloaded::Invalid(ConfigError::Read { .. }) => "unreadable",
            Reloaded::Invalid(_) => "invalid",
            Reloaded::Refused { .. } => "refused",
        }
    }
}

/// Reads `source` again and, when it is valid and changes only rules, makes its rules live.
/// `running` is the configuration in force; it follows an applied reload.
pub fn reload(limiter: &Limiter<Backend>, running: &mut Config, source: &ConfigSource) -> Reloaded {
    let outcome = match Config::load(Some(&source.path), &source.overrides) {
        Err(err) => Reloaded::Invalid(err),
        Ok(next) if next.version == running.version => Reloaded::Unchanged,
        Ok(next) => {
            let sections = restart_only_changes(running, &next);
            if !sections.is_empty() {
                Reloaded::Refused { sections }
            } else {
                let version = next.version.clone();
                if adopt(limiter, running, next) {
                    Reloaded::Applied { version }
                } else {
                    Reloaded::Unchanged
                }
            }
        }
    };
    limiter.metrics().config_reload(outcome.label());
    let path = source.path.display();
    match &outcome {
        Reloaded::Applied { version } => info!(%path, %version, "configuration reloaded"),
        Reloaded::Unchanged => info!(%path, "configuration reread; rules unchanged"),
        Reloaded::Invalid(err) => {
            warn!(%path, "configuration reload failed; keeping the running rules: {err}");
        }
        Reloaded::Refused { sections } => warn!(
            %path,
            sections = sections.join(", "),
            "configuration reload refused: these sections change only on restart; keeping the running rules"
        ),
    }
    outcome
}

/// Makes `next` the running configuration: its rules go live when they differ from the
/// running ones (true then). Files and the central document both arrive here.
pub(crate) fn adopt(limiter: &Limiter<Backend>, running: &mut Config, next: Config) -> bool {
    let changed = next.rules != running.rules;
    if changed {
        limiter.replace_rules(next.rules.clone(), next.version.clone());
    }
    *running = next;
    changed
}

/// The sections, other than rules, in which `next` differs from `running`.
fn restart_only_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if running.server != next.server {
        sections.push("server");
    }
    if running.limits != next.limits {
        sections.push("limits");
    }
    if running.backend != next.backend {
        sections.push("backend");
    }
    if running.admin != next.admin {
        sections.push("admin");
    }
    if running.rules_source != next.rules_source {
        sections.push("rules_source");
    }
    if running.envoy.settings != next.envoy.settings {
        sections.push("envoy");
    }
    sections
}

/// Reloads on every message of `requests` (SIGHUP) and whenever the file's content changes
/// (read every `poll`; `Duration::ZERO` reads it only on request), until `shutdown`.
pub async fn watch(
    limiter: std::sync::Arc<Limiter<Backend>>,
    mut running: Config,
    source: ConfigSource,
    poll: Duration,
    mut requests: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) {
    let stopping = crate::shutdown::requested(shutdown);
    tokio::pin!(stopping);
    let mut seen = content_hash(&source, &running);
    let mut ticker = tokio::time::interval(if poll.is_zero() {
        Duration::from_secs(3600)
    } else {
        poll
    });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stopping => return,
            request = requests.recv() => {
                if request.is_none() {
                    return;
                }
                seen = content_hash(&source, &running);
                running = reload_off_the_runtime(&limiter, running, &source).await;
            }
            _ = ticker.tick(), if !poll.is_zero() => {
                let now = content_hash(&source, &running);
                if now != seen {
                    seen = now;
                    running = reload_off_the_runtime(&limiter, running, &source).await;
                }
            }
        }
    }
}

/// [`reload`] on a blocking thread: reading, parsing and validating a file (and remapping the
/// memory store's keys) must not hold up a runtime worker that is answering checks.
async fn reload_off_the_runtime(
    limiter: &std::sync::Arc<Limiter<Backend>>,
    mut running: Config,
    source: &ConfigSource,
) -> Config {
    let (limiter, source) = (limiter.clone(), source.clone());
    let fallback = running.clone();
    tokio::task::spawn_blocking(move || {
        reload(&limiter, &mut running, &source);
        running
    })
    .await
    .unwrap_or(fallback)
}

/// The file's content and that of the Envoy YAML files it names (as running), hashed; `None`
/// while any cannot be read (mid-swap, say).
fn content_hash(source: &ConfigSource, running: &Config) -> Option<String> {
    let mut all = std::fs::read(&source.path).ok()?;
    let files = crate::config::source_files(&running.envoy.settings.config_paths).ok()?;
    for file in files {
        all.extend_from_slice(file.as_os_str().as_encoded_bytes());
        all.extend_from_slice(&std::fs::read(&file).ok()?);
    }
    Some(short_hash(&all))
}

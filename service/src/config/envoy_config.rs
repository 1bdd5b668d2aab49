//! The `[envoy]` section: Envoy's rate limit service (RLS v3) on the gRPC port, its YAML
//! configuration files (envoyproxy/ratelimit's format, see [`super::envoy_yaml`]) and how it
//! answers.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Issues;
use super::envoy_yaml::Source;

/// Which rate limit headers a ShouldRateLimit answer asks the gateway to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvoyHeaders {
    #[default]
    Off,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` (the draft-03 names Envoy itself emits).
    Draft03,
    /// `RateLimit` and `RateLimit-Policy` (IETF draft-10).
    Draft10,
    Both,
}

impl EnvoyHeaders {
    const NAMES: [&'static str; 4] = ["off", "draft03", "draft10", "both"];

    pub fn draft03(self) -> bool {
        matches!(self, EnvoyHeaders::Draft03 | EnvoyHeaders::Both)
    }

    pub fn draft10(self) -> bool {
        matches!(self, EnvoyHeaders::Draft10 | EnvoyHeaders::Both)
    }
}

/// What a ShouldRateLimit call answers when the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreFailure {
    /// Each rule's failure mode answers (deny: OVER_LIMIT; allow: OK; local: this node's share).
    #[default]
    Rule,
    /// The call fails with UNAVAILABLE, so the gateway's own `failure_mode_deny` decides.
    Unavailable,
}

/// The settings of the `[envoy]` section, which change only on restart.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoySettings {
    /// YAML files, or directories whose `*.yaml` / `*.yml` files are read (sorted by name);
    /// a relative path is taken from the config file's directory.
    pub config_paths: Vec<PathBuf>,
    pub headers: EnvoyHeaders,
    pub store_failure: StoreFailure,
    /// A decision leaving more than this share of a limit spent counts as near the limit.
    pub near_limit_ratio: f64,
    /// Distinct series `detailed_metric` rules may create in all; further values share one.
    pub detailed_metric_max_series: usize,
}

impl Default for EnvoySettings {
    fn default() -> Self {
        Self {
            config_paths: Vec::new(),
            headers: EnvoyHeaders::Off,
            store_failure: StoreFailure::Rule,
            near_limit_ratio: DEFAULT_NEAR_LIMIT_RATIO,
            detailed_metric_max_series: DEFAULT_DETAILED_METRIC_MAX_SERIES,
        }
    }
}

pub const DEFAULT_NEAR_LIMIT_RATIO: f64 = 0.8;
pub const DEFAULT_DETAILED_METRIC_MAX_SERIES: usize = 1_000;
const MAX_DETAILED_METRIC_SERIES: u64 = 100_000;

/// The `[envoy]` section, validated, with the YAML files as read when it loaded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnvoyConfig {
    pub settings: EnvoySettings,
    /// Every YAML file read, in load order; rebuilt into rules by [`super::envoy_yaml`].
    pub sources: Vec<Source>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawEnvoy {
    config_paths: Option<Vec<String>>,
    headers: Option<String>,
    store_failure: Option<String>,
    near_limit_ratio: Option<f64>,
    detailed_metric_max_series: Option<u64>,
}

impl RawEnvoy {
    /// `directory`: the config file's, against which relative paths resolve (`None`: the
    /// working directory).
    pub(super) fn validate(self, directory: Option<&Path>, issues: &mut Issues) -> EnvoyConfig {
        let defaults = EnvoySettings::default();
        let headers = match self.headers.as_deref() {
            None | Some("off") => EnvoyHeaders::Off,
            Some("draft03") => EnvoyHeaders::Draft03,
            Some("draft10") => EnvoyHeaders::Draft10,
            Some("both") => EnvoyHeaders::Both,
            Some(other) => {
                issues.add(
                    "envoy.headers",
                    format!(
                        "unknown header set `{other}`; use one of {}",
                        EnvoyHeaders::NAMES.join(", ")
                    ),
                );
                EnvoyHeaders::Off
            }
        };
        let store_failure = match self.store_failure.as_deref() {
            None | Some("rule") => StoreFailure::Rule,
            Some("unavailable") => StoreFailure::Unavailable,
            Some(other) => {
                issues.add(
                    "envoy.store_failure",
                    format!("unknown value `{other}`; use \"rule\" (each rule's failure_mode answers) or \"unavailable\" (the call fails, and Envoy's failure_mode_deny decides)"),
                );
                StoreFailure::Rule
            }
        };
        let near_limit_ratio = self.near_limit_ratio.unwrap_or(defaults.near_limit_ratio);
        if !(near_limit_ratio > 0.0 && near_limit_ratio < 1.0) {
            issues.add(
                "envoy.near_limit_ratio",
                format!("{near_limit_ratio} is out of range; use a share between 0 and 1, e.g. {DEFAULT_NEAR_LIMIT_RATIO}"),
            );
        }
        let series = self
            .detailed_metric_max_series
            .unwrap_or(DEFAULT_DETAILED_METRIC_MAX_SERIES as u64);
        if series > MAX_DETAILED_METRIC_SERIES {
            issues.add(
                "envoy.detailed_metric_max_series",
                format!("{series} is out of range; use 0 to {MAX_DETAILED_METRIC_SERIES} (default {DEFAULT_DETAILED_METRIC_MAX_SERIES})"),
            );
        }
        let config_paths: Vec<PathBuf> = self
            .config_paths
            .unwrap_or_default()
            .into_iter()
            .map(|path| match directory {
                Some(directory) => directory.join(path),
                None => PathBuf::from(path),
            })
            .collect();
        let sources = read_sources(&config_paths, issues);
        EnvoyConfig {
            settings: EnvoySettings {
                config_paths,
                headers,
                store_failure,
                near_limit_ratio,
                detailed_metric_max_series: series.min(MAX_DETAILED_METRIC_SERIES) as usize,
            },
            sources,
        }
    }
}

/// The YAML files `paths` name, in order (a directory's `*.yaml` and `*.yml` sorted by name).
pub fn source_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| is_yaml(file) && file.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| matches!(extension, "yaml" | "yml"))
}

fn read_sources(paths: &[PathBuf], issues: &mut Issues) -> Vec<Source> {
    let files = match source_files(paths) {
        Ok(files) => files,
        Err(err) => {
            issues.add(
                "envoy.config_paths",
                format!("cannot list a directory ({err}); give readable files or directories"),
            );
            return Vec::new();
        }
    };
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push(Source {
                name: file.display().to_string(),
                text,
            }),
            Err(err) => issues.add(
                "envoy.config_paths",
                format!(
                    "cannot read `{}` ({err}); give the path of a rate limit YAML file or a directory of them",
                    file.display()
                ),
            ),
        }
    }
    sources
}

//! The `[rules_source]` section: where a node's rules come from, this file or a document in
//! Redis that a fleet shares ([`crate::central`]); and parsing a rules-only document.

use std::time::Duration;

use serde::Deserialize;

use super::{BackendConfig, Config, ConfigError, Issues, duration_field, rule_config};

/// The default Redis key of the central rules document.
pub const DEFAULT_RULES_KEY: &str = "sluice:rules";

/// Where the rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesSource {
    /// This file's `[default_rule]` and `[rules.*]`, reloaded when the file changes.
    File,
    /// A document in Redis shared by every node configured alike; this file's rules apply until
    /// the node has read one.
    Redis(CentralSource),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralSource {
    pub url: String,
    pub key: String,
    /// How often a node checks the document's version, in case it missed a change notice.
    pub check_interval: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRulesSource {
    kind: Option<String>,
    url: Option<String>,
    key: Option<String>,
    check_interval: Option<String>,
}

impl RawRulesSource {
    pub(super) fn validate(self, backend: &BackendConfig, issues: &mut Issues) -> RulesSource {
        match self.kind.as_deref().unwrap_or("file") {
            "file" => RulesSource::File,
            "redis" => {
                let url = match (self.url, backend) {
                    (Some(url), _) => url,
                    (None, BackendConfig::Redis(redis))
                        if !redis.cluster && redis.sentinel.is_none() =>
                    {
                        redis.urls[0].clone()
                    }
                    (None, _) => {
                        issues.add(
                            "rules_source.url",
                            "give the Redis that holds the fleet's rules, e.g. \"redis://127.0.0.1:6379\" (it defaults to backend.redis.urls only for a single Redis, not a Cluster nor Sentinels)",
                        );
                        String::new()
                    }
                };
                if !url.is_empty()
                    && redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err()
                {
                    issues.add(
                        "rules_source.url",
                        format!("`{url}` is not a valid Redis URL; write e.g. \"redis://127.0.0.1:6379\""),
                    );
                }
                let check_interval = duration_field(
                    issues,
                    "rules_source.check_interval",
                    self.check_interval,
                    Duration::from_secs(1),
                );
                if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&check_interval)
                {
                    issues.add(
                        "rules_source.check_interval",
                        "use \"50ms\" to \"60s\"; it bounds how late a node that missed a change notice follows it",
                    );
                }
                RulesSource::Redis(CentralSource {
                    url,
                    key: self.key.unwrap_or_else(|| DEFAULT_RULES_KEY.to_owned()),
                    check_interval,
                })
            }
            other => {
                issues.add(
                    "rules_source.kind",
                    format!("unknown rules source `{other}`; use \"file\" or \"redis\""),
                );
                RulesSource::File
            }
        }
    }
}

/// A rules-only document: what the central store holds.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRules {
    default_rule: Option<rule_config::RawRule>,
    rules: std::collections::BTreeMap<String, rule_config::RawRule>,
}

impl Config {
    /// This configuration with its rules replaced by those of `text`, a document of only
    /// `[default_rule]` and `[rules.*]` (validated as a file's rules are, against this
    /// configuration's request limits and shadow switch). `origin` names it in errors.
    pub fn with_rules(&self, text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawRules = toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.to_owned(),
            message: format!("{err} (a rules document holds only [default_rule] and [rules.*])"),
        })?;
        let mut issues = Issues::default();
        let mut rules = rule_config::build_rule_set(
            raw.default_rule,
            raw.rules,
            self.limits.max_key_bytes,
            !self.envoy.sources.is_empty(),
            &mut issues,
        );
        // Envoy's descriptors come from their YAML files, never from the rules document.
        super::envoy_yaml::build(&self.envoy.sources, &mut rules, &mut issues);
        rule_config::check_reports_can_arrive(&rules, self.admin.is_some(), &mut issues);
        if self.server.shadow {
            rules.shadow_all();
        }
        if !issues.0.is_empty() {
            return Err(ConfigError::Invalid(issues.0));
        }
        Ok(Config {
            rules,
            version: crate::decision_log::short_hash(text.as_bytes()),
            ..self.clone()
        })
    }
}

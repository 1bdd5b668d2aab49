//! envoyproxy/ratelimit's YAML configuration, read as that server reads it: one file per
//! domain (`domain`, a tree of `descriptors`, each with `key`, optional `value` with `*`
//! wildcards, `rate_limit` {`unit`, `requests_per_unit`, `unlimited`, `name`, `replaces`},
//! `shadow_mode`, `quota_mode`, `detailed_metric`, `value_to_metric`, `share_threshold`,
//! `metadata`), rejected where it rejects one. Every configured limit becomes a rule of the
//! rule set. Sluice's own additions sit in a descriptor's `sluice` block, the fields of a
//! `[rules.<resource>]` table: `algorithm` and its parameters (any window, e.g.
//! `window: 5m`), stacked `limits`, `ban`, `failure_mode`.

use serde::{Deserialize, Deserializer};

use super::{
    Issues,
    rule_config::{EnvoyRate, MAX_NAME_BYTES, RawRule, envoy_rule, is_name_char},
};
use crate::{
    rls::{DetailedMetric, Domains, Leaf, Limited, Named, Node, Unit, Wildcard, node_resource},
    rules::RuleSet,
};

/// One YAML file: where it came from (named in every problem) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Largest `requests_per_unit` a limit is built from (the rule set's own bound).
const MAX_REQUESTS_PER_UNIT: u64 = super::rule_config::MAX_LIMIT;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, deserialize_with = "scalar")]
    domain: Option<String>,
    #[serde(default)]
    descriptors: Option<Vec<RawDescriptor>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    #[serde(default, deserialize_with = "scalar")]
    key: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    value: Option<String>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    descriptors: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    shadow_mode: Option<bool>,
    #[serde(default)]
    quota_mode: Option<bool>,
    #[serde(default)]
    detailed_metric: Option<bool>,
    #[serde(default)]
    value_to_metric: Option<bool>,
    #[serde(default)]
    share_threshold: Option<bool>,
    /// Taken as the reference takes it; Sluice does not return it (no dynamic metadata).
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_yaml_ng::Value>,
    /// Sluice's own: the rule's algorithm, limits, ban and failure mode.
    #[serde(default)]
    sluice: Option<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    requests_per_unit: Option<u32>,
    #[serde(default, deserialize_with = "scalar")]
    unit: Option<String>,
    #[serde(default)]
    unlimited: Option<bool>,
    #[serde(default, deserialize_with = "scalar")]
    name: Option<String>,
    #[serde(default)]
    replaces: Option<Vec<RawReplace>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplace {
    #[serde(default, deserialize_with = "scalar")]
    name: Option<String>,
}

/// Any YAML scalar as text, as the reference's YAML library fills a string field (`value:
/// 200` is the value "200"); null is absent.
fn scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    use serde_yaml_ng::Value;
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        Value::Bool(flag) => Ok(Some(flag.to_string())),
        Value::Number(number) => Ok(Some(number.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, found {}",
            match other {
                Value::Sequence(_) => "a list",
                Value::Mapping(_) => "a mapping",
                _ => "a tagged value",
            }
        ))),
    }
}

/// The rules of `sources` alone: every domain validated as a node would load it.
pub fn rule_set(sources: &[Source]) -> Result<RuleSet, super::ConfigError> {
    let mut set = RuleSet::default();
    let mut issues = Issues::default();
    build(sources, &mut set, &mut issues);
    match issues.into_error() {
        Some(err) => Err(err),
        None => Ok(set),
    }
}

/// Adds every domain of `sources` to `set`: each configured limit a rule, the trees the
/// matcher walks. Problems go to `issues`, each naming the file, the path in its tree and
/// the fix; with any, the caller discards the set.
pub(crate) fn build(sources: &[Source], set: &mut RuleSet, issues: &mut Issues) {
    let mut domains = Domains::default();
    for source in sources {
        let raw: RawFile = match serde_yaml_ng::from_str(&source.text) {
            Ok(raw) => raw,
            Err(err) => {
                issues.add(
                    source.name.clone(),
                    format!("not a valid rate limit configuration: {err}"),
                );
                continue;
            }
        };
        let Some(domain) = raw.domain.filter(|domain| !domain.is_empty()) else {
            issues.add(
                format!("{}: domain", source.name),
                "config file cannot have an empty domain; set `domain:` to the name Envoy's rate limit filter sends",
            );
            continue;
        };
        if domains.root_exists(&domain) {
            issues.add(
                format!("{}: domain", source.name),
                format!("duplicate domain `{domain}`: another file already configures it; merge the two files"),
            );
            continue;
        }
        let mut loader = Loader {
            valued_path: false,
            file: &source.name,
            domain: &domain,
            set,
            domains: &mut domains,
            issues,
        };
        let mut root = Node::default();
        loader.level(
            &mut root,
            "descriptors",
            &mut Vec::new(),
            raw.descriptors.unwrap_or_default(),
        );
        domains.insert_domain(domain, root);
    }
    set.set_envoy(domains);
}

struct Loader<'a> {
    /// Some node from the root to the one being loaded has `value_to_metric`.
    valued_path: bool,
    file: &'a str,
    domain: &'a str,
    set: &'a mut RuleSet,
    domains: &'a mut Domains,
    issues: &'a mut Issues,
}

impl Loader<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.issues.add(format!("{}: {path}", self.file), message);
    }

    /// Loads one level's descriptors into `parent`; `composites` are the composite keys from
    /// the root to `parent`.
    fn level(
        &mut self,
        parent: &mut Node,
        path: &str,
        composites: &mut Vec<String>,
        descriptors: Vec<RawDescriptor>,
    ) {
        for (index, raw) in descriptors.into_iter().enumerate() {
            let path = format!("{path}[{index}]");
            let key = raw.key.clone().unwrap_or_default();
            if key.is_empty() {
                self.problem(
                    &path,
                    "descriptor has an empty key; give every descriptor a `key`",
                );
                continue;
            }
            let value = raw.value.clone().unwrap_or_default();
            let composite = if value.is_empty() {
                key.clone()
            } else {
                format!("{key}_{value}")
            };
            let path = format!("{path} ({composite})");
            if parent.children.contains_key(&composite) {
                self.problem(
                    &path,
                    format!("duplicate descriptor composite key `{composite}` at this level; merge the two entries"),
                );
                continue;
            }
            let wildcard = composite.contains('*');
            if raw.share_threshold == Some(true) && !wildcard {
                self.problem(
                    &format!("{path}.share_threshold"),
                    format!("share_threshold only applies to wildcard values (containing `*`), but `{composite}` has none; remove it or give `value` a `*`"),
                );
            }
            composites.push(composite.clone());
            let node = self.node(&path, composites, raw, &value);
            composites.pop();
            if wildcard {
                parent.wildcards.push(Wildcard::new(&composite));
            }
            parent.children.insert(composite, node);
        }
    }

    fn node(
        &mut self,
        path: &str,
        composites: &mut Vec<String>,
        mut raw: RawDescriptor,
        value: &str,
    ) -> Node {
        let mut node = Node {
            shared_value: (raw.share_threshold == Some(true) && value.contains('*'))
                .then(|| value.to_owned()),
            value_pattern: value.to_owned(),
            value_to_metric: raw.value_to_metric == Some(true),
            ..Node::default()
        };
        // Whether a node on the way here (or this one) puts values in metric keys.
        let valued_above = self.valued_path;
        self.valued_path |= node.value_to_metric;
        let sluice = raw.sluice.take();
        node.limit = match (&raw.rate_limit, sluice) {
            (Some(rate), sluice) => self.leaf(path, composites, &raw, rate, sluice),
            (None, Some(sluice)) => {
                self.limited(path, composites, &raw, Named::default(), Some(sluice), None)
            }
            (None, None) => None,
        };
        self.level(
            &mut node,
            &format!("{path}.descriptors"),
            composites,
            raw.descriptors.unwrap_or_default(),
        );
        self.valued_path = valued_above;
        node
    }

    fn leaf(
        &mut self,
        path: &str,
        composites: &[String],
        raw: &RawDescriptor,
        rate: &RawRateLimit,
        sluice: Option<RawRule>,
    ) -> Option<Leaf> {
        let descriptor_path = path;
        let path = format!("{path}.rate_limit");
        let unit = rate.unit.as_deref().and_then(Unit::parse);
        let named = Named {
            name: rate.name.clone().unwrap_or_default(),
            replaces: self.replaces(&path, rate),
        };
        if rate.unlimited == Some(true) {
            if unit.is_some() {
                self.problem(
                    &path,
                    "should not specify a rate limit unit when unlimited; remove `unit`",
                );
            }
            if sluice.is_some() {
                self.problem(
                    &format!("{path}.unlimited"),
                    "an unlimited descriptor takes no `sluice` block; remove one of them",
                );
            }
            return Some(Leaf::Unlimited(named));
        }
        let Some(unit) = unit else {
            if sluice.is_some() && rate.unit.is_none() {
                // The `sluice` block holds the limits; `rate_limit` only names them.
                return self.limited(descriptor_path, composites, raw, named, sluice, None);
            }
            self.problem(
                &format!("{path}.unit"),
                format!(
                    "invalid rate limit unit `{}`; use second, minute, hour, day, week, month or year",
                    rate.unit.as_deref().unwrap_or("")
                ),
            );
            return None;
        };
        let requests_per_unit = u64::from(rate.requests_per_unit.unwrap_or(0));
        if requests_per_unit > MAX_REQUESTS_PER_UNIT {
            self.problem(
                &format!("{path}.requests_per_unit"),
                format!("{requests_per_unit} is above the most Sluice counts exactly, {MAX_REQUESTS_PER_UNIT}; lower it"),
            );
            return None;
        }
        let rate = EnvoyRate {
            requests_per_unit,
            unit_seconds: unit.seconds(),
        };
        if requests_per_unit == 0 {
            if sluice.is_some() {
                self.problem(
                    &format!("{path}.requests_per_unit"),
                    "0 blocks every request, so a `sluice` block has nothing to decide; remove it or give a limit",
                );
            }
            // Kept as a rule so its denials are counted under its own name.
            let one = EnvoyRate {
                requests_per_unit: 1,
                ..rate
            };
            let limited = self.limited(descriptor_path, composites, raw, named, None, Some(one))?;
            let Leaf::Limited(mut limited) = limited else {
                return None;
            };
            limited.requests_per_unit = 0;
            limited.unit = unit;
            return Some(Leaf::Blocked(limited));
        }
        let plain = sluice.is_none();
        let mut leaf = self.limited(descriptor_path, composites, raw, named, sluice, Some(rate))?;
        if let (Leaf::Limited(limited), true) = (&mut leaf, plain) {
            // A plain `rate_limit` reports its own unit, as the reference does.
            limited.unit = unit;
        }
        Some(leaf)
    }

    fn replaces(&mut self, path: &str, rate: &RawRateLimit) -> Vec<String> {
        let mut names = Vec::new();
        for (index, replace) in rate.replaces.iter().flatten().enumerate() {
            let name = replace.name.clone().unwrap_or_default();
            let at = format!("{path}.replaces[{index}]");
            if name.is_empty() {
                self.problem(
                    &at,
                    "should not have an empty replaces entry; give the `name` of the limit it replaces",
                );
            } else if Some(&name) == rate.name.as_ref() {
                self.problem(
                    &at,
                    format!("replaces should not contain the name of the same descriptor (`{name}`); name another limit"),
                );
            } else {
                names.push(name);
            }
        }
        names
    }

    /// The rule of a limited descriptor, pushed into the set.
    fn limited(
        &mut self,
        path: &str,
        composites: &[String],
        raw: &RawDescriptor,
        named: Named,
        sluice: Option<RawRule>,
        rate: Option<EnvoyRate>,
    ) -> Option<Leaf> {
        let full_key = std::iter::once(self.domain)
            .chain(composites.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".");
        let name = rule_name(if named.name.is_empty() {
            &full_key
        } else {
            &named.name
        });
        let label = format!("envoy:{full_key}");
        let rule = envoy_rule(
            path,
            name,
            &label,
            sluice,
            rate,
            raw.shadow_mode == Some(true),
            self.issues,
        );
        let deciding = rule
            .limits
            .iter()
            .min_by_key(|limit| limit.algorithm.limit())
            .map(|limit| (limit.algorithm.limit(), limit.algorithm.policy_window_us()))
            .unwrap_or((0, 0));
        let id = self.set.push(rule);
        let resource = node_resource(self.domain, composites);
        self.domains.insert_resource(resource.clone(), id);
        Some(Leaf::Limited(Limited {
            named,
            rule: id,
            resource,
            requests_per_unit: u32::try_from(deciding.0).unwrap_or(u32::MAX),
            unit: Unit::reported_for(deciding.1),
            metric: if raw.detailed_metric == Some(true) {
                DetailedMetric::Detailed
            } else if self.valued_path {
                DetailedMetric::Valued
            } else {
                DetailedMetric::None
            },
            quota_mode: raw.quota_mode == Some(true),
        }))
    }
}

/// A rule name from an Envoy limit name or key: characters a rule name cannot hold become
/// `_`, and it is cut to the longest rule name.
fn rule_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    name.truncate(MAX_NAME_BYTES);
    name
}

#[cfg(test)]
mod tests;

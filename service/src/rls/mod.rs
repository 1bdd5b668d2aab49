//! Envoy's rate limit service (RLS v3) as Sluice sees it: the descriptor trees of
//! envoyproxy/ratelimit's YAML configuration (built and validated by
//! `config::envoy_yaml`), matched ([`matching`]) exactly as the reference server does, each
//! configured limit a rule of the one rule set (by id), so RLS and `sluice.v1` decide through
//! the same limiter and store. The gRPC adapter is `api::rls`. Depends on nothing of the
//! service's but `algorithm`'s constants: `config` and `rules` depend on it.
//!
//! A matched descriptor's counter lives at a bucket whose resource names the configuration
//! node (under [`RESOURCE_PREFIX`], which the public API refuses, so no `sluice.v1` caller
//! can reach an RLS counter) and whose key is the request's entries: every limit of one
//! descriptor shares a Redis Cluster slot, as every limit of one `sluice.v1` key does.

pub mod matching;

use std::collections::HashMap;

/// Every RLS bucket's resource starts with this; `sluice.v1` requests naming such a resource
/// are refused. `|` is outside the characters of a configured resource name.
pub const RESOURCE_PREFIX: &str = "envoy|";

/// The resource of buckets limited by a descriptor's own `limit` override: one per
/// (requests per unit, unit), so different overrides never share a counter.
pub fn override_resource(domain: &str, requests_per_unit: u32, unit: Unit) -> String {
    let mut resource = String::with_capacity(RESOURCE_PREFIX.len() + domain.len() + 24);
    resource.push_str(RESOURCE_PREFIX);
    push_escaped(&mut resource, domain);
    resource.push_str("|override|");
    resource.push_str(&requests_per_unit.to_string());
    resource.push('/');
    resource.push_str(unit.name());
    resource
}

/// Envoy's rate limit units, with the length the reference server gives each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Second = 1,
    Minute = 2,
    Hour = 3,
    Day = 4,
    Month = 5,
    Year = 6,
    Week = 7,
}

impl Unit {
    /// Every unit, shortest first.
    const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The unit a YAML `unit` names, any case (as the reference reads it).
    pub fn parse(text: &str) -> Option<Unit> {
        Self::ALL
            .into_iter()
            .find(|unit| unit.name().eq_ignore_ascii_case(text))
    }

    /// The unit of a protobuf enum value; `None` for UNKNOWN and values Envoy does not define.
    pub fn from_proto(value: i32) -> Option<Unit> {
        Self::ALL.into_iter().find(|unit| *unit as i32 == value)
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// Seconds in the unit: a month is 30 days and a year 365, as in the reference.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// The unit to report for a limit restored over `window_us`: the one of that length, or
    /// else the longest unit shorter than it (a 5-minute window reports minutes).
    pub fn reported_for(window_us: u64) -> Unit {
        let seconds = window_us / crate::algorithm::MICROS_PER_SEC;
        Self::ALL
            .into_iter()
            .rev()
            .find(|unit| unit.seconds() <= seconds)
            .unwrap_or(Unit::Second)
    }
}

/// Every domain's descriptor tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Domains {
    roots: HashMap<String, Node>,
    /// Each configured bucket resource's rule id, for the store's look-ups by bucket.
    resources: HashMap<String, usize>,
}

impl Domains {
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roots.keys().map(String::as_str)
    }

    /// The rule deciding buckets of `resource`, when a configured descriptor owns it.
    pub fn rule_of_resource(&self, resource: &str) -> Option<usize> {
        self.resources.get(resource).copied()
    }

    /// Every configured bucket resource with its rule id.
    pub fn resource_rules(&self) -> impl Iterator<Item = (&str, usize)> {
        self.resources
            .iter()
            .map(|(resource, id)| (resource.as_str(), *id))
    }

    pub(crate) fn insert_domain(&mut self, domain: String, root: Node) {
        self.roots.insert(domain, root);
    }

    pub(crate) fn insert_resource(&mut self, resource: String, rule: usize) {
        self.resources.insert(resource, rule);
    }

    /// Whether `domain` is configured.
    pub fn root_exists(&self, domain: &str) -> bool {
        self.roots.contains_key(domain)
    }

    pub(crate) fn root(&self, domain: &str) -> Option<&Node> {
        self.roots.get(domain)
    }
}

/// One level of a domain's tree: the descriptors configured under one parent.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Node {
    /// Children by the reference's composite key: `key`, or `key_value`.
    pub children: HashMap<String, Node>,
    /// The composite keys of this level's children holding `*`, in configuration order.
    pub wildcards: Vec<Wildcard>,
    pub limit: Option<Leaf>,
    /// `share_threshold`: every value this wildcard node matches counts in one bucket, named
    /// by the pattern's value part.
    pub shared_value: Option<String>,
    /// The configured value (a wildcard's pattern), for metric keys.
    pub value_pattern: String,
    /// `value_to_metric`: the request's value goes into the limit's metric key.
    pub value_to_metric: bool,
}

/// A wildcard child: its composite key and that key split at each `*`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wildcard {
    pub composite: String,
    pub parts: Vec<String>,
}

impl Wildcard {
    pub fn new(composite: &str) -> Self {
        Self {
            composite: composite.to_owned(),
            parts: composite.split('*').map(str::to_owned).collect(),
        }
    }
}

/// What a configured `rate_limit` does to a descriptor that reaches it.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// `unlimited: true`: OK, remaining the most a uint32 holds, no counter touched.
    Unlimited(Named),
    /// A limit decided by a rule of the rule set.
    Limited(Limited),
    /// `requests_per_unit: 0`: every request is over the limit (the reference's block list).
    Blocked(Limited),
}

impl Leaf {
    pub fn named(&self) -> &Named {
        match self {
            Leaf::Unlimited(named) => named,
            Leaf::Limited(limited) | Leaf::Blocked(limited) => &limited.named,
        }
    }
}

/// Which per-value series a limit's decisions are also counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailedMetric {
    None,
    /// `detailed_metric`: every entry's `key_value`.
    Detailed,
    /// `value_to_metric` on the limit's path: values where the reference writes them
    /// ([`matching::Matched::metric_key`]).
    Valued,
}

/// A limit's `name` and the names it `replaces`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Named {
    /// The YAML `rate_limit.name`; empty when not given.
    pub name: String,
    pub replaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub named: Named,
    /// The rule's id in the rule set.
    pub rule: usize,
    /// The bucket resource of this node (see [`RESOURCE_PREFIX`]).
    pub resource: String,
    /// What `current_limit` reports: requests per unit (the deciding limit's size) and unit.
    pub requests_per_unit: u32,
    pub unit: Unit,
    /// Decisions also counted per descriptor value, up to a cap on series.
    pub metric: DetailedMetric,
    /// `quota_mode`: over the limit fails the request only when every quota descriptor of it
    /// is over.
    pub quota_mode: bool,
}

/// Appends `text` with `\`, `|` and `=` escaped, so joined parts never run together.
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '\\' | '|' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The bucket resource of a configured node: the domain and the composite keys from the root.
pub(crate) fn node_resource(domain: &str, composites: &[String]) -> String {
    let mut resource = String::from(RESOURCE_PREFIX);
    push_escaped(&mut resource, domain);
    for composite in composites {
        resource.push('|');
        push_escaped(&mut resource, composite);
    }
    resource
}

/// The bucket key of a descriptor: its entries, `key=value` joined by `|` (escaped), with a
/// shared wildcard's pattern in place of the values it shares.
pub fn bucket_key<'a>(
    entries: impl Iterator<Item = (&'a str, &'a str)>,
    shared: &[(usize, &str)],
) -> String {
    let mut key = String::new();
    for (index, (name, value)) in entries.enumerate() {
        if index > 0 {
            key.push('|');
        }
        push_escaped(&mut key, name);
        key.push('=');
        let value = shared
            .iter()
            .find(|(at, _)| *at == index)
            .map_or(value, |(_, pattern)| pattern);
        push_escaped(&mut key, value);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keys_of_different_entries_never_collide() {
        let pairs: [&[(&str, &str)]; 5] = [
            &[("a", "b|c=d")],
            &[("a", "b"), ("c", "d")],
            &[("a=b", "c")],
            &[("a", "b=c")],
            &[("a", "b\\"), ("c", "d")],
        ];
        let keys: Vec<String> = pairs
            .iter()
            .map(|entries| bucket_key(entries.iter().copied(), &[]))
            .collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_shared_wildcard_names_its_bucket_by_the_pattern() {
        let a = bucket_key([("files", "files/a.pdf")].into_iter(), &[(0, "files/*")]);
        let b = bucket_key([("files", "files/b.csv")].into_iter(), &[(0, "files/*")]);
        assert_eq!(a, b);
        assert_eq!(a, "files=files/*");
    }

    #[test]
    fn units_parse_in_any_case_and_report_the_nearest_shorter_unit() {
        assert_eq!(Unit::parse("SECOND"), Some(Unit::Second));
        assert_eq!(Unit::parse("Week"), Some(Unit::Week));
        assert_eq!(Unit::parse("fortnight"), None);
        assert_eq!(Unit::reported_for(300_000_000), Unit::Minute);
        assert_eq!(Unit::reported_for(86_400_000_000), Unit::Day);
        assert_eq!(Unit::reported_for(500_000), Unit::Second);
        assert_eq!(Unit::from_proto(7), Some(Unit::Week));
        assert_eq!(Unit::from_proto(0), None);
    }
}

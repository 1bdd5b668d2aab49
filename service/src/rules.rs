//! Which rule decides a request: per-resource rules, per-key overrides and a default rule.

use std::collections::HashMap;

use crate::{
    adaptive::AdaptivePolicy,
    algorithm::{
        ban::{Ban, BanScope, Bans},
        concurrency::Concurrency,
        stacked::Limit,
    },
    rls::{self, Domains},
};

/// The resource a request names when it names none.
pub const DEFAULT_RESOURCE: &str = "default";

/// The metrics label of rules that apply to any resource without its own rule.
pub const ANY_RESOURCE_LABEL: &str = "*";

/// What a rule answers when the store cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Fail closed: deny, with reason "store unavailable".
    Deny,
    /// Fail open: allow.
    Allow,
    /// Decide on this node's memory with `fallback_share` of the limit, until the store is back.
    Local,
}

impl FailureMode {
    pub const NAMES: [&'static str; 3] = ["deny", "allow", "local"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "deny" => Some(FailureMode::Deny),
            "allow" => Some(FailureMode::Allow),
            "local" => Some(FailureMode::Local),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A named policy: one or more limits decided together (all or nothing), and what to do when
/// the store fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Dense index within its [`RuleSet`], so per-rule data (metrics) lives in a plain Vec.
    pub id: usize,
    pub name: String,
    /// The configured resource this rule belongs to, or [`ANY_RESOURCE_LABEL`] for the default
    /// rule. Bounded by configuration, so it is safe as a metrics label.
    pub resource_label: String,
    /// At least one, at most [`crate::algorithm::stacked::MAX_LIMITS`], names unique in the
    /// rule. A rule written in the one-limit form has one limit named like the rule.
    pub limits: Vec<Limit>,
    /// When set, replaces the store's default failure mode for this rule.
    pub failure_mode: Option<FailureMode>,
    /// Shadow mode: a denial is answered as allowed (`shadow_denied`), counted and logged.
    pub shadow: bool,
    /// Bans for keys this rule keeps denying.
    pub ban: Option<Ban>,
    /// Its limits are scaled by its resource's adaptive factor (an override follows its
    /// resource's).
    pub adaptive: Option<AdaptivePolicy>,
    /// At most so many requests of a key in flight: taken with Acquire (together with the
    /// rule's limits), ended with Release or the lease's expiry. Check refuses such a rule.
    pub concurrency: Option<Concurrency>,
}

impl Rule {
    /// The bans this rule's requests are decided under: none in shadow mode, which must never
    /// block anyone; otherwise its own policy, and any key-wide ban when `key_wide` (some rule
    /// of the set bans with scope `key`).
    pub fn bans(&self, key_wide: bool) -> Bans<'_> {
        if self.shadow {
            return Bans::NONE;
        }
        Bans {
            policy: self.ban.as_ref(),
            key_wide,
        }
    }

    /// The most one request may cost: the smallest of the limits. More could never be allowed.
    pub fn max_cost(&self) -> u64 {
        self.limits
            .iter()
            .map(|limit| limit.algorithm.limit())
            .min()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RuleGroup {
    pub rule: usize,
    pub overrides: HashMap<String, usize>,
}

/// Every rule, indexed for lookup by resource and key without allocating.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    by_resource: HashMap<String, RuleGroup>,
    default: Option<RuleGroup>,
    /// Envoy RLS domains: descriptor trees whose limits are rules of this set.
    envoy: Domains,
}

impl RuleSet {
    /// The rule for `key` spending `resource`: the key's override, else the resource's rule,
    /// else the default rule (and its overrides). `None` when nothing applies.
    pub fn resolve(&self, resource: &str, key: &str) -> Option<&Rule> {
        let group = self.by_resource.get(resource).or(self.default.as_ref())?;
        let id = group.overrides.get(key).copied().unwrap_or(group.rule);
        Some(&self.rules[id])
    }

    /// The rule a stored bucket is decided under: an Envoy descriptor's, when the resource
    /// is one of theirs ([`rls::RESOURCE_PREFIX`]), else as [`RuleSet::resolve`].
    pub fn rule_of_bucket(&self, resource: &str, key: &str) -> Option<&Rule> {
        if resource.starts_with(rls::RESOURCE_PREFIX) {
            let id = self.envoy.rule_of_resource(resource)?;
            return Some(&self.rules[id]);
        }
        self.resolve(resource, key)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The Envoy RLS domains.
    pub fn envoy(&self) -> &Domains {
        &self.envoy
    }

    pub(crate) fn set_envoy(&mut self, domains: Domains) {
        self.envoy = domains;
    }

    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// Whether some rule bans with scope `key`, so every rule must honour key-wide bans.
    pub fn has_key_wide_bans(&self) -> bool {
        self.rules.iter().any(|rule| {
            !rule.shadow
                && rule
                    .ban
                    .as_ref()
                    .is_some_and(|ban| ban.scope == BanScope::Key)
        })
    }

    /// Whether every (resource, key) resolves to limits of the same layout
    /// ([`same_layout`]) in both sets. Conservative: `false` whenever the
    /// resources or overrides differ, and then each key's rules are compared one by one.
    pub fn same_layouts(&self, other: &RuleSet) -> bool {
        let same_group = |a: &RuleGroup, b: &RuleGroup| {
            fn layout(set: &RuleSet, id: usize) -> &[Limit] {
                &set.rules[id].limits
            }
            same_layout(layout(self, a.rule), layout(other, b.rule))
                && a.overrides.len() == b.overrides.len()
                && a.overrides.iter().all(|(key, &id)| {
                    b.overrides.get(key).is_some_and(|&other_id| {
                        same_layout(layout(self, id), layout(other, other_id))
                    })
                })
        };
        let same_default = match (&self.default, &other.default) {
            (None, None) => true,
            (Some(a), Some(b)) => same_group(a, b),
            _ => false,
        };
        let same_envoy = self.envoy.resource_rules().count()
            == other.envoy.resource_rules().count()
            && self.envoy.resource_rules().all(|(resource, id)| {
                other
                    .envoy
                    .rule_of_resource(resource)
                    .is_some_and(|other_id| {
                        same_layout(&self.rules[id].limits, &other.rules[other_id].limits)
                    })
            });
        same_default
            && same_envoy
            && self.by_resource.len() == other.by_resource.len()
            && self.by_resource.iter().all(|(resource, group)| {
                other
                    .by_resource
                    .get(resource)
                    .is_some_and(|theirs| same_group(group, theirs))
            })
    }

    /// Puts every rule in shadow mode (the node-wide switch).
    pub(crate) fn shadow_all(&mut self) {
        for rule in &mut self.rules {
            rule.shadow = true;
        }
    }

    /// Rule `id` with `adaptive` in place of its own; returns `id`.
    pub(crate) fn with_adaptive(&mut self, id: usize, adaptive: Option<AdaptivePolicy>) -> usize {
        self.rules[id].adaptive = adaptive;
        id
    }

    /// The resources whose rules are adaptive, with their policies.
    pub fn adaptive_resources(&self) -> impl Iterator<Item = (&str, &AdaptivePolicy)> {
        self.by_resource.iter().filter_map(|(resource, group)| {
            let policy = self.rules[group.rule].adaptive.as_ref()?;
            Some((resource.as_str(), policy))
        })
    }

    pub(crate) fn push(&mut self, mut rule: Rule) -> usize {
        rule.id = self.rules.len();
        self.rules.push(rule);
        self.rules.len() - 1
    }

    pub(crate) fn insert_group(&mut self, resource: Option<String>, group: RuleGroup) {
        match resource {
            Some(resource) => {
                self.by_resource.insert(resource, group);
            }
            None => self.default = Some(group),
        }
    }
}

/// Whether two rules keep their limits' states alike: the same limits (by name and
/// algorithm) in the same order. Parameters may differ: a state carries over a change of
/// numbers, and the algorithm applies the new bounds to it.
pub fn same_layout(a: &[Limit], b: &[Limit]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.name == b.name
                && std::mem::discriminant(&a.algorithm) == std::mem::discriminant(&b.algorithm)
        })
}

//! The rules a node decides under, and everything derived from them, as one immutable value.
//! A reload builds a new [`Policy`] and swaps it in whole, so a request is decided entirely
//! under the old rules or entirely under the new ones, never a mix.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use arc_swap::ArcSwapOption;

use crate::{
    adaptive::{Controller, Controllers, WHOLE},
    algorithm::stacked::Limit,
    metrics::{Metrics, RuleMetrics},
    rules::{Rule, RuleSet},
};

/// The id of a rule a request gave itself (an Envoy descriptor's `limit`): not in the set,
/// counted under one shared series.
pub const GIVEN_RULE_ID: usize = usize::MAX;

/// The metrics `resource` label of rules requests give themselves.
pub const GIVEN_RULE_LABEL: &str = "envoy:request_override";

#[derive(Debug)]
pub struct Policy {
    rules: RuleSet,
    /// Indexed by rule id.
    rule_metrics: Vec<RuleMetrics>,
    /// For rules requests give themselves ([`GIVEN_RULE_ID`]).
    given_metrics: RuleMetrics,
    /// Some rule bans with scope `key`, so every rule's check reads the key-wide ban state.
    key_wide_bans: bool,
    /// Each rule's limits scaled to this node's share, for the `local` failure mode; indexed
    /// by rule id, empty when the store cannot fail.
    local_limits: Vec<Vec<Limit>>,
    /// Each adaptive resource's controller.
    controllers: HashMap<String, Arc<Controller>>,
    /// Indexed by rule id: the controller an adaptive rule follows.
    adaptive: Vec<Option<Arc<Controller>>>,
    /// Indexed by rule id: an adaptive rule's limits at the factor they were last scaled to.
    scaled: Vec<ArcSwapOption<ScaledLimits>>,
    version: Version,
}

/// A rule's limits scaled by an adaptive factor.
#[derive(Debug)]
pub struct ScaledLimits {
    pub factor_ppm: u64,
    pub limits: Vec<Limit>,
}

/// Which configuration a policy came from, as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// A stable hash of the configuration's text: equal on every node that loaded the same
    /// file, so a fleet's convergence can be read off its metrics.
    pub id: String,
    pub loaded_at: SystemTime,
}

impl Policy {
    /// `fallback_share`: the share of each limit this node allows alone when the store fails
    /// in `local` mode (`None` when the store cannot fail).
    /// `controllers`: every adaptive resource's, kept across policies.
    pub fn new(
        rules: RuleSet,
        metrics: &Metrics,
        controllers: &Controllers,
        fallback_share: Option<f64>,
        version_id: String,
    ) -> Self {
        let rule_metrics = rules
            .rules()
            .iter()
            .map(|rule| metrics.for_rule(rule))
            .collect();
        let local_limits = match fallback_share {
            Some(share) => rules
                .rules()
                .iter()
                .map(|rule| {
                    rule.limits
                        .iter()
                        .map(|limit| Limit::new(limit.name.clone(), limit.algorithm.scaled(share)))
                        .collect()
                })
                .collect(),
            None => Vec::new(),
        };
        let given_metrics = metrics.for_label(GIVEN_RULE_LABEL);
        let controllers = controllers.sync(rules.adaptive_resources());
        let adaptive = rules
            .rules()
            .iter()
            .map(|rule| {
                rule.adaptive
                    .and_then(|_| controllers.get(&rule.resource_label).cloned())
            })
            .collect();
        let scaled = rules
            .rules()
            .iter()
            .map(|_| ArcSwapOption::empty())
            .collect();
        Self {
            controllers,
            adaptive,
            scaled,
            given_metrics,
            key_wide_bans: rules.has_key_wide_bans(),
            rules,
            rule_metrics,
            local_limits,
            version: Version {
                id: version_id,
                loaded_at: SystemTime::now(),
            },
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn rule(&self, id: usize) -> &Rule {
        &self.rules.rules()[id]
    }

    pub fn metrics_of(&self, rule: &Rule) -> &RuleMetrics {
        self.rule_metrics
            .get(rule.id)
            .unwrap_or(&self.given_metrics)
    }

    pub fn key_wide_bans(&self) -> bool {
        self.key_wide_bans
    }

    /// The rule's limits at this node's share, when the store can fail.
    pub fn local_limits(&self, rule: &Rule) -> Option<&[Limit]> {
        self.local_limits.get(rule.id).map(Vec::as_slice)
    }

    /// The controller of adaptive resource `resource`.
    pub fn controller(&self, resource: &str) -> Option<&Arc<Controller>> {
        self.controllers.get(resource)
    }

    /// The controller rule `rule` follows, when it is adaptive.
    pub fn controller_of(&self, rule: &Rule) -> Option<&Arc<Controller>> {
        self.adaptive.get(rule.id)?.as_ref()
    }

    /// An adaptive rule's limits at its resource's factor now; `None` when they are as
    /// configured (not adaptive, or a factor of 1). Scaled once per change of the factor.
    pub fn scaled_limits(&self, rule: &Rule) -> Option<Arc<ScaledLimits>> {
        let factor_ppm = self.controller_of(rule)?.factor_ppm();
        if factor_ppm >= WHOLE {
            return None;
        }
        let slot = &self.scaled[rule.id];
        if let Some(scaled) = slot.load_full()
            && scaled.factor_ppm == factor_ppm
        {
            return Some(scaled);
        }
        let share = factor_ppm as f64 / WHOLE as f64;
        let scaled = Arc::new(ScaledLimits {
            factor_ppm,
            limits: rule
                .limits
                .iter()
                .map(|limit| Limit::new(limit.name.clone(), limit.algorithm.scaled(share)))
                .collect(),
        });
        slot.store(Some(scaled.clone()));
        Some(scaled)
    }

    pub fn version(&self) -> &Version {
        &self.version
    }
}

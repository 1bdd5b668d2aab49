//! Envoy's `envoy.service.ratelimit.v3.RateLimitService` on the gRPC port: each request
//! descriptor is matched in the domain's tree ([`crate::rls::matching`]) and decided by the
//! limiter under that descriptor's rule, on its own, as envoyproxy/ratelimit decides them; the
//! answer is over limit when any descriptor is (quota-mode descriptors only when all of them
//! are).

use std::{sync::Arc, time::Instant};

use futures_util::future::join_all;
use prometheus::Histogram;
use sluice_proto::envoy::{
    extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::Code,
        rate_limit_service_server::{RateLimitService, RateLimitServiceServer},
    },
};
use tonic::{Request, Response, Status};

mod answer;

use answer::{
    Answer, blocked, clamp, code_of, current_limit, items, longest_window_us, reset_us,
    too_many_hits,
};

use crate::{
    algorithm::{FixedWindow, MICROS_PER_SEC, stacked::Limit},
    config::{EnvoySettings, StoreFailure},
    limiter::{Limiter, LimiterError, Outcome, Verdict},
    metrics::{Api, DetailedSeries},
    policy::{GIVEN_RULE_LABEL, Policy},
    rls::{self, DetailedMetric, Leaf, Limited, Unit, matching},
    rules::Rule,
    store::{Backend, BucketKey},
};

impl matching::Entry for Entry {
    fn key(&self) -> &str {
        &self.key
    }
    fn value(&self) -> &str {
        &self.value
    }
}

pub struct RlsApi {
    limiter: Arc<Limiter<Backend>>,
    settings: EnvoySettings,
    detailed: DetailedSeries,
    duration: Histogram,
}

/// What a descriptor reached before it is decided.
enum Target<'p> {
    None,
    Leaf(matching::Matched<'p>),
    Override { requests_per_unit: u32, unit: Unit },
}

impl RlsApi {
    pub fn server(
        limiter: Arc<Limiter<Backend>>,
        settings: EnvoySettings,
    ) -> RateLimitServiceServer<Self> {
        let duration = limiter
            .metrics()
            .request_duration(Api::Grpc, "should_rate_limit");
        RateLimitServiceServer::new(Self {
            detailed: DetailedSeries::new(settings.detailed_metric_max_series),
            limiter,
            settings,
            duration,
        })
    }

    fn invalid(&self, field: &'static str, message: String) -> Status {
        self.limiter.metrics().invalid_request(Api::Grpc, field);
        Status::invalid_argument(message)
    }

    async fn answer(&self, request: RateLimitRequest) -> Result<RateLimitResponse, Status> {
        if request.domain.is_empty() {
            return Err(self.invalid(
                "domain",
                "domain is empty; send the domain of the rate limit configuration (Envoy's rate limit filter `domain`)".into(),
            ));
        }
        if request.descriptors.is_empty() {
            return Err(self.invalid(
                "descriptors",
                "descriptors is empty; send at least one descriptor (Envoy's `rate_limits` actions)".into(),
            ));
        }
        let policy = self.limiter.policy();
        let domains = policy.rules().envoy();
        let mut targets = Vec::with_capacity(request.descriptors.len());
        for (index, descriptor) in request.descriptors.iter().enumerate() {
            targets.push(self.target(domains, &request.domain, index, descriptor)?);
        }
        // A limit named in a matched limit's `replaces` is not checked (the reference's rule).
        let replaced: Vec<&str> = targets
            .iter()
            .filter_map(|target| match target {
                Target::Leaf(matched) => Some(matched.leaf.named().replaces.iter()),
                _ => None,
            })
            .flatten()
            .map(String::as_str)
            .collect();
        if !replaced.is_empty() {
            for target in &mut targets {
                if let Target::Leaf(matched) = target {
                    let name = &matched.leaf.named().name;
                    if !name.is_empty() && replaced.contains(&name.as_str()) {
                        *target = Target::None;
                    }
                }
            }
        }
        let default_hits = u64::from(request.hits_addend.max(1));
        let decisions = targets.iter().zip(&request.descriptors).enumerate().map(
            |(index, (target, descriptor))| {
                let hits = descriptor.hits_addend.unwrap_or(default_hits);
                self.decide(&policy, &request.domain, index, target, descriptor, hits)
            },
        );
        // Descriptors are independent: several are decided at once (a Redis round trip each).
        let answers = if request.descriptors.len() == 1 {
            let mut decisions = decisions;
            match decisions.next() {
                Some(decision) => vec![decision.await?],
                None => Vec::new(),
            }
        } else {
            join_all(decisions)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, Status>>()?
        };
        Ok(answer::response(&self.settings, answers))
    }

    fn target<'p>(
        &self,
        domains: &'p rls::Domains,
        domain: &str,
        index: usize,
        descriptor: &RateLimitDescriptor,
    ) -> Result<Target<'p>, Status> {
        // An unknown domain limits nothing, an override included (as the reference).
        if domains.root_exists(domain)
            && let Some(limit) = &descriptor.limit
        {
            let unit = Unit::from_proto(limit.unit).ok_or_else(|| {
                self.invalid(
                    "descriptors.limit.unit",
                    format!("descriptors[{index}].limit.unit {} is not a unit; use SECOND to WEEK (1 to 7)", limit.unit),
                )
            })?;
            return Ok(Target::Override {
                requests_per_unit: limit.requests_per_unit,
                unit,
            });
        }
        Ok(matching::find(domains, domain, &descriptor.entries).map_or(Target::None, Target::Leaf))
    }

    async fn decide(
        &self,
        policy: &Arc<Policy>,
        domain: &str,
        index: usize,
        target: &Target<'_>,
        descriptor: &RateLimitDescriptor,
        hits: u64,
    ) -> Result<Answer, Status> {
        let entries = descriptor
            .entries
            .iter()
            .map(|entry| (entry.key.as_str(), entry.value.as_str()));
        match target {
            Target::None => Ok(Answer::unlimited_or_unmatched(0)),
            Target::Leaf(matched) => match matched.leaf {
                Leaf::Unlimited(_) => Ok(Answer::unlimited_or_unmatched(u32::MAX)),
                Leaf::Blocked(limited) => {
                    self.limiter.count_refused(policy, limited.rule);
                    Ok(blocked(
                        limited.named.name.clone(),
                        limited.unit,
                        limited.quota_mode,
                    ))
                }
                Leaf::Limited(limited) => {
                    let key = rls::bucket_key(entries, &matched.shared);
                    self.bound_key(index, &key)?;
                    let bucket = BucketKey {
                        resource: &limited.resource,
                        key: &key,
                    };
                    let rule = policy.rule(limited.rule);
                    let verdict = if hits == 0 {
                        self.limiter
                            .status_rule(policy.clone(), limited.rule, bucket)
                            .await
                    } else if hits > rule.max_cost() {
                        self.limiter.count_refused(policy, limited.rule);
                        return Ok(Answer {
                            quota_mode: limited.quota_mode,
                            ..too_many_hits(
                                rule.max_cost(),
                                limited.unit,
                                limited.named.name.clone(),
                                longest_window_us(rule),
                            )
                        });
                    } else {
                        self.limiter
                            .check_rule(policy.clone(), limited.rule, bucket, hits)
                            .await
                    };
                    let verdict = self.store_answered(verdict)?;
                    let metric_key = match limited.metric {
                        DetailedMetric::None => None,
                        DetailedMetric::Detailed =>
                        // The reference's detailed key: every entry's value.
                        {
                            Some(matching::descriptor_key(
                                domain,
                                &descriptor.entries,
                                |_, entry| Some(entry.value.as_str()),
                            ))
                        }
                        DetailedMetric::Valued => {
                            Some(matched.metric_key(domain, &descriptor.entries))
                        }
                    };
                    if let Some(key) = metric_key {
                        self.limiter
                            .metrics()
                            .envoy_detailed(self.detailed.label(&key), verdict.outcome.label());
                    }
                    Ok(self.limited_answer(&verdict, limited, hits == 0))
                }
            },
            Target::Override {
                requests_per_unit,
                unit,
            } => {
                if *requests_per_unit == 0 {
                    return Ok(blocked(String::new(), *unit, false));
                }
                let key = rls::bucket_key(entries, &[]);
                self.bound_key(index, &key)?;
                let limit = u64::from(*requests_per_unit);
                let reported = current_limit(*requests_per_unit, *unit, "");
                if hits > limit {
                    let window_us = unit.seconds() * MICROS_PER_SEC;
                    return Ok(too_many_hits(limit, *unit, String::new(), window_us));
                }
                if hits == 0 {
                    // Nothing spent, and the request's own counter is not read: the full limit.
                    return Ok(Answer {
                        code: Code::Ok,
                        current_limit: Some(reported),
                        remaining: *requests_per_unit,
                        reset_us: None,
                        quota_mode: false,
                        items: None,
                    });
                }
                let resource = rls::override_resource(domain, *requests_per_unit, *unit);
                let bucket = BucketKey {
                    resource: &resource,
                    key: &key,
                };
                let verdict = self
                    .limiter
                    .check_given(policy.clone(), given_rule(limit, *unit), bucket, hits)
                    .await;
                let verdict = self.store_answered(verdict)?;
                let code = code_of(verdict.outcome);
                Ok(Answer {
                    code,
                    current_limit: Some(reported),
                    remaining: clamp(verdict.decision.remaining),
                    reset_us: Some(reset_us(&verdict)),
                    quota_mode: false,
                    items: self.items(&verdict),
                })
            }
        }
    }

    /// The verdict's `RateLimit-Policy` and `RateLimit` items, when those headers are on.
    fn items(&self, verdict: &Verdict<'_>) -> Option<(String, String)> {
        self.settings.headers.draft10().then(|| items(verdict))
    }

    fn bound_key(&self, index: usize, key: &str) -> Result<(), Status> {
        self.limiter.check_key(key).map_err(|err| {
            self.invalid(
                "descriptors.entries",
                format!("descriptors[{index}]: its entries make a {err}"),
            )
        })
    }

    /// The verdict, or UNAVAILABLE when the store failed and `envoy.store_failure` hands the
    /// decision to the gateway.
    fn store_answered<'a>(
        &self,
        verdict: Result<Verdict<'a>, LimiterError>,
    ) -> Result<Verdict<'a>, Status> {
        match verdict {
            Ok(verdict)
                if verdict.store_failed
                    && self.settings.store_failure == StoreFailure::Unavailable =>
            {
                Err(Status::unavailable(
                    "the rate limit store is unavailable; the gateway's failure_mode_deny decides",
                ))
            }
            Ok(verdict) => Ok(verdict),
            Err(LimiterError::Invalid(err)) => Err(self.invalid(err.field(), err.to_string())),
            Err(err @ LimiterError::Store(_)) => Err(Status::unavailable(err.to_string())),
        }
    }

    fn limited_answer(&self, verdict: &Verdict<'_>, limited: &Limited, read_only: bool) -> Answer {
        let decision = &verdict.decision;
        let code = if read_only && verdict.outcome != Outcome::Banned {
            Code::Ok
        } else {
            code_of(verdict.outcome)
        };
        if verdict.outcome == Outcome::Allowed && !read_only {
            let spent = decision.limit - decision.remaining;
            let near = (decision.limit as f64 * self.settings.near_limit_ratio).floor() as u64;
            if spent > near {
                verdict.policy_metrics().near_limit.inc();
            }
        }
        let unit = if verdict.rule().limits.len() == 1 {
            limited.unit
        } else {
            Unit::reported_for(verdict.policy_window_us())
        };
        Answer {
            code,
            current_limit: Some(current_limit(
                clamp(decision.limit),
                unit,
                &limited.named.name,
            )),
            remaining: clamp(decision.remaining),
            reset_us: Some(reset_us(verdict)),
            quota_mode: limited.quota_mode,
            items: self.items(verdict),
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for RlsApi {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = Instant::now();
        let result = self.answer(request.into_inner()).await.map(Response::new);
        self.duration.observe(started.elapsed().as_secs_f64());
        result
    }
}

/// The rule of a descriptor's own `limit`: a fixed window of `limit` per unit, as the
/// reference applies one.
fn given_rule(limit: u64, unit: Unit) -> Rule {
    let window_us = unit.seconds() * MICROS_PER_SEC;
    Rule {
        id: 0,
        name: "request_override".to_owned(),
        resource_label: GIVEN_RULE_LABEL.to_owned(),
        limits: vec![Limit::new(
            "request_override",
            crate::algorithm::Algorithm::FixedWindow(FixedWindow::new(limit, window_us)),
        )],
        failure_mode: None,
        shadow: false,
        ban: None,
        adaptive: None,
        concurrency: None,
    }
}

//! The `sluice.v1.RateLimiter` gRPC service.

use std::{sync::Arc, time::Instant};

use prometheus::Histogram;
use sluice_proto::v1::{
    self as pb,
    rate_limiter_server::{RateLimiter, RateLimiterServer},
};
use tonic::{Request, Response, Status};

use super::report::{authorize, factors, latency_us};
use crate::{
    adaptive::WHOLE,
    auth::{AuthError, Tokens},
    limiter::{BackendReport, CheckRequest, Limiter, LimiterError, Outcome, Verdict},
    metrics::Api,
    store::Backend,
};

pub struct GrpcApi {
    limiter: Arc<Limiter<Backend>>,
    /// Who may call Report (the admin API's tokens).
    reporters: Option<Tokens>,
    check_duration: Histogram,
    status_duration: Histogram,
    report_duration: Histogram,
    acquire_duration: Histogram,
    release_duration: Histogram,
}

impl GrpcApi {
    /// `reporters`: the tokens Report takes (role report or admin).
    pub fn server(
        limiter: Arc<Limiter<Backend>>,
        reporters: Option<Tokens>,
    ) -> RateLimiterServer<Self> {
        let metrics = limiter.metrics();
        RateLimiterServer::new(Self {
            check_duration: metrics.request_duration(Api::Grpc, "check"),
            status_duration: metrics.request_duration(Api::Grpc, "status"),
            report_duration: metrics.request_duration(Api::Grpc, "report"),
            acquire_duration: metrics.request_duration(Api::Grpc, "acquire"),
            release_duration: metrics.request_duration(Api::Grpc, "release"),
            reporters,
            limiter,
        })
    }

    /// Runs one call's work: times it and maps a limiter error to its gRPC status.
    async fn timed<T>(
        &self,
        timer: &Histogram,
        work: impl Future<Output = Result<T, LimiterError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work
            .await
            .map(Response::new)
            .map_err(|err| self.status_of(err));
        timer.observe(started.elapsed().as_secs_f64());
        result
    }

    fn status_of(&self, err: LimiterError) -> Status {
        if let LimiterError::Invalid(err) = &err {
            self.limiter
                .metrics()
                .invalid_request(Api::Grpc, err.field());
        }
        grpc_status(err)
    }
}

/// A limiter error as the gRPC status a client sees: its own mistake, or the store's.
pub fn grpc_status(err: LimiterError) -> Status {
    match err {
        LimiterError::Invalid(err) => Status::invalid_argument(err.to_string()),
        LimiterError::Store(err) => Status::unavailable(err.to_string()),
    }
}

/// Microseconds as a protobuf Duration.
pub fn duration_from_us(us: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (us / 1_000_000) as i64,
        nanos: (us % 1_000_000) as i32 * 1_000,
    }
}

fn decision_of(outcome: Outcome) -> pb::Decision {
    match outcome {
        Outcome::Allowed => pb::Decision::Allowed,
        Outcome::Denied => pb::Decision::Denied,
        Outcome::ShadowDenied => pb::Decision::ShadowDenied,
        Outcome::Banned => pb::Decision::Banned,
    }
}

/// Every limit of the verdict's rule with its answer.
fn limit_statuses(verdict: &Verdict<'_>) -> Vec<pb::LimitStatus> {
    verdict
        .limits()
        .map(|(limit, decision)| pb::LimitStatus {
            name: limit.name.clone(),
            limit: decision.limit,
            remaining: decision.remaining,
            reset_after: Some(duration_from_us(decision.reset_after_us)),
            retry_after: Some(duration_from_us(decision.retry_after_us)),
            allowed: decision.allowed,
            policy_window: Some(duration_from_us(limit.algorithm.policy_window_us())),
            algorithm: limit.algorithm.name().to_owned(),
        })
        .collect()
}

fn check_response(verdict: &Verdict<'_>) -> pb::CheckResponse {
    let decision = &verdict.decision;
    pb::CheckResponse {
        decision: decision_of(verdict.outcome).into(),
        allowed: verdict.outcome.proceeds(),
        limit: decision.limit,
        remaining: decision.remaining,
        reset_after: Some(duration_from_us(decision.reset_after_us)),
        retry_after: Some(duration_from_us(decision.retry_after_us)),
        rule: verdict.rule().name.clone(),
        resource: verdict.resource.to_owned(),
        policy_window: Some(duration_from_us(verdict.policy_window_us())),
        reason: verdict.reason.unwrap_or_default().to_owned(),
        algorithm: verdict.limit().algorithm.name().to_owned(),
        limits: limit_statuses(verdict),
        decided_by: verdict.limit().name.clone(),
        capacity_factor: verdict.factor_ppm as f64 / WHOLE as f64,
    }
}

/// A lease id as Acquire gave it (decimal), or what is wrong with it.
pub fn lease_id(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        format!("lease `{shown}` is not one Acquire gives; send the `lease` Acquire answered")
    })
}

/// A Report request as the limiter takes it, or INVALID_ARGUMENT naming the report and field.
fn backend_reports(request: &pb::ReportRequest) -> Result<Vec<BackendReport<'_>>, Status> {
    request
        .reports
        .iter()
        .enumerate()
        .map(|(index, report)| {
            let latency = report.latency.unwrap_or_default();
            let milliseconds = latency.seconds as f64 * 1e3 + f64::from(latency.nanos) / 1e6;
            let latency_us = latency_us(milliseconds).map_err(|message| {
                Status::invalid_argument(format!("reports[{index}].latency: {message}"))
            })?;
            Ok(BackendReport {
                resource: &report.resource,
                latency_us,
                failed: report.failed,
            })
        })
        .collect()
}

#[tonic::async_trait]
impl RateLimiter for GrpcApi {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let request = request.into_inner();
        let work = async {
            let verdict = self
                .limiter
                .check(CheckRequest {
                    key: &request.key,
                    resource: &request.resource,
                    cost: request.cost,
                })
                .await?;
            Ok(check_response(&verdict))
        };
        self.timed(&self.check_duration, work).await
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let started = Instant::now();
        let presented = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        if let Err(err) = authorize(self.reporters.as_ref(), presented) {
            let message = format!("{err}; reports need a token of role report");
            return Err(match err {
                AuthError::Forbidden { .. } => Status::permission_denied(message),
                _ => Status::unauthenticated(message),
            });
        }
        let request = request.into_inner();
        let reports = backend_reports(&request)?;
        self.limiter
            .report(&reports)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let response = pb::ReportResponse {
            accepted: reports.len() as u32,
            factors: factors(&self.limiter, &reports),
        };
        self.report_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(response))
    }

    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let request = request.into_inner();
        let work = async {
            let (verdict, lease) = self
                .limiter
                .acquire(CheckRequest {
                    key: &request.key,
                    resource: &request.resource,
                    cost: None,
                })
                .await?;
            Ok(pb::AcquireResponse {
                decision: Some(check_response(&verdict)),
                lease: lease.map_or_else(String::new, |lease| lease.id.to_string()),
                lease_ttl: lease.map(|lease| duration_from_us(lease.ttl_us)),
            })
        };
        self.timed(&self.acquire_duration, work).await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let request = request.into_inner();
        let lease = lease_id(&request.lease).map_err(Status::invalid_argument)?;
        let work = async {
            let released = self
                .limiter
                .release(&request.key, &request.resource, lease)
                .await?;
            Ok(pb::ReleaseResponse { released })
        };
        self.timed(&self.release_duration, work).await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let request = request.into_inner();
        let work = async {
            let verdict = self.limiter.status(&request.key, &request.resource).await?;
            let decision = &verdict.decision;
            Ok(pb::StatusResponse {
                limit: decision.limit,
                used: decision.limit - decision.remaining,
                remaining: decision.remaining,
                reset_after: Some(duration_from_us(decision.reset_after_us)),
                rule: verdict.rule().name.clone(),
                resource: verdict.resource.to_owned(),
                policy_window: Some(duration_from_us(verdict.policy_window_us())),
                limits: limit_statuses(&verdict),
            })
        };
        self.timed(&self.status_duration, work).await
    }
}

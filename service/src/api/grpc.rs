//! The `sluice.v1.RateLimiter` gRPC service.

use std::{sync::Arc, time::Instant};

use prometheus::Histogram;
use sluice_proto::v1::{
    self as pb,
    rate_limiter_server::{RateLimiter, RateLimiterServer},
};
use tonic::{Request, Response, Status};

use crate::{
    limiter::{Limiter, LimiterError, Outcome, Verdict},
    metrics::Api,
    store::Backend,
};

pub struct GrpcApi {
    limiter: Arc<Limiter<Backend>>,
    check_duration: Histogram,
    status_duration: Histogram,
    reset_duration: Histogram,
}

impl GrpcApi {
    pub fn server(limiter: Arc<Limiter<Backend>>) -> RateLimiterServer<Self> {
        let metrics = limiter.metrics();
        RateLimiterServer::new(Self {
            check_duration: metrics.request_duration(Api::Grpc, "check"),
            status_duration: metrics.request_duration(Api::Grpc, "status"),
            reset_duration: metrics.request_duration(Api::Grpc, "reset"),
            limiter,
        })
    }

    fn status_of(&self, err: LimiterError) -> Status {
        match err {
            LimiterError::Invalid(err) => {
                self.limiter
                    .metrics()
                    .invalid_request(Api::Grpc, err.field());
                Status::invalid_argument(err.to_string())
            }
            LimiterError::Store(err) => Status::unavailable(err.to_string()),
        }
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
    }
}

fn check_response(verdict: &Verdict<'_>) -> pb::CheckResponse {
    let decision = &verdict.decision;
    pb::CheckResponse {
        decision: decision_of(verdict.outcome).into(),
        allowed: decision.allowed,
        limit: decision.limit,
        remaining: decision.remaining,
        reset_after: Some(duration_from_us(decision.reset_after_us)),
        retry_after: Some(duration_from_us(decision.retry_after_us)),
        rule: verdict.rule.name.clone(),
        resource: verdict.resource.to_owned(),
        policy_window: Some(duration_from_us(verdict.policy_window_us())),
    }
}

#[tonic::async_trait]
impl RateLimiter for GrpcApi {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = self
            .limiter
            .check(crate::limiter::CheckRequest {
                key: &request.key,
                resource: &request.resource,
                cost: request.cost,
            })
            .await
            .map(|verdict| Response::new(check_response(&verdict)))
            .map_err(|err| self.status_of(err));
        self.check_duration.observe(started.elapsed().as_secs_f64());
        result
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = self
            .limiter
            .status(&request.key, &request.resource)
            .await
            .map(|verdict| {
                let decision = &verdict.decision;
                Response::new(pb::StatusResponse {
                    limit: decision.limit,
                    used: decision.limit - decision.remaining,
                    remaining: decision.remaining,
                    reset_after: Some(duration_from_us(decision.reset_after_us)),
                    rule: verdict.rule.name.clone(),
                    resource: verdict.resource.to_owned(),
                    policy_window: Some(duration_from_us(verdict.policy_window_us())),
                })
            })
            .map_err(|err| self.status_of(err));
        self.status_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn reset(
        &self,
        request: Request<pb::ResetRequest>,
    ) -> Result<Response<pb::ResetResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = self
            .limiter
            .reset(&request.key, &request.resource)
            .await
            .map(|existed| Response::new(pb::ResetResponse { existed }))
            .map_err(|err| self.status_of(err));
        self.reset_duration.observe(started.elapsed().as_secs_f64());
        result
    }
}

//! The `sluice.v1.Admin` gRPC service, on the admin listener beside the JSON endpoints. The
//! router around it has already authenticated the caller and checked the admin role.

use std::sync::Arc;

use sluice_proto::v1::{
    self as pb,
    admin_server::{Admin, AdminServer},
};
use tonic::{Request, Response, Status};

use super::{KeyAction, change_key};
use crate::{api::grpc::grpc_status, auth::Principal, limiter::Limiter, store::Backend};

pub(super) fn routes(limiter: Arc<Limiter<Backend>>) -> axum::Router {
    tonic::service::Routes::new(AdminServer::new(GrpcAdmin { limiter })).into_axum_router()
}

struct GrpcAdmin {
    limiter: Arc<Limiter<Backend>>,
}

#[tonic::async_trait]
impl Admin for GrpcAdmin {
    async fn reset(
        &self,
        request: Request<pb::ResetRequest>,
    ) -> Result<Response<pb::ResetResponse>, Status> {
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no bearer token"))?;
        let request = request.into_inner();
        let metrics = self.limiter.metrics();
        let reset = change_key(
            &self.limiter,
            &principal,
            KeyAction::Reset,
            &request.key,
            &request.resource,
        );
        match reset.await {
            Ok(existed) => {
                metrics.admin_request("reset", "ok");
                Ok(Response::new(pb::ResetResponse { existed }))
            }
            Err(err) => {
                let status = grpc_status(err);
                let result = if status.code() == tonic::Code::InvalidArgument {
                    "invalid"
                } else {
                    "error"
                };
                metrics.admin_request("reset", result);
                Err(status)
            }
        }
    }
}

//! The gRPC APIs Sluice serves, generated from `proto/`: its own `sluice.v1`, and Envoy's rate
//! limit service (RLS v3) from the project's own wire-compatible copies of Envoy's files.

pub mod codec;

/// `sluice.v1`: the rate limiter's own API (check, status) and its admin API (reset).
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

/// Envoy's packages, nested as their names are so the generated cross-references resolve.
pub mod envoy {
    pub mod service {
        pub mod ratelimit {
            /// `envoy.service.ratelimit.v3`: the RateLimitService and its messages.
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
    pub mod extensions {
        pub mod common {
            pub mod ratelimit {
                /// `envoy.extensions.common.ratelimit.v3`: the request's descriptors.
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    pub mod r#type {
        /// `envoy.type.v3`: the unit of a descriptor's limit override.
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
    pub mod config {
        pub mod core {
            /// `envoy.config.core.v3`: the headers a response asks the gateway to add.
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
}

/// Encoded `FileDescriptorSet` of every Sluice proto, served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");

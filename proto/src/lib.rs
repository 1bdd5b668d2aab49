//! The Sluice gRPC API, generated from `proto/sluice/v1/*.proto`.

pub mod codec;

/// `sluice.v1`: the rate limiter's own API (check, status) and its admin API (reset).
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

/// Encoded `FileDescriptorSet` of every Sluice proto, served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");

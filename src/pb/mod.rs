//! Generated protobuf code for the public API (`chatgateway.v1`) and the descriptor set
//! that gRPC server reflection serves.

pub mod codec;

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("chatgateway.v1");
}
pub use generated::*;

/// The encoded `FileDescriptorSet` of the public API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("chatgateway_descriptor");

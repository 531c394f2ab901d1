//! Generated protobuf code for the public API (`chatgateway.v1`) and the descriptor set
//! that gRPC server reflection serves.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("chatgateway.v1");

/// The encoded `FileDescriptorSet` of the public API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("chatgateway_descriptor");

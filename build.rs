//! Compiles the public API with protox (pure Rust: no system protoc) and keeps the
//! descriptor set for gRPC server reflection.

use prost::Message;
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/chatgateway/v1/gateway.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("chatgateway_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Smaller per-call buffers than tonic's default (see src/codec.rs).
        .codec_path("crate::pb::codec::ProstCodec")
        // File chunks decode as views of the received buffer, not copies.
        .bytes(".chatgateway.v1")
        .compile_fds(fds)?;
    Ok(())
}

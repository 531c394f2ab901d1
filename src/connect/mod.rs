//! The upstream: Amazon Connect as the gateway sees it — the SDK client and its typed errors,
//! transcript items, the participant socket protocol, and the one list of content types.

pub mod attachment;
pub mod bots;
pub mod client;
pub mod content_type;
pub mod error;
pub mod item;
pub mod json;
pub mod push;
pub mod socket;
pub mod stream;
pub mod tls;
pub mod views;

pub use client::{
    parse_system_time, Connect, Connection, Sent, StartChat, StartedChat, TranscriptPage,
    TranscriptQuery, UpstreamConfig, SOCKET_READ_BUFFER,
};
pub use error::UpstreamError;

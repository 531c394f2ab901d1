//! connect-chat-gateway: Amazon Connect chat behind one gRPC API.
//!
//! # Layout
//! Modules follow the path of a request:
//! - [`api`]: the gRPC surface (`chatgateway.v1.ChatGateway`): validation, chat-token
//!   authorization, and the hand-off to sessions; [`error`] maps every failure to a status.
//! - [`session`]: one actor per contact owning its participant socket (heartbeat,
//!   reconnection, backfill, fan-out to subscribers).
//! - [`upstream`]: the Connect client over the official AWS SDK crates.
//! - [`socket`] and [`item`]: the participant WebSocket protocol and transcript items.
//! - [`store`]: session records behind a trait; [`secret`]: tokens that never print.
//! - [`config`]: flags, environment and configuration file; [`pb`]: generated protobuf code
//!   (with the [`codec`] its services use).
//! - [`metrics`] and [`admin`]: Prometheus metrics and the admin HTTP endpoint (health too).
//! - [`security`]: caller authentication ([`auth`]), TLS ([`tls`], both for the listener and
//!   for the upstream sockets), [`limits`] and request validation ([`validate`]), applied in
//!   front of every service.
//! - [`sim`]: a local Amazon Connect chat simulator (REST-JSON routes and the participant
//!   WebSocket), the embedded default and the tests' upstream. The gateway's core never
//!   uses it; only the binary embeds it.
//! - [`bench`]: the load generator behind the `connect-chat-bench` binary.

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod config;
pub mod connect;
pub mod ops;
pub mod pb;
pub mod security;
pub mod serve;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;

pub use serve::{serve, serve_with, ServeOptions};

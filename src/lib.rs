//! connect-chat-gateway: Amazon Connect chat behind one gRPC API.
//!
//! # Layout
//! The modules follow the path of a request, from the caller to Connect and back:
//! - [`serve()`]: binds the services and layers together and drains in order on shutdown.
//! - [`security`]: the tower [`layers`](security::layers) every call passes first (calls
//!   counted, caller authenticated, its rate, calls per connection, request timeout,
//!   message size), the caller's [`auth`](security::auth), [`limits`](security::limits),
//!   [`tls`](security::tls) for the listener and the upstream sockets, and
//!   [`secret`](security::secret)s that never print.
//! - [`api`]: the gRPC surface (`chatgateway.v1.ChatGateway`), one file per RPC group, its
//!   [`validate`](api::validate)ion against Connect's limits and the one
//!   [`status`](api::status) mapping of every failure.
//! - [`session`]: one actor per contact owning its participant socket (connect, heartbeat,
//!   rotation, reconnection), its connection token, the
//!   [`backfill`](session::backfill) of what a socket missed, the
//!   [`fanout`](session::fanout) to subscribers and resume [`cursor`](session::cursor)s.
//! - [`connect`]: the upstream — the [`client`](connect::client) over the official AWS SDK
//!   crates, its typed [`error`](connect::error)s, transcript [`item`](connect::item)s, the
//!   participant [`socket`](connect::socket) protocol and the one list of
//!   [`content_type`](connect::content_type)s.
//! - [`store`]: chat records, in [`memory`](store::MemoryStore) or in
//!   [`redis`](store::RedisStore) (one server or a Redis Cluster) with their tokens
//!   [`seal`](store::seal)ed.
//! - [`cluster`]: cluster mode — the per-contact lease, the shared event log in a Redis
//!   Stream, the replica's one pub/sub [`bus`](cluster::bus) and cluster-wide budgets.
//! - [`ops`]: Prometheus [`metrics`](ops::metrics) and the [`admin`](ops::admin) endpoint.
//! - [`config`]: flags, environment and the configuration file, parsed once into typed values.
//! - [`pb`]: the generated protobuf code and the [`codec`](pb::codec) its services use.
//! - `sim` (feature `sim`, on by default): a local Amazon Connect chat simulator (REST-JSON
//!   routes and the participant WebSocket), the embedded default and the tests' upstream. The
//!   gateway's core never imports it (CI builds the library without it); only the binaries
//!   and the tests do.
//! - `bench` (feature `bench`): the load generator behind `connect-chat-bench`.

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cluster;
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

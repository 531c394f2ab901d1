//! Operating the gateway: Prometheus metrics and the admin HTTP endpoint (metrics, liveness,
//! readiness).

pub mod admin;
pub mod metrics;

//! Operating the gateway: Prometheus metrics, the admin HTTP endpoint (metrics, liveness,
//! readiness) and OpenTelemetry traces.

pub mod admin;
pub mod metrics;
pub mod telemetry;

//! Operating the gateway: Prometheus metrics, the admin HTTP endpoint (metrics, liveness,
//! readiness), the chat page and debugging console, and OpenTelemetry traces.

pub mod admin;
pub mod console;
pub mod metrics;
pub mod telemetry;

//! Operating the gateway: Prometheus metrics, the admin HTTP endpoint (metrics, liveness,
//! readiness), the chat page and debugging console, OpenTelemetry traces, and the async runtime.

pub mod admin;
pub mod console;
pub mod metrics;
pub mod runtime;
pub mod telemetry;

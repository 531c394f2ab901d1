//! Prometheus metrics for the admin endpoint: chats, sockets, subscribers, events, reconnects
//! by cause, backfill, slow subscribers, upstream calls (latency and errors by operation) and
//! gRPC calls by method and code. One [`Metrics`] per gateway, shared as `Arc`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationErrorLabel {
    pub operation: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabel {
    pub method: &'static str,
    pub code: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's metrics. Label values are static strings, so every family stays bounded.
pub struct Metrics {
    registry: Registry,
    pub live_chats: Gauge,
    pub upstream_sockets: Gauge,
    pub subscribers: Gauge,
    /// 1 while the process is ready for calls (serving, and in cluster mode Redis answers).
    pub ready: Gauge,
    /// 1 once a drain (SIGTERM) began.
    pub draining: Gauge,
    /// Cluster mode: chats whose lease this process holds.
    pub leases_held: Gauge,
    /// Cluster mode: leases taken (a new chat, or a take-over).
    pub leases_acquired: Counter,
    /// Cluster mode: leases lost to another replica before this process let go.
    pub leases_lost: Counter,
    /// Cluster mode: log appends that failed (Redis unreachable or the lease gone).
    pub log_append_failures: Counter,
    pub events_received: Counter,
    pub events_duplicate: Counter,
    pub events_delivered: Counter,
    pub reconnects: Family<CauseLabel, Counter>,
    pub backfilled_items: Counter,
    pub slow_subscribers_ended: Counter,
    pub malformed_frames: Counter,
    pub upstream_latency: Family<OperationLabel, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<OperationErrorLabel, Counter>,
    pub grpc_calls: Family<GrpcLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("chatgateway"),
            live_chats: Gauge::default(),
            upstream_sockets: Gauge::default(),
            subscribers: Gauge::default(),
            ready: Gauge::default(),
            draining: Gauge::default(),
            leases_held: Gauge::default(),
            leases_acquired: Counter::default(),
            leases_lost: Counter::default(),
            log_append_failures: Counter::default(),
            events_received: Counter::default(),
            events_duplicate: Counter::default(),
            events_delivered: Counter::default(),
            reconnects: Family::default(),
            backfilled_items: Counter::default(),
            slow_subscribers_ended: Counter::default(),
            malformed_frames: Counter::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            grpc_calls: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "live_chats",
            "Chats with a live session (and socket) in this process",
            m.live_chats.clone(),
        );
        r.register(
            "upstream_sockets",
            "Open participant sockets to Connect",
            m.upstream_sockets.clone(),
        );
        r.register(
            "subscribers",
            "Open Subscribe streams",
            m.subscribers.clone(),
        );
        r.register(
            "ready",
            "1 while the process is ready for calls (serving, and in cluster mode Redis answers)",
            m.ready.clone(),
        );
        r.register(
            "draining",
            "1 once a drain (SIGTERM) began",
            m.draining.clone(),
        );
        r.register(
            "leases_held",
            "Cluster mode: chats whose lease (and socket) this process holds",
            m.leases_held.clone(),
        );
        r.register(
            "leases_acquired",
            "Cluster mode: chat leases taken, new chats and take-overs",
            m.leases_acquired.clone(),
        );
        r.register(
            "leases_lost",
            "Cluster mode: chat leases lost to another replica before this process let go",
            m.leases_lost.clone(),
        );
        r.register(
            "log_append_failures",
            "Cluster mode: appends to a chat's log that failed (Redis unreachable, lease gone)",
            m.log_append_failures.clone(),
        );
        r.register(
            "events_received",
            "Items received from Connect (socket and backfill), before de-duplication",
            m.events_received.clone(),
        );
        r.register(
            "events_duplicate",
            "Items dropped as already delivered",
            m.events_duplicate.clone(),
        );
        r.register(
            "events_delivered",
            "Events sent to subscribers (once per subscriber)",
            m.events_delivered.clone(),
        );
        r.register(
            "reconnects",
            "Upstream socket losses by cause",
            m.reconnects.clone(),
        );
        r.register(
            "backfilled_items",
            "Items recovered from the transcript after a reconnect",
            m.backfilled_items.clone(),
        );
        r.register(
            "slow_subscribers_ended",
            "Subscribe streams ended for falling behind",
            m.slow_subscribers_ended.clone(),
        );
        r.register(
            "malformed_frames",
            "Upstream frames that broke the protocol",
            m.malformed_frames.clone(),
        );
        r.register(
            "upstream_call_duration_seconds",
            "Connect call latency by operation (SDK retries included)",
            m.upstream_latency.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed Connect calls by operation and error",
            m.upstream_errors.clone(),
        );
        r.register(
            "grpc_calls",
            "gRPC calls by method and status code",
            m.grpc_calls.clone(),
        );
        m
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn observe_upstream(
        &self,
        operation: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        self.upstream_latency
            .get_or_create(&OperationLabel { operation })
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.upstream_errors
                .get_or_create(&OperationErrorLabel { operation, error })
                .inc();
        }
    }

    pub fn grpc_call(&self, method: &'static str, code: tonic::Code) {
        self.grpc_calls
            .get_or_create(&GrpcLabel {
                method,
                code: code_name(code),
            })
            .inc();
    }
}

/// The canonical upper-case name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_series() {
        let m = Metrics::new();
        m.live_chats.inc();
        m.reconnects
            .get_or_create(&CauseLabel {
                cause: "closed by peer",
            })
            .inc();
        m.observe_upstream("SendMessage", Duration::from_millis(3), Some("Throttled"));
        m.grpc_call("StartChat", tonic::Code::Ok);
        let text = m.encode();
        for series in [
            "chatgateway_live_chats 1",
            "chatgateway_reconnects_total{cause=\"closed by peer\"} 1",
            "chatgateway_upstream_errors_total{operation=\"SendMessage\",error=\"Throttled\"} 1",
            "chatgateway_grpc_calls_total{method=\"StartChat\",code=\"OK\"} 1",
            "chatgateway_upstream_call_duration_seconds_count{operation=\"SendMessage\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}

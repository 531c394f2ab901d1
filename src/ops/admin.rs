//! The admin HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (200 while serving, 503 while draining), and the chat page and debugging console
//! ([`crate::ops::console`]). Kept off the gRPC port so that it can stay private to the
//! cluster.

use crate::ops::console::Console;
use crate::ops::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
}

/// Serves the admin endpoint until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    console: Option<Console>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, ready });
    if let Some(console) = console {
        app = app.merge(console.router());
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

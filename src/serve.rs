//! Serving: binds the services, the security layers and the admin endpoint together, and
//! drains in order on shutdown (health NOT_SERVING, stop accepting, sessions closed, open
//! streams ended with their resume cursor, all within the grace).

use crate::api::{ChatDefaults, Gateway};
use crate::connect::Connect;
use crate::ops::admin;
use crate::pb;
use crate::pb::chat_gateway_server::ChatGatewayServer;
use crate::security::limits::EventBudgetSettings;
use crate::security::{self, tls};
use crate::session::{SessionSettings, Sessions};
use crate::store::{MemoryStore, SessionStore};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything [`serve`] needs besides the listener and the upstream client.
#[derive(Clone)]
pub struct ServeOptions {
    pub defaults: ChatDefaults,
    pub session: SessionSettings,
    /// Chat records kept by the in-memory store.
    pub store_capacity: usize,
    /// How long a drain may take before the process gives up on open work.
    pub drain_grace: Duration,
    /// HTTP/2 PING interval on client connections (dead peers are found; idle proxies keep
    /// the connection).
    pub http2_keepalive: Duration,
    /// A shared session store (several gateway processes); `None`: in memory.
    pub store: Option<Arc<dyn SessionStore>>,
    /// Caller authentication, TLS and limits.
    pub security: security::SecurityOptions,
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains: health turns
/// NOT_SERVING, sessions close their sockets (the chats go on in Connect), open Subscribe
/// streams end with UNAVAILABLE and their resume cursor, and in-flight calls finish — all
/// within `drain_grace`, after which the server stops regardless.
pub async fn serve(
    listener: TcpListener,
    upstream: Connect,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, None, upstream, options, shutdown).await
}

/// [`serve`] with an optional admin HTTP listener (metrics, health) and a chosen store.
pub async fn serve_with(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    upstream: Connect,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let store: Arc<dyn SessionStore> = match &options.store {
        Some(store) => store.clone(),
        None => Arc::new(MemoryStore::new(options.store_capacity)),
    };
    let metrics = upstream.metrics().clone();
    let call_metrics = metrics.clone();
    let limits = &options.security.limits;
    let upstream = upstream.with_limits(limits);
    let mut session_settings = options.session.clone();
    session_settings.event_budget = EventBudgetSettings {
        typing_interval: limits.typing_interval,
        receipts_per_chat: limits.receipts_per_chat,
    };
    let sessions = Sessions::new(upstream, store, session_settings);
    let gateway = Gateway::with_limits(sessions.clone(), options.defaults.clone(), limits);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ChatGatewayServer<Gateway>>().await;
    // Served as both grpc.reflection.v1 and the older v1alpha many grpcurl versions use.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");

    let (ready_tx, ready_rx) = watch::channel(true);
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let admin = admin_listener.map(|l| {
        let mut stop = stopping_rx.clone();
        tokio::spawn(admin::serve(l, metrics, ready_rx, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    let grace = options.drain_grace;
    let mut drained = stopping_rx.clone();
    let drain = async move {
        shutdown.await;
        tracing::info!("draining");
        ready_tx.send_replace(false);
        health.set_not_serving::<ChatGatewayServer<Gateway>>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        stopping_tx.send_replace(true);
        sessions.shutdown(grace).await;
    };
    let server = security::server(&options.security, call_metrics)
        .http2_keepalive_interval(Some(options.http2_keepalive))
        .http2_keepalive_timeout(Some(options.http2_keepalive * 2))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            ChatGatewayServer::new(gateway).max_decoding_message_size(limits.max_message_bytes),
        )
        .serve_with_incoming_shutdown(tls::incoming(listener, options.security.tls.clone()), drain);
    // The drain may not outlast its grace (plus a moment for the last answers).
    let deadline = async move {
        let _ = drained.wait_for(|s| *s).await;
        tokio::time::sleep(grace + Duration::from_secs(1)).await;
        tracing::warn!("drain grace exceeded; stopping with calls still open");
    };
    let result = tokio::select! {
        r = server => r,
        _ = deadline => Ok(()),
    };
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    result
}

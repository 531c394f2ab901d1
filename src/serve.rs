//! Serving: binds the services, the security layers and the admin endpoint together, and
//! drains in order on shutdown (health NOT_SERVING, stop accepting, sessions closed, open
//! streams ended with their resume cursor, all within the grace).

use crate::api::{ChatDefaults, Gateway};
use crate::cluster::{Cluster, ClusterSettings, SharedConnectionBudget};
use crate::connect::Connect;
use crate::ops::admin;
use crate::ops::console::{self, Console, ConsoleSettings};
use crate::pb;
use crate::pb::chat_gateway_server::ChatGatewayServer;
use crate::security::limits::EventBudgetSettings;
use crate::security::{self, tls};
use crate::session::{SessionSettings, Sessions};
use crate::store::{Keys, MemoryStore, Redis, RedisStore, Sealer, SessionStore};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Cluster mode: the shared Redis and what the replicas agree on.
#[derive(Clone)]
pub struct ClusterOptions {
    pub redis: Arc<Redis>,
    pub keys: Keys,
    /// Seals the Connect tokens written to Redis.
    pub sealer: Sealer,
    pub settings: ClusterSettings,
    /// How long a chat's record lives in Redis.
    pub record_ttl: Duration,
}

/// How often the store's health is checked in cluster mode.
const STORE_CHECK: Duration = Duration::from_secs(1);

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
    /// Cluster mode on Redis (its store replaces `store`); `None`: one process.
    pub cluster: Option<ClusterOptions>,
    /// Caller authentication, TLS and limits.
    pub security: security::SecurityOptions,
    /// Serve the chat page and debugging console on the admin endpoint.
    pub console: bool,
    /// The upstream is the embedded simulator: the console's page says so, and may call the
    /// API from the admin endpoint's loopback origins without a CORS setting.
    pub simulated: bool,
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
    let cluster_stop = CancellationToken::new();
    let _stop_cluster = cluster_stop.clone().drop_guard();
    let cluster = options.cluster.as_ref().map(|c| {
        Cluster::new(
            c.redis.clone(),
            c.keys.clone(),
            c.sealer.clone(),
            c.settings.clone(),
            cluster_stop.clone(),
        )
    });
    let store: Arc<dyn SessionStore> = match (&options.cluster, &options.store) {
        (Some(c), _) => Arc::new(
            RedisStore::new(
                c.redis.clone(),
                c.keys.clone(),
                c.sealer.clone(),
                c.record_ttl,
            )
            .expect("the store options were checked"),
        ),
        (None, Some(store)) => store.clone(),
        (None, None) => Arc::new(MemoryStore::new(options.store_capacity)),
    };
    let metrics = upstream.metrics().clone();
    let call_metrics = metrics.clone();
    let limits = &options.security.limits;
    let mut upstream = upstream.with_limits(limits);
    if let (Some(cluster), true) = (&cluster, limits.connection_rate > 0) {
        upstream = upstream.with_shared_budget(Arc::new(SharedConnectionBudget {
            cluster: cluster.clone(),
            per_second: limits.connection_rate,
        }));
    }
    let mut session_settings = options.session.clone();
    session_settings.event_budget = EventBudgetSettings {
        typing_interval: limits.typing_interval,
        receipts_per_chat: limits.receipts_per_chat,
    };
    let sessions = Sessions::with_cluster(upstream, store, session_settings, cluster.clone());
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

    // Ready while serving and, in cluster mode, while Redis answers.
    let (ready_tx, ready_rx) = watch::channel(cluster.is_none());
    metrics.ready.set(i64::from(cluster.is_none()));
    let ready_tx = Arc::new(ready_tx);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(cluster) = &cluster {
        let redis = cluster.redis().clone();
        let ready_metrics = metrics.clone();
        let (ready_tx, draining, health, stop) = (
            ready_tx.clone(),
            draining.clone(),
            health.clone(),
            cluster_stop.clone(),
        );
        health.set_not_serving::<ChatGatewayServer<Gateway>>().await;
        tokio::spawn(async move {
            let mut was: Option<bool> = None;
            loop {
                let ready = redis.ping().await;
                // Once draining, the drain owns readiness.
                if was != Some(ready) && !draining.load(std::sync::atomic::Ordering::SeqCst) {
                    if ready {
                        tracing::info!("the session store answers; ready");
                        health.set_serving::<ChatGatewayServer<Gateway>>().await;
                        health
                            .set_service_status("", tonic_health::ServingStatus::Serving)
                            .await;
                    } else {
                        tracing::warn!("the session store does not answer; not ready");
                        health.set_not_serving::<ChatGatewayServer<Gateway>>().await;
                        health
                            .set_service_status("", tonic_health::ServingStatus::NotServing)
                            .await;
                    }
                    ready_tx.send_replace(ready);
                    ready_metrics.ready.set(i64::from(ready));
                    was = Some(ready);
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(STORE_CHECK) => {}
                }
            }
        });
    }
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let drain_metrics = metrics.clone();
    let grpc_port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let mut server_security = options.security.clone();
    let admin = admin_listener.map(|l| {
        let console = options.console.then(|| {
            if options.simulated {
                // The embedded default: the page on the admin port may call the API.
                if let Ok(addr) = l.local_addr() {
                    server_security
                        .cors_allowed_origins
                        .extend(console::loopback_origins(addr));
                }
            }
            Console::new(
                sessions.clone(),
                ConsoleSettings {
                    grpc_port,
                    grpc_tls: options.security.tls.is_some(),
                    simulated: options.simulated,
                },
            )
        });
        let mut stop = stopping_rx.clone();
        tokio::spawn(admin::serve(l, metrics, ready_rx, console, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    let grace = options.drain_grace;
    let mut drained = stopping_rx.clone();
    let drain = async move {
        shutdown.await;
        tracing::info!("draining");
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        ready_tx.send_replace(false);
        drain_metrics.draining.set(1);
        drain_metrics.ready.set(0);
        health.set_not_serving::<ChatGatewayServer<Gateway>>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        stopping_tx.send_replace(true);
        sessions.shutdown(grace).await;
    };
    let server = security::server(&server_security, call_metrics)
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

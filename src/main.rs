//! The gateway binary: parse the configuration, start tracing, start the embedded simulator
//! when no Connect instance is configured, bind the listener and serve until SIGTERM/SIGINT.

use connect_chat_gateway::config::{AdminListen, Config, StoreKind};
use connect_chat_gateway::connect::Connect;
use connect_chat_gateway::ops::metrics::Metrics;
use connect_chat_gateway::ops::runtime;
use connect_chat_gateway::ops::telemetry::{self, Telemetry};
use connect_chat_gateway::serve::ClusterOptions;
#[cfg(feature = "sim")]
use connect_chat_gateway::sim::{SimConfig, Simulator};
use connect_chat_gateway::store::{Keys, Redis};
use connect_chat_gateway::ServeOptions;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Every event allocates and frees a few dozen small objects (the item's strings, the event,
/// its encodings, HTTP/2's frames). Under load glibc's allocator took a fifth of the gateway's
/// CPU, most of it in `_int_malloc` once a wake-up's burst emptied its per-thread cache;
/// mimalloc's free lists per size and page cost a fraction of that (docs/benchmark.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::load_from(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let runtime = match runtime::build(usize::from(config.worker_threads)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("connect-chat-gateway: cannot start the runtime (--worker-threads): {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve_until_stopped(config))
}

async fn serve_until_stopped(config: Config) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Traces over OTLP when the OTEL_* variables ask for them.
    let (telemetry, otel) = if telemetry::enabled() {
        match Telemetry::start() {
            Ok((t, layer)) => (Some(t), Some(layer)),
            Err(e) => {
                eprintln!("connect-chat-gateway: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        (None, None)
    };
    let fmt = if config.log_json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .init();
    if telemetry.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    };
    if let Some(t) = telemetry {
        t.shutdown();
    }
    code
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let security = config.security.build(config.listen)?;
    #[cfg(feature = "sim")]
    let simulator = if config.embedded() {
        Some(Simulator::start(SimConfig::default()).await?)
    } else {
        None
    };
    #[cfg(feature = "sim")]
    let endpoint = simulator.as_ref().map(|s| s.endpoint());
    #[cfg(not(feature = "sim"))]
    let endpoint: Option<String> = if config.embedded() {
        return Err(
            "this build has no embedded Connect simulator: give --instance-id and \
                    --contact-flow-id (or --endpoint-url)"
                .into(),
        );
    } else {
        None
    };
    let mut upstream =
        Connect::new(&config.upstream(endpoint.clone()), Arc::new(Metrics::new())).await;
    if let Some(ca) = &config.upstream_ca_file {
        upstream = upstream
            .with_socket_ca_file(ca)
            .map_err(|e| format!("--upstream-ca-file: {e}"))?;
    }
    // Cluster mode starts while Redis is down: it reports not ready until Redis answers.
    let cluster = match &config.store {
        StoreKind::Memory => None,
        StoreKind::Redis(urls) => Some(ClusterOptions {
            redis: Arc::new(
                Redis::new(urls, config.store_cluster).map_err(|e| format!("--store: {e}"))?,
            ),
            keys: Keys::new(&config.store_prefix).map_err(|e| format!("--store-prefix: {e}"))?,
            sealer: config.sealer()?,
            settings: config.cluster(),
            record_ttl: config.store_ttl,
        }),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (--listen): {e}", config.listen))?;
    let admin = match config.admin_listen {
        AdminListen::Off => None,
        AdminListen::At(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (--admin-listen): {e}"))?;
            let at = l.local_addr()?;
            tracing::info!("admin endpoint on http://{at}/metrics");
            if config.console {
                tracing::info!("chat page and console on http://{at}/console/");
            }
            Some(l)
        }
    };
    let addr = listener.local_addr()?;
    match &endpoint {
        Some(sim) => {
            tracing::info!(
                "gateway on {addr}, talking to the embedded Connect simulator at {sim} (no AWS account needed)"
            );
            tracing::info!(
                "try: grpcurl -plaintext -d '{{\"display_name\":\"Ada\"}}' {addr} chatgateway.v1.ChatGateway/StartChat"
            );
        }
        None => tracing::info!(
            region = %config.region,
            "gateway on {addr}, talking to Amazon Connect"
        ),
    }
    let options = ServeOptions {
        defaults: config.chat_defaults(),
        session: config.session(),
        store_capacity: config.max_stored_chats,
        drain_grace: config.drain_grace,
        http2_keepalive: config.http2_keepalive,
        store: None,
        cluster,
        security,
        console: config.console,
        simulated: endpoint.is_some(),
    };
    connect_chat_gateway::serve_with(listener, admin, upstream, options, shutdown_signal()).await?;
    #[cfg(feature = "sim")]
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

//! TLS for the simulator's participant sockets (`wss://`): a CA and a `127.0.0.1`/`localhost`
//! server certificate generated at start with rcgen, and a listener that completes TLS
//! handshakes off the accept loop (accept loop and handshakes are tracked tasks that stop on
//! shutdown). The REST routes stay plain HTTP on the main listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handshakes completed but not yet taken by the server, at most.
const READY_QUEUE: usize = 1024;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A generated CA and the server configuration of a certificate it signed.
pub struct Certs {
    /// The CA certificate, PEM: what clients must trust.
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Generate a CA and a server certificate for `127.0.0.1`, `::1`, `localhost` and the
/// address the simulator listens on (another loopback address, say).
pub fn generate(listen: std::net::IpAddr) -> std::io::Result<Certs> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(io_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "connect-sim local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(io_err)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(io_err)?;

    let mut names = vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ];
    if !listen.is_unspecified() && !names.contains(&listen.to_string()) {
        names.push(listen.to_string());
    }
    let mut leaf_params = CertificateParams::new(names).map_err(io_err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "connect-sim");
    let leaf_key = KeyPair::generate().map_err(io_err)?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(io_err)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io_err)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Certs {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    })
}

/// An [`axum::serve::Listener`] handing out TLS streams whose handshake is done. Handshakes
/// run in their own tasks, so a slow client never holds up the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Start accepting on `listener`; the accept loop and every handshake run as tasks of
    /// `tasks` and stop when `stop` is cancelled.
    pub fn start(
        listener: TcpListener,
        server: Arc<rustls::ServerConfig>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(server);
        let handshakes = tasks.clone();
        tasks.spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(err) => {
                            // Out of descriptors and the like: back off briefly.
                            tracing::warn!(error = %err, "TLS listener accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let stop = stop.clone();
                handshakes.spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let tls = tokio::select! {
                        // Shutdown: an unfinished handshake is dropped, not waited for.
                        _ = stop.cancelled() => return,
                        done = handshake => done,
                    };
                    match tls {
                        Ok(Ok(tls)) => {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = tx.send((tls, peer)) => {}
                            }
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, %peer, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local_addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

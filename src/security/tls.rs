//! TLS, both ways. For the gRPC listener (rustls with the aws-lc-rs provider the AWS SDK
//! already uses; the gateway accepts connections itself and hands them to tonic): the
//! server's certificate and key, and an optional client CA that turns on mutual TLS, whose
//! client certificate subject becomes the caller's principal. For
//! the upstream participant sockets (`wss://`): one rustls client configuration, built once at
//! start, trusting the public web roots plus any extra CA the operator names.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{ServerConfig, SignatureScheme};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::either::Either;
use tonic::transport::server::Connected;

/// Where the listener's TLS material lives, and the bounds of its handshakes.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A CA bundle: clients presenting a certificate it signed are authenticated by it.
    pub client_ca: Option<PathBuf>,
    pub handshake: HandshakeLimits,
}

/// Bounds on TLS handshakes in progress, so slow or silent clients cannot pile up.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeLimits {
    /// A connection that has not finished its handshake by then is closed.
    pub timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the listen backlog.
    pub max_in_progress: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_in_progress: 1024,
        }
    }
}

/// The listener's TLS configuration, loaded and checked once at start.
///
/// With a client CA, a client certificate is requested but never refused in the handshake:
/// the handshake only proves that the client holds the certificate's key, and the chain is
/// then checked against the CA once per connection. A call on a connection whose certificate
/// does not chain to the CA is refused by the authentication layer with UNAUTHENTICATED and
/// the reason, instead of a bare connection failure the client cannot tell from a network
/// fault.
#[derive(Clone)]
pub struct TlsSettings {
    acceptor: TlsAcceptor,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    pub handshake: HandshakeLimits,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mutual", &self.mutual())
            .field("handshake", &self.handshake)
            .finish_non_exhaustive()
    }
}

/// Why the listener's TLS configuration could not be built; `what` names the file (and its
/// flag, when loaded from files).
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    #[error("cannot read the {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("the {what} is not PEM: {source}")]
    NotPem {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the {what} holds no certificate")]
    NoCertificate { what: String },
    #[error("the {what} holds no usable private key: {source}")]
    NoKey {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the {what} holds a bad certificate: {source}")]
    BadCertificate { what: String, source: rustls::Error },
    #[error("the {what} is not usable: {source}")]
    ClientCa {
        what: String,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("cannot configure TLS: {0}")]
    Config(rustls::Error),
    #[error("the {cert} and {key} do not make a usable pair: {source}")]
    Pair {
        cert: String,
        key: String,
        source: rustls::Error,
    },
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ListenerTlsError> {
    std::fs::read(path).map_err(|source| ListenerTlsError::Read {
        what: format!("{what} {}", path.display()),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ListenerTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ListenerTlsError::NotPem {
            what: what.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ListenerTlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsSettings {
    /// PEM-encoded certificate chain, private key and optional client CA bundle.
    pub fn from_pem(
        cert: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
        handshake: HandshakeLimits,
    ) -> Result<Self, ListenerTlsError> {
        Self::build(
            cert,
            key,
            client_ca,
            handshake,
            ["TLS certificate", "TLS key", "client CA"],
        )
    }

    fn build(
        cert: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
        handshake: HandshakeLimits,
        names: [&str; 3],
    ) -> Result<Self, ListenerTlsError> {
        let chain = certificates(cert, names[0])?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| ListenerTlsError::NoKey {
            what: names[1].to_owned(),
            source,
        })?;
        let client_verifier = match client_ca {
            None => None,
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certificates(ca, names[2])? {
                    roots
                        .add(c)
                        .map_err(|source| ListenerTlsError::BadCertificate {
                            what: names[2].to_owned(),
                            source,
                        })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|source| ListenerTlsError::ClientCa {
                            what: names[2].to_owned(),
                            source,
                        })?;
                Some(verifier)
            }
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(ListenerTlsError::Config)?;
        let builder = match &client_verifier {
            Some(v) => builder.with_client_cert_verifier(Arc::new(Deferred(v.clone()))),
            None => builder.with_client_cert_verifier(Arc::new(NoClientAuth)),
        };
        let mut config =
            builder
                .with_single_cert(chain, key)
                .map_err(|source| ListenerTlsError::Pair {
                    cert: names[0].to_owned(),
                    key: names[1].to_owned(),
                    source,
                })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_verifier,
            handshake,
        })
    }

    /// Reads and checks the files, naming the flag of any that is unusable.
    pub fn load(files: &TlsFiles) -> Result<Self, ListenerTlsError> {
        let cert = read(&files.cert, "TLS certificate (--tls-cert)")?;
        let key = read(&files.key, "TLS key (--tls-key)")?;
        let ca = match &files.client_ca {
            Some(p) => Some(read(p, "client CA (--tls-client-ca)")?),
            None => None,
        };
        let shown = |flag: &str, p: &Path| format!("{flag} file {}", p.display());
        let cert_name = shown("--tls-cert", &files.cert);
        let key_name = shown("--tls-key", &files.key);
        let ca_name = files
            .client_ca
            .as_deref()
            .map(|p| shown("--tls-client-ca", p))
            .unwrap_or_default();
        Self::build(
            &cert,
            &key,
            ca.as_deref(),
            files.handshake,
            [&cert_name, &key_name, &ca_name],
        )
    }

    /// Whether client certificates are requested (a client CA is configured).
    pub fn mutual(&self) -> bool {
        self.client_verifier.is_some()
    }

    /// What the client's certificate chain, if it sent one, proves.
    fn client_certificate(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Option<ClientCertificate> {
        let verifier = self.client_verifier.as_ref()?;
        let (end_entity, intermediates) = chain?.split_first()?;
        Some(
            match verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
                Err(e) => ClientCertificate::Untrusted(e.to_string()),
                Ok(_) => match subject_of(end_entity.as_ref()) {
                    Some(subject) => ClientCertificate::Trusted(subject),
                    None => ClientCertificate::Untrusted("the certificate has no subject".into()),
                },
            },
        )
    }
}

/// Requests a client certificate and checks the handshake signature (proof that the client
/// holds the certificate's key), but leaves the chain to [`TlsSettings::client_certificate`].
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What a connection's client certificate proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCertificate {
    /// It chains to the client CA; its subject distinguished name.
    Trusted(String),
    /// It was presented but does not chain to the client CA (unknown issuer, expired, ...).
    Untrusted(String),
}

/// What the authentication layer learns about a connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote_addr: Option<SocketAddr>,
    /// `None` without TLS, without a client CA, or when the client sent no certificate.
    pub client_certificate: Option<ClientCertificate>,
    /// Calls and streams open on this connection right now.
    pub open_calls: Arc<AtomicUsize>,
}

impl ConnInfo {
    fn new(tcp: &TcpStream, client_certificate: Option<ClientCertificate>) -> Self {
        Self {
            remote_addr: tcp.peer_addr().ok(),
            client_certificate,
            open_calls: Arc::default(),
        }
    }
}

/// An accepted gRPC connection, plain TCP or TLS, with what is known about it.
pub struct Conn {
    io: Io,
    info: ConnInfo,
}

/// Plain TCP, or TLS over it.
type Io = Either<TcpStream, Box<TlsStream<TcpStream>>>;

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`, with Nagle's algorithm off, through TLS when it is
/// configured. Tonic applies its own `tcp_nodelay` only to listeners it binds itself, and with
/// Nagle on, a small event written while an earlier one is unacknowledged waits for the peer's
/// delayed ACK (up to 40 ms on Linux).
///
/// TLS handshakes run concurrently (a slow client holds up no one), each within the handshake
/// timeout and at most the configured number at once; a failed handshake is logged and
/// dropped. Accepting stops once the server stops taking connections.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsSettings>,
) -> Pin<Box<dyn Stream<Item = std::io::Result<Conn>> + Send>> {
    let Some(tls) = tls else {
        return Box::pin(TcpListenerStream::new(listener).map(|conn| {
            conn.map(|tcp| {
                let _ = tcp.set_nodelay(true);
                Conn {
                    info: ConnInfo::new(&tcp, None),
                    io: Either::Left(tcp),
                }
            })
        }));
    };
    let limit = tls.handshake.max_in_progress.max(1);
    let (tx, rx) = mpsc::channel(limit);
    let permits = Arc::new(Semaphore::new(limit));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, most likely: pause rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tls.acceptor.accept(tcp);
                match tokio::time::timeout(tls.handshake.timeout, handshake).await {
                    Ok(Ok(stream)) => {
                        let cert = tls.client_certificate(stream.get_ref().1.peer_certificates());
                        let conn = Conn {
                            info: ConnInfo::new(stream.get_ref().0, cert),
                            io: Either::Right(Box::new(stream)),
                        };
                        let _ = tx.send(conn).await;
                        drop(permit);
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Box::pin(ReceiverStream::new(rx).map(Ok))
}

/// The subject distinguished name of a DER certificate (`CN=client-a, O=Example`), or
/// `None` when it does not parse.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject().to_string();
    (!subject.is_empty()).then_some(subject)
}

/// Why the socket TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the CA file {0} holds no certificate")]
    Empty(String),
    #[error("the CA file {path} holds a certificate rustls refuses: {source}")]
    Rejected { path: String, source: rustls::Error },
    #[error("cannot build the TLS client configuration: {0}")]
    Config(rustls::Error),
}

/// The client configuration for participant sockets: the webpki roots, plus every certificate
/// in the PEM file `extra_ca` when given.
pub fn socket_client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Read {
                path: shown.clone(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::Empty(shown));
        }
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::Rejected {
                path: shown.clone(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A TLS 1.3 socket keeps its traffic keys alone once the server's first data came
    // (`connect::tls`); rustls hands them over only when this is set.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roots_build() {
        assert!(socket_client_config(None).is_ok());
    }

    #[test]
    fn missing_or_empty_ca_files_name_the_path() {
        let e = socket_client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("ccg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = socket_client_config(Some(&empty)).unwrap_err();
        assert!(matches!(e, TlsError::Empty(_)), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

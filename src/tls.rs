//! TLS, both ways. For the gRPC listener (rustls through tonic, with the aws-lc-rs provider the
//! AWS SDK already uses): the server's certificate and key, and an optional client CA that
//! turns on mutual TLS, whose client certificate subject becomes the caller's principal. For
//! the upstream participant sockets (`wss://`): one rustls client configuration, built once at
//! start, trusting the public web roots plus any extra CA the operator names.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Where the listener's TLS material lives.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A CA bundle: clients presenting a certificate it signed are authenticated by it.
    pub client_ca: Option<PathBuf>,
    /// Whether a client without a certificate may still connect (and authenticate
    /// otherwise); false makes the certificate mandatory.
    pub client_cert_optional: bool,
}

/// The listener's TLS configuration, loaded and checked once at start.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub config: ServerTlsConfig,
    pub mutual: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn check_pem(bytes: &[u8], path: &Path, what: &str) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    if text.contains("-----BEGIN ") {
        Ok(())
    } else {
        Err(format!("the {what} {} is not PEM", path.display()))
    }
}

impl TlsSettings {
    /// PEM-encoded certificate chain, private key and optional client CA.
    pub fn from_pem(
        cert: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
        client_cert_optional: bool,
    ) -> Self {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(client_cert_optional);
        }
        Self {
            config,
            mutual: client_ca.is_some(),
        }
    }

    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let cert = read(&files.cert, "TLS certificate (--tls-cert)")?;
        check_pem(&cert, &files.cert, "TLS certificate (--tls-cert)")?;
        let key = read(&files.key, "TLS key (--tls-key)")?;
        check_pem(&key, &files.key, "TLS key (--tls-key)")?;
        let ca = match &files.client_ca {
            Some(p) => {
                let ca = read(p, "client CA (--tls-client-ca)")?;
                check_pem(&ca, p, "client CA (--tls-client-ca)")?;
                Some(ca)
            }
            None => None,
        };
        let settings = Self::from_pem(&cert, &key, ca.as_deref(), files.client_cert_optional);
        // Surfaces a bad certificate or key now, naming the flags, rather than at serve.
        tonic::transport::Server::builder()
            .tls_config(settings.config.clone())
            .map_err(|e| format!("the TLS certificate, key or client CA is not usable: {e}"))?;
        Ok(settings)
    }
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
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
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

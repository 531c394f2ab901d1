//! The security settings: flags and environment ([`SecurityArgs`], flattened into the
//! gateway's configuration) and what [`crate::serve()`] applies ([`SecurityOptions`]):
//! authentication, operators, TLS and every limit. Files are read and checked once, at start.

pub mod auth;
pub mod layers;
pub mod limits;
pub mod secret;
pub mod tls;

use crate::security::auth::{parse_key_hash, ApiKey, Authenticator, JwtKey, JwtSettings};
use crate::security::layers::SecurityLayer;
use crate::security::limits::Limits;
use crate::security::tls::{HandshakeLimits, TlsFiles, TlsSettings};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tower::layer::util::Stack;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m)"))
}

/// Parses NAME=SHA256HEX once, into the key the authenticator compares with.
fn api_key(s: &str) -> Result<ApiKey, String> {
    let (name, hash) = s
        .split_once('=')
        .ok_or("expected NAME=SHA256HEX (hash a key with `printf %s KEY | sha256sum`)")?;
    match (name.is_empty(), parse_key_hash(hash)) {
        (false, Some(hash)) => Ok(ApiKey {
            name: name.to_owned(),
            hash,
        }),
        _ => Err("expected NAME=SHA256HEX: a name and 64 hex digits".into()),
    }
}

/// Caller authentication, TLS and limits.
#[derive(Args, Debug, Clone)]
pub struct SecurityArgs {
    /// Accepted API keys as NAME=SHA256HEX of the key (comma-separated); the caller sends the
    /// key as `x-api-key` metadata and becomes principal `key:NAME`.
    #[arg(long = "api-key", env = "GATEWAY_API_KEYS", value_delimiter = ',', value_parser = api_key)]
    pub api_keys: Vec<ApiKey>,

    /// File holding an HS256 secret (at least 32 bytes) that signs accepted JWTs.
    #[arg(long, env = "GATEWAY_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// PEM public key (RSA: RS256, EC P-256: ES256) that signs accepted JWTs.
    #[arg(long, env = "GATEWAY_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JWKS file whose RS256/ES256 keys sign accepted JWTs (chosen by `kid`).
    #[arg(long, env = "GATEWAY_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Required `iss` of accepted JWTs.
    #[arg(long, env = "GATEWAY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of accepted JWTs.
    #[arg(long, env = "GATEWAY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on JWT `exp` and `nbf`.
    #[arg(long, env = "GATEWAY_JWT_LEEWAY", default_value = "30s", value_parser = duration)]
    pub jwt_leeway: Duration,

    /// Principals (`key:NAME`, `jwt:SUBJECT`, `cert:SUBJECT-DN`) that may inspect any chat
    /// (GetChat, GetTranscript, Subscribe) without its chat token; every access is logged.
    #[arg(long = "operator", env = "GATEWAY_OPERATORS", value_delimiter = ',')]
    pub operators: Vec<String>,

    /// Principals (as for `--operator`, or `anonymous` without authentication) that may add
    /// custom bots to chats with AddBotParticipant; operators always may.
    #[arg(
        long = "bot-caller",
        env = "GATEWAY_BOT_CALLERS",
        value_delimiter = ','
    )]
    pub bot_callers: Vec<String>,

    /// A role (in a JWT's `roles` claim) or scope (in its `scope` claim) that lets its bearer
    /// add custom bots to chats.
    #[arg(long, env = "GATEWAY_BOT_ROLE")]
    pub bot_role: Option<String>,

    /// Serve reflection only to authenticated callers (health is always open).
    #[arg(long, env = "GATEWAY_REFLECTION_REQUIRES_AUTH")]
    pub reflection_requires_auth: bool,

    /// Serve without authentication on a non-loopback listen address.
    #[arg(long, env = "GATEWAY_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// PEM certificate chain of the gRPC listener (turns TLS on).
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the gRPC listener.
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle for client certificates (mutual TLS; the subject becomes the principal).
    #[arg(long, env = "GATEWAY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// A client that has not finished its TLS handshake by then is disconnected.
    #[arg(long, env = "GATEWAY_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub tls_handshake_timeout: Duration,

    /// TLS handshakes in progress at once; further connections wait to be accepted.
    #[arg(long, env = "GATEWAY_TLS_MAX_HANDSHAKES", default_value = "1024", value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_max_handshakes: u64,

    /// Requests per second per caller (0: no limit).
    #[arg(long, env = "GATEWAY_CALLER_RATE", default_value = "100")]
    pub caller_rate: u32,

    /// Requests a caller may make in a burst above its rate.
    #[arg(long, env = "GATEWAY_CALLER_BURST", default_value = "200")]
    pub caller_burst: u32,

    /// Live chats per caller.
    #[arg(long, env = "GATEWAY_MAX_CHATS_PER_CALLER", default_value = "1000", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_chats_per_caller: u64,

    /// Largest gRPC request message, in bytes.
    #[arg(long, env = "GATEWAY_MAX_MESSAGE_BYTES", default_value = "262144", value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_message_bytes: u64,

    /// Concurrent streams (calls and Subscribe streams) per HTTP/2 connection.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_STREAMS", default_value = "256", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Deadline of a unary call (and of a stream's opening).
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,

    /// At most one typing event per chat goes to Connect this often; others answer OK.
    #[arg(long, env = "GATEWAY_TYPING_INTERVAL", default_value = "10s", value_parser = duration)]
    pub typing_interval: Duration,

    /// Message ids per chat remembered to de-duplicate receipts.
    #[arg(long, env = "GATEWAY_RECEIPTS_PER_CHAT", default_value = "256", value_parser = clap::value_parser!(u64).range(1..))]
    pub receipts_per_chat: u64,

    /// Web page origins (scheme://host[:port], comma-separated) whose scripts may call the
    /// API with gRPC-Web (CORS). None by default: gRPC-Web works for same-origin pages and
    /// for clients that are not browsers (React Native) without it.
    #[arg(long, env = "GATEWAY_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// CreateParticipantConnection calls per second across all chats (0: no budget).
    #[arg(long, env = "GATEWAY_CONNECTION_RATE", default_value = "5")]
    pub connection_rate: u32,

    /// CreateParticipantConnection calls allowed in a burst above that rate.
    #[arg(long, env = "GATEWAY_CONNECTION_BURST", default_value = "9")]
    pub connection_burst: u32,

    /// Largest frame accepted on an upstream participant socket, in bytes.
    #[arg(long, env = "GATEWAY_MAX_UPSTREAM_FRAME_BYTES", default_value = "262144", value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_upstream_frame_bytes: u64,

    /// Bytes of one attachment upload or download held in flight by the gateway (in chunks
    /// of at most --max-message-bytes); a slower side holds the other back.
    #[arg(long, env = "GATEWAY_ATTACHMENT_BUFFER_BYTES", default_value = "1048576", value_parser = clap::value_parser!(u64).range(1..))]
    pub attachment_buffer_bytes: u64,

    /// Attachment uploads and downloads in progress at once in this process; more are
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "GATEWAY_MAX_ATTACHMENT_TRANSFERS", default_value = "32", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_attachment_transfers: u64,
}

/// What [`crate::serve()`] applies. The default: no authentication, no TLS, default limits
/// (the embedded, loopback-only configuration).
#[derive(Clone, Debug, Default)]
pub struct SecurityOptions {
    pub auth: Arc<Authenticator>,
    pub tls: Option<TlsSettings>,
    pub limits: Limits,
    /// Origins whose pages may call the API with gRPC-Web (CORS).
    pub cors_allowed_origins: Vec<String>,
}

fn read_file(path: &PathBuf, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

impl SecurityArgs {
    fn limits(&self) -> Limits {
        let clamp = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Limits {
            caller_rate: self.caller_rate,
            caller_burst: self.caller_burst,
            max_chats_per_caller: clamp(self.max_chats_per_caller),
            max_message_bytes: clamp(self.max_message_bytes),
            max_concurrent_streams: self.max_concurrent_streams,
            request_timeout: self.request_timeout,
            typing_interval: self.typing_interval,
            receipts_per_chat: clamp(self.receipts_per_chat),
            connection_rate: self.connection_rate,
            connection_burst: self.connection_burst,
            max_upstream_frame_bytes: clamp(self.max_upstream_frame_bytes),
            attachment_buffer_bytes: clamp(self.attachment_buffer_bytes),
            max_attachment_transfers: clamp(self.max_attachment_transfers),
            ..Limits::default()
        }
    }

    fn jwt(&self) -> Result<Option<JwtSettings>, String> {
        let mut keys = Vec::new();
        if let Some(p) = &self.jwt_hs256_secret_file {
            let secret = read_file(p, "--jwt-hs256-secret-file")?;
            let secret = secret.trim_ascii();
            keys.push(JwtKey::hs256(secret).map_err(|e| format!("--jwt-hs256-secret-file: {e}"))?);
        }
        if let Some(p) = &self.jwt_public_key_file {
            let pem = read_file(p, "--jwt-public-key-file")?;
            keys.push(JwtKey::from_pem(&pem).map_err(|e| format!("--jwt-public-key-file: {e}"))?);
        }
        if let Some(p) = &self.jwt_jwks_file {
            let json = read_file(p, "--jwt-jwks-file")?;
            let json = String::from_utf8(json).map_err(|_| "--jwt-jwks-file: not UTF-8")?;
            keys.extend(JwtKey::from_jwks(&json).map_err(|e| format!("--jwt-jwks-file: {e}"))?);
        }
        if keys.is_empty() {
            if self.jwt_issuer.is_some() || self.jwt_audience.is_some() {
                return Err("--jwt-issuer/--jwt-audience need a JWT key (--jwt-hs256-secret-file, --jwt-public-key-file or --jwt-jwks-file)".into());
            }
            return Ok(None);
        }
        let (Some(issuer), Some(audience)) = (&self.jwt_issuer, &self.jwt_audience) else {
            return Err("JWT keys need --jwt-issuer and --jwt-audience".into());
        };
        Ok(Some(JwtSettings {
            keys,
            issuer: issuer.clone(),
            audience: audience.clone(),
            leeway: self.jwt_leeway,
        }))
    }

    /// Reads the key and certificate files and checks the combination. Refuses to serve a
    /// non-loopback `listen` address without authentication unless explicitly allowed.
    pub fn build(&self, listen: SocketAddr) -> Result<SecurityOptions, String> {
        let api_keys = self.api_keys.clone();
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsSettings::load(&TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                    handshake: HandshakeLimits {
                        timeout: self.tls_handshake_timeout,
                        max_in_progress: self.tls_max_handshakes as usize,
                    },
                })
                .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let auth = Authenticator {
            api_keys,
            jwt: self.jwt()?,
            client_certificates: tls.as_ref().is_some_and(|t| t.mutual()),
            // With other mechanisms configured a client may authenticate without one.
            client_certificate_required: tls.as_ref().is_some_and(|t| t.mutual())
                && self.api_keys.is_empty()
                && self.jwt_hs256_secret_file.is_none()
                && self.jwt_public_key_file.is_none()
                && self.jwt_jwks_file.is_none(),
            operators: self.operators.iter().cloned().collect(),
            bot_callers: self.bot_callers.iter().cloned().collect(),
            bot_role: self.bot_role.clone().filter(|r| !r.is_empty()),
            reflection_requires_auth: self.reflection_requires_auth,
        };
        check_exposure(&auth, listen, self.allow_unauthenticated)?;
        for origin in &self.cors_allowed_origins {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')
            });
            if !ok {
                return Err(format!(
                    "--cors-allowed-origins: {origin:?} is not an origin (scheme://host[:port])"
                ));
            }
        }
        Ok(SecurityOptions {
            auth: Arc::new(auth),
            tls,
            limits: self.limits(),
            cors_allowed_origins: self.cors_allowed_origins.clone(),
        })
    }
}

/// The gRPC server builder with the server-wide bounds and the [`layers::SecurityLayer`] applied (TLS is
/// done by [`crate::security::tls::incoming`]).
/// The layers of the gRPC server, outermost last: CORS, gRPC-Web, then the security stack.
pub type ServerLayers = Stack<
    SecurityLayer,
    Stack<
        tonic_web::GrpcWebLayer,
        Stack<tower_http::cors::CorsLayer, tower::layer::util::Identity>,
    >,
>;

pub fn server(
    options: &SecurityOptions,
    metrics: Arc<crate::ops::metrics::Metrics>,
) -> Server<ServerLayers> {
    let limits = &options.limits;
    // The request timeout and the limit of calls per connection are the AuthLayer's, which
    // answer DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED. HTTP/2 advertises twice that limit:
    // a client past it hears RESOURCE_EXHAUSTED rather than silently waiting, and the
    // protocol still holds back a client that ignores the answers.
    let builder =
        Server::builder().max_concurrent_streams(limits.max_concurrent_streams.saturating_mul(2));
    // gRPC-Web (browsers, React Native) on the same port: HTTP/1.1 is accepted for it, and
    // it is translated to gRPC before any other layer sees the call; CORS answers first.
    builder
        .accept_http1(true)
        .trace_fn(crate::ops::telemetry::rpc_span)
        .layer(cors(&options.cors_allowed_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(SecurityLayer::new(options.auth.clone(), limits, metrics))
}

/// CORS for gRPC-Web callers: pages of `origins` only (none: no page of another origin).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(
            [
                "content-type",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
                "authorization",
                auth::API_KEY_HEADER,
                "traceparent",
            ]
            .map(HeaderName::from_static),
        )
        .expose_headers(
            [
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
                "resume-cursor",
            ]
            .map(HeaderName::from_static),
        )
        .max_age(std::time::Duration::from_secs(600))
}

/// Without authentication the gateway serves only loopback, unless explicitly allowed.
pub fn check_exposure(
    auth: &Authenticator,
    listen: SocketAddr,
    allow_unauthenticated: bool,
) -> Result<(), String> {
    if auth.enabled() || listen.ip().is_loopback() || allow_unauthenticated {
        if !auth.enabled() && !listen.ip().is_loopback() {
            tracing::warn!(%listen, "serving without caller authentication (--allow-unauthenticated)");
        }
        return Ok(());
    }
    Err(format!(
        "refusing to serve {listen} without caller authentication: configure --api-key, JWT \
         keys or --tls-client-ca, or pass --allow-unauthenticated"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        security: SecurityArgs,
    }

    fn parse(args: &[&str]) -> Result<SecurityArgs, String> {
        Cli::try_parse_from(std::iter::once("gw").chain(args.iter().copied()))
            .map(|c| c.security)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn loopback_may_run_open_other_addresses_may_not() {
        let open = parse(&[]).unwrap();
        assert!(open.build("127.0.0.1:50051".parse().unwrap()).is_ok());
        assert!(open.build("[::1]:50051".parse().unwrap()).is_ok());
        let e = open.build("0.0.0.0:50051".parse().unwrap()).unwrap_err();
        assert!(e.contains("--allow-unauthenticated"), "{e}");
        let allowed = parse(&["--allow-unauthenticated"]).unwrap();
        assert!(allowed.build("0.0.0.0:50051".parse().unwrap()).is_ok());
        let hash = crate::security::auth::hash_api_key("k");
        let keyed = parse(&["--api-key", &format!("ops={hash}")]).unwrap();
        let s = keyed.build("0.0.0.0:50051".parse().unwrap()).unwrap();
        assert!(s.auth.enabled());
        assert!(!format!("{s:?}").contains(&hash));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse(&["--api-key", "ops=abc"]).err().unwrap();
        assert!(e.contains("--api-key"), "{e}");
        let e = parse(&["--tls-cert", "c.pem"]).err().unwrap();
        assert!(e.contains("--tls-key"), "{e}");
        let e = parse(&["--jwt-issuer", "i"])
            .unwrap()
            .build("127.0.0.1:1".parse().unwrap())
            .unwrap_err();
        assert!(e.contains("JWT key"), "{e}");
        let e = parse(&["--jwt-hs256-secret-file", "/nonexistent/secret"])
            .unwrap()
            .build("127.0.0.1:1".parse().unwrap())
            .unwrap_err();
        assert!(e.contains("--jwt-hs256-secret-file"), "{e}");
    }
}

//! The Connect client: the calls the gateway makes to Amazon Connect through the official
//! `aws-sdk-connect` (StartChatContact, SigV4 with the standard credentials chain) and
//! `aws-sdk-connectparticipant` crates, and one classification of their errors.

use super::error::{classify, Modelled, UpstreamError};
use crate::connect::item::{self, Item};
use crate::ops::metrics::Metrics;
use crate::security::limits::{ConnectionBudget, Limits};
use crate::security::secret::Secret;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_connect::types as ct;
use aws_sdk_connectparticipant::types as pt;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Where and how to reach Connect.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub region: String,
    /// Endpoint override for both services (a simulator, a proxy); `None` for AWS itself.
    pub endpoint_url: Option<String>,
    /// Use fixed dummy credentials instead of the standard chain (for a simulator).
    pub static_credentials: bool,
    /// Per-attempt timeout of an upstream call.
    pub call_timeout: Duration,
    /// Attempts per call, including the first (the SDK's standard retry mode).
    pub max_attempts: u32,
    /// Idle HTTP connections kept per endpoint for the API calls. Unbounded, the pool kept
    /// one for every call of the busiest moment (158 after a ramp of 64 chats at a time,
    /// about 17 KB and a descriptor each) for 90 s.
    pub idle_connections: usize,
}

/// Parses Connect's timestamp strings.
pub fn parse_system_time(s: &str) -> Option<SystemTime> {
    let t = item::parse_time(s)?;
    let d = Duration::new(u64::try_from(t.seconds).ok()?, u32::try_from(t.nanos).ok()?);
    SystemTime::UNIX_EPOCH.checked_add(d)
}

/// What StartChat asks of Connect.
#[derive(Clone, Debug, Default)]
pub struct StartChat {
    pub instance_id: String,
    pub contact_flow_id: String,
    pub display_name: String,
    pub attributes: HashMap<String, String>,
    pub initial_message: Option<(String, String)>,
    pub content_types: Vec<String>,
    pub duration_minutes: Option<i32>,
    pub persistent_source: Option<(String, Option<ct::RehydrationType>)>,
    pub client_token: Option<String>,
    pub response_mode: Option<ct::ResponseMode>,
    pub segment_attributes: HashMap<String, String>,
    pub customer_id: Option<String>,
    pub related_contact_id: Option<String>,
    pub disconnect_agent_on_customer_exit: bool,
}

#[derive(Debug)]
pub struct StartedChat {
    pub contact_id: String,
    pub participant_id: String,
    pub participant_token: Secret,
}

/// A fresh socket URL and/or connection token.
#[derive(Debug)]
pub struct Connection {
    pub socket_url: Option<Secret>,
    pub connection_token: Secret,
    /// When the connection token expires (from `ConnectionCredentials.Expiry`).
    pub token_expiry: Option<SystemTime>,
}

#[derive(Debug)]
pub struct Sent {
    pub id: String,
    pub absolute_time: String,
}

/// A transcript page request.
#[derive(Clone, Debug, Default)]
pub struct TranscriptQuery {
    /// An earlier contact of a persistent chat's chain; `None`: the chat's own transcript.
    pub contact_id: Option<String>,
    pub max_results: i32,
    pub next_token: Option<String>,
    pub forward: Option<bool>,
    pub descending: bool,
    pub start_id: Option<String>,
}

#[derive(Debug)]
pub struct TranscriptPage {
    pub items: Vec<Item>,
    pub next_token: Option<String>,
}

/// Read buffer of a participant socket, bytes: the first size of the buffer, and the most one
/// read takes. A larger frame grows the buffer (and takes more than one read); the buffer
/// never shrinks, and growing doubles it, so a smaller start ends smaller in every socket.
pub const SOCKET_READ_BUFFER: usize = 512;

/// A CreateParticipantConnection budget shared by several processes.
#[async_trait::async_trait]
pub trait ConnectionGate: Send + Sync + std::fmt::Debug + 'static {
    /// Waits for this process's turn.
    async fn admit(&self);
}

/// Cheap-to-clone handles over the two SDK clients.
#[derive(Clone, Debug)]
pub struct Connect {
    connect: aws_sdk_connect::Client,
    participant: aws_sdk_connectparticipant::Client,
    metrics: Arc<Metrics>,
    /// The global CreateParticipantConnection budget, awaited before each call so that a
    /// mass reconnect cannot storm the instance's small quota (none: unlimited).
    connection_budget: Option<ConnectionBudget>,
    /// A budget shared with other processes (cluster mode), awaited before the local one.
    shared_budget: Option<Arc<dyn ConnectionGate>>,
    /// Frame and message size caps of the participant sockets.
    socket_config: WebSocketConfig,
    /// TLS for `wss://` participant sockets, built once (not per socket).
    socket_tls: std::sync::Arc<rustls::ClientConfig>,
    /// HTTP for attachment bytes (pre-signed upload and download URLs), with the sockets'
    /// TLS configuration.
    http: reqwest::Client,
    call_timeout: Duration,
}

/// The HTTP client of attachment transfers: the sockets' trust roots, a connect timeout,
/// no redirects (a signed URL answers itself).
fn http_client(tls: &rustls::ClientConfig, connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a preconfigured rustls configuration makes a valid HTTP client")
}

/// Times an SDK call and classifies its error, recording both.
pub(super) trait Timed<T, E> {
    async fn timed(self, metrics: &Metrics, op: &'static str) -> Result<T, UpstreamError>;
}

impl<F, T, E> Timed<T, E> for F
where
    F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: Modelled + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    async fn timed(self, metrics: &Metrics, op: &'static str) -> Result<T, UpstreamError> {
        use tracing::Instrument;
        let started = Instant::now();
        // A client span per Connect call (the SDK's retries inside it), a child of the RPC
        // or the chat's task that makes it.
        let span = tracing::info_span!(
            "connect",
            otel.name = op,
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.method = op,
            otel.status_code = tracing::field::Empty,
        );
        let result = self
            .instrument(span.clone())
            .await
            .map_err(|e| classify(op, e));
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        metrics.observe_upstream(
            op,
            started.elapsed(),
            result.as_ref().err().map(UpstreamError::label),
        );
        result
    }
}

/// An open participant socket and the server's handshake answer.
pub type Socket = (
    tokio_tungstenite::WebSocketStream<super::stream::SocketStream>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
);

impl Connect {
    /// Builds both clients. StartChatContact is signed with the standard credentials chain
    /// (or dummy static credentials for a simulator); participant calls are authorised by
    /// their bearer tokens, so they are signed with a fixed anonymous pair, as the official
    /// JavaScript client does.
    pub async fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        let anonymous = aws_credential_types::Credentials::new(
            "anonymous",
            "anonymous",
            None,
            None,
            "connect-chat-gateway",
        );
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(cfg.max_attempts),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(cfg.call_timeout)
                    .connect_timeout(cfg.call_timeout)
                    .build(),
            );
        if cfg.static_credentials {
            loader = loader.credentials_provider(anonymous.clone());
        }
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        // The SDK's default client (rustls on aws-lc) with its idle pool bounded. It reaches
        // Connect directly, as the participant sockets do (no proxy from the environment).
        loader = loader.http_client(
            aws_smithy_http_client::Builder::new()
                .pool_max_idle_per_host(cfg.idle_connections)
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build_https(),
        );
        let shared = loader.load().await;
        let socket_tls = crate::security::tls::socket_client_config(None)
            .expect("the built-in web roots make a valid TLS configuration");
        let participant_cfg = aws_sdk_connectparticipant::config::Builder::from(&shared)
            .credentials_provider(anonymous)
            .build();
        Self {
            connect: aws_sdk_connect::Client::new(&shared),
            participant: aws_sdk_connectparticipant::Client::from_conf(participant_cfg),
            metrics,
            connection_budget: None,
            shared_budget: None,
            socket_config: WebSocketConfig::default().read_buffer_size(SOCKET_READ_BUFFER),
            socket_tls: socket_tls.clone(),
            http: http_client(&socket_tls, cfg.call_timeout),
            call_timeout: cfg.call_timeout,
        }
    }

    pub(super) fn connect_client(&self) -> &aws_sdk_connect::Client {
        &self.connect
    }

    pub(super) fn participant(&self) -> &aws_sdk_connectparticipant::Client {
        &self.participant
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Awaits `gate` before every CreateParticipantConnection (a budget several gateway
    /// processes share).
    pub fn with_shared_budget(mut self, gate: Arc<dyn ConnectionGate>) -> Self {
        self.shared_budget = Some(gate);
        self
    }

    /// Applies the upstream limits: the CreateParticipantConnection budget and the socket
    /// frame size cap.
    pub fn with_limits(mut self, limits: &Limits) -> Self {
        self.connection_budget = crate::security::limits::connection_budget(limits);
        self.socket_config = self
            .socket_config
            .max_message_size(Some(limits.max_upstream_frame_bytes))
            .max_frame_size(Some(limits.max_upstream_frame_bytes));
        self
    }

    /// Opens a participant socket: the configured size caps, a small read buffer instead of
    /// tungstenite's 128 KiB default (allocated and zeroed on every read attempt of every
    /// socket; larger frames grow it), Nagle off, and for `wss://` the TLS configuration
    /// built at start, on a TLS stream that keeps no buffers while idle.
    pub async fn open_socket(
        &self,
        url: &Secret,
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::error::{Error, UrlError};
        let request = url.expose().into_client_request()?;
        let secure = match request.uri().scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(Error::Url(UrlError::UnsupportedUrlScheme)),
        };
        let host = request
            .uri()
            .host()
            .ok_or(Error::Url(UrlError::NoHostName))?;
        // An IPv6 address is bracketed in a URL, bare in a socket address or a server name.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let stream = if secure {
            let tls = super::tls::TlsStream::connect(tcp, self.socket_tls.clone(), &host).await?;
            super::stream::SocketStream::Tls(Box::new(tls))
        } else {
            super::stream::SocketStream::Plain(tcp)
        };
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(self.socket_config))
                .await?;
        // Tungstenite keeps the upgrade's 4 KiB read buffer for the socket's whole life,
        // whatever `read_buffer_size` says. The socket is rebuilt over the same stream with a
        // buffer of its own size: nothing is in the old one, because Connect sends nothing
        // before the client's subscribe, which has not been sent yet.
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            ws.into_inner(),
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            Some(self.socket_config),
        )
        .await;
        Ok((ws, response))
    }

    /// Trusts the CA certificates of a PEM file, besides the web roots, on participant
    /// sockets (a private proxy, or a simulator serving `wss://`).
    pub fn with_socket_ca_file(
        mut self,
        path: &std::path::Path,
    ) -> Result<Self, crate::security::tls::TlsError> {
        self.socket_tls = crate::security::tls::socket_client_config(Some(path))?;
        self.http = http_client(&self.socket_tls, self.call_timeout);
        Ok(self)
    }

    pub async fn start_chat(&self, req: StartChat) -> Result<StartedChat, UpstreamError> {
        let details = ct::ParticipantDetails::builder()
            .display_name(req.display_name)
            .build()
            .map_err(|_| UpstreamError::Invalid {
                what: "DisplayName",
            })?;
        let initial = match req.initial_message {
            Some((content_type, content)) => Some(
                ct::ChatMessage::builder()
                    .content_type(content_type)
                    .content(content)
                    .build()
                    .map_err(|_| UpstreamError::Invalid {
                        what: "InitialMessage",
                    })?,
            ),
            None => None,
        };
        let persistent = req.persistent_source.map(|(source, rehydration)| {
            ct::PersistentChat::builder()
                .source_contact_id(source)
                .set_rehydration_type(rehydration)
                .build()
        });
        let out = self
            .connect
            .start_chat_contact()
            .instance_id(req.instance_id)
            .contact_flow_id(req.contact_flow_id)
            .participant_details(details)
            .set_attributes((!req.attributes.is_empty()).then_some(req.attributes))
            .set_initial_message(initial)
            .set_supported_messaging_content_types(
                (!req.content_types.is_empty()).then_some(req.content_types),
            )
            .set_chat_duration_in_minutes(req.duration_minutes)
            .set_persistent_chat(persistent)
            .set_client_token(req.client_token)
            .set_participant_configuration(req.response_mode.map(|mode| {
                ct::ParticipantConfiguration::builder()
                    .response_mode(mode)
                    .build()
            }))
            .set_segment_attributes((!req.segment_attributes.is_empty()).then(|| {
                req.segment_attributes
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            ct::SegmentAttributeValue::builder().value_string(v).build(),
                        )
                    })
                    .collect()
            }))
            .set_customer_id(req.customer_id)
            .set_related_contact_id(req.related_contact_id)
            .set_disconnect_on_customer_exit(
                req.disconnect_agent_on_customer_exit
                    .then(|| vec![ct::DisconnectOnCustomerExitParticipantType::Agent]),
            )
            .send()
            .timed(&self.metrics, "StartChatContact")
            .await?;
        Ok(StartedChat {
            contact_id: out
                .contact_id
                .ok_or(UpstreamError::Incomplete("ContactId"))?,
            participant_id: out
                .participant_id
                .ok_or(UpstreamError::Incomplete("ParticipantId"))?,
            participant_token: Secret::new(
                out.participant_token
                    .ok_or(UpstreamError::Incomplete("ParticipantToken"))?,
            ),
        })
    }

    /// CreateParticipantConnection: a fresh connection token, and a socket URL when
    /// `with_socket`.
    pub async fn create_connection(
        &self,
        participant_token: &Secret,
        with_socket: bool,
    ) -> Result<Connection, UpstreamError> {
        if let Some(gate) = &self.shared_budget {
            gate.admit().await;
        }
        if let Some(budget) = &self.connection_budget {
            budget.until_ready().await;
        }
        let mut call = self
            .participant
            .create_participant_connection()
            .participant_token(participant_token.expose())
            .r#type(pt::ConnectionType::ConnectionCredentials)
            .connect_participant(true);
        if with_socket {
            call = call.r#type(pt::ConnectionType::Websocket);
        }
        let out = call
            .send()
            .timed(&self.metrics, "CreateParticipantConnection")
            .await?;
        let creds = out
            .connection_credentials
            .ok_or(UpstreamError::Incomplete("ConnectionCredentials"))?;
        let socket_url = match (with_socket, out.websocket.and_then(|w| w.url)) {
            (true, Some(url)) => Some(Secret::new(url)),
            (true, None) => return Err(UpstreamError::Incomplete("Websocket.Url")),
            (false, _) => None,
        };
        Ok(Connection {
            socket_url,
            token_expiry: creds.expiry.as_deref().and_then(parse_system_time),
            connection_token: Secret::new(
                creds
                    .connection_token
                    .ok_or(UpstreamError::Incomplete("ConnectionToken"))?,
            ),
        })
    }

    pub async fn send_message(
        &self,
        token: &Secret,
        content_type: &str,
        content: &str,
        client_token: &str,
    ) -> Result<Sent, UpstreamError> {
        let out = self
            .participant
            .send_message()
            .connection_token(token.expose())
            .content_type(content_type)
            .content(content)
            .client_token(client_token)
            .send()
            .timed(&self.metrics, "SendMessage")
            .await?;
        Ok(Sent {
            id: out.id.ok_or(UpstreamError::Incomplete("Id"))?,
            absolute_time: out.absolute_time.unwrap_or_default(),
        })
    }

    pub async fn send_event(
        &self,
        token: &Secret,
        content_type: &str,
        content: Option<String>,
        client_token: &str,
    ) -> Result<Sent, UpstreamError> {
        let out = self
            .participant
            .send_event()
            .connection_token(token.expose())
            .content_type(content_type)
            .set_content(content)
            .client_token(client_token)
            .send()
            .timed(&self.metrics, "SendEvent")
            .await?;
        Ok(Sent {
            id: out.id.unwrap_or_default(),
            absolute_time: out.absolute_time.unwrap_or_default(),
        })
    }

    pub async fn get_transcript(
        &self,
        token: &Secret,
        q: TranscriptQuery,
    ) -> Result<TranscriptPage, UpstreamError> {
        let out = self
            .participant
            .get_transcript()
            .connection_token(token.expose())
            .set_contact_id(q.contact_id)
            .max_results(q.max_results)
            .set_next_token(q.next_token)
            .set_scan_direction(q.forward.map(|f| {
                if f {
                    pt::ScanDirection::Forward
                } else {
                    pt::ScanDirection::Backward
                }
            }))
            .sort_order(if q.descending {
                pt::SortKey::Descending
            } else {
                pt::SortKey::Ascending
            })
            .set_start_position(
                q.start_id
                    .map(|id| pt::StartPosition::builder().id(id).build()),
            )
            .send()
            .timed(&self.metrics, "GetTranscript")
            .await?;
        Ok(TranscriptPage {
            items: out.transcript().iter().map(item::from_sdk).collect(),
            next_token: out.next_token.filter(|t| !t.is_empty()),
        })
    }

    pub async fn disconnect(
        &self,
        token: &Secret,
        client_token: &str,
    ) -> Result<(), UpstreamError> {
        self.participant
            .disconnect_participant()
            .connection_token(token.expose())
            .client_token(client_token)
            .send()
            .timed(&self.metrics, "DisconnectParticipant")
            .await?;
        Ok(())
    }
}

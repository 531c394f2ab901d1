//! A local Amazon Connect chat simulator that speaks the real wire protocol, so the official
//! AWS SDK crates (`aws-sdk-connect`, `aws-sdk-connectparticipant`) work against it unmodified
//! through an endpoint override. One HTTP server carries both REST services, the participant
//! WebSocket, attachment URLs and an admin API for fault injection (see [`admin`]).
//!
//! # Layout
//! - [`state`]: chats, participants, transcript items, tokens, counters; the only owner of data.
//! - [`rest`]: the restJson1 routes of both services, request validation and error shapes.
//! - [`transcript`]: GetTranscript paging (positions by item sequence, opaque NextToken).
//! - [`ws`]: the participant socket (`aws/subscribe`, heartbeats, `aws/chat` frames).
//! - [`agent`]: the scripted agent, one task per chat.
//! - [`files`]: attachment upload/download URLs and the authentication page.
//! - [`admin`]: the `/_sim/...` HTTP control routes.
//! - [`load`]: agent messages at a fixed rate, optionally time-stamped, for benchmarks.
//! - [`tls`]: `wss://` sockets with a certificate generated at start.
//!
//! # Choices where the model and docs leave room
//! - The transcript keeps messages, attachments and `EVENT` items (participant joined/left,
//!   chat ended); typing and receipts (`TYPING`, `MESSAGEMETADATA`) are pushed but not stored.
//! - GetTranscript defaults follow the model docs: `MaxResults` 10, `ScanDirection` BACKWARD
//!   without a StartPosition and FORWARD with one, `SortOrder` DESCENDING. `StartPosition.Id`
//!   and `.AbsoluteTime` are inclusive; `MostRecent: n` is a cursor `n` items before the end.
//! - A chat without `SupportedMessagingContentTypes` accepts `text/plain` and
//!   `application/vnd.amazonaws.connect.message.interactive.response`.
//! - Socket URLs may be opened several times until they expire; the socket limit is enforced
//!   per participant and a refused upgrade is answered 429 (limit) or 403 (bad/expired URL).
//! - [`SimHandle::drop_sockets`] closes sockets abruptly (no close frame); a chat end closes
//!   them with a close frame after every queued item was written.
//! - With [`SimConfig::tls`] the sockets are served as `wss://` on a second port (the REST
//!   routes stay plain HTTP); clients trust [`SimHandle::ca_pem`].

pub mod admin;
pub mod agent;
pub mod files;
pub mod load;
pub mod rest;
pub mod state;
pub mod tls;
pub mod transcript;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;

use state::Shared;

/// Everything the simulator can be told at start. Every bound is a field here.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Base of URLs handed out over REST (attachments, authentication); default `http://<bound>`.
    pub public_base_url: Option<String>,
    /// Base of the socket URLs handed out; default `ws://<bound>` (`wss://<tls bound>` with
    /// `tls`).
    pub socket_base_url: Option<String>,
    /// Serve the participant sockets as `wss://` on a second port of the same address, with a
    /// CA and certificate generated at start ([`SimHandle::ca_pem`]).
    pub tls: bool,
    /// Lifetime of a connection token (`ConnectionCredentials.Expiry`).
    pub connection_token_ttl: Duration,
    /// Window to open a socket URL (`Websocket.ConnectionExpiry`).
    pub socket_url_ttl: Duration,
    /// Open sockets allowed per participant; the next upgrade is refused.
    pub max_sockets_per_participant: usize,
    /// Live chats; over it StartChatContact fails with LimitExceededException.
    pub max_chats: usize,
    /// Ended chats kept for transcripts and assertions; the oldest are forgotten first.
    pub max_ended_chats: usize,
    /// Stored transcript items per chat; the oldest are dropped first.
    pub max_items_per_chat: usize,
    /// Per-socket outbound frame queue; a socket that falls this far behind is closed.
    pub socket_queue: usize,
    /// Largest client frame accepted on a socket, in bytes.
    pub max_client_frame_bytes: usize,
    /// ClientTokens remembered per participant and operation (SendMessage, SendEvent, uploads).
    pub max_client_tokens_per_participant: usize,
    /// StartChatContact ClientTokens remembered in total.
    pub max_start_client_tokens: usize,
    /// Connection tokens and socket URLs remembered per participant (each); the oldest are
    /// revoked when a newer one pushes them out.
    pub max_tokens_per_participant: usize,
    /// Attachments per chat.
    pub max_attachments_per_chat: usize,
    /// Attachment bytes reserved across all chats.
    pub max_attachment_bytes: u64,
    /// Lifetime of an attachment upload URL.
    pub upload_url_ttl: Duration,
    /// Customer events queued for one chat's agent before new ones are dropped.
    pub agent_queue: usize,
    /// How long [`SimHandle::shutdown`] waits for connections and tasks before aborting.
    pub shutdown_grace: Duration,
    /// Enforce Connect's published API rate quotas ([`Operation::rate_quota`]): a call over
    /// its operation's token bucket fails with ThrottlingException (429), as Connect does.
    /// Off by default, so tests and benchmarks are limited only by what they inject.
    pub rate_quotas: bool,
    /// The scripted agent.
    pub agent: AgentConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_base_url: None,
            socket_base_url: None,
            tls: false,
            connection_token_ttl: Duration::from_secs(24 * 3600),
            socket_url_ttl: Duration::from_secs(100),
            max_sockets_per_participant: 5,
            max_chats: 100_000,
            max_ended_chats: 10_000,
            max_items_per_chat: 10_000,
            socket_queue: 1024,
            max_client_frame_bytes: 64 * 1024,
            max_client_tokens_per_participant: 1000,
            max_start_client_tokens: 100_000,
            max_tokens_per_participant: 32,
            max_attachments_per_chat: 100,
            max_attachment_bytes: 256 * 1024 * 1024,
            upload_url_ttl: Duration::from_secs(300),
            agent_queue: 256,
            shutdown_grace: Duration::from_secs(5),
            rate_quotas: false,
            agent: AgentConfig::default(),
        }
    }
}

impl SimConfig {
    fn check(&self) -> std::io::Result<()> {
        let positive = [
            (
                "max_sockets_per_participant",
                self.max_sockets_per_participant,
            ),
            ("max_chats", self.max_chats),
            ("max_items_per_chat", self.max_items_per_chat),
            ("socket_queue", self.socket_queue),
            ("max_client_frame_bytes", self.max_client_frame_bytes),
            (
                "max_client_tokens_per_participant",
                self.max_client_tokens_per_participant,
            ),
            ("max_start_client_tokens", self.max_start_client_tokens),
            (
                "max_tokens_per_participant",
                self.max_tokens_per_participant,
            ),
            ("agent_queue", self.agent_queue),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{name} must be at least 1"),
                ));
            }
        }
        if self.agent.message_interval == Some(Duration::ZERO) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "agent.message_interval must be positive",
            ));
        }
        Ok(())
    }
}

/// What the scripted agent does in every chat.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Delay after StartChatContact before the agent's `participant.joined` event.
    pub join_delay: Duration,
    /// Delay between a customer message and the agent's reply.
    pub reply_delay: Duration,
    /// Reply text is this prefix followed by the customer's content.
    pub reply_prefix: String,
    /// A customer message equal to this (trimmed, case-insensitive) ends the chat after the reply.
    pub end_keyword: String,
    /// No replies, typing, receipts or interval messages (the join still happens).
    pub silent: bool,
    /// Send a typing event before each reply.
    pub typing: bool,
    /// Send delivered and read receipts for each customer message.
    pub receipts: bool,
    /// When set, the agent also says "Agent message N" at this rate in every live chat.
    pub message_interval: Option<Duration>,
    /// The agent's display name.
    pub display_name: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            join_delay: Duration::from_millis(200),
            reply_delay: Duration::from_millis(300),
            reply_prefix: "Agent: ".to_owned(),
            end_keyword: "bye".to_owned(),
            silent: false,
            typing: true,
            receipts: true,
            message_interval: None,
            display_name: "Agent".to_owned(),
        }
    }
}

/// The operations of both services, for counters and fault injection. `Operation::iter()`
/// (strum's `IntoEnumIterator`) yields every one in declaration order, `Operation::COUNT`
/// (`EnumCount`) says how many; the API name is the variant's name.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::EnumCount,
    strum::IntoStaticStr,
)]
pub enum Operation {
    StartChatContact,
    CreateParticipantConnection,
    SendMessage,
    SendEvent,
    GetTranscript,
    DisconnectParticipant,
    StartAttachmentUpload,
    CompleteAttachmentUpload,
    GetAttachment,
    DescribeView,
    GetAuthenticationUrl,
    CancelParticipantAuthentication,
}

impl Operation {
    /// Position in declaration order (`0..Operation::COUNT`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The operation's API name, e.g. `SendMessage`.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Connect's published rate quota for the operation, requests per second and burst
    /// (StartChatContact per account and region, participant operations per instance);
    /// `None` where none is published.
    pub fn rate_quota(self) -> Option<(u32, u32)> {
        match self {
            Operation::StartChatContact => Some((5, 8)),
            Operation::CreateParticipantConnection => Some((6, 9)),
            Operation::SendMessage | Operation::SendEvent => Some((10, 15)),
            Operation::GetTranscript => Some((8, 12)),
            Operation::DisconnectParticipant => Some((3, 5)),
            Operation::StartAttachmentUpload
            | Operation::CompleteAttachmentUpload
            | Operation::GetAttachment => Some((2, 5)),
            Operation::DescribeView
            | Operation::GetAuthenticationUrl
            | Operation::CancelParticipantAuthentication => None,
        }
    }

    /// Whether the operation belongs to the `connect` service (else `connectparticipant`).
    pub fn is_connect_service(self) -> bool {
        self == Operation::StartChatContact
    }
}

/// The failure an injected fault produces. The wire code depends on the service:
///
/// | kind | participant operations | StartChatContact |
/// |---|---|---|
/// | Throttling | `ThrottlingException` 429 | `ThrottlingException` 429 (not modelled: `Unhandled`, retried) |
/// | InternalServer | `InternalServerException` 500 | `InternalServiceException` 500 |
/// | AccessDenied | `AccessDeniedException` 403 | `AccessDeniedException` 403 (not modelled: `Unhandled`) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    Throttling,
    InternalServer,
    AccessDenied,
}

/// Errors of the control methods of [`SimHandle`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("no chat with contact id {0}")]
    UnknownContact(String),
    #[error("chat {0} has ended")]
    ChatEnded(String),
    #[error("invalid item: {0}")]
    InvalidItem(String),
}

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Calls received per operation name, including failed ones.
    pub calls: std::collections::BTreeMap<String, u64>,
    /// Participant sockets currently open.
    pub open_sockets: u64,
    /// Chats not yet ended.
    pub chats_live: u64,
    /// Chats ended since start (including ones since forgotten).
    pub chats_ended: u64,
    /// Items created (stored or ephemeral).
    pub items_pushed: u64,
    /// `aws/chat` frames written to sockets.
    pub frames_sent: u64,
    /// Sockets closed because their outbound queue was full.
    pub sockets_closed_slow: u64,
    /// Socket upgrades refused (bad or expired URL, socket limit).
    pub upgrades_refused: u64,
}

/// Namespace for starting a simulator.
pub struct Simulator;

impl Simulator {
    /// Bind `config.bind`, start serving, and return a handle for control and shutdown.
    pub async fn start(mut config: SimConfig) -> std::io::Result<SimHandle> {
        config.check()?;
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let local_addr = listener.local_addr()?;
        let tls = if config.tls {
            let certs = tls::generate()?;
            let tls_listener =
                tokio::net::TcpListener::bind(SocketAddr::new(config.bind.ip(), 0)).await?;
            if config.socket_base_url.is_none() {
                config.socket_base_url = Some(format!("wss://{}", tls_listener.local_addr()?));
            }
            Some((certs, tls_listener))
        } else {
            None
        };
        let shared = Arc::new(Shared::new(config, local_addr));
        let router = rest::router(shared.clone())
            .merge(files::router(shared.clone()))
            .merge(ws::router(shared.clone()))
            .merge(admin::router(shared.clone()))
            .fallback(rest::unknown_operation);
        let stop = shared.shutdown.clone();
        let (ca_pem, tls_server) = match tls {
            Some((certs, tls_listener)) => {
                let listener = tls::TlsListener::start(tls_listener, certs.server, stop.clone())?;
                let router = ws::router(shared.clone());
                let stop = stop.clone();
                let serve = async move {
                    let serve = axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned());
                    if let Err(err) = serve.await {
                        tracing::warn!(error = %err, "simulator TLS server stopped with an error");
                    }
                };
                (Some(certs.ca_pem), Some(serve))
            }
            None => (None, None),
        };
        let server = tokio::spawn(async move {
            let serve = async {
                let serve =
                    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
                if let Err(err) = serve.await {
                    tracing::warn!(error = %err, "simulator server stopped with an error");
                }
            };
            match tls_server {
                Some(tls_server) => {
                    tokio::join!(serve, tls_server);
                }
                None => serve.await,
            }
        });
        tracing::info!(addr = %local_addr, sockets = %shared.socket_base, "connect simulator listening");
        Ok(SimHandle {
            inner: Arc::new(HandleInner {
                shared,
                server: AsyncMutex::new(Some(server)),
                ca_pem,
            }),
        })
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    /// The server task, taken and joined by the first `shutdown`.
    server: AsyncMutex<Option<JoinHandle<()>>>,
    /// The generated CA (PEM) when the sockets are served over TLS.
    ca_pem: Option<String>,
}

/// A cheap, cloneable handle on a running simulator.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<HandleInner>,
}

impl SimHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The address the simulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// `http://127.0.0.1:PORT`: the SDK endpoint override for both services.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.shared().local_addr)
    }

    /// The base of the socket URLs handed out (`ws://...` or `wss://...`).
    pub fn socket_endpoint(&self) -> String {
        self.shared().socket_base.clone()
    }

    /// The CA certificate (PEM) that signed the `wss://` certificate; `None` without TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.inner.ca_pem.as_deref()
    }

    /// Push agent messages at a fixed rate for a bounded time (see [`load`]); returns when done.
    pub async fn load(&self, spec: load::LoadSpec) -> Result<load::LoadReport, String> {
        spec.check()?;
        Ok(load::run(self.shared().clone(), spec).await)
    }

    /// Close the sockets of one contact, or of all contacts, abruptly (no close frame, as on a
    /// network loss). Returns how many were closed.
    pub fn drop_sockets(&self, contact_id: Option<&str>) -> usize {
        self.shared().drop_sockets(contact_id)
    }

    /// When false, `aws/heartbeat` and `aws/ping` frames are silently ignored.
    pub fn set_answer_heartbeats(&self, answer: bool) {
        self.shared().set_answer_heartbeats(answer)
    }

    /// Delay every `aws/chat` frame pushed from now on by `delay` (order is preserved).
    pub fn set_frame_delay(&self, delay: Duration) {
        self.shared().set_frame_delay(delay)
    }

    /// Hold every REST operation back by `delay` before it runs (a slow Connect).
    pub fn set_answer_delay(&self, delay: Duration) {
        self.shared().set_answer_delay(delay)
    }

    /// Make the next `count` calls of `operation` fail with `error` (replaces an earlier setting
    /// for that operation; `count` 0 clears it).
    pub fn fail_next(&self, operation: Operation, count: u32, error: FaultKind) {
        self.shared().fail_next(operation, count, error)
    }

    /// Expire the connection tokens issued so far (of one contact or all): they get 403 from now
    /// on. CreateParticipantConnection still works with the participant token.
    pub fn expire_connection_tokens(&self, contact_id: Option<&str>) {
        self.shared().expire_connection_tokens(contact_id)
    }

    /// Expire the socket URLs issued so far (of one contact or all): opening them is refused.
    pub fn expire_socket_urls(&self, contact_id: Option<&str>) {
        self.shared().expire_socket_urls(contact_id)
    }

    /// End the chat from the agent side: agent `participant.left`, then `chat.ended`, then the
    /// sockets close. False when the contact is unknown or already ended.
    pub fn end_chat(&self, contact_id: &str) -> bool {
        self.shared().end_chat_by_agent(contact_id)
    }

    /// Push an arbitrary item (a JSON object). `Id` and `AbsoluteTime` are filled when absent,
    /// `ContactId`/`InitialContactId` too. Items of type TYPING and MESSAGEMETADATA are pushed
    /// only; others are also stored. An `EVENT` with the `chat.ended` content type ends the chat.
    pub fn push_item(
        &self,
        contact_id: &str,
        item: serde_json::Value,
    ) -> Result<serde_json::Value, SimError> {
        self.shared().push_raw_item(contact_id, item)
    }

    /// The agent says `text` (a `text/plain` MESSAGE). Returns the item id.
    pub fn agent_say(&self, contact_id: &str, text: &str) -> Result<String, SimError> {
        self.shared().agent_say(contact_id, text)
    }

    /// Participant sockets of that contact currently open (0 for an unknown contact).
    pub fn open_sockets(&self, contact_id: &str) -> usize {
        self.shared().open_sockets(contact_id)
    }

    /// Calls received for `operation`, including the ones that failed.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.shared().stats.calls(operation)
    }

    /// A snapshot of all counters.
    pub fn counters(&self) -> Counters {
        self.shared().counters()
    }

    /// `Some(true)` once the chat ended, `Some(false)` while live, `None` when unknown.
    pub fn chat_ended(&self, contact_id: &str) -> Option<bool> {
        self.shared().chat_ended(contact_id)
    }

    /// Every stored item of the chat, oldest first.
    pub fn transcript(&self, contact_id: &str) -> Option<Vec<serde_json::Value>> {
        self.shared().transcript(contact_id)
    }

    /// Stop serving, close every socket, stop the agents, and wait for all of it (bounded by
    /// `shutdown_grace`, after which the server task is aborted).
    pub async fn shutdown(self) {
        let shared = self.inner.shared.clone();
        shared.shutdown.cancel();
        let server = self.inner.server.lock().await.take();
        let deadline = tokio::time::Instant::now() + shared.config.shutdown_grace;
        if let Some(mut server) = server {
            if tokio::time::timeout_at(deadline, &mut server)
                .await
                .is_err()
            {
                tracing::warn!("simulator server did not stop within the grace period; aborting");
                server.abort();
            }
        }
        if tokio::time::timeout_at(deadline, shared.tasks.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                left = shared.tasks.active(),
                "simulator tasks still running after the grace period"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::{EnumCount as _, IntoEnumIterator as _};

    #[test]
    fn operation_names_indices_and_wire_names_agree() {
        let all: Vec<Operation> = Operation::iter().collect();
        assert_eq!(all.len(), Operation::COUNT);
        assert_eq!(Operation::COUNT, 12);
        for (i, op) in all.iter().enumerate() {
            assert_eq!(op.index(), i);
            // The admin API and the counters use the same names as serde.
            assert_eq!(serde_json::to_value(op).unwrap(), op.name());
            assert_eq!(format!("{op:?}"), op.name());
        }
        assert_eq!(Operation::SendMessage.name(), "SendMessage");
        assert_eq!(
            Operation::CancelParticipantAuthentication.name(),
            "CancelParticipantAuthentication"
        );
    }
}

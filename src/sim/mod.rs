//! A local Amazon Connect chat simulator that speaks the real wire protocol, so the official
//! AWS SDK crates (`aws-sdk-connect`, `aws-sdk-connectparticipant`) work against it unmodified
//! through an endpoint override. One HTTP server carries both REST services, the participant
//! WebSocket, attachment URLs and an admin API for fault injection (see [`admin`]).
//!
//! # Layout
//! Imports go one way: this module uses every other; the handlers and tasks ([`rest`], [`ws`],
//! [`files`], [`admin`], [`load`], [`agent`]) use [`model`]; [`model`] uses [`config`] and,
//! outside the simulator, only `crate::connect::content_type`. No two files import each other.
//! - [`config`]: [`SimConfig`] and [`AgentConfig`], everything the simulator is told at start.
//! - [`model`]: the only owner of data. [`model::registry`] (chats by token and contact id,
//!   tokens, counters, knobs: the [`model::registry::Shared`] state),
//!   [`model::chat`] (a chat, its participants, items, sockets and attachments),
//!   [`model::control`] (what [`SimHandle`] does to chats: drop, end, say, push, inspect),
//!   [`model::transcript`] (GetTranscript paging: positions by item sequence, opaque
//!   NextToken), [`model::operation`] ([`Operation`], [`FaultKind`]), [`model::knobs`],
//!   [`model::stats`] ([`Counters`]), [`model::time`] and [`model::support`].
//! - [`rest`]: the restJson1 routes of both services, one file per operation group
//!   ([`rest::connect`], [`rest::participant`], [`rest::transcript`], [`rest::attachments`],
//!   [`rest::views`]) over the shared error shapes and request helpers of [`rest::wire`].
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
pub mod config;
pub mod files;
pub mod load;
pub mod model;
pub mod rest;
pub mod tls;
pub mod ws;

pub use config::{AgentConfig, SimConfig};
pub use model::chat::StartOptions;
pub use model::control::SimError;
pub use model::operation::{FaultKind, Operation};
pub use model::stats::Counters;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;

use model::registry::Shared;

/// Namespace for starting a simulator.
pub struct Simulator;

impl Simulator {
    /// Bind `config.bind`, start serving, and return a handle for control and shutdown.
    pub async fn start(mut config: SimConfig) -> std::io::Result<SimHandle> {
        config.check()?;
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let local_addr = listener.local_addr()?;
        let tls = if config.tls {
            let certs = tls::generate(config.bind.ip())?;
            let tls_listener =
                tokio::net::TcpListener::bind(SocketAddr::new(config.bind.ip(), 0)).await?;
            if config.socket_base_url.is_none() {
                config.socket_base_url = Some(format!("wss://{}", tls_listener.local_addr()?));
            }
            Some((certs, tls_listener))
        } else {
            None
        };
        let shared = Arc::new(Shared::new(config, local_addr, agent::spawn));
        let router = rest::router(shared.clone())
            .merge(files::router(shared.clone()))
            .merge(ws::router(shared.clone()))
            .merge(admin::router(shared.clone()))
            .fallback(rest::unknown_operation);
        let stop = shared.shutdown.clone();
        let (ca_pem, tls_server) = match tls {
            Some((certs, tls_listener)) => {
                let listener = tls::TlsListener::start(
                    tls_listener,
                    certs.server,
                    stop.clone(),
                    shared.tasks.clone(),
                )?;
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
        let server = shared.tasks.spawn(async move {
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
        self.shared().knobs.set_answer_heartbeats(answer)
    }

    /// Delay every `aws/chat` frame pushed from now on by `delay` (order is preserved).
    pub fn set_frame_delay(&self, delay: Duration) {
        self.shared().knobs.set_frame_delay(delay)
    }

    /// Hold every REST operation back by `delay` before it runs (a slow Connect).
    pub fn set_answer_delay(&self, delay: Duration) {
        self.shared().knobs.set_answer_delay(delay)
    }

    /// REST calls being held back by the answer delay right now (received, not answered).
    pub fn answers_held(&self) -> usize {
        self.shared().knobs.answers_held()
    }

    /// Make the next `count` calls of `operation` fail with `error` (replaces an earlier setting
    /// for that operation; `count` 0 clears it).
    pub fn fail_next(&self, operation: Operation, count: u32, error: FaultKind) {
        self.shared().knobs.fail_next(operation, count, error)
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

    /// The optional StartChatContact settings a chat was started with (None: none given, or
    /// no such chat).
    pub fn start_options(&self, contact_id: &str) -> Option<StartOptions> {
        self.shared()
            .find_chat(contact_id)
            .and_then(|c| c.options.as_deref().cloned())
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

    /// Stop serving, close every socket, stop the agents, and wait for every task the
    /// simulator spawned (bounded by `shutdown_grace`, after which the server task is aborted).
    pub async fn shutdown(self) {
        let shared = self.inner.shared.clone();
        shared.shutdown.cancel();
        // Tasks spawned from here on are still tracked; closing lets `wait` finish once the
        // tracker is empty.
        shared.tasks.close();
        let server = self.inner.server.lock().await.take();
        let deadline = tokio::time::Instant::now() + shared.config.shutdown_grace;
        if tokio::time::timeout_at(deadline, shared.tasks.wait())
            .await
            .is_err()
        {
            if let Some(server) = server.filter(|s| !s.is_finished()) {
                tracing::warn!("simulator server did not stop within the grace period; aborting");
                server.abort();
            }
            tracing::warn!(
                left = shared.tasks.len(),
                "simulator tasks still running after the grace period"
            );
        }
    }
}

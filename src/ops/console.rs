//! The chat page and live debugging console on the admin endpoint (`/console/`).
//!
//! The page is static (HTML and a script compiled into the binary). It chats through the
//! public API over gRPC-Web on the gRPC port, like any browser client, with the chat token it
//! is given; and it reads this process's live chats and their recent events from the JSON
//! routes below. Those routes show what a debugging session needs (states, kinds, ids,
//! cursors, senders' roles) and never a message's content, a display name or a token: the
//! admin endpoint has no authentication of its own and must stay private to the cluster.

use crate::pb;
use crate::pb::chat_event::Event;
use crate::session::{Session, Sessions, Upstream};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const GRPC_WEB: &str = include_str!("console/grpc-web.js");
const STYLE: &str = include_str!("console/console.css");

/// Chats listed per request when the caller names no `limit`.
const DEFAULT_CHATS: usize = 200;
/// The most chats one request lists (the response stays small however many are live).
const MAX_CHATS: usize = 1000;

/// Where the page finds the API, and what it may show.
#[derive(Clone, Debug)]
pub struct ConsoleSettings {
    /// The gRPC port (gRPC-Web is served on it too).
    pub grpc_port: u16,
    /// Whether the gRPC port speaks TLS.
    pub grpc_tls: bool,
    /// The gateway talks to the embedded simulator (the page says so).
    pub simulated: bool,
}

/// What the console routes read.
#[derive(Clone)]
pub struct Console {
    sessions: Sessions,
    settings: Arc<ConsoleSettings>,
}

impl Console {
    pub fn new(sessions: Sessions, settings: ConsoleSettings) -> Self {
        Self {
            sessions,
            settings: Arc::new(settings),
        }
    }

    /// The console's routes, to merge into the admin router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(|| async { Redirect::to("/console/") }))
            .route("/console", get(|| async { Redirect::to("/console/") }))
            .route(
                "/console/",
                get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
            )
            .route(
                "/console/console.js",
                get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
            )
            .route(
                "/console/console.css",
                get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
            )
            .route(
                "/console/grpc-web.js",
                get(|| async { asset(GRPC_WEB, "text/javascript; charset=utf-8") }),
            )
            .route("/console/api/config", get(config))
            .route("/console/api/chats", get(chats))
            .route("/console/api/chats/{id}", get(chat))
            .with_state(self)
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                // Scripts and styles from this page only (no inline ones); calls to the gRPC
                // port (another origin) are allowed for fetch.
                HeaderValue::from_static(
                    "default-src 'self'; connect-src 'self' http: https:; img-src 'self' data:; \
                     frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
struct ConfigView {
    grpc_port: u16,
    grpc_tls: bool,
    simulated: bool,
    /// Cluster mode: this replica's id.
    replica_id: Option<String>,
}

async fn config(State(c): State<Console>) -> Json<ConfigView> {
    Json(ConfigView {
        grpc_port: c.settings.grpc_port,
        grpc_tls: c.settings.grpc_tls,
        simulated: c.settings.simulated,
        replica_id: c
            .sessions
            .cluster()
            .map(|cl| cl.settings().replica_id.clone()),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct ChatsView {
    /// Live chats in this process.
    live: usize,
    /// The newest of them, at most the request's limit.
    chats: Vec<ChatView>,
}

#[derive(Serialize)]
struct ChatView {
    /// What the chat's detail is read by: its contact id, or for a bot's side
    /// `<contact id>/<participant id>`.
    id: String,
    contact_id: String,
    participant_id: String,
    /// `customer`, or `custom_bot` for a bot's side of a chat (AddBotParticipant).
    role: &'static str,
    /// The caller that started the chat (`key:<name>`, `jwt:<subject>`, ...).
    caller: String,
    started_at: String,
    /// connecting, connected, reconnecting or ended.
    upstream: &'static str,
    subscribers: usize,
    last_cursor: Option<String>,
    /// Cluster mode: whether this replica holds the chat's socket.
    owns_socket: Option<bool>,
}

fn chat_view(s: &Session) -> ChatView {
    let info = s.info();
    ChatView {
        id: s.key().to_owned(),
        contact_id: s.contact_id().to_owned(),
        participant_id: s.participant_id().to_owned(),
        role: if s.bot() { "custom_bot" } else { "customer" },
        caller: s.principal().to_owned(),
        started_at: rfc3339(s.started_at()),
        upstream: if info.ended {
            "ended"
        } else {
            match info.upstream {
                Upstream::Connecting => "connecting",
                Upstream::Connected => "connected",
                Upstream::Reconnecting => "reconnecting",
            }
        },
        subscribers: info.subscribers,
        last_cursor: info.last_cursor,
        owns_socket: s.owns_socket(),
    }
}

async fn chats(State(c): State<Console>, Query(q): Query<ListQuery>) -> Json<ChatsView> {
    let limit = q.limit.unwrap_or(DEFAULT_CHATS).min(MAX_CHATS);
    Json(ChatsView {
        live: c.sessions.live_count(),
        chats: c
            .sessions
            .list(limit)
            .iter()
            .map(|s| chat_view(s))
            .collect(),
    })
}

#[derive(Serialize)]
struct ChatDetail {
    #[serde(flatten)]
    chat: ChatView,
    /// The newest events of the chat's history, oldest first, without their content.
    events: Vec<EventView>,
}

#[derive(Serialize)]
struct EventView {
    cursor: String,
    item_id: String,
    time: Option<String>,
    kind: &'static str,
    /// agent, customer, system, custom_bot or supervisor; absent for gateway events.
    sender_role: Option<&'static str>,
    /// What the event says beyond its kind, when that is not content: a message's content
    /// type and size, an attachment's status, the upstream state.
    detail: Option<String>,
}

fn event_view(e: &pb::ChatEvent) -> EventView {
    let (kind, detail) = match &e.event {
        Some(Event::Message(m)) => (
            "message",
            Some(format!("{}, {} bytes", m.content_type, m.content.len())),
        ),
        Some(Event::Typing(_)) => ("typing", None),
        Some(Event::ParticipantJoined(_)) => ("participant_joined", None),
        Some(Event::ParticipantLeft(_)) => ("participant_left", None),
        Some(Event::ParticipantIdle(_)) => ("participant_idle", None),
        Some(Event::ParticipantReturned(_)) => ("participant_returned", None),
        Some(Event::Delivered(r)) => ("delivered", Some(format!("of {}", r.message_id))),
        Some(Event::Read(r)) => ("read", Some(format!("of {}", r.message_id))),
        Some(Event::Attachment(a)) => (
            "attachment",
            Some(format!("{}, {}", a.content_type, a.status)),
        ),
        Some(Event::Transfer(t)) => (
            "transfer",
            Some(if t.succeeded { "succeeded" } else { "failed" }.into()),
        ),
        Some(Event::ChatEnded(_)) => ("chat_ended", None),
        Some(Event::Raw(r)) => ("raw", Some(format!("{} {}", r.r#type, r.content_type))),
        Some(Event::Upstream(u)) => (
            "upstream",
            Some(
                u.state()
                    .as_str_name()
                    .trim_start_matches("UPSTREAM_STATE_")
                    .to_ascii_lowercase(),
            ),
        ),
        Some(Event::ParticipantInvited(_)) => ("participant_invited", None),
        Some(Event::ParticipantActive(_)) => ("participant_active", None),
        Some(Event::ParticipantInactive(_)) => ("participant_inactive", None),
        Some(Event::ParticipantAutoDisconnected(_)) => ("participant_auto_disconnected", None),
        Some(Event::DisplayNameUpdated(_)) => ("display_name_updated", None),
        Some(Event::ChatRehydrated(_)) => ("chat_rehydrated", None),
        Some(Event::WorkflowCancelled(_)) => ("workflow_cancelled", None),
        Some(Event::Authentication(a)) => (
            "authentication",
            Some(
                a.state()
                    .as_str_name()
                    .trim_start_matches("AUTHENTICATION_STATE_")
                    .to_ascii_lowercase(),
            ),
        ),
        Some(Event::MessageProcessing(m)) => (
            "message_processing",
            Some(format!(
                "of {}: {}",
                m.message_id,
                m.status()
                    .as_str_name()
                    .trim_start_matches("MESSAGE_PROCESSING_STATUS_")
                    .to_ascii_lowercase()
            )),
        ),
        Some(Event::Started(_)) => ("started", None),
        Some(Event::Keepalive(_)) => ("keepalive", None),
        None => ("unknown", None),
    };
    EventView {
        cursor: e.cursor.clone(),
        item_id: e.item_id.clone(),
        time: e.time.as_ref().and_then(|t| {
            let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
        }),
        kind,
        sender_role: e.sender.as_ref().map(|s| role(s.role())),
        detail,
    }
}

fn role(r: pb::ParticipantRole) -> &'static str {
    match r {
        pb::ParticipantRole::Agent => "agent",
        pb::ParticipantRole::Customer => "customer",
        pb::ParticipantRole::System => "system",
        pb::ParticipantRole::CustomBot => "custom_bot",
        pb::ParticipantRole::Supervisor => "supervisor",
        pb::ParticipantRole::Unspecified => "unspecified",
    }
}

async fn chat(
    State(c): State<Console>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let Some(session) = c.sessions.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            "no live chat of that id in this process\n",
        )
            .into_response();
    };
    let limit = q.limit.unwrap_or(DEFAULT_CHATS).min(MAX_CHATS);
    Json(ChatDetail {
        chat: chat_view(&session),
        events: session
            .recent_events(limit)
            .iter()
            .map(|e| event_view(e))
            .collect(),
    })
    .into_response()
}

/// The origins of a page served on `addr` when it is reached over loopback (the embedded
/// default's admin endpoint, opened in a browser on the same machine).
pub fn loopback_origins(addr: std::net::SocketAddr) -> Vec<String> {
    if !(addr.ip().is_loopback() || addr.ip().is_unspecified()) {
        return Vec::new();
    }
    let port = addr.port();
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .map(|host| format!("http://{host}:{port}"))
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

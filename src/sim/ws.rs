//! The participant WebSocket at `/connect?token=...`: subscribe acknowledgement, heartbeat and
//! deep-heartbeat answers, and `aws/chat` frames fed from a bounded per-socket queue. One task
//! per socket; frames arrive already serialised and shared between sockets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::SinkExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::model::chat::ChatFrame;
use super::model::registry::Shared;

const SUBSCRIBE_OK: &str =
    r#"{"topic":"aws/subscribe","content":{"status":"success","topics":["aws/chat"]}}"#;
const SUBSCRIBE_FAILED: &str =
    r#"{"topic":"aws/subscribe","content":{"status":"failure","topics":[]}}"#;
const HEARTBEAT: &str = r#"{"topic":"aws/heartbeat"}"#;
const PING_OK: &str = r#"{"topic":"aws/ping","statusCode":200,"statusContent":"OK"}"#;
const NOTICE_BAD_JSON: &str = r#"{"message":"Invalid frame: expected a JSON object with a topic"}"#;
const NOTICE_BAD_TOPIC: &str = r#"{"message":"Unsupported topic"}"#;
const NOTICE_BINARY: &str = r#"{"message":"Binary frames are not supported"}"#;

/// Read buffer of a socket, bytes. Client frames are tiny (subscribe, heartbeats; a larger
/// one grows the buffer), and tungstenite zero-fills the buffer up to this size before every
/// read attempt, which here is every time the socket's task wakes to write a frame.
const SOCKET_READ_BUFFER: usize = 512;

/// Frames written per flush at most, so a busy socket still reads client frames.
const WRITE_BATCH: usize = 64;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/connect", get(upgrade))
        .with_state(shared)
}

fn refuse(shared: &Shared, status: StatusCode, message: &'static str) -> Response {
    shared
        .stats
        .upgrades_refused
        .fetch_add(1, Ordering::Relaxed);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"message":"{message}"}}"#),
    )
        .into_response()
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let token = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let Some((chat, member)) = token.as_deref().and_then(|t| shared.socket_url_chat(t)) else {
        return refuse(&shared, StatusCode::FORBIDDEN, "Forbidden");
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let Some((rx, subscribed, kill)) = shared.register_socket(&chat, &member) else {
        return refuse(
            &shared,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many connections",
        );
    };
    // Counted by the simulator's task tracker until the socket task ends.
    let tracked = shared.tasks.token();
    let limit = shared.config.max_client_frame_bytes;
    let contact_id = chat.contact_id.clone();
    // A small read buffer: tungstenite's 128 KiB default is allocated, touched and zeroed on
    // every read attempt, per socket (client frames here are tiny; larger ones grow it).
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(SOCKET_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let _tracked = tracked;
            tracing::debug!(%contact_id, "participant socket open");
            Socket {
                shared,
                subscribed,
                kill,
            }
            .run(socket, rx)
            .await;
            tracing::debug!(%contact_id, "participant socket closed");
        })
}

/// Decrements the open-socket gauge when the socket task ends.
struct OpenGauge<'a>(&'a AtomicU64);

impl Drop for OpenGauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Socket {
    shared: Arc<Shared>,
    subscribed: Arc<AtomicBool>,
    /// Cancelled by `drop_sockets`, a full queue, or shutdown.
    kill: CancellationToken,
}

impl Socket {
    async fn run(self, mut socket: WebSocket, mut rx: mpsc::Receiver<ChatFrame>) {
        self.shared
            .stats
            .open_sockets
            .fetch_add(1, Ordering::Relaxed);
        let _gauge = OpenGauge(&self.shared.stats.open_sockets);
        let mut pending: Option<ChatFrame> = None;
        loop {
            tokio::select! {
                biased;
                _ = self.kill.cancelled() => {
                    if self.shared.shutdown.is_cancelled() {
                        // Going away: say so, briefly.
                        let close = Message::Close(Some(CloseFrame { code: 1001, reason: Utf8Bytes::from_static("Server shutting down") }));
                        let _ = tokio::time::timeout(Duration::from_millis(500), socket.send(close)).await;
                    }
                    // Otherwise an abrupt drop: no close frame, like a lost network.
                    return;
                }
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) => return,
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = self.answer(text.as_str()) {
                            if socket.send(Message::Text(reply)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        if socket.send(Message::Text(Utf8Bytes::from_static(NOTICE_BINARY))).await.is_err() {
                            return;
                        }
                    }
                    // Pings are answered and close handshakes completed by the protocol layer.
                    Some(Ok(_)) => {}
                },
                frame = next_frame(&mut pending, &mut rx) => match frame {
                    Some(frame) => {
                        if self.write(&mut socket, frame, &mut pending, &mut rx).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        // The chat ended: every queued item has been written.
                        let close = Message::Close(Some(CloseFrame { code: 1000, reason: Utf8Bytes::from_static("Chat ended") }));
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
                        return;
                    }
                },
            }
        }
    }

    /// Write one frame and any others already due, then flush once.
    async fn write(
        &self,
        socket: &mut WebSocket,
        first: ChatFrame,
        pending: &mut Option<ChatFrame>,
        rx: &mut mpsc::Receiver<ChatFrame>,
    ) -> Result<(), axum::Error> {
        socket.feed(Message::Text(first.text)).await?;
        let mut written = 1u64;
        while (written as usize) < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) if frame.deliver_at <= Instant::now() => {
                    socket.feed(Message::Text(frame.text)).await?;
                    written += 1;
                }
                Ok(frame) => {
                    *pending = Some(frame);
                    break;
                }
                Err(_) => break,
            }
        }
        socket.flush().await?;
        self.shared
            .stats
            .frames_sent
            .fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    /// The answer to a client frame, if any.
    fn answer(&self, text: &str) -> Option<Utf8Bytes> {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return Some(Utf8Bytes::from_static(NOTICE_BAD_JSON));
        };
        let reply = match frame.get("topic").and_then(Value::as_str) {
            Some("aws/subscribe") => {
                let wants_chat = frame
                    .pointer("/content/topics")
                    .and_then(Value::as_array)
                    .is_some_and(|topics| topics.iter().any(|t| t == "aws/chat"));
                if wants_chat {
                    self.subscribed.store(true, Ordering::Release);
                    SUBSCRIBE_OK
                } else {
                    SUBSCRIBE_FAILED
                }
            }
            Some("aws/heartbeat") if self.shared.knobs.answer_heartbeats() => HEARTBEAT,
            Some("aws/ping") if self.shared.knobs.answer_heartbeats() => PING_OK,
            Some("aws/heartbeat" | "aws/ping") => return None,
            Some(_) => NOTICE_BAD_TOPIC,
            None => NOTICE_BAD_JSON,
        };
        Some(Utf8Bytes::from_static(reply))
    }
}

/// The next frame once it is due. Cancel-safe: a frame taken from the queue waits in `pending`.
async fn next_frame(
    pending: &mut Option<ChatFrame>,
    rx: &mut mpsc::Receiver<ChatFrame>,
) -> Option<ChatFrame> {
    if pending.is_none() {
        *pending = Some(rx.recv().await?);
    }
    let due = pending.as_ref().map(|f| f.deliver_at)?;
    if due > Instant::now() {
        tokio::time::sleep_until(due).await;
    }
    pending.take()
}

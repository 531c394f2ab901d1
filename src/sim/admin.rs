//! The admin HTTP API under `/_sim/` (a prefix no AWS route uses): the fault knobs and
//! controls of [`super::SimHandle`] for tools outside the process. JSON in, JSON out; errors
//! are `{"message": "..."}` with 400 (bad body), 404 (unknown contact) or 409 (chat ended).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/_sim/counters` | | [`super::Counters`] |
//! | POST | `/_sim/sockets/drop` | `{"contact_id"?}` | `{"dropped": n}` |
//! | POST | `/_sim/heartbeats` | `{"answer": bool}` | `{}` |
//! | POST | `/_sim/frame-delay` | `{"millis": n}` | `{}` |
//! | POST | `/_sim/faults` | `{"operation": "SendMessage", "count": n, "kind": "Throttling"}` | `{}` |
//! | POST | `/_sim/expire/connection-tokens` | `{"contact_id"?}` | `{}` |
//! | POST | `/_sim/expire/socket-urls` | `{"contact_id"?}` | `{}` |
//! | GET | `/_sim/chats/{contact_id}` | | `{"ended", "open_sockets", "transcript"}` |
//! | POST | `/_sim/chats/{contact_id}/end` | | `{"ended": bool}` |
//! | POST | `/_sim/chats/{contact_id}/items` | an item object | the stored item |
//! | POST | `/_sim/chats/{contact_id}/say` | `{"text": "..."}` | `{"id": "..."}` |
//! | POST | `/_sim/load` | [`super::load::LoadSpec`]: `{"rate", "millis", "contact_ids"?, "stamp"?}` | [`super::load::LoadReport`], when the load is done |

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::load::LoadSpec;
use super::model::control::SimError;
use super::model::operation::{FaultKind, Operation};
use super::model::registry::Shared;

/// The routes, for `--help` texts.
pub const ROUTES: &str = "\
Admin API (JSON; errors are {\"message\": ...} with 400/404/409):
  GET  /_sim/counters                        counters snapshot
  POST /_sim/sockets/drop                    {\"contact_id\"?}                   -> {\"dropped\": n}
  POST /_sim/heartbeats                      {\"answer\": bool}
  POST /_sim/frame-delay                     {\"millis\": n}
  POST /_sim/answer-delay                    {\"millis\": n}                     every REST operation held back
  POST /_sim/faults                          {\"operation\": \"SendMessage\", \"count\": n, \"kind\": \"Throttling|InternalServer|AccessDenied\"}
  POST /_sim/expire/connection-tokens        {\"contact_id\"?}
  POST /_sim/expire/socket-urls              {\"contact_id\"?}
  GET  /_sim/chats/{contact_id}              -> {\"ended\", \"open_sockets\", \"transcript\"}
  POST /_sim/chats/{contact_id}/end          -> {\"ended\": bool}
  POST /_sim/chats/{contact_id}/items        item object -> stored item
  POST /_sim/chats/{contact_id}/say          {\"text\": ...} -> {\"id\": ...}
  POST /_sim/load                            {\"rate\": per_s, \"millis\": n, \"contact_ids\"?: [...], \"stamp\"?: bool}
                                             agent messages at that rate (content \"bench t=<unix ns>\" when stamped),
                                             answered when done -> {\"pushed\", \"chats\", \"ended\", \"elapsed_ms\", \"behind\"}";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/counters", get(counters))
        .route("/_sim/sockets/drop", post(drop_sockets))
        .route("/_sim/heartbeats", post(heartbeats))
        .route("/_sim/frame-delay", post(frame_delay))
        .route("/_sim/answer-delay", post(answer_delay))
        .route("/_sim/faults", post(faults))
        .route("/_sim/expire/connection-tokens", post(expire_tokens))
        .route("/_sim/expire/socket-urls", post(expire_urls))
        .route("/_sim/chats/{contact_id}", get(chat))
        .route("/_sim/chats/{contact_id}/end", post(end_chat))
        .route("/_sim/chats/{contact_id}/items", post(push_item))
        .route("/_sim/chats/{contact_id}/say", post(say))
        .route("/_sim/load", post(load))
        .with_state(shared)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    reply(status, json!({ "message": message.to_string() }))
}

fn sim_error(err: SimError) -> Response {
    let status = match err {
        SimError::UnknownContact(_) => StatusCode::NOT_FOUND,
        SimError::ChatEnded(_) => StatusCode::CONFLICT,
        SimError::InvalidItem(_) => StatusCode::BAD_REQUEST,
    };
    error(status, err)
}

/// Parse a JSON body (empty reads as `{}`); the error is the message for a 400.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| format!("invalid body: {e}"))
}

#[derive(Deserialize)]
struct ContactFilter {
    contact_id: Option<String>,
}

#[derive(Deserialize)]
struct Heartbeats {
    answer: bool,
}

#[derive(Deserialize)]
struct Delay {
    millis: u64,
}

#[derive(Deserialize)]
struct Fault {
    operation: Operation,
    count: u32,
    kind: FaultKind,
}

#[derive(Deserialize)]
struct Say {
    text: String,
}

async fn counters(State(shared): State<Arc<Shared>>) -> Response {
    reply(StatusCode::OK, json!(shared.counters()))
}

async fn drop_sockets(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    match body::<ContactFilter>(&bytes) {
        Ok(f) => reply(
            StatusCode::OK,
            json!({ "dropped": shared.drop_sockets(f.contact_id.as_deref()) }),
        ),
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

async fn heartbeats(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    match body::<Heartbeats>(&bytes) {
        Ok(h) => {
            shared.knobs.set_answer_heartbeats(h.answer);
            reply(StatusCode::OK, json!({}))
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

/// Applies a `{"millis": n}` body with `set`.
fn set_delay(bytes: &Bytes, set: impl FnOnce(Duration)) -> Response {
    match body::<Delay>(bytes) {
        Ok(d) => {
            set(Duration::from_millis(d.millis));
            reply(StatusCode::OK, json!({}))
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

async fn frame_delay(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    set_delay(&bytes, |d| shared.knobs.set_frame_delay(d))
}

async fn answer_delay(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    set_delay(&bytes, |d| shared.knobs.set_answer_delay(d))
}

async fn faults(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    match body::<Fault>(&bytes) {
        Ok(f) => {
            shared.knobs.fail_next(f.operation, f.count, f.kind);
            reply(StatusCode::OK, json!({}))
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

async fn expire_tokens(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    match body::<ContactFilter>(&bytes) {
        Ok(f) => {
            shared.expire_connection_tokens(f.contact_id.as_deref());
            reply(StatusCode::OK, json!({}))
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

async fn expire_urls(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    match body::<ContactFilter>(&bytes) {
        Ok(f) => {
            shared.expire_socket_urls(f.contact_id.as_deref());
            reply(StatusCode::OK, json!({}))
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

async fn chat(State(shared): State<Arc<Shared>>, Path(contact_id): Path<String>) -> Response {
    match (
        shared.chat_ended(&contact_id),
        shared.transcript(&contact_id),
    ) {
        (Some(ended), Some(transcript)) => reply(
            StatusCode::OK,
            json!({
                "ended": ended,
                "open_sockets": shared.open_sockets(&contact_id),
                "transcript": transcript,
            }),
        ),
        _ => sim_error(SimError::UnknownContact(contact_id)),
    }
}

async fn end_chat(State(shared): State<Arc<Shared>>, Path(contact_id): Path<String>) -> Response {
    if shared.find_chat(&contact_id).is_none() {
        return sim_error(SimError::UnknownContact(contact_id));
    }
    reply(
        StatusCode::OK,
        json!({ "ended": shared.end_chat_by_agent(&contact_id) }),
    )
}

async fn push_item(
    State(shared): State<Arc<Shared>>,
    Path(contact_id): Path<String>,
    bytes: Bytes,
) -> Response {
    let item = match body::<Value>(&bytes) {
        Ok(item) => item,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    match shared.push_raw_item(&contact_id, item) {
        Ok(item) => reply(StatusCode::OK, item),
        Err(err) => sim_error(err),
    }
}

async fn say(
    State(shared): State<Arc<Shared>>,
    Path(contact_id): Path<String>,
    bytes: Bytes,
) -> Response {
    let say = match body::<Say>(&bytes) {
        Ok(say) => say,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    match shared.agent_say(&contact_id, &say.text) {
        Ok(id) => reply(StatusCode::OK, json!({ "id": id })),
        Err(err) => sim_error(err),
    }
}

async fn load(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    let spec = match body::<LoadSpec>(&bytes).and_then(|s| s.check().map(|()| s)) {
        Ok(spec) => spec,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let report = super::load::run(shared, spec).await;
    reply(StatusCode::OK, json!(report))
}

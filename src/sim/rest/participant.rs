//! The participant's own operations: CreateParticipantConnection (socket URL and connection
//! token), SendMessage and SendEvent (with ClientToken replay), and DisconnectParticipant.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Map;
use serde_json::{json, Value};

use super::wire::{bearer, optional, parse, required, run, ApiError};
use crate::connect::content_type;
use crate::sim::model::chat::{AgentEvent, EndReason};
use crate::sim::model::operation::Operation;
use crate::sim::model::registry::Shared;
use crate::sim::model::time::{format_ms, now_ms};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateConnectionRequest {
    r#type: Option<Vec<String>>,
    connect_participant: Option<bool>,
}

pub(super) async fn create_participant_connection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::CreateParticipantConnection, || {
        let req: CreateConnectionRequest = parse(&body, ApiError::validation)?;
        let types = req.r#type.unwrap_or_default();
        if types.is_empty() {
            return Err(ApiError::validation(
                "Type must contain at least one connection type",
            ));
        }
        if let Some(t) = types.iter().find(|t| {
            !matches!(
                t.as_str(),
                "WEBSOCKET" | "CONNECTION_CREDENTIALS" | "WEBRTC_CONNECTION"
            )
        }) {
            return Err(ApiError::validation(format!(
                "Type {t:?} is not one of WEBSOCKET, CONNECTION_CREDENTIALS, WEBRTC_CONNECTION"
            )));
        }
        let want_socket = types.iter().any(|t| t == "WEBSOCKET");
        let want_credentials = types.iter().any(|t| t == "CONNECTION_CREDENTIALS");
        let conn = shared.create_connection(
            bearer(&headers),
            want_socket,
            want_credentials,
            req.connect_participant.unwrap_or(false),
        )?;
        let mut out = Map::new();
        if let Some((url, expiry)) = conn.socket {
            out.insert(
                "Websocket".into(),
                json!({ "Url": url, "ConnectionExpiry": expiry }),
            );
        }
        if let Some((token, expiry)) = conn.credentials {
            out.insert(
                "ConnectionCredentials".into(),
                json!({ "ConnectionToken": token, "Expiry": expiry }),
            );
        }
        Ok(Value::Object(out))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendRequest {
    content_type: Option<String>,
    content: Option<String>,
    client_token: Option<String>,
}

fn id_and_time(id: &str, ms: i64) -> Value {
    json!({ "Id": id, "AbsoluteTime": format_ms(ms) })
}

pub(super) async fn send_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::SendMessage, || {
        let (chat, sender) = shared.authorize_as(bearer(&headers))?;
        let req: SendRequest = parse(&body, ApiError::validation)?;
        let ct =
            required("ContentType", &req.content_type, 1, 100).map_err(ApiError::validation)?;
        required(
            "Content",
            &req.content,
            1,
            content_type::MODEL_MAX_MESSAGE_CHARS,
        )
        .map_err(ApiError::validation)?;
        optional("ClientToken", &req.client_token, 0, 500).map_err(ApiError::validation)?;
        if !content_type::is_message(ct) {
            return Err(ApiError::validation(format!(
                "ContentType {ct:?} is not supported; use text/plain, text/markdown, application/json or {}",
                content_type::INTERACTIVE_RESPONSE
            )));
        }
        // The model's bound is the same for every type; the service enforces each type's.
        let max =
            content_type::max_message_chars(ct).unwrap_or(content_type::MODEL_MAX_MESSAGE_CHARS);
        let content = required("Content", &req.content, 1, max).map_err(ApiError::validation)?;
        if !chat.supported_types.iter().any(|t| t == ct) {
            return Err(ApiError::validation(format!(
                "ContentType {ct:?} is not in this chat's SupportedMessagingContentTypes"
            )));
        }
        if (ct == content_type::APPLICATION_JSON || ct == content_type::INTERACTIVE_RESPONSE)
            && serde_json::from_str::<Value>(content).is_err()
        {
            return Err(ApiError::validation(format!(
                "Content must be valid JSON for {ct}"
            )));
        }
        let client_token = req.client_token.as_deref().filter(|t| !t.is_empty());
        let pushed = {
            let mut st = chat.lock();
            if st.ended {
                return Err(ApiError::access_denied("The chat has ended"));
            }
            if let Some((id, ms)) = client_token.and_then(|t| st.message_tokens.get(t)) {
                return Ok(id_and_time(id, *ms));
            }
            let msg = chat.item("MESSAGE", ct, Some(content), Some(&sender));
            let pushed = shared.commit(&chat, &mut st, msg, true);
            if let Some(t) = client_token {
                st.message_tokens
                    .insert(t.to_owned(), (pushed.id.clone(), pushed.abs_ms));
            }
            pushed
        };
        // The scripted agent answers the customer; a bot's messages are only delivered.
        if sender.id == chat.customer.id {
            chat.notify_agent(AgentEvent::CustomerMessage {
                id: pushed.id.clone(),
                content: content.to_owned(),
            });
        }
        Ok(id_and_time(&pushed.id, pushed.abs_ms))
    })
}

pub(super) async fn send_event(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::SendEvent, || {
        let (chat, sender) = shared.authorize_as(bearer(&headers))?;
        let req: SendRequest = parse(&body, ApiError::validation)?;
        let ct =
            required("ContentType", &req.content_type, 1, 100).map_err(ApiError::validation)?;
        optional("Content", &req.content, 1, 16384).map_err(ApiError::validation)?;
        optional("ClientToken", &req.client_token, 0, 500).map_err(ApiError::validation)?;
        if !matches!(
            ct,
            content_type::TYPING
                | content_type::DELIVERED
                | content_type::READ
                | content_type::CONNECTION_ACKNOWLEDGED
        ) {
            return Err(ApiError::validation(format!(
                "ContentType {ct:?} is not a supported event type ({}, {}, {})",
                content_type::TYPING,
                content_type::DELIVERED,
                content_type::READ
            )));
        }
        let receipt_for = if ct == content_type::DELIVERED || ct == content_type::READ {
            let content = req
                .content
                .as_deref()
                .ok_or_else(|| ApiError::validation("Content is required for receipts"))?;
            let parsed: Value = serde_json::from_str(content).map_err(|_| {
                ApiError::validation("Content must be a JSON object like {\"messageId\":\"...\"}")
            })?;
            let id = parsed
                .get("messageId")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::validation("Content must contain a messageId string"))?;
            Some(id.to_owned())
        } else {
            None
        };
        let client_token = req.client_token.as_deref().filter(|t| !t.is_empty());
        let mut st = chat.lock();
        if st.ended {
            return Err(ApiError::access_denied("The chat has ended"));
        }
        if let Some((id, ms)) = client_token.and_then(|t| st.event_tokens.get(t)) {
            return Ok(id_and_time(id, *ms));
        }
        let (id, ms) = match (ct, receipt_for) {
            (content_type::CONNECTION_ACKNOWLEDGED, _) => {
                (uuid::Uuid::new_v4().to_string(), now_ms())
            }
            (_, Some(message_id)) => {
                if !st.has_item(&message_id) {
                    return Err(ApiError::validation(
                        "messageId does not match a message of this chat",
                    ));
                }
                let receipt =
                    chat.receipt(ct == content_type::READ, &message_id, &sender, now_ms());
                let p = shared.commit(&chat, &mut st, receipt, false);
                (p.id, p.abs_ms)
            }
            _ => {
                let typing = chat.item(
                    "TYPING",
                    content_type::TYPING,
                    req.content.as_deref(),
                    Some(&sender),
                );
                let p = shared.commit(&chat, &mut st, typing, false);
                (p.id, p.abs_ms)
            }
        };
        if let Some(t) = client_token {
            st.event_tokens.insert(t.to_owned(), (id.clone(), ms));
        }
        Ok(id_and_time(&id, ms))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClientTokenOnly {
    client_token: Option<String>,
}

pub(super) async fn disconnect_participant(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::DisconnectParticipant, || {
        let (chat, member) = shared.authorize_as(bearer(&headers))?;
        let req: ClientTokenOnly = parse(&body, ApiError::validation)?;
        optional("ClientToken", &req.client_token, 0, 500).map_err(ApiError::validation)?;
        // A custom bot leaves the chat; the customer leaving ends it.
        let left = if member.id == chat.customer.id {
            shared.end_chat(&chat, EndReason::Customer)
        } else {
            shared.bot_leave(&chat, &member.id)
        };
        if !left {
            return Err(ApiError::access_denied("The chat has ended"));
        }
        Ok(json!({}))
    })
}

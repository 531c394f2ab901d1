//! The restJson1 routes of both services: `PUT /contact/chat` (connect) and `/participant/...`
//! (connectparticipant). Each handler counts the call, applies an injected fault, checks the
//! bearer token, validates the body as the model does, and answers with the SDK's shapes and
//! error codes (`X-Amzn-ErrorType` header plus `{"__type","Message"}` body).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::time::Instant;

use super::agent::AgentEvent;
use super::files::{attachment_url, MAX_ATTACHMENT_BYTES};
use super::state::{
    format_after, format_ms, new_token, now_ms, parse_time_ms, Attachment, Chat, Denied, EndReason,
    NewChat, Shared, StartError,
};
use super::transcript::{self, Direction, Order, Start};
use super::{FaultKind, Operation};
use crate::connect::content_type;

/// Content types StartChatContact accepts in SupportedMessagingContentTypes.
const SUPPORTED_TYPES: [&str; 5] = [
    content_type::TEXT_PLAIN,
    content_type::TEXT_MARKDOWN,
    content_type::APPLICATION_JSON,
    "application/vnd.amazonaws.connect.message.interactive",
    content_type::INTERACTIVE_RESPONSE,
];
/// Attachment MIME types (csv, doc(x), heic, jfif/jpeg/jpg, mov, mp4, pdf, png, ppt(x), rtf,
/// txt, wav, xls(x)).
const ATTACHMENT_TYPES: [&str; 19] = [
    "text/csv",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "image/heic",
    "image/jpeg",
    "image/pjpeg",
    "video/quicktime",
    "video/mp4",
    "application/pdf",
    "image/png",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/rtf",
    "text/rtf",
    "text/plain",
    "audio/wav",
    "audio/x-wav",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
];
/// The one view DescribeView knows.
pub const SAMPLE_VIEW_TOKEN: &str = "sample-view";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/contact/chat", put(start_chat_contact))
        .route(
            "/participant/connection",
            post(create_participant_connection),
        )
        .route("/participant/message", post(send_message))
        .route("/participant/event", post(send_event))
        .route("/participant/transcript", post(get_transcript))
        .route("/participant/disconnect", post(disconnect_participant))
        .route(
            "/participant/start-attachment-upload",
            post(start_attachment_upload),
        )
        .route(
            "/participant/complete-attachment-upload",
            post(complete_attachment_upload),
        )
        .route("/participant/attachment", post(get_attachment))
        .route("/participant/views/{view_token}", get(describe_view))
        .route(
            "/participant/authentication-url",
            post(get_authentication_url),
        )
        .route(
            "/participant/cancel-authentication",
            post(cancel_participant_authentication),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            answer_delay,
        ))
        .with_state(shared)
}

/// Holds every operation back by the configured answer delay: a slow Connect.
async fn answer_delay(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let delay = shared.answer_delay();
    if !delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    next.run(request).await
}

/// An AWS error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// Participant-service bad request.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }

    /// Connect-service bad parameter value.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            message,
        )
    }

    /// Connect-service malformed or inconsistent request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequestException", message)
    }

    fn quota(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "ServiceQuotaExceededException",
            message,
        )
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ConflictException", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// The error an injected fault produces for that operation.
    pub fn fault(op: Operation, kind: FaultKind) -> Self {
        match (kind, op.is_connect_service()) {
            (FaultKind::Throttling, _) => Self::new(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "Rate exceeded"),
            (FaultKind::InternalServer, true) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServiceException",
                "Request processing failed because of an error or failure with the service",
            ),
            (FaultKind::InternalServer, false) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                "This exception occurs when there is an internal failure in the Amazon Connect service",
            ),
            (FaultKind::AccessDenied, _) => Self::access_denied("You do not have sufficient access to perform this action"),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        ApiError::access_denied(d.0)
    }
}

fn request_id() -> (HeaderName, HeaderValue) {
    let id = uuid::Uuid::new_v4().to_string();
    (
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0")),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.code, "Message": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(self.code),
        );
        let (name, value) = request_id();
        headers.insert(name, value);
        resp
    }
}

fn ok(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (name, value) = request_id();
    headers.insert(name, value);
    resp
}

/// Count the call, apply a fault, run the operation.
fn run(shared: &Shared, op: Operation, f: impl FnOnce() -> Result<Value, ApiError>) -> Response {
    let _span = tracing::debug_span!("operation", name = op.name()).entered();
    if let Some(kind) = shared.begin(op) {
        return ApiError::fault(op, kind).into_response();
    }
    match f() {
        Ok(body) => ok(body),
        Err(err) => {
            tracing::debug!(code = err.code, message = %err.message, "operation failed");
            err.into_response()
        }
    }
}

/// Any route no operation matches.
pub async fn unknown_operation() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "Unknown operation",
    )
    .into_response()
}

/// `X-Amz-Bearer` (header names are case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-amz-bearer").and_then(|v| v.to_str().ok())
}

fn parse<T: DeserializeOwned>(body: &[u8], err: fn(String) -> ApiError) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| err(format!("Invalid request body: {e}")))
}

/// Length rule of the model, counted in characters.
fn check_len(name: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        if min == max {
            return Err(format!("{name} must be exactly {min} characters"));
        }
        return Err(format!("{name} must be between {min} and {max} characters"));
    }
    Ok(())
}

fn required<'a>(
    name: &str,
    value: &'a Option<String>,
    min: usize,
    max: usize,
) -> Result<&'a str, String> {
    let v = value
        .as_deref()
        .ok_or_else(|| format!("{name} is required"))?;
    check_len(name, v, min, max)?;
    Ok(v)
}

fn optional(name: &str, value: &Option<String>, min: usize, max: usize) -> Result<(), String> {
    match value {
        Some(v) => check_len(name, v, min, max),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- StartChatContact

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParticipantDetails {
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChatMessage {
    content_type: Option<String>,
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PersistentChat {
    rehydration_type: Option<String>,
    source_contact_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParticipantConfiguration {
    response_mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartChatContactRequest {
    instance_id: Option<String>,
    contact_flow_id: Option<String>,
    attributes: Option<HashMap<String, String>>,
    participant_details: Option<ParticipantDetails>,
    initial_message: Option<ChatMessage>,
    client_token: Option<String>,
    chat_duration_in_minutes: Option<i64>,
    supported_messaging_content_types: Option<Vec<String>>,
    persistent_chat: Option<PersistentChat>,
    related_contact_id: Option<String>,
    customer_id: Option<String>,
    participant_configuration: Option<ParticipantConfiguration>,
    disconnect_on_customer_exit: Option<Vec<String>>,
    segment_attributes: Option<Map<String, Value>>,
}

fn validate_start(req: &StartChatContactRequest) -> Result<NewChat, ApiError> {
    let missing = |e: String| ApiError::invalid_request(e);
    let bad = |e: String| ApiError::invalid_parameter(e);
    let instance_id = match &req.instance_id {
        None => return Err(missing("InstanceId is required".into())),
        Some(v) => {
            check_len("InstanceId", v, 1, 100).map_err(bad)?;
            v.clone()
        }
    };
    match &req.contact_flow_id {
        None => return Err(missing("ContactFlowId is required".into())),
        Some(v) => check_len("ContactFlowId", v, 1, 500).map_err(bad)?,
    }
    let display_name = match req.participant_details.as_ref().map(|p| &p.display_name) {
        None => return Err(missing("ParticipantDetails is required".into())),
        Some(None) => return Err(missing("ParticipantDetails.DisplayName is required".into())),
        Some(Some(name)) => {
            check_len("ParticipantDetails.DisplayName", name, 1, 256).map_err(bad)?;
            name.clone()
        }
    };
    if let Some(attrs) = &req.attributes {
        let mut total = 0usize;
        for (k, v) in attrs {
            check_len("Attributes key", k, 1, 32767).map_err(bad)?;
            if !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(format!(
                    "Attributes key {k:?} may only contain letters, digits, '-' and '_'"
                )));
            }
            check_len("Attributes value", v, 0, 32767).map_err(bad)?;
            total += k.len() + v.len();
        }
        if total > 32 * 1024 {
            return Err(bad("Attributes must not exceed 32 KB in total".into()));
        }
    }
    optional("ClientToken", &req.client_token, 0, 500).map_err(bad)?;
    optional("CustomerId", &req.customer_id, 0, 128).map_err(bad)?;
    optional("RelatedContactId", &req.related_contact_id, 1, 256).map_err(bad)?;
    let minutes = req.chat_duration_in_minutes.unwrap_or(1500);
    if !(60..=10080).contains(&minutes) {
        return Err(bad(
            "ChatDurationInMinutes must be between 60 and 10080".into()
        ));
    }
    let supported_types = match &req.supported_messaging_content_types {
        None => vec![
            content_type::TEXT_PLAIN.to_owned(),
            content_type::INTERACTIVE_RESPONSE.to_owned(),
        ],
        Some(types) => {
            if let Some(t) = types
                .iter()
                .find(|t| !SUPPORTED_TYPES.contains(&t.as_str()))
            {
                return Err(bad(format!(
                    "SupportedMessagingContentTypes contains unsupported type {t:?}"
                )));
            }
            if !types.iter().any(|t| t == content_type::TEXT_PLAIN) {
                return Err(bad(
                    "SupportedMessagingContentTypes must contain text/plain".into(),
                ));
            }
            types.clone()
        }
    };
    let initial_message = match &req.initial_message {
        None => None,
        Some(m) => {
            let ct =
                required("InitialMessage.ContentType", &m.content_type, 1, 100).map_err(bad)?;
            let content = required("InitialMessage.Content", &m.content, 1, 16384).map_err(bad)?;
            if !content_type::is_message(ct) || !supported_types.iter().any(|t| t == ct) {
                return Err(bad(format!(
                    "InitialMessage.ContentType {ct:?} is not supported by this chat"
                )));
            }
            Some((ct.to_owned(), content.to_owned()))
        }
    };
    let source_contact_id = match &req.persistent_chat {
        None => None,
        Some(p) => {
            if req.related_contact_id.is_some() {
                return Err(ApiError::invalid_request(
                    "PersistentChat and RelatedContactId cannot be used together",
                ));
            }
            match p.rehydration_type.as_deref() {
                None | Some("ENTIRE_PAST_SESSION" | "FROM_SEGMENT") => {}
                Some(other) => {
                    return Err(bad(format!(
                        "PersistentChat.RehydrationType must be ENTIRE_PAST_SESSION or FROM_SEGMENT, not {other:?}"
                    )))
                }
            }
            let source = required(
                "PersistentChat.SourceContactId",
                &p.source_contact_id,
                1,
                256,
            )
            .map_err(bad)?;
            Some(source.to_owned())
        }
    };
    if let Some(mode) = req
        .participant_configuration
        .as_ref()
        .and_then(|p| p.response_mode.as_deref())
    {
        if !matches!(mode, "INCREMENTAL" | "COMPLETE") {
            return Err(bad(format!(
                "ParticipantConfiguration.ResponseMode must be INCREMENTAL or COMPLETE, not {mode:?}"
            )));
        }
    }
    if let Some(list) = &req.disconnect_on_customer_exit {
        if list.iter().any(|v| v != "AGENT") {
            return Err(bad("DisconnectOnCustomerExit may only contain AGENT".into()));
        }
    }
    if let Some(segments) = &req.segment_attributes {
        if segments.keys().any(|k| k.is_empty() || k.len() > 128) {
            return Err(bad(
                "SegmentAttributes keys must be between 1 and 128 characters".into(),
            ));
        }
    }
    Ok(NewChat {
        instance_id,
        display_name,
        supported_types,
        duration: Duration::from_secs(u64::try_from(minutes).unwrap_or(1500) * 60),
        initial_message,
        client_token: req.client_token.clone().filter(|t| !t.is_empty()),
        source_contact_id,
    })
}

async fn start_chat_contact(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    run(&shared, Operation::StartChatContact, || {
        let req: StartChatContactRequest = parse(&body, ApiError::invalid_request)?;
        let new_chat = validate_start(&req)?;
        let started = shared.start_chat(new_chat).map_err(|e| match e {
            StartError::Limit => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "LimitExceededException",
                "The allowed limit for concurrent active chats has been exceeded",
            ),
            StartError::SourceNotFound => {
                ApiError::not_found("PersistentChat.SourceContactId does not exist")
            }
            StartError::SourceActive => ApiError::invalid_request(
                "PersistentChat.SourceContactId must refer to a chat that has ended",
            ),
        })?;
        let mut out = json!({
            "ContactId": started.contact_id,
            "ParticipantId": started.participant_id,
            "ParticipantToken": started.participant_token,
        });
        if let Some(from) = started.continued_from {
            out["ContinuedFromContactId"] = Value::String(from);
        }
        Ok(out)
    })
}

// ---------------------------------------------------------------- CreateParticipantConnection

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateConnectionRequest {
    r#type: Option<Vec<String>>,
    connect_participant: Option<bool>,
}

async fn create_participant_connection(
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

// ---------------------------------------------------------------- SendMessage / SendEvent

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

async fn send_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::SendMessage, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: SendRequest = parse(&body, ApiError::validation)?;
        let ct =
            required("ContentType", &req.content_type, 1, 100).map_err(ApiError::validation)?;
        let content = required("Content", &req.content, 1, 16384).map_err(ApiError::validation)?;
        optional("ClientToken", &req.client_token, 0, 500).map_err(ApiError::validation)?;
        if !content_type::is_message(ct) {
            return Err(ApiError::validation(format!(
                "ContentType {ct:?} is not supported; use text/plain, text/markdown, application/json or {}",
                content_type::INTERACTIVE_RESPONSE
            )));
        }
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
            let msg = chat.item("MESSAGE", ct, Some(content), Some(&chat.customer));
            let pushed = chat.commit(&shared, &mut st, msg, true);
            if let Some(t) = client_token {
                st.message_tokens
                    .insert(t.to_owned(), (pushed.id.clone(), pushed.abs_ms));
            }
            pushed
        };
        chat.notify_agent(AgentEvent::CustomerMessage {
            id: pushed.id.clone(),
            content: content.to_owned(),
        });
        Ok(id_and_time(&pushed.id, pushed.abs_ms))
    })
}

async fn send_event(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::SendEvent, || {
        let chat = shared.authorize(bearer(&headers))?;
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
                let receipt = chat.receipt(
                    ct == content_type::READ,
                    &message_id,
                    &chat.customer,
                    now_ms(),
                );
                let p = chat.commit(&shared, &mut st, receipt, false);
                (p.id, p.abs_ms)
            }
            _ => {
                let typing = chat.item(
                    "TYPING",
                    content_type::TYPING,
                    req.content.as_deref(),
                    Some(&chat.customer),
                );
                let p = chat.commit(&shared, &mut st, typing, false);
                (p.id, p.abs_ms)
            }
        };
        if let Some(t) = client_token {
            st.event_tokens.insert(t.to_owned(), (id.clone(), ms));
        }
        Ok(id_and_time(&id, ms))
    })
}

// ---------------------------------------------------------------- GetTranscript

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartPosition {
    id: Option<String>,
    absolute_time: Option<String>,
    most_recent: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetTranscriptRequest {
    contact_id: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    scan_direction: Option<String>,
    sort_order: Option<String>,
    start_position: Option<StartPosition>,
}

async fn get_transcript(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::GetTranscript, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: GetTranscriptRequest = parse(&body, ApiError::validation)?;
        optional("ContactId", &req.contact_id, 1, 256).map_err(ApiError::validation)?;
        // A persistent chat reads the transcripts of the contacts it continues.
        let target = match req.contact_id.as_deref() {
            Some(id) if id != chat.contact_id => {
                shared.chat_in_chain(&chat, id).ok_or_else(|| {
                    ApiError::access_denied("ContactId is not part of this participant's chat")
                })?
            }
            _ => chat,
        };
        transcript_page(&target, &req)
    })
}

/// A page of `chat`'s transcript (the participant's own chat, or one it continues).
fn transcript_page(chat: &Chat, req: &GetTranscriptRequest) -> Result<Value, ApiError> {
    let v = ApiError::validation;
    let max = req.max_results.unwrap_or(10);
    if !(0..=100).contains(&max) {
        return Err(v("MaxResults must be between 0 and 100".into()));
    }
    let explicit = match req.scan_direction.as_deref() {
        None => None,
        Some("FORWARD") => Some(Direction::Forward),
        Some("BACKWARD") => Some(Direction::Backward),
        Some(other) => {
            return Err(v(format!(
                "ScanDirection must be FORWARD or BACKWARD, not {other:?}"
            )))
        }
    };
    let order = match req.sort_order.as_deref() {
        None | Some("DESCENDING") => Order::Descending,
        Some("ASCENDING") => Order::Ascending,
        Some(other) => {
            return Err(v(format!(
                "SortOrder must be ASCENDING or DESCENDING, not {other:?}"
            )))
        }
    };
    let st = chat.lock();
    let (direction, start) = if let Some(token) = &req.next_token {
        check_len("NextToken", token, 1, 1000).map_err(v)?;
        let cursor = transcript::decode_token(&chat.contact_id, token)
            .ok_or_else(|| v("NextToken is invalid".into()))?;
        if explicit.is_some_and(|d| d != cursor.direction) {
            return Err(v("NextToken was issued for the other ScanDirection".into()));
        }
        (cursor.direction, Start::Cursor(cursor))
    } else if let Some(sp) = &req.start_position {
        let set = usize::from(sp.id.is_some())
            + usize::from(sp.absolute_time.is_some())
            + usize::from(sp.most_recent.is_some());
        if set != 1 {
            return Err(v(
                "StartPosition must have exactly one of Id, AbsoluteTime, MostRecent".into(),
            ));
        }
        let start =
            if let Some(id) = &sp.id {
                check_len("StartPosition.Id", id, 1, 256).map_err(v)?;
                Start::Seq(st.seq_of(id).ok_or_else(|| {
                    v("StartPosition.Id does not match an item of this chat".into())
                })?)
            } else if let Some(t) = &sp.absolute_time {
                check_len("StartPosition.AbsoluteTime", t, 1, 100).map_err(v)?;
                Start::Time(parse_time_ms(t).ok_or_else(|| {
                    v("StartPosition.AbsoluteTime must look like 2019-11-08T02:41:28.172Z".into())
                })?)
            } else {
                let n = sp.most_recent.unwrap_or(0);
                if !(0..=100).contains(&n) {
                    return Err(v(
                        "StartPosition.MostRecent must be between 0 and 100".into()
                    ));
                }
                Start::MostRecent(usize::try_from(n).unwrap_or(0))
            };
        (explicit.unwrap_or(Direction::Forward), start)
    } else {
        (explicit.unwrap_or(Direction::Backward), Start::Edge)
    };
    let page = transcript::page(
        &st.items,
        direction,
        start,
        usize::try_from(max).unwrap_or(0),
        order,
    );
    let items: Vec<Value> = page
        .indices
        .iter()
        .map(|i| st.items[*i].value.clone())
        .collect();
    let mut out = json!({ "InitialContactId": chat.contact_id, "Transcript": items });
    if let Some(next) = page.next {
        out["NextToken"] = Value::String(transcript::encode_token(&chat.contact_id, next));
    }
    Ok(out)
}

// ---------------------------------------------------------------- DisconnectParticipant

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClientTokenOnly {
    client_token: Option<String>,
}

async fn disconnect_participant(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::DisconnectParticipant, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: ClientTokenOnly = parse(&body, ApiError::validation)?;
        optional("ClientToken", &req.client_token, 0, 500).map_err(ApiError::validation)?;
        if !shared.end_chat(&chat, EndReason::Customer) {
            return Err(ApiError::access_denied("The chat has ended"));
        }
        Ok(json!({}))
    })
}

// ---------------------------------------------------------------- attachments

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartAttachmentUploadRequest {
    content_type: Option<String>,
    attachment_size_in_bytes: Option<i64>,
    attachment_name: Option<String>,
    client_token: Option<String>,
}

async fn start_attachment_upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::StartAttachmentUpload, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: StartAttachmentUploadRequest = parse(&body, ApiError::validation)?;
        let v = ApiError::validation;
        let ct = required("ContentType", &req.content_type, 1, 255).map_err(v)?;
        let name = required("AttachmentName", &req.attachment_name, 1, 256).map_err(v)?;
        let client_token = required("ClientToken", &req.client_token, 1, 500).map_err(v)?;
        let size = req
            .attachment_size_in_bytes
            .ok_or_else(|| v("AttachmentSizeInBytes is required".into()))?;
        if size < 1 {
            return Err(v("AttachmentSizeInBytes must be at least 1".into()));
        }
        if !ATTACHMENT_TYPES.contains(&ct) {
            return Err(v(format!(
                "ContentType {ct:?} is not a supported attachment type"
            )));
        }
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        if size > MAX_ATTACHMENT_BYTES {
            return Err(ApiError::quota("The attachment is larger than 20 MB"));
        }
        let mut st = chat.lock();
        if st.ended {
            return Err(ApiError::access_denied("The chat has ended"));
        }
        let existing = st.upload_tokens.get(client_token).cloned();
        let attachment_id = match existing.filter(|id| st.attachments.contains_key(id)) {
            Some(id) => id,
            None => {
                if st.attachments.len() >= shared.config.max_attachments_per_chat {
                    return Err(ApiError::quota("Too many attachments in this chat"));
                }
                if !shared.reserve_bytes(size) {
                    return Err(ApiError::quota("Attachment storage is full"));
                }
                let id = uuid::Uuid::new_v4().to_string();
                st.attachments.insert(
                    id.clone(),
                    Attachment {
                        id: id.clone(),
                        name: name.to_owned(),
                        content_type: ct.to_owned(),
                        size,
                        upload_token: new_token(),
                        upload_expires: Instant::now() + shared.config.upload_url_ttl,
                        data: None,
                        completed: false,
                        downloads: Default::default(),
                    },
                );
                st.upload_tokens.insert(client_token.to_owned(), id.clone());
                id
            }
        };
        let att = st
            .attachments
            .get(&attachment_id)
            .ok_or_else(|| ApiError::validation("Unknown attachment"))?;
        Ok(json!({
            "AttachmentId": att.id,
            "UploadMetadata": {
                "Url": attachment_url(&shared, &chat.contact_id, &att.id, &att.upload_token),
                "UrlExpiry": format_after(att.upload_expires.saturating_duration_since(Instant::now())),
                "HeadersToInclude": { "Content-Type": att.content_type },
            },
        }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CompleteAttachmentUploadRequest {
    attachment_ids: Option<Vec<String>>,
    client_token: Option<String>,
}

async fn complete_attachment_upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::CompleteAttachmentUpload, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: CompleteAttachmentUploadRequest = parse(&body, ApiError::validation)?;
        let v = ApiError::validation;
        let ids = req.attachment_ids.unwrap_or_default();
        if ids.len() != 1 {
            return Err(v(
                "AttachmentIds must contain exactly one attachment id".into()
            ));
        }
        let id = &ids[0];
        check_len("AttachmentIds member", id, 1, 256).map_err(v)?;
        required("ClientToken", &req.client_token, 1, 500).map_err(v)?;
        let mut st = chat.lock();
        if st.ended {
            return Err(ApiError::access_denied("The chat has ended"));
        }
        let (name, ct) = {
            let att = st
                .attachments
                .get_mut(id)
                .ok_or_else(|| v("AttachmentIds refers to an unknown attachment".into()))?;
            if att.completed {
                return Ok(json!({}));
            }
            if att.data.is_none() {
                return Err(ApiError::conflict("The attachment upload has not finished"));
            }
            att.completed = true;
            (att.name.clone(), att.content_type.clone())
        };
        let mut item = chat.item("ATTACHMENT", &ct, None, Some(&chat.customer));
        item.insert(
            "Attachments".into(),
            json!([{ "ContentType": ct, "AttachmentId": id, "AttachmentName": name, "Status": "APPROVED" }]),
        );
        chat.commit(&shared, &mut st, item, true);
        Ok(json!({}))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttachmentRequest {
    attachment_id: Option<String>,
    url_expiry_in_seconds: Option<i64>,
    url_content_disposition: Option<String>,
}

async fn get_attachment(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::GetAttachment, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: GetAttachmentRequest = parse(&body, ApiError::validation)?;
        let v = ApiError::validation;
        let id = required("AttachmentId", &req.attachment_id, 1, 256).map_err(v)?;
        let secs = req.url_expiry_in_seconds.unwrap_or(300);
        if !(5..=300).contains(&secs) {
            return Err(v("UrlExpiryInSeconds must be between 5 and 300".into()));
        }
        if let Some(d) = req.url_content_disposition.as_deref() {
            if !matches!(d, "ATTACHMENT" | "INLINE") {
                return Err(v(format!(
                    "UrlContentDisposition must be ATTACHMENT or INLINE, not {d:?}"
                )));
            }
        }
        let ttl = Duration::from_secs(u64::try_from(secs).unwrap_or(300));
        let cap = shared.config.max_tokens_per_participant;
        let mut st = chat.lock();
        let att = st
            .attachments
            .get_mut(id)
            .filter(|a| a.completed)
            .ok_or_else(|| {
                v("AttachmentId does not match a completed attachment of this chat".into())
            })?;
        let token = new_token();
        att.downloads.push_back((
            token.clone(),
            Instant::now() + ttl,
            req.url_content_disposition.clone(),
        ));
        while att.downloads.len() > cap {
            att.downloads.pop_front();
        }
        let size = att.data.as_ref().map_or(0, |d| d.len() as u64);
        Ok(json!({
            "Url": attachment_url(&shared, &chat.contact_id, id, &token),
            "UrlExpiry": format_after(ttl),
            "AttachmentSizeInBytes": size,
        }))
    })
}

// ---------------------------------------------------------------- views and authentication

async fn describe_view(
    State(shared): State<Arc<Shared>>,
    Path(view_token): Path<String>,
    headers: HeaderMap,
) -> Response {
    run(&shared, Operation::DescribeView, || {
        let chat = shared.authorize(bearer(&headers))?;
        check_len("ViewToken", &view_token, 1, 1000).map_err(ApiError::validation)?;
        if view_token != SAMPLE_VIEW_TOKEN {
            return Err(ApiError::not_found("The view does not exist"));
        }
        let arn = format!(
            "arn:aws:connect:us-east-1:000000000000:instance/{}/view/sample-view:1",
            chat.instance_id
        );
        Ok(json!({
            "View": {
                "Id": "sample-view",
                "Arn": arn,
                "Name": "Sample view",
                "Version": 1,
                "Content": {
                    "InputSchema": r#"{"type":"object","properties":{"Heading":{"type":"string"}}}"#,
                    "Template": r#"{"Head":{"Title":"Sample"},"Body":[{"_id":"Heading","Type":"Header","Props":{"Heading":{"_ref":"Heading"}}}]}"#,
                    "Actions": ["Submit", "Cancel"],
                },
            }
        }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthenticationRequest {
    session_id: Option<String>,
    redirect_uri: Option<String>,
}

async fn get_authentication_url(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::GetAuthenticationUrl, || {
        shared.authorize(bearer(&headers))?;
        let req: AuthenticationRequest = parse(&body, ApiError::validation)?;
        let session =
            required("SessionId", &req.session_id, 36, 36).map_err(ApiError::validation)?;
        let redirect =
            required("RedirectUri", &req.redirect_uri, 1, 1024).map_err(ApiError::validation)?;
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("session_id", session)
            .append_pair("redirect_uri", redirect)
            .finish();
        Ok(
            json!({ "AuthenticationUrl": format!("{}/_sim/authenticate?{query}", shared.public_base) }),
        )
    })
}

async fn cancel_participant_authentication(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::CancelParticipantAuthentication, || {
        shared.authorize(bearer(&headers))?;
        let req: AuthenticationRequest = parse(&body, ApiError::validation)?;
        required("SessionId", &req.session_id, 36, 36).map_err(ApiError::validation)?;
        Ok(json!({}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_messages_name_the_member() {
        assert_eq!(
            check_len("Content", "", 1, 16384),
            Err("Content must be between 1 and 16384 characters".to_owned())
        );
        assert_eq!(
            check_len("SessionId", "x", 36, 36),
            Err("SessionId must be exactly 36 characters".to_owned())
        );
        assert_eq!(check_len("Content", "é", 1, 1), Ok(()));
    }

    #[test]
    fn empty_body_reads_as_empty_object() {
        let r: ClientTokenOnly = parse(b"", ApiError::validation).unwrap();
        assert!(r.client_token.is_none());
        assert!(parse::<ClientTokenOnly>(b"[1]", ApiError::validation).is_err());
    }

    #[test]
    fn faults_map_to_service_codes() {
        assert_eq!(
            ApiError::fault(Operation::StartChatContact, FaultKind::InternalServer).code,
            "InternalServiceException"
        );
        assert_eq!(
            ApiError::fault(Operation::SendMessage, FaultKind::InternalServer).code,
            "InternalServerException"
        );
        assert_eq!(
            ApiError::fault(Operation::SendMessage, FaultKind::Throttling).status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}

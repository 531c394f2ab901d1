//! StartChatContact (`PUT /contact/chat`, the connect service): the request validated as the
//! model does, persistent chats (`PersistentChat.SourceContactId`), and the answer with the
//! participant token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Map;

use super::wire::{check_len, optional, parse, required, run, ApiError};
use crate::connect::content_type;
use crate::sim::model::chat::StartOptions;
use crate::sim::model::operation::Operation;
use crate::sim::model::registry::{NewChat, Shared, StartError};

/// Content types StartChatContact accepts in SupportedMessagingContentTypes.
const SUPPORTED_TYPES: [&str; 5] = [
    content_type::TEXT_PLAIN,
    content_type::TEXT_MARKDOWN,
    content_type::APPLICATION_JSON,
    "application/vnd.amazonaws.connect.message.interactive",
    content_type::INTERACTIVE_RESPONSE,
];

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
    connection_types: Option<Vec<String>>,
    chat_streaming_configuration: Option<ChatStreamingConfiguration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChatStreamingConfiguration {
    streaming_endpoint_arn: Option<String>,
}

/// The model's `ConnectionType` values (StartChatContact's ConnectionTypes).
const CONNECTION_TYPES: [&str; 4] = [
    "WEBSOCKET",
    "CONNECTION_CREDENTIALS",
    "AUTHENTICATION_SESSION",
    "WEBRTC_CONNECTION",
];

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
    optional("CustomerId", &req.customer_id, 1, 128).map_err(bad)?;
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
            if !content_type::is_message(ct) || !supported_types.iter().any(|t| t == ct) {
                return Err(bad(format!(
                    "InitialMessage.ContentType {ct:?} is not supported by this chat"
                )));
            }
            let max = content_type::max_message_chars(ct)
                .unwrap_or(content_type::MODEL_MAX_MESSAGE_CHARS);
            let content = required("InitialMessage.Content", &m.content, 1, max).map_err(bad)?;
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
        if list.len() != 1 || list.iter().any(|v| v != "AGENT") {
            return Err(bad(
                "DisconnectOnCustomerExit must be exactly one participant type: AGENT".into(),
            ));
        }
    }
    if let Some(list) = &req.connection_types {
        if list.is_empty() || list.len() > 2 {
            return Err(bad("ConnectionTypes must have 1 or 2 members".into()));
        }
        if let Some(t) = list
            .iter()
            .find(|t| !CONNECTION_TYPES.contains(&t.as_str()))
        {
            return Err(bad(format!("ConnectionTypes contains unknown type {t:?}")));
        }
    }
    if let Some(streaming) = &req.chat_streaming_configuration {
        required(
            "ChatStreamingConfiguration.StreamingEndpointArn",
            &streaming.streaming_endpoint_arn,
            1,
            350,
        )
        .map_err(bad)?;
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
        options: {
            let options = StartOptions {
                customer_id: req.customer_id.clone(),
                related_contact_id: req.related_contact_id.clone(),
                response_mode: req
                    .participant_configuration
                    .as_ref()
                    .and_then(|p| p.response_mode.clone()),
                disconnect_on_customer_exit: req.disconnect_on_customer_exit.clone(),
                segment_attributes: req.segment_attributes.clone(),
            };
            (options != StartOptions::default()).then(|| Box::new(options))
        },
    })
}

pub(super) async fn start_chat_contact(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
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

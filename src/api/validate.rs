//! Request validation against Connect's limits, before any upstream quota is spent. Pure
//! functions from a request to what the gateway sends upstream; each refusal names one field
//! (`google.rpc.BadRequest`).

use crate::api::defaults::ChatDefaults;
use crate::api::status::ApiError;
use crate::connect::bots::NewBot;
use crate::connect::{StartChat, TranscriptQuery};
use crate::pb;
use crate::security::limits::ReceiptKind;
use std::collections::HashSet;

use crate::connect::content_type::{self as ct, DELIVERED, READ, TEXT_PLAIN, TYPING};

/// Connect's limits, checked before any upstream quota is spent.
pub mod limits {
    pub const DISPLAY_NAME: usize = 256;
    pub const CONTENT: usize = 16_384;
    pub const CLIENT_TOKEN: usize = 500;
    pub const ATTRIBUTES_TOTAL: usize = 32 * 1024;
    pub const ATTRIBUTE_KEY: usize = 128;
    /// Attributes per chat (each counts towards the total size too).
    pub const ATTRIBUTES_COUNT: usize = 50;
    pub const INSTANCE_ID: usize = 100;
    pub const CONTACT_FLOW_ID: usize = 500;
    /// Contact, participant and message ids.
    pub const ID: usize = 256;
    pub const CHAT_TOKEN: usize = 128;
    pub const DURATION_MIN: u32 = 60;
    pub const DURATION_MAX: u32 = 10_080;
    pub const PAGE_SIZE_MAX: u32 = 100;
    pub const PAGE_SIZE_DEFAULT: u32 = 15;
    pub const PAGE_TOKEN: usize = 1_000;
}

pub fn check_len(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        let what = if min == 0 {
            format!("must be at most {max} characters")
        } else if n == 0 {
            "is required".to_owned()
        } else {
            format!("must be between {min} and {max} characters")
        };
        return Err(ApiError::invalid(field, what));
    }
    Ok(())
}

/// An identifier: within its length, printable, no whitespace.
pub fn check_id(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    check_len(field, value, min, max)?;
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::invalid(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

pub fn message_content_type(field: &'static str, ct: &str) -> Result<String, ApiError> {
    let ct = if ct.is_empty() { TEXT_PLAIN } else { ct };
    if ct::is_message(ct) {
        Ok(ct.to_owned())
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be one of {}", ct::MESSAGE.join(", ")),
        ))
    }
}

fn resolve_id(
    field: &'static str,
    max: usize,
    requested: &str,
    default: &str,
    allowed: &HashSet<String>,
) -> Result<String, ApiError> {
    if requested.is_empty() || requested == default {
        return Ok(default.to_owned());
    }
    check_id(field, requested, 1, max)?;
    if allowed.contains(requested) {
        Ok(requested.to_owned())
    } else {
        Err(ApiError::invalid(field, "is not one the operator allows"))
    }
}

/// A chat's contact id: an id without `/` (which separates a bot's participant in the
/// gateway's record keys; Connect's contact ids are UUIDs).
pub fn check_contact_id(field: &'static str, value: &str) -> Result<(), ApiError> {
    check_id(field, value, 1, limits::ID)?;
    if value.contains('/') {
        return Err(ApiError::invalid(field, "must not contain '/'"));
    }
    Ok(())
}

/// The Connect instance a request names: the configured one, or one the operator allows.
fn resolve_instance(requested: &str, defaults: &ChatDefaults) -> Result<String, ApiError> {
    resolve_id(
        "instance_id",
        limits::INSTANCE_ID,
        requested,
        &defaults.instance_id,
        &defaults.allowed_instance_ids,
    )
}

/// The chat reference of a per-chat request. An operator may leave the chat token empty.
pub fn check_chat_ref(
    chat: Option<&pb::ChatRef>,
    token_optional: bool,
) -> Result<&pb::ChatRef, ApiError> {
    let chat = chat.ok_or_else(|| ApiError::invalid("chat", "is required"))?;
    check_contact_id("chat.contact_id", &chat.contact_id)?;
    check_id("chat.participant_id", &chat.participant_id, 0, limits::ID)?;
    let min = usize::from(!token_optional);
    check_len("chat.chat_token", &chat.chat_token, min, limits::CHAT_TOKEN)?;
    Ok(chat)
}

/// A participant's display name: 1 to 256 characters, not blank, no control characters.
fn check_display_name(name: &str) -> Result<(), ApiError> {
    check_len("display_name", name, 1, limits::DISPLAY_NAME)?;
    if name.trim().is_empty() {
        return Err(ApiError::invalid("display_name", "must not be blank"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Validates AddBotParticipant's input into the upstream request. `instance` is the chat's
/// own instance when the gateway started it; otherwise the request's (allow-listed) or the
/// configured one.
pub fn validate_add_bot(
    req: pb::AddBotParticipantRequest,
    instance: Option<String>,
    defaults: &ChatDefaults,
) -> Result<NewBot, ApiError> {
    check_display_name(&req.display_name)?;
    check_len("client_token", &req.client_token, 0, limits::CLIENT_TOKEN)?;
    let instance_id = match instance {
        Some(own) => {
            if !req.instance_id.is_empty() && req.instance_id != own {
                return Err(ApiError::invalid(
                    "instance_id",
                    "is not the chat's instance",
                ));
            }
            own
        }
        None => resolve_instance(&req.instance_id, defaults)?,
    };
    Ok(NewBot {
        instance_id,
        contact_id: req.contact_id,
        display_name: req.display_name,
        client_token: (!req.client_token.is_empty()).then_some(req.client_token),
    })
}

/// Validates StartChat's input into the upstream request (instance and flow resolved).
pub fn validate_start(
    req: pb::StartChatRequest,
    defaults: &ChatDefaults,
) -> Result<StartChat, ApiError> {
    check_display_name(&req.display_name)?;
    if req.attributes.len() > limits::ATTRIBUTES_COUNT {
        return Err(ApiError::invalid(
            "attributes",
            format!("must hold at most {} keys", limits::ATTRIBUTES_COUNT),
        ));
    }
    let mut total = 0;
    for (k, v) in &req.attributes {
        if k.is_empty()
            || k.chars().count() > limits::ATTRIBUTE_KEY
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ApiError::invalid(
                "attributes",
                format!(
                    "keys must be 1 to {} letters, digits, '-' or '_'",
                    limits::ATTRIBUTE_KEY
                ),
            ));
        }
        total += k.len() + v.len();
    }
    if total > limits::ATTRIBUTES_TOTAL {
        return Err(ApiError::invalid(
            "attributes",
            format!("must total at most {} bytes", limits::ATTRIBUTES_TOTAL),
        ));
    }
    let mut content_types = vec![TEXT_PLAIN.to_owned()];
    for ct in &req.supported_content_types {
        let ct = message_content_type("supported_content_types", ct)?;
        if !content_types.contains(&ct) {
            content_types.push(ct);
        }
    }
    let initial_message = match req.initial_message {
        Some(m) if !(m.content.is_empty() && m.content_type.is_empty()) => {
            let ct = message_content_type("initial_message.content_type", &m.content_type)?;
            if !content_types.contains(&ct) {
                return Err(ApiError::invalid(
                    "initial_message.content_type",
                    "must be one of the chat's supported content types",
                ));
            }
            check_len("initial_message.content", &m.content, 1, content_limit(&ct))?;
            Some((ct, m.content))
        }
        _ => None,
    };
    let duration = req.chat_duration_minutes;
    if duration != 0 && !(limits::DURATION_MIN..=limits::DURATION_MAX).contains(&duration) {
        return Err(ApiError::invalid(
            "chat_duration_minutes",
            format!(
                "must be 0 (Connect's default) or between {} and {}",
                limits::DURATION_MIN,
                limits::DURATION_MAX
            ),
        ));
    }
    check_len("client_token", &req.client_token, 0, limits::CLIENT_TOKEN)?;
    let persistent_source = match req.persistent_chat {
        Some(p) => {
            check_id(
                "persistent_chat.source_contact_id",
                &p.source_contact_id,
                1,
                limits::ID,
            )?;
            let rehydration = match pb::RehydrationType::try_from(p.rehydration_type) {
                Ok(pb::RehydrationType::Unspecified) => None,
                Ok(pb::RehydrationType::EntirePastSession) => {
                    Some(aws_sdk_connect::types::RehydrationType::EntirePastSession)
                }
                Ok(pb::RehydrationType::FromSegment) => {
                    Some(aws_sdk_connect::types::RehydrationType::FromSegment)
                }
                Err(_) => {
                    return Err(ApiError::invalid(
                        "persistent_chat.rehydration_type",
                        "is not a known rehydration type",
                    ))
                }
            };
            Some((p.source_contact_id, rehydration))
        }
        None => None,
    };
    if req.segment_attributes.len() > limits::ATTRIBUTES_COUNT {
        return Err(ApiError::invalid(
            "segment_attributes",
            format!("must hold at most {} keys", limits::ATTRIBUTES_COUNT),
        ));
    }
    if let Some((k, _)) = req
        .segment_attributes
        .iter()
        .find(|(k, v)| k.is_empty() || k.chars().count() > 128 || v.is_empty())
    {
        return Err(ApiError::invalid(
            "segment_attributes",
            format!("{k:?}: keys must be 1 to 128 characters and values not empty"),
        ));
    }
    check_len("customer_id", &req.customer_id, 0, 128)?;
    check_len("related_contact_id", &req.related_contact_id, 0, limits::ID)?;
    if !req.related_contact_id.is_empty() && persistent_source.is_some() {
        return Err(ApiError::invalid(
            "related_contact_id",
            "cannot be used with persistent_chat",
        ));
    }
    let response_mode = match pb::ResponseMode::try_from(req.response_mode) {
        Ok(pb::ResponseMode::Unspecified) => None,
        Ok(pb::ResponseMode::Incremental) => {
            Some(aws_sdk_connect::types::ResponseMode::Incremental)
        }
        Ok(pb::ResponseMode::Complete) => Some(aws_sdk_connect::types::ResponseMode::Complete),
        Err(_) => {
            return Err(ApiError::invalid(
                "response_mode",
                "is not a known response mode",
            ))
        }
    };
    Ok(StartChat {
        response_mode,
        segment_attributes: req.segment_attributes,
        customer_id: (!req.customer_id.is_empty()).then_some(req.customer_id),
        related_contact_id: (!req.related_contact_id.is_empty()).then_some(req.related_contact_id),
        disconnect_agent_on_customer_exit: req.disconnect_agent_on_customer_exit,
        instance_id: resolve_instance(&req.instance_id, defaults)?,
        contact_flow_id: resolve_id(
            "contact_flow_id",
            limits::CONTACT_FLOW_ID,
            &req.contact_flow_id,
            &defaults.contact_flow_id,
            &defaults.allowed_contact_flow_ids,
        )?,
        display_name: req.display_name,
        attributes: req.attributes,
        initial_message,
        content_types,
        duration_minutes: (duration != 0).then_some(duration as i32),
        persistent_source,
        client_token: (!req.client_token.is_empty()).then_some(req.client_token),
    })
}

/// Checks SendMessage's fields (the chat reference aside); returns the content type.
pub fn validate_send_message(req: &pb::SendMessageRequest) -> Result<String, ApiError> {
    check_len("client_token", &req.client_token, 0, limits::CLIENT_TOKEN)?;
    let content_type = message_content_type("content_type", &req.content_type)?;
    check_len("content", &req.content, 1, content_limit(&content_type))?;
    Ok(content_type)
}

/// The longest content of a message type (Connect's per-type limit).
fn content_limit(content_type: &str) -> usize {
    ct::max_message_chars(content_type).unwrap_or(limits::CONTENT)
}

/// What a SendEvent asks of Connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub content_type: &'static str,
    /// The receipt's JSON content, `{"messageId": ...}`.
    pub content: Option<String>,
    /// A receipt's kind and message id (none for typing).
    pub receipt: Option<(ReceiptKind, String)>,
}

/// Checks SendEvent's fields (the chat reference aside).
pub fn validate_send_event(req: &pb::SendEventRequest) -> Result<Event, ApiError> {
    check_len("client_token", &req.client_token, 0, limits::CLIENT_TOKEN)?;
    match pb::EventType::try_from(req.r#type) {
        Ok(pb::EventType::Typing) => Ok(Event {
            content_type: TYPING,
            content: None,
            receipt: None,
        }),
        Ok(t @ (pb::EventType::Delivered | pb::EventType::Read)) => {
            check_id("message_id", &req.message_id, 1, limits::ID)?;
            let (content_type, kind) = if t == pb::EventType::Read {
                (READ, ReceiptKind::Read)
            } else {
                (DELIVERED, ReceiptKind::Delivered)
            };
            Ok(Event {
                content_type,
                content: Some(serde_json::json!({ "messageId": req.message_id }).to_string()),
                receipt: Some((kind, req.message_id.clone())),
            })
        }
        _ => Err(ApiError::invalid(
            "type",
            "must be TYPING, DELIVERED or READ",
        )),
    }
}

/// Checks GetTranscript's fields (the chat reference aside) into the upstream query.
pub fn validate_transcript(req: &pb::GetTranscriptRequest) -> Result<TranscriptQuery, ApiError> {
    if req.page_size > limits::PAGE_SIZE_MAX {
        return Err(ApiError::invalid(
            "page_size",
            format!("must be at most {}", limits::PAGE_SIZE_MAX),
        ));
    }
    check_len("page_token", &req.page_token, 0, limits::PAGE_TOKEN)?;
    check_id("start_item_id", &req.start_item_id, 0, limits::ID)?;
    check_id("past_contact_id", &req.past_contact_id, 0, limits::ID)?;
    let forward = match pb::ScanDirection::try_from(req.scan_direction) {
        Ok(pb::ScanDirection::Unspecified) => None,
        Ok(pb::ScanDirection::Forward) => Some(true),
        Ok(pb::ScanDirection::Backward) => Some(false),
        Err(_) => {
            return Err(ApiError::invalid(
                "scan_direction",
                "is not a known direction",
            ))
        }
    };
    let descending = match pb::SortOrder::try_from(req.sort_order) {
        Ok(pb::SortOrder::Descending) => true,
        Ok(_) => false,
        Err(_) => return Err(ApiError::invalid("sort_order", "is not a known order")),
    };
    Ok(TranscriptQuery {
        contact_id: (!req.past_contact_id.is_empty()).then(|| req.past_contact_id.clone()),
        max_results: if req.page_size == 0 {
            limits::PAGE_SIZE_DEFAULT
        } else {
            req.page_size
        } as i32,
        next_token: (!req.page_token.is_empty()).then(|| req.page_token.clone()),
        forward,
        descending,
        start_id: (!req.start_item_id.is_empty()).then(|| req.start_item_id.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn defaults() -> ChatDefaults {
        ChatDefaults {
            instance_id: "inst".into(),
            contact_flow_id: "flow".into(),
            allowed_instance_ids: ["other-inst".to_string()].into(),
            allowed_contact_flow_ids: ["other-flow".to_string()].into(),
            ..ChatDefaults::default()
        }
    }

    fn start() -> pb::StartChatRequest {
        pb::StartChatRequest {
            display_name: "Ada".into(),
            ..Default::default()
        }
    }

    /// The one field a refusal names.
    fn field<T: std::fmt::Debug>(r: Result<T, ApiError>) -> &'static str {
        match r {
            Err(ApiError::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    fn start_field(adjust: impl FnOnce(&mut pb::StartChatRequest)) -> &'static str {
        let mut req = start();
        adjust(&mut req);
        field(validate_start(req, &defaults()))
    }

    #[test]
    fn a_plain_start_resolves_the_defaults() {
        let s = validate_start(start(), &defaults()).unwrap();
        assert_eq!(
            (s.instance_id.as_str(), s.contact_flow_id.as_str()),
            ("inst", "flow")
        );
        assert_eq!(s.content_types, [TEXT_PLAIN]);
        let mut req = start();
        req.instance_id = "other-inst".into();
        req.contact_flow_id = "other-flow".into();
        req.chat_duration_minutes = 60;
        req.attributes = HashMap::from([("tier".into(), "gold".into())]);
        let s = validate_start(req, &defaults()).unwrap();
        assert_eq!(s.instance_id, "other-inst");
        assert_eq!(s.duration_minutes, Some(60));
    }

    #[test]
    fn every_start_rule_names_its_field() {
        assert_eq!(start_field(|r| r.display_name.clear()), "display_name");
        assert_eq!(
            start_field(|r| r.display_name = "  ".into()),
            "display_name"
        );
        assert_eq!(
            start_field(|r| r.display_name = "a".repeat(257)),
            "display_name"
        );
        assert_eq!(
            start_field(|r| r.display_name = "A\u{0}da".into()),
            "display_name"
        );
        let attr = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(start_field(|r| r.attributes = attr("", "v")), "attributes");
        assert_eq!(
            start_field(|r| r.attributes = attr("a b", "v")),
            "attributes"
        );
        assert_eq!(
            start_field(|r| r.attributes = attr(&"k".repeat(129), "v")),
            "attributes"
        );
        assert_eq!(
            start_field(|r| r.attributes = attr("k", &"v".repeat(32 * 1024))),
            "attributes"
        );
        assert_eq!(
            start_field(
                |r| r.attributes = (0..51).map(|i| (format!("k{i}"), String::new())).collect()
            ),
            "attributes"
        );
        assert_eq!(
            start_field(|r| r.supported_content_types = vec!["text/html".into()]),
            "supported_content_types"
        );
        assert_eq!(
            start_field(|r| r.initial_message = Some(pb::InitialMessage {
                content_type: "text/markdown".into(),
                content: "hi".into(),
            })),
            "initial_message.content_type"
        );
        assert_eq!(
            start_field(|r| r.initial_message = Some(pb::InitialMessage {
                content_type: String::new(),
                content: "x".repeat(16_385),
            })),
            "initial_message.content"
        );
        assert_eq!(
            start_field(|r| r.chat_duration_minutes = 59),
            "chat_duration_minutes"
        );
        assert_eq!(
            start_field(|r| r.chat_duration_minutes = 10_081),
            "chat_duration_minutes"
        );
        assert_eq!(
            start_field(|r| r.client_token = "t".repeat(501)),
            "client_token"
        );
        assert_eq!(
            start_field(|r| r.instance_id = "unlisted".into()),
            "instance_id"
        );
        assert_eq!(
            start_field(|r| r.instance_id = "i".repeat(101)),
            "instance_id"
        );
        assert_eq!(
            start_field(|r| r.contact_flow_id = "unlisted".into()),
            "contact_flow_id"
        );
        assert_eq!(
            start_field(|r| r.contact_flow_id = "f".repeat(501)),
            "contact_flow_id"
        );
        let persistent = |id: &str, t: i32| pb::PersistentChat {
            source_contact_id: id.into(),
            rehydration_type: t,
        };
        assert_eq!(
            start_field(|r| r.persistent_chat = Some(persistent("", 1))),
            "persistent_chat.source_contact_id"
        );
        assert_eq!(
            start_field(|r| r.persistent_chat = Some(persistent("a b", 1))),
            "persistent_chat.source_contact_id"
        );
        assert_eq!(
            start_field(|r| r.persistent_chat = Some(persistent(&"c".repeat(257), 1))),
            "persistent_chat.source_contact_id"
        );
        assert_eq!(
            start_field(|r| r.persistent_chat = Some(persistent("c", 99))),
            "persistent_chat.rehydration_type"
        );
    }

    #[test]
    fn every_message_event_and_transcript_rule_names_its_field() {
        let msg = |content: &str, ct: &str, token: &str| pb::SendMessageRequest {
            content: content.into(),
            content_type: ct.into(),
            client_token: token.into(),
            ..Default::default()
        };
        assert_eq!(
            validate_send_message(&msg("hi", "", "")).unwrap(),
            TEXT_PLAIN
        );
        assert_eq!(field(validate_send_message(&msg("", "", ""))), "content");
        assert_eq!(
            field(validate_send_message(&msg(&"x".repeat(16_385), "", ""))),
            "content"
        );
        assert_eq!(
            field(validate_send_message(&msg("hi", "text/html", ""))),
            "content_type"
        );
        assert_eq!(
            field(validate_send_message(&msg("hi", "", &"t".repeat(501)))),
            "client_token"
        );

        let ev = |t: pb::EventType, id: &str| pb::SendEventRequest {
            r#type: t as i32,
            message_id: id.into(),
            ..Default::default()
        };
        assert_eq!(
            validate_send_event(&ev(pb::EventType::Typing, ""))
                .unwrap()
                .content_type,
            TYPING
        );
        let read = validate_send_event(&ev(pb::EventType::Read, "m1")).unwrap();
        assert_eq!(read.receipt, Some((ReceiptKind::Read, "m1".into())));
        assert_eq!(
            field(validate_send_event(&ev(pb::EventType::Unspecified, ""))),
            "type"
        );
        assert_eq!(
            field(validate_send_event(&ev(pb::EventType::Read, ""))),
            "message_id"
        );
        assert_eq!(
            field(validate_send_event(&ev(
                pb::EventType::Delivered,
                &"m".repeat(257)
            ))),
            "message_id"
        );
        assert_eq!(
            field(validate_send_event(&ev(pb::EventType::Delivered, "m\n1"))),
            "message_id"
        );
        let mut bad_type = ev(pb::EventType::Typing, "");
        bad_type.r#type = 42;
        assert_eq!(field(validate_send_event(&bad_type)), "type");

        let tr = |adjust: fn(&mut pb::GetTranscriptRequest)| {
            let mut r = pb::GetTranscriptRequest::default();
            adjust(&mut r);
            field(validate_transcript(&r))
        };
        assert_eq!(
            validate_transcript(&Default::default())
                .unwrap()
                .max_results,
            15
        );
        assert_eq!(tr(|r| r.page_size = 101), "page_size");
        assert_eq!(tr(|r| r.page_token = "p".repeat(1_001)), "page_token");
        assert_eq!(tr(|r| r.start_item_id = "i".repeat(257)), "start_item_id");
        assert_eq!(tr(|r| r.scan_direction = 9), "scan_direction");
        assert_eq!(tr(|r| r.sort_order = 9), "sort_order");
    }

    #[test]
    fn chat_references_name_their_field() {
        let r = |id: &str, token: &str| pb::ChatRef {
            contact_id: id.into(),
            chat_token: token.into(),
            ..Default::default()
        };
        assert_eq!(field(check_chat_ref(None, false)), "chat");
        assert_eq!(
            field(check_chat_ref(Some(&r("", "t")), false)),
            "chat.contact_id"
        );
        assert_eq!(
            field(check_chat_ref(Some(&r(&"c".repeat(257), "t")), false)),
            "chat.contact_id"
        );
        assert_eq!(
            field(check_chat_ref(Some(&r("c", "")), false)),
            "chat.chat_token"
        );
        assert_eq!(
            field(check_chat_ref(Some(&r("c", &"t".repeat(129))), false)),
            "chat.chat_token"
        );
        assert!(check_chat_ref(Some(&r("c", "")), true).is_ok());
    }
}

//! Property tests: hostile upstream frames and items, and hostile requests, never panic the
//! parsers or the validators. Bounded (a few hundred cases each) so CI stays fast.

use connect_chat_gateway::api::validate;
use connect_chat_gateway::api::ChatDefaults;
use connect_chat_gateway::connect::item::{to_event, Item};
use connect_chat_gateway::connect::socket::{self, Inbound};
use connect_chat_gateway::pb;
use proptest::prelude::*;
use std::collections::HashMap;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON values, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::hash_map(".{0,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: [&str; 14] = [
    "Id",
    "AbsoluteTime",
    "Content",
    "ContentType",
    "Type",
    "ParticipantId",
    "DisplayName",
    "ParticipantRole",
    "Attachments",
    "MessageMetadata",
    "ContactId",
    "MessageId",
    "Receipts",
    "ChunkNumber",
];

/// Items shaped like Connect's: known keys with values of any type.
fn item_like() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::vec((prop::sample::select(&KEYS[..]), json()), 0..10).prop_map(|kv| {
        let mut m = serde_json::Map::new();
        for (k, v) in kv {
            m.insert(k.to_string(), v);
        }
        serde_json::Value::Object(m)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_frame_parses_totally(text in ".{0,300}") {
        let _ = socket::parse(&text);
    }

    #[test]
    fn frames_with_any_topic_and_content_parse_totally(
        topic in prop_oneof![Just("aws/chat".to_string()), Just("aws/subscribe".to_string()), ".{0,20}"],
        content in json(),
        item in item_like(),
        as_string in any::<bool>(),
    ) {
        let content = if as_string { serde_json::Value::String(item.to_string()) } else { content };
        let frame = serde_json::json!({ "topic": topic, "content": content }).to_string();
        if let Inbound::Chat(item) = socket::parse(&frame) {
            prop_assert!(item.id.as_deref().is_some_and(|id| !id.is_empty()));
            let _ = to_event(&item);
        }
    }

    #[test]
    fn items_with_any_fields_parse_and_convert_totally(item in item_like()) {
        if let Ok(item) = Item::parse(item.to_string()) {
            let ev = to_event(&item);
            let _ = (item.dedupe_key(), item.is_chat_end(), item.is_ephemeral(), ev.event);
        }
    }

    #[test]
    fn start_requests_validate_totally(
        display_name in ".{0,300}",
        attributes in prop::collection::hash_map(".{0,140}", ".{0,64}", 0..8),
        content_types in prop::collection::vec(".{0,40}", 0..4),
        initial in proptest::option::of((".{0,40}", ".{0,64}")),
        duration in any::<u32>(),
        persistent in proptest::option::of((".{0,300}", any::<i32>())),
        ids in (".{0,120}", ".{0,520}"),
        client_token in ".{0,520}",
        options in (any::<i32>(), prop::collection::hash_map(".{0,140}", ".{0,16}", 0..4), ".{0,140}", ".{0,300}", any::<bool>()),
    ) {
        let req = pb::StartChatRequest {
            response_mode: options.0,
            segment_attributes: options.1.into_iter().collect::<HashMap<_, _>>(),
            customer_id: options.2,
            related_contact_id: options.3,
            disconnect_agent_on_customer_exit: options.4,
            display_name,
            attributes: attributes.into_iter().collect::<HashMap<_, _>>(),
            initial_message: initial.map(|(content_type, content)| pb::InitialMessage { content_type, content }),
            supported_content_types: content_types,
            chat_duration_minutes: duration,
            persistent_chat: persistent.map(|(source_contact_id, rehydration_type)| pb::PersistentChat { source_contact_id, rehydration_type }),
            client_token,
            instance_id: ids.0,
            contact_flow_id: ids.1,
        };
        let defaults = ChatDefaults { instance_id: "i".into(), contact_flow_id: "f".into(), ..ChatDefaults::default() };
        if let Ok(start) = validate::validate_start(req, &defaults) {
            prop_assert!(!start.display_name.trim().is_empty());
            prop_assert!(start.display_name.chars().count() <= validate::limits::DISPLAY_NAME);
            prop_assert!(start.content_types.iter().all(|c| connect_chat_gateway::connect::content_type::is_message(c)));
            prop_assert!(start.customer_id.as_ref().is_none_or(|c| c.chars().count() <= 128));
            prop_assert!(start.related_contact_id.is_none() || start.persistent_source.is_none());
        }
    }

    #[test]
    fn other_requests_validate_totally(
        content in ".{0,64}",
        content_type in ".{0,40}",
        kind in any::<i32>(),
        message_id in ".{0,300}",
        page_size in any::<u32>(),
        page_token in ".{0,64}",
        past_contact_id in ".{0,300}",
        directions in (any::<i32>(), any::<i32>()),
        chat in proptest::option::of((".{0,300}", ".{0,140}")),
    ) {
        let chat = chat.map(|(contact_id, chat_token)| pb::ChatRef { contact_id, chat_token, ..Default::default() });
        let _ = validate::validate_send_message(&pb::SendMessageRequest {
            chat: chat.clone(), content, content_type, client_token: String::new(),
        });
        let _ = validate::validate_send_event(&pb::SendEventRequest {
            chat: chat.clone(), r#type: kind, message_id, client_token: String::new(),
        });
        if let Ok(q) = validate::validate_transcript(&pb::GetTranscriptRequest {
            chat: chat.clone(),
            page_size,
            page_token,
            start_item_id: String::new(),
            scan_direction: directions.0,
            sort_order: directions.1,
            past_contact_id,
        }) {
            prop_assert!((1..=100).contains(&q.max_results));
            prop_assert!(q.contact_id.is_none_or(|c| (1..=256).contains(&c.len())));
        }
        let _ = validate::check_chat_ref(chat.as_ref(), false);
        let _ = validate::check_chat_ref(chat.as_ref(), true);
    }
}

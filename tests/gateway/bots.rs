//! Custom bots through the gateway: an allowed internal caller joins a live chat as a bot
//! (CreateParticipant), talks on its own session and socket, and leaves alone; callers the
//! operator did not allow are refused, whoever started the chat, and a bot's chat reference
//! and the customer's never open each other.

use crate::support::gateway::*;
use connect_chat_gateway::pb::{self, chat_event::Event};
use connect_chat_gateway::security::auth::{hash_api_key, parse_key_hash, ApiKey, Authenticator};
use connect_chat_gateway::security::SecurityOptions;
use connect_chat_gateway::sim::SimConfig;
use std::sync::Arc;
use tonic::{Code, Request};

const APP_KEY: &str = "app-key-0123456789";
const BOT_KEY: &str = "bot-key-0123456789";
const OTHER_KEY: &str = "other-key-0123456789";

fn key(name: &str, key: &str) -> ApiKey {
    ApiKey {
        name: name.into(),
        hash: parse_key_hash(&hash_api_key(key)).unwrap(),
    }
}

fn as_caller<T>(msg: T, api_key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-api-key", api_key.parse().unwrap());
    r
}

async fn harness() -> Harness {
    let auth = Authenticator {
        api_keys: vec![
            key("app", APP_KEY),
            key("bot", BOT_KEY),
            key("other", OTHER_KEY),
        ],
        bot_callers: ["key:bot".to_string()].into(),
        ..Default::default()
    };
    Harness::with_options(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        |o| {
            o.security = SecurityOptions {
                auth: Arc::new(auth),
                ..Default::default()
            }
        },
    )
    .await
}

fn add(contact_id: &str, client_token: &str) -> pb::AddBotParticipantRequest {
    pb::AddBotParticipantRequest {
        contact_id: contact_id.into(),
        display_name: "FAQ bot".into(),
        client_token: client_token.into(),
        ..Default::default()
    }
}

fn subscribe(chat: &pb::ChatRef) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        chat: Some(chat.clone()),
        from_start: true,
        ..Default::default()
    }
}

fn send(chat: &pb::ChatRef, text: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        chat: Some(chat.clone()),
        content: text.into(),
        ..Default::default()
    }
}

fn left_by(events: &[pb::ChatEvent], participant_id: &str) -> bool {
    events.iter().any(|e| {
        matches!(e.event, Some(Event::ParticipantLeft(_)))
            && e.sender
                .as_ref()
                .is_some_and(|s| s.participant_id == participant_id)
    })
}

/// A chat started by the customer app.
async fn start_as_app(h: &mut Harness) -> pb::StartChatResponse {
    h.client
        .start_chat(as_caller(
            pb::StartChatRequest {
                display_name: "Ada".into(),
                ..Default::default()
            },
            APP_KEY,
        ))
        .await
        .expect("StartChat")
        .into_inner()
}

#[tokio::test]
async fn a_bot_joins_talks_on_its_own_socket_and_leaves_alone() {
    let mut h = harness().await;
    let started = start_as_app(&mut h).await;
    let customer = chat_ref(&started);
    let mut customer_events = h
        .client
        .subscribe(as_caller(subscribe(&customer), APP_KEY))
        .await
        .expect("the customer's Subscribe")
        .into_inner();

    // Only the callers the operator allows add bots: neither a stranger nor the chat's own
    // caller may.
    for (who, k) in [
        ("a caller not allowed", OTHER_KEY),
        ("the chat's caller", APP_KEY),
    ] {
        let refused = h
            .client
            .add_bot_participant(as_caller(add(&started.contact_id, ""), k))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}: {refused:?}");
    }

    let bot = h
        .client
        .add_bot_participant(as_caller(add(&started.contact_id, "faq-1"), BOT_KEY))
        .await
        .expect("AddBotParticipant")
        .into_inner()
        .chat
        .expect("the bot's chat reference");
    assert_eq!(bot.contact_id, started.contact_id);
    assert!(!bot.participant_id.is_empty() && bot.participant_id != started.participant_id);
    assert!(!bot.chat_token.is_empty() && bot.chat_token != started.chat_token);
    let replay = h
        .client
        .add_bot_participant(as_caller(add(&started.contact_id, "faq-1"), BOT_KEY))
        .await
        .expect("AddBotParticipant again")
        .into_inner()
        .chat
        .unwrap();
    assert_eq!(
        replay.participant_id, bot.participant_id,
        "the same client token, the same bot"
    );

    // The bot's reference and the customer's do not open each other.
    let crossed = [
        pb::ChatRef {
            chat_token: started.chat_token.clone(),
            ..bot.clone()
        },
        pb::ChatRef {
            participant_id: String::new(),
            ..bot.clone()
        },
    ];
    for chat in crossed {
        let refused = h
            .client
            .get_chat(as_caller(
                pb::GetChatRequest {
                    chat: Some(chat.clone()),
                },
                BOT_KEY,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{chat:?}");
    }
    // The customer's own participant id names the customer's side.
    let own = h
        .client
        .get_chat(as_caller(
            pb::GetChatRequest {
                chat: Some(pb::ChatRef {
                    participant_id: started.participant_id.clone(),
                    ..customer.clone()
                }),
            },
            APP_KEY,
        ))
        .await
        .expect("GetChat with the customer's participant id")
        .into_inner();
    assert_eq!(own.participant_id, started.participant_id);

    let mut bot_events = Vec::new();
    for _ in 0..2 {
        bot_events.push(
            h.client
                .subscribe(as_caller(subscribe(&bot), BOT_KEY))
                .await
                .expect("the bot's Subscribe")
                .into_inner(),
        );
    }
    let joined = read_until(&mut customer_events, |seen| {
        seen.iter().any(|e| {
            matches!(e.event, Some(Event::ParticipantJoined(_)))
                && e.sender.as_ref().is_some_and(|s| {
                    s.participant_id == bot.participant_id
                        && s.role == pb::ParticipantRole::CustomBot as i32
                        && s.display_name == "FAQ bot"
                })
        })
    })
    .await;
    assert!(!joined.is_empty());

    let said = h
        .client
        .send_message(as_caller(
            send(&bot, "Hello, I can help with orders."),
            BOT_KEY,
        ))
        .await
        .expect("the bot's SendMessage")
        .into_inner();
    let seen = read_until(&mut customer_events, |seen| {
        !messages(seen, pb::ParticipantRole::CustomBot).is_empty()
    })
    .await;
    let from_bot = seen
        .iter()
        .find(|e| e.item_id == said.message_id)
        .expect("the bot's message, by its id");
    assert_eq!(
        from_bot.sender.as_ref().unwrap().participant_id,
        bot.participant_id
    );

    h.client
        .send_message(as_caller(send(&customer, "Where is my parcel?"), APP_KEY))
        .await
        .expect("the customer's SendMessage");
    for stream in &mut bot_events {
        let seen = read_until(stream, |seen| {
            customer_texts(seen).contains(&"Where is my parcel?".to_string())
        })
        .await;
        assert!(
            messages(&seen, pb::ParticipantRole::CustomBot)
                .contains(&"Hello, I can help with orders.".to_string()),
            "the bot's streams see its own message too"
        );
    }
    // Two streams of the bot share one socket: the customer's and the bot's are all.
    wait_for("one socket per participant", || {
        h.sim.open_sockets(&started.contact_id) == 2
    })
    .await;

    let push = h
        .client
        .register_push_notification(as_caller(
            pb::RegisterPushNotificationRequest {
                chat: Some(bot.clone()),
                device_token: "a1b2c3".into(),
                device_type: pb::DeviceType::Gcm as i32,
                ..Default::default()
            },
            BOT_KEY,
        ))
        .await
        .unwrap_err();
    assert_eq!(push.code(), Code::FailedPrecondition, "{push:?}");

    // The bot leaves: its streams end, the customer sees it go and chats on.
    h.client
        .end_chat(as_caller(
            pb::EndChatRequest {
                chat: Some(bot.clone()),
            },
            BOT_KEY,
        ))
        .await
        .expect("the bot's EndChat");
    for stream in &mut bot_events {
        let ended = tokio::time::timeout(WAIT, async {
            while let Some(ev) = stream.message().await.transpose() {
                ev.expect("the bot's stream ends with OK");
            }
        })
        .await;
        assert!(ended.is_ok(), "the bot's stream ends");
    }
    read_until(&mut customer_events, |seen| {
        left_by(seen, &bot.participant_id)
    })
    .await;
    h.client
        .send_message(as_caller(send(&customer, "still there?"), APP_KEY))
        .await
        .expect("the customer chats on after the bot left");
    let answered = read_until(&mut customer_events, |seen| {
        agent_texts(seen).iter().any(|t| t.contains("still there?"))
    })
    .await;
    assert!(!answered.is_empty());
    let state = h
        .client
        .get_chat(as_caller(
            pb::GetChatRequest {
                chat: Some(bot.clone()),
            },
            BOT_KEY,
        ))
        .await
        .expect("GetChat of the bot")
        .into_inner();
    assert_eq!(state.state, pb::ChatState::Ended as i32);
    h.stop().await;
}

#[tokio::test]
async fn adding_a_bot_is_refused_with_the_right_code() {
    let mut h = harness().await;
    let started = start_as_app(&mut h).await;
    let cases = [
        (add("no-such-contact", ""), Code::NotFound),
        (add("a/b", ""), Code::InvalidArgument),
        (
            pb::AddBotParticipantRequest {
                display_name: " ".into(),
                ..add(&started.contact_id, "")
            },
            Code::InvalidArgument,
        ),
        (
            pb::AddBotParticipantRequest {
                instance_id: "allowed-instance".into(),
                ..add(&started.contact_id, "")
            },
            Code::InvalidArgument,
        ),
    ];
    for (req, code) in cases {
        let status = h
            .client
            .add_bot_participant(as_caller(req.clone(), BOT_KEY))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{req:?}: {status:?}");
    }
    h.client
        .end_chat(as_caller(
            pb::EndChatRequest {
                chat: Some(chat_ref(&started)),
            },
            APP_KEY,
        ))
        .await
        .expect("EndChat");
    let ended = h
        .client
        .add_bot_participant(as_caller(add(&started.contact_id, ""), BOT_KEY))
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    h.stop().await;
}

//! Every event kind Connect sends arrives typed: pushed into the simulator as Connect would
//! send it, each comes out of Subscribe as its own oneof member; an unknown kind stays `raw`.

use crate::support::gateway::*;
use connect_chat_gateway::pb::{self, chat_event::Event};
use serde_json::json;

const EVENT: &str = "application/vnd.amazonaws.connect.event.";

fn kind(e: &Event) -> &'static str {
    match e {
        Event::ParticipantInvited(_) => "invited",
        Event::ParticipantActive(_) => "active",
        Event::ParticipantInactive(_) => "inactive",
        Event::ParticipantAutoDisconnected(_) => "autodisconnection",
        Event::DisplayNameUpdated(_) => "displayname",
        Event::ChatRehydrated(_) => "rehydrated",
        Event::WorkflowCancelled(_) => "workflow",
        Event::Authentication(_) => "authentication",
        Event::MessageProcessing(_) => "processing",
        Event::Raw(_) => "raw",
        _ => "other",
    }
}

#[tokio::test]
async fn every_connect_event_kind_arrives_typed() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut stream = h.subscribe(&chat).await;
    read_until(&mut stream, |e| {
        e.iter().any(|e| {
            matches!(e.event, Some(Event::ParticipantJoined(_)))
                && e.sender
                    .as_ref()
                    .is_some_and(|s| s.role == pb::ParticipantRole::Agent as i32)
        })
    })
    .await;
    let pushed = [
        ("participant.invited", "invited"),
        ("participant.active", "active"),
        ("participant.inactive", "inactive"),
        ("participant.autodisconnection", "autodisconnection"),
        ("participant.displayname.updated", "displayname"),
        ("chat.rehydrated", "rehydrated"),
        ("workflow.cancelled", "workflow"),
        ("something.new", "raw"),
    ];
    for (name, _) in pushed {
        h.sim
            .push_item(
                &chat.contact_id,
                json!({"Type": "EVENT", "ContentType": format!("{EVENT}{name}"), "ParticipantRole": "AGENT", "ParticipantId": "agent-1", "DisplayName": "Agent"}),
            )
            .unwrap();
    }
    h.sim
        .push_item(
            &chat.contact_id,
            json!({"Type": "EVENT", "ContentType": format!("{EVENT}authentication.initiated"), "Content": "{\"SessionId\":\"0b6b2a3e-8f41-4a57-9f0e-4c1d2e3f4a5b\"}", "ParticipantRole": "SYSTEM"}),
        )
        .unwrap();
    let sent = h.send(&chat, "card 4111").await;
    h.sim
        .push_item(
            &chat.contact_id,
            json!({"Type": "MESSAGEMETADATA", "ContentType": "application/vnd.amazonaws.connect.event.message.metadata", "MessageMetadata": {"MessageId": sent.message_id, "MessageProcessingStatus": "REJECTED"}}),
        )
        .unwrap();
    let events = read_until(&mut stream, |e| {
        e.iter()
            .any(|e| matches!(e.event, Some(Event::MessageProcessing(_))))
    })
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e.event.as_ref().map(kind))
        .filter(|k| *k != "other")
        .collect();
    let mut want: Vec<&str> = pushed.iter().map(|(_, k)| *k).collect();
    want.extend(["authentication", "processing"]);
    assert_eq!(kinds, want);
    let auth = events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::Authentication(a)) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(auth.state(), pb::AuthenticationState::Initiated);
    assert_eq!(auth.session_id, "0b6b2a3e-8f41-4a57-9f0e-4c1d2e3f4a5b");
    let processing = events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::MessageProcessing(m)) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(processing.message_id, sent.message_id);
    assert_eq!(processing.status(), pb::MessageProcessingStatus::Rejected);
    let invited = events
        .iter()
        .find(|e| matches!(e.event, Some(Event::ParticipantInvited(_))))
        .unwrap();
    assert_eq!(
        invited.sender.as_ref().unwrap().role(),
        pb::ParticipantRole::Agent
    );
    h.stop().await;
}

/// A streamed bot reply: three chunks of one item id, the last one completed and whole.
fn push_reply(h: &Harness, contact_id: &str) {
    for (n, content, completed) in [
        (1, "Hel", false),
        (2, "lo th", false),
        (3, "Hello there", true),
    ] {
        h.sim
            .push_item(
                contact_id,
                json!({"Id": "bot-reply-1", "Type": "MESSAGE", "ContentType": "text/plain", "Content": content,
                       "ParticipantRole": "SYSTEM", "DisplayName": "BOT",
                       "MessageMetadata": {"MessageId": "bot-reply-1", "ChunkNumber": n, "MessageCompleted": completed}}),
            )
            .unwrap();
    }
}

async fn subscribe_with(
    h: &mut Harness,
    chat: &pb::StartChatResponse,
    stitch: bool,
    progress: bool,
) -> tonic::Streaming<pb::ChatEvent> {
    h.client
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(chat)),
            stitch_bot_replies: stitch,
            bot_reply_progress: progress,
            ..Default::default()
        })
        .await
        .expect("Subscribe")
        .into_inner()
}

/// The bot reply's messages a stream delivers: (content, chunk number, completed).
async fn reply_messages(stream: &mut tonic::Streaming<pb::ChatEvent>) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    loop {
        let e = next(stream).await.expect("the stream goes on");
        if let Some(Event::Message(m)) = &e.event {
            if e.item_id == "bot-reply-1" {
                out.push((m.content.clone(), m.chunk_number, m.completed));
                if m.completed {
                    return out;
                }
            }
        }
    }
}

#[tokio::test]
async fn streamed_bot_replies_arrive_as_chunks_or_stitched() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut chunks = subscribe_with(&mut h, &chat, false, false).await;
    let mut stitched = subscribe_with(&mut h, &chat, true, false).await;
    let mut progress = subscribe_with(&mut h, &chat, true, true).await;
    for s in [&mut chunks, &mut stitched, &mut progress] {
        next(s).await.expect("started");
    }
    push_reply(&h, &chat.contact_id);
    let s = |v: &str| v.to_string();
    assert_eq!(
        reply_messages(&mut chunks).await,
        [
            (s("Hel"), 1, false),
            (s("lo th"), 2, false),
            (s("Hello there"), 3, true)
        ]
    );
    assert_eq!(
        reply_messages(&mut stitched).await,
        [(s("Hello there"), 0, true)]
    );
    assert_eq!(
        reply_messages(&mut progress).await,
        [
            (s("Hel"), 1, false),
            (s("Hello th"), 2, false),
            (s("Hello there"), 0, true)
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn from_start_replays_what_happened_before_the_subscribe() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let sent = h.send(&chat, "before anyone listened").await;
    // Once the transcript holds the agent's answer, it all happened before any Subscribe.
    wait_for("the agent's answer", || {
        h.sim.transcript(&chat.contact_id).is_some_and(|t| {
            t.iter()
                .any(|i| i["ParticipantRole"] == "AGENT" && i["Type"] == "MESSAGE")
        })
    })
    .await;
    let mut stream = h
        .client
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(&chat)),
            from_start: true,
            ..Default::default()
        })
        .await
        .expect("Subscribe")
        .into_inner();
    let events = read_until(&mut stream, |e| count_agent(e) >= 1).await;
    assert!(
        events.iter().any(|e| e.item_id == sent.message_id),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e.event, Some(Event::ParticipantJoined(_)))));
    // A stream resumed from the started event's cursor replays the same history.
    let first = events[0].cursor.clone();
    assert!(!first.is_empty());
    let mut again = h
        .client
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(&chat)),
            resume_cursor: first,
            ..Default::default()
        })
        .await
        .expect("Subscribe again")
        .into_inner();
    let replayed = read_until(&mut again, |e| count_agent(e) >= 1).await;
    let ids = |v: &[pb::ChatEvent]| {
        v.iter()
            .filter(|e| !e.item_id.is_empty())
            .map(|e| e.item_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&replayed), ids(&events));
    h.stop().await;
}

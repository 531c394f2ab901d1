//! End-to-end: a tonic client against the gateway, the gateway against the simulator through
//! the real SDK crates.

use crate::support::gateway::*;
use connect_chat_gateway::pb::{self, chat_event::Event};
use connect_chat_gateway::sim::{FaultKind, Operation};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn two_subscribers_share_one_socket_and_get_every_reply_once_in_order() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    assert!(!chat.contact_id.is_empty() && !chat.participant_id.is_empty());
    assert!(chat.chat_token.len() >= 32);
    let mut a = h.subscribe(&chat).await;
    let mut b = h.subscribe(&chat).await;
    let mut sent = Vec::new();
    for i in 1..=3 {
        let r = h.send(&chat, &format!("message {i}")).await;
        assert!(!r.message_id.is_empty() && r.time.is_some());
        sent.push(r.message_id);
    }
    let expected: Vec<String> = (1..=3).map(|i| format!("Agent: message {i}")).collect();
    for stream in [&mut a, &mut b] {
        let events = read_until(stream, |e| count_agent(e) >= 3).await;
        assert_eq!(agent_texts(&events), expected);
        let customer = customer_texts(&events);
        assert_eq!(customer, ["message 1", "message 2", "message 3"]);
        // The customer's messages come back with the ids SendMessage returned.
        let ids: Vec<&str> = events
            .iter()
            .filter(|e| matches!(&e.event, Some(Event::Message(_))))
            .filter(|e| {
                e.sender
                    .as_ref()
                    .is_some_and(|s| s.role == pb::ParticipantRole::Customer as i32)
            })
            .map(|e| e.item_id.as_str())
            .collect();
        assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>());
        // Every Connect event carries its id, time and a cursor.
        for e in events
            .iter()
            .filter(|e| !matches!(e.event, Some(Event::Upstream(_) | Event::Started(_))))
        {
            assert!(
                !e.item_id.is_empty() && e.time.is_some() && !e.cursor.is_empty(),
                "{e:?}"
            );
        }
    }
    assert_eq!(h.sim.open_sockets(&chat.contact_id), 1);
    let info = h
        .client
        .get_chat(pb::GetChatRequest {
            chat: Some(chat_ref(&chat)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, pb::ChatState::Active as i32);
    assert_eq!(info.upstream, pb::UpstreamState::Connected as i32);
    assert_eq!(info.subscribers, 2);
    assert_eq!(h.sim.calls(Operation::CreateParticipantConnection), 1);
    h.stop().await;
}

#[tokio::test]
async fn typing_and_receipts_flow_both_ways() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.client
        .send_event(pb::SendEventRequest {
            chat: Some(chat_ref(&chat)),
            r#type: pb::EventType::Typing as i32,
            ..Default::default()
        })
        .await
        .expect("typing");
    let sent = h.send(&chat, "hello").await;
    let events = read_until(&mut s, |e| count_agent(e) >= 1).await;
    // The agent read the customer's message and typed before replying.
    assert!(events
        .iter()
        .any(|e| matches!(&e.event, Some(Event::Read(r)) if r.message_id == sent.message_id)));
    assert!(events
        .iter()
        .any(|e| matches!(&e.event, Some(Event::Delivered(r)) if r.message_id == sent.message_id)));
    assert!(events
        .iter()
        .any(|e| matches!(e.event, Some(Event::Typing(_)))
            && e.sender
                .as_ref()
                .is_some_and(|p| p.role == pb::ParticipantRole::Agent as i32)));
    assert!(events
        .iter()
        .any(|e| matches!(e.event, Some(Event::ParticipantJoined(_)))));
    let reply = events
        .iter()
        .find(|e| matches!(&e.event, Some(Event::Message(m)) if m.content == "Agent: hello"))
        .unwrap();
    for t in [pb::EventType::Delivered, pb::EventType::Read] {
        let r = h
            .client
            .send_event(pb::SendEventRequest {
                chat: Some(chat_ref(&chat)),
                r#type: t as i32,
                message_id: reply.item_id.clone(),
                ..Default::default()
            })
            .await
            .expect("receipt")
            .into_inner();
        assert!(r.time.is_some());
    }
    let err = h
        .client
        .send_event(pb::SendEventRequest {
            chat: Some(chat_ref(&chat)),
            r#type: pb::EventType::Read as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("message_id"), "{}", err.message());
    h.stop().await;
}

#[tokio::test]
async fn transcript_pages_hold_every_message_once() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    for i in 1..=4 {
        h.send(&chat, &format!("m{i}")).await;
    }
    let live = read_until(&mut s, |e| count_agent(e) >= 4).await;
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = h
            .client
            .get_transcript(pb::GetTranscriptRequest {
                chat: Some(chat_ref(&chat)),
                page_size: 3,
                page_token: token,
                scan_direction: pb::ScanDirection::Backward as i32,
                sort_order: pb::SortOrder::Ascending as i32,
                ..Default::default()
            })
            .await
            .expect("GetTranscript")
            .into_inner();
        pages += 1;
        assert!(page.events.len() <= 3);
        // Backward pages: each page older than the one before.
        paged.splice(0..0, page.events);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    assert!(pages >= 3);
    let texts: Vec<String> = paged
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Message(m)) => Some(m.content.clone()),
            _ => None,
        })
        .collect();
    // Every message once, in the order the stream delivered them.
    let live_texts: Vec<String> = live
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Message(m)) => Some(m.content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, live_texts);
    assert_eq!(texts.len(), 8);
    // The transcript's items are the very items the stream delivered.
    for e in paged
        .iter()
        .filter(|e| matches!(e.event, Some(Event::Message(_))))
    {
        let same = live
            .iter()
            .find(|l| l.item_id == e.item_id)
            .expect("delivered live");
        assert_eq!(same.time, e.time);
    }
    let err = h
        .client
        .get_transcript(pb::GetTranscriptRequest {
            chat: Some(chat_ref(&chat)),
            page_size: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    h.stop().await;
}

#[tokio::test]
async fn end_chat_ends_streams_and_later_calls_fail_precondition() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "hi").await;
    read_until(&mut s, |e| count_agent(e) >= 1).await;
    h.client
        .end_chat(pb::EndChatRequest {
            chat: Some(chat_ref(&chat)),
        })
        .await
        .expect("EndChat");
    let rest = read_until(&mut s, |e| {
        e.iter()
            .any(|e| matches!(e.event, Some(Event::ChatEnded(_))))
    })
    .await;
    assert_eq!(
        rest.iter()
            .filter(|e| matches!(e.event, Some(Event::ChatEnded(_))))
            .count(),
        1
    );
    // The stream then ends with OK.
    assert!(next(&mut s).await.is_none());
    let err = h
        .client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "still there?".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let info = h
        .client
        .get_chat(pb::GetChatRequest {
            chat: Some(chat_ref(&chat)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, pb::ChatState::Ended as i32);
    assert_eq!(h.sim.chat_ended(&chat.contact_id), Some(true));
    h.stop().await;
}

#[tokio::test]
async fn agent_ending_the_chat_reaches_subscribers() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "bye").await;
    let events = read_until(&mut s, |e| {
        e.iter()
            .any(|e| matches!(e.event, Some(Event::ChatEnded(_))))
    })
    .await;
    assert_eq!(agent_texts(&events), ["Agent: bye"]);
    assert!(next(&mut s).await.is_none());
    h.stop().await;
}

#[tokio::test]
async fn bad_input_gets_documented_codes() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let send = |chat: pb::ChatRef, content: &str, ct: &str| pb::SendMessageRequest {
        chat: Some(chat),
        content: content.into(),
        content_type: ct.into(),
        ..Default::default()
    };
    let unknown = pb::ChatRef {
        contact_id: "no-such-contact".into(),
        chat_token: chat.chat_token.clone(),
        ..Default::default()
    };
    let e = h
        .client
        .send_message(send(unknown, "x", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let forged = pb::ChatRef {
        contact_id: chat.contact_id.clone(),
        chat_token: "forged".into(),
        ..Default::default()
    };
    let e = h
        .client
        .send_message(send(forged.clone(), "x", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = h
        .client
        .subscribe(pb::SubscribeRequest {
            chat: Some(forged),
            resume_cursor: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = h
        .client
        .send_message(send(chat_ref(&chat), "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "content"
    );
    // Connect's limit for text/plain is 1,024 characters (the model's 16,384 is only the
    // outer bound): refused by the gateway, before any upstream call.
    let sends = h.sim.calls(Operation::SendMessage);
    let e = h
        .client
        .send_message(send(chat_ref(&chat), &"x".repeat(1_025), ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("1024"), "{}", e.message());
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "content"
    );
    assert_eq!(h.sim.calls(Operation::SendMessage), sends);
    // Markdown is a Connect content type, but this chat did not list it.
    let e = h
        .client
        .send_message(send(chat_ref(&chat), "*hi*", "text/markdown"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("supported"), "{}", e.message());
    let e = h
        .client
        .send_message(send(chat_ref(&chat), "x", "image/png"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = h
        .client
        .send_message(pb::SendMessageRequest {
            content: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = h
        .client
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(&chat)),
            resume_cursor: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for bad in [
        pb::StartChatRequest {
            display_name: String::new(),
            ..Default::default()
        },
        pb::StartChatRequest {
            display_name: "x".repeat(257),
            ..Default::default()
        },
        pb::StartChatRequest {
            display_name: "A".into(),
            chat_duration_minutes: 59,
            ..Default::default()
        },
        pb::StartChatRequest {
            display_name: "A".into(),
            instance_id: "not-allowed".into(),
            ..Default::default()
        },
        pb::StartChatRequest {
            display_name: "A".into(),
            attributes: [("bad key".to_string(), "v".to_string())].into(),
            ..Default::default()
        },
        pb::StartChatRequest {
            display_name: "A".into(),
            supported_content_types: vec!["image/png".into()],
            ..Default::default()
        },
    ] {
        let e = h.client.start_chat(bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
    }
    // Nothing invalid reached Connect: one StartChatContact (the valid chat) and no SendMessage.
    assert_eq!(h.sim.calls(Operation::StartChatContact), 1);
    assert_eq!(h.sim.calls(Operation::SendMessage), 0);
    // A chat that lists markdown accepts it.
    let md = h
        .client
        .start_chat(pb::StartChatRequest {
            display_name: "Bo".into(),
            supported_content_types: vec!["text/markdown".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    h.client
        .send_message(send(chat_ref(&md), "*hi*", "text/markdown"))
        .await
        .expect("markdown");
    h.stop().await;
}

#[tokio::test]
async fn client_tokens_make_start_and_send_idempotent() {
    let mut h = Harness::start().await;
    let start = pb::StartChatRequest {
        display_name: "Ada".into(),
        client_token: "start-1".into(),
        ..Default::default()
    };
    let a = h
        .client
        .start_chat(start.clone())
        .await
        .unwrap()
        .into_inner();
    let b = h.client.start_chat(start).await.unwrap().into_inner();
    assert_eq!(a.contact_id, b.contact_id);
    // Both chat tokens work.
    for chat in [&a, &b] {
        h.client
            .get_chat(pb::GetChatRequest {
                chat: Some(chat_ref(chat)),
            })
            .await
            .expect("token valid");
    }
    let msg = pb::SendMessageRequest {
        chat: Some(chat_ref(&a)),
        content: "once".into(),
        client_token: "send-1".into(),
        ..Default::default()
    };
    let m1 = h
        .client
        .send_message(msg.clone())
        .await
        .unwrap()
        .into_inner();
    let m2 = h.client.send_message(msg).await.unwrap().into_inner();
    assert_eq!(m1.message_id, m2.message_id);
    let transcript = h.sim.transcript(&a.contact_id).unwrap();
    let copies = transcript.iter().filter(|i| i["Content"] == "once").count();
    assert_eq!(copies, 1);
    h.stop().await;
}

#[tokio::test]
async fn upstream_throttling_is_resource_exhausted_with_retry_info() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    // More failures than the SDK's three attempts.
    h.sim
        .fail_next(Operation::SendMessage, 3, FaultKind::Throttling);
    let e = h
        .client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .is_some());
    h.sim
        .fail_next(Operation::SendMessage, 3, FaultKind::InternalServer);
    let e = h
        .client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // Once the faults are spent, the same call succeeds.
    h.send(&chat, "x").await;
    h.stop().await;
}

#[tokio::test]
async fn dropped_socket_is_replaced_and_missed_messages_backfilled_once() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "before").await;
    read_until(&mut s, |e| count_agent(e) >= 1).await;
    // Refuse new sockets for a moment is not needed: messages pushed right after the drop
    // race the reconnect, and the backfill must cover whichever side loses.
    assert_eq!(h.sim.drop_sockets(Some(&chat.contact_id)), 1);
    for i in 0..5 {
        h.sim
            .agent_say(&chat.contact_id, &format!("while away {i}"))
            .unwrap();
    }
    h.send(&chat, "after").await;
    let events = read_until(&mut s, |e| {
        agent_texts(e).iter().any(|t| t == "Agent: after")
    })
    .await;
    let texts = agent_texts(&events);
    let expected: Vec<String> = (0..5)
        .map(|i| format!("while away {i}"))
        .chain(["Agent: after".to_string()])
        .collect();
    assert_eq!(texts, expected);
    assert_eq!(h.sim.open_sockets(&chat.contact_id), 1);
    h.stop().await;
}

#[tokio::test]
async fn health_and_both_reflection_versions_answer() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let h = Harness::start().await;
    let mut health = HealthClient::new(h.channel.clone());
    let r = health
        .check(HealthCheckRequest {
            service: "chatgateway.v1.ChatGateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient as V1,
        server_reflection_request::MessageRequest as R1,
        server_reflection_response::MessageResponse as S1, ServerReflectionRequest as Q1,
    };
    let mut v1 = V1::new(h.channel.clone());
    let req = Q1 {
        host: String::new(),
        message_request: Some(R1::ListServices(String::new())),
    };
    let mut resp = v1
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(S1::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!()
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "chatgateway.v1.ChatGateway"));

    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient as V1a,
        server_reflection_request::MessageRequest as Ra,
        server_reflection_response::MessageResponse as Sa, ServerReflectionRequest as Qa,
    };
    let mut va = V1a::new(h.channel.clone());
    let req = Qa {
        host: String::new(),
        message_request: Some(Ra::ListServices(String::new())),
    };
    let mut resp = va
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(Sa::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!()
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "chatgateway.v1.ChatGateway"));
    h.stop().await;
}

#[tokio::test]
async fn a_quiet_stream_gets_keepalives_with_its_cursor() {
    let mut h = Harness::with_options(
        connect_chat_gateway::sim::SimConfig {
            agent: fast_agent(),
            ..Default::default()
        },
        |o| o.defaults.keepalive_interval = std::time::Duration::from_millis(100),
    )
    .await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "hi").await;
    let events = read_until(&mut s, |e| count_agent(e) >= 1).await;
    let cursor = events.last().unwrap().cursor.clone();
    let keepalives = read_until(&mut s, |e| {
        e.iter()
            .filter(|e| matches!(e.event, Some(Event::Keepalive(_))))
            .count()
            >= 2
    })
    .await;
    for k in keepalives
        .iter()
        .filter(|e| matches!(e.event, Some(Event::Keepalive(_))))
    {
        assert_eq!(k.cursor, cursor);
    }
    h.stop().await;
}

#[tokio::test]
async fn a_persistent_chat_reads_its_past_contacts_transcripts() {
    let mut h = Harness::start().await;
    let first = h.start_chat("Ada").await;
    h.send(&first, "said in the first contact").await;
    h.client
        .end_chat(pb::EndChatRequest {
            chat: Some(chat_ref(&first)),
        })
        .await
        .expect("EndChat");
    let second = h
        .client
        .start_chat(pb::StartChatRequest {
            display_name: "Ada".into(),
            persistent_chat: Some(pb::PersistentChat {
                source_contact_id: first.contact_id.clone(),
                rehydration_type: pb::RehydrationType::FromSegment as i32,
            }),
            ..Default::default()
        })
        .await
        .expect("a persistent chat")
        .into_inner();
    let unrelated = h.start_chat("Grace").await;
    let transcript = |past: &str| pb::GetTranscriptRequest {
        chat: Some(chat_ref(&second)),
        page_size: 100,
        past_contact_id: past.into(),
        ..Default::default()
    };
    let past = h
        .client
        .get_transcript(transcript(&first.contact_id))
        .await
        .expect("the first contact's transcript")
        .into_inner();
    assert!(customer_texts(&past.events).contains(&"said in the first contact".to_string()));
    let own = h
        .client
        .get_transcript(transcript(""))
        .await
        .unwrap()
        .into_inner();
    assert!(customer_texts(&own.events).is_empty(), "{:?}", own.events);
    let e = h
        .client
        .get_transcript(transcript(&unrelated.contact_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    h.stop().await;
}

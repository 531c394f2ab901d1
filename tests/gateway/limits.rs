//! Limits end to end: each answers RESOURCE_EXHAUSTED (the request timeout
//! DEADLINE_EXCEEDED), and the upstream budgets keep Connect's small quotas: typing and
//! receipts per chat, and the global CreateParticipantConnection budget under a reconnect
//! storm.

use crate::support::gateway::*;
use connect_chat_gateway::pb;
use connect_chat_gateway::security::limits::Limits;
use connect_chat_gateway::security::SecurityOptions;
use connect_chat_gateway::sim::{Operation, SimConfig};
use std::time::{Duration, Instant};
use tonic::Code;

async fn harness(limits: Limits) -> Harness {
    Harness::with_options(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        |o| {
            o.security = SecurityOptions {
                limits,
                ..Default::default()
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_caller_over_its_rate_is_resource_exhausted_with_retry_info() {
    let mut h = harness(Limits {
        caller_rate: 1,
        caller_burst: 3,
        ..Limits::default()
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..10 {
        let r = h
            .client
            .get_chat(pb::GetChatRequest {
                chat: Some(pb::ChatRef {
                    contact_id: "unknown".into(),
                    chat_token: "t".into(),
                    ..Default::default()
                }),
            })
            .await;
        codes.push(r.map(|_| Code::Ok).unwrap_or_else(|e| e.code()));
    }
    assert_eq!(&codes[..3], [Code::NotFound; 3]);
    assert!(codes[3..].contains(&Code::ResourceExhausted), "{codes:?}");
    let e = h
        .client
        .get_chat(pb::GetChatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    assert!(e.get_details_retry_info().is_some());
    h.stop().await;
}

#[tokio::test]
async fn live_chats_per_caller_are_limited_and_ended_chats_free_their_slot() {
    let mut h = harness(Limits {
        max_chats_per_caller: 2,
        ..Limits::default()
    })
    .await;
    let a = h.start_chat("A").await;
    let _b = h.start_chat("B").await;
    let e = h
        .client
        .start_chat(pb::StartChatRequest {
            display_name: "C".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let starts = h.sim.calls(Operation::StartChatContact);
    h.client
        .end_chat(pb::EndChatRequest {
            chat: Some(chat_ref(&a)),
        })
        .await
        .expect("EndChat");
    h.start_chat("C").await;
    assert_eq!(h.sim.calls(Operation::StartChatContact), starts + 1);
    h.stop().await;
}

#[tokio::test]
async fn an_oversized_request_message_is_resource_exhausted() {
    let mut h = harness(Limits {
        max_message_bytes: 4096,
        ..Limits::default()
    })
    .await;
    let chat = h.start_chat("Ada").await;
    let e = h
        .client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "x".repeat(8192),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(h.sim.calls(Operation::SendMessage), 0);
    h.send(&chat, "small").await;
    h.stop().await;
}

#[tokio::test]
async fn a_call_past_the_request_timeout_is_deadline_exceeded() {
    let mut h = harness(Limits {
        request_timeout: Duration::from_millis(400),
        ..Limits::default()
    })
    .await;
    let chat = h.start_chat("Ada").await;
    // Connect would answer in an hour: any answer at all is the gateway's own timeout, and
    // its message says which one.
    h.sim.set_answer_delay(Duration::from_secs(3600));
    let e = tokio::time::timeout(
        WAIT,
        h.client.send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "slow".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("the gateway answers before Connect")
    .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("request timeout"), "{e:?}");
    let (_, metrics) = http_get(h.admin, "/metrics").await;
    assert!(
        metrics.contains(
            "chatgateway_grpc_calls_total{method=\"SendMessage\",code=\"DEADLINE_EXCEEDED\"} 1"
        ),
        "{metrics}"
    );
    h.sim.set_answer_delay(Duration::ZERO);
    h.stop().await;
}

#[tokio::test]
async fn calls_past_the_per_connection_limit_are_resource_exhausted_until_one_ends() {
    let mut h = harness(Limits {
        max_concurrent_streams: 2,
        ..Limits::default()
    })
    .await;
    let chat = h.start_chat("Ada").await;
    let mut s1 = h.subscribe(&chat).await;
    let mut s2 = h.subscribe(&chat).await;
    assert!(next(&mut s1).await.is_some() && next(&mut s2).await.is_some());
    let req = || pb::SubscribeRequest {
        chat: Some(chat_ref(&chat)),
        resume_cursor: String::new(),
        ..Default::default()
    };
    // A third stream, or any call, on the same connection is refused at once.
    let e = h.client.subscribe(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("calls open"), "{e:?}");
    let e = h
        .client
        .get_chat(pb::GetChatRequest {
            chat: Some(chat_ref(&chat)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Refused before any service saw them, and still counted.
    let (_, metrics) = http_get(h.admin, "/metrics").await;
    for method in ["Subscribe", "GetChat"] {
        let series = format!(
            "chatgateway_grpc_calls_total{{method=\"{method}\",code=\"RESOURCE_EXHAUSTED\"}} 1"
        );
        assert!(
            metrics.contains(&series),
            "{series} missing from:\n{metrics}"
        );
    }
    // Once a stream ends, its slot is free again (the reset reaches the gateway a moment
    // after the client drops the stream).
    drop(s1);
    let deadline = Instant::now() + WAIT;
    let mut s3 = loop {
        match h.client.subscribe(req()).await {
            Ok(s) => break s.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    Instant::now() < deadline,
                    "the ended stream's slot never freed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(next(&mut s3).await.is_some());
    drop((s2, s3));
    h.stop().await;
}

#[tokio::test]
async fn typing_goes_upstream_once_per_interval_and_receipts_once_per_message() {
    let mut h = harness(Limits {
        typing_interval: Duration::from_secs(3600),
        ..Limits::default()
    })
    .await;
    let chat = h.start_chat("Ada").await;
    let event = |t: pb::EventType, id: &str| pb::SendEventRequest {
        chat: Some(chat_ref(&chat)),
        r#type: t as i32,
        message_id: id.into(),
        client_token: String::new(),
    };
    let before = h.sim.calls(Operation::SendEvent);
    let mut forwarded = Vec::new();
    for _ in 0..5 {
        let r = h
            .client
            .send_event(event(pb::EventType::Typing, ""))
            .await
            .expect("typing answers OK")
            .into_inner();
        forwarded.push(!r.event_id.is_empty());
    }
    assert_eq!(forwarded, [true, false, false, false, false]);
    assert_eq!(h.sim.calls(Operation::SendEvent), before + 1);

    let m = h.sim.agent_say(&chat.contact_id, "hello").unwrap();
    let receipts = [
        (pb::EventType::Delivered, true),
        (pb::EventType::Delivered, false),
        (pb::EventType::Read, true),
        (pb::EventType::Read, false),
        (pb::EventType::Delivered, false),
    ];
    for (t, expect_forwarded) in receipts {
        let r = h
            .client
            .send_event(event(t, &m))
            .await
            .expect("receipt answers OK")
            .into_inner();
        assert_eq!(!r.event_id.is_empty(), expect_forwarded, "{t:?}");
        assert!(r.time.is_some());
    }
    assert_eq!(h.sim.calls(Operation::SendEvent), before + 3);
    h.stop().await;
}

#[tokio::test]
async fn a_reconnect_storm_stays_within_the_connection_budget() {
    const CHATS: usize = 50;
    const RATE: u32 = 25;
    const BURST: u32 = 5;
    let mut h = harness(Limits {
        connection_rate: RATE,
        connection_burst: BURST,
        ..Limits::default()
    })
    .await;
    let mut chats = Vec::new();
    for i in 0..CHATS {
        chats.push(h.start_chat(&format!("c{i}")).await);
    }
    let all_open = |h: &Harness| chats.iter().all(|c| h.sim.open_sockets(&c.contact_id) == 1);
    tokio::time::timeout(Duration::from_secs(30), async {
        while !all_open(&h) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every chat connects");

    let before = h.sim.calls(Operation::CreateParticipantConnection);
    let started = Instant::now();
    assert_eq!(h.sim.drop_sockets(None), CHATS);
    let mut peak_excess = 0.0f64;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let calls = (h.sim.calls(Operation::CreateParticipantConnection) - before) as f64;
            let allowed = f64::from(BURST) + f64::from(RATE) * started.elapsed().as_secs_f64();
            peak_excess = peak_excess.max(calls - allowed);
            if calls >= CHATS as f64 && all_open(&h) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every chat reconnects");
    let elapsed = started.elapsed().as_secs_f64();
    // Both checks hold however slow the machine is: a late sample only sees fewer calls
    // against a larger allowance, and a slow storm only takes longer. They fail only if the
    // budget lets calls through faster than its rate.
    // Never more calls than the bucket allowed at any moment (one of slack for sampling).
    assert!(peak_excess <= 1.0, "{peak_excess} calls over the budget");
    // And the storm was really paced: 50 reconnects cannot finish faster than the rate.
    let floor = (CHATS as f64 - f64::from(BURST)) / f64::from(RATE);
    assert!(elapsed >= floor * 0.9, "{elapsed:.2}s < {floor:.2}s");
    h.stop().await;
}

#[tokio::test]
async fn an_oversized_upstream_frame_is_counted_and_the_socket_recovers() {
    let mut h = harness(Limits {
        max_upstream_frame_bytes: 4096,
        ..Limits::default()
    })
    .await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    read_until(&mut s, |e| {
        e.iter()
            .any(|e| matches!(e.event, Some(pb::chat_event::Event::ParticipantJoined(_))))
    })
    .await;
    let rejected = || h.metrics.malformed_frames.get();
    let before = rejected();
    let connects = h.sim.calls(Operation::CreateParticipantConnection);
    h.sim
        .push_item(
            &chat.contact_id,
            serde_json::json!({
                "Type": "MESSAGE",
                "ContentType": "text/plain",
                "ParticipantRole": "AGENT",
                "Content": "x".repeat(10_000),
            }),
        )
        .unwrap();
    wait_for("the frame rejected", || rejected() > before).await;
    // The session reconnects and keeps delivering.
    wait_for("a reconnect", || {
        h.sim.calls(Operation::CreateParticipantConnection) > connects
    })
    .await;
    h.send(&chat, "still there?").await;
    read_until(&mut s, |e| {
        agent_texts(e).iter().any(|t| t == "Agent: still there?")
    })
    .await;
    h.stop().await;
}

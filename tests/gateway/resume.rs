//! Resumable Subscribe: a subscriber that comes back with its last cursor receives exactly
//! what it missed, from the session's history or from Connect's transcript; a subscriber
//! that falls behind is ended with its cursor and loses nothing by resuming.

use crate::support::gateway::*;
use connect_chat_gateway::pb::{self, chat_event::Event};
use connect_chat_gateway::sim::SimConfig;
use tonic::Code;

fn started(ev: &pb::ChatEvent) -> &pb::StreamStarted {
    match &ev.event {
        Some(Event::Started(s)) => s,
        other => panic!("the first event is not `started`: {other:?}"),
    }
}

async fn resume(
    h: &mut Harness,
    chat: &pb::StartChatResponse,
    cursor: &str,
) -> tonic::Streaming<pb::ChatEvent> {
    h.client
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(chat)),
            resume_cursor: cursor.into(),
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner()
}

/// Runs a chat where the subscriber leaves after `Agent: m1`, the agent says `n` more things
/// while it is away, and it resumes from its last cursor.
async fn leave_and_resume(h: &mut Harness, n: usize) {
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "m1").await;
    let seen = read_until(&mut s, |e| count_agent(e) >= 1).await;
    let cursor = seen.last().unwrap().cursor.clone();
    drop(s);
    for i in 0..n {
        h.sim
            .agent_say(&chat.contact_id, &format!("away {i}"))
            .unwrap();
    }
    h.sim.agent_say(&chat.contact_id, "last").unwrap();
    let mut r = resume(h, &chat, &cursor).await;
    let first = next(&mut r).await.unwrap();
    assert!(!started(&first).not_recovered);
    let events = read_until(&mut r, |e| agent_texts(e).iter().any(|t| t == "last")).await;
    let expected: Vec<String> = (0..n)
        .map(|i| format!("away {i}"))
        .chain(["last".to_string()])
        .collect();
    assert_eq!(agent_texts(&events), expected);
    assert!(
        customer_texts(&events).is_empty(),
        "nothing before the cursor is repeated"
    );
}

#[tokio::test]
async fn resume_inside_the_history_gets_exactly_what_was_missed() {
    let mut h = Harness::start().await;
    leave_and_resume(&mut h, 5).await;
    h.stop().await;
}

#[tokio::test]
async fn resume_beyond_the_history_reads_the_transcript() {
    let session = connect_chat_gateway::session::SessionSettings {
        history: 4,
        ..fast_session()
    };
    let mut h = Harness::with(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        session,
    )
    .await;
    leave_and_resume(&mut h, 30).await;
    h.stop().await;
}

#[tokio::test]
async fn a_session_rebuilt_after_idling_resumes_from_a_cursor() {
    let session = connect_chat_gateway::session::SessionSettings {
        idle_timeout: std::time::Duration::from_millis(100),
        ..fast_session()
    };
    let mut h = Harness::with(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        session,
    )
    .await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "m1").await;
    let seen = read_until(&mut s, |e| count_agent(e) >= 1).await;
    let cursor = seen.last().unwrap().cursor.clone();
    drop(s);
    // With no subscriber the session idles out and closes its socket; the chat goes on.
    wait_for("the socket closed", || {
        h.sim.open_sockets(&chat.contact_id) == 0
    })
    .await;
    h.sim.agent_say(&chat.contact_id, "after").unwrap();
    let mut r = resume(&mut h, &chat, &cursor).await;
    assert!(!started(&next(&mut r).await.unwrap()).not_recovered);
    let events = read_until(&mut r, |e| agent_texts(e).iter().any(|t| t == "after")).await;
    assert_eq!(agent_texts(&events), ["after"]);
    assert_eq!(h.sim.chat_ended(&chat.contact_id), Some(false));
    h.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_is_ended_with_its_cursor_and_resumes_without_loss() {
    let session = connect_chat_gateway::session::SessionSettings {
        subscriber_queue: 4,
        ..fast_session()
    };
    let mut h = Harness::with(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        session,
    )
    .await;
    let chat = h.start_chat("Ada").await;
    // The slow client's HTTP/2 windows are small, so what it does not read backs up into the
    // gateway instead of into the client's buffers.
    let slow_channel = tonic::transport::Channel::from_shared(format!("http://{}", h.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = pb::chat_gateway_client::ChatGatewayClient::new(slow_channel)
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(&chat)),
            resume_cursor: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut fast = h.subscribe(&chat).await;
    assert!(matches!(
        next(&mut slow).await.unwrap().event,
        Some(Event::Started(_))
    ));
    let big = "x".repeat(12_000);
    let n = 60;
    let mut got = Vec::new();
    for i in 0..n {
        h.sim
            .agent_say(&chat.contact_id, &format!("{i} {big}"))
            .unwrap();
        // The fast subscriber keeps up and is not held back by the slow one.
        got.extend(read_until(&mut fast, |e| count_agent(e) >= 1).await);
    }
    assert_eq!(count_agent(&got), n);
    // The slow one reads what it had, then the stream ends with RESOURCE_EXHAUSTED.
    let mut received = Vec::new();
    let status = loop {
        match tokio::time::timeout(WAIT, slow.message())
            .await
            .expect("progress")
        {
            Ok(Some(ev)) => received.push(ev),
            Ok(None) => panic!("the slow stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(h.metrics.slow_subscribers_ended.get(), 1);
    let cursor = status
        .metadata()
        .get("resume-cursor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            received
                .last()
                .map(|e| e.cursor.clone())
                .unwrap_or_default()
        });
    let last = received
        .iter()
        .rev()
        .find(|e| !e.cursor.is_empty())
        .map(|e| e.cursor.clone())
        .unwrap_or_default();
    assert_eq!(
        cursor, last,
        "the status names the last delivered event's cursor"
    );
    let mut r = resume(&mut h, &chat, &cursor).await;
    let rest = read_until(&mut r, |e| count_agent(&received) + count_agent(e) >= n).await;
    let all: Vec<String> = agent_texts(&received)
        .into_iter()
        .chain(agent_texts(&rest))
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("{i} {big}")).collect();
    assert_eq!(all, expected, "every message exactly once and in order");
    h.stop().await;
}

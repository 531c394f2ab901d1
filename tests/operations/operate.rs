//! Operability: metrics that move during a chat, health over HTTP, and a SIGTERM drain whose
//! Subscribe streams resume without loss on a new gateway process sharing the Redis store.

use crate::support::gateway::*;
use crate::support::metric;
use crate::support::procs::{GatewayProc, REDIS};
use connect_chat_gateway::pb::{self, chat_event::Event};
use connect_chat_gateway::sim::{SimConfig, Simulator};
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn metrics_move_during_a_chat_and_health_answers_over_http() {
    let mut h = Harness::start().await;
    assert_eq!(http_get(h.admin, "/healthz").await.0, 200);
    assert_eq!(http_get(h.admin, "/readyz").await.0, 200);
    let (status, before) = http_get(h.admin, "/metrics").await;
    assert_eq!(status, 200);
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "hi").await;
    read_until(&mut s, |e| count_agent(e) >= 1).await;
    h.sim.drop_sockets(Some(&chat.contact_id));
    h.send(&chat, "again").await;
    read_until(&mut s, |e| count_agent(e) >= 1).await;
    h.sim.fail_next(
        connect_chat_gateway::sim::Operation::SendMessage,
        3,
        connect_chat_gateway::sim::FaultKind::Throttling,
    );
    let e = h
        .client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let (_, after) = http_get(h.admin, "/metrics").await;
    for series in [
        "chatgateway_live_chats",
        "chatgateway_upstream_sockets",
        "chatgateway_subscribers",
        "chatgateway_events_received_total",
        "chatgateway_events_delivered_total",
        "chatgateway_grpc_calls_total{method=\"SendMessage\",code=\"OK\"}",
        "chatgateway_upstream_call_duration_seconds_count{operation=\"SendMessage\"}",
        "chatgateway_upstream_call_duration_seconds_count{operation=\"CreateParticipantConnection\"}",
        "chatgateway_reconnects_total",
        "chatgateway_upstream_errors_total{operation=\"SendMessage\",error=\"Throttled\"}",
        "chatgateway_grpc_calls_total{method=\"SendMessage\",code=\"RESOURCE_EXHAUSTED\"}",
    ] {
        assert!(
            metric(&after, series) > metric(&before, series),
            "{series} did not move:\n{after}"
        );
    }
    for listed in [
        "chatgateway_backfilled_items_total",
        "chatgateway_slow_subscribers_ended_total",
        "chatgateway_malformed_frames_total",
    ] {
        assert!(after.contains(listed), "{listed} missing");
    }
    h.stop().await;
}

#[tokio::test]
async fn sigterm_ends_streams_with_a_cursor_that_resumes_on_a_new_process() {
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let prefix = format!("ccg-test-{}-{}:", std::process::id(), rand::random::<u32>());
    let a = GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &[]);
    let mut client = a.client().await;
    let chat = client
        .start_chat(pb::StartChatRequest {
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut s = client
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(&chat)),
            resume_cursor: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "m1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    read_until(&mut s, |e| count_agent(e) >= 1).await;

    a.terminate();
    let status = loop {
        match tokio::time::timeout(WAIT, s.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended with OK, not UNAVAILABLE"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let cursor = status
        .metadata()
        .get("resume-cursor")
        .and_then(|v| v.to_str().ok())
        .expect("a resume cursor")
        .to_owned();
    assert!(a.wait_exit(Duration::from_secs(8)).success());
    // The drain closed the socket but did not end the chat.
    assert_eq!(sim.chat_ended(&chat.contact_id), Some(false));
    assert_eq!(sim.open_sockets(&chat.contact_id), 0);
    for i in 0..3 {
        sim.agent_say(&chat.contact_id, &format!("while moving {i}"))
            .unwrap();
    }

    let b = GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &[]);
    let mut client = b.client().await;
    let mut r = client
        .subscribe(pb::SubscribeRequest {
            chat: Some(chat_ref(&chat)),
            resume_cursor: cursor,
            ..Default::default()
        })
        .await
        .expect("the chat token works on the new process")
        .into_inner();
    let first = next(&mut r).await.unwrap();
    assert!(matches!(&first.event, Some(Event::Started(s)) if !s.not_recovered));
    let events = read_until(&mut r, |e| {
        agent_texts(e).iter().any(|t| t == "while moving 2")
    })
    .await;
    assert_eq!(
        agent_texts(&events),
        ["while moving 0", "while moving 1", "while moving 2"]
    );
    assert!(
        customer_texts(&events).is_empty(),
        "nothing before the cursor again"
    );
    b.terminate();
    assert!(b.wait_exit(Duration::from_secs(8)).success());
    sim.shutdown().await;
}

/// Replicas replaying StartChat and ending the chat at the same moment never lose each
/// other's updates in the shared store: every chat token survives (up to the four kept), and
/// the end sticks.
#[tokio::test]
async fn concurrent_updates_to_a_shared_record_are_all_kept() {
    use connect_chat_gateway::security::secret::{Secret, TokenHash};
    use connect_chat_gateway::store::{ChatRecord, RedisStore, SessionStore};
    use std::sync::Arc;
    use std::time::SystemTime;

    let prefix = format!("test-race-{}-{}:", std::process::id(), rand_suffix());
    let store = Arc::new(
        RedisStore::connect("redis://127.0.0.1:6379/0", &prefix, Duration::from_secs(60))
            .await
            .expect("Redis at 127.0.0.1:6379"),
    );
    let record = |id: &str, token: &str| ChatRecord {
        contact_id: id.into(),
        participant_id: "p".into(),
        participant_token: Secret::new("participant-token"),
        chat_token_hashes: vec![TokenHash::of(token)],
        content_types: vec!["text/plain".into()],
        started_at: SystemTime::now(),
        ended: false,
        owner: "key:ops".into(),
        instance_id: String::new(),
        bot: false,
    };
    for round in 0..20 {
        let id = format!("contact-{round}");
        store.upsert(record(&id, "t0")).await.unwrap();
        let mut tasks = Vec::new();
        for t in ["t1", "t2", "t3"] {
            let (store, r) = (store.clone(), record(&id, t));
            tasks.push(tokio::spawn(async move {
                store.upsert(r).await.unwrap();
            }));
        }
        let (s, i) = (store.clone(), id.clone());
        tasks.push(tokio::spawn(async move { s.mark_ended(&i).await.unwrap() }));
        for t in tasks {
            t.await.unwrap();
        }
        let stored = store.get(&id).await.unwrap().expect("the record");
        assert!(stored.ended, "round {round}: the end was lost");
        for t in ["t0", "t1", "t2", "t3"] {
            assert!(
                stored.token_matches(t),
                "round {round}: chat token {t} was lost"
            );
        }
        // A fifth token pushes out the oldest.
        let replayed = store.upsert(record(&id, "t4")).await.unwrap();
        assert!(replayed.token_matches("t4") && !replayed.token_matches("t0"));
        assert!(replayed.ended, "a replay brought an ended chat back");
        store.remove(&id).await.unwrap();
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

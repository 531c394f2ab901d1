//! Zero loss under upstream faults: each fault the simulator can inject, with the promise
//! checked as a user would — every agent message arrives once, in order.

use crate::support::gateway::*;
use connect_chat_gateway::pb::{self, chat_event::Event};
use connect_chat_gateway::session::SessionSettings;
use connect_chat_gateway::sim::{FaultKind, Operation, SimConfig};
use std::time::Duration;
use tonic::Code;

fn upstream_is(e: &pb::ChatEvent, state: pb::UpstreamState) -> bool {
    matches!(&e.event, Some(Event::Upstream(u)) if u.state == state as i32)
}

/// Says `n` agent lines and one final marker, and checks the stream gets exactly those after
/// whatever it had seen.
async fn agent_lines_arrive_once(
    h: &mut Harness,
    chat: &pb::StartChatResponse,
    s: &mut tonic::Streaming<pb::ChatEvent>,
    tag: &str,
    n: usize,
) {
    for i in 0..n {
        h.sim
            .agent_say(&chat.contact_id, &format!("{tag} {i}"))
            .unwrap();
    }
    h.sim
        .agent_say(&chat.contact_id, &format!("{tag} end"))
        .unwrap();
    let end = format!("{tag} end");
    let events = read_until(s, |e| agent_texts(e).contains(&end)).await;
    let expected: Vec<String> = (0..n).map(|i| format!("{tag} {i}")).chain([end]).collect();
    assert_eq!(agent_texts(&events), expected);
}

#[tokio::test]
async fn unanswered_heartbeats_mark_the_socket_dead_and_nothing_is_lost() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    agent_lines_arrive_once(&mut h, &chat, &mut s, "before", 1).await;
    h.sim.set_answer_heartbeats(false);
    read_until(&mut s, |e| {
        e.iter()
            .any(|e| upstream_is(e, pb::UpstreamState::Reconnecting))
    })
    .await;
    // Said while the gateway has no healthy socket.
    for i in 0..3 {
        h.sim
            .agent_say(&chat.contact_id, &format!("gap {i}"))
            .unwrap();
    }
    h.sim.set_answer_heartbeats(true);
    let events = read_until(&mut s, |e| agent_texts(e).iter().any(|t| t == "gap 2")).await;
    assert_eq!(agent_texts(&events), ["gap 0", "gap 1", "gap 2"]);
    agent_lines_arrive_once(&mut h, &chat, &mut s, "after", 2).await;
    assert_eq!(h.sim.open_sockets(&chat.contact_id), 1);
    h.stop().await;
}

#[tokio::test]
async fn throttled_and_failing_connection_calls_are_retried_with_backoff() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    agent_lines_arrive_once(&mut h, &chat, &mut s, "before", 1).await;
    let calls = h.sim.calls(Operation::CreateParticipantConnection);
    // Each reconnect attempt makes up to three SDK attempts: fail several attempts in a row.
    h.sim.fail_next(
        Operation::CreateParticipantConnection,
        4,
        FaultKind::Throttling,
    );
    h.sim.drop_sockets(Some(&chat.contact_id));
    h.sim.agent_say(&chat.contact_id, "while failing").unwrap();
    h.sim.fail_next(
        Operation::CreateParticipantConnection,
        4,
        FaultKind::InternalServer,
    );
    let events = read_until(&mut s, |e| {
        agent_texts(e).iter().any(|t| t == "while failing")
    })
    .await;
    assert_eq!(agent_texts(&events), ["while failing"]);
    assert!(h.sim.calls(Operation::CreateParticipantConnection) > calls + 4);
    agent_lines_arrive_once(&mut h, &chat, &mut s, "after", 2).await;
    assert_eq!(h.sim.open_sockets(&chat.contact_id), 1);
    h.stop().await;
}

#[tokio::test]
async fn expired_socket_urls_are_replaced() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    agent_lines_arrive_once(&mut h, &chat, &mut s, "before", 1).await;
    // Every URL handed out so far is dead; the reconnect must ask for a fresh one.
    h.sim.expire_socket_urls(Some(&chat.contact_id));
    h.sim.drop_sockets(Some(&chat.contact_id));
    agent_lines_arrive_once(&mut h, &chat, &mut s, "after", 3).await;
    h.stop().await;
}

#[tokio::test]
async fn expired_connection_tokens_are_refreshed_for_calls() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.sim.expire_connection_tokens(Some(&chat.contact_id));
    let sent = h.send(&chat, "with a fresh token").await;
    let events = read_until(&mut s, |e| {
        agent_texts(e)
            .iter()
            .any(|t| t == "Agent: with a fresh token")
    })
    .await;
    assert!(events.iter().any(|e| e.item_id == sent.message_id));
    h.stop().await;
}

#[tokio::test]
async fn concurrent_calls_meeting_an_expired_token_share_one_refresh() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "first").await;
    read_until(&mut s, |e| {
        agent_texts(e).iter().any(|t| t == "Agent: first")
    })
    .await;
    let connects = h.sim.calls(Operation::CreateParticipantConnection);
    h.sim.expire_connection_tokens(Some(&chat.contact_id));
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let mut client = h.client.clone();
            let chat = chat_ref(&chat);
            tokio::spawn(async move {
                client
                    .send_message(pb::SendMessageRequest {
                        chat: Some(chat),
                        content: format!("concurrent {i}"),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await
            .expect("task")
            .expect("SendMessage after the token expired");
    }
    // Fifty calls found the token refused; the session's actor replaced it once for all.
    assert_eq!(
        h.sim.calls(Operation::CreateParticipantConnection),
        connects + 1
    );
    h.stop().await;
}

#[tokio::test]
async fn a_drain_does_not_wait_for_connect_to_answer_a_reconnect() {
    // The drain may take 30 s; Harness::stop allows 10 s. A session whose reconnect waits
    // (up to 60 s) for Connect must stop at once, not when its connect gives up.
    let mut h = Harness::with_options(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        |o| {
            o.drain_grace = Duration::from_secs(30);
            o.session.connect_timeout = Duration::from_secs(60);
            o.session.reconnect_min = Duration::ZERO;
            o.session.reconnect_max = Duration::ZERO;
        },
    )
    .await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    h.send(&chat, "hello").await;
    read_until(&mut s, |e| {
        agent_texts(e).iter().any(|t| t == "Agent: hello")
    })
    .await;
    // Connect stops answering; the reconnect's CreateParticipantConnection waits.
    h.sim.set_answer_delay(Duration::from_secs(3600));
    h.sim.drop_sockets(Some(&chat.contact_id));
    wait_for("the reconnect's call to reach Connect", || {
        h.sim.answers_held() > 0
    })
    .await;
    let metrics = h.metrics.clone();
    h.stop().await;
    assert_eq!(metrics.live_chats.get(), 0, "the session's actor stopped");
}

#[tokio::test]
async fn connection_tokens_are_refreshed_before_they_expire() {
    // Tokens live 1.5 s and are refreshed 1 s before: about every half second, with no call
    // asking for it.
    let mut h = Harness::with_options(
        SimConfig {
            agent: fast_agent(),
            connection_token_ttl: Duration::from_millis(1500),
            ..SimConfig::default()
        },
        |o| o.session.token_refresh_margin = Duration::from_secs(1),
    )
    .await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    let first = h.sim.calls(Operation::CreateParticipantConnection);
    wait_for("three reconnects", || {
        h.sim.calls(Operation::CreateParticipantConnection) >= first + 3
    })
    .await;
    // Well past the first token's expiry, a call goes through, on the same socket.
    let sent = h.send(&chat, "still here").await;
    let events = read_until(&mut s, |e| {
        agent_texts(e).iter().any(|t| t == "Agent: still here")
    })
    .await;
    assert!(events.iter().any(|e| e.item_id == sent.message_id));
    assert!(!events
        .iter()
        .any(|e| upstream_is(e, pb::UpstreamState::Reconnecting)));
    assert_eq!(h.sim.open_sockets(&chat.contact_id), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_chat_that_ended_while_disconnected_ends_its_streams() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut s = h.subscribe(&chat).await;
    agent_lines_arrive_once(&mut h, &chat, &mut s, "before", 1).await;
    // Keep the gateway from reconnecting while the agent ends the chat.
    h.sim.fail_next(
        Operation::CreateParticipantConnection,
        6,
        FaultKind::InternalServer,
    );
    h.sim.drop_sockets(Some(&chat.contact_id));
    assert!(h.sim.end_chat(&chat.contact_id));
    let events = read_until(&mut s, |e| {
        e.iter()
            .any(|e| matches!(e.event, Some(Event::ChatEnded(_))))
    })
    .await;
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::ChatEnded(_))))
            .count(),
        1
    );
    assert!(next(&mut s).await.is_none(), "the stream ends with OK");
    let e = h
        .client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    h.stop().await;
}

#[tokio::test]
async fn planned_rotation_is_make_before_break_and_loses_nothing() {
    let session = SessionSettings {
        rotate_interval: Duration::from_millis(150),
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
    let before = h.sim.calls(Operation::CreateParticipantConnection);
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    // Talk across several rotations: each round waits for one more socket to be opened
    // while the agent is talking.
    let mut calls = before;
    for round in 0..5 {
        for i in 0..5 {
            let text = format!("r{round} {i}");
            h.sim.agent_say(&chat.contact_id, &text).unwrap();
            expected.push(text);
        }
        wait_for("a rotation", || {
            h.sim.calls(Operation::CreateParticipantConnection) > calls
        })
        .await;
        calls = h.sim.calls(Operation::CreateParticipantConnection);
        for i in 5..10 {
            let text = format!("r{round} {i}");
            h.sim.agent_say(&chat.contact_id, &text).unwrap();
            expected.push(text);
        }
        let last = expected.last().unwrap().clone();
        seen.extend(read_until(&mut s, |e| agent_texts(e).contains(&last)).await);
        assert!(
            h.sim.open_sockets(&chat.contact_id) <= 2,
            "never more than two sockets"
        );
    }
    assert_eq!(agent_texts(&seen), expected);
    assert!(
        h.sim.calls(Operation::CreateParticipantConnection) > before,
        "sockets were rotated"
    );
    // Subscribers never saw the rotation as an outage.
    assert!(!seen
        .iter()
        .any(|e| upstream_is(e, pb::UpstreamState::Reconnecting)));
    h.stop().await;
}

#[tokio::test]
async fn calls_honour_the_callers_deadline() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    wait_for("the session's socket", || {
        h.sim.open_sockets(&chat.contact_id) == 1
    })
    .await;
    // Throttled on every attempt, each answer a second late: the SDK's three attempts (and
    // their backoff) outlast the caller's two seconds, whatever the retry jitter. So the one
    // right answer is the README's "the caller's deadline passed while Connect was retried":
    // DEADLINE_EXCEEDED. (With prompt throttling answers the three attempts can all fail
    // inside the deadline, and RESOURCE_EXHAUSTED would be right instead.)
    h.sim
        .fail_next(Operation::SendMessage, 100, FaultKind::Throttling);
    h.sim.set_answer_delay(Duration::from_secs(1));
    let mut req = tonic::Request::new(pb::SendMessageRequest {
        chat: Some(chat_ref(&chat)),
        content: "x".into(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(2));
    let e = tokio::time::timeout(WAIT, h.client.send_message(req))
        .await
        .expect("an answer")
        .unwrap_err();
    // The gateway's own answer (its deadline is the caller's less a margin for the way
    // back), not tonic's server timeout, which would say CANCELLED.
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("deadline"), "{e:?}");
    h.sim.set_answer_delay(Duration::ZERO);
    h.sim
        .fail_next(Operation::SendMessage, 0, FaultKind::Throttling);
    h.stop().await;
}

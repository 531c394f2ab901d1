//! Every fault knob and control of the simulator handle, plus the admin HTTP API end to end.

use std::time::Duration;

use crate::support::sim::*;
use aws_sdk_connect::error::ProvideErrorMetadata as _;
use aws_sdk_connectparticipant::types::ConnectionType;
use connect_chat_gateway::sim::{Counters, FaultKind, Operation, SimConfig, SimError};
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn drop_sockets_closes_abruptly_and_reconnect_works() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let other = env.chat().await;
    let mut ws = open_socket(&chat.socket_url).await;
    let _other_ws = open_socket(&other.socket_url).await;
    assert_eq!(env.sim.drop_sockets(Some(&chat.contact_id)), 1);
    assert!(socket_ends(&mut ws).await);
    assert_eq!(env.sim.open_sockets(&chat.contact_id), 0);
    assert_eq!(env.sim.open_sockets(&other.contact_id), 1);
    // A fresh URL (or the same, while valid) reconnects.
    let (_, url) = env.connect_participant(&chat.participant_token).await;
    let mut ws = open_socket(&url).await;
    let id = env
        .sim
        .agent_say(&chat.contact_id, "after reconnect")
        .unwrap();
    assert_eq!(next_item(&mut ws).await.unwrap()["Id"], id.as_str());
    assert_eq!(env.sim.drop_sockets(None), 2);
    wait_for("gauge drops", || env.sim.counters().open_sockets == 0).await;
    env.sim.shutdown().await;
}

#[tokio::test]
async fn heartbeats_can_go_unanswered() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let mut ws = open_socket(&chat.socket_url).await;
    env.sim.set_answer_heartbeats(false);
    ws.send(Message::text(r#"{"topic":"aws/heartbeat"}"#))
        .await
        .unwrap();
    ws.send(Message::text(r#"{"topic":"aws/ping"}"#))
        .await
        .unwrap();
    // Client frames are handled in order: if the first answer is the notice for the garbage
    // frame, the heartbeat and the ping before it went unanswered.
    ws.send(Message::text("garbage")).await.unwrap();
    let notice = next_frame(&mut ws).await.unwrap();
    assert!(
        notice["message"].is_string(),
        "first answer is the notice for the garbage frame: {notice}"
    );
    env.sim.set_answer_heartbeats(true);
    ws.send(Message::text(r#"{"topic":"aws/heartbeat"}"#))
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut ws).await,
        Some(json!({"topic":"aws/heartbeat"}))
    );
    env.sim.shutdown().await;
}

#[tokio::test]
async fn frame_delay_delays_and_keeps_order() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let mut ws = open_socket(&chat.socket_url).await;
    let delay = Duration::from_millis(150);
    env.sim.set_frame_delay(delay);
    let started = tokio::time::Instant::now();
    let first = env.sim.agent_say(&chat.contact_id, "first").unwrap();
    let second = env.sim.agent_say(&chat.contact_id, "second").unwrap();
    // Control frames are not delayed.
    ws.send(Message::text(r#"{"topic":"aws/heartbeat"}"#))
        .await
        .unwrap();
    // The heartbeat's answer overtakes both items, sent before it: it was not held back.
    assert_eq!(next_frame(&mut ws).await.unwrap()["topic"], "aws/heartbeat");
    assert_eq!(next_item(&mut ws).await.unwrap()["Id"], first.as_str());
    assert!(started.elapsed() >= delay);
    assert_eq!(next_item(&mut ws).await.unwrap()["Id"], second.as_str());
    env.sim.set_frame_delay(Duration::ZERO);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn answer_delay_holds_every_operation_back() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let delay = Duration::from_millis(200);
    env.sim.set_answer_delay(delay);
    let started = tokio::time::Instant::now();
    let sent = send_text(&env.participant, &chat.connection_token, "slow")
        .await
        .expect("a slow answer is still an answer");
    assert!(started.elapsed() >= delay);
    // Through the admin API too: an hour holds a call back (it has no answer yet, and the
    // simulator has not run it)...
    let (s, _) = admin(
        &env,
        "POST",
        "/_sim/answer-delay",
        json!({"millis": 3_600_000}),
    )
    .await;
    assert_eq!(s, 200);
    let transcripts = env.sim.calls(Operation::GetTranscript);
    let held = tokio::spawn(
        env.participant
            .get_transcript()
            .connection_token(&chat.connection_token)
            .send(),
    );
    assert!(stays_for(Duration::from_millis(200), || !held.is_finished()).await);
    assert_eq!(env.sim.calls(Operation::GetTranscript), transcripts);
    // ...and 0 lifts it: a new call is answered at once rather than in an hour.
    let (s, _) = admin(&env, "POST", "/_sim/answer-delay", json!({"millis": 0})).await;
    assert_eq!(s, 200);
    tokio::time::timeout(
        WAIT,
        env.participant
            .get_transcript()
            .connection_token(&chat.connection_token)
            .send(),
    )
    .await
    .expect("answered without the delay")
    .unwrap();
    held.abort();
    assert!(env
        .transcript(&chat)
        .iter()
        .any(|i| i["Id"] == sent.id().unwrap()));
    env.sim.shutdown().await;
}

#[tokio::test]
async fn rate_quotas_throttle_calls_past_the_published_burst() {
    let env = start(SimConfig {
        rate_quotas: true,
        ..quiet_config()
    })
    .await;
    let chat = env.chat().await;
    // 40 SendMessage calls at once against 10/s with a burst of 15.
    let calls =
        (0..40).map(|i| send_text(&env.participant, &chat.connection_token, &format!("m{i}")));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in results.into_iter().filter_map(Result::err) {
        assert!(r.into_service_error().is_throttling_exception());
    }
    assert!((15..40).contains(&ok), "{ok} of 40 went through");
    // Each operation has its own bucket: GetTranscript still answers.
    env.participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .send()
        .await
        .expect("GetTranscript has its own quota");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn fail_next_maps_each_kind_to_the_typed_error() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let send = || send_text(&env.participant, &chat.connection_token, "x");
    env.sim
        .fail_next(Operation::SendMessage, 2, FaultKind::Throttling);
    for _ in 0..2 {
        assert!(send()
            .await
            .unwrap_err()
            .into_service_error()
            .is_throttling_exception());
    }
    send().await.expect("faults used up");
    env.sim
        .fail_next(Operation::SendMessage, 1, FaultKind::InternalServer);
    assert!(send()
        .await
        .unwrap_err()
        .into_service_error()
        .is_internal_server_exception());
    env.sim
        .fail_next(Operation::SendMessage, 1, FaultKind::AccessDenied);
    assert!(send()
        .await
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());
    assert_eq!(env.sim.calls(Operation::SendMessage), 5);

    env.sim
        .fail_next(Operation::GetTranscript, 1, FaultKind::Throttling);
    let e = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_throttling_exception());
    env.sim.fail_next(
        Operation::CreateParticipantConnection,
        1,
        FaultKind::InternalServer,
    );
    let e = env
        .participant
        .create_participant_connection()
        .participant_token(&chat.participant_token)
        .r#type(ConnectionType::Websocket)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_internal_server_exception());

    // StartChatContact: InternalServiceException is modelled; the others keep their code.
    env.sim
        .fail_next(Operation::StartChatContact, 1, FaultKind::InternalServer);
    let e = env
        .start_chat_request()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_internal_service_exception(), "{e:?}");
    env.sim
        .fail_next(Operation::StartChatContact, 1, FaultKind::Throttling);
    let e = env
        .start_chat_request()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("ThrottlingException"));
    env.sim
        .fail_next(Operation::StartChatContact, 1, FaultKind::AccessDenied);
    let e = env
        .start_chat_request()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("AccessDeniedException"));
    env.sim.shutdown().await;
}

#[tokio::test]
async fn sdk_retries_through_transient_faults() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let retrying = aws_sdk_connectparticipant::Client::from_conf(
        env.participant
            .config()
            .to_builder()
            .retry_config(
                aws_sdk_connectparticipant::config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .build(),
    );
    env.sim
        .fail_next(Operation::SendMessage, 2, FaultKind::InternalServer);
    send_text(&retrying, &chat.connection_token, "third time lucky")
        .await
        .expect("the third attempt succeeds");
    assert_eq!(env.sim.calls(Operation::SendMessage), 3);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn expired_connection_tokens_and_socket_urls() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    env.sim.expire_connection_tokens(Some(&chat.contact_id));
    let e = send_text(&env.participant, &chat.connection_token, "x").await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());
    let (fresh, url) = env.connect_participant(&chat.participant_token).await;
    send_text(&env.participant, &fresh, "x")
        .await
        .expect("a fresh token works");

    env.sim.expire_socket_urls(None);
    for stale in [&chat.socket_url, &url] {
        match tokio_tungstenite::connect_async(stale.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 403)
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }
    let (_, url) = env.connect_participant(&chat.participant_token).await;
    open_socket(&url).await;
    env.sim.shutdown().await;
}

#[tokio::test]
async fn end_chat_push_item_and_counters() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let mut ws = open_socket(&chat.socket_url).await;

    let pushed = env
        .sim
        .push_item(
            &chat.contact_id,
            json!({"Type":"MESSAGE","ContentType":"text/plain","Content":"from the flow","ParticipantRole":"SYSTEM"}),
        )
        .unwrap();
    assert!(pushed["Id"].is_string() && pushed["AbsoluteTime"].is_string());
    assert_eq!(next_item(&mut ws).await.unwrap(), pushed);
    assert_eq!(env.transcript(&chat).last(), Some(&pushed));
    let typing = env
        .sim
        .push_item(
            &chat.contact_id,
            json!({"Id":"t-1","Type":"TYPING","ContentType":CT_TYPING}),
        )
        .unwrap();
    assert_eq!(typing["Id"], "t-1");
    assert_eq!(next_item(&mut ws).await.unwrap(), typing);
    assert_ne!(
        env.transcript(&chat).last(),
        Some(&typing),
        "typing is not stored"
    );
    assert!(matches!(
        env.sim.push_item(&chat.contact_id, json!([1])),
        Err(SimError::InvalidItem(_))
    ));
    assert!(matches!(
        env.sim
            .push_item(&chat.contact_id, json!({"AbsoluteTime":"noon"})),
        Err(SimError::InvalidItem(_))
    ));
    assert_eq!(
        env.sim.agent_say("nope", "x"),
        Err(SimError::UnknownContact("nope".into()))
    );

    assert!(env.sim.end_chat(&chat.contact_id));
    let items = items_until(&mut ws, |i| content_type(i) == CT_ENDED).await;
    assert_eq!(content_type(&items[0]), CT_LEFT);
    assert_eq!(items[0]["ParticipantRole"], "AGENT");
    assert!(socket_ends(&mut ws).await);
    assert!(!env.sim.end_chat(&chat.contact_id), "already ended");
    assert!(!env.sim.end_chat("unknown"));
    assert_eq!(env.sim.chat_ended(&chat.contact_id), Some(true));
    assert_eq!(env.sim.chat_ended("unknown"), None);
    assert!(matches!(
        env.sim.agent_say(&chat.contact_id, "late"),
        Err(SimError::ChatEnded(_))
    ));

    let c: Counters = env.sim.counters();
    assert_eq!(c.chats_live, 0);
    assert_eq!(c.chats_ended, 1);
    assert_eq!(c.calls["StartChatContact"], 1);
    assert_eq!(c.calls["CreateParticipantConnection"], 1);
    assert!(c.items_pushed >= 5 && c.frames_sent >= 4, "{c:?}");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn slow_socket_is_closed() {
    let env = start(SimConfig {
        socket_queue: 4,
        ..quiet_config()
    })
    .await;
    let chat = env.chat().await;
    let mut ws = open_socket(&chat.socket_url).await;
    // No await in between: the socket task cannot drain its queue of 4.
    for i in 0..64 {
        env.sim
            .agent_say(&chat.contact_id, &format!("burst {i}"))
            .unwrap();
    }
    assert_eq!(env.sim.counters().sockets_closed_slow, 1);
    assert_eq!(env.sim.open_sockets(&chat.contact_id), 0);
    assert!(socket_ends(&mut ws).await);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_and_stops_serving() {
    let env = start(config()).await;
    let chat = env.chat().await;
    let mut ws = open_socket(&chat.socket_url).await;
    let addr = env.sim.local_addr();
    tokio::time::timeout(WAIT, env.sim.clone().shutdown())
        .await
        .expect("shutdown in time");
    assert!(socket_ends(&mut ws).await);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

async fn admin(env: &Env, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, _, bytes) = http(
        env.sim.local_addr(),
        method,
        path,
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn admin_api_end_to_end() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let mut ws = open_socket(&chat.socket_url).await;
    let c = chat.contact_id.as_str();

    let (s, counters) = admin(&env, "GET", "/_sim/counters", Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(counters["calls"]["StartChatContact"], 1);
    assert_eq!(counters["open_sockets"], 1);

    let (s, _) = admin(
        &env,
        "POST",
        "/_sim/faults",
        json!({"operation":"SendMessage","count":1,"kind":"AccessDenied"}),
    )
    .await;
    assert_eq!(s, 200);
    let e = send_text(&env.participant, &chat.connection_token, "x").await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());

    let (s, said) = admin(
        &env,
        "POST",
        &format!("/_sim/chats/{c}/say"),
        json!({"text":"hi from admin"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(next_item(&mut ws).await.unwrap()["Id"], said["id"]);
    let (s, item) = admin(
        &env,
        "POST",
        &format!("/_sim/chats/{c}/items"),
        json!({"Type":"MESSAGE","ContentType":"text/plain","Content":"raw"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(next_item(&mut ws).await.unwrap(), item);

    let (s, _) = admin(&env, "POST", "/_sim/heartbeats", json!({"answer": false})).await;
    assert_eq!(s, 200);
    ws.send(Message::text(r#"{"topic":"aws/ping"}"#))
        .await
        .unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert!(
        next_frame(&mut ws).await.unwrap()["message"].is_string(),
        "the ping went unanswered"
    );
    admin(&env, "POST", "/_sim/heartbeats", json!({"answer": true})).await;
    let (s, _) = admin(&env, "POST", "/_sim/frame-delay", json!({"millis": 0})).await;
    assert_eq!(s, 200);

    let (s, chat_state) = admin(&env, "GET", &format!("/_sim/chats/{c}"), Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(chat_state["ended"], false);
    assert_eq!(chat_state["open_sockets"], 1);
    assert_eq!(
        chat_state["transcript"].as_array().unwrap().last(),
        Some(&item)
    );

    let (s, dropped) = admin(&env, "POST", "/_sim/sockets/drop", json!({"contact_id": c})).await;
    assert_eq!((s, dropped["dropped"].as_u64()), (200, Some(1)));
    assert!(socket_ends(&mut ws).await);

    let (s, _) = admin(&env, "POST", "/_sim/expire/socket-urls", json!({})).await;
    assert_eq!(s, 200);
    assert!(tokio_tungstenite::connect_async(&chat.socket_url)
        .await
        .is_err());
    let (s, _) = admin(
        &env,
        "POST",
        "/_sim/expire/connection-tokens",
        json!({"contact_id": c}),
    )
    .await;
    assert_eq!(s, 200);
    let e = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());

    let (s, ended) = admin(&env, "POST", &format!("/_sim/chats/{c}/end"), Value::Null).await;
    assert_eq!((s, ended["ended"].as_bool()), (200, Some(true)));
    assert_eq!(env.sim.chat_ended(c), Some(true));

    // Errors.
    assert_eq!(
        admin(&env, "POST", "/_sim/chats/unknown/end", Value::Null)
            .await
            .0,
        404
    );
    assert_eq!(
        admin(
            &env,
            "POST",
            &format!("/_sim/chats/{c}/say"),
            json!({"text":"late"})
        )
        .await
        .0,
        409
    );
    assert_eq!(
        admin(&env, "POST", "/_sim/faults", json!({"operation":"Nope"}))
            .await
            .0,
        400
    );
    let (s, _, body) = http(env.sim.local_addr(), "POST", "/_sim/heartbeats", &[], b"{").await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&body).contains("message"));
    env.sim.shutdown().await;
}

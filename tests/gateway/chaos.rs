//! Chaos: dozens of chats exchange hundreds of messages each way while the simulator drops
//! sockets, stalls heartbeats, throttles and fails calls and expires tokens at random
//! (seeded, bounded in time). Every subscriber must receive every agent message exactly once
//! and in order, and every customer message must reach the transcript exactly once.
//!
//! The default run is small and seeded, part of every `cargo test`: 6 chats × 20 messages,
//! seed 7. The environment sizes it: CHAOS_CHATS (chats), CHAOS_MESSAGES (per chat and
//! direction), CHAOS_SEED (the monkey's seed). The full run, 24 chats × 100 messages:
//!
//! ```text
//! CHAOS_CHATS=24 CHAOS_MESSAGES=100 cargo test --test gateway chaos -- --nocapture
//! ```
//!
//! Whatever the size, the monkey acts at least [`MIN_FAULTS`] times before it stops.

use crate::support::gateway::*;
use connect_chat_gateway::pb::{self, chat_event::Event, chat_gateway_client::ChatGatewayClient};
use connect_chat_gateway::session::SessionSettings;
use connect_chat_gateway::sim::{AgentConfig, FaultKind, Operation, SimConfig};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

/// Chats of the default run.
const CHATS: u64 = 6;
/// Messages per chat and direction of the default run.
const MESSAGES: u64 = 20;
/// The monkey's seed of the default run.
const SEED: u64 = 7;
/// Faults the monkey injects at the least, however quickly the customers are done.
const MIN_FAULTS: u32 = 20;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `n` messages, retrying each with its own client token until Connect has it.
async fn customer(mut client: ChatGatewayClient<Channel>, chat: pb::ChatRef, n: usize) -> usize {
    let mut retries = 0;
    for i in 0..n {
        let req = pb::SendMessageRequest {
            chat: Some(chat.clone()),
            content: format!("c{i}"),
            client_token: format!("{}-c{i}", chat.contact_id),
            ..Default::default()
        };
        let mut attempts = 0;
        loop {
            match client.send_message(req.clone()).await {
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.code(),
                        Code::ResourceExhausted | Code::Unavailable | Code::DeadlineExceeded
                    ) =>
                {
                    attempts += 1;
                    retries += 1;
                    assert!(attempts < 50, "message {i} never got through: {e:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("SendMessage failed for good: {e:?}"),
            }
        }
    }
    retries
}

/// Reads a chat's stream, resuming with its cursor whenever the stream fails, until
/// `expected` agent messages arrived; returns their item ids in arrival order and the
/// number of resumes.
async fn subscriber(
    mut client: ChatGatewayClient<Channel>,
    chat: pb::ChatRef,
    expected: usize,
    mut first: Option<tonic::Streaming<pb::ChatEvent>>,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    let mut resumes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    'outer: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriber stalled with {} of {expected}",
            ids.len()
        );
        let stream = match first.take() {
            Some(s) => Ok(tonic::Response::new(s)),
            None => {
                client
                    .subscribe(pb::SubscribeRequest {
                        chat: Some(chat.clone()),
                        resume_cursor: cursor.clone(),
                    })
                    .await
            }
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(_) => {
                resumes += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(ev))) => {
                    if let Some(Event::Started(s)) = &ev.event {
                        assert!(!s.not_recovered, "a resume could not be recovered");
                    }
                    if !ev.cursor.is_empty() {
                        cursor = ev.cursor.clone();
                    }
                    let agent = ev
                        .sender
                        .as_ref()
                        .is_some_and(|s| s.role == pb::ParticipantRole::Agent as i32);
                    if agent && matches!(ev.event, Some(Event::Message(_))) {
                        ids.push(ev.item_id.clone());
                        if ids.len() >= expected {
                            break 'outer;
                        }
                    }
                }
                Ok(Ok(None)) => panic!("stream ended before the chat did"),
                Ok(Err(_)) => {
                    resumes += 1;
                    continue 'outer;
                }
                Err(_) => panic!("no event for 30 s with {} of {expected}", ids.len()),
            }
        }
    }
    (ids, resumes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_duplicates_and_reorders_nothing() {
    let chats = env("CHAOS_CHATS", CHATS) as usize;
    let messages = env("CHAOS_MESSAGES", MESSAGES) as usize;
    let seed = env("CHAOS_SEED", SEED);
    let sim = SimConfig {
        agent: AgentConfig {
            join_delay: Duration::from_millis(10),
            reply_delay: Duration::from_millis(5),
            typing: true,
            receipts: true,
            ..AgentConfig::default()
        },
        ..SimConfig::default()
    };
    let session = SessionSettings {
        heartbeat_interval: Duration::from_millis(300),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(300),
        ..fast_session()
    };
    let mut h = Harness::with_options(sim, |o| {
        o.session = session;
        // The monkey drops sockets far more often than any network: lift the budgets that
        // pace reconnects and callers in production, so the run measures loss, not pacing.
        o.security.limits.connection_rate = 0;
        o.security.limits.caller_rate = 0;
    })
    .await;
    let mut refs = Vec::new();
    for i in 0..chats {
        let chat = h.start_chat(&format!("customer {i}")).await;
        refs.push(chat_ref(&chat));
    }
    // Every chat has its subscriber before any message is sent.
    let mut subscribers = Vec::new();
    for c in &refs {
        let stream = h
            .client
            .subscribe(pb::SubscribeRequest {
                chat: Some(c.clone()),
                resume_cursor: String::new(),
            })
            .await
            .expect("subscribe")
            .into_inner();
        subscribers.push(tokio::spawn(subscriber(
            h.client.clone(),
            c.clone(),
            messages,
            Some(stream),
        )));
    }
    let senders: Vec<_> = refs
        .iter()
        .map(|c| tokio::spawn(customer(h.client.clone(), c.clone(), messages)))
        .collect();

    // The chaos monkey, seeded, until the customers are done and it did at least MIN_FAULTS
    // (at most two minutes).
    let done = Arc::new(AtomicBool::new(false));
    let monkey = {
        let sim = h.sim.clone();
        let ids: Vec<String> = refs.iter().map(|c| c.contact_id.clone()).collect();
        let done = done.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut actions = 0u32;
            let stop_at = tokio::time::Instant::now() + Duration::from_secs(120);
            while (actions < MIN_FAULTS || !done.load(Ordering::Relaxed))
                && tokio::time::Instant::now() < stop_at
            {
                let chat = &ids[rng.random_range(0..ids.len())];
                match rng.random_range(0..10) {
                    0..=2 => {
                        sim.drop_sockets(Some(chat));
                    }
                    3 => {
                        sim.drop_sockets(None);
                    }
                    4 => {
                        sim.set_answer_heartbeats(false);
                        tokio::time::sleep(Duration::from_millis(700)).await;
                        sim.set_answer_heartbeats(true);
                    }
                    5 | 6 => {
                        let op = [
                            Operation::SendMessage,
                            Operation::CreateParticipantConnection,
                            Operation::GetTranscript,
                        ][rng.random_range(0..3)];
                        let kind = if rng.random_bool(0.5) {
                            FaultKind::Throttling
                        } else {
                            FaultKind::InternalServer
                        };
                        sim.fail_next(op, rng.random_range(1..4), kind);
                    }
                    7 => sim.fail_next(Operation::SendMessage, 1, FaultKind::AccessDenied),
                    _ => sim.expire_connection_tokens(Some(chat)),
                }
                actions += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
            }
            // Leave the upstream healthy for the end of the run.
            sim.set_answer_heartbeats(true);
            for op in [
                Operation::SendMessage,
                Operation::CreateParticipantConnection,
                Operation::GetTranscript,
            ] {
                sim.fail_next(op, 0, FaultKind::Throttling);
            }
            actions
        })
    };
    let mut retries = 0;
    for s in senders {
        retries += s.await.expect("customer task");
    }
    done.store(true, Ordering::Relaxed);
    let actions = monkey.await.expect("monkey");

    let (mut delivered, mut lost, mut duplicated, mut reordered, mut resumes) = (0, 0, 0, 0, 0);
    let mut customer_once = 0;
    for (chat, sub) in refs.iter().zip(subscribers) {
        let (ids, r) = sub.await.expect("subscriber task");
        resumes += r;
        delivered += ids.len();
        let transcript = h.sim.transcript(&chat.contact_id).expect("chat known");
        let agent_ids: Vec<String> = transcript
            .iter()
            .filter(|i| i["Type"] == "MESSAGE" && i["ParticipantRole"] == "AGENT")
            .filter_map(|i| i["Id"].as_str().map(str::to_owned))
            .collect();
        let unique: HashSet<&String> = ids.iter().collect();
        duplicated += ids.len() - unique.len();
        lost += agent_ids.iter().filter(|id| !unique.contains(id)).count();
        if ids != agent_ids {
            reordered += usize::from(unique.len() == agent_ids.len());
        }
        for i in 0..messages {
            let text = format!("c{i}");
            let copies = transcript
                .iter()
                .filter(|it| {
                    it["ParticipantRole"] == "CUSTOMER"
                        && it["Type"] == "MESSAGE"
                        && it["Content"] == text.as_str()
                })
                .count();
            assert_eq!(
                copies, 1,
                "customer message {text} of {} is in the transcript {copies} times",
                chat.contact_id
            );
            customer_once += 1;
        }
    }
    let reconnects = h
        .sim
        .calls(Operation::CreateParticipantConnection)
        .saturating_sub(chats as u64);
    println!(
        "chaos: chats={chats} seed={seed} faults={actions} customer_sent={} customer_in_transcript_once={customer_once} \
         send_retries={retries} agent_sent={} delivered={delivered} lost={lost} duplicated={duplicated} \
         reordered={reordered} reconnects={reconnects} resumes={resumes}",
        chats * messages,
        chats * messages,
    );
    assert_eq!((lost, duplicated, reordered), (0, 0, 0));
    assert_eq!(delivered, chats * messages);
    assert!(
        actions >= MIN_FAULTS,
        "the monkey did too little to mean anything"
    );
    h.stop().await;
}

//! The chaos runs' clients, shared by the single-process and the cluster runs: customers
//! that retry each message with its own client token, subscribers that resume with their
//! cursor, and the tally of what reached whom.

use connect_chat_gateway::pb::{self, chat_event::Event, chat_gateway_client::ChatGatewayClient};
use connect_chat_gateway::sim::{FaultKind, Operation, SimHandle};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

/// Sends `n` messages, retrying each with its own client token until Connect has it.
pub async fn customer(
    mut client: ChatGatewayClient<Channel>,
    chat: pb::ChatRef,
    n: usize,
) -> usize {
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
pub async fn subscriber(
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
                        ..Default::default()
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

/// What a chaos run delivered, summed over its chats.
#[derive(Debug, Default)]
pub struct Tally {
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub reordered: usize,
    /// Customer messages found exactly once in their transcript.
    pub customer_once: usize,
}

/// Adds one chat: the agent message ids its subscriber received (`ids`) against the
/// transcript's, and checks that each of the `messages` customer messages is in the
/// transcript exactly once.
pub fn tally(
    t: &mut Tally,
    transcript: &[serde_json::Value],
    ids: &[String],
    messages: usize,
    contact_id: &str,
) {
    t.delivered += ids.len();
    let agent_ids: Vec<String> = transcript
        .iter()
        .filter(|i| i["Type"] == "MESSAGE" && i["ParticipantRole"] == "AGENT")
        .filter_map(|i| i["Id"].as_str().map(str::to_owned))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    t.duplicated += ids.len() - unique.len();
    t.lost += agent_ids.iter().filter(|id| !unique.contains(id)).count();
    if ids != agent_ids {
        t.reordered += usize::from(unique.len() == agent_ids.len());
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
            "customer message {text} of {contact_id} is in the transcript {copies} times"
        );
        t.customer_once += 1;
    }
}

/// The chaos monkey, seeded: drops sockets (one chat's or all), stalls heartbeats, throttles
/// and fails calls, refuses a token and expires tokens at random, until `done` is set and it
/// acted at least `min_faults` times (two minutes at most). Leaves the simulator healthy and
/// answers how many times it acted.
pub fn monkey(
    sim: SimHandle,
    ids: Vec<String>,
    seed: u64,
    min_faults: u32,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut actions = 0u32;
        let stop_at = tokio::time::Instant::now() + Duration::from_secs(120);
        while (actions < min_faults || !done.load(Ordering::Relaxed))
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
}

/// What a chaos run ended with.
pub struct Outcome {
    pub tally: Tally,
    pub send_retries: usize,
    pub faults: u32,
    pub resumes: usize,
}

/// Ends a chaos run: waits for the customers, stops the monkey, waits for the subscribers
/// and tallies each chat against its transcript.
pub async fn finish(
    sim: &SimHandle,
    chats: &[pb::ChatRef],
    senders: Vec<tokio::task::JoinHandle<usize>>,
    subscribers: Vec<tokio::task::JoinHandle<(Vec<String>, usize)>>,
    monkey: tokio::task::JoinHandle<u32>,
    done: &AtomicBool,
    messages: usize,
) -> Outcome {
    let mut send_retries = 0;
    for s in senders {
        send_retries += s.await.expect("customer task");
    }
    done.store(true, Ordering::Relaxed);
    let faults = monkey.await.expect("monkey");
    let mut tally_ = Tally::default();
    let mut resumes = 0;
    for (chat, sub) in chats.iter().zip(subscribers) {
        let (ids, r) = sub.await.expect("subscriber task");
        resumes += r;
        let transcript = sim.transcript(&chat.contact_id).expect("chat known");
        tally(&mut tally_, &transcript, &ids, messages, &chat.contact_id);
    }
    Outcome {
        tally: tally_,
        send_retries,
        faults,
        resumes,
    }
}

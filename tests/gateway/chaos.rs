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

use crate::support::chaos::{customer, finish, monkey, subscriber, Outcome, Tally};
use crate::support::gateway::*;
use connect_chat_gateway::pb;
use connect_chat_gateway::session::SessionSettings;
use connect_chat_gateway::sim::{AgentConfig, Operation, SimConfig};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

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
                ..Default::default()
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
    let ids: Vec<String> = refs.iter().map(|c| c.contact_id.clone()).collect();
    let monkey = monkey(h.sim.clone(), ids, seed, MIN_FAULTS, done.clone());
    let Outcome {
        tally: t,
        send_retries: retries,
        faults: actions,
        resumes,
    } = finish(&h.sim, &refs, senders, subscribers, monkey, &done, messages).await;
    let Tally {
        delivered,
        lost,
        duplicated,
        reordered,
        customer_once,
    } = t;
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

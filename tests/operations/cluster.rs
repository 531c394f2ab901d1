//! Cluster mode, measured from outside: three gateway processes on the simulator and a real
//! Redis (or a private Redis Cluster). One Connect socket and one CreateParticipantConnection
//! per contact whichever replica callers use; every subscriber on every replica sees the
//! same events in the same order with the same cursors; an owner killed with SIGKILL or
//! stopped with SIGTERM hands its chats over without loss, duplicates or reordering.

use crate::support::gateway::*;
use crate::support::metric;
use crate::support::procs::{unique_prefix, GatewayProc, RedisCluster, REDIS};
use connect_chat_gateway::pb::{self, chat_event::Event, chat_gateway_client::ChatGatewayClient};
use connect_chat_gateway::sim::{Operation, SimConfig, SimHandle, Simulator};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const LEASE_TTL: Duration = Duration::from_secs(2);

type Client = ChatGatewayClient<Channel>;
type Seen = Arc<Mutex<Vec<(Instant, pb::ChatEvent)>>>;

fn replicas(sim: &SimHandle, store: &str, prefix: &str, cluster: bool) -> Vec<GatewayProc> {
    // One caller drives every chat here: lift the per-caller rate, which the cluster shares.
    let mut extra = vec![
        "--lease-ttl",
        "2s",
        "--connection-rate",
        "200",
        "--caller-rate",
        "0",
    ];
    if cluster {
        extra.push("--store-cluster");
    }
    (0..3)
        .map(|_| GatewayProc::spawn(&sim.endpoint(), store, prefix, &extra))
        .collect()
}

async fn clients(procs: &[GatewayProc]) -> Vec<Client> {
    let mut out = Vec::new();
    for p in procs {
        out.push(p.client().await);
    }
    out
}

/// A Subscribe stream read in the background into a shared list, until it ends.
async fn subscribe(client: &mut Client, chat: &pb::StartChatResponse) -> Seen {
    let seen = read_stream(
        client,
        pb::SubscribeRequest {
            chat: Some(chat_ref(chat)),
            ..Default::default()
        },
    )
    .await;
    // The stream is live once its first event arrived.
    wait_for("the stream's first event", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    seen
}

fn texts(seen: &Seen, role: pb::ParticipantRole) -> Vec<String> {
    let events: Vec<pb::ChatEvent> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    match role {
        pb::ParticipantRole::Agent => agent_texts(&events),
        _ => customer_texts(&events),
    }
}

/// The (item id, cursor) of every item event from the first one with `from` text on.
fn positions(seen: &Seen, from: &str) -> Vec<(String, String)> {
    let seen = seen.lock().unwrap();
    let start = seen
        .iter()
        .position(|(_, e)| matches!(&e.event, Some(Event::Message(m)) if m.content == from))
        .expect("the first message arrived");
    seen[start..]
        .iter()
        .filter(|(_, e)| !e.item_id.is_empty())
        .map(|(_, e)| (e.item_id.clone(), e.cursor.clone()))
        .collect()
}

async fn one_socket_per_contact(store: &str, cluster: bool) {
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("cluster");
    let procs = replicas(&sim, store, &prefix, cluster);
    let mut clients = clients(&procs).await;
    const CHATS: usize = 20;
    let mut chats = Vec::new();
    for i in 0..CHATS {
        chats.push(start_chat(&mut clients[i % 3], &format!("c{i}")).await);
    }
    // A subscriber for every chat on every replica.
    let mut subs: Vec<Vec<Seen>> = Vec::new();
    for chat in &chats {
        let mut per_chat = Vec::new();
        for c in clients.iter_mut() {
            per_chat.push(subscribe(c, chat).await);
        }
        subs.push(per_chat);
    }
    // Three messages per chat, each through another replica; the agent answers each.
    for round in 0..3 {
        for (i, chat) in chats.iter().enumerate() {
            clients[(i + round) % 3]
                .send_message(pb::SendMessageRequest {
                    chat: Some(chat_ref(chat)),
                    content: format!("m{round}"),
                    ..Default::default()
                })
                .await
                .expect("SendMessage on any replica");
        }
    }
    for per_chat in &subs {
        for s in per_chat {
            wait_for(
                "three customer messages and three answers everywhere",
                || {
                    texts(s, pb::ParticipantRole::Customer).len() >= 3
                        && texts(s, pb::ParticipantRole::Agent).len() >= 3
                },
            )
            .await;
        }
    }
    for (chat, per_chat) in chats.iter().zip(&subs) {
        assert_eq!(
            sim.open_sockets(&chat.contact_id),
            1,
            "one socket for the contact"
        );
        let first = positions(&per_chat[0], "m0");
        assert!(first.len() >= 6, "{first:?}");
        for other in &per_chat[1..] {
            let theirs = positions(other, "m0");
            let n = first.len().min(theirs.len());
            assert_eq!(
                first[..n],
                theirs[..n],
                "the same events, order and cursors"
            );
        }
        assert_eq!(
            texts(&per_chat[0], pb::ParticipantRole::Customer),
            ["m0", "m1", "m2"]
        );
    }
    assert_eq!(
        sim.calls(Operation::CreateParticipantConnection),
        CHATS as u64,
        "one CreateParticipantConnection per contact"
    );
    // EndChat through a replica that does not own the chat ends it for every subscriber.
    clients[1]
        .end_chat(pb::EndChatRequest {
            chat: Some(chat_ref(&chats[0])),
        })
        .await
        .expect("EndChat on a replica without the socket");
    for s in &subs[0] {
        wait_for("the chat's end on every replica", || {
            s.lock()
                .unwrap()
                .iter()
                .any(|(_, e)| matches!(e.event, Some(Event::ChatEnded(_))))
        })
        .await;
    }
    wait_for("the ended chat's socket closed", || {
        sim.open_sockets(&chats[0].contact_id) == 0
    })
    .await;
    drop(procs);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_redis_hold_one_socket_per_contact() {
    one_socket_per_contact(REDIS, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_redis_cluster_hold_one_socket_per_contact() {
    let cluster = RedisCluster::start().await;
    one_socket_per_contact(&cluster.store_url(), true).await;
}

/// Chats owned by replica 0, subscribers on replicas 1 and 2, the agent talking all along;
/// replica 0 is then stopped by `stop`. Returns the longest time any stream waited for its
/// first message said after the stop.
async fn failover(stop: impl FnOnce(&mut GatewayProc)) -> Duration {
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("failover");
    let mut procs = replicas(&sim, REDIS, &prefix, false);
    let mut clients = clients(&procs).await;
    const CHATS: usize = 10;
    let mut chats = Vec::new();
    for i in 0..CHATS {
        chats.push(start_chat(&mut clients[0], &format!("f{i}")).await);
    }
    let mut subs = Vec::new();
    for chat in &chats {
        wait_for("the owner's socket", || {
            sim.open_sockets(&chat.contact_id) == 1
        })
        .await;
        subs.push([
            subscribe(&mut clients[1], chat).await,
            subscribe(&mut clients[2], chat).await,
        ]);
    }
    // The agent says a numbered line in every chat every 40 ms, before and after the stop.
    let said = Arc::new(Mutex::new(0usize));
    let talk = {
        let (sim, chats, said) = (sim.clone(), chats.clone(), said.clone());
        tokio::spawn(async move {
            for n in 0..60 {
                for chat in &chats {
                    sim.agent_say(&chat.contact_id, &format!("line {n}"))
                        .unwrap();
                }
                *said.lock().unwrap() = n + 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    wait_for("a third of the lines", || *said.lock().unwrap() >= 20).await;
    let stopped_at = Instant::now();
    let said_before = *said.lock().unwrap();
    stop(&mut procs[0]);
    talk.await.unwrap();
    let expected: Vec<String> = (0..60).map(|n| format!("line {n}")).collect();
    let mut worst = Duration::ZERO;
    for (chat, pair) in chats.iter().zip(&subs) {
        for s in pair {
            wait_for("every line on every surviving replica", || {
                texts(s, pb::ParticipantRole::Agent)
                    .iter()
                    .any(|t| t == "line 59")
            })
            .await;
            let lines: Vec<String> = texts(s, pb::ParticipantRole::Agent)
                .into_iter()
                .filter(|t| t.starts_with("line "))
                .collect();
            // What the subscriber saw from its first line on is the transcript's order,
            // with nothing lost or repeated.
            let first: usize = lines[0]["line ".len()..].parse().unwrap();
            assert_eq!(
                lines,
                expected[first..],
                "0 lost, 0 duplicated, 0 reordered"
            );
            let back = s
                .lock()
                .unwrap()
                .iter()
                .find(|(_, e)| {
                    matches!(&e.event, Some(Event::Message(m))
                        if m.content.strip_prefix("line ")
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| n > said_before))
                })
                .map(|(at, _)| at.duration_since(stopped_at))
                .expect("a line after the stop");
            worst = worst.max(back);
        }
        assert_eq!(
            sim.open_sockets(&chat.contact_id),
            1,
            "one socket after the take-over"
        );
        let transcript: Vec<String> = sim
            .transcript(&chat.contact_id)
            .unwrap()
            .iter()
            .filter_map(|i| i["Content"].as_str().map(str::to_owned))
            .filter(|t| t.starts_with("line "))
            .collect();
        assert_eq!(transcript, expected);
    }
    // The survivors own every chat between them, each chat once.
    let mut held = 0.0;
    for p in &procs[1..] {
        let (_, text) = http_get(p.admin, "/metrics").await;
        held += metric(&text, "chatgateway_leases_held");
    }
    assert_eq!(held, CHATS as f64, "leases held by the surviving replicas");
    drop(procs);
    sim.shutdown().await;
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_is_replaced_within_the_lease_ttl() {
    let worst = failover(|p| p.kill()).await;
    eprintln!("after SIGKILL of the owner, every stream was back within {worst:?}");
    assert!(
        worst <= LEASE_TTL + Duration::from_secs(1),
        "streams back after {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_chats_over_at_once() {
    let worst = failover(|p| p.terminate()).await;
    eprintln!("after SIGTERM of the owner, every stream was back within {worst:?}");
    assert!(
        worst <= Duration::from_secs(1),
        "streams back after {worst:?}"
    );
}

async fn grpc_health(p: &GatewayProc) -> i32 {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let channel = Channel::from_shared(format!("http://{}", p.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "chatgateway.v1.ChatGateway".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// Waits until the gateway's `/readyz` answers `code` and gRPC health says `status`.
async fn wait_readiness(p: &GatewayProc, code: u16, status: i32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, _) = http_get(p.admin, "/readyz").await;
        if got == code && grpc_health(p).await == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness stayed {got}, not {code}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_not_ready_and_starts_no_contact() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let port = crate::support::procs::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    // The gateway starts with nothing listening where its Redis should be.
    let gw = GatewayProc::spawn(&sim.endpoint(), &url, &unique_prefix("down"), &[]);
    wait_readiness(&gw, 503, ServingStatus::NotServing as i32).await;
    let mut client = gw.client().await;
    let refused = client
        .start_chat(pb::StartChatRequest {
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    use tonic_types::StatusExt;
    assert!(
        refused.get_details_retry_info().is_some(),
        "RetryInfo: {refused:?}"
    );
    assert_eq!(
        sim.calls(Operation::StartChatContact),
        0,
        "no contact started that nothing could track"
    );

    // Redis comes up: ready, and chats start.
    let mut redis = crate::support::procs::RedisServer::start(port).await;
    wait_readiness(&gw, 200, ServingStatus::Serving as i32).await;
    let chat = start_chat(&mut client, "Ada").await;
    let seen = subscribe(&mut client, &chat).await;
    client
        .send_message(pb::SendMessageRequest {
            chat: Some(chat_ref(&chat)),
            content: "hello".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for("the answer", || {
        !texts(&seen, pb::ParticipantRole::Agent).is_empty()
    })
    .await;

    // Redis goes away again: not ready, and calls say UNAVAILABLE.
    redis.stop();
    wait_readiness(&gw, 503, ServingStatus::NotServing as i32).await;
    let status = client
        .get_chat(pb::GetChatRequest {
            chat: Some(chat_ref(&chat)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop(gw);
    sim.shutdown().await;
}

/// The chaos run across replicas: chats started on replica 0 (their owner), customers
/// sending through replica 1, subscribers reading on replica 2, while the monkey drops
/// sockets, throttles, fails calls and expires tokens, and replica 0 is killed halfway.
/// Every agent message reaches its subscriber once and in order; every customer message is
/// in the transcript once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_chaos_with_an_owner_killed_loses_nothing() {
    use crate::support::chaos::{customer, finish, monkey, subscriber, Outcome};
    use std::sync::atomic::AtomicBool;
    const CHATS: usize = 6;
    const MESSAGES: usize = 20;
    let sim = Simulator::start(SimConfig {
        agent: connect_chat_gateway::sim::AgentConfig {
            join_delay: Duration::from_millis(10),
            reply_delay: Duration::from_millis(5),
            ..Default::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("chaos");
    let extra = [
        "--lease-ttl",
        "2s",
        "--connection-rate",
        "0",
        "--caller-rate",
        "0",
        "--reconnect-min",
        "20ms",
        "--reconnect-max",
        "300ms",
        "--upstream-timeout",
        "3s",
    ];
    let mut procs: Vec<GatewayProc> = (0..3)
        .map(|_| GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &extra))
        .collect();
    let mut clients = clients(&procs).await;
    let mut refs = Vec::new();
    for i in 0..CHATS {
        refs.push(chat_ref(
            &start_chat(&mut clients[0], &format!("chaos {i}")).await,
        ));
    }
    let mut subscribers = Vec::new();
    for c in &refs {
        let stream = clients[2]
            .subscribe(pb::SubscribeRequest {
                chat: Some(c.clone()),
                resume_cursor: String::new(),
                ..Default::default()
            })
            .await
            .expect("subscribe")
            .into_inner();
        subscribers.push(tokio::spawn(subscriber(
            clients[2].clone(),
            c.clone(),
            MESSAGES,
            Some(stream),
        )));
    }
    let senders: Vec<_> = refs
        .iter()
        .map(|c| tokio::spawn(customer(clients[1].clone(), c.clone(), MESSAGES)))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let ids: Vec<String> = refs.iter().map(|c| c.contact_id.clone()).collect();
    let monkey = monkey(sim.clone(), ids, 11, 20, done.clone());
    // Halfway through the customers' messages, the owner of every chat dies.
    wait_for("half of the customer messages", || {
        refs.iter().all(|c| {
            sim.transcript(&c.contact_id).is_some_and(|t| {
                t.iter()
                    .filter(|i| i["ParticipantRole"] == "CUSTOMER" && i["Type"] == "MESSAGE")
                    .count()
                    >= MESSAGES / 2
            })
        })
    })
    .await;
    procs[0].kill();
    let Outcome {
        tally: t,
        send_retries: retries,
        faults,
        resumes,
    } = finish(&sim, &refs, senders, subscribers, monkey, &done, MESSAGES).await;
    let connections = sim.calls(Operation::CreateParticipantConnection);
    println!(
        "cluster chaos: chats={CHATS} faults={faults} owner_killed=1 delivered={} lost={} \
         duplicated={} reordered={} send_retries={retries} resumes={resumes} \
         create_participant_connection={connections}",
        t.delivered, t.lost, t.duplicated, t.reordered
    );
    assert_eq!((t.lost, t.duplicated, t.reordered), (0, 0, 0));
    assert_eq!(t.delivered, CHATS * MESSAGES);
    assert_eq!(t.customer_once, CHATS * MESSAGES);
    for c in &refs {
        wait_for("one socket per chat after the chaos", || {
            sim.open_sockets(&c.contact_id) == 1
        })
        .await;
    }
    drop(procs);
    sim.shutdown().await;
}

/// Redis lost the shared connection token (an eviction, a failover): a replica without it
/// asks the owner, which shares it again, and the call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shared_token_is_shared_again() {
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("token");
    let owner = GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &["--lease-ttl", "2s"]);
    let mut a = owner.client().await;
    let chat = start_chat(&mut a, "Ada").await;
    let seen = subscribe(&mut a, &chat).await;
    wait_for("the owner's socket", || {
        sim.open_sockets(&chat.contact_id) == 1
    })
    .await;
    let redis = redis::Client::open(REDIS).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}conn:{{{}}}", chat.contact_id);
    let deadline = tokio::time::Instant::now() + WAIT;
    let sealed = loop {
        let sealed: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(s) = sealed {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the owner never shared its token"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        sealed.starts_with("s1.test."),
        "sealed with the configured key"
    );
    let deleted: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let other = GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &["--lease-ttl", "2s"]);
    let mut b = other.client().await;
    b.send_message(pb::SendMessageRequest {
        chat: Some(chat_ref(&chat)),
        content: "through the other replica".into(),
        ..Default::default()
    })
    .await
    .expect("the token is shared again");
    wait_for("the message on the owner's stream", || {
        texts(&seen, pb::ParticipantRole::Customer) == ["through the other replica"]
    })
    .await;
    assert_eq!(sim.calls(Operation::CreateParticipantConnection), 1);
    drop((owner, other));
    sim.shutdown().await;
}

/// The budgets hold for the cluster, not per replica: a caller's live chats, typing once
/// per interval per chat, one receipt per message, and a caller's requests per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_across_replicas() {
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("budgets");
    let flags = ["--max-chats-per-caller", "2", "--typing-interval", "10s"];
    let procs: Vec<GatewayProc> = (0..2)
        .map(|_| GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &flags))
        .collect();
    let mut c = clients(&procs).await;
    let first = start_chat(&mut c[0], "one").await;
    let second = start_chat(&mut c[1], "two").await;
    for client in c.iter_mut() {
        let refused = client
            .start_chat(pb::StartChatRequest {
                display_name: "three".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
    }
    assert_eq!(
        sim.calls(Operation::StartChatContact),
        2,
        "no quota spent on refusals"
    );
    // Ending a chat on one replica frees the caller's slot on the other.
    c[1].end_chat(pb::EndChatRequest {
        chat: Some(chat_ref(&first)),
    })
    .await
    .unwrap();
    let third = start_chat(&mut c[0], "three").await;
    assert_ne!(third.contact_id, first.contact_id);

    // Typing through both replicas within the interval: Connect sees it once.
    let before = sim.calls(Operation::SendEvent);
    for client in c.iter_mut() {
        client
            .send_event(pb::SendEventRequest {
                chat: Some(chat_ref(&second)),
                r#type: pb::EventType::Typing as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(
        sim.calls(Operation::SendEvent) - before,
        1,
        "typing once per interval"
    );
    // A read receipt for one message through both replicas: once.
    let seen = subscribe(&mut c[0], &second).await;
    c[0].send_message(pb::SendMessageRequest {
        chat: Some(chat_ref(&second)),
        content: "hi".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_for("the agent's answer", || {
        !texts(&seen, pb::ParticipantRole::Agent).is_empty()
    })
    .await;
    let answer = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(_, e)| {
            matches!(e.event, Some(Event::Message(_)))
                && e.sender
                    .as_ref()
                    .is_some_and(|s| s.role == pb::ParticipantRole::Agent as i32)
        })
        .map(|(_, e)| e.item_id.clone())
        .unwrap();
    let before = sim.calls(Operation::SendEvent);
    for client in c.iter_mut() {
        client
            .send_event(pb::SendEventRequest {
                chat: Some(chat_ref(&second)),
                r#type: pb::EventType::Read as i32,
                message_id: answer.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(
        sim.calls(Operation::SendEvent) - before,
        1,
        "one read receipt per message"
    );
    drop(procs);
    sim.shutdown().await;
}

/// A caller's request rate is one budget for the cluster: 5 a second, whichever replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_rate_holds_across_replicas() {
    use tonic_types::StatusExt;
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let prefix = unique_prefix("rate");
    // Each replica alone would allow a burst of 100.
    let flags = ["--caller-rate", "5", "--caller-burst", "100"];
    let procs: Vec<GatewayProc> = (0..2)
        .map(|_| GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &flags))
        .collect();
    let mut c = clients(&procs).await;
    let mut refused = Vec::new();
    // 14 calls within a second or two reach at most two windows of 5.
    for i in 0..14 {
        match c[i % 2]
            .get_chat(pb::GetChatRequest {
                chat: Some(pb::ChatRef {
                    contact_id: "no-such-chat".into(),
                    chat_token: "t".into(),
                    ..Default::default()
                }),
            })
            .await
        {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => refused.push(s),
            Err(s) => assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}"),
            Ok(_) => panic!("an unknown chat was found"),
        }
    }
    assert!(refused.len() >= 4, "only {} of 14 refused", refused.len());
    assert!(refused.iter().all(|s| s.get_details_retry_info().is_some()));
    drop(procs);
    sim.shutdown().await;
}

/// The events of a Subscribe stream, read in the background into a shared list until it
/// ends.
async fn read_stream(client: &mut Client, request: pb::SubscribeRequest) -> Seen {
    let mut stream = client
        .subscribe(request)
        .await
        .expect("Subscribe")
        .into_inner();
    let seen: Seen = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(ev)) = stream.message().await {
            out.lock().unwrap().push((Instant::now(), ev));
        }
    });
    seen
}

/// A bot's Subscribe stream, from the start of what the gateway holds.
async fn subscribe_ref(client: &mut Client, chat: &pb::ChatRef) -> Seen {
    read_stream(
        client,
        pb::SubscribeRequest {
            chat: Some(chat.clone()),
            from_start: true,
            ..Default::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_holds_one_socket_across_replicas() {
    let sim = Simulator::start(SimConfig {
        agent: fast_agent(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("cluster-bot");
    let extra = [
        "--lease-ttl",
        "2s",
        "--caller-rate",
        "0",
        "--bot-caller",
        "anonymous",
    ];
    let procs: Vec<GatewayProc> = (0..3)
        .map(|_| GatewayProc::spawn(&sim.endpoint(), REDIS, &prefix, &extra))
        .collect();
    let mut clients = clients(&procs).await;
    let chat = start_chat(&mut clients[0], "Ada").await;
    let customer = subscribe(&mut clients[0], &chat).await;
    let bot = clients[1]
        .add_bot_participant(pb::AddBotParticipantRequest {
            contact_id: chat.contact_id.clone(),
            display_name: "FAQ bot".into(),
            ..Default::default()
        })
        .await
        .expect("AddBotParticipant")
        .into_inner()
        .chat
        .unwrap();
    let mut bot_streams = Vec::new();
    for c in clients.iter_mut() {
        bot_streams.push(subscribe_ref(c, &bot).await);
    }
    clients[2]
        .send_message(pb::SendMessageRequest {
            chat: Some(bot.clone()),
            content: "bot says hi".into(),
            ..Default::default()
        })
        .await
        .expect("the bot's SendMessage on any replica");
    let from_bot = |s: &Seen| {
        let events: Vec<pb::ChatEvent> = s.lock().unwrap().iter().map(|(_, e)| e.clone()).collect();
        messages(&events, pb::ParticipantRole::CustomBot)
    };
    wait_for("the bot's message at the customer", || {
        from_bot(&customer) == ["bot says hi"]
    })
    .await;
    for s in &bot_streams {
        wait_for("the bot's message on every replica's bot stream", || {
            from_bot(s) == ["bot says hi"]
        })
        .await;
    }
    assert_eq!(
        sim.open_sockets(&chat.contact_id),
        2,
        "one socket for the customer and one for the bot, across three replicas"
    );
    assert_eq!(sim.calls(Operation::CreateParticipantConnection), 2);
    clients[0]
        .end_chat(pb::EndChatRequest {
            chat: Some(bot.clone()),
        })
        .await
        .expect("the bot's EndChat on a replica without its socket");
    wait_for("the bot's socket closed, the customer's open", || {
        sim.open_sockets(&chat.contact_id) == 1
    })
    .await;
    assert_eq!(sim.chat_ended(&chat.contact_id), Some(false));
    drop(procs);
    sim.shutdown().await;
}

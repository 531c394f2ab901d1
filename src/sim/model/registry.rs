//! The registry every handler and task shares ([`Shared`]): chats by contact id, their tokens
//! and socket URLs, StartChatContact ClientTokens, chat start and end, attachment bytes,
//! counters and knobs. Locks: the registry's and one per chat; the registry is never locked
//! while a chat lock is held, and no lock is held across an `.await` or a socket write.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::chat::{
    AgentEvent, AgentInbox, Bot, Chat, ChatFrame, ChatState, Denied, EndReason, Member, Pushed,
    SocketEntry, Who, CUSTOMER,
};
use super::knobs::Knobs;
use super::operation::{FaultKind, Operation};
use super::stats::{Counters, Stats};
use super::support::{lock, new_token, BoundedMap};
use super::time::format_after;
use crate::connect::content_type as ct;
use crate::sim::config::SimConfig;

/// Past contacts a persistent chat's transcript reaches back through.
pub const MAX_CHAIN: usize = 100;

enum TokenKind {
    Participant,
    Connection { expires_at: Instant },
}

struct TokenRef {
    contact_id: String,
    kind: TokenKind,
    who: Who,
}

struct UrlRef {
    contact_id: String,
    expires_at: Instant,
    who: Who,
}

struct ChatEntry {
    chat: Arc<Chat>,
    participant_token: String,
    /// The participant tokens of the chat's custom bots.
    bot_tokens: Vec<String>,
    conn_tokens: VecDeque<String>,
    url_tokens: VecDeque<String>,
}

/// Lookups by token and contact id.
struct Registry {
    chats: HashMap<String, ChatEntry>,
    tokens: HashMap<String, TokenRef>,
    socket_urls: HashMap<String, UrlRef>,
    /// `InstanceId\0ClientToken` → ContactId.
    start_tokens: BoundedMap<String>,
    ended_order: VecDeque<String>,
    live: usize,
}

/// A validated StartChatContact request.
pub struct NewChat {
    pub instance_id: String,
    pub display_name: String,
    pub supported_types: Vec<String>,
    pub duration: Duration,
    pub initial_message: Option<(String, String)>,
    pub client_token: Option<String>,
    pub source_contact_id: Option<String>,
    pub options: Option<Box<super::chat::StartOptions>>,
}

/// StartChatContact's answer.
#[derive(Debug, Clone)]
pub struct Started {
    pub contact_id: String,
    pub participant_id: String,
    pub participant_token: String,
    pub continued_from: Option<String>,
}

/// Why StartChatContact refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    Limit,
    SourceNotFound,
    SourceActive,
}

/// Why CreateParticipant refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddBotError {
    /// No such contact in the instance.
    NotFound,
    /// The contact has ended.
    Ended,
    /// The chat has as many bots as the simulator allows.
    Quota,
}

/// CreateParticipant's answer.
#[derive(Debug, Clone)]
pub struct AddedBot {
    pub participant_id: String,
    pub participant_token: String,
}

/// CreateParticipantConnection's answer.
pub struct Connection {
    pub socket: Option<(String, String)>,
    pub credentials: Option<(String, String)>,
}

/// Starts the agent task of a new chat (the simulator passes `agent::spawn`; the registry
/// knows only this signature).
pub type SpawnAgent = fn(Arc<Shared>, Arc<Chat>, AgentInbox);

/// Everything shared by handlers and tasks.
pub struct Shared {
    pub config: SimConfig,
    pub local_addr: SocketAddr,
    pub public_base: String,
    pub socket_base: String,
    registry: Mutex<Registry>,
    pub stats: Stats,
    /// Faults, quotas, delays and heartbeat answers, turned at run time.
    pub knobs: Knobs,
    /// Attachment bytes reserved (declared sizes of uploads started), bounded by config.
    attachment_bytes: AtomicU64,
    /// Cancelled on shutdown: stops the server, sockets and agents.
    pub shutdown: CancellationToken,
    /// Every task the simulator spawns (server, TLS accept loop and handshakes, agents) and
    /// every open socket; shutdown closes it and waits.
    pub tasks: TaskTracker,
    spawn_agent: SpawnAgent,
}

impl Shared {
    pub fn new(config: SimConfig, local_addr: SocketAddr, spawn_agent: SpawnAgent) -> Self {
        let trim = |s: &String| s.trim_end_matches('/').to_owned();
        let public_base = config
            .public_base_url
            .as_ref()
            .map(trim)
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let socket_base = config
            .socket_base_url
            .as_ref()
            .map(trim)
            .unwrap_or_else(|| format!("ws://{local_addr}"));
        let start_cap = config.max_start_client_tokens;
        let rate_quotas = config.rate_quotas;
        Shared {
            config,
            local_addr,
            public_base,
            socket_base,
            registry: Mutex::new(Registry {
                chats: HashMap::new(),
                tokens: HashMap::new(),
                socket_urls: HashMap::new(),
                start_tokens: BoundedMap::new(start_cap),
                ended_order: VecDeque::new(),
                live: 0,
            }),
            stats: Stats::default(),
            knobs: Knobs::new(rate_quotas),
            attachment_bytes: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            spawn_agent,
        }
    }

    /// Count a call and consume an injected fault for it, if any; else, with rate quotas on,
    /// throttle a call over its operation's quota.
    pub fn begin(&self, op: Operation) -> Option<FaultKind> {
        self.stats.count_call(op);
        self.knobs.fault_for(op)
    }

    /// Reserve attachment bytes; false when the total bound would be exceeded.
    pub fn reserve_bytes(&self, n: u64) -> bool {
        let max = self.config.max_attachment_bytes;
        self.attachment_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(n).filter(|total| *total <= max)
            })
            .is_ok()
    }

    fn release_bytes(&self, n: u64) {
        let _ = self
            .attachment_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(cur.saturating_sub(n))
            });
    }

    pub fn counters(&self) -> Counters {
        let live = lock(&self.registry).live;
        self.stats.snapshot(live as u64)
    }

    pub fn find_chat(&self, contact_id: &str) -> Option<Arc<Chat>> {
        lock(&self.registry)
            .chats
            .get(contact_id)
            .map(|e| e.chat.clone())
    }

    /// `contact_id` when it is one of the contacts `chat` continues (persistent chat: each
    /// chat names the one it continues), following at most [`MAX_CHAIN`] links.
    pub fn chat_in_chain(&self, chat: &Chat, contact_id: &str) -> Option<Arc<Chat>> {
        let mut next = chat.continued_from.clone();
        for _ in 0..MAX_CHAIN {
            let past = self.find_chat(&next?)?;
            if past.contact_id == contact_id {
                return Some(past);
            }
            next = past.continued_from.clone();
        }
        None
    }

    pub(super) fn chats_matching(&self, contact_id: Option<&str>) -> Vec<Arc<Chat>> {
        let reg = lock(&self.registry);
        match contact_id {
            Some(id) => reg
                .chats
                .get(id)
                .map(|e| e.chat.clone())
                .into_iter()
                .collect(),
            None => reg.chats.values().map(|e| e.chat.clone()).collect(),
        }
    }

    /// Every chat not yet ended.
    pub fn live_chats(&self) -> Vec<Arc<Chat>> {
        let mut chats = self.chats_matching(None);
        chats.retain(|c| !c.is_ended());
        chats
    }

    /// Create a chat (or replay the one created with the same ClientToken).
    pub fn start_chat(self: &Arc<Self>, req: NewChat) -> Result<Started, StartError> {
        let (chat, started, agent_rx) = {
            let mut reg = lock(&self.registry);
            let idem_key = req
                .client_token
                .as_ref()
                .map(|t| format!("{}\u{0}{}", req.instance_id, t));
            if let Some(key) = &idem_key {
                if let Some(contact_id) = reg.start_tokens.get(key).cloned() {
                    if let Some(entry) = reg.chats.get(&contact_id) {
                        return Ok(Started {
                            contact_id,
                            participant_id: entry.chat.customer.id.clone(),
                            participant_token: entry.participant_token.clone(),
                            continued_from: entry.chat.continued_from.clone(),
                        });
                    }
                    reg.start_tokens.remove(key);
                }
            }
            if let Some(source) = &req.source_contact_id {
                match reg.chats.get(source) {
                    None => return Err(StartError::SourceNotFound),
                    Some(e) if !e.chat.is_ended() => return Err(StartError::SourceActive),
                    Some(_) => {}
                }
            }
            if reg.live >= self.config.max_chats {
                return Err(StartError::Limit);
            }
            let contact_id = uuid::Uuid::new_v4().to_string();
            let customer = Member {
                id: uuid::Uuid::new_v4().to_string(),
                display_name: req.display_name.clone(),
                role: "CUSTOMER",
            };
            let agent = Member {
                id: uuid::Uuid::new_v4().to_string(),
                display_name: self.config.agent.display_name.clone(),
                role: "AGENT",
            };
            let (agent_tx, agent_rx) = mpsc::channel(self.config.agent_queue);
            let cap = self.config.max_client_tokens_per_participant;
            let chat = Arc::new(Chat {
                contact_id: contact_id.clone(),
                instance_id: req.instance_id.clone(),
                customer,
                agent,
                supported_types: req.supported_types.clone(),
                duration: req.duration,
                continued_from: req.source_contact_id.clone(),
                options: req.options.clone(),
                ended: AtomicBool::new(false),
                customer_left: AtomicBool::new(false),
                state: Mutex::new(ChatState::new(cap)),
                agent_tx,
                agent_stop: self.shutdown.child_token(),
            });
            let participant_token = new_token();
            reg.tokens.insert(
                participant_token.clone(),
                TokenRef {
                    contact_id: contact_id.clone(),
                    kind: TokenKind::Participant,
                    who: CUSTOMER,
                },
            );
            reg.chats.insert(
                contact_id.clone(),
                ChatEntry {
                    chat: chat.clone(),
                    participant_token: participant_token.clone(),
                    bot_tokens: Vec::new(),
                    conn_tokens: VecDeque::new(),
                    url_tokens: VecDeque::new(),
                },
            );
            reg.live += 1;
            if let Some(key) = idem_key {
                reg.start_tokens.insert(key, contact_id.clone());
            }
            let started = Started {
                contact_id,
                participant_id: chat.customer.id.clone(),
                participant_token,
                continued_from: req.source_contact_id.clone(),
            };
            (chat, started, agent_rx)
        };
        {
            let mut st = chat.lock();
            let joined = chat.event(ct::PARTICIPANT_JOINED, Some(&chat.customer));
            self.commit(&chat, &mut st, joined, true);
            if let Some((content_type, content)) = &req.initial_message {
                let msg = chat.item("MESSAGE", content_type, Some(content), Some(&chat.customer));
                let pushed = self.commit(&chat, &mut st, msg, true);
                chat.notify_agent(AgentEvent::CustomerMessage {
                    id: pushed.id,
                    content: content.clone(),
                });
            }
        }
        (self.spawn_agent)(self.clone(), chat, agent_rx);
        Ok(started)
    }

    /// CreateParticipantConnection with a participant token.
    pub fn create_connection(
        &self,
        participant_token: Option<&str>,
        want_socket: bool,
        want_credentials: bool,
        connect: bool,
    ) -> Result<Connection, Denied> {
        let token = participant_token.ok_or(Denied("Missing X-Amz-Bearer header"))?;
        let chat = {
            let mut reg = lock(&self.registry);
            let (contact_id, who) = match reg.tokens.get(token) {
                Some(TokenRef {
                    contact_id,
                    kind: TokenKind::Participant,
                    who,
                }) => (contact_id.clone(), *who),
                _ => return Err(Denied("Invalid participant token")),
            };
            let reg = &mut *reg;
            let entry = reg
                .chats
                .get_mut(&contact_id)
                .ok_or(Denied("Invalid participant token"))?;
            entry.chat.member(who)?;
            let cap = self.config.max_tokens_per_participant;
            let mut out = Connection {
                socket: None,
                credentials: None,
            };
            if want_socket {
                let url_token = new_token();
                reg.socket_urls.insert(
                    url_token.clone(),
                    UrlRef {
                        contact_id: contact_id.clone(),
                        expires_at: Instant::now() + self.config.socket_url_ttl,
                        who,
                    },
                );
                entry.url_tokens.push_back(url_token.clone());
                while entry.url_tokens.len() > cap {
                    if let Some(old) = entry.url_tokens.pop_front() {
                        reg.socket_urls.remove(&old);
                    }
                }
                out.socket = Some((
                    format!("{}/connect?token={}", self.socket_base, url_token),
                    format_after(self.config.socket_url_ttl),
                ));
            }
            if want_credentials {
                let conn_token = new_token();
                reg.tokens.insert(
                    conn_token.clone(),
                    TokenRef {
                        contact_id: contact_id.clone(),
                        kind: TokenKind::Connection {
                            expires_at: Instant::now() + self.config.connection_token_ttl,
                        },
                        who,
                    },
                );
                entry.conn_tokens.push_back(conn_token.clone());
                while entry.conn_tokens.len() > cap {
                    if let Some(old) = entry.conn_tokens.pop_front() {
                        reg.tokens.remove(&old);
                    }
                }
                out.credentials =
                    Some((conn_token, format_after(self.config.connection_token_ttl)));
            }
            (entry.chat.clone(), out, who)
        };
        let (chat, out, who) = chat;
        if connect && who == CUSTOMER {
            chat.lock().customer_connected = true;
        }
        Ok(out)
    }

    /// The chat a connection token gives access to.
    pub fn authorize(&self, connection_token: Option<&str>) -> Result<Arc<Chat>, Denied> {
        self.authorize_as(connection_token).map(|(chat, _)| chat)
    }

    /// The chat a connection token gives access to, and the participant it acts as.
    pub fn authorize_as(
        &self,
        connection_token: Option<&str>,
    ) -> Result<(Arc<Chat>, Member), Denied> {
        let token = connection_token.ok_or(Denied("Missing X-Amz-Bearer header"))?;
        let (chat, who) = {
            let reg = lock(&self.registry);
            let tref = reg
                .tokens
                .get(token)
                .ok_or(Denied("Invalid connection token"))?;
            match tref.kind {
                TokenKind::Connection { expires_at } if Instant::now() < expires_at => {}
                TokenKind::Connection { .. } => {
                    return Err(Denied("The connection token has expired"))
                }
                TokenKind::Participant => return Err(Denied("Invalid connection token")),
            }
            let chat = reg
                .chats
                .get(&tref.contact_id)
                .map(|e| e.chat.clone())
                .ok_or(Denied("Invalid connection token"))?;
            (chat, tref.who)
        };
        let member = chat.member(who)?;
        Ok((chat, member))
    }

    /// The chat a socket URL token opens and the participant it is for, while the URL is
    /// valid and the participant in the chat.
    pub fn socket_url_chat(&self, url_token: &str) -> Option<(Arc<Chat>, Member)> {
        let reg = lock(&self.registry);
        let url = reg.socket_urls.get(url_token)?;
        if Instant::now() >= url.expires_at {
            return None;
        }
        let chat = reg.chats.get(&url.contact_id)?.chat.clone();
        let who = url.who;
        drop(reg);
        let member = chat.member(who).ok()?;
        Some((chat, member))
    }

    /// CreateParticipant: a custom bot joins the live chat `contact_id` of `instance_id`,
    /// with its own participant token (the same bot again for a repeated ClientToken).
    pub fn add_bot(
        &self,
        instance_id: &str,
        contact_id: &str,
        display_name: &str,
        client_token: Option<&str>,
    ) -> Result<AddedBot, AddBotError> {
        let mut reg = lock(&self.registry);
        let entry = reg
            .chats
            .get_mut(contact_id)
            .filter(|e| e.chat.instance_id == instance_id)
            .ok_or(AddBotError::NotFound)?;
        let chat = entry.chat.clone();
        let mut st = chat.lock();
        if st.ended {
            return Err(AddBotError::Ended);
        }
        if let Some(t) = client_token {
            let known = st
                .bots
                .iter()
                .position(|b| b.client_token.as_deref() == Some(t));
            if let Some(i) = known {
                return Ok(AddedBot {
                    participant_id: st.bots[i].member.id.clone(),
                    participant_token: entry.bot_tokens[i].clone(),
                });
            }
        }
        if st.bots.len() >= self.config.max_bots_per_chat {
            return Err(AddBotError::Quota);
        }
        let member = Member {
            id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.to_owned(),
            role: "CUSTOM_BOT",
        };
        let who = Who::try_from(st.bots.len() + 1).map_err(|_| AddBotError::Quota)?;
        st.bots.push(Bot {
            member: member.clone(),
            client_token: client_token.map(str::to_owned),
            left: false,
        });
        let participant_token = new_token();
        entry.bot_tokens.push(participant_token.clone());
        let joined = chat.event(ct::PARTICIPANT_JOINED, Some(&member));
        self.commit(&chat, &mut st, joined, true);
        drop(st);
        reg.tokens.insert(
            participant_token.clone(),
            TokenRef {
                contact_id: contact_id.to_owned(),
                kind: TokenKind::Participant,
                who,
            },
        );
        Ok(AddedBot {
            participant_id: member.id,
            participant_token,
        })
    }

    /// DisconnectParticipant by a bot: it leaves (participant.left), its sockets close once
    /// their queues are written, and the chat goes on. False if it had left already.
    pub fn bot_leave(&self, chat: &Chat, participant_id: &str) -> bool {
        let mut st = chat.lock();
        let Some(i) = st
            .bots
            .iter()
            .position(|b| b.member.id == participant_id && !b.left)
        else {
            return false;
        };
        st.bots[i].left = true;
        let member = st.bots[i].member.clone();
        let left = chat.event(ct::PARTICIPANT_LEFT, Some(&member));
        self.commit(chat, &mut st, left, true);
        st.sockets.retain(|s| s.participant_id != participant_id);
        true
    }

    pub fn expire_connection_tokens(&self, contact_id: Option<&str>) {
        let now = Instant::now();
        let mut reg = lock(&self.registry);
        for tref in reg.tokens.values_mut() {
            if contact_id.is_some_and(|c| c != tref.contact_id) {
                continue;
            }
            if let TokenKind::Connection { expires_at } = &mut tref.kind {
                *expires_at = now;
            }
        }
    }

    pub fn expire_socket_urls(&self, contact_id: Option<&str>) {
        let now = Instant::now();
        let mut reg = lock(&self.registry);
        for url in reg.socket_urls.values_mut() {
            if contact_id.is_none_or(|c| c == url.contact_id) {
                url.expires_at = now;
            }
        }
    }

    /// End a chat; false if it had already ended.
    pub fn end_chat(&self, chat: &Arc<Chat>, reason: EndReason) -> bool {
        {
            let mut st = chat.lock();
            if st.ended {
                return false;
            }
            match reason {
                EndReason::Agent => {
                    let left = chat.event(ct::PARTICIPANT_LEFT, Some(&chat.agent));
                    self.commit(chat, &mut st, left, true);
                }
                EndReason::Customer => {
                    chat.customer_left.store(true, Ordering::Release);
                    let left = chat.event(ct::PARTICIPANT_LEFT, Some(&chat.customer));
                    self.commit(chat, &mut st, left, true);
                }
                EndReason::Expired => {}
            }
            let ended = chat.event(ct::CHAT_ENDED, None);
            self.commit(chat, &mut st, ended, true);
            self.finish_locked(chat, &mut st);
        }
        self.retire(chat);
        true
    }

    /// Mark ended and let the sockets close once their queues are written.
    pub(super) fn finish_locked(&self, chat: &Chat, st: &mut ChatState) {
        st.ended = true;
        chat.ended.store(true, Ordering::Release);
        st.sockets.clear();
        chat.agent_stop.cancel();
    }

    /// Move a just-ended chat to the ended list and forget the oldest ended chats.
    pub(super) fn retire(&self, chat: &Arc<Chat>) {
        self.stats.chats_ended.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut reg = lock(&self.registry);
            reg.live = reg.live.saturating_sub(1);
            reg.ended_order.push_back(chat.contact_id.clone());
            let mut evicted = Vec::new();
            while reg.ended_order.len() > self.config.max_ended_chats {
                let Some(old) = reg.ended_order.pop_front() else {
                    break;
                };
                if let Some(entry) = reg.chats.remove(&old) {
                    reg.tokens.remove(&entry.participant_token);
                    for t in &entry.bot_tokens {
                        reg.tokens.remove(t);
                    }
                    for t in &entry.conn_tokens {
                        reg.tokens.remove(t);
                    }
                    for t in &entry.url_tokens {
                        reg.socket_urls.remove(t);
                    }
                    evicted.push(entry.chat);
                }
            }
            evicted
        };
        for old in evicted {
            let bytes: u64 = old.lock().attachments.values().map(|a| a.size).sum();
            self.release_bytes(bytes);
        }
    }

    /// Register a socket for the participant `member` of `chat`; None when the
    /// per-participant limit is hit.
    pub fn register_socket(
        &self,
        chat: &Chat,
        member: &Member,
    ) -> Option<(
        mpsc::Receiver<ChatFrame>,
        Arc<AtomicBool>,
        CancellationToken,
    )> {
        let mut st = chat.lock();
        if st.ended {
            return None;
        }
        st.sockets.retain(|s| !s.tx.is_closed());
        let mine = st
            .sockets
            .iter()
            .filter(|s| s.participant_id == member.id)
            .count();
        if mine >= self.config.max_sockets_per_participant {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.config.socket_queue);
        let subscribed = Arc::new(AtomicBool::new(false));
        let kill = self.shutdown.child_token();
        st.sockets.push(SocketEntry {
            participant_id: member.id.clone(),
            tx,
            subscribed: subscribed.clone(),
            kill: kill.clone(),
        });
        Some((rx, subscribed, kill))
    }

    /// Store (when `store`) and push an item of `chat`; fills `Id`, `AbsoluteTime`,
    /// `ContactId` and `InitialContactId` when absent. The chat lock must be held (`st`).
    pub fn commit(
        &self,
        chat: &Chat,
        st: &mut ChatState,
        obj: Map<String, Value>,
        store: bool,
    ) -> Pushed {
        let (pushed, frame) =
            st.record(&chat.contact_id, obj, store, self.config.max_items_per_chat);
        self.stats.items_pushed.fetch_add(1, Ordering::Relaxed);
        if !st.sockets.is_empty() {
            let deliver_at = Instant::now() + self.knobs.frame_delay();
            let closed_slow = st.fan_out(frame, deliver_at);
            if closed_slow > 0 {
                self.stats
                    .sockets_closed_slow
                    .fetch_add(closed_slow, Ordering::Relaxed);
            }
        }
        pushed
    }

    /// Push (and store when `store`) an item of `chat` unless the chat has ended.
    pub fn push(&self, chat: &Chat, obj: Map<String, Value>, store: bool) -> Option<Pushed> {
        let mut st = chat.lock();
        if st.ended {
            return None;
        }
        Some(self.commit(chat, &mut st, obj, store))
    }
}

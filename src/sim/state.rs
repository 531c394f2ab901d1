//! The simulator's data: chats, their participants and transcript items, tokens, socket
//! registrations and counters. Two levels of `std::sync::Mutex`: the registry (lookups by token
//! or contact id) and one per chat; the registry is never locked while a chat lock is held,
//! and no lock is held across an `.await` or while writing to a socket.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{json, Map, Value};
use strum::{EnumCount as _, IntoEnumIterator as _};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agent::{self, AgentEvent};
use super::{Counters, FaultKind, Operation, SimConfig, SimError};
use crate::connect::content_type as ct;

/// Lock a mutex, recovering the data if a previous holder panicked (nothing here panics while
/// holding a lock, but a poisoned lock must not take the simulator down).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The participant service's time format: `2019-11-08T02:41:28.172Z` (UTC, milliseconds).
pub fn format_ms(ms: i64) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// `format_ms` of a wall-clock instant `after` from now.
pub fn format_after(after: Duration) -> String {
    let ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
    format_ms(now_ms().saturating_add(ms))
}

/// Parse an ISO 8601 / RFC 3339 time to milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
}

/// 32 random bytes, URL-safe base64: unguessable tokens.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A map that forgets its oldest keys beyond `cap` entries.
#[derive(Debug)]
pub struct BoundedMap<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> BoundedMap<V> {
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let v = self.map.remove(key)?;
        self.order.retain(|k| k != key);
        Some(v)
    }

    /// Insert; returns the entries pushed out to respect the bound.
    pub fn insert(&mut self, key: String, value: V) -> Vec<(String, V)> {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return Vec::new();
        }
        let mut evicted = Vec::new();
        while self.map.len() >= self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.map.remove(&old) {
                evicted.push((old, v));
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
        evicted
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Counts live background tasks so shutdown can wait for them.
#[derive(Default)]
pub struct Tasks {
    active: AtomicUsize,
    /// Woken when `active` drops to zero.
    idle: Notify,
}

/// Held by a task for its whole life; dropping it marks the task finished.
pub struct TaskGuard(Arc<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.tasks.idle.notify_waiters();
        }
    }
}

impl Tasks {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Resolve once no task holds a guard.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counters updated without locks.
#[derive(Default)]
pub struct Stats {
    calls: [AtomicU64; Operation::COUNT],
    pub open_sockets: AtomicU64,
    pub chats_ended: AtomicU64,
    pub items_pushed: AtomicU64,
    pub frames_sent: AtomicU64,
    pub sockets_closed_slow: AtomicU64,
    pub upgrades_refused: AtomicU64,
}

impl Stats {
    pub fn calls(&self, op: Operation) -> u64 {
        self.calls[op.index()].load(Ordering::Relaxed)
    }
}

/// One participant of a chat.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub display_name: String,
    pub role: &'static str,
}

/// What an item pushed to a socket queue carries: the frame text, serialised once and shared.
#[derive(Debug, Clone)]
pub struct ChatFrame {
    pub text: Utf8Bytes,
    /// When the frame may be written (the frame-delay knob); frames are written in queue order.
    pub deliver_at: Instant,
}

/// A socket registered on a chat.
pub struct SocketEntry {
    pub participant_id: String,
    /// Dropping this sender closes the socket gracefully once its queue is drained.
    pub tx: mpsc::Sender<ChatFrame>,
    /// Set by the socket task when the client subscribed to `aws/chat`.
    pub subscribed: Arc<AtomicBool>,
    /// Cancelling it closes the socket abruptly.
    pub kill: CancellationToken,
}

/// One stored transcript item.
#[derive(Debug, Clone)]
pub struct StoredItem {
    pub seq: u64,
    pub id: String,
    pub abs_ms: i64,
    pub value: Value,
}

/// The result of pushing an item.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub id: String,
    pub abs_ms: i64,
    pub value: Value,
}

/// An attachment of a chat.
pub struct Attachment {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub upload_token: String,
    pub upload_expires: Instant,
    pub data: Option<Bytes>,
    pub completed: bool,
    /// Download tokens handed out by GetAttachment (bounded): token, expiry, disposition.
    pub downloads: VecDeque<(String, Instant, Option<String>)>,
}

/// The mutable part of a chat.
pub struct ChatState {
    pub items: VecDeque<StoredItem>,
    next_seq: u64,
    last_ms: i64,
    ids: HashMap<String, u64>,
    pub sockets: Vec<SocketEntry>,
    /// SendMessage ClientToken → (Id, AbsoluteTime).
    pub message_tokens: BoundedMap<(String, i64)>,
    /// SendEvent ClientToken → (Id, AbsoluteTime).
    pub event_tokens: BoundedMap<(String, i64)>,
    /// StartAttachmentUpload ClientToken → AttachmentId.
    pub upload_tokens: BoundedMap<String>,
    pub attachments: HashMap<String, Attachment>,
    pub customer_connected: bool,
    pub ended: bool,
    pub agent_messages: u64,
}

impl ChatState {
    /// Sequence number of the stored item with that id.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Whether a stored item with that id exists.
    pub fn has_item(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }
}

/// Past contacts a persistent chat's transcript reaches back through.
pub const MAX_CHAIN: usize = 100;

/// One chat contact.
pub struct Chat {
    pub contact_id: String,
    pub instance_id: String,
    pub customer: Member,
    pub agent: Member,
    pub supported_types: Vec<String>,
    pub duration: Duration,
    pub continued_from: Option<String>,
    ended: AtomicBool,
    customer_left: AtomicBool,
    state: Mutex<ChatState>,
    /// Customer events for this chat's agent task (bounded by `agent_queue`).
    agent_tx: mpsc::Sender<AgentEvent>,
    /// Stops the agent task when the chat ends or the simulator shuts down.
    pub agent_stop: CancellationToken,
}

/// Why a participant call is refused (AccessDeniedException).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied(pub &'static str);

impl Chat {
    pub fn lock(&self) -> MutexGuard<'_, ChatState> {
        lock(&self.state)
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether the customer's tokens still work.
    pub fn customer_access(&self) -> Result<(), Denied> {
        if self.is_ended() {
            Err(Denied("The chat has ended"))
        } else if self.customer_left.load(Ordering::Acquire) {
            Err(Denied("The participant has disconnected"))
        } else {
            Ok(())
        }
    }

    /// Send an event to the agent task; dropped (with a warning) when its queue is full.
    pub fn notify_agent(&self, ev: AgentEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.agent_tx.try_send(ev) {
            tracing::warn!(contact_id = %self.contact_id, "agent queue full; customer event dropped");
        }
    }

    /// An item object from a sender (None: SYSTEM) with the usual fields.
    pub fn item(
        &self,
        kind: &str,
        content_type: &str,
        content: Option<&str>,
        from: Option<&Member>,
    ) -> Map<String, Value> {
        let mut obj = Map::new();
        obj.insert("Type".into(), Value::String(kind.to_owned()));
        obj.insert("ContentType".into(), Value::String(content_type.to_owned()));
        if let Some(content) = content {
            obj.insert("Content".into(), Value::String(content.to_owned()));
        }
        match from {
            Some(m) => {
                obj.insert("ParticipantId".into(), Value::String(m.id.clone()));
                obj.insert("DisplayName".into(), Value::String(m.display_name.clone()));
                obj.insert("ParticipantRole".into(), Value::String(m.role.to_owned()));
            }
            None => {
                obj.insert("ParticipantRole".into(), Value::String("SYSTEM".to_owned()));
            }
        }
        obj
    }

    /// An `EVENT` item of one of the event content types.
    pub fn event(&self, content_type: &str, from: Option<&Member>) -> Map<String, Value> {
        self.item("EVENT", content_type, None, from)
    }

    /// A receipt (`MESSAGEMETADATA`) for `message_id` by `reader`.
    pub fn receipt(
        &self,
        read: bool,
        message_id: &str,
        reader: &Member,
        at_ms: i64,
    ) -> Map<String, Value> {
        let (content_type, key) = if read {
            (ct::READ, "ReadTimestamp")
        } else {
            (ct::DELIVERED, "DeliveredTimestamp")
        };
        let mut obj = self.item("MESSAGEMETADATA", content_type, None, Some(reader));
        obj.insert(
            "MessageMetadata".into(),
            json!({
                "MessageId": message_id,
                "Receipts": [{ key: format_ms(at_ms), "RecipientParticipantId": reader.id }],
            }),
        );
        obj
    }

    /// Store (when `store`) and push an item; fills `Id`, `AbsoluteTime`, `ContactId` and
    /// `InitialContactId` when absent. The chat lock must be held (`st`).
    pub fn commit(
        &self,
        shared: &Shared,
        st: &mut ChatState,
        mut obj: Map<String, Value>,
        store: bool,
    ) -> Pushed {
        let id = match obj.get("Id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                obj.insert("Id".into(), Value::String(id.clone()));
                id
            }
        };
        let abs_ms = match obj
            .get("AbsoluteTime")
            .and_then(Value::as_str)
            .and_then(parse_time_ms)
        {
            Some(ms) => {
                st.last_ms = st.last_ms.max(ms);
                ms
            }
            None => {
                // Strictly increasing within a chat: bump by 1 ms on ties.
                let ms = now_ms().max(st.last_ms.saturating_add(1));
                st.last_ms = ms;
                obj.insert("AbsoluteTime".into(), Value::String(format_ms(ms)));
                ms
            }
        };
        obj.entry("ContactId")
            .or_insert_with(|| Value::String(self.contact_id.clone()));
        obj.entry("InitialContactId")
            .or_insert_with(|| Value::String(self.contact_id.clone()));
        let value = Value::Object(obj);
        let item_json = serde_json::to_string(&value).unwrap_or_default();
        let frame = serde_json::to_string(&json!({
            "topic": "aws/chat",
            "contentType": "application/json",
            "content": item_json,
        }))
        .unwrap_or_default();
        if store {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.items.push_back(StoredItem {
                seq,
                id: id.clone(),
                abs_ms,
                value: value.clone(),
            });
            st.ids.insert(id.clone(), seq);
            while st.items.len() > shared.config.max_items_per_chat {
                if let Some(old) = st.items.pop_front() {
                    if st.ids.get(&old.id) == Some(&old.seq) {
                        st.ids.remove(&old.id);
                    }
                }
            }
        }
        shared.stats.items_pushed.fetch_add(1, Ordering::Relaxed);
        fan_out(shared, st, Utf8Bytes::from(frame));
        Pushed { id, abs_ms, value }
    }

    /// Push (and store when `store`) unless the chat has ended.
    pub fn push(&self, shared: &Shared, obj: Map<String, Value>, store: bool) -> Option<Pushed> {
        let mut st = self.lock();
        if st.ended {
            return None;
        }
        Some(self.commit(shared, &mut st, obj, store))
    }

    /// Open sockets of this chat (pruning the ones whose task has gone).
    pub fn open_sockets(&self) -> usize {
        let mut st = self.lock();
        st.sockets.retain(|s| !s.tx.is_closed());
        st.sockets.len()
    }
}

/// Enqueue a frame on every subscribed socket of the chat. A full queue closes that socket.
fn fan_out(shared: &Shared, st: &mut ChatState, frame: Utf8Bytes) {
    if st.sockets.is_empty() {
        return;
    }
    let deliver_at = Instant::now() + shared.frame_delay();
    st.sockets.retain(|s| {
        if !s.subscribed.load(Ordering::Acquire) {
            return !s.tx.is_closed();
        }
        match s.tx.try_send(ChatFrame {
            text: frame.clone(),
            deliver_at,
        }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                shared
                    .stats
                    .sockets_closed_slow
                    .fetch_add(1, Ordering::Relaxed);
                s.kill.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

enum TokenKind {
    Participant,
    Connection { expires_at: Instant },
}

struct TokenRef {
    contact_id: String,
    kind: TokenKind,
}

struct UrlRef {
    contact_id: String,
    expires_at: Instant,
}

struct ChatEntry {
    chat: Arc<Chat>,
    participant_token: String,
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

/// CreateParticipantConnection's answer.
pub struct Connection {
    pub socket: Option<(String, String)>,
    pub credentials: Option<(String, String)>,
}

/// How a chat ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Agent leaves, then chat.ended.
    Agent,
    /// Customer leaves (DisconnectParticipant), then chat.ended.
    Customer,
    /// ChatDurationInMinutes elapsed: chat.ended only.
    Expired,
}

/// Everything shared by handlers and tasks.
pub struct Shared {
    pub config: SimConfig,
    pub local_addr: SocketAddr,
    pub public_base: String,
    pub socket_base: String,
    registry: Mutex<Registry>,
    pub stats: Stats,
    answer_heartbeats: AtomicBool,
    frame_delay_us: AtomicU64,
    answer_delay_us: AtomicU64,
    faults: Mutex<[Option<(u32, FaultKind)>; Operation::COUNT]>,
    /// Token buckets of the operations' rate quotas, when they are enforced.
    quotas: Vec<Option<governor::DefaultDirectRateLimiter>>,
    /// Attachment bytes reserved (declared sizes of uploads started), bounded by config.
    attachment_bytes: AtomicU64,
    /// Cancelled on shutdown: stops the server, sockets and agents.
    pub shutdown: CancellationToken,
    pub tasks: Tasks,
}

impl Shared {
    pub fn new(config: SimConfig, local_addr: SocketAddr) -> Self {
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
            answer_heartbeats: AtomicBool::new(true),
            frame_delay_us: AtomicU64::new(0),
            answer_delay_us: AtomicU64::new(0),
            faults: Mutex::new([None; Operation::COUNT]),
            quotas: Operation::iter()
                .map(|op| {
                    let (rate, burst) = op.rate_quota().filter(|_| rate_quotas)?;
                    let quota = governor::Quota::per_second(NonZeroU32::new(rate)?)
                        .allow_burst(NonZeroU32::new(burst)?);
                    Some(governor::RateLimiter::direct(quota))
                })
                .collect(),
            attachment_bytes: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            tasks: Tasks::default(),
        }
    }

    /// Register a running task; shutdown waits until every guard is dropped.
    pub fn task_guard(self: &Arc<Self>) -> TaskGuard {
        self.tasks.active.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    /// Count a call and consume an injected fault for it, if any; else, with rate quotas on,
    /// throttle a call over its operation's quota.
    pub fn begin(&self, op: Operation) -> Option<FaultKind> {
        self.stats.calls[op.index()].fetch_add(1, Ordering::Relaxed);
        {
            let mut faults = lock(&self.faults);
            let slot = &mut faults[op.index()];
            if let Some((left, kind)) = *slot {
                *slot = (left > 1).then_some((left - 1, kind));
                return Some(kind);
            }
        }
        let quota = self.quotas.get(op.index())?.as_ref()?;
        quota.check().is_err().then_some(FaultKind::Throttling)
    }

    pub fn fail_next(&self, op: Operation, count: u32, kind: FaultKind) {
        lock(&self.faults)[op.index()] = (count > 0).then_some((count, kind));
    }

    pub fn set_answer_heartbeats(&self, answer: bool) {
        self.answer_heartbeats.store(answer, Ordering::Release);
    }

    pub fn answer_heartbeats(&self) -> bool {
        self.answer_heartbeats.load(Ordering::Acquire)
    }

    pub fn set_frame_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.frame_delay_us.store(us, Ordering::Release);
    }

    pub fn frame_delay(&self) -> Duration {
        Duration::from_micros(self.frame_delay_us.load(Ordering::Acquire))
    }

    pub fn set_answer_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.answer_delay_us.store(us, Ordering::Release);
    }

    pub fn answer_delay(&self) -> Duration {
        Duration::from_micros(self.answer_delay_us.load(Ordering::Acquire))
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
        Counters {
            calls: Operation::iter()
                .map(|op| (op.name().to_owned(), self.stats.calls(op)))
                .collect(),
            open_sockets: self.stats.open_sockets.load(Ordering::Relaxed),
            chats_live: live as u64,
            chats_ended: self.stats.chats_ended.load(Ordering::Relaxed),
            items_pushed: self.stats.items_pushed.load(Ordering::Relaxed),
            frames_sent: self.stats.frames_sent.load(Ordering::Relaxed),
            sockets_closed_slow: self.stats.sockets_closed_slow.load(Ordering::Relaxed),
            upgrades_refused: self.stats.upgrades_refused.load(Ordering::Relaxed),
        }
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

    fn chats_matching(&self, contact_id: Option<&str>) -> Vec<Arc<Chat>> {
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
                ended: AtomicBool::new(false),
                customer_left: AtomicBool::new(false),
                state: Mutex::new(ChatState {
                    items: VecDeque::new(),
                    next_seq: 1,
                    last_ms: 0,
                    ids: HashMap::new(),
                    sockets: Vec::new(),
                    message_tokens: BoundedMap::new(cap),
                    event_tokens: BoundedMap::new(cap),
                    upload_tokens: BoundedMap::new(cap),
                    attachments: HashMap::new(),
                    customer_connected: false,
                    ended: false,
                    agent_messages: 0,
                }),
                agent_tx,
                agent_stop: self.shutdown.child_token(),
            });
            let participant_token = new_token();
            reg.tokens.insert(
                participant_token.clone(),
                TokenRef {
                    contact_id: contact_id.clone(),
                    kind: TokenKind::Participant,
                },
            );
            reg.chats.insert(
                contact_id.clone(),
                ChatEntry {
                    chat: chat.clone(),
                    participant_token: participant_token.clone(),
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
            chat.commit(self, &mut st, joined, true);
            if let Some((content_type, content)) = &req.initial_message {
                let msg = chat.item("MESSAGE", content_type, Some(content), Some(&chat.customer));
                let pushed = chat.commit(self, &mut st, msg, true);
                chat.notify_agent(AgentEvent::CustomerMessage {
                    id: pushed.id,
                    content: content.clone(),
                });
            }
        }
        agent::spawn(self.clone(), chat, agent_rx);
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
            let contact_id = match reg.tokens.get(token) {
                Some(TokenRef {
                    contact_id,
                    kind: TokenKind::Participant,
                }) => contact_id.clone(),
                _ => return Err(Denied("Invalid participant token")),
            };
            let reg = &mut *reg;
            let entry = reg
                .chats
                .get_mut(&contact_id)
                .ok_or(Denied("Invalid participant token"))?;
            entry.chat.customer_access()?;
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
            (entry.chat.clone(), out)
        };
        let (chat, out) = chat;
        if connect {
            chat.lock().customer_connected = true;
        }
        Ok(out)
    }

    /// The chat a connection token gives access to.
    pub fn authorize(&self, connection_token: Option<&str>) -> Result<Arc<Chat>, Denied> {
        let token = connection_token.ok_or(Denied("Missing X-Amz-Bearer header"))?;
        let chat = {
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
            reg.chats
                .get(&tref.contact_id)
                .map(|e| e.chat.clone())
                .ok_or(Denied("Invalid connection token"))?
        };
        chat.customer_access()?;
        Ok(chat)
    }

    /// The chat a socket URL token opens, while the URL is valid and the chat lives.
    pub fn socket_url_chat(&self, url_token: &str) -> Option<Arc<Chat>> {
        let reg = lock(&self.registry);
        let url = reg.socket_urls.get(url_token)?;
        if Instant::now() >= url.expires_at {
            return None;
        }
        let chat = reg.chats.get(&url.contact_id)?.chat.clone();
        drop(reg);
        chat.customer_access().ok()?;
        Some(chat)
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

    pub fn drop_sockets(&self, contact_id: Option<&str>) -> usize {
        let mut dropped = 0;
        for chat in self.chats_matching(contact_id) {
            let mut st = chat.lock();
            for s in st.sockets.drain(..) {
                if !s.tx.is_closed() {
                    dropped += 1;
                }
                s.kill.cancel();
            }
        }
        dropped
    }

    pub fn open_sockets(&self, contact_id: &str) -> usize {
        self.find_chat(contact_id).map_or(0, |c| c.open_sockets())
    }

    pub fn chat_ended(&self, contact_id: &str) -> Option<bool> {
        self.find_chat(contact_id).map(|c| c.is_ended())
    }

    pub fn transcript(&self, contact_id: &str) -> Option<Vec<Value>> {
        let chat = self.find_chat(contact_id)?;
        let st = chat.lock();
        Some(st.items.iter().map(|i| i.value.clone()).collect())
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
                    chat.commit(self, &mut st, left, true);
                }
                EndReason::Customer => {
                    chat.customer_left.store(true, Ordering::Release);
                    let left = chat.event(ct::PARTICIPANT_LEFT, Some(&chat.customer));
                    chat.commit(self, &mut st, left, true);
                }
                EndReason::Expired => {}
            }
            let ended = chat.event(ct::CHAT_ENDED, None);
            chat.commit(self, &mut st, ended, true);
            self.finish_locked(chat, &mut st);
        }
        self.retire(chat);
        true
    }

    /// Mark ended and let the sockets close once their queues are written.
    fn finish_locked(&self, chat: &Chat, st: &mut ChatState) {
        st.ended = true;
        chat.ended.store(true, Ordering::Release);
        st.sockets.clear();
        chat.agent_stop.cancel();
    }

    /// Move a just-ended chat to the ended list and forget the oldest ended chats.
    fn retire(&self, chat: &Arc<Chat>) {
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

    pub fn end_chat_by_agent(&self, contact_id: &str) -> bool {
        self.find_chat(contact_id)
            .is_some_and(|chat| self.end_chat(&chat, EndReason::Agent))
    }

    pub fn agent_say(&self, contact_id: &str, text: &str) -> Result<String, SimError> {
        let chat = self
            .find_chat(contact_id)
            .ok_or_else(|| SimError::UnknownContact(contact_id.to_owned()))?;
        let msg = chat.item("MESSAGE", ct::TEXT_PLAIN, Some(text), Some(&chat.agent));
        chat.push(self, msg, true)
            .map(|p| p.id)
            .ok_or_else(|| SimError::ChatEnded(contact_id.to_owned()))
    }

    pub fn push_raw_item(&self, contact_id: &str, item: Value) -> Result<Value, SimError> {
        let chat = self
            .find_chat(contact_id)
            .ok_or_else(|| SimError::UnknownContact(contact_id.to_owned()))?;
        let Value::Object(obj) = item else {
            return Err(SimError::InvalidItem(
                "an item must be a JSON object".into(),
            ));
        };
        if let Some(t) = obj.get("AbsoluteTime") {
            if t.as_str().and_then(parse_time_ms).is_none() {
                return Err(SimError::InvalidItem(
                    "AbsoluteTime must be a string like 2019-11-08T02:41:28.172Z".into(),
                ));
            }
        }
        if obj.get("Id").is_some_and(|id| !id.is_string()) {
            return Err(SimError::InvalidItem("Id must be a string".into()));
        }
        let kind = obj.get("Type").and_then(Value::as_str).unwrap_or("");
        let content_type = obj.get("ContentType").and_then(Value::as_str).unwrap_or("");
        let store = !(matches!(kind, "TYPING" | "MESSAGEMETADATA")
            || matches!(content_type, ct::TYPING | ct::DELIVERED | ct::READ));
        let ends = content_type == ct::CHAT_ENDED;
        let pushed = {
            let mut st = chat.lock();
            if st.ended {
                return Err(SimError::ChatEnded(contact_id.to_owned()));
            }
            let pushed = chat.commit(self, &mut st, obj, store);
            if ends {
                self.finish_locked(&chat, &mut st);
            }
            pushed
        };
        if ends {
            self.retire(&chat);
        }
        Ok(pushed.value)
    }

    /// Register a socket for the customer of `chat`; None when the per-participant limit is hit.
    pub fn register_socket(
        &self,
        chat: &Chat,
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
            .filter(|s| s.participant_id == chat.customer.id)
            .count();
        if mine >= self.config.max_sockets_per_participant {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.config.socket_queue);
        let subscribed = Arc::new(AtomicBool::new(false));
        let kill = self.shutdown.child_token();
        st.sockets.push(SocketEntry {
            participant_id: chat.customer.id.clone(),
            tx,
            subscribed: subscribed.clone(),
            kill: kill.clone(),
        });
        Some((rx, subscribed, kill))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_has_millisecond_precision() {
        assert_eq!(format_ms(1_573_180_888_172), "2019-11-08T02:41:28.172Z");
        assert_eq!(
            parse_time_ms("2019-11-08T02:41:28.172Z"),
            Some(1_573_180_888_172)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn bounded_map_evicts_oldest() {
        let mut m = BoundedMap::new(2);
        assert!(m.insert("a".into(), 1).is_empty());
        assert!(m.insert("b".into(), 2).is_empty());
        assert_eq!(m.insert("c".into(), 3), vec![("a".to_owned(), 1)]);
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get("c"), Some(&3));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_token());
    }
}

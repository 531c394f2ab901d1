//! Per-contact sessions. Each live chat has one [`Session`]: a shared handle, and one actor
//! task (the actor) that owns the contact's participant socket, keeps it healthy, backfills
//! what a reconnect missed and fans every event out to the chat's subscribers.

mod actor;
pub mod backfill;
pub mod cursor;
pub mod fanout;
pub(crate) mod grid;

/// The gateway's heartbeat schedule, for the bench's idle floor to keep the same one.
pub(crate) use actor::next_heartbeat;
mod member;
mod signal;
mod token;

use crate::cluster::{Cluster, Entry, LogId, Published};
use crate::connect::item::Item;
use crate::connect::{Connect, UpstreamError};
use crate::ops::metrics::Metrics;
use crate::pb;
use crate::security::limits::{EventBudget, EventBudgetSettings};
use crate::security::secret::Secret;
use crate::store::{ChatRecord, SessionStore};
use backfill::{KeyDigest, SeenKey};
use cursor::Cursor;
use fanout::{Fanout, Listener};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Session behaviour settings (all bounds configurable).
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Heartbeat period on the upstream socket; a heartbeat unanswered at the next tick means
    /// the socket is dead.
    pub heartbeat_interval: Duration,
    /// A session with no subscriber and no call for this long closes its socket (the chat
    /// itself goes on and is resumed on the next call).
    pub idle_timeout: Duration,
    /// Events kept per chat for subscribers that resume with a cursor.
    pub history: usize,
    /// Events a subscriber may fall behind before it is ended with its resume cursor.
    pub subscriber_queue: usize,
    /// Live sessions (chats with an open socket) in this process.
    pub max_sessions: usize,
    /// Concurrent Subscribe streams per chat.
    pub max_subscribers: usize,
    /// First and largest delay between reconnect attempts (jittered, doubling).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Time to open a socket and receive the subscribe acknowledgement.
    pub connect_timeout: Duration,
    /// Transcript pages fetched at most by one backfill.
    pub backfill_max_pages: usize,
    /// After EndChat, how long to wait for Connect's chat-ended item before ending locally.
    pub end_grace: Duration,
    /// Refresh the connection token this long before it expires.
    pub token_refresh_margin: Duration,
    /// Replace each socket this often, make-before-break (the official client does so about
    /// hourly).
    pub rotate_interval: Duration,
    /// Calls that may wait at once for the actor's token refresh (more wait for room).
    pub token_waiters: usize,
    /// The chat's budget of typing and receipts forwarded to Connect.
    pub event_budget: EventBudgetSettings,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            history: 512,
            subscriber_queue: 256,
            max_sessions: 10_000,
            max_subscribers: 32,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backfill_max_pages: 50,
            end_grace: Duration::from_secs(5),
            token_refresh_margin: Duration::from_secs(60),
            rotate_interval: Duration::from_secs(55 * 60),
            token_waiters: 64,
            event_budget: EventBudgetSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the gateway is at its limit of {0} live chats")]
    TooManySessions(usize),
    #[error("the chat already has {0} subscribers, the limit")]
    TooManySubscribers(usize),
    #[error("the chat has ended")]
    Ended,
    #[error("the resume cursor is not valid")]
    BadCursor,
    #[error("the chat's Connect connection is not ready")]
    NotReady,
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The state of the contact's upstream socket, as subscribers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    Connecting,
    Connected,
    Reconnecting,
}

impl Upstream {
    pub fn to_pb(self) -> pb::UpstreamState {
        match self {
            Upstream::Connecting | Upstream::Reconnecting => pb::UpstreamState::Reconnecting,
            Upstream::Connected => pb::UpstreamState::Connected,
        }
    }
}

/// What a subscriber receives: events are shared, never copied per subscriber until encoded.
pub type SharedEvent = Arc<pb::ChatEvent>;

/// Milliseconds since this function's first call in the process: a session's last use in
/// 8 bytes.
fn since_start() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The digest of item keys for every session's history and de-duplication set: one per
/// process (a pair of keys in every session cost 32 B a chat).
fn key_digest() -> &'static KeyDigest {
    static DIGEST: LazyLock<KeyDigest> = LazyLock::new(KeyDigest::new);
    &DIGEST
}

/// An event as the history keeps it: encoded (protobuf), about a third of the memory of the
/// decoded event with its strings, decoded again only for a subscriber that replays it.
/// A replay copies the entries out under the session's lock and decodes them after it. A
/// shared buffer (`Bytes`) cost 16 B more per entry, and after the entry's first replay an
/// allocation of its own for its count.
///
/// The event is kept without its cursor, which a replay builds again from its parts: a flags
/// byte, then the cursor's key and durable id (each a varint length and its bytes) where they
/// are not the event's item id, then the event encoded with an empty cursor. The cursor's
/// text (base64, about 100 B for two ids) was about a third of an entry.
type Recorded = Box<[u8]>;

/// [`Recorded`]'s flags: the cursor's key is the event's item id.
const KEY_IS_ITEM: u8 = 1;
/// [`Recorded`]'s flags: the cursor's durable id is the event's item id.
const DURABLE_IS_ITEM: u8 = 2;

/// `event` (its cursor empty) as the history keeps it, with `cursor`.
fn record(event: &pb::ChatEvent, cursor: &Cursor) -> Recorded {
    use prost::Message;
    debug_assert!(event.cursor.is_empty(), "the cursor is kept in parts");
    let parts = [
        (KEY_IS_ITEM, cursor.key.as_str()),
        (DURABLE_IS_ITEM, cursor.durable_id.as_str()),
    ];
    let mut flags = 0;
    let mut len = 1 + event.encoded_len();
    for (flag, part) in parts {
        if part == event.item_id {
            flags |= flag;
        } else {
            len += prost::length_delimiter_len(part.len()) + part.len();
        }
    }
    let mut bytes = Vec::with_capacity(len);
    bytes.push(flags);
    for (flag, part) in parts {
        if flags & flag == 0 {
            prost::encoding::encode_varint(part.len() as u64, &mut bytes);
            bytes.extend_from_slice(part.as_bytes());
        }
    }
    // Encoding into a buffer of the encoded length does not fail.
    let _ = event.encode(&mut bytes);
    bytes.into_boxed_slice()
}

/// A recorded event with its cursor; `None` for bytes [`record`] did not write.
fn unrecord(bytes: &[u8]) -> Option<pb::ChatEvent> {
    use prost::Message;
    let (&flags, mut rest) = bytes.split_first()?;
    let mut part = |flag: u8| -> Option<Option<String>> {
        if flags & flag != 0 {
            return Some(None);
        }
        let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        let text = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
        rest = &rest[len..];
        Some(Some(text))
    };
    let key = part(KEY_IS_ITEM)?;
    let durable_id = part(DURABLE_IS_ITEM)?;
    let mut event = pb::ChatEvent::decode(rest).ok()?;
    let cursor = Cursor {
        key: key.unwrap_or_else(|| event.item_id.clone()),
        durable_id: durable_id.unwrap_or_else(|| event.item_id.clone()),
    };
    event.cursor = cursor.encode();
    Some(event)
}

/// The history entries' events, still encoded.
fn recorded<'a>(entries: impl Iterator<Item = &'a (SeenKey, Recorded)>) -> Vec<Recorded> {
    entries.map(|(_, bytes)| bytes.clone()).collect()
}

/// Recorded events, decoded. They were encoded here, so they decode; one that did not would be
/// left out rather than sent as an empty event.
fn replay(recorded: Vec<Recorded>) -> Vec<SharedEvent> {
    recorded
        .into_iter()
        .filter_map(|bytes| unrecord(&bytes).map(Arc::new))
        .collect()
}

struct State {
    /// Recent events with their keys (digested by the session's [`KeyDigest`]), oldest first,
    /// for resuming subscribers.
    history: VecDeque<(SeenKey, Recorded)>,
    upstream: Upstream,
    ended: bool,
    last_cursor: Option<Cursor>,
    /// `None` once the actor has stopped: no event will follow.
    events: Option<Arc<Fanout>>,
    /// Cluster mode: the newest log entry applied (`None` until the log's tail is loaded).
    applied: Option<LogId>,
    /// Cluster mode: entries published before the tail was loaded (bounded by the history).
    pending: Vec<Published>,
}

impl State {
    /// The newest transcript item id delivered.
    fn durable(&self) -> String {
        self.last_cursor
            .as_ref()
            .map(|c| c.durable_id.clone())
            .unwrap_or_default()
    }
}

/// Cluster mode: a session's link to its chat's shared log.
pub(crate) struct Link {
    cluster: Cluster,
    /// Whether this replica holds the chat's lease (and so its socket).
    owner: AtomicBool,
    /// The log must be read: a gap, a lost pub/sub connection, or the chat's end.
    wake: Notify,
    /// The owner stored a new connection token.
    token_changed: Notify,
    /// The owner let go of its lease.
    released: Notify,
    /// Owner: a replica lacks the current connection token; share it again.
    reshare: Notify,
}

/// Why a session's actor is woken ([`signal::Wakeup`]).
pub(crate) mod wake_reason {
    /// EndChat began the chat's end.
    pub const ENDING: u8 = 1;
    /// A call asks for a new connection token.
    pub const REFRESH: u8 = 2;
    /// The actor's stop token may be cancelled (its waker fired).
    pub const STOP: u8 = super::signal::Wakeup::BY_WAKER;
}

/// A live chat. Cheap to share; the actor owns the socket.
pub struct Session {
    /// The chat's record: its contact, participant, participant token, owner and start.
    /// The in-memory store's own record, shared rather than copied into every session; with
    /// another store, [`ChatRecord::for_session`].
    record: Arc<ChatRecord>,
    /// A bot's record key (its contact and participant); a customer's is its contact id.
    bot_key: Option<Box<str>>,
    state: Mutex<State>,
    /// The current connection token for participant calls; `None` until the first
    /// CreateParticipantConnection succeeds. Callers wait on it.
    token: signal::Latest<Option<Secret>>,
    /// Calls whose token Connect refused ask the actor for a new one here (bounded by
    /// `SessionSettings::token_waiters`); the actor makes one CreateParticipantConnection
    /// for all of them.
    refresh: signal::Sender<token::RefreshRequest>,
    /// Turns true once the first connection and its backfill are done (or the session
    /// stopped): from then on the history holds the transcript's tail.
    ready: signal::Latest<bool>,
    /// Stops the actor on a drain: the process's shutdown token itself, shared by every
    /// session and never cancelled through one (a child token per session cost about 120 B a
    /// chat). A cluster owner stops its actor with a child token of its own.
    cancel: CancellationToken,
    /// Set by EndChat: the actor waits a grace period for Connect's chat-ended item.
    ending: AtomicBool,
    /// Wakes the actor for EndChat, a token-refresh request or its stop token
    /// ([`wake_reason`]).
    wakeup: Arc<signal::Wakeup>,
    subscribers: AtomicUsize,
    /// When the chat was last subscribed to or called here ([`since_start`]).
    last_used: AtomicU64,
    /// Typing and receipts forwarded to Connect: held per chat, so it ends with the chat.
    /// Made on the chat's first typing or receipt (inline, 104 B in every session).
    event_budget: Mutex<Option<Box<EventBudget>>>,
    /// The process's settings, shared: a copy in every session cost about 200 B a chat.
    settings: Arc<SessionSettings>,
    pub(crate) metrics: Arc<Metrics>,
    /// Cluster mode only (boxed: one process mode does not pay for it in every session).
    link: Option<Box<Link>>,
}

/// A snapshot for GetChat.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub upstream: Upstream,
    pub ended: bool,
    pub subscribers: usize,
    pub last_cursor: Option<String>,
}

/// Where a subscription starts.
pub struct Subscription {
    pub backlog: Vec<SharedEvent>,
    pub live: Listener,
    pub upstream: Upstream,
    /// The chat ended before the subscription; the backlog is all there is.
    pub ended: bool,
    /// Where the subscription starts: the cursor of the newest event before it.
    pub cursor: String,
    pub guard: SubscriberGuard,
}

/// Counts a subscriber for as long as it lives.
pub struct SubscriberGuard(Arc<Session>);

impl SubscriberGuard {
    pub fn session(&self) -> &Arc<Session> {
        &self.0
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.subscribers.dec();
        self.0.touch();
    }
}

impl Session {
    /// The chat's record key ([`ChatRecord::key`]): its contact, or for a bot its contact
    /// and participant. Names the session here and its keys in cluster mode.
    pub fn key(&self) -> &str {
        self.bot_key.as_deref().unwrap_or(&self.record.contact_id)
    }

    /// The chat's Connect contact id.
    pub fn contact_id(&self) -> &str {
        &self.record.contact_id
    }

    pub fn participant_id(&self) -> &str {
        &self.record.participant_id
    }

    /// The participant is a custom bot (AddBotParticipant).
    pub fn bot(&self) -> bool {
        self.record.bot
    }

    /// The principal that started the chat.
    pub fn principal(&self) -> &str {
        &self.record.owner
    }

    pub fn started_at(&self) -> SystemTime {
        self.record.started_at
    }

    fn participant_token(&self) -> &Secret {
        &self.record.participant_token
    }

    /// How long ago the chat was last subscribed to or called here.
    pub(crate) fn unused_for(&self) -> Duration {
        Duration::from_millis(since_start().saturating_sub(self.last_used.load(Ordering::Relaxed)))
    }

    pub fn touch(&self) {
        self.last_used.store(since_start(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn info(&self) -> SessionInfo {
        let st = self.lock();
        SessionInfo {
            upstream: st.upstream,
            ended: st.ended,
            subscribers: self.subscribers.load(Ordering::Relaxed),
            last_cursor: st.last_cursor.as_ref().map(Cursor::encode),
        }
    }

    /// The newest `limit` events of the history, oldest first (the debugging console).
    pub fn recent_events(&self, limit: usize) -> Vec<SharedEvent> {
        let st = self.lock();
        let skip = st.history.len().saturating_sub(limit);
        let events = recorded(st.history.iter().skip(skip));
        drop(st);
        replay(events)
    }

    /// Cluster mode: whether this replica holds the chat's socket (`None` in one process,
    /// where it always does while the session is connected).
    pub fn owns_socket(&self) -> Option<bool> {
        self.link.as_ref().map(|l| l.owner.load(Ordering::Relaxed))
    }

    /// Runs `f` on the chat's SendEvent budget.
    pub fn with_event_budget<T>(&self, f: impl FnOnce(&mut EventBudget) -> T) -> T {
        let mut budget = self.event_budget.lock().unwrap_or_else(|e| e.into_inner());
        f(budget.get_or_insert_with(|| Box::new(EventBudget::new(self.settings.event_budget))))
    }

    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// Waits, at most `wait`, until the session has connected once and backfilled.
    pub async fn wait_ready(&self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.ready.wait_for(|r| *r))
            .await
            .is_ok()
    }

    /// Registers a subscriber. With a cursor, the backlog holds what came after it; a cursor
    /// that the history does not reach is [`SessionError::BadCursor`] (the caller then
    /// catches up from the transcript). An empty cursor replays the whole history.
    pub fn subscribe(
        self: &Arc<Self>,
        resume: Option<&Cursor>,
    ) -> Result<Subscription, SessionError> {
        let st = self.lock();
        let Some(fanout) = st.events.as_ref() else {
            return Err(if st.ended {
                SessionError::Ended
            } else {
                SessionError::ShuttingDown
            });
        };
        let backlog = match resume {
            None => Vec::new(),
            Some(c) if c.key.is_empty() => recorded(st.history.iter()),
            Some(c) => {
                // The event itself, or else (an ephemeral event the history dropped) the
                // transcript item before it.
                let key = key_digest().of(&c.key);
                let pos = st
                    .history
                    .iter()
                    .position(|(k, _)| *k == key)
                    .or_else(|| {
                        let durable = c.durable_id.as_str();
                        (!durable.is_empty())
                            .then(|| {
                                let durable = key_digest().of(durable);
                                st.history.iter().position(|(k, _)| *k == durable)
                            })
                            .flatten()
                    })
                    .ok_or(SessionError::BadCursor)?;
                recorded(st.history.iter().skip(pos + 1))
            }
        };
        if !st.ended {
            let n = self.subscribers.load(Ordering::Relaxed);
            if n >= self.settings.max_subscribers {
                return Err(SessionError::TooManySubscribers(
                    self.settings.max_subscribers,
                ));
            }
        }
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        self.metrics.subscribers.inc();
        self.touch();
        let live = fanout.subscribe();
        let (upstream, ended) = (st.upstream, st.ended);
        let cursor = match resume {
            Some(c) => c.encode(),
            None => st.last_cursor.clone().unwrap_or_default().encode(),
        };
        // Decoded outside the lock: the actor publishes under it.
        drop(st);
        Ok(Subscription {
            backlog: replay(backlog),
            live,
            upstream,
            ended,
            cursor,
            guard: SubscriberGuard(self.clone()),
        })
    }

    /// Called after DisconnectParticipant succeeded.
    pub fn begin_end(&self) {
        self.ending.store(true, Ordering::Release);
        self.wakeup.raise(wake_reason::ENDING);
    }

    /// Records an item and fans it out (the caller has de-duplicated it).
    /// `digest`: the item's key as the session's [`KeyDigest`] makes it (the actor has it
    /// from its de-duplication already).
    fn publish_item(&self, item: Item, key: String, digest: SeenKey) {
        let mut st = self.lock();
        // The last cursor's durable id is reused for this one's (`record_item` replaces it).
        let mut durable = st
            .last_cursor
            .as_mut()
            .map(|c| std::mem::take(&mut c.durable_id))
            .unwrap_or_default();
        let (ev, cursor) = item_event(item, key, &mut durable);
        self.record_item(&mut st, digest, cursor, ev);
    }

    /// The log entry of an item (the caller has de-duplicated it).
    fn entry_for(&self, item: Item, key: String) -> Entry {
        let (event, cursor) = item_event(item, key, &mut self.lock().durable());
        Entry {
            key: cursor.key,
            durable: cursor.durable_id,
            event,
        }
    }

    /// The log entry of a gateway event.
    fn gateway_entry(&self, event: pb::chat_event::Event) -> Entry {
        Entry {
            key: String::new(),
            durable: self.lock().durable(),
            event: pb::ChatEvent {
                event: Some(event),
                ..Default::default()
            },
        }
    }

    /// Records an item's event (its cursor still empty) with `cursor`, and fans it out.
    fn record_item(&self, st: &mut State, key: SeenKey, cursor: Cursor, mut ev: pb::ChatEvent) {
        st.history.push_back((key, record(&ev, &cursor)));
        ev.cursor = cursor.encode();
        st.last_cursor = Some(cursor);
        let ev = Arc::new(ev);
        while st.history.len() > self.settings.history {
            st.history.pop_front();
        }
        if matches!(ev.event, Some(pb::chat_event::Event::ChatEnded(_))) {
            st.ended = true;
            self.wake_member();
        }
        if let Some(fanout) = &st.events {
            fanout.publish(ev);
        }
    }

    /// Publishes a gateway event (upstream state, or a chat end Connect did not report).
    fn publish_gateway(&self, event: pb::chat_event::Event) {
        let mut st = self.lock();
        self.record_gateway(&mut st, event);
    }

    fn record_gateway(&self, st: &mut State, event: pb::chat_event::Event) {
        if let pb::chat_event::Event::Upstream(u) = &event {
            st.upstream = match pb::UpstreamState::try_from(u.state) {
                Ok(pb::UpstreamState::Connected) => Upstream::Connected,
                _ => Upstream::Reconnecting,
            };
        }
        if matches!(event, pb::chat_event::Event::ChatEnded(_)) {
            if st.ended {
                return;
            }
            st.ended = true;
            self.wake_member();
        }
        let ev = Arc::new(pb::ChatEvent {
            cursor: st
                .last_cursor
                .as_ref()
                .map(Cursor::encode)
                .unwrap_or_default(),
            event: Some(event),
            ..Default::default()
        });
        if let Some(fanout) = &st.events {
            fanout.publish(ev);
        }
    }

    /// Cluster mode: tells the session's task that the log must be read.
    fn wake_member(&self) {
        if let Some(link) = &self.link {
            link.wake.notify_one();
        }
    }

    fn apply_entry(&self, st: &mut State, entry: Entry) {
        let Entry {
            key,
            durable,
            mut event,
        } = entry;
        if key.is_empty() {
            if let Some(e) = event.event {
                self.record_gateway(st, e);
            }
            return;
        }
        let digest = key_digest().of(&key);
        let cursor = Cursor {
            key,
            durable_id: durable,
        };
        event.cursor.clear();
        self.record_item(st, digest, cursor, event);
    }

    /// Cluster mode: applies a published entry if it follows the last one applied. False
    /// when entries before it are missing (the log must be read).
    fn apply_published(&self, p: Published) -> bool {
        let mut st = self.lock();
        let Some(applied) = st.applied else {
            if st.pending.len() < self.settings.history {
                st.pending.push(p);
            }
            return true;
        };
        if p.id <= applied {
            // Already applied; unless the log was lost and started again.
            if p.prev != LogId::default() || applied == LogId::default() {
                return true;
            }
            st.applied = Some(LogId::default());
        }
        if Some(p.prev) != st.applied {
            return false;
        }
        st.applied = Some(p.id);
        self.apply_entry(&mut st, p.entry);
        true
    }

    /// Cluster mode: applies entries read from the log, oldest first; `initial`: the log's
    /// tail, after which entries published meanwhile are applied. False when a gap remains.
    fn apply_read(&self, entries: Vec<(LogId, Entry)>, initial: bool) -> bool {
        let pending = {
            let mut st = self.lock();
            for (id, entry) in entries {
                if st.applied.is_some_and(|a| id <= a) {
                    continue;
                }
                st.applied = Some(id);
                self.apply_entry(&mut st, entry);
            }
            if initial && st.applied.is_none() {
                st.applied = Some(LogId::default());
            }
            std::mem::take(&mut st.pending)
        };
        let mut complete = true;
        for p in pending {
            complete &= self.apply_published(p);
        }
        complete
    }

    fn close(&self) {
        if let Some(fanout) = self.lock().events.take() {
            fanout.close();
        }
        self.ready.set(true);
    }
}

/// What follows a session's task, in either mode: the chat's end told and stored, the
/// session closed and taken out of the registry.
async fn finish(inner: &Inner, s: &Arc<Session>) {
    if s.is_ended() {
        if let Some(on_end) = inner.on_end.get() {
            on_end(s.key(), s.principal());
        }
        if let Err(e) = inner.store.mark_ended(s.key()).await {
            tracing::warn!(contact_id = %s.key(), error = %e, "could not mark the chat ended");
        }
    }
    s.close();
    s.metrics.live_chats.dec();
    let mut live = inner.live.lock().unwrap_or_else(|e| e.into_inner());
    if live.get(s.key()).is_some_and(|cur| Arc::ptr_eq(&cur.0, s)) {
        live.remove(s.key());
    }
}

/// The typed event for an item, with its cursor; `durable` is the newest transcript item id
/// before it and is advanced past this item when the item is itself a transcript item.
pub fn event_with_cursor(item: Item, key: String, durable: &mut String) -> (pb::ChatEvent, Cursor) {
    let (mut ev, cursor) = item_event(item, key, durable);
    ev.cursor = cursor.encode();
    (ev, cursor)
}

/// [`event_with_cursor`] with the event's cursor left empty (the history and the cluster log
/// keep the cursor's parts, not its text).
fn item_event(item: Item, key: String, durable: &mut String) -> (pb::ChatEvent, Cursor) {
    if !item.is_ephemeral() {
        if let Some(id) = &item.id {
            durable.clone_from(id);
        }
    }
    let cursor = Cursor {
        key,
        durable_id: durable.clone(),
    };
    (crate::connect::item::into_event(item), cursor)
}

/// What is told of a chat's end: its contact id and the principal that started it.
type OnEnd = Box<dyn Fn(&str, &str) + Send + Sync>;

struct Inner {
    upstream: Connect,
    store: Arc<dyn SessionStore>,
    settings: Arc<SessionSettings>,
    /// Found by their key without a copy of it.
    live: Mutex<HashSet<Live>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Told of every chat this process sees end (the per-caller chat slots).
    on_end: std::sync::OnceLock<OnEnd>,
    /// Cluster mode: the shared log and leases.
    cluster: Option<Cluster>,
}

/// A live session in the registry, hashed and compared by its key.
struct Live(Arc<Session>);

impl std::borrow::Borrow<str> for Live {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl std::hash::Hash for Live {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key().hash(state)
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for Live {}

/// The registry of live sessions: at most one per contact.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

impl Sessions {
    pub fn new(upstream: Connect, store: Arc<dyn SessionStore>, settings: SessionSettings) -> Self {
        Self::with_cluster(upstream, store, settings, None)
    }

    /// Sessions in cluster mode when `cluster` is given: one replica at a time owns each
    /// chat's socket and every replica serves from the chat's shared log.
    pub fn with_cluster(
        upstream: Connect,
        store: Arc<dyn SessionStore>,
        settings: SessionSettings,
        cluster: Option<Cluster>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                store,
                settings: Arc::new(settings),
                live: Mutex::new(HashSet::new()),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                on_end: std::sync::OnceLock::new(),
                cluster,
            }),
        }
    }

    /// Cluster mode's shared state, if on.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    /// Sets what is told of every chat that ends (once; later calls are ignored).
    pub fn on_chat_end(&self, f: impl Fn(&str, &str) + Send + Sync + 'static) {
        let _ = self.inner.on_end.set(Box::new(f));
    }

    pub fn upstream(&self) -> &Connect {
        &self.inner.upstream
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.inner.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.inner.upstream.metrics()
    }

    /// Live sessions in this process.
    pub fn live_count(&self) -> usize {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The live sessions in this process, newest first, at most `limit` of them.
    pub fn list(&self, limit: usize) -> Vec<Arc<Session>> {
        let mut all: Vec<Arc<Session>> = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.0.clone())
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.started_at()));
        all.truncate(limit);
        all
    }

    /// The live session under a record key ([`ChatRecord::key`]), if any.
    pub fn get(&self, key: &str) -> Option<Arc<Session>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|l| l.0.clone())
    }

    /// The live session of the chat, starting one (and its socket) when there is none.
    pub fn open(&self, record: &Arc<ChatRecord>) -> Result<Arc<Session>, SessionError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        let mut live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        let key = record.key();
        if let Some(Live(s)) = live.get(key.as_ref()) {
            s.touch();
            return Ok(s.clone());
        }
        if record.ended {
            return Err(SessionError::Ended);
        }
        if live.len() >= self.inner.settings.max_sessions {
            return Err(SessionError::TooManySessions(
                self.inner.settings.max_sessions,
            ));
        }
        let events = Fanout::new(self.inner.settings.subscriber_queue);
        let wakeup = Arc::new(signal::Wakeup::default());
        let (refresh, refresh_requests) = signal::queue(
            self.inner.settings.token_waiters.max(1),
            wakeup.clone(),
            wake_reason::REFRESH,
        );
        let session = Arc::new(Session {
            bot_key: record.bot.then(|| key.into()),
            // The in-memory store's record is shared as it is; a record read from Redis is
            // the caller's alone, and the session keeps only what it reads of it.
            record: if self.inner.store.shares_records() {
                record.clone()
            } else {
                Arc::new(record.for_session())
            },
            state: Mutex::new(State {
                history: VecDeque::new(),
                upstream: Upstream::Connecting,
                ended: false,
                last_cursor: None,
                events: Some(events),
                applied: None,
                pending: Vec::new(),
            }),
            token: signal::Latest::new(None),
            refresh,
            ready: signal::Latest::new(false),
            cancel: self.inner.shutdown.clone(),
            ending: AtomicBool::new(false),
            wakeup,
            subscribers: AtomicUsize::new(0),
            last_used: AtomicU64::new(since_start()),
            event_budget: Mutex::new(None),
            settings: self.inner.settings.clone(),
            metrics: self.inner.upstream.metrics().clone(),
            link: self.inner.cluster.as_ref().map(|cluster| {
                Box::new(Link {
                    cluster: cluster.clone(),
                    owner: AtomicBool::new(false),
                    wake: Notify::new(),
                    token_changed: Notify::new(),
                    released: Notify::new(),
                    reshare: Notify::new(),
                })
            }),
        });
        session.metrics.live_chats.inc();
        live.insert(Live(session.clone()));
        drop(live);
        let inner = self.inner.clone();
        let s = session.clone();
        // Mutable before the move: rebound inside the task, it took room there twice.
        let mut refresh_requests = refresh_requests;
        // One task per mode, each sized by its own future: a single process's task does not
        // reserve the cluster member's state, nor a replica's the actor's beside it.
        if s.link.is_some() {
            self.inner.tasks.spawn(async move {
                member::run(
                    s.clone(),
                    &inner.upstream,
                    &inner.settings,
                    &mut refresh_requests,
                )
                .await;
                finish(&inner, &s).await;
            });
        } else {
            self.inner.tasks.spawn(async move {
                actor::run(
                    s.clone(),
                    &inner.upstream,
                    &inner.settings,
                    &mut refresh_requests,
                    None,
                )
                .await;
                finish(&inner, &s).await;
            });
        }
        Ok(session)
    }

    /// Stops every session (their sockets close; the chats go on in Connect) and waits for
    /// the actors, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(grace, self.inner.tasks.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(item_id: &str) -> pb::ChatEvent {
        pb::ChatEvent {
            cursor: String::new(),
            item_id: item_id.into(),
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
            sender: Some(pb::Participant {
                participant_id: "agent-1".into(),
                display_name: "Agent \u{e9}".into(),
                role: 2,
            }),
            event: Some(pb::chat_event::Event::Message(pb::Message {
                content_type: "text/plain".into(),
                content: "hello\nworld".into(),
                chunk_number: 2,
                completed: true,
            })),
        }
    }

    /// Records `event` with `cursor` and replays it: the event as published, cursor and all.
    fn round_trip(event: &pb::ChatEvent, cursor: Cursor) -> Recorded {
        let bytes = record(event, &cursor);
        let history = [(KeyDigest::new().of(&cursor.key), bytes.clone())];
        let replayed = replay(recorded(history.iter()));
        let mut published = event.clone();
        published.cursor = cursor.encode();
        assert_eq!(replayed.len(), 1);
        assert_eq!(*replayed[0], published);
        bytes
    }

    #[test]
    fn the_history_replays_an_event_as_it_was_published() {
        let event = message("item-1");
        // A transcript message: both parts of its cursor are its id, kept as two flags.
        let plain = round_trip(
            &event,
            Cursor {
                key: "item-1".into(),
                durable_id: "item-1".into(),
            },
        );
        // A chunk of a streamed reply, and an ephemeral event after another item: the parts
        // that are not the item id are kept as they are.
        let chunk = round_trip(
            &event,
            Cursor {
                key: "item-1#2".into(),
                durable_id: "item-1".into(),
            },
        );
        round_trip(
            &message("typing-1"),
            Cursor {
                key: "typing-1".into(),
                durable_id: "item-0".into(),
            },
        );
        round_trip(&message("item-1"), Cursor::default());
        assert_eq!(chunk.len(), plain.len() + 1 + "item-1#2".len());
        let cursor_text = Cursor {
            key: "item-1".into(),
            durable_id: "item-1".into(),
        }
        .encode();
        let mut with_cursor = event.clone();
        with_cursor.cursor = cursor_text;
        use prost::Message;
        assert!(
            plain.len() < with_cursor.encoded_len(),
            "the cursor's text is not kept"
        );
    }

    #[test]
    fn bytes_the_history_did_not_write_replay_as_nothing() {
        let event = message("item-1");
        let whole = record(
            &event,
            &Cursor {
                key: "item-1#2".into(),
                durable_id: "x".into(),
            },
        );
        for bad in [&[][..], &whole[..3], &[0, 200][..], &[0, 1, 0xff][..]] {
            assert!(unrecord(bad).is_none(), "{bad:?}");
        }
        assert!(unrecord(&whole).is_some());
    }
}

//! Limits that protect the gateway and Connect's small per-instance quotas: request rate and
//! live chats per caller, the typing and receipt budget per chat, and the settings of the
//! server-wide bounds (message size, streams, deadlines). Every map here is bounded.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::Status;

/// Every limit the security layer applies, with defaults that suit one gateway in front of
/// one Connect instance.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests per second per caller (token bucket refill); 0 turns the limit off.
    pub caller_rate: u32,
    /// Requests a caller may make at once above its rate (bucket size).
    pub caller_burst: u32,
    /// Callers whose rate state is kept; past it, idle callers are forgotten first.
    pub max_tracked_callers: usize,
    /// Live (not ended) chats one caller may hold.
    pub max_chats_per_caller: usize,
    /// Largest gRPC request message, in bytes.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams (calls, Subscribe streams included) per connection.
    pub max_concurrent_streams: u32,
    /// Deadline of a unary call (and of a stream's opening).
    pub request_timeout: Duration,
    /// A chat forwards at most one typing event this often; others are answered OK locally.
    pub typing_interval: Duration,
    /// Message ids per chat remembered for receipt de-duplication.
    pub receipts_per_chat: usize,
    /// CreateParticipantConnection calls per second across all chats (0: unlimited).
    pub connection_rate: u32,
    /// CreateParticipantConnection calls allowed at once above that rate.
    pub connection_burst: u32,
    /// Largest frame or message accepted on an upstream participant socket, in bytes.
    pub max_upstream_frame_bytes: usize,
    /// Bytes of one attachment transfer held in flight (in chunks of at most
    /// `max_message_bytes`).
    pub attachment_buffer_bytes: usize,
    /// Attachment transfers (uploads and downloads) at once in this process.
    pub max_attachment_transfers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            caller_rate: 100,
            caller_burst: 200,
            max_tracked_callers: 100_000,
            max_chats_per_caller: 1_000,
            max_message_bytes: 256 * 1024,
            max_concurrent_streams: 256,
            request_timeout: Duration::from_secs(30),
            typing_interval: Duration::from_secs(10),
            receipts_per_chat: 256,
            connection_rate: 5,
            connection_burst: 9,
            max_upstream_frame_bytes: 256 * 1024,
            attachment_buffer_bytes: 1024 * 1024,
            max_attachment_transfers: 32,
        }
    }
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(1))?;
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// A token bucket per caller (keyed by principal id).
#[derive(Clone, Debug)]
pub struct CallerRates {
    /// `None` when the rate limit is off.
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    max_callers: usize,
}

impl CallerRates {
    pub fn new(limits: &Limits) -> Self {
        Self {
            limiter: quota(limits.caller_rate, limits.caller_burst)
                .map(|q| Arc::new(RateLimiter::keyed(q))),
            max_callers: limits.max_tracked_callers.max(1),
        }
    }

    /// Spends one request of `caller`'s budget, or says how long until one is available.
    pub fn check(&self, caller: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() >= self.max_callers {
            // Callers whose bucket is full again are indistinguishable from new ones.
            limiter.retain_recent();
            limiter.shrink_to_fit();
            if limiter.len() >= self.max_callers {
                return Err(Duration::from_secs(1));
            }
        }
        limiter
            .check_key(&caller.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The global CreateParticipantConnection budget: a mass reconnect waits its turn instead of
/// storming the instance.
pub type ConnectionBudget = Arc<governor::DefaultDirectRateLimiter>;

pub fn connection_budget(limits: &Limits) -> Option<ConnectionBudget> {
    quota(limits.connection_rate, limits.connection_burst).map(|q| Arc::new(RateLimiter::direct(q)))
}

/// One open call (or stream) on a connection, released when the call's response body is
/// finished or dropped.
#[derive(Debug)]
pub struct CallSlot(Arc<AtomicUsize>);

impl CallSlot {
    /// Takes a slot on the connection whose counter is `open`, or says the connection is at
    /// `max` open calls.
    pub fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| CallSlot(open.clone()))
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body holding its call's [`CallSlot`] until it is done.
pub struct SlotBody {
    inner: tonic::body::Body,
    _slot: CallSlot,
}

impl SlotBody {
    pub fn wrap(inner: tonic::body::Body, slot: CallSlot) -> tonic::body::Body {
        tonic::body::Body::new(Self { inner, _slot: slot })
    }
}

impl http_body::Body for SlotBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Live chats per caller. A slot is reserved before StartChat calls Connect and released if
/// the call fails; a chat's slot is released when its session sees it end (O(1)), and chats
/// that ended elsewhere (another replica) are pruned when the caller is at its limit.
#[derive(Debug)]
pub struct ChatsPerCaller {
    max: usize,
    /// Bounded: an entry exists only while its caller holds a chat or a reservation, and
    /// chats are bounded by the store.
    inner: Mutex<Holders>,
}

#[derive(Debug, Default)]
struct Holders {
    callers: HashMap<Arc<str>, Held>,
    /// Contact id → the caller holding it. The strings are shared with `callers`: one
    /// contact id and one caller name each, however many maps name them.
    owner_of: HashMap<Arc<str>, Arc<str>>,
}

#[derive(Debug, Default)]
struct Held {
    reserved: usize,
    chats: std::collections::HashSet<Arc<str>>,
}

impl Holders {
    fn release(&mut self, contact_id: &str) {
        let Some(caller) = self.owner_of.remove(contact_id) else {
            return;
        };
        if let Some(held) = self.callers.get_mut(&*caller) {
            held.chats.remove(contact_id);
            if held.chats.is_empty() && held.reserved == 0 {
                self.callers.remove(&*caller);
            }
        }
    }
}

/// A reserved chat slot; dropped without [`Reservation::commit`], it is released.
pub struct Reservation<'a> {
    owner: &'a ChatsPerCaller,
    caller: String,
    committed: bool,
}

impl ChatsPerCaller {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            inner: Mutex::new(Holders::default()),
        }
    }

    /// The most live chats a caller may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The contact ids `caller` holds (to be checked for chats that ended).
    pub fn held(&self, caller: &str) -> Vec<String> {
        self.lock()
            .callers
            .get(caller)
            .map(|h| h.chats.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    }

    /// Releases the slot of a chat that ended, whoever holds it.
    pub fn release(&self, contact_id: &str) {
        self.lock().release(contact_id);
    }

    /// Forgets chats of `caller` that ended.
    pub fn forget(&self, ended: &[String]) {
        let mut inner = self.lock();
        for id in ended {
            inner.release(id);
        }
    }

    /// Reserves a slot for a new chat, or refuses with the limit.
    pub fn reserve(&self, caller: &str) -> Result<Reservation<'_>, usize> {
        let mut inner = self.lock();
        let held = match inner.callers.get_mut(caller) {
            Some(held) => held,
            None => inner.callers.entry(caller.into()).or_default(),
        };
        if held.reserved + held.chats.len() >= self.max {
            if held.reserved == 0 && held.chats.is_empty() {
                inner.callers.remove(caller);
            }
            return Err(self.max);
        }
        held.reserved += 1;
        Ok(Reservation {
            owner: self,
            caller: caller.to_owned(),
            committed: false,
        })
    }

    fn settle(&self, caller: &str, contact_id: Option<&str>) {
        let mut inner = self.lock();
        let Some(name) = inner.callers.get_key_value(caller).map(|(n, _)| n.clone()) else {
            return;
        };
        let Some(held) = inner.callers.get_mut(caller) else {
            return;
        };
        held.reserved = held.reserved.saturating_sub(1);
        // A StartChat replayed with the same client token returns a chat already held.
        let newly = contact_id.filter(|id| !held.chats.contains(*id)).map(|id| {
            let id: Arc<str> = id.into();
            held.chats.insert(id.clone());
            (id, name)
        });
        let empty = held.chats.is_empty() && held.reserved == 0;
        if empty {
            inner.callers.remove(caller);
        }
        if let Some((id, name)) = newly {
            inner.owner_of.insert(id, name);
        }
    }
}

impl Reservation<'_> {
    pub fn commit(mut self, contact_id: &str) {
        self.committed = true;
        self.owner.settle(&self.caller, Some(contact_id));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.owner.settle(&self.caller, None);
        }
    }
}

/// A receipt's strength: a read receipt implies delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReceiptKind {
    Delivered = 1,
    Read = 2,
}

/// The bounds of a chat's [`EventBudget`].
#[derive(Clone, Copy, Debug)]
pub struct EventBudgetSettings {
    /// Typing is forwarded at most once per this interval.
    pub typing_interval: Duration,
    /// Message ids remembered for receipt de-duplication (the oldest forgotten first).
    pub receipts_per_chat: usize,
}

impl Default for EventBudgetSettings {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            typing_interval: l.typing_interval,
            receipts_per_chat: l.receipts_per_chat,
        }
    }
}

/// One chat's budget of SendEvent calls to Connect: typing at most once per interval, one
/// receipt of each kind per message (and no delivered receipt after a read one). Each live
/// session holds its own, so it goes with the chat and costs O(1) per event.
#[derive(Debug)]
pub struct EventBudget {
    settings: EventBudgetSettings,
    last_typing: Option<Instant>,
    /// Message id → the strongest receipt forwarded for it, oldest first.
    receipts: hashlink::LinkedHashMap<String, ReceiptKind>,
}

impl EventBudget {
    pub fn new(settings: EventBudgetSettings) -> Self {
        Self {
            settings,
            last_typing: None,
            receipts: hashlink::LinkedHashMap::new(),
        }
    }

    /// Whether a typing event goes to Connect now (and, if so, the interval restarts).
    pub fn take_typing(&mut self) -> bool {
        let now = Instant::now();
        match self.last_typing {
            Some(t) if now.duration_since(t) < self.settings.typing_interval => false,
            _ => {
                self.last_typing = Some(now);
                true
            }
        }
    }

    /// Gives a typing slot back after Connect refused the call.
    pub fn return_typing(&mut self) {
        self.last_typing = None;
    }

    /// Whether this receipt goes to Connect (and, if so, it is remembered).
    pub fn take_receipt(&mut self, message_id: &str, kind: ReceiptKind) -> bool {
        if let Some(strongest) = self.receipts.get_mut(message_id) {
            if *strongest >= kind {
                return false;
            }
            *strongest = kind;
            return true;
        }
        if self.receipts.len() >= self.settings.receipts_per_chat.max(1) {
            self.receipts.pop_front();
        }
        self.receipts.insert(message_id.to_owned(), kind);
        true
    }

    /// Forgets a receipt after Connect refused it, so a retry is forwarded.
    pub fn return_receipt(&mut self, message_id: &str, kind: ReceiptKind) {
        match (self.receipts.get_mut(message_id), kind) {
            (Some(k), ReceiptKind::Read) if *k == ReceiptKind::Read => *k = ReceiptKind::Delivered,
            (Some(k), ReceiptKind::Delivered) if *k == ReceiptKind::Delivered => {
                self.receipts.remove(message_id);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(typing_interval: Duration, receipts_per_chat: usize) -> EventBudget {
        EventBudget::new(EventBudgetSettings {
            typing_interval,
            receipts_per_chat,
        })
    }

    #[test]
    fn typing_is_forwarded_once_per_interval() {
        let mut b = budget(Duration::from_secs(3600), 4);
        assert!(b.take_typing());
        assert!(!b.take_typing());
        b.return_typing();
        assert!(b.take_typing());
        let mut b = budget(Duration::ZERO, 4);
        assert!(b.take_typing() && b.take_typing());
    }

    #[test]
    fn receipts_are_deduplicated_and_read_implies_delivered() {
        let mut b = budget(Duration::ZERO, 2);
        assert!(b.take_receipt("m1", ReceiptKind::Delivered));
        assert!(!b.take_receipt("m1", ReceiptKind::Delivered));
        assert!(b.take_receipt("m1", ReceiptKind::Read));
        assert!(!b.take_receipt("m1", ReceiptKind::Read));
        assert!(!b.take_receipt("m1", ReceiptKind::Delivered));
        assert!(b.take_receipt("m2", ReceiptKind::Read));
        assert!(!b.take_receipt("m2", ReceiptKind::Delivered));
        b.return_receipt("m2", ReceiptKind::Read);
        assert!(b.take_receipt("m2", ReceiptKind::Read));
        // The oldest message id is forgotten past the per-chat bound.
        assert!(b.take_receipt("m3", ReceiptKind::Read));
        assert!(b.take_receipt("m1", ReceiptKind::Read));
        assert_eq!(b.receipts.len(), 2);
    }

    #[test]
    fn chats_per_caller_reserve_commit_and_release() {
        let c = ChatsPerCaller::new(2);
        let r1 = c.reserve("a").unwrap();
        let r2 = c.reserve("a").unwrap();
        assert_eq!(c.reserve("a").err(), Some(2));
        assert!(c.reserve("b").is_ok());
        r1.commit("x");
        drop(r2);
        assert_eq!(c.held("a"), ["x"]);
        c.reserve("a").unwrap().commit("x");
        assert_eq!(c.held("a"), ["x"]);
        c.forget(&["x".to_string()]);
        assert!(c.held("a").is_empty());
        c.reserve("a").unwrap().commit("y");
        c.reserve("a").unwrap().commit("z");
        assert!(c.reserve("a").is_err());
        // A chat's end frees its slot at once.
        c.release("y");
        c.reserve("a").unwrap().commit("w");
        c.release("z");
        c.release("w");
        assert!(c.inner.lock().unwrap().callers.is_empty());
        assert!(c.inner.lock().unwrap().owner_of.is_empty());
    }

    #[test]
    fn caller_rates_refuse_past_the_burst() {
        let r = CallerRates::new(&Limits {
            caller_rate: 1,
            caller_burst: 2,
            ..Limits::default()
        });
        assert!(r.check("a").is_ok() && r.check("a").is_ok());
        let wait = r.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(r.check("b").is_ok());
        let off = CallerRates::new(&Limits {
            caller_rate: 0,
            ..Limits::default()
        });
        assert!((0..1000).all(|_| off.check("a").is_ok()));
    }
}

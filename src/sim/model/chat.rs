//! One chat contact: its participants, its transcript items and the sockets they are pushed
//! to, its attachments and ClientTokens, and the channel to its scripted agent. A chat knows
//! nothing of the registry that finds it; the registry stamps and pushes items through it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::support::{lock, BoundedMap};
use super::time::{format_ms, now_ms, parse_time_ms};
use crate::connect::content_type as ct;

/// What a chat's agent task hears about.
#[derive(Debug)]
pub enum AgentEvent {
    /// A customer message was stored (SendMessage or the initial message).
    CustomerMessage { id: String, content: String },
}

/// The agent task's end of a chat's bounded event channel.
pub type AgentInbox = mpsc::Receiver<AgentEvent>;

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
    /// Shared with the [`Pushed`] answer: storing an item does not copy it.
    pub value: Arc<Value>,
}

/// The result of pushing an item.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub id: String,
    pub abs_ms: i64,
    pub value: Arc<Value>,
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
    /// The scan's verdict, once completed: `APPROVED` or `REJECTED`.
    pub status: &'static str,
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
    /// Push notification registrations: id → (device type, client token).
    pub push_registrations: BoundedMap<(String, String)>,
    pub customer_connected: bool,
    pub ended: bool,
    pub agent_messages: u64,
    /// Custom bots CreateParticipant added, in order (a token's participant index is its
    /// position plus one; 0 is the customer).
    pub bots: Vec<Bot>,
}

/// A custom bot participant (CreateParticipant, role CUSTOM_BOT).
pub struct Bot {
    pub member: Member,
    /// CreateParticipant's ClientToken, for its idempotency.
    pub client_token: Option<String>,
    /// The bot disconnected (DisconnectParticipant): its tokens no longer work.
    pub left: bool,
}

/// Which participant of a chat a token belongs to: 0 the customer, n the chat's n-th bot.
pub type Who = u8;

/// The customer's [`Who`].
pub const CUSTOMER: Who = 0;

impl ChatState {
    /// An empty chat; `client_tokens` bounds each ClientToken map.
    pub fn new(client_tokens: usize) -> Self {
        ChatState {
            items: VecDeque::new(),
            next_seq: 1,
            last_ms: 0,
            ids: HashMap::new(),
            sockets: Vec::new(),
            message_tokens: BoundedMap::new(client_tokens),
            event_tokens: BoundedMap::new(client_tokens),
            upload_tokens: BoundedMap::new(client_tokens),
            attachments: HashMap::new(),
            push_registrations: BoundedMap::new(client_tokens),
            customer_connected: false,
            ended: false,
            agent_messages: 0,
            bots: Vec::new(),
        }
    }

    /// The bot `who` names (`who` > 0).
    pub fn bot(&self, who: Who) -> Option<&Bot> {
        usize::from(who)
            .checked_sub(1)
            .and_then(|i| self.bots.get(i))
    }

    /// Sequence number of the stored item with that id.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Whether a stored item with that id exists.
    pub fn has_item(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Complete an item of chat `contact_id` and store it (when `store`, keeping at most
    /// `max_items`): fills `Id`, `AbsoluteTime`, `ContactId` and `InitialContactId` when
    /// absent. Returns the item and its `aws/chat` socket frame, serialised once.
    pub fn record(
        &mut self,
        contact_id: &str,
        mut obj: Map<String, Value>,
        store: bool,
        max_items: usize,
    ) -> (Pushed, Utf8Bytes) {
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
                self.last_ms = self.last_ms.max(ms);
                ms
            }
            None => {
                // Strictly increasing within a chat: bump by 1 ms on ties.
                let ms = now_ms().max(self.last_ms.saturating_add(1));
                self.last_ms = ms;
                obj.insert("AbsoluteTime".into(), Value::String(format_ms(ms)));
                ms
            }
        };
        obj.entry("ContactId")
            .or_insert_with(|| Value::String(contact_id.to_owned()));
        obj.entry("InitialContactId")
            .or_insert_with(|| Value::String(contact_id.to_owned()));
        let value = Arc::new(Value::Object(obj));
        let frame = chat_frame(&value);
        if store {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.items.push_back(StoredItem {
                seq,
                id: id.clone(),
                abs_ms,
                value: value.clone(),
            });
            self.ids.insert(id.clone(), seq);
            while self.items.len() > max_items {
                if let Some(old) = self.items.pop_front() {
                    if self.ids.get(&old.id) == Some(&old.seq) {
                        self.ids.remove(&old.id);
                    }
                }
            }
        }
        (Pushed { id, abs_ms, value }, frame)
    }

    /// Enqueue a frame on every subscribed socket of the chat. A full queue closes that
    /// socket; returns how many were closed so.
    pub fn fan_out(&mut self, frame: Utf8Bytes, deliver_at: Instant) -> u64 {
        let mut closed_slow = 0;
        self.sockets.retain(|s| {
            if !s.subscribed.load(Ordering::Acquire) {
                return !s.tx.is_closed();
            }
            match s.tx.try_send(ChatFrame {
                text: frame.clone(),
                deliver_at,
            }) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    closed_slow += 1;
                    s.kill.cancel();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        closed_slow
    }
}

/// The `aws/chat` socket frame of `item`: the item's JSON written once, directly as the
/// frame's `content` string (the envelope is fixed, so it is not built as a JSON value).
fn chat_frame(item: &Value) -> Utf8Bytes {
    use crate::connect::socket::CHAT_HEAD as HEAD;
    // An item's text is a few hundred bytes; every quote of it gains a backslash.
    let mut frame = String::with_capacity(512);
    frame.push_str(HEAD);
    super::frame::escaped_json_into(&mut frame, item);
    frame.push_str("\"}");
    Utf8Bytes::from(frame)
}

/// One chat contact.
pub struct Chat {
    pub contact_id: String,
    pub instance_id: String,
    pub customer: Member,
    pub agent: Member,
    pub supported_types: Vec<String>,
    pub duration: Duration,
    pub continued_from: Option<String>,
    /// StartChatContact's optional settings, when the request had any (boxed: most chats
    /// have none).
    pub options: Option<Box<StartOptions>>,
    pub(super) ended: AtomicBool,
    pub(super) customer_left: AtomicBool,
    pub(super) state: Mutex<ChatState>,
    /// Customer events for this chat's agent task (bounded by `agent_queue`).
    pub(super) agent_tx: mpsc::Sender<AgentEvent>,
    /// Stops the agent task when the chat ends or the simulator shuts down.
    pub agent_stop: CancellationToken,
}

/// StartChatContact settings the simulator keeps to show what a chat was started with.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartOptions {
    pub customer_id: Option<String>,
    pub related_contact_id: Option<String>,
    pub response_mode: Option<String>,
    pub disconnect_on_customer_exit: Option<Vec<String>>,
    pub segment_attributes: Option<serde_json::Map<String, serde_json::Value>>,
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

    /// The participant `who` names, while its tokens work (the chat lives and it has not
    /// left).
    pub fn member(&self, who: Who) -> Result<Member, Denied> {
        if who == CUSTOMER {
            return self.customer_access().map(|()| self.customer.clone());
        }
        let st = self.lock();
        if st.ended {
            return Err(Denied("The chat has ended"));
        }
        match st.bot(who) {
            Some(b) if b.left => Err(Denied("The participant has disconnected")),
            Some(b) => Ok(b.member.clone()),
            None => Err(Denied("Invalid participant token")),
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

    /// Open sockets of this chat (pruning the ones whose task has gone).
    pub fn open_sockets(&self) -> usize {
        let mut st = self.lock();
        st.sockets.retain(|s| !s.tx.is_closed());
        st.sockets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_frame_holds_the_item_as_a_json_string_in_connects_envelope() {
        let item = serde_json::json!({
            "Id": "i1",
            "Type": "MESSAGE",
            "Content": "say \"hi\"\n\\ \u{1} caf\u{e9} \u{1f600}",
        });
        let frame = chat_frame(&item);
        let envelope: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(envelope["topic"], "aws/chat");
        assert_eq!(envelope["contentType"], "application/json");
        let content = envelope["content"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(content).unwrap(), item);
        // The gateway reads Connect's layout in one pass; the simulator writes that layout.
        assert!(matches!(
            crate::connect::socket::parse(&frame),
            crate::connect::socket::Inbound::Chat(i) if i.id.as_deref() == Some("i1")
        ));
    }
}

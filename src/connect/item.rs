//! Connect transcript items — what the participant socket pushes and GetTranscript returns —
//! and their translation into the public API's typed [`pb::ChatEvent`]s. Pure functions only.

use crate::pb;
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};

use super::content_type::{self as ct, EVENT_PREFIX};

/// A transcript item as Connect sends it. Every field is optional on the wire; unknown fields
/// are ignored here but kept in [`Item::raw`] so untyped items pass through unchanged.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Item {
    pub id: Option<String>,
    pub absolute_time: Option<String>,
    pub content: Option<String>,
    pub content_type: Option<String>,
    #[serde(rename = "Type")]
    pub kind: Option<ItemType>,
    pub participant_id: Option<String>,
    pub display_name: Option<String>,
    pub participant_role: Option<Role>,
    pub attachments: Option<Vec<AttachmentItem>>,
    pub message_metadata: Option<MessageMetadata>,
    pub contact_id: Option<String>,
    #[serde(skip)]
    pub raw: String,
}

/// An item's `Type`. Types Connect adds later are kept as they came ([`ItemType::Other`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, strum::EnumString, strum::AsRefStr)]
#[serde(into = "String")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemType {
    Message,
    Event,
    Attachment,
    Typing,
    #[strum(serialize = "MESSAGEMETADATA")]
    MessageMetadata,
    ParticipantJoined,
    ParticipantLeft,
    ChatEnded,
    TransferSucceeded,
    TransferFailed,
    ConnectionAck,
    MessageRead,
    MessageDelivered,
    #[strum(default)]
    Other(String),
}

impl From<String> for ItemType {
    fn from(s: String) -> Self {
        // `strum(default)` makes parsing total: an unknown type becomes `Other`.
        s.parse().unwrap_or(ItemType::Other(s))
    }
}

impl From<ItemType> for String {
    fn from(t: ItemType) -> Self {
        match t {
            ItemType::Other(s) => s,
            known => known.as_ref().to_owned(),
        }
    }
}

impl ItemType {
    pub fn as_str(&self) -> &str {
        match self {
            ItemType::Other(s) => s,
            known => known.as_ref(),
        }
    }
}

/// Reads a string-valued enum whose parse is total (`strum(default)`): a known value costs
/// no allocation, an unknown one is kept as it came.
struct StrEnum<T>(std::marker::PhantomData<T>);

impl<T> serde::de::Visitor<'_> for StrEnum<T>
where
    T: std::str::FromStr + From<String>,
{
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok(v.parse().unwrap_or_else(|_| T::from(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<T, E> {
        Ok(T::from(v))
    }
}

impl<'de> Deserialize<'de> for ItemType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrEnum(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrEnum(std::marker::PhantomData))
    }
}

/// A participant's role. Roles Connect adds later are kept as they came.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, strum::EnumString, strum::AsRefStr)]
#[serde(into = "String")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Agent,
    Customer,
    System,
    CustomBot,
    Supervisor,
    #[strum(default)]
    Other(String),
}

impl From<String> for Role {
    fn from(s: String) -> Self {
        s.parse().unwrap_or(Role::Other(s))
    }
}

impl From<Role> for String {
    fn from(r: Role) -> Self {
        match r {
            Role::Other(s) => s,
            known => known.as_ref().to_owned(),
        }
    }
}

impl Role {
    fn to_pb(&self) -> pb::ParticipantRole {
        match self {
            Role::Agent => pb::ParticipantRole::Agent,
            Role::Customer => pb::ParticipantRole::Customer,
            Role::System => pb::ParticipantRole::System,
            Role::CustomBot => pb::ParticipantRole::CustomBot,
            Role::Supervisor => pb::ParticipantRole::Supervisor,
            Role::Other(_) => pb::ParticipantRole::Unspecified,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AttachmentItem {
    pub content_type: Option<String>,
    pub attachment_id: Option<String>,
    pub attachment_name: Option<String>,
    pub status: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MessageMetadata {
    pub message_id: Option<String>,
    pub receipts: Option<Vec<Receipt>>,
    pub message_completed: Option<bool>,
    pub chunk_number: Option<u32>,
    /// PROCESSING, FAILED or REJECTED (message processing such as redaction).
    pub message_processing_status: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Receipt {
    pub delivered_timestamp: Option<String>,
    pub read_timestamp: Option<String>,
    pub recipient_participant_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed transcript item: {0}")]
pub struct ItemError(String);

/// Describes a JSON error without quoting the input (serde's messages may quote values, and
/// a frame may carry anything).
pub fn json_error(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

impl Item {
    /// Parses an item from its JSON text (the `content` of an `aws/chat` frame).
    pub fn parse(json: impl Into<String>) -> Result<Self, ItemError> {
        let json = json.into();
        let mut item: Item = serde_json::from_str(&json).map_err(|e| ItemError(json_error(&e)))?;
        if item.id.as_deref().unwrap_or("").is_empty() {
            return Err(ItemError("item has no Id".into()));
        }
        item.raw = json;
        Ok(item)
    }

    /// The key that identifies this item for de-duplication: its id, and for streamed bot
    /// replies its chunk number too.
    pub fn dedupe_key(&self) -> String {
        let id = self.id.as_deref().unwrap_or("");
        match self.message_metadata.as_ref().and_then(|m| m.chunk_number) {
            Some(n) if self.kind == Some(ItemType::Message) => format!("{id}#{n}"),
            _ => id.to_owned(),
        }
    }

    /// Whether this item ends the chat.
    pub fn is_chat_end(&self) -> bool {
        self.kind == Some(ItemType::ChatEnded)
            || self.content_type.as_deref() == Some(ct::CHAT_ENDED)
    }

    /// Items that Connect keeps in the transcript (and so can be backfilled); typing and
    /// receipts are ephemeral.
    pub fn is_ephemeral(&self) -> bool {
        matches!(
            self.kind,
            Some(ItemType::Typing | ItemType::MessageMetadata)
        ) || self
            .content_type
            .as_deref()
            .is_some_and(|c| c.ends_with(".event.typing") || c.contains(".event.message."))
    }
}

/// Converts an SDK transcript item into our [`Item`].
pub fn from_sdk(item: &aws_sdk_connectparticipant::types::Item) -> Item {
    let mut out = Item {
        id: item.id().map(str::to_owned),
        absolute_time: item.absolute_time().map(str::to_owned),
        content: item.content().map(str::to_owned),
        content_type: item.content_type().map(str::to_owned),
        kind: item.r#type().map(|t| ItemType::from(t.as_str().to_owned())),
        participant_id: item.participant_id().map(str::to_owned),
        display_name: item.display_name().map(str::to_owned),
        participant_role: item
            .participant_role()
            .map(|r| Role::from(r.as_str().to_owned())),
        attachments: (!item.attachments().is_empty()).then(|| {
            item.attachments()
                .iter()
                .map(|a| AttachmentItem {
                    content_type: a.content_type().map(str::to_owned),
                    attachment_id: a.attachment_id().map(str::to_owned),
                    attachment_name: a.attachment_name().map(str::to_owned),
                    status: a.status().map(|s| s.as_str().to_owned()),
                })
                .collect()
        }),
        message_metadata: item.message_metadata().map(|m| MessageMetadata {
            message_id: m.message_id().map(str::to_owned),
            receipts: Some(
                m.receipts()
                    .iter()
                    .map(|r| Receipt {
                        delivered_timestamp: r.delivered_timestamp().map(str::to_owned),
                        read_timestamp: r.read_timestamp().map(str::to_owned),
                        recipient_participant_id: r.recipient_participant_id().map(str::to_owned),
                    })
                    .collect(),
            ),
            // The SDK's model has no streaming-chunk members; socket items carry them.
            message_completed: None,
            chunk_number: None,
            message_processing_status: m.message_processing_status().map(|s| s.as_str().to_owned()),
        }),
        contact_id: item.contact_id().map(str::to_owned),
        raw: String::new(),
    };
    out.raw = serde_json::to_string(&out).unwrap_or_default();
    out
}

/// Parses Connect's `2019-11-08T02:41:28.172Z` into a protobuf timestamp.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = t.unix_timestamp_nanos();
    Some(Timestamp {
        seconds: i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?,
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?,
    })
}

/// Translates an item into a typed event (without cursor). Items the gateway does not type
/// pass through as [`pb::RawItem`].
/// An `authentication.<state>` event: its state and the session id its content names.
fn authentication(state: &str, item: &Item) -> Option<pb::chat_event::Event> {
    use pb::AuthenticationState as S;
    let state = match state {
        "initiated" => S::Initiated,
        "succeeded" => S::Succeeded,
        "failed" => S::Failed,
        "timeout" => S::Timeout,
        "expired" => S::Expired,
        "cancelled" => S::Cancelled,
        _ => return None,
    };
    let content = item.content.clone().unwrap_or_default();
    let session_id = serde_json::from_str::<serde_json::Value>(&content)
        .ok()
        .and_then(|v| v.get("SessionId")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    Some(pb::chat_event::Event::Authentication(
        pb::AuthenticationEvent {
            state: state as i32,
            session_id,
            content,
        },
    ))
}

/// A message metadata item's processing status, if it has one.
fn message_processing(item: &Item) -> Option<pb::chat_event::Event> {
    use pb::MessageProcessingStatus as S;
    let meta = item.message_metadata.as_ref()?;
    let status = match meta.message_processing_status.as_deref()? {
        "PROCESSING" => S::Processing,
        "FAILED" => S::Failed,
        "REJECTED" => S::Rejected,
        _ => S::Unspecified,
    };
    Some(pb::chat_event::Event::MessageProcessing(
        pb::MessageProcessing {
            message_id: meta.message_id.clone().unwrap_or_default(),
            status: status as i32,
        },
    ))
}

pub fn to_event(item: &Item) -> pb::ChatEvent {
    into_event(item.clone())
}

/// [`to_event`] for an item no longer needed: its strings move into the event.
pub fn into_event(mut item: Item) -> pb::ChatEvent {
    use pb::chat_event::Event;
    use ItemType as T;
    let content_type = item.content_type.take().unwrap_or_default();
    let ct = content_type.as_str();
    let kind = item.kind.as_ref();
    let event_name = ct.strip_prefix(EVENT_PREFIX);
    let receipt = |read: bool| -> Option<Event> {
        let meta = item.message_metadata.as_ref()?;
        let message_id = meta.message_id.clone().unwrap_or_default();
        let receipts = meta.receipts.as_deref().unwrap_or(&[]);
        let r = receipts.iter().find(|r| {
            if read {
                r.read_timestamp.is_some()
            } else {
                r.delivered_timestamp.is_some()
            }
        })?;
        let receipt = pb::Receipt {
            message_id,
            recipient_participant_id: r.recipient_participant_id.clone().unwrap_or_default(),
        };
        Some(if read {
            Event::Read(receipt)
        } else {
            Event::Delivered(receipt)
        })
    };
    let event = match (kind, event_name) {
        (Some(T::Message), _) => {
            let meta = item.message_metadata.as_ref();
            Some(Event::Message(pb::Message {
                content_type: ct.to_owned(),
                content: item.content.take().unwrap_or_default(),
                chunk_number: meta.and_then(|m| m.chunk_number).unwrap_or(0),
                completed: meta.and_then(|m| m.message_completed).unwrap_or(true),
            }))
        }
        (Some(T::Typing), _) | (_, Some("typing")) => Some(Event::Typing(pb::Typing {})),
        (Some(T::ParticipantJoined), _) | (_, Some("participant.joined")) => {
            Some(Event::ParticipantJoined(pb::ParticipantChange {}))
        }
        (Some(T::ParticipantLeft), _) | (_, Some("participant.left")) => {
            Some(Event::ParticipantLeft(pb::ParticipantChange {}))
        }
        (_, Some("participant.idle")) => Some(Event::ParticipantIdle(pb::ParticipantChange {})),
        (_, Some("participant.returned")) => {
            Some(Event::ParticipantReturned(pb::ParticipantChange {}))
        }
        (Some(T::ChatEnded), _) | (_, Some("chat.ended")) => {
            Some(Event::ChatEnded(pb::ChatEnded {}))
        }
        (Some(T::TransferSucceeded), _) | (_, Some("transfer.succeeded")) => {
            Some(Event::Transfer(pb::Transfer { succeeded: true }))
        }
        (Some(T::TransferFailed), _) | (_, Some("transfer.failed")) => {
            Some(Event::Transfer(pb::Transfer { succeeded: false }))
        }
        (_, Some("participant.invited")) => {
            Some(Event::ParticipantInvited(pb::ParticipantChange {}))
        }
        (_, Some("participant.active")) => Some(Event::ParticipantActive(pb::ParticipantChange {})),
        (_, Some("participant.inactive")) => {
            Some(Event::ParticipantInactive(pb::ParticipantChange {}))
        }
        (_, Some("participant.autodisconnection")) => {
            Some(Event::ParticipantAutoDisconnected(pb::ParticipantChange {}))
        }
        (_, Some("participant.displayname.updated")) => {
            Some(Event::DisplayNameUpdated(pb::ParticipantChange {}))
        }
        (_, Some("chat.rehydrated")) => Some(Event::ChatRehydrated(pb::ChatRehydrated {})),
        (_, Some("workflow.cancelled")) => Some(Event::WorkflowCancelled(pb::WorkflowCancelled {})),
        (_, Some(name)) if name.starts_with("authentication.") => {
            authentication(&name["authentication.".len()..], &item)
        }
        (Some(T::MessageRead), _) | (_, Some("message.read")) => receipt(true),
        (Some(T::MessageDelivered), _) | (_, Some("message.delivered")) => receipt(false),
        // A metadata item may carry both timestamps; the read one wins. One without receipts
        // may carry the message's processing status.
        (Some(T::MessageMetadata), _) => receipt(true)
            .or_else(|| receipt(false))
            .or_else(|| message_processing(&item)),
        (Some(T::Attachment), _) => item.attachments.as_ref().and_then(|a| a.first()).map(|a| {
            Event::Attachment(pb::Attachment {
                attachment_id: a.attachment_id.clone().unwrap_or_default(),
                name: a.attachment_name.clone().unwrap_or_default(),
                content_type: a.content_type.clone().unwrap_or_default(),
                status: a.status.clone().unwrap_or_default(),
            })
        }),
        _ => None,
    };
    let event = event.unwrap_or_else(|| {
        Event::Raw(pb::RawItem {
            r#type: kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
            content_type: ct.to_owned(),
            content: item.content.take().unwrap_or_default(),
            json: std::mem::take(&mut item.raw),
        })
    });
    pb::ChatEvent {
        cursor: String::new(),
        item_id: item.id.take().unwrap_or_default(),
        time: item.absolute_time.as_deref().and_then(parse_time),
        sender: item
            .participant_id
            .take()
            .map(|participant_id| pb::Participant {
                participant_id,
                display_name: item.display_name.take().unwrap_or_default(),
                role: item
                    .participant_role
                    .as_ref()
                    .map_or(pb::ParticipantRole::Unspecified, Role::to_pb)
                    as i32,
            }),
        event: Some(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::chat_event::Event;

    fn ev(json: &str) -> Event {
        to_event(&Item::parse(json).unwrap()).event.unwrap()
    }

    #[test]
    fn types_and_roles_parse_and_keep_what_is_unknown() {
        assert_eq!(
            ItemType::from("MESSAGEMETADATA".to_owned()),
            ItemType::MessageMetadata
        );
        assert_eq!(ItemType::from("CHAT_ENDED".to_owned()), ItemType::ChatEnded);
        let later = ItemType::from("SOMETHING_NEW".to_owned());
        assert_eq!(later.as_str(), "SOMETHING_NEW");
        assert_eq!(String::from(ItemType::ConnectionAck), "CONNECTION_ACK");
        assert_eq!(Role::from("CUSTOM_BOT".to_owned()), Role::CustomBot);
        assert_eq!(String::from(Role::Other("X".into())), "X");
        // As JSON: known values, unknown ones, escaped ones; anything but a string is refused.
        let kinds: Vec<ItemType> =
            serde_json::from_str(r#"["MESSAGE", "SOMETHING_NEW", "TYP\u0049NG"]"#).unwrap();
        assert_eq!(
            kinds,
            [
                ItemType::Message,
                ItemType::Other("SOMETHING_NEW".into()),
                ItemType::Typing
            ]
        );
        let role: Role = serde_json::from_str(r#""SUPERVISOR""#).unwrap();
        assert_eq!(role, Role::Supervisor);
        assert!(serde_json::from_str::<Role>("5").is_err());
        assert!(Item::parse(r#"{"Id":"x","Type":7}"#).is_err());
    }

    #[test]
    fn messages_and_events_are_typed() {
        let e = to_event(
            &Item::parse(
                r#"{"Id":"m1","Type":"MESSAGE","ContentType":"text/plain","Content":"hi",
                "AbsoluteTime":"2019-11-08T02:41:28.172Z","ParticipantId":"a","DisplayName":"Agent",
                "ParticipantRole":"AGENT"}"#,
            )
            .unwrap(),
        );
        assert_eq!(e.item_id, "m1");
        assert_eq!(e.time.unwrap().nanos, 172_000_000);
        assert_eq!(e.sender.unwrap().role, pb::ParticipantRole::Agent as i32);
        assert!(matches!(e.event, Some(Event::Message(m)) if m.content == "hi" && m.completed));
        assert!(matches!(
            ev(
                r#"{"Id":"e","Type":"EVENT","ContentType":"application/vnd.amazonaws.connect.event.chat.ended"}"#
            ),
            Event::ChatEnded(_)
        ));
        assert!(matches!(
            ev(
                r#"{"Id":"t","Type":"TYPING","ContentType":"application/vnd.amazonaws.connect.event.typing"}"#
            ),
            Event::Typing(_)
        ));
        assert!(matches!(
            ev(r#"{"Id":"r","Type":"MESSAGEMETADATA","MessageMetadata":{"MessageId":"m1","Receipts":[{"DeliveredTimestamp":"2019-11-08T02:41:28.172Z","RecipientParticipantId":"c"}]}}"#),
            Event::Delivered(r) if r.message_id == "m1" && r.recipient_participant_id == "c"
        ));
    }

    #[test]
    fn unknown_items_pass_through_raw() {
        let json = r#"{"Id":"x","Type":"EVENT","ContentType":"application/vnd.amazonaws.connect.event.brand.new","Extra":1}"#;
        assert!(
            matches!(ev(json), Event::Raw(r) if r.json == json && r.content_type.ends_with("brand.new"))
        );
    }

    #[test]
    fn malformed_items_are_errors_not_panics() {
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"Id":""}"#,
            r#"{"Id":5}"#,
            "{\"Id\":\"a\"",
        ] {
            assert!(Item::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn chunks_dedupe_by_id_and_number() {
        let a = Item::parse(r#"{"Id":"s","Type":"MESSAGE","MessageMetadata":{"ChunkNumber":1}}"#)
            .unwrap();
        let b = Item::parse(r#"{"Id":"s","Type":"MESSAGE","MessageMetadata":{"ChunkNumber":2}}"#)
            .unwrap();
        assert_ne!(a.dedupe_key(), b.dedupe_key());
    }
}

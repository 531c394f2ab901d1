//! The controls [`SimHandle`](crate::sim::SimHandle) and the admin API apply to chats from
//! outside the protocol: drop sockets, end a chat as the agent, make the agent say something,
//! push an arbitrary item, and read a chat's state and transcript.

use serde_json::Value;

use super::chat::EndReason;
use super::registry::Shared;
use super::time::parse_time_ms;
use crate::connect::content_type as ct;

/// Errors of the control methods of [`SimHandle`](crate::sim::SimHandle).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("no chat with contact id {0}")]
    UnknownContact(String),
    #[error("chat {0} has ended")]
    ChatEnded(String),
    #[error("invalid item: {0}")]
    InvalidItem(String),
}

impl Shared {
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
        Some(st.items.iter().map(|i| (*i.value).clone()).collect())
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
        self.push(&chat, msg, true)
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
            let pushed = self.commit(&chat, &mut st, obj, store);
            if ends {
                self.finish_locked(&chat, &mut st);
            }
            pushed
        };
        if ends {
            self.retire(&chat);
        }
        Ok(std::sync::Arc::unwrap_or_clone(pushed.value))
    }
}

//! Session records: what the gateway must remember about a chat to serve it again after its
//! session went idle — the contact, the participant, its Connect participant token (secret)
//! and the hashes of the chat tokens issued for it. Behind [`SessionStore`]: in memory
//! ([`MemoryStore`]) or in Redis ([`RedisStore`]) for several gateway processes.

pub mod conn;
mod memory;
mod redis;
pub mod seal;

pub use self::conn::{Keys, Redis};
pub use self::memory::MemoryStore;
pub use self::redis::{participant_context, RedisStore};
pub use self::seal::Sealer;

use crate::security::secret::{Secret, TokenHash};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::SystemTime;

/// How many chat tokens stay valid for one chat (one per StartChat replay with the same
/// client token); the oldest is forgotten first.
pub const MAX_TOKENS_PER_CHAT: usize = 4;

#[derive(Clone, Debug)]
pub struct ChatRecord {
    pub contact_id: String,
    pub participant_id: String,
    pub participant_token: Secret,
    pub chat_token_hashes: Vec<TokenHash>,
    /// Content types the customer may send (always includes text/plain).
    pub content_types: Vec<String>,
    pub started_at: SystemTime,
    pub ended: bool,
    /// The principal that started the chat: only it may use the chat's tokens.
    pub owner: String,
    /// The Connect instance of the chat when it is not the gateway's configured one (empty:
    /// the configured one).
    pub instance_id: String,
    /// The participant is a custom bot (AddBotParticipant), not the chat's customer.
    pub bot: bool,
}

/// The key of a bot's chat record and session: its contact and its participant. Contact ids
/// never contain `/` (Connect's are UUIDs; the API refuses one that does).
pub fn bot_key(contact_id: &str, participant_id: &str) -> String {
    format!("{contact_id}/{participant_id}")
}

impl ChatRecord {
    /// What the store and the sessions know the chat by: the contact for the customer's
    /// side, the contact and the bot's participant for a bot's.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        if self.bot {
            bot_key(&self.contact_id, &self.participant_id).into()
        } else {
            self.contact_id.as_str().into()
        }
    }

    /// Adds the chat token hashes of a replayed StartChat, keeping the newest few.
    pub fn merge(&mut self, replay: ChatRecord) {
        for h in replay.chat_token_hashes {
            if self.chat_token_hashes.len() >= MAX_TOKENS_PER_CHAT {
                self.chat_token_hashes.remove(0);
            }
            self.chat_token_hashes.push(h);
        }
    }

    /// What a live session reads of the record (its key, participant, participant token,
    /// owner and start), copied at their lengths: the chat token hashes and content types are
    /// left out. For a store that hands out a fresh record on every read.
    pub fn for_session(&self) -> ChatRecord {
        ChatRecord {
            contact_id: self.contact_id.clone(),
            participant_id: self.participant_id.clone(),
            participant_token: self.participant_token.clone(),
            chat_token_hashes: Vec::new(),
            content_types: Vec::new(),
            started_at: self.started_at,
            ended: self.ended,
            owner: self.owner.clone(),
            instance_id: self.instance_id.clone(),
            bot: self.bot,
        }
    }

    /// Whether `token` is one of the chat tokens issued for this chat (constant time per hash).
    pub fn token_matches(&self, token: &str) -> bool {
        self.chat_token_hashes
            .iter()
            .fold(false, |found, h| h.matches(token) | found)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store is full ({0} chats)")]
    Full(usize),
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

/// Where session records live. Implementations must be cheap to call concurrently.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a record, or, when its key is known already (a StartChat or AddBotParticipant
    /// replayed with the same client token), adds the new chat token hash to it. Returns the
    /// stored record (the in-memory store's own, shared: a live session keeps it rather than
    /// copies of its strings).
    async fn upsert(&self, record: ChatRecord) -> Result<Arc<ChatRecord>, StoreError>;
    /// The record under `key` ([`ChatRecord::key`]).
    async fn get(&self, key: &str) -> Result<Option<Arc<ChatRecord>>, StoreError>;
    /// Marks the chat ended; a no-op for an unknown key.
    async fn mark_ended(&self, key: &str) -> Result<(), StoreError>;
    async fn remove(&self, key: &str) -> Result<(), StoreError>;
    /// Whether the records this store hands out are its own, kept and shared (a live session
    /// then holds the same record); otherwise every read makes a new one.
    fn shares_records(&self) -> bool {
        false
    }
    /// Whether the store can record a chat now (checked before Connect is asked for one).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, token: &str) -> ChatRecord {
        ChatRecord {
            contact_id: id.into(),
            participant_id: "p".into(),
            participant_token: Secret::new("pt"),
            chat_token_hashes: vec![TokenHash::of(token)],
            content_types: vec!["text/plain".into()],
            started_at: SystemTime::now(),
            ended: false,
            owner: "anonymous".into(),
            instance_id: String::new(),
            bot: false,
        }
    }

    #[tokio::test]
    async fn replay_adds_token_and_capacity_is_enforced() {
        let store = MemoryStore::new(2);
        store.upsert(record("a", "t1")).await.unwrap();
        let r = store.upsert(record("a", "t2")).await.unwrap();
        assert!(r.token_matches("t1") && r.token_matches("t2") && !r.token_matches("t3"));
        store.upsert(record("b", "t")).await.unwrap();
        assert!(matches!(
            store.upsert(record("c", "t")).await,
            Err(StoreError::Full(2))
        ));
        store.mark_ended("a").await.unwrap();
        store.upsert(record("c", "t")).await.unwrap();
        assert!(store.get("a").await.unwrap().is_none());
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn the_memory_store_hands_out_its_own_record_and_keeps_bots_apart() {
        let store = MemoryStore::new(4);
        let customer = store.upsert(record("c", "t")).await.unwrap();
        // A live session keeps the stored record itself, not a copy of its strings.
        let got = store.get("c").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&customer, &got));
        let bot = store
            .upsert(ChatRecord {
                participant_id: "b".into(),
                bot: true,
                ..record("c", "bt")
            })
            .await
            .unwrap();
        assert_eq!(bot.key(), "c/b");
        assert_eq!(store.len(), 2);
        assert!(store.get("c/b").await.unwrap().unwrap().token_matches("bt"));
        assert!(!store.get("c").await.unwrap().unwrap().token_matches("bt"));
        store.mark_ended("c/b").await.unwrap();
        assert!(store.get("c/b").await.unwrap().unwrap().ended);
        assert!(!store.get("c").await.unwrap().unwrap().ended);
        // The holder of the record from before keeps it as it was.
        assert!(!bot.ended);
        store.remove("c/b").await.unwrap();
        assert!(store.get("c/b").await.unwrap().is_none());
        assert_eq!(store.len(), 1);
        assert!(store.shares_records());
    }

    #[test]
    fn a_sessions_copy_keeps_what_a_session_reads() {
        let r = ChatRecord {
            bot: true,
            ..record("c", "t")
        };
        let s = r.for_session();
        assert_eq!(s.key(), r.key());
        assert_eq!(s.participant_id, r.participant_id);
        assert_eq!(s.participant_token, r.participant_token);
        assert_eq!(
            (s.owner.as_str(), s.started_at),
            (r.owner.as_str(), r.started_at)
        );
        assert!(s.chat_token_hashes.is_empty() && s.content_types.is_empty());
    }

    #[tokio::test]
    async fn the_chat_that_ended_first_is_evicted_first() {
        let store = MemoryStore::new(3);
        for id in ["a", "b", "c"] {
            store.upsert(record(id, "t")).await.unwrap();
        }
        store.mark_ended("b").await.unwrap();
        store.mark_ended("a").await.unwrap();
        store.upsert(record("d", "t")).await.unwrap();
        assert!(store.get("b").await.unwrap().is_none());
        assert!(store.get("a").await.unwrap().is_some());
        store.remove("a").await.unwrap();
        store.upsert(record("e", "t")).await.unwrap();
        assert!(matches!(
            store.upsert(record("f", "t")).await,
            Err(StoreError::Full(3))
        ));
    }
}

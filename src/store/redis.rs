//! A Redis-backed [`SessionStore`], so that several gateway processes serve the same chats
//! (a subscriber drained from one replica resumes on another). Records are JSON values under
//! `{prefix}chat:{contact_id}` with a time to live longer than any chat lasts. The participant
//! token is stored as Connect issued it: keep Redis private to the gateway.

use super::{ChatRecord, SessionStore, StoreError};
use crate::secret::{Secret, TokenHash};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};

#[derive(Serialize, Deserialize)]
struct Stored {
    contact_id: String,
    participant_id: String,
    participant_token: String,
    /// Hex SHA-256 of each valid chat token.
    chat_token_hashes: Vec<String>,
    content_types: Vec<String>,
    started_at_ms: u64,
    ended: bool,
    /// The principal that started the chat.
    #[serde(default)]
    owner: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl From<&ChatRecord> for Stored {
    fn from(r: &ChatRecord) -> Self {
        Self {
            contact_id: r.contact_id.clone(),
            participant_id: r.participant_id.clone(),
            participant_token: r.participant_token.expose().to_owned(),
            chat_token_hashes: r
                .chat_token_hashes
                .iter()
                .map(|h| hex(h.as_bytes()))
                .collect(),
            content_types: r.content_types.clone(),
            started_at_ms: r
                .started_at
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            ended: r.ended,
            owner: r.owner.clone(),
        }
    }
}

impl Stored {
    fn into_record(self) -> ChatRecord {
        ChatRecord {
            contact_id: self.contact_id,
            participant_id: self.participant_id,
            participant_token: Secret::new(self.participant_token),
            chat_token_hashes: self
                .chat_token_hashes
                .iter()
                .filter_map(|h| unhex(h))
                .map(TokenHash::from_bytes)
                .collect(),
            content_types: self.content_types,
            started_at: UNIX_EPOCH + Duration::from_millis(self.started_at_ms),
            ended: self.ended,
            owner: self.owner,
        }
    }
}

/// Session records in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    tracing::warn!(error = %e, "session store call failed");
    StoreError::Unavailable("Redis did not answer".into())
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); records live `ttl` and their keys start
    /// with `prefix`.
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        let conn = client
            .get_connection_manager()
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach Redis: {e}")))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    fn key(&self, contact_id: &str) -> String {
        format!("{}chat:{contact_id}", self.prefix)
    }

    async fn read(&self, key: &str) -> Result<Option<ChatRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(key).await.map_err(unavailable)?;
        Ok(raw.and_then(|s| match serde_json::from_str::<Stored>(&s) {
            Ok(stored) => Some(stored.into_record()),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable session record ignored");
                None
            }
        }))
    }

    async fn write(
        &self,
        key: &str,
        record: &ChatRecord,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&Stored::from(record))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(json)
            .arg("PX")
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        if only_new {
            cmd.arg("NX");
        }
        let reply: Option<String> = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(reply.is_some())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn upsert(&self, record: ChatRecord) -> Result<ChatRecord, StoreError> {
        let key = self.key(&record.contact_id);
        if self.write(&key, &record, true).await? {
            return Ok(record);
        }
        // A replayed StartChat: merge the new chat token into the stored record.
        let mut existing = self.read(&key).await?.unwrap_or_else(|| record.clone());
        if existing.chat_token_hashes != record.chat_token_hashes {
            existing.merge(record);
        }
        self.write(&key, &existing, false).await?;
        Ok(existing)
    }

    async fn get(&self, contact_id: &str) -> Result<Option<ChatRecord>, StoreError> {
        self.read(&self.key(contact_id)).await
    }

    async fn mark_ended(&self, contact_id: &str) -> Result<(), StoreError> {
        let key = self.key(contact_id);
        if let Some(mut r) = self.read(&key).await? {
            if !r.ended {
                r.ended = true;
                self.write(&key, &r, false).await?;
            }
        }
        Ok(())
    }

    async fn remove(&self, contact_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(self.key(contact_id)).await.map_err(unavailable)?;
        Ok(())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}chat:*", self.prefix);
        let mut keys: redis::AsyncIter<String> =
            conn.scan_match(pattern).await.map_err(unavailable)?;
        let mut n = 0;
        while let Some(k) = futures::StreamExt::next(&mut keys).await {
            if k.is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn records_round_trip_through_json() {
        let r = ChatRecord {
            contact_id: "c".into(),
            participant_id: "p".into(),
            participant_token: Secret::new("pt"),
            chat_token_hashes: vec![TokenHash::of("t")],
            content_types: vec!["text/plain".into()],
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1234),
            ended: false,
            owner: "key:ops".into(),
        };
        let back =
            serde_json::from_str::<Stored>(&serde_json::to_string(&Stored::from(&r)).unwrap())
                .unwrap()
                .into_record();
        assert!(back.token_matches("t") && !back.token_matches("u"));
        assert_eq!(back.started_at, r.started_at);
        assert_eq!(back.participant_token.expose(), "pt");
        assert_eq!(back.owner, "key:ops");
        assert_eq!(unhex("zz"), None);
    }
}

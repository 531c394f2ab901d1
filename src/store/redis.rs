//! A Redis-backed [`SessionStore`], so that several gateway processes serve the same chats
//! (a subscriber drained from one replica resumes on another). Each chat is a hash under
//! `<prefix>chat:{<contact id>}`, with a time to live longer than any chat lasts: `record`, the
//! fields that never change (JSON); `tokens`, the hashes of the valid chat tokens; and
//! `ended`. A replayed StartChat and the chat's end change the record with one script each,
//! which Redis runs atomically, so concurrent replicas never lose each other's updates. The
//! participant token is sealed ([`Sealer`]): Redis never holds it in clear.

use super::conn::{Keys, Redis};
use super::seal::Sealer;
use super::{ChatRecord, SessionStore, StoreError, MAX_TOKENS_PER_CHAT};
use crate::security::secret::TokenHash;
use async_trait::async_trait;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

/// The fields of a chat's record that never change.
#[derive(Serialize, Deserialize)]
struct Fixed {
    contact_id: String,
    participant_id: String,
    /// Sealed for `participant:<contact id>`.
    participant_token: String,
    content_types: Vec<String>,
    started_at_ms: u64,
    /// The principal that started the chat.
    #[serde(default)]
    owner: String,
    /// Empty: the gateway's configured instance.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    instance_id: String,
    /// A custom bot's record (AddBotParticipant).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    bot: bool,
}

/// Creates the record, or adds a replay's token hashes to it (the newest kept), and
/// answers the record as it now is: `{record, tokens, ended}`.
/// KEYS[1]: the chat's hash. ARGV: the fixed fields (JSON), the TTL in ms, the most tokens
/// kept, and the new token hashes (space-separated).
static UPSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[1], 'record', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'tokens', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {ARGV[1], ARGV[4], '0'}
end
local tokens, have = {}, {}
for t in string.gmatch(redis.call('HGET', KEYS[1], 'tokens') or '', '%S+') do
  table.insert(tokens, t)
  have[t] = true
end
for t in string.gmatch(ARGV[4], '%S+') do
  if not have[t] then
    table.insert(tokens, t)
    have[t] = true
  end
end
while #tokens > tonumber(ARGV[3]) do
  table.remove(tokens, 1)
end
local joined = table.concat(tokens, ' ')
redis.call('HSET', KEYS[1], 'tokens', joined)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {redis.call('HGET', KEYS[1], 'record'), joined, redis.call('HGET', KEYS[1], 'ended') or '0'}
",
    )
});

/// Marks an existing record ended. KEYS[1]: the chat's hash.
static MARK_ENDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'ended', '1')
end
return 0
",
    )
});

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// What the participant token of a chat is sealed for (its record's key).
pub fn participant_context(key: &str) -> String {
    format!("participant:{key}")
}

impl Fixed {
    fn of(r: &ChatRecord, sealer: &Sealer) -> Self {
        Self {
            contact_id: r.contact_id.clone(),
            participant_id: r.participant_id.clone(),
            participant_token: sealer.seal(&participant_context(&r.key()), &r.participant_token),
            content_types: r.content_types.clone(),
            started_at_ms: r
                .started_at
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            owner: r.owner.clone(),
            instance_id: r.instance_id.clone(),
            bot: r.bot,
        }
    }
}

fn tokens_field(hashes: &[TokenHash]) -> String {
    hashes
        .iter()
        .map(|h| hex::encode(h.as_bytes()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A record from its three stored fields; `None` (and a warning) when it does not parse or
/// its token does not open with the configured keys.
fn record_of(fixed: &str, tokens: &str, ended: &str, sealer: &Sealer) -> Option<ChatRecord> {
    let fixed: Fixed = match serde_json::from_str(fixed) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable session record ignored");
            return None;
        }
    };
    let key = if fixed.bot {
        super::bot_key(&fixed.contact_id, &fixed.participant_id)
    } else {
        fixed.contact_id.clone()
    };
    let Some(participant_token) = sealer.open(&participant_context(&key), &fixed.participant_token)
    else {
        tracing::warn!(
            contact_id = %fixed.contact_id,
            "a session record's token does not open with the configured store keys"
        );
        return None;
    };
    Some(ChatRecord {
        contact_id: fixed.contact_id,
        participant_id: fixed.participant_id,
        participant_token,
        chat_token_hashes: tokens
            .split_whitespace()
            .filter_map(unhex)
            .map(TokenHash::from_bytes)
            .collect(),
        content_types: fixed.content_types,
        started_at: UNIX_EPOCH + Duration::from_millis(fixed.started_at_ms),
        ended: ended == "1",
        owner: fixed.owner,
        instance_id: fixed.instance_id,
        bot: fixed.bot,
    })
}

/// Session records in Redis.
#[derive(Clone)]
pub struct RedisStore {
    redis: Arc<Redis>,
    keys: Keys,
    sealer: Sealer,
    ttl: Duration,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    tracing::warn!(error = %e, "session store call failed");
    StoreError::Unavailable("Redis did not answer".into())
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); records live `ttl` and their keys start
    /// with `prefix`. A random sealing key: for tests of one process.
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, StoreError> {
        let redis = Arc::new(Redis::new(url, false)?);
        if !redis.ping().await {
            return Err(StoreError::Unavailable("cannot reach Redis".into()));
        }
        Self::new(redis, Keys::new(prefix)?, Sealer::random(), ttl)
    }

    /// Records in `redis` under `keys`, their tokens sealed by `sealer`. Does not wait for
    /// Redis to answer.
    pub fn new(
        redis: Arc<Redis>,
        keys: Keys,
        sealer: Sealer,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            redis,
            keys,
            sealer,
            ttl,
        })
    }

    fn key(&self, contact_id: &str) -> String {
        self.keys.of("chat", contact_id)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    async fn conn(&self) -> Result<super::conn::Conn, StoreError> {
        self.redis.conn().await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn upsert(&self, record: ChatRecord) -> Result<Arc<ChatRecord>, StoreError> {
        let fixed = serde_json::to_string(&Fixed::of(&record, &self.sealer))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut conn = self.conn().await?;
        let (fixed, tokens, ended): (String, String, String) = UPSERT
            .key(self.key(&record.key()))
            .arg(fixed)
            .arg(self.ttl_ms())
            .arg(MAX_TOKENS_PER_CHAT)
            .arg(tokens_field(&record.chat_token_hashes))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        record_of(&fixed, &tokens, &ended, &self.sealer)
            .map(Arc::new)
            .ok_or_else(|| StoreError::Unavailable("the stored record is unreadable".into()))
    }

    async fn get(&self, contact_id: &str) -> Result<Option<Arc<ChatRecord>>, StoreError> {
        let mut conn = self.conn().await?;
        let (fixed, tokens, ended): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.key(contact_id))
                .arg("record")
                .arg("tokens")
                .arg("ended")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        Ok(fixed.and_then(|f| {
            record_of(
                &f,
                tokens.as_deref().unwrap_or(""),
                ended.as_deref().unwrap_or("0"),
                &self.sealer,
            )
            .map(Arc::new)
        }))
    }

    async fn mark_ended(&self, contact_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = MARK_ENDED
            .key(self.key(contact_id))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.redis.ping().await {
            Ok(())
        } else {
            Err(StoreError::Unavailable("Redis did not answer".into()))
        }
    }

    async fn remove(&self, contact_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: () = redis::AsyncCommands::del(&mut conn, self.key(contact_id))
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::secret::Secret;
    use std::time::SystemTime;

    #[test]
    fn records_round_trip_through_their_fields() {
        let r = ChatRecord {
            contact_id: "c".into(),
            participant_id: "p".into(),
            participant_token: Secret::new("pt"),
            chat_token_hashes: vec![TokenHash::of("t"), TokenHash::of("u")],
            content_types: vec!["text/plain".into()],
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1234),
            ended: false,
            owner: "key:ops".into(),
            instance_id: "other-instance".into(),
            bot: false,
        };
        let sealer = Sealer::random();
        let fixed = serde_json::to_string(&Fixed::of(&r, &sealer)).unwrap();
        assert!(!fixed.contains("\"pt\""), "{fixed}");
        let back = record_of(&fixed, &tokens_field(&r.chat_token_hashes), "1", &sealer).unwrap();
        assert!(back.token_matches("t") && back.token_matches("u") && !back.token_matches("v"));
        assert_eq!(back.started_at, r.started_at);
        assert_eq!(back.participant_token.expose(), "pt");
        assert_eq!(back.owner, "key:ops");
        assert!(back.ended);
        assert!(record_of("not json", "", "0", &sealer).is_none());
        // Another deployment's keys do not open it.
        assert!(record_of(&fixed, "", "0", &Sealer::random()).is_none());
        assert_eq!(unhex("zz"), None);
        // A bot's record keeps its kind, and its token is sealed for its own key: the
        // customer's record of the contact cannot carry it.
        let bot = ChatRecord { bot: true, ..r };
        let fixed = serde_json::to_string(&Fixed::of(&bot, &sealer)).unwrap();
        let back = record_of(&fixed, "", "0", &sealer).unwrap();
        assert!(back.bot);
        assert_eq!(back.key(), "c/p");
        let mut swapped: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        swapped["bot"] = false.into();
        assert!(record_of(&swapped.to_string(), "", "0", &sealer).is_none());
    }
}

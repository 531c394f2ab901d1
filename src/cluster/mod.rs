//! Cluster mode: several gateway processes on one Redis (or Redis Cluster) keep the promise
//! of one Connect socket per contact.
//!
//! - **Ownership.** One replica owns a contact at a time through a lease with a fencing
//!   token (`lease:{c}` = `<replica>/<fence>`, set only when absent, with a time to live;
//!   renewed and released by compare-and-set scripts). Only the owner holds the socket.
//! - **One event log per contact.** The owner appends each item once to the contact's Redis
//!   Stream (`log:{c}`) by a script that checks its lease first, so a deposed owner cannot
//!   write. The script publishes the entry on the chat's channel with the id of the entry
//!   before it, so every replica applies entries in log order and notices a gap.
//! - **Any replica serves any call.** The connection token lives sealed in `conn:{c}`;
//!   budgets of typing and receipts are keys with a time to live, shared by all replicas.
//!
//! Every key of a contact carries the hash tag `{<contact id>}` (see [`Keys`]).

pub mod bus;

use crate::pb;
use crate::security::secret::{Secret, TokenHash};
use crate::store::{Keys, Redis, Sealer, StoreError};
use prost::Message;
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use bus::{Bus, Listener};

/// Cluster settings.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This process's name in leases (unique per process).
    pub replica_id: String,
    /// A lease not renewed for this long lapses, and another replica takes the contact over.
    pub lease_ttl: Duration,
    /// Entries a contact's log keeps (approximately: Redis trims in whole blocks).
    pub history: usize,
    /// How long a chat's log and lease keys live when nothing renews them (longer than any
    /// chat lasts; shortened once the chat ends).
    pub key_ttl: Duration,
    /// How long an ended chat's log is kept, for subscribers resuming late.
    pub ended_retention: Duration,
}

impl ClusterSettings {
    /// The lease renewal period: a third of its time to live.
    pub fn renew_every(&self) -> Duration {
        (self.lease_ttl / 3).max(Duration::from_millis(50))
    }
}

/// A lease held by this replica: the value that proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub fence: u64,
}

/// What a lease attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    Taken(Lease),
    /// Another replica holds it, for this long unless renewed.
    Held(Duration),
}

/// A position in a contact's log (a Redis Stream id, `<ms>-<seq>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogId(pub u64, pub u64);

impl LogId {
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// One entry of a contact's log: an event, with the de-duplication key of its item (empty
/// for a gateway event) and the newest transcript item id at or after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub durable: String,
    pub event: pb::ChatEvent,
}

/// A log entry as published: its id, the id before it (`0-0` for the first), the entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub prev: LogId,
    pub id: LogId,
    pub entry: Entry,
}

/// What a chat's channel carries.
#[derive(Debug, PartialEq)]
pub enum BusMessage {
    Entry(Box<Published>),
    /// The owner stored a new connection token.
    Token,
    /// A replica's token was refused: the owner should get a new one (hash of the refused).
    Refresh([u8; 32]),
    /// The owner let go of the lease: a replica with interest may take over now.
    Released,
}

impl BusMessage {
    /// Parses a channel message; `None` for anything else.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        match payload.first()? {
            b't' => Some(Self::Token),
            b'l' => Some(Self::Released),
            b'r' => {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(payload.get(2..)?, &mut hash).ok()?;
                Some(Self::Refresh(hash))
            }
            b'e' => {
                // "e <prev> <id>\n<key>\n<durable>\n<event bytes>"
                let mut parts = payload.get(2..)?.splitn(4, |b| *b == b'\n');
                let ids = std::str::from_utf8(parts.next()?).ok()?;
                let (prev, id) = ids.split_once(' ')?;
                let key = std::str::from_utf8(parts.next()?).ok()?.to_owned();
                let durable = std::str::from_utf8(parts.next()?).ok()?.to_owned();
                let event = pb::ChatEvent::decode(parts.next()?).ok()?;
                Some(Self::Entry(Box::new(Published {
                    prev: LogId::parse(prev)?,
                    id: LogId::parse(id)?,
                    entry: Entry {
                        key,
                        durable,
                        event,
                    },
                })))
            }
            _ => None,
        }
    }
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// This replica no longer holds the lease.
    #[error("the lease is held by another replica")]
    Fenced,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Takes the lease when nobody holds it. KEYS: lease, fence. ARGV: replica, ttl ms, key ttl
/// ms. Answers the fence, or when the lease is held minus the ms it still runs.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local left = redis.call('PTTL', KEYS[1])
if left ~= -2 then
  if left < 1 then left = 1 end
  return -left
end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. fence, 'PX', ARGV[2])
return fence
",
    )
});

/// KEYS: lease. ARGV: token, ttl ms. 1 when renewed, 0 when the lease is not ours.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
});

/// KEYS: lease. ARGV: token, channel. Deletes our lease and tells the others.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'l')
  return 1
end
return 0
",
    )
});

/// The fenced append. KEYS: lease, log, last. ARGV: token, max length, key ttl ms, key,
/// durable, event bytes, channel. Answers {prev, id}, or nil when the lease is not ours. The
/// keys' time to live is set when the log begins (a chat lasts at most 7 days, less than
/// `key_ttl`) and shortened when the chat ends.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local prev = redis.call('GET', KEYS[3])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[4], 'd', ARGV[5], 'e', ARGV[6])
if prev then
  redis.call('SET', KEYS[3], id, 'KEEPTTL')
else
  prev = '0-0'
  redis.call('SET', KEYS[3], id, 'PX', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[7], 'e ' .. prev .. ' ' .. id .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. ARGV[6])
return {prev, id}
",
    )
});

/// KEYS: lease, conn. ARGV: token, sealed connection token, ttl ms, channel.
static PUT_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], 't')
return 1
",
    )
});

/// KEYS: the chat's receipts hash. ARGV: message id, strength, ttl ms. 1 when taken.
static RECEIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if cur >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// KEYS: the chat's receipts hash. ARGV: message id, strength.
static RETURN_RECEIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
",
    )
});

/// A caller's chats and reservations, in one sorted set scored by expiry (ms). KEYS: the
/// set. ARGV: now ms, member, its expiry ms, the most, key ttl ms. 1 when reserved.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
",
    )
});

/// A fixed-window counter: KEYS: the window's key. ARGV: limit, window ms. Answers 0 when
/// taken, else the ms until the window ends.
static WINDOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
return left
",
    )
});

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    tracing::debug!(error = %e, "cluster call failed");
    StoreError::Unavailable("Redis did not answer".into())
}

/// The Redis side of cluster mode. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    redis: Arc<Redis>,
    keys: Keys,
    sealer: Sealer,
    settings: ClusterSettings,
    bus: Bus,
}

type Raw = Vec<(String, Vec<(String, Vec<u8>)>)>;

fn entries(raw: Raw) -> Vec<(LogId, Entry)> {
    raw.into_iter()
        .filter_map(|(id, fields)| {
            let id = LogId::parse(&id)?;
            let mut key = String::new();
            let mut durable = String::new();
            let mut event = None;
            for (name, value) in fields {
                match name.as_str() {
                    "k" => key = String::from_utf8(value).ok()?,
                    "d" => durable = String::from_utf8(value).ok()?,
                    "e" => event = pb::ChatEvent::decode(value.as_slice()).ok(),
                    _ => {}
                }
            }
            Some((
                id,
                Entry {
                    key,
                    durable,
                    event: event?,
                },
            ))
        })
        .collect()
}

impl Cluster {
    /// Cluster mode on `redis`; the bus task runs until `stop`.
    pub fn new(
        redis: Arc<Redis>,
        keys: Keys,
        sealer: Sealer,
        settings: ClusterSettings,
        stop: CancellationToken,
    ) -> Self {
        let bus = Bus::start(redis.clone(), stop);
        Self {
            redis,
            keys,
            sealer,
            settings,
            bus,
        }
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn channel(&self, contact_id: &str) -> String {
        self.keys.channel(contact_id)
    }

    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    async fn conn(&self) -> Result<crate::store::conn::Conn, StoreError> {
        self.redis.conn().await
    }

    /// Takes the contact's lease if nobody holds it; else says how long it still runs.
    pub async fn acquire(&self, contact_id: &str) -> Result<Acquired, StoreError> {
        let mut conn = self.conn().await?;
        let fence: i64 = ACQUIRE
            .key(self.keys.of("lease", contact_id))
            .key(self.keys.of("fence", contact_id))
            .arg(&self.settings.replica_id)
            .arg(ms(self.settings.lease_ttl))
            .arg(ms(self.settings.key_ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match u64::try_from(fence) {
            Ok(fence) if fence > 0 => Acquired::Taken(Lease {
                token: format!("{}/{fence}", self.settings.replica_id),
                fence,
            }),
            _ => Acquired::Held(Duration::from_millis(fence.unsigned_abs())),
        })
    }

    /// False when the lease is no longer ours.
    pub async fn renew(&self, contact_id: &str, lease: &Lease) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let renewed: i64 = RENEW
            .key(self.keys.of("lease", contact_id))
            .arg(&lease.token)
            .arg(ms(self.settings.lease_ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    /// Lets go of the lease and tells the other replicas at once.
    pub async fn release(&self, contact_id: &str, lease: &Lease) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = RELEASE
            .key(self.keys.of("lease", contact_id))
            .arg(&lease.token)
            .arg(self.channel(contact_id))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Appends an entry, if `lease` is still ours.
    pub async fn append(
        &self,
        contact_id: &str,
        lease: &Lease,
        entry: &Entry,
    ) -> Result<(LogId, LogId), AppendError> {
        let mut event = entry.event.clone();
        event.cursor.clear();
        let mut conn = self.conn().await?;
        let ids: Option<(String, String)> = APPEND
            .key(self.keys.of("lease", contact_id))
            .key(self.keys.of("log", contact_id))
            .key(self.keys.of("last", contact_id))
            .arg(&lease.token)
            .arg(self.settings.history.max(1))
            .arg(ms(self.settings.key_ttl))
            .arg(&entry.key)
            .arg(&entry.durable)
            .arg(event.encode_to_vec())
            .arg(self.channel(contact_id))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let (prev, id) = ids.ok_or(AppendError::Fenced)?;
        match (LogId::parse(&prev), LogId::parse(&id)) {
            (Some(p), Some(i)) => Ok((p, i)),
            _ => Err(StoreError::Unavailable("Redis answered an unknown stream id".into()).into()),
        }
    }

    /// The newest `count` entries, oldest first.
    pub async fn tail(
        &self,
        contact_id: &str,
        count: usize,
    ) -> Result<Vec<(LogId, Entry)>, StoreError> {
        let mut conn = self.conn().await?;
        let raw: Raw = redis::cmd("XREVRANGE")
            .arg(self.keys.of("log", contact_id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut out = entries(raw);
        out.reverse();
        Ok(out)
    }

    /// Entries after `after`, oldest first, at most `count`.
    pub async fn after(
        &self,
        contact_id: &str,
        after: LogId,
        count: usize,
    ) -> Result<Vec<(LogId, Entry)>, StoreError> {
        let mut conn = self.conn().await?;
        let raw: Raw = redis::cmd("XRANGE")
            .arg(self.keys.of("log", contact_id))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(entries(raw))
    }

    fn token_context(contact_id: &str) -> String {
        format!("connection:{contact_id}")
    }

    /// Stores the owner's connection token (sealed) for the other replicas.
    pub async fn put_token(
        &self,
        contact_id: &str,
        lease: &Lease,
        token: &Secret,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let sealed = self.sealer.seal(&Self::token_context(contact_id), token);
        let mut conn = self.conn().await?;
        let stored: i64 = PUT_TOKEN
            .key(self.keys.of("lease", contact_id))
            .key(self.keys.of("conn", contact_id))
            .arg(&lease.token)
            .arg(sealed)
            .arg(ms(ttl))
            .arg(self.channel(contact_id))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(stored == 1)
    }

    /// The contact's current connection token, if one is stored and opens.
    pub async fn token(&self, contact_id: &str) -> Result<Option<Secret>, StoreError> {
        let mut conn = self.conn().await?;
        let sealed: Option<String> = redis::cmd("GET")
            .arg(self.keys.of("conn", contact_id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(sealed.and_then(|s| self.sealer.open(&Self::token_context(contact_id), &s)))
    }

    /// Asks the owner for a new connection token in place of `stale`.
    pub async fn request_refresh(
        &self,
        contact_id: &str,
        stale: &Secret,
    ) -> Result<(), StoreError> {
        let hash = TokenHash::of(stale.expose());
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.channel(contact_id))
            .arg(format!("r {}", hex::encode(hash.as_bytes())))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// After the chat ended: its keys expire after the retention period.
    pub async fn expire_ended(&self, contact_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for kind in ["log", "last", "conn", "fence", "receipts"] {
            pipe.cmd("PEXPIRE")
                .arg(self.keys.of(kind, contact_id))
                .arg(ms(self.settings.ended_retention))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// The chat's one typing forward per `interval`, shared by every replica: false when
    /// another call took it.
    pub async fn take_typing(
        &self,
        contact_id: &str,
        interval: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.of("typing", contact_id))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ms(interval))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    /// Gives back the typing forward (Connect refused the event).
    pub async fn return_typing(&self, contact_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys.of("typing", contact_id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A receipt of strength `kind` (1 delivered, 2 read) for `message_id`, forwarded once
    /// across the cluster, and never weaker than one already forwarded.
    pub async fn take_receipt(
        &self,
        contact_id: &str,
        message_id: &str,
        kind: u8,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let taken: i64 = RECEIPT
            .key(self.keys.of("receipts", contact_id))
            .arg(message_id)
            .arg(kind)
            .arg(ms(self.settings.key_ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    /// Gives back a receipt that Connect refused.
    pub async fn return_receipt(
        &self,
        contact_id: &str,
        message_id: &str,
        kind: u8,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = RETURN_RECEIPT
            .key(self.keys.of("receipts", contact_id))
            .arg(message_id)
            .arg(kind)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// One of `per_second` cluster-wide calls of `name` in the current second: `None` when
    /// taken, else how long to wait for the next window.
    pub async fn take_rate(
        &self,
        name: &str,
        per_second: u32,
    ) -> Result<Option<Duration>, StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut conn = self.conn().await?;
        let wait: u64 = WINDOW
            .key(self.keys.global(&format!("rate:{name}:{now}")))
            .arg(per_second)
            .arg(1000)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }
}

/// How long a chat reservation holds while its StartChat runs.
const RESERVATION: Duration = Duration::from_secs(60);

/// The prefix of reservation members in a caller's set (contact ids never start with it).
const RESERVED: &str = "reserved:";

fn now_ms() -> u64 {
    ms(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default())
}

impl Cluster {
    fn caller_key(&self, caller: &str) -> String {
        self.keys.global(&format!("caller:{caller}"))
    }

    /// Reserves one of `caller`'s `max` live chats across the cluster; `None` when it holds
    /// them all. The answer names the reservation, for [`Cluster::commit_chat`].
    pub async fn reserve_chat(
        &self,
        caller: &str,
        max: usize,
    ) -> Result<Option<String>, StoreError> {
        let member = format!("{RESERVED}{}", uuid::Uuid::new_v4());
        let now = now_ms();
        let mut conn = self.conn().await?;
        let taken: i64 = RESERVE
            .key(self.caller_key(caller))
            .arg(now)
            .arg(&member)
            .arg(now + ms(RESERVATION))
            .arg(max)
            .arg(ms(self.settings.key_ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok((taken == 1).then_some(member))
    }

    /// Turns a reservation into the chat it started (kept until released or `key_ttl`).
    pub async fn commit_chat(
        &self,
        caller: &str,
        reservation: &str,
        contact_id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let () = redis::pipe()
            .atomic()
            .cmd("ZREM")
            .arg(self.caller_key(caller))
            .arg(reservation)
            .ignore()
            .cmd("ZADD")
            .arg(self.caller_key(caller))
            .arg(now_ms() + ms(self.settings.key_ttl))
            .arg(contact_id)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Frees a reservation or a chat of `caller` (`member`: either).
    pub async fn release_chat(&self, caller: &str, member: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.caller_key(caller))
            .arg(member)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The chats `caller` holds (not its reservations), at most `max`.
    pub async fn chats_of(&self, caller: &str, max: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.caller_key(caller))
            .arg(0)
            .arg(max.max(1) as i64 - 1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(members
            .into_iter()
            .filter(|m| !m.starts_with(RESERVED))
            .collect())
    }
}

/// The cluster-wide CreateParticipantConnection budget: `per_second` calls across every
/// replica. While Redis is unreachable each process falls back to its own budget.
#[derive(Clone)]
pub struct SharedConnectionBudget {
    pub cluster: Cluster,
    pub per_second: u32,
}

impl std::fmt::Debug for SharedConnectionBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnectionBudget")
            .field("per_second", &self.per_second)
            .finish()
    }
}

#[async_trait::async_trait]
impl crate::connect::client::ConnectionGate for SharedConnectionBudget {
    async fn admit(&self) {
        // Bounded: a call waits at most this many windows, then goes on under the local
        // budget alone.
        for _ in 0..600 {
            match self.cluster.take_rate("connections", self.per_second).await {
                Ok(None) | Err(_) => return,
                Ok(Some(wait)) => {
                    let spread = rand::random_range(0..=wait.as_millis().min(1000) as u64 / 4);
                    tokio::time::sleep(wait + Duration::from_millis(spread)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_parse_and_garbage_does_not() {
        let ev = pb::ChatEvent {
            item_id: "m-1".into(),
            ..Default::default()
        };
        let mut payload = b"e 0-0 17-3\nm-1\nm-1\n".to_vec();
        payload.extend(ev.encode_to_vec());
        let BusMessage::Entry(p) = BusMessage::parse(&payload).unwrap() else {
            panic!("not an entry");
        };
        assert_eq!(p.prev, LogId(0, 0));
        assert_eq!(p.id, LogId(17, 3));
        assert_eq!(p.entry.key, "m-1");
        assert_eq!(p.entry.event.item_id, "m-1");
        assert_eq!(BusMessage::parse(b"t"), Some(BusMessage::Token));
        assert_eq!(BusMessage::parse(b"l"), Some(BusMessage::Released));
        let r = format!("r {}", "ab".repeat(32));
        assert_eq!(
            BusMessage::parse(r.as_bytes()),
            Some(BusMessage::Refresh([0xab; 32]))
        );
        for bad in [&b""[..], b"x", b"r zz", b"e 1-1", b"e a b\nk\nd\n"] {
            assert_eq!(BusMessage::parse(bad), None, "{bad:?}");
        }
        assert!(LogId(2, 0) > LogId(1, 9));
        assert_eq!(LogId::parse("5-6").unwrap().to_string(), "5-6");
    }
}

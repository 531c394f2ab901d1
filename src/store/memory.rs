//! The in-memory session store: one process, bounded. When it is full, the chat that ended
//! longest ago is evicted (O(1): ended chats are kept in the order they ended); with no
//! ended chat to evict, inserts fail with [`StoreError::Full`].

use super::{ChatRecord, SessionStore, StoreError};
use async_trait::async_trait;
use hashlink::LinkedHashSet;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// An in-memory store bounded to `capacity` records.
pub struct MemoryStore {
    capacity: usize,
    inner: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    /// Customers' records, found by their contact id (their key) without a copy of it.
    /// Shared: a live session holds the same record.
    customers: HashSet<ByContact>,
    /// Bots' records, under their key ([`ChatRecord::key`]); a bot's key is not a field.
    bots: HashMap<String, Arc<ChatRecord>>,
    /// Keys of the ended records, oldest end first: the eviction order.
    ended: LinkedHashSet<String>,
}

/// A customer's record, hashed and compared by its contact id.
struct ByContact(Arc<ChatRecord>);

impl Borrow<str> for ByContact {
    fn borrow(&self) -> &str {
        &self.0.contact_id
    }
}

impl Hash for ByContact {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.contact_id.hash(state)
    }
}

impl PartialEq for ByContact {
    fn eq(&self, other: &Self) -> bool {
        self.0.contact_id == other.0.contact_id
    }
}

impl Eq for ByContact {}

/// Whether `key` names a bot's record ([`super::bot_key`]: contact ids never hold `/`).
fn is_bot_key(key: &str) -> bool {
    key.contains('/')
}

impl Records {
    fn len(&self) -> usize {
        self.customers.len() + self.bots.len()
    }

    fn get(&self, key: &str) -> Option<&Arc<ChatRecord>> {
        if is_bot_key(key) {
            self.bots.get(key)
        } else {
            self.customers.get(key).map(|r| &r.0)
        }
    }

    fn take(&mut self, key: &str) -> Option<Arc<ChatRecord>> {
        if is_bot_key(key) {
            self.bots.remove(key)
        } else {
            self.customers.take(key).map(|r| r.0)
        }
    }

    fn put(&mut self, record: Arc<ChatRecord>) {
        if record.bot {
            self.bots.insert(record.key().into_owned(), record);
        } else {
            self.customers.replace(ByContact(record));
        }
    }
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Records::default()),
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn upsert(&self, record: ChatRecord) -> Result<Arc<ChatRecord>, StoreError> {
        let mut records = self.lock();
        let key = record.key().into_owned();
        if let Some(mut existing) = records.take(&key) {
            // A replay: rare, so the record is copied when a session holds it.
            Arc::make_mut(&mut existing).merge(record);
            records.put(existing.clone());
            return Ok(existing);
        }
        while records.len() >= self.capacity {
            let Some(oldest) = records.ended.pop_front() else {
                return Err(StoreError::Full(self.capacity));
            };
            records.take(&oldest);
        }
        if record.ended {
            records.ended.insert(key);
        }
        let record = Arc::new(record);
        records.put(record.clone());
        Ok(record)
    }

    fn shares_records(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<ChatRecord>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn mark_ended(&self, key: &str) -> Result<(), StoreError> {
        let mut records = self.lock();
        if records.get(key).is_some_and(|r| !r.ended) {
            if let Some(mut r) = records.take(key) {
                Arc::make_mut(&mut r).ended = true;
                records.put(r);
            }
            records.ended.insert(key.to_owned());
        }
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let mut records = self.lock();
        records.take(key);
        records.ended.remove(key);
        Ok(())
    }
}

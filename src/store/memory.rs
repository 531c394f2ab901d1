//! The in-memory session store: one process, bounded. When it is full, the chat that ended
//! longest ago is evicted (O(1): ended chats are kept in the order they ended); with no
//! ended chat to evict, inserts fail with [`StoreError::Full`].

use super::{ChatRecord, SessionStore, StoreError};
use async_trait::async_trait;
use hashlink::LinkedHashSet;
use std::collections::HashMap;
use std::sync::Mutex;

/// An in-memory store bounded to `capacity` records.
pub struct MemoryStore {
    capacity: usize,
    inner: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    /// Boxed: the table reserves up to twice its records' slots, and a record inline is about
    /// 200 B.
    by_contact: HashMap<String, Box<ChatRecord>>,
    /// Contact ids of the ended records, oldest end first: the eviction order.
    ended: LinkedHashSet<String>,
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
        self.lock().by_contact.len()
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
    async fn upsert(&self, record: ChatRecord) -> Result<ChatRecord, StoreError> {
        let mut records = self.lock();
        let key = record.key().into_owned();
        if let Some(existing) = records.by_contact.get_mut(&key) {
            existing.merge(record);
            return Ok(ChatRecord::clone(existing));
        }
        while records.by_contact.len() >= self.capacity {
            let Some(oldest) = records.ended.pop_front() else {
                return Err(StoreError::Full(self.capacity));
            };
            records.by_contact.remove(&oldest);
        }
        if record.ended {
            records.ended.insert(key.clone());
        }
        records.by_contact.insert(key, Box::new(record.clone()));
        Ok(record)
    }

    async fn get(&self, contact_id: &str) -> Result<Option<ChatRecord>, StoreError> {
        Ok(self
            .lock()
            .by_contact
            .get(contact_id)
            .map(|r| ChatRecord::clone(r)))
    }

    async fn mark_ended(&self, contact_id: &str) -> Result<(), StoreError> {
        let mut records = self.lock();
        if let Some(r) = records.by_contact.get_mut(contact_id) {
            if !r.ended {
                r.ended = true;
                records.ended.insert(contact_id.to_owned());
            }
        }
        Ok(())
    }

    async fn remove(&self, contact_id: &str) -> Result<(), StoreError> {
        let mut records = self.lock();
        records.by_contact.remove(contact_id);
        records.ended.remove(contact_id);
        Ok(())
    }
}

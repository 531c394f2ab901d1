//! Small building blocks of the simulator's data: a mutex lock that survives poisoning,
//! unguessable tokens, and a map bounded by entry count that forgets its oldest keys.

use std::sync::{Mutex, MutexGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;

/// Lock a mutex, recovering the data if a previous holder panicked (nothing here panics while
/// holding a lock, but a poisoned lock must not take the simulator down).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 32 random bytes, URL-safe base64: unguessable tokens.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A map that forgets its oldest keys beyond `cap` entries (insertion order; O(1) each way).
#[derive(Debug)]
pub struct BoundedMap<V> {
    map: hashlink::LinkedHashMap<String, V>,
    cap: usize,
}

impl<V> BoundedMap<V> {
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: hashlink::LinkedHashMap::new(),
            cap: cap.max(1),
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key)
    }

    /// Insert; returns the entries pushed out to respect the bound.
    pub fn insert(&mut self, key: String, value: V) -> Vec<(String, V)> {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return Vec::new();
        }
        let mut evicted = Vec::new();
        while self.map.len() >= self.cap {
            match self.map.pop_front() {
                Some(old) => evicted.push(old),
                None => break,
            }
        }
        self.map.insert(key, value);
        evicted
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The key of the first entry whose value satisfies `f`.
    pub fn find(&self, f: impl Fn(&V) -> bool) -> Option<String> {
        self.map.iter().find(|(_, v)| f(v)).map(|(k, _)| k.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_evicts_oldest() {
        let mut m = BoundedMap::new(2);
        assert!(m.insert("a".into(), 1).is_empty());
        assert!(m.insert("b".into(), 2).is_empty());
        assert_eq!(m.insert("c".into(), 3), vec![("a".to_owned(), 1)]);
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get("c"), Some(&3));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_token());
    }
}

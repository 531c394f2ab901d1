//! Reading back what a socket did not deliver: the one transcript pager (used by a session's
//! backfill after every connect and by a subscriber's catch-up past the history), and the
//! bounded set of item keys already delivered that de-duplicates socket and transcript.

use crate::connect::item::Item;
use crate::connect::{TranscriptPage, TranscriptQuery};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Items per GetTranscript page (Connect's largest).
const PAGE_SIZE: i32 = 100;

/// What the pager read.
#[derive(Debug)]
pub struct Transcript<E> {
    /// Items after the start, oldest first.
    pub items: Vec<Item>,
    /// True when the transcript was read to its end.
    pub complete: bool,
    /// The failure that stopped the reading, if one did.
    pub error: Option<E>,
}

/// Reads the transcript after the item `after` (forward, from that item on), or, with no
/// item, its most recent items; at most `max_pages` pages, each fetched by `page`.
pub async fn read_transcript<F, Fut, E>(
    after: Option<&str>,
    max_pages: usize,
    mut page: F,
) -> Transcript<E>
where
    F: FnMut(TranscriptQuery) -> Fut,
    Fut: Future<Output = Result<TranscriptPage, E>>,
{
    let mut out = Transcript {
        items: Vec::new(),
        complete: false,
        error: None,
    };
    let mut next_token = None;
    for _ in 0..max_pages.max(1) {
        let query = TranscriptQuery {
            contact_id: None,
            max_results: PAGE_SIZE,
            next_token: next_token.take(),
            forward: Some(after.is_some()),
            descending: false,
            start_id: after.map(str::to_owned),
        };
        match page(query).await {
            Ok(p) => {
                out.items.extend(p.items);
                match p.next_token {
                    Some(t) => next_token = Some(t),
                    None => {
                        out.complete = true;
                        break;
                    }
                }
            }
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out.items
        .sort_by(|a, b| a.absolute_time.cmp(&b.absolute_time));
    out
}

/// Digests an item's key into 128 bits (two independently keyed SipHashes): a chat's
/// history and its de-duplication set keep up to a thousand keys each, and a string cost every
/// one of them another allocation of about 48 B. Two keys of one chat's window share a digest
/// with a probability of about 2^-109, far below anything else that could lose an item.
#[derive(Clone, Debug)]
pub struct KeyDigest(RandomState, RandomState);

impl KeyDigest {
    pub fn new() -> Self {
        Self(RandomState::new(), RandomState::new())
    }

    pub fn of(&self, key: &str) -> SeenKey {
        SeenKey((u128::from(self.0.hash_one(key)) << 64) | u128::from(self.1.hash_one(key)))
    }
}

impl Default for KeyDigest {
    fn default() -> Self {
        Self::new()
    }
}

/// A key digested by one [`KeyDigest`] (meaningless to another).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenKey(u128);

/// The hasher of [`Seen`]'s index: a digest is the output of a keyed hash already, so its low
/// 64 bits are the table's hash as they are (SipHash over them again cost about 300
/// instructions an event: a lookup, an insert and a removal).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only digests are hashed (`write_u128`); any other input still hashes, by folding.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, digest: u128) {
        // Truncation intended: the low half of a keyed digest.
        self.0 = digest as u64;
    }
}

/// Item keys already delivered, bounded: the oldest are forgotten first. Keys are kept as
/// digests ([`KeyDigest`]): the process's, so that the keys a history holds are recorded as
/// they are. A quiet chat's few keys are searched in order; past [`Seen::LINEAR`] keys a hash
/// index is built beside them (a linked set cost about 150 B for a chat's first few keys).
pub struct Seen {
    /// Oldest first.
    order: VecDeque<u128>,
    /// The keys of `order`, once there are more than [`Seen::LINEAR`].
    index: Option<HashSet<u128, BuildHasherDefault<DigestHasher>>>,
    cap: usize,
}

impl Seen {
    /// The most keys searched in order, without an index.
    const LINEAR: usize = 32;

    pub fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            index: None,
            cap: cap.max(16),
        }
    }

    /// Records the key; false when it was seen already.
    pub fn insert(&mut self, key: SeenKey) -> bool {
        if self.contains(key) {
            return false;
        }
        self.order.push_back(key.0);
        match &mut self.index {
            Some(index) => {
                index.insert(key.0);
            }
            None if self.order.len() > Self::LINEAR => {
                self.index = Some(self.order.iter().copied().collect());
            }
            None => {}
        }
        if self.order.len() > self.cap {
            if let (Some(oldest), Some(index)) = (self.order.pop_front(), &mut self.index) {
                index.remove(&oldest);
            }
        }
        true
    }

    pub fn contains(&self, key: SeenKey) -> bool {
        match &self.index {
            Some(index) => index.contains(&key.0),
            None => self.order.contains(&key.0),
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::UpstreamError;
    use std::sync::Mutex;

    fn item(id: &str, time: &str) -> Item {
        Item {
            id: Some(id.into()),
            absolute_time: Some(time.into()),
            ..Item::default()
        }
    }

    #[test]
    fn seen_is_bounded() {
        let digest = KeyDigest::new();
        let key = |k: &str| digest.of(k);
        let mut seen = Seen::new(16);
        assert!(seen.insert(key("a")));
        assert!(!seen.insert(key("a")));
        for i in 0..100 {
            assert!(seen.insert(key(&format!("item-{i}"))), "item-{i} is new");
            assert!(seen.contains(key(&format!("item-{i}"))));
        }
        assert_eq!(seen.len(), 16);
        assert!(
            !seen.contains(key("item-83")),
            "the oldest are forgotten first"
        );
        assert!(seen.contains(key("item-84")));
        assert!(seen.insert(key("a")));
    }

    #[test]
    fn seen_keeps_its_bound_and_order_past_its_index() {
        let digest = KeyDigest::new();
        let key = |i: usize| digest.of(&format!("item-{i}"));
        let mut seen = Seen::new(100);
        for i in 0..250 {
            assert!(seen.insert(key(i)), "item-{i} is new");
            assert!(!seen.insert(key(i)), "item-{i} is known");
        }
        assert_eq!(seen.len(), 100);
        assert!(!seen.contains(key(149)), "the oldest are forgotten first");
        assert!((150..250).all(|i| seen.contains(key(i))));
        assert!(seen.insert(key(0)));
    }

    #[tokio::test]
    async fn pages_are_followed_to_the_end_and_sorted() {
        let asked = Mutex::new(Vec::new());
        let t: Transcript<UpstreamError> = read_transcript(Some("m0"), 10, |q| {
            asked.lock().unwrap().push(q.clone());
            async move {
                Ok(match q.next_token.as_deref() {
                    None => TranscriptPage {
                        items: vec![item("m2", "2026-01-01T00:00:02.000Z")],
                        next_token: Some("p2".into()),
                    },
                    Some(_) => TranscriptPage {
                        items: vec![item("m1", "2026-01-01T00:00:01.000Z")],
                        next_token: None,
                    },
                })
            }
        })
        .await;
        assert!(t.complete && t.error.is_none());
        let ids: Vec<_> = t.items.iter().map(|i| i.id.clone().unwrap()).collect();
        assert_eq!(ids, ["m1", "m2"]);
        let asked = asked.into_inner().unwrap();
        assert_eq!(asked.len(), 2);
        assert!(asked
            .iter()
            .all(|q| q.forward == Some(true) && q.start_id.as_deref() == Some("m0")));
    }

    #[tokio::test]
    async fn a_failure_or_the_page_limit_leaves_it_incomplete() {
        let t: Transcript<UpstreamError> = read_transcript(None, 3, |q| async move {
            assert_eq!(q.forward, Some(false));
            Ok(TranscriptPage {
                items: vec![item("x", "t")],
                next_token: Some("more".into()),
            })
        })
        .await;
        assert!(!t.complete && t.error.is_none());
        assert_eq!(t.items.len(), 3);
        let t = read_transcript(None, 3, |_| async { Err(UpstreamError::Unavailable) }).await;
        assert!(!t.complete && matches!(t.error, Some(UpstreamError::Unavailable)));
    }
}

//! Resume cursors: the opaque per-chat position carried by every Subscribe event. A cursor
//! names the event's item (id and chunk) and the newest transcript item at or before it, so a
//! gateway process that never saw the chat can still resume from Connect's transcript.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

const VERSION: &str = "c1";
/// The longest cursor accepted from a caller.
pub const MAX_LEN: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The de-duplication key of the event's item (`id` or `id#chunk`); empty before any item.
    pub key: String,
    /// The id of the newest durable (transcript) item delivered at or before this event.
    pub durable_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let parts = [VERSION, "\n", &self.key, "\n", &self.durable_id];
        let len = parts.iter().map(|p| p.len()).sum();
        // Every event gets a cursor: its text is put together on the stack when it fits
        // (ids are UUIDs, about 80 bytes in all).
        let mut stack = [0u8; 192];
        let mut heap = Vec::new();
        let text = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap[..]
        };
        let mut at = 0;
        for part in parts {
            text[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Decodes a caller's cursor; `None` when it is not one of ours.
    pub fn decode(s: &str) -> Option<Self> {
        if s.len() > MAX_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.split('\n');
        if parts.next()? != VERSION {
            return None;
        }
        let key = parts.next()?.to_owned();
        let durable_id = parts.next()?.to_owned();
        if parts.next().is_some() {
            return None;
        }
        Some(Self { key, durable_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let c = Cursor {
            key: "id-1#2".into(),
            durable_id: "id-0".into(),
        };
        assert_eq!(c.encode(), URL_SAFE_NO_PAD.encode("c1\nid-1#2\nid-0"));
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        // Longer than the stack buffer its text is put together in.
        let long = Cursor {
            key: "k".repeat(300),
            durable_id: "d".into(),
        };
        assert_eq!(Cursor::decode(&long.encode()), Some(long));
        for bad in ["", "!!", "YWJj", &"a".repeat(2000)] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}

//! GetTranscript paging over a chat's stored items. Positions are item sequence numbers, never
//! offsets, so a NextToken stays correct while new items arrive or old ones are dropped. The
//! NextToken is opaque (URL-safe base64 of contact, direction and sequence) and checked.

use std::collections::VecDeque;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::chat::StoredItem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No StartPosition: the oldest item (FORWARD) or the newest (BACKWARD).
    Edge,
    /// The item with this sequence number, inclusive.
    Seq(u64),
    /// FORWARD: the first item at or after this time; BACKWARD: the last at or before it.
    Time(i64),
    /// A cursor `n` items before the end: FORWARD returns the `n` newest items, BACKWARD
    /// skips them.
    MostRecent(usize),
    /// From a NextToken.
    Cursor(Cursor),
}

/// A NextToken's content: FORWARD continues at the first item with `seq >=` this, BACKWARD at
/// the last item with `seq <=` this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub direction: Direction,
    pub seq: u64,
}

/// One page: indices into the item list in the requested sort order, and where to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub indices: Vec<usize>,
    pub next: Option<Cursor>,
}

/// Select a page of at most `max` items.
pub fn page(
    items: &VecDeque<StoredItem>,
    direction: Direction,
    start: Start,
    max: usize,
    order: Order,
) -> Page {
    let len = items.len();
    let (mut indices, next): (Vec<usize>, Option<Cursor>) = match direction {
        Direction::Forward => {
            let from = match start {
                Start::Edge => 0,
                Start::Seq(seq) | Start::Cursor(Cursor { seq, .. }) => {
                    items.partition_point(|i| i.seq < seq)
                }
                Start::Time(t) => items.iter().position(|i| i.abs_ms >= t).unwrap_or(len),
                Start::MostRecent(n) => len.saturating_sub(n),
            };
            let to = from.saturating_add(max).min(len);
            let next = (to < len).then(|| Cursor {
                direction,
                seq: items[to].seq,
            });
            ((from..to).collect(), next)
        }
        Direction::Backward => {
            // `upto` is exclusive: items[upto - 1] is the first one returned.
            let upto = match start {
                Start::Edge => len,
                Start::Seq(seq) | Start::Cursor(Cursor { seq, .. }) => {
                    items.partition_point(|i| i.seq <= seq)
                }
                Start::Time(t) => items
                    .iter()
                    .rposition(|i| i.abs_ms <= t)
                    .map_or(0, |p| p + 1),
                Start::MostRecent(n) => len.saturating_sub(n),
            };
            let lo = upto.saturating_sub(max);
            let next = (lo > 0).then(|| Cursor {
                direction,
                seq: items[lo - 1].seq,
            });
            ((lo..upto).collect(), next)
        }
    };
    if order == Order::Descending {
        indices.reverse();
    }
    Page { indices, next }
}

/// Encode a cursor as a NextToken bound to one contact.
pub fn encode_token(contact_id: &str, cursor: Cursor) -> String {
    let dir = match cursor.direction {
        Direction::Forward => 'F',
        Direction::Backward => 'B',
    };
    URL_SAFE_NO_PAD.encode(format!("v1:{contact_id}:{dir}:{}", cursor.seq))
}

/// Decode a NextToken; None when garbled or issued for another contact.
pub fn decode_token(contact_id: &str, token: &str) -> Option<Cursor> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let rest = text.strip_prefix("v1:")?;
    let (rest, seq) = rest.rsplit_once(':')?;
    let (contact, dir) = rest.rsplit_once(':')?;
    if contact != contact_id {
        return None;
    }
    let direction = match dir {
        "F" => Direction::Forward,
        "B" => Direction::Backward,
        _ => return None,
    };
    let seq = seq.parse().ok()?;
    Some(Cursor { direction, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: u64) -> VecDeque<StoredItem> {
        (1..=n)
            .map(|seq| StoredItem {
                seq,
                id: format!("id{seq}"),
                abs_ms: seq as i64 * 10,
                value: serde_json::Value::Null.into(),
            })
            .collect()
    }

    fn seqs(items: &VecDeque<StoredItem>, p: &Page) -> Vec<u64> {
        p.indices.iter().map(|i| items[*i].seq).collect()
    }

    #[test]
    fn forward_pages_cover_everything_once() {
        let it = items(7);
        let p1 = page(&it, Direction::Forward, Start::Edge, 3, Order::Ascending);
        assert_eq!(seqs(&it, &p1), vec![1, 2, 3]);
        let p2 = page(
            &it,
            Direction::Forward,
            Start::Cursor(p1.next.unwrap()),
            3,
            Order::Ascending,
        );
        assert_eq!(seqs(&it, &p2), vec![4, 5, 6]);
        let p3 = page(
            &it,
            Direction::Forward,
            Start::Cursor(p2.next.unwrap()),
            3,
            Order::Ascending,
        );
        assert_eq!(seqs(&it, &p3), vec![7]);
        assert_eq!(p3.next, None);
    }

    #[test]
    fn backward_pages_and_descending_order() {
        let it = items(5);
        let p1 = page(&it, Direction::Backward, Start::Edge, 2, Order::Descending);
        assert_eq!(seqs(&it, &p1), vec![5, 4]);
        let p2 = page(
            &it,
            Direction::Backward,
            Start::Cursor(p1.next.unwrap()),
            2,
            Order::Ascending,
        );
        assert_eq!(seqs(&it, &p2), vec![2, 3]);
        let p3 = page(
            &it,
            Direction::Backward,
            Start::Cursor(p2.next.unwrap()),
            2,
            Order::Ascending,
        );
        assert_eq!(seqs(&it, &p3), vec![1]);
        assert_eq!(p3.next, None);
    }

    #[test]
    fn start_positions() {
        let it = items(10);
        let by_seq = page(&it, Direction::Forward, Start::Seq(4), 2, Order::Ascending);
        assert_eq!(seqs(&it, &by_seq), vec![4, 5]);
        let by_time = page(
            &it,
            Direction::Backward,
            Start::Time(45),
            2,
            Order::Ascending,
        );
        assert_eq!(seqs(&it, &by_time), vec![3, 4]);
        let recent = page(
            &it,
            Direction::Forward,
            Start::MostRecent(3),
            10,
            Order::Ascending,
        );
        assert_eq!(seqs(&it, &recent), vec![8, 9, 10]);
        let skip = page(
            &it,
            Direction::Backward,
            Start::MostRecent(3),
            2,
            Order::Ascending,
        );
        assert_eq!(seqs(&it, &skip), vec![6, 7]);
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let c = Cursor {
            direction: Direction::Backward,
            seq: 42,
        };
        let t = encode_token("abc-1", c);
        assert_eq!(decode_token("abc-1", &t), Some(c));
        assert_eq!(decode_token("other", &t), None);
        assert_eq!(decode_token("abc-1", "not a token"), None);
        assert_eq!(
            decode_token("abc-1", &URL_SAFE_NO_PAD.encode("v1:abc-1:X:1")),
            None
        );
    }
}

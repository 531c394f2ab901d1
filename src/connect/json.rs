//! JSON string text, eight bytes at a time: where a string's plain run stops, and a string
//! written as a JSON string literal's body. The socket parser decodes the item inside every
//! `aws/chat` frame and the simulator encodes it; both pay per byte and per escape, and an
//! item's JSON escaped inside a frame has an escape every few bytes (each of its quotes).

/// The bytes a JSON string's plain run stops at: its closing quote, an escape, and the
/// control characters a JSON string may not hold raw.
pub const STRING_STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The bytes of `word` (eight bytes, the first in the lowest byte) that are in
/// [`STRING_STOPS`], as a mask with the high bit of each such byte set, except that a bit
/// may also be set above a stop (a borrow only marks bytes above a zero byte, so the lowest
/// mark is exact). A stop zeroes a byte of one of the three transforms below.
pub fn stop_marks(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    zero_bytes(word ^ (ONES * u64::from(b'"')))
        | zero_bytes(word ^ (ONES * u64::from(b'\\')))
        | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
}

/// Where in `word` (eight bytes, the first in the lowest byte) the first byte of
/// [`STRING_STOPS`] is, if any.
pub fn first_stop(word: u64) -> Option<usize> {
    let stops = stop_marks(word);
    (stops != 0).then(|| (stops.trailing_zeros() / 8) as usize)
}

/// Whether `s` holds no byte of [`STRING_STOPS`]: its JSON string literal is `"s"`. Eight
/// bytes at a time, the last word overlapping the one before, without a branch per word.
pub fn is_plain(s: &str) -> bool {
    let bytes = s.as_bytes();
    let word = |at: usize| {
        bytes
            .get(at..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map_or(0, |w| u64::from_le_bytes(*w))
    };
    if bytes.len() < 8 {
        // Padded with a plain byte.
        let mut padded = [b'a'; 8];
        padded[..bytes.len()].copy_from_slice(bytes);
        return stop_marks(u64::from_le_bytes(padded)) == 0;
    }
    let mut marks = stop_marks(word(bytes.len() - 8));
    let mut at = 0;
    while at + 8 <= bytes.len() {
        marks |= stop_marks(word(at));
        at += 8;
    }
    marks == 0
}

/// The index of the first byte of [`STRING_STOPS`] in `bytes` from `from` on.
pub fn next_stop(bytes: &[u8], mut from: usize) -> Option<usize> {
    while let Some(word) = bytes.get(from..).and_then(<[u8]>::first_chunk::<8>) {
        if let Some(k) = first_stop(u64::from_le_bytes(*word)) {
            return Some(from + k);
        }
        from += 8;
    }
    (from..bytes.len()).find(|&i| STRING_STOPS[usize::from(bytes[i])])
}

/// Appends `s` as the body of a JSON string literal, escaped as serde_json escapes it.
///
/// Eight bytes at a time: each word is copied whole and the output moves on to the first stop
/// in it, so a quote or a backslash costs a few instructions (an item's JSON has one every few
/// bytes). A control character, which takes a six-byte escape and never comes from serde_json's
/// own output, goes to [`escape_slow`].
pub fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut buf = std::mem::take(out).into_bytes();
    let start = buf.len();
    // Quotes and backslashes double at most; eight bytes of room for the last word's copy.
    buf.resize(start + 2 * bytes.len() + 8, 0);
    let (mut i, mut o) = (0, start);
    loop {
        let (run, stop) = match bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
            Some(word) => {
                buf[o..o + 8].copy_from_slice(word);
                match first_stop(u64::from_le_bytes(*word)) {
                    None => (8, None),
                    Some(k) => (k, Some(word[k])),
                }
            }
            None => match bytes.get(i) {
                None => break,
                Some(&b) if STRING_STOPS[usize::from(b)] => (0, Some(b)),
                Some(&b) => {
                    buf[o] = b;
                    (1, None)
                }
            },
        };
        i += run;
        o += run;
        match stop {
            None => {}
            Some(b @ (b'"' | b'\\')) => {
                buf[o] = b'\\';
                buf[o + 1] = b;
                i += 1;
                o += 2;
            }
            Some(_) => {
                buf.truncate(o);
                *out = String::from_utf8(buf).unwrap_or_default();
                // `i` is at an ASCII byte, so a character boundary.
                escape_slow(out, &s[i..]);
                return;
            }
        }
    }
    buf.truncate(o);
    // What was copied is `s` cut at ASCII bytes, and the escapes are ASCII.
    *out = String::from_utf8(buf).unwrap_or_default();
}

/// [`escape_into`] one stop at a time, with the escapes of control characters.
fn escape_slow(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_stop(bytes, start) {
        // A stop is an ASCII byte, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        match bytes[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(c >> 4)]));
                out.push(char::from(HEX[usize::from(c & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn stops_are_found_as_a_byte_scan_finds_them(s in r"[a-z\x00-\x1f\\\x22\x7f]{0,40}|\PC{0,40}", from in 0usize..48) {
            let bytes = s.as_bytes();
            let expected = (from.min(bytes.len())..bytes.len()).find(|&i| STRING_STOPS[usize::from(bytes[i])]);
            proptest::prop_assert_eq!(next_stop(bytes, from), expected);
            proptest::prop_assert_eq!(is_plain(&s), next_stop(bytes, 0).is_none());
        }

        #[test]
        fn escapes_as_serde_json_does(s in r"[a-z\x00-\x1f\\\x22\x7f/]{0,40}|\PC{0,40}") {
            for head in ["\"", "{\"content\":\""] {
                let mut out = String::from(head);
                escape_into(&mut out, &s);
                out.push('"');
                let expected = format!("{}{}", &head[..head.len() - 1], serde_json::to_string(&s).unwrap());
                proptest::prop_assert_eq!(out, expected);
            }
        }
    }
}

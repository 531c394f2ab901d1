//! TLS 1.3 record protection (RFC 8446, section 5) for a connection whose handshake rustls
//! completed, from the traffic keys rustls hands over.
//!
//! rustls keeps about 4 KB a connection for its whole life: its state machine, the server's
//! certificate chain, the key schedule, and one expanded cipher context a direction (about
//! 640 B each in aws-lc). A participant socket needs none of it once the handshake is done,
//! the session tickets are stored and the server's first data came: what is left is the two
//! traffic keys, their IVs and sequence numbers, about 130 B. The ciphers are expanded from
//! them (aws-lc, through `aws-lc-rs`) for each read or write that carries records, and dropped
//! with it, so an idle connection keeps no cipher state.
//!
//! What this layer does not do: a key update (it ends the connection with an error, and the
//! session opens a new one), session tickets that come after the server's first data (they are
//! skipped; the ones before it are stored by rustls), and TLS 1.2 (rustls keeps such a
//! connection whole).

use aws_lc_rs::aead::{
    Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
    NONCE_LEN,
};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use std::io;
use zeroize::Zeroize;

/// A record's header: content type, legacy version, length.
const HEADER: usize = 5;
/// The authentication tag of every TLS 1.3 AEAD.
const TAG: usize = 16;
/// Most plaintext a record carries.
pub(super) const MAX_PLAINTEXT: usize = 1 << 14;
/// Most bytes a protected record's body may hold (RFC 8446, section 5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// The legacy record version every TLS 1.3 record carries.
const LEGACY_VERSION: [u8; 2] = [3, 3];

const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {what}"))
}

/// One direction's traffic key, its IV and the next record's sequence number.
struct Direction {
    algorithm: &'static Algorithm,
    key: [u8; 32],
    key_len: u8,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> io::Result<Self> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(invalid("a cipher suite without record keys")),
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != algorithm.key_len() || key.len() > 32 || iv.len() != NONCE_LEN {
            return Err(invalid("traffic keys of the wrong size"));
        }
        let mut d = Self {
            algorithm,
            key: [0; 32],
            key_len: key.len() as u8,
            iv: [0; NONCE_LEN],
            seq,
        };
        d.key[..key.len()].copy_from_slice(key);
        d.iv.copy_from_slice(iv);
        Ok(d)
    }

    /// The cipher for this direction, expanded from the key.
    fn cipher(&self) -> io::Result<LessSafeKey> {
        UnboundKey::new(self.algorithm, &self.key[..usize::from(self.key_len)])
            .map(LessSafeKey::new)
            .map_err(|_| invalid("cannot expand a traffic key"))
    }

    /// The next record's nonce: the IV with the sequence number XORed into its last 8 bytes.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| invalid("the record sequence number ran out"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// What [`RecordKeys::open`] did with the bytes it was given.
#[derive(Debug, Default)]
pub(super) struct Opened {
    /// Bytes of the input done with: whole records. What follows is a record's first part.
    pub consumed: usize,
    /// The server's close_notify came; nothing after it is read.
    pub peer_closed: bool,
}

/// A TLS 1.3 connection's two traffic keys.
pub(super) struct RecordKeys {
    send: Direction,
    receive: Direction,
    /// Records the send key may protect before it must be replaced: the suite's
    /// confidentiality limit.
    send_limit: u64,
    /// Bytes of a session ticket split over records still to skip.
    skip: u32,
}

impl RecordKeys {
    /// The keys rustls extracted from a TLS 1.3 connection. `send_limit` is the cipher suite's
    /// confidentiality limit.
    pub fn new(secrets: ExtractedSecrets, send_limit: u64) -> io::Result<Self> {
        let ExtractedSecrets { tx, rx } = secrets;
        Ok(Self {
            send: Direction::new(tx.0, tx.1)?,
            receive: Direction::new(rx.0, rx.1)?,
            send_limit,
            skip: 0,
        })
    }

    /// Protects `plain` as records of content type `typ`, appended to `out`.
    fn seal(&mut self, typ: u8, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let cipher = self.send.cipher()?;
        let records = plain.len().div_ceil(MAX_PLAINTEXT).max(1);
        out.reserve(plain.len() + records * (HEADER + 1 + TAG));
        let mut chunks = plain.chunks(MAX_PLAINTEXT);
        for _ in 0..records {
            let chunk = chunks.next().unwrap_or_default();
            if self.send.seq >= self.send_limit {
                return Err(invalid(
                    "the send key reached its cipher suite's confidentiality limit",
                ));
            }
            let body = chunk.len() + 1 + TAG;
            let [hi, lo] = (body as u16).to_be_bytes();
            let header = [
                APPLICATION_DATA,
                LEGACY_VERSION[0],
                LEGACY_VERSION[1],
                hi,
                lo,
            ];
            out.extend_from_slice(&header);
            let start = out.len();
            out.extend_from_slice(chunk);
            out.push(typ);
            let nonce = self.send.next_nonce()?;
            let tag = cipher
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start..])
                .map_err(|_| invalid("cannot protect a record"))?;
            out.extend_from_slice(tag.as_ref());
        }
        Ok(())
    }

    /// Protects `plain` as application data records appended to `out`.
    pub fn seal_data(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.seal(APPLICATION_DATA, plain, out)
    }

    /// Appends a close_notify alert to `out`.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        // A warning-level close_notify; TLS 1.3 ignores the level.
        self.seal(ALERT, &[1, CLOSE_NOTIFY], out)
    }

    /// Decrypts the whole records at the front of `data` in place, appending their
    /// application data to `plaintext`.
    pub fn open(&mut self, data: &mut [u8], plaintext: &mut Vec<u8>) -> io::Result<Opened> {
        let mut opened = Opened::default();
        let mut cipher = None;
        while data.len() - opened.consumed >= HEADER {
            let rest = &mut data[opened.consumed..];
            let header: [u8; HEADER] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
            let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[0] != APPLICATION_DATA {
                return Err(invalid(format!(
                    "a record of content type {} after the handshake",
                    header[0]
                )));
            }
            if !(1 + TAG..=MAX_CIPHERTEXT).contains(&body) {
                return Err(invalid(format!("a record of {body} bytes")));
            }
            if rest.len() < HEADER + body {
                break;
            }
            opened.consumed += HEADER + body;
            if cipher.is_none() {
                cipher = Some(self.receive.cipher()?);
            }
            let cipher = cipher.as_ref().expect("made above");
            let nonce = self.receive.next_nonce()?;
            let inner = cipher
                .open_in_place(nonce, Aad::from(header), &mut rest[HEADER..HEADER + body])
                .map_err(|_| invalid("a record failed its authentication (bad_record_mac)"))?;
            // The inner plaintext: content, its type, then zero padding.
            let Some(end) = inner.iter().rposition(|&b| b != 0) else {
                return Err(invalid("a record with no content type"));
            };
            let (content, typ) = (&inner[..end], inner[end]);
            if content.len() > MAX_PLAINTEXT {
                return Err(invalid(
                    "a record over 16 KiB of plaintext (record_overflow)",
                ));
            }
            match typ {
                APPLICATION_DATA => plaintext.extend_from_slice(content),
                ALERT => match content {
                    [_, CLOSE_NOTIFY] => {
                        opened.peer_closed = true;
                        return Ok(opened);
                    }
                    [_, USER_CANCELED] => {}
                    [_, alert] => return Err(invalid(format!("the server sent alert {alert}"))),
                    _ => return Err(invalid("a malformed alert")),
                },
                HANDSHAKE => self.post_handshake(content)?,
                other => return Err(invalid(format!("a record of inner content type {other}"))),
            }
        }
        Ok(opened)
    }

    /// Handshake messages after the handshake: session tickets are skipped, a key update ends
    /// the connection.
    fn post_handshake(&mut self, mut content: &[u8]) -> io::Result<()> {
        let skipped = content.len().min(self.skip as usize);
        content = &content[skipped..];
        self.skip -= skipped as u32;
        while !content.is_empty() {
            let [typ, a, b, c, ..] = *content else {
                return Err(invalid("a handshake message header split over records"));
            };
            let len = u32::from_be_bytes([0, a, b, c]);
            match typ {
                NEW_SESSION_TICKET => {
                    let here = content.len() - 4;
                    let taken = here.min(len as usize);
                    self.skip = len - taken as u32;
                    content = &content[4 + taken..];
                }
                KEY_UPDATE => {
                    return Err(invalid(
                        "the server updated its traffic keys; the connection is replaced",
                    ))
                }
                other => {
                    return Err(invalid(format!(
                        "a handshake message of type {other} after the handshake"
                    )))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(send: [u8; 16], receive: [u8; 16]) -> RecordKeys {
        let secrets = |key: [u8; 16]| {
            let mut full = [0u8; 32];
            full[..16].copy_from_slice(&key);
            // An AES-256 key from the 32 bytes; the test only needs the two sides to agree.
            ConnectionTrafficSecrets::Aes256Gcm {
                key: full.into(),
                iv: [7; NONCE_LEN].into(),
            }
        };
        RecordKeys::new(
            ExtractedSecrets {
                tx: (0, secrets(send)),
                rx: (0, secrets(receive)),
            },
            u64::MAX,
        )
        .unwrap()
    }

    /// Two ends whose keys mirror each other.
    fn pair() -> (RecordKeys, RecordKeys) {
        (keys([1; 16], [2; 16]), keys([2; 16], [1; 16]))
    }

    #[test]
    fn data_sealed_by_one_end_opens_at_the_other_in_order() {
        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        a.seal_data(b"first", &mut wire).unwrap();
        a.seal_data(&vec![9; 40_000], &mut wire).unwrap();
        let mut got = Vec::new();
        let opened = b.open(&mut wire, &mut got).unwrap();
        assert_eq!(opened.consumed, wire.len());
        assert!(!opened.peer_closed);
        assert_eq!(&got[..5], b"first");
        assert_eq!(got.len(), 5 + 40_000);
    }

    #[test]
    fn a_record_cut_short_waits_for_the_rest() {
        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        a.seal_data(b"one", &mut wire).unwrap();
        let first = wire.len();
        a.seal_data(b"two", &mut wire).unwrap();
        let mut got = Vec::new();
        let opened = b.open(&mut wire[..first + 4], &mut got).unwrap();
        assert_eq!(opened.consumed, first);
        assert_eq!(got, b"one");
        let opened = b.open(&mut wire[first..], &mut got).unwrap();
        assert_eq!(opened.consumed, wire.len() - first);
        assert_eq!(got, b"onetwo");
    }

    #[test]
    fn an_altered_replayed_or_reordered_record_is_refused() {
        let (mut a, mut b) = pair();
        let mut one = Vec::new();
        a.seal_data(b"one", &mut one).unwrap();
        let mut two = Vec::new();
        a.seal_data(b"two", &mut two).unwrap();
        // Altered.
        let mut altered = one.clone();
        altered[HEADER] ^= 1;
        let err = b.open(&mut altered, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Out of order: the second record under the first sequence number.
        let (_, mut b) = pair();
        assert!(b.open(&mut two.clone(), &mut Vec::new()).is_err());
        // Replayed.
        let (_, mut b) = pair();
        b.open(&mut one.clone(), &mut Vec::new()).unwrap();
        assert!(b.open(&mut one.clone(), &mut Vec::new()).is_err());
    }

    #[test]
    fn close_notify_ends_reading_and_other_alerts_are_errors() {
        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        a.seal_data(b"last", &mut wire).unwrap();
        a.seal_close_notify(&mut wire).unwrap();
        a.seal_data(b"after", &mut wire).unwrap();
        let mut got = Vec::new();
        let opened = b.open(&mut wire, &mut got).unwrap();
        assert!(opened.peer_closed);
        assert_eq!(got, b"last");

        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        a.seal(ALERT, &[2, 40], &mut wire).unwrap();
        let err = b.open(&mut wire, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("alert 40"), "{err}");
    }

    #[test]
    fn session_tickets_are_skipped_even_split_over_records_and_a_key_update_is_an_error() {
        let (mut a, mut b) = pair();
        let mut ticket = vec![NEW_SESSION_TICKET, 0, 0, 10];
        ticket.extend_from_slice(&[5; 10]);
        let mut wire = Vec::new();
        a.seal(HANDSHAKE, &ticket[..8], &mut wire).unwrap();
        a.seal(HANDSHAKE, &ticket[8..], &mut wire).unwrap();
        a.seal_data(b"data", &mut wire).unwrap();
        let mut got = Vec::new();
        b.open(&mut wire, &mut got).unwrap();
        assert_eq!(got, b"data");

        let mut wire = Vec::new();
        a.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], &mut wire)
            .unwrap();
        let err = b.open(&mut wire, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("updated its traffic keys"),
            "{err}"
        );
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let (_, mut b) = pair();
        for mut bytes in [
            vec![22, 3, 3, 0, 20],
            vec![23, 3, 3, 0, 3, 1, 2, 3],
            vec![23, 3, 3, 0xff, 0xff],
        ] {
            let err = b.open(&mut bytes, &mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
        // A header alone is a record's first part, not an error.
        assert_eq!(
            b.open(&mut [23, 3, 3], &mut Vec::new()).unwrap().consumed,
            0
        );
    }

    #[test]
    fn the_send_key_stops_at_its_limit() {
        let (mut a, _) = pair();
        a.send_limit = 2;
        let mut wire = Vec::new();
        a.seal_data(b"1", &mut wire).unwrap();
        a.seal_data(b"2", &mut wire).unwrap();
        assert!(a.seal_data(b"3", &mut wire).is_err());
    }
}

//! Connect tokens at rest: what the gateway writes to Redis about a chat's participant and
//! connection tokens is sealed with AES-256-GCM (aws-lc-rs), so Redis, its backups and its
//! replicas never hold a usable token. Each sealed value names the key that sealed it, so
//! keys rotate: seal with the first key, open with any listed one. The value is bound to
//! what it belongs to (the associated data names the chat and the field), so a sealed token
//! copied to another chat's record does not open.

use crate::security::secret::Secret;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use std::fmt;
use std::sync::Arc;

const PREFIX: &str = "s1";
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no store key given")]
    Empty,
    #[error("store key {0}: expected <id>:<base64 of 32 bytes>")]
    Malformed(usize),
    #[error("store key id {0:?}: use 1 to 32 letters, digits, '-' or '_'")]
    BadId(String),
    #[error("store key {0:?}: the key is not 32 bytes of base64 (make one with: openssl rand -base64 32)")]
    BadKey(String),
    #[error("store key id {0:?} is listed twice")]
    Duplicate(String),
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens tokens with the configured keys. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    keys: Arc<Vec<Key>>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Sealer {
    /// Keys as `<id>:<base64 key>`, separated by commas or new lines; the first seals.
    /// Blank lines and lines starting with `#` are skipped.
    pub fn from_spec(spec: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        let entries = spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        for (n, entry) in entries.enumerate() {
            let (id, b64) = entry.split_once(':').ok_or(KeyError::Malformed(n + 1))?;
            let (id, b64) = (id.trim(), b64.trim());
            if !valid_id(id) {
                return Err(KeyError::BadId(id.to_owned()));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::Duplicate(id.to_owned()));
            }
            let raw = STANDARD
                .decode(b64)
                .ok()
                .filter(|r| r.len() == KEY_BYTES)
                .ok_or_else(|| KeyError::BadKey(id.to_owned()))?;
            let unbound =
                UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| KeyError::BadKey(id.to_owned()))?;
            keys.push(Key {
                id: id.to_owned(),
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// A sealer with one fresh random key (tests; one process only).
    pub fn random() -> Self {
        let mut raw = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut raw)
            .expect("the system random source works");
        Self::from_spec(&format!("k0:{}", STANDARD.encode(raw))).expect("a valid key")
    }

    /// `secret` sealed for `context` (what it belongs to): `s1.<key id>.<nonce, ciphertext
    /// and tag in base64url>`.
    pub fn seal(&self, context: &str, secret: &Secret) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut data = secret.expose().as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .expect("sealing a short value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}.{}.{}", key.id, URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a sealed value; `None` when it is not ours, was sealed with a key no longer
    /// listed, belongs to another context, or was altered.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Secret> {
        let mut parts = sealed.splitn(3, '.');
        if parts.next()? != PREFIX {
            return None;
        }
        let id = parts.next()?;
        let key = self.keys.iter().find(|k| k.id == id)?;
        let raw = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok().map(Secret::new)
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "HxwdHhobGBkWFxQVEhMQEQ4PDA0KCwgJBgcEBQIDAAE=";

    #[test]
    fn sealed_values_open_only_in_their_context_and_hide_the_token() {
        let s = Sealer::from_spec(&format!("a:{K1}")).unwrap();
        let sealed = s.seal("participant:c-1", &Secret::new("token-value"));
        assert!(sealed.starts_with("s1.a."), "{sealed}");
        assert!(!sealed.contains("token-value"));
        assert_eq!(
            s.open("participant:c-1", &sealed).unwrap().expose(),
            "token-value"
        );
        assert!(s.open("participant:c-2", &sealed).is_none());
        // Two seals of one value differ (fresh nonce each time).
        assert_ne!(
            sealed,
            s.seal("participant:c-1", &Secret::new("token-value"))
        );
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(s
            .open("participant:c-1", &String::from_utf8(altered).unwrap())
            .is_none());
        assert!(s.open("participant:c-1", "token-value").is_none());
    }

    #[test]
    fn keys_rotate_new_first_old_still_open() {
        let old = Sealer::from_spec(&format!("old:{K1}")).unwrap();
        let sealed_before = old.seal("x", &Secret::new("v"));
        let rotated = Sealer::from_spec(&format!("new:{K2}\n# retired soon\nold:{K1}\n")).unwrap();
        assert_eq!(rotated.current_key_id(), "new");
        assert_eq!(rotated.open("x", &sealed_before).unwrap().expose(), "v");
        let sealed_after = rotated.seal("x", &Secret::new("v"));
        assert!(sealed_after.starts_with("s1.new."));
        // A process that never had the new key cannot open what it sealed.
        assert!(old.open("x", &sealed_after).is_none());
    }

    #[test]
    fn bad_key_specs_say_what_is_wrong() {
        assert_eq!(Sealer::from_spec(" \n").unwrap_err(), KeyError::Empty);
        assert_eq!(
            Sealer::from_spec("nocolon").unwrap_err(),
            KeyError::Malformed(1)
        );
        assert!(matches!(
            Sealer::from_spec("a b:xx").unwrap_err(),
            KeyError::BadId(_)
        ));
        assert!(matches!(
            Sealer::from_spec("a:c2hvcnQ=").unwrap_err(),
            KeyError::BadKey(_)
        ));
        assert!(matches!(
            Sealer::from_spec(&format!("a:{K1},a:{K2}")).unwrap_err(),
            KeyError::Duplicate(_)
        ));
        // The error never echoes the key material.
        let e = Sealer::from_spec("a:not-base64!").unwrap_err().to_string();
        assert!(!e.contains("not-base64"), "{e}");
    }
}

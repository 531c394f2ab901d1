//! Secrets held by the gateway: Connect participant and connection tokens and the chat tokens
//! it issues. A [`Secret`] never prints its value; chat tokens are stored only as hashes and
//! compared in constant time.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A string that must not reach logs, errors or responses. `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it (an upstream header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// SHA-256 of a chat token: what the store keeps instead of the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time comparison with the hash of a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        let other = Self::of(presented);
        self.0.ct_eq(&other.0).into()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// A new chat token: 32 random bytes, URL-safe base64 (43 characters).
pub fn new_chat_token() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("participant-token-value");
        assert!(!format!("{s:?} {s}").contains("participant-token-value"));
    }

    #[test]
    fn chat_tokens_are_unique_and_hash_checks() {
        let a = new_chat_token();
        let b = new_chat_token();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        let h = TokenHash::of(a.expose());
        assert!(h.matches(a.expose()));
        assert!(!h.matches(b.expose()));
        assert!(!h.matches(""));
    }
}

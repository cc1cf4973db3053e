//! A peer's identity: an X25519 key pair, the same key WireGuard uses as the static key (docs/architecture.md,
//! "Identity and trust"). Keys travel as base64 of their 32 bytes, exactly like `wg genkey` / `wg pubkey`, so
//! key files are interchangeable with WireGuard's tools.
//!
//! Secrets never appear in `Debug` output or logs; a public key prints as its base64 text, and
//! [`PublicKey::short`] gives the first characters for log lines.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;
use thiserror::Error;
use x25519_dalek::StaticSecret;

use crate::net::Seed;

/// Why a key could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not base64: {0}")]
    Base64(String),
    #[error("a key is 32 bytes, this one is {0}")]
    Length(usize),
    #[error("empty key")]
    Empty,
}

/// The private half (WireGuard's "private key"). Not `Clone` on purpose: one owner.
pub struct SecretKey(StaticSecret);

/// The public half (WireGuard's "public key"): the peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl SecretKey {
    /// A key from 32 random bytes, clamped as Curve25519 secrets are (RFC 7748 §5), like `wg genkey`.
    pub fn from_seed(mut bytes: Seed) -> SecretKey {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        SecretKey(StaticSecret::from(bytes))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// X25519(self, peer): the static-static shared secret, from which probe keys are derived.
    pub fn diffie_hellman(&self, peer: &PublicKey) -> [u8; 32] {
        self.0.diffie_hellman(&x25519_dalek::PublicKey::from(peer.0)).to_bytes()
    }

    /// The raw secret, for the WireGuard implementation only.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key file text: base64, no newline.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// Read a key file's text (surrounding whitespace allowed).
    pub fn from_base64(text: &str) -> Result<SecretKey, KeyError> {
        Ok(SecretKey(StaticSecret::from(decode32(text)?)))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl PublicKey {
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        decode32(text).map(PublicKey)
    }

    /// The first 8 base64 characters: enough to tell peers apart in a log line.
    pub fn short(&self) -> String {
        self.to_base64()[..8].to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        PublicKey::from_base64(s)
    }
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    let bytes = STANDARD.decode(text).map_err(|e| KeyError::Base64(e.to_string()))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_section_6_1_diffie_hellman() {
        let hex32 = |s: &str| -> [u8; 32] { hex::decode(s).unwrap().try_into().unwrap() };
        let alice =
            SecretKey(StaticSecret::from(hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")));
        let bob =
            SecretKey(StaticSecret::from(hex32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")));
        assert_eq!(alice.public().0, hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
        assert_eq!(bob.public().0, hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
        let shared = hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(alice.diffie_hellman(&bob.public()), shared);
        assert_eq!(bob.diffie_hellman(&alice.public()), shared);
    }

    #[test]
    fn base64_round_trip_like_wg() {
        let k = SecretKey::from_seed([9; 32]);
        let text = k.to_base64();
        assert_eq!(text.len(), 44, "32 bytes of base64 with one '=' of padding, as wg prints");
        let back = SecretKey::from_base64(&format!("  {text}\n")).unwrap();
        assert_eq!(back.public(), k.public());
        let pubtext = k.public().to_base64();
        assert_eq!(pubtext.parse::<PublicKey>().unwrap(), k.public());
        assert_eq!(k.to_bytes()[0] & 7, 0, "clamped");
    }

    #[test]
    fn bad_keys_are_errors_not_panics() {
        assert_eq!(PublicKey::from_base64(""), Err(KeyError::Empty));
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert!(matches!(PublicKey::from_base64("not base64!"), Err(KeyError::Base64(_))));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = SecretKey::from_seed([5; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains(&k.to_base64()));
        assert!(shown.contains(&k.public().to_base64()));
    }
}

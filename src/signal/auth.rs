//! Authentication of rendezvous messages (docs/signal.md, "Authentication"): per-peer keys derived from the
//! network secret, and the server's stateless nonces (the RFC 8489 §9.2 nonce idea, bound to the source
//! address and a time bucket instead of stored per client).
//!
//! Every request and response carries MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) keyed with the peer key of
//! the peer it is from or for, so peers also verify what the server tells them.

use super::types::PeerName;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The label that makes peer keys useless for anything else.
const PEER_KEY_LABEL: &[u8] = b"holepunch peer ";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The network secret (the contents of `--secret-file`), never printed.
#[derive(Clone)]
pub struct NetworkSecret(Vec<u8>);

impl NetworkSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> NetworkSecret {
        NetworkSecret(bytes.into())
    }

    /// The secret as a secret file holds it: UTF-8 text loses its surrounding whitespace (a trailing newline
    /// from an editor or `echo` is not part of the secret); anything else is taken as it is.
    pub fn from_file_bytes(bytes: &[u8]) -> NetworkSecret {
        match std::str::from_utf8(bytes) {
            Ok(text) => NetworkSecret(text.trim().as_bytes().to_vec()),
            Err(_) => NetworkSecret(bytes.to_vec()),
        }
    }

    /// Length in bytes (never the bytes themselves: they stay inside this type).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// K(name) = HMAC-SHA256(secret, "holepunch peer " || name): the MESSAGE-INTEGRITY-SHA256 key of every
    /// message from or to `name`. The server derives it from the name alone, so checking a request costs one
    /// HMAC and no lookup.
    pub fn peer_key(&self, name: &PeerName) -> PeerAuthKey {
        PeerAuthKey(hmac(&self.0, &[PEER_KEY_LABEL, name.as_str().as_bytes()]))
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkSecret({} bytes)", self.0.len())
    }
}

/// One peer's message key (see [`NetworkSecret::peer_key`]). A peer holds only its own; the server computes
/// any.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerAuthKey(pub [u8; 32]);

impl PeerAuthKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PeerAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerAuthKey(..)")
    }
}

/// Bytes of a nonce as it appears in NONCE: base64url of a 4-byte bucket number and an 11-byte MAC.
pub const NONCE_LEN: usize = 20;

/// Stateless nonces: NONCE = base64url(bucket ‖ HMAC(server key, bucket ‖ source)[..11]). A nonce is valid
/// from the source it was issued to during its bucket and the next one, so it lives between one and two
/// bucket lengths; the server stores nothing per client.
#[derive(Clone)]
pub struct NonceMint {
    key: [u8; 32],
    epoch: Instant,
    bucket: Duration,
}

impl fmt::Debug for NonceMint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NonceMint(bucket {:?})", self.bucket)
    }
}

impl NonceMint {
    /// `key` is random per server process (a restart invalidates every nonce: clients get 438 and retry).
    pub fn new(key: [u8; 32], epoch: Instant, bucket: Duration) -> NonceMint {
        NonceMint { key, epoch, bucket: bucket.max(Duration::from_secs(1)) }
    }

    fn bucket_of(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.epoch).as_secs() / self.bucket.as_secs().max(1)) as u32
    }

    fn mac(&self, bucket: u32, source: SocketAddr) -> [u8; 11] {
        let ip = match source.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let full = hmac(&self.key, &[&bucket.to_be_bytes(), &ip, &source.port().to_be_bytes()]);
        full[..11].try_into().expect("11 of 32 bytes")
    }

    /// A fresh nonce for `source`.
    pub fn issue(&self, now: Instant, source: SocketAddr) -> [u8; NONCE_LEN] {
        let bucket = self.bucket_of(now);
        let mut raw = [0u8; 15];
        raw[..4].copy_from_slice(&bucket.to_be_bytes());
        raw[4..].copy_from_slice(&self.mac(bucket, source));
        let mut out = [0u8; NONCE_LEN];
        let n = URL_SAFE_NO_PAD.encode_slice(raw, &mut out).expect("15 bytes are 20 base64 characters");
        debug_assert_eq!(n, NONCE_LEN);
        out
    }

    /// True when `nonce` was issued to `source` in the current or the previous bucket.
    pub fn check(&self, now: Instant, source: SocketAddr, nonce: &[u8]) -> bool {
        if nonce.len() != NONCE_LEN {
            return false;
        }
        let mut raw = [0u8; 15];
        if URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) != Ok(15) {
            return false;
        }
        let bucket = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let current = self.bucket_of(now);
        if bucket != current && bucket.wrapping_add(1) != current {
            return false;
        }
        let expect = self.mac(bucket, source);
        expect.iter().zip(&raw[4..]).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_keys_differ_per_name_and_secret() {
        let a = PeerName::new("alice").unwrap();
        let b = PeerName::new("bob").unwrap();
        let s1 = NetworkSecret::new(b"one".to_vec());
        let s2 = NetworkSecret::new(b"two".to_vec());
        assert_eq!(s1.peer_key(&a), s1.peer_key(&a));
        assert_ne!(s1.peer_key(&a), s1.peer_key(&b));
        assert_ne!(s1.peer_key(&a), s2.peer_key(&a));
        assert_eq!(format!("{s1:?}"), "NetworkSecret(3 bytes)");
        assert_eq!(format!("{:?}", s1.peer_key(&a)), "PeerAuthKey(..)");
    }

    #[test]
    fn nonces_are_bound_to_source_and_time() {
        let t0 = Instant::now();
        let mint = NonceMint::new([1; 32], t0, Duration::from_secs(60));
        let a: SocketAddr = "198.51.100.1:6666".parse().unwrap();
        let b: SocketAddr = "198.51.100.1:6667".parse().unwrap();
        let n = mint.issue(t0 + Duration::from_secs(10), a);
        assert!(std::str::from_utf8(&n).is_ok());
        assert!(mint.check(t0 + Duration::from_secs(10), a, &n));
        assert!(mint.check(t0 + Duration::from_secs(119), a, &n), "next bucket still accepts it");
        assert!(!mint.check(t0 + Duration::from_secs(120), a, &n), "two buckets later it is stale");
        assert!(!mint.check(t0 + Duration::from_secs(10), b, &n), "another source port");
        let mut forged = n;
        forged[19] = if forged[19] == b'A' { b'B' } else { b'A' };
        assert!(!mint.check(t0, a, &forged));
        assert!(!mint.check(t0, a, b"short"));
        let other = NonceMint::new([2; 32], t0, Duration::from_secs(60));
        assert!(!other.check(t0, a, &n), "a restarted server does not know old nonces");
    }
}

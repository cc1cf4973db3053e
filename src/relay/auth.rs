//! TURN long-term credentials (RFC 8489 §9.2, RFC 8656 §7.2 step 1): static users (`NAME:PASS`) and the
//! TURN REST scheme of time-limited credentials from a shared secret (the one coturn's `use-auth-secret`
//! implements: username `EXPIRY:USER` with EXPIRY in Unix seconds, password
//! `base64(HMAC-SHA1(secret, username))`). Both end in the RFC 5389/8489 MD5 key
//! `MD5(username ":" realm ":" password)` that MESSAGE-INTEGRITY is computed with.
//!
//! Nonces are stateless (RFC 8489 §9.2.2 leaves their form to the server): the issue time in seconds since
//! the server started, and an HMAC over that time and the client's address, so a flood of unauthenticated
//! requests costs no memory and a nonce is only good for the address it was given to, for the nonce lifetime.

use crate::stun::integrity::long_term_key_md5;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The MD5 long-term key (RFC 8489 §9.2.2, PASSWORD-ALGORITHM MD5 / RFC 5389).
pub type Key = [u8; 16];

/// Where usernames and passwords come from.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Static users (`--user NAME:PASS`): the key is computed once, the password is not kept.
    users: HashMap<String, Key>,
    /// The TURN REST shared secret (`--auth-secret`).
    secret: Option<Vec<u8>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({} users, shared secret: {})", self.users.len(), self.secret.is_some())
    }
}

/// Why a username earned no key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// No such static user, and no shared secret (or not an `EXPIRY:USER` name).
    Unknown,
    /// A REST username whose expiry time has passed.
    Expired,
}

impl Credentials {
    /// Add a static user for `realm`.
    pub fn add_user(&mut self, name: &str, password: &str, realm: &str) {
        self.users.insert(name.to_string(), long_term_key_md5(name, realm, password));
    }

    /// Accept REST credentials made with `secret`.
    pub fn set_secret(&mut self, secret: impl Into<Vec<u8>>) {
        self.secret = Some(secret.into());
    }

    /// True when no credential of any kind is configured: then nobody can allocate.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.secret.is_none()
    }

    /// The key for `username` at Unix time `unix_now`, and the name its quota is counted under (the user
    /// part of a REST name, so a new expiry does not give a user a fresh quota).
    pub fn key<'u>(&self, username: &'u str, realm: &str, unix_now: u64) -> Result<(Key, &'u str), Rejected> {
        if let Some(k) = self.users.get(username) {
            return Ok((*k, username));
        }
        let Some(secret) = &self.secret else { return Err(Rejected::Unknown) };
        let (expiry, user) = match username.split_once(':') {
            Some((e, u)) => (e, u),
            None => (username, ""),
        };
        let expiry: u64 = expiry.parse().map_err(|_| Rejected::Unknown)?;
        if expiry < unix_now {
            return Err(Rejected::Expired);
        }
        let password = rest_password(secret, username);
        Ok((long_term_key_md5(username, realm, &password), if user.is_empty() { username } else { user }))
    }
}

/// The TURN REST password of `username`: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Nonce text length: 4 bytes of time and 12 of MAC, unpadded URL-safe base64.
pub const NONCE_LEN: usize = 22;

/// Issues and checks the stateless nonces.
#[derive(Clone)]
pub struct NonceMint {
    key: [u8; 32],
    epoch: Instant,
    lifetime: Duration,
}

impl fmt::Debug for NonceMint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NonceMint(lifetime {:?})", self.lifetime)
    }
}

/// What a received nonce is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but older than the lifetime: 438 Stale Nonce.
    Stale,
    /// Not one we issued to this address (also a 438: the client retries with the new one).
    Invalid,
}

impl NonceMint {
    pub fn new(key: [u8; 32], epoch: Instant, lifetime: Duration) -> NonceMint {
        NonceMint { key, epoch, lifetime }
    }

    fn mac(&self, t: u32, ip: IpAddr) -> [u8; 12] {
        let ip = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(&t.to_be_bytes());
        mac.update(&ip);
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        full[..12].try_into().expect("12 of 32 bytes")
    }

    fn seconds(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_secs().min(u64::from(u32::MAX)) as u32
    }

    /// A nonce for `client` at `now`. Bound to the IP only: a client's port may change between its
    /// Allocate retries when it opens a new socket, its address does not.
    pub fn issue(&self, now: Instant, client: SocketAddr) -> [u8; NONCE_LEN] {
        let t = self.seconds(now);
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&t.to_be_bytes());
        raw[4..].copy_from_slice(&self.mac(t, client.ip()));
        let mut out = [0u8; NONCE_LEN];
        let n = URL_SAFE_NO_PAD.encode_slice(raw, &mut out).expect("16 bytes are 22 base64 characters");
        debug_assert_eq!(n, NONCE_LEN);
        out
    }

    pub fn check(&self, now: Instant, client: SocketAddr, nonce: &str) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let mut raw = [0u8; 18];
        if URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) != Ok(16) {
            return NonceCheck::Invalid;
        }
        let t = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mac = self.mac(t, client.ip());
        // Constant time: a forger learns nothing from how long the comparison took.
        if mac.iter().zip(&raw[4..16]).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return NonceCheck::Invalid;
        }
        let age = u64::from(self.seconds(now).saturating_sub(t));
        if t > self.seconds(now) || age >= self.lifetime.as_secs() {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The REST scheme as coturn documents it (and `turnutils_uclient -W` computes it).
    #[test]
    fn rest_credentials() {
        let mut c = Credentials::default();
        c.set_secret(b"north".to_vec());
        let name = "1700000000:alice";
        let (key, quota_name) = c.key(name, "example.org", 1_600_000_000).unwrap();
        assert_eq!(quota_name, "alice");
        let password = rest_password(b"north", name);
        assert_eq!(key, long_term_key_md5(name, "example.org", &password));
        assert_eq!(c.key(name, "example.org", 1_700_000_001), Err(Rejected::Expired));
        assert_eq!(c.key("alice", "example.org", 0), Err(Rejected::Unknown));
        // The expiry alone is a valid REST name too.
        assert!(c.key("1700000000", "example.org", 0).is_ok());
    }

    #[test]
    fn static_users() {
        let mut c = Credentials::default();
        assert!(c.is_empty());
        c.add_user("bob", "pw", "r");
        assert_eq!(c.key("bob", "r", 0).unwrap().0, long_term_key_md5("bob", "r", "pw"));
        assert_eq!(c.key("carol", "r", 0), Err(Rejected::Unknown));
    }

    #[test]
    fn nonces_expire_and_are_bound_to_the_address() {
        let t0 = Instant::now();
        let m = NonceMint::new([9; 32], t0, Duration::from_secs(600));
        let a: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:1000".parse().unwrap();
        let n = m.issue(t0 + Duration::from_secs(5), a);
        let n = std::str::from_utf8(&n).unwrap();
        assert_eq!(m.check(t0 + Duration::from_secs(6), a, n), NonceCheck::Valid);
        assert_eq!(m.check(t0 + Duration::from_secs(6), "198.51.100.1:2".parse().unwrap(), n), NonceCheck::Valid);
        assert_eq!(m.check(t0 + Duration::from_secs(6), b, n), NonceCheck::Invalid);
        assert_eq!(m.check(t0 + Duration::from_secs(605), a, n), NonceCheck::Stale);
        assert_eq!(m.check(t0, a, "short"), NonceCheck::Invalid);
    }
}

//! MESSAGE-INTEGRITY (RFC 8489 §14.5, HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 (§14.6), FINGERPRINT (§14.7),
//! and the key derivations of §9.1.2 (short-term) and §9.2.2 (long-term).

use super::attr;
use super::header::HEADER_LEN;
use super::message::Message;
use super::Error;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// RFC 8489 §14.7: the CRC-32 is XORed with this ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Short-term credential key: the password itself. RFC 8489 asks for OpaqueString (RFC 8265) preparation;
/// passwords in ASCII are unchanged by it, and we do not transform others (documented in docs/stun-codec.md).
pub fn short_term_key(password: &str) -> Vec<u8> {
    password.as_bytes().to_vec()
}

/// Long-term credential key with PASSWORD-ALGORITHM MD5 (and RFC 5389): MD5(username ":" realm ":" password).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    long_term_key::<Md5>(username, realm, password).into()
}

/// Long-term credential key with PASSWORD-ALGORITHM SHA-256 (RFC 8489 §9.2.2).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    long_term_key::<Sha256>(username, realm, password).into()
}

/// H(username ":" realm ":" password), the one shape both algorithms of §9.2.2 share.
fn long_term_key<H: Digest>(username: &str, realm: &str, password: &str) -> sha2::digest::Output<H> {
    let mut h = H::new();
    for (i, part) in [username, realm, password].into_iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize()
}

/// CRC-32 of `bytes` XOR 0x5354554e.
pub fn fingerprint(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}

/// Feed the message prefix before the attribute at `offset` to `mac`, with the length field rewritten to
/// end just after an attribute of `value_len` bytes there (RFC 8489 §14.5).
fn mac_prefix<M: Mac>(mac: &mut M, msg: &[u8], offset: usize, value_len: usize) {
    let len = (offset - HEADER_LEN + 4 + value_len) as u16;
    mac.update(&msg[..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&msg[4..offset]);
}

pub(crate) fn hmac_sha1(msg: &[u8], offset: usize, key: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac_prefix(&mut mac, msg, offset, 20);
    mac.finalize().into_bytes().into()
}

pub(crate) fn hmac_sha256(msg: &[u8], offset: usize, key: &[u8], value_len: usize) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac_prefix(&mut mac, msg, offset, value_len);
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison, so a forger learns nothing from timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Message<'_> {
    /// Check FINGERPRINT: `Ok(true)` when it matches, `Ok(false)` when it does not, `Err(Missing)` when the
    /// message has none.
    pub fn check_fingerprint(&self) -> Result<bool, Error> {
        let raw = self.raw(attr::FINGERPRINT).ok_or(Error::Missing("FINGERPRINT"))?;
        let value: [u8; 4] =
            raw.value.try_into().map_err(|_| Error::BadAttributeLength { kind: raw.kind, len: raw.value.len() })?;
        // FINGERPRINT is always last (enforced by parse), so the header length already covers it.
        Ok(fingerprint(&self.as_bytes()[..raw.offset]) == u32::from_be_bytes(value))
    }

    /// Verify MESSAGE-INTEGRITY (HMAC-SHA1) with `key`.
    pub fn check_integrity(&self, key: &[u8]) -> Result<(), Error> {
        let raw = self.raw(attr::MESSAGE_INTEGRITY).ok_or(Error::Missing("MESSAGE-INTEGRITY"))?;
        if raw.value.len() != 20 {
            return Err(Error::BadAttributeLength { kind: raw.kind, len: raw.value.len() });
        }
        let expect = hmac_sha1(self.as_bytes(), raw.offset, key);
        if ct_eq(&expect, raw.value) {
            Ok(())
        } else {
            Err(Error::IntegrityMismatch)
        }
    }

    /// Verify MESSAGE-INTEGRITY-SHA256 with `key` (the value may be truncated to 16..32 bytes, §14.6).
    pub fn check_integrity_sha256(&self, key: &[u8]) -> Result<(), Error> {
        let raw = self.raw(attr::MESSAGE_INTEGRITY_SHA256).ok_or(Error::Missing("MESSAGE-INTEGRITY-SHA256"))?;
        let n = raw.value.len();
        if !(16..=32).contains(&n) || n % 4 != 0 {
            return Err(Error::BadAttributeLength { kind: raw.kind, len: n });
        }
        let expect = hmac_sha256(self.as_bytes(), raw.offset, key, n);
        if ct_eq(&expect[..n], raw.value) {
            Ok(())
        } else {
            Err(Error::IntegrityMismatch)
        }
    }
}

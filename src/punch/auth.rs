//! Authenticated connectivity checks between peers (docs/punchd.md, "Punching"): STUN Binding requests and
//! success responses (RFC 8489 §6, so the one-socket demultiplexing rule of docs/architecture.md holds),
//! authenticated the way ICE authenticates its checks (RFC 8445 §7.2.2: USERNAME "receiver:sender",
//! MESSAGE-INTEGRITY, FINGERPRINT) but keyed by the peers' static X25519 keys instead of exchanged passwords:
//!
//! K = HMAC-SHA256(X25519(my secret, peer public), "holepunch probe v1" || lower public key || higher public key)
//!
//! Both peers compute the same K without anything crossing the rendezvous, so a hostile rendezvous server
//! or a forged endpoint cannot produce a check or an answer that verifies. Checks carry
//! MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) with K and FINGERPRINT (§14.7); answers carry
//! XOR-MAPPED-ADDRESS (the peer-reflexive address, RFC 8445 §7.2.5.3.1), MESSAGE-INTEGRITY-SHA256 and
//! FINGERPRINT. The USERNAME's order makes a check reflected back at its sender fail: it names the sender as
//! receiver.

use crate::identity::{PublicKey, SecretKey};
use crate::stun::{self, Attribute, Class, Message, MessageType, MessageWriter, Method};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;

/// The label of the probe key derivation; a new version of the check format gets a new label.
pub const PROBE_LABEL: &[u8] = b"holepunch probe v1";

/// How a key appears in a check's USERNAME: the first 8 base64 characters of the public key
/// ([`PublicKey::short`]), never a name, so a check says nothing a passive observer could not see anyway.
pub fn key_id(key: &PublicKey) -> String {
    key.short()
}

/// The symmetric key both peers derive for their checks. Returns None when the Diffie-Hellman output is all
/// zeros (a low-order public key, RFC 7748 §6.1): anyone could compute that K.
pub fn probe_key(mine: &SecretKey, peer: &PublicKey) -> Option<[u8; 32]> {
    let shared = mine.diffie_hellman(peer);
    if shared.iter().all(|&b| b == 0) {
        return None;
    }
    let me = mine.public();
    let (lo, hi) = if me.0 <= peer.0 { (me, *peer) } else { (*peer, me) };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&shared).expect("HMAC accepts any key length");
    mac.update(PROBE_LABEL);
    mac.update(&lo.0);
    mac.update(&hi.0);
    Some(mac.finalize().into_bytes().into())
}

/// A check's USERNAME: "receiver:sender" (RFC 8445 §7.2.2 order).
pub fn username(to: &str, from: &str) -> String {
    format!("{to}:{from}")
}

/// Append the attributes of a check request (the writer already holds the Binding request header).
pub fn write_check(w: &mut MessageWriter<'_>, username: &str, key: &[u8; 32]) -> Result<(), stun::Error> {
    w.add(&Attribute::Username(username))?;
    w.add_message_integrity_sha256(key)?;
    w.add_fingerprint()
}

/// A check padded (RFC 5780 §7.6 PADDING) to at most `size` bytes in all, within 3 bytes of it: a probe of
/// whether the path carries datagrams that large (docs/tunnel.md, "MTU"). Never shorter than a plain check.
pub fn write_padded_check(
    w: &mut MessageWriter<'_>,
    username: &str,
    key: &[u8; 32],
    size: usize,
) -> Result<(), stun::Error> {
    w.add(&Attribute::Username(username))?;
    // Header 20, USERNAME (4 + padded), PADDING's own 4, MESSAGE-INTEGRITY-SHA256 4 + 32, FINGERPRINT 8.
    let fixed = 20 + 4 + username.len().div_ceil(4) * 4 + 4 + 36 + 8;
    let padding = (size.saturating_sub(fixed) / 4 * 4).min(usize::from(u16::MAX) / 4 * 4);
    if padding > 0 {
        w.add(&Attribute::Padding(padding as u16))?;
    }
    w.add_message_integrity_sha256(key)?;
    w.add_fingerprint()
}

/// The answer to a verified check from `source`, written into `buf`; returns its length.
pub fn write_answer(
    buf: &mut [u8],
    transaction_id: &[u8; 12],
    source: SocketAddr,
    key: &[u8; 32],
) -> Result<usize, stun::Error> {
    let mut w = MessageWriter::new(buf, MessageType::new(Method::BINDING, Class::Success), transaction_id)?;
    w.add(&Attribute::XorMappedAddress(source))?;
    w.add_message_integrity_sha256(key)?;
    w.add_fingerprint()?;
    Ok(w.finish())
}

/// A Binding request that has the shape of a check: USERNAME "to:from" and MESSAGE-INTEGRITY-SHA256. Not yet
/// verified.
#[derive(Debug, Clone, Copy)]
pub struct CheckShape<'a> {
    pub to: &'a str,
    pub from: &'a str,
}

/// Tell a check apart from every other STUN message on the socket: a Binding request with a USERNAME of the
/// form "to:from" and a MESSAGE-INTEGRITY-SHA256. Anything else is somebody else's message.
pub fn check_shape<'a>(msg: &Message<'a>) -> Option<CheckShape<'a>> {
    if msg.method() != Method::BINDING || msg.class() != Class::Request || msg.is_rfc3489() {
        return None;
    }
    msg.raw(stun::attr::MESSAGE_INTEGRITY_SHA256)?;
    let (to, from) = msg.username()?.split_once(':')?;
    Some(CheckShape { to, from })
}

/// Verify a check or an answer with `key`: MESSAGE-INTEGRITY-SHA256 must match and FINGERPRINT must be there
/// and match (RFC 8489 §14.7 makes it optional; our peers always send it, so its absence is a forgery).
pub fn verify(msg: &Message<'_>, key: &[u8; 32]) -> bool {
    msg.check_integrity_sha256(key).is_ok() && matches!(msg.check_fingerprint(), Ok(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_checks_reach_the_probed_size_and_verify() {
        let key = [7u8; 32];
        for size in [1432usize, 1312, 1433, 1435, 60] {
            let mut buf = [0u8; 2048];
            let mut w =
                MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[1; 12]).unwrap();
            write_padded_check(&mut w, "abcd:efgh", &key, size).unwrap();
            let len = w.finish();
            let msg = Message::parse(&buf[..len]).unwrap();
            assert!(check_shape(&msg).is_some());
            assert!(verify(&msg, &key));
            if size > 100 {
                assert!(len <= size && len + 4 > size, "{size}: {len}");
            } else {
                assert_eq!(len, 20 + 4 + 12 + 36 + 8, "never shorter than a plain check");
            }
        }
    }

    #[test]
    fn both_peers_derive_the_same_key_and_strangers_another() {
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]);
        let m = SecretKey::from_seed([3; 32]);
        let kab = probe_key(&a, &b.public()).unwrap();
        assert_eq!(kab, probe_key(&b, &a.public()).unwrap());
        assert_ne!(kab, probe_key(&m, &b.public()).unwrap());
        assert_ne!(kab, probe_key(&a, &m.public()).unwrap());
    }

    #[test]
    fn low_order_public_key_is_refused() {
        let a = SecretKey::from_seed([1; 32]);
        assert_eq!(probe_key(&a, &PublicKey([0; 32])), None);
    }

    #[test]
    fn check_round_trip_and_tamper() {
        let key = [9u8; 32];
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[4; 12]).unwrap();
        write_check(&mut w, &username("BBBBBBBB", "AAAAAAAA"), &key).unwrap();
        let n = w.finish();
        let msg = Message::parse(&buf[..n]).unwrap();
        let shape = check_shape(&msg).unwrap();
        assert_eq!((shape.to, shape.from), ("BBBBBBBB", "AAAAAAAA"));
        assert!(verify(&msg, &key));
        assert!(!verify(&msg, &[8u8; 32]));
        let mut bad = buf[..n].to_vec();
        bad[26] ^= 1; // inside USERNAME
        let msg = Message::parse(&bad).unwrap();
        assert!(!verify(&msg, &key));

        let n = write_answer(&mut buf, &[4; 12], "198.51.100.1:7".parse().unwrap(), &key).unwrap();
        let msg = Message::parse(&buf[..n]).unwrap();
        assert!(check_shape(&msg).is_none(), "an answer is not a check");
        assert!(verify(&msg, &key));
        assert_eq!(msg.xor_mapped_address(), Some("198.51.100.1:7".parse().unwrap()));
    }

    #[test]
    fn plain_binding_request_is_not_a_check() {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[4; 12]).unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        assert!(check_shape(&Message::parse(&buf[..n]).unwrap()).is_none());
    }
}

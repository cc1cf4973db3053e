//! The rendezvous wire format (docs/signal.md, "Wire format"): STUN messages (RFC 8489 §5) with three methods
//! and five attributes of our own, taken from the ranges RFC 8489 §18.2 and §18.3 leave to Expert Review, and
//! typed helpers to write and read them with the codec in `crate::stun` (which stays free of this policy).
//!
//! Addresses inside CANDIDATE are XOR-encoded exactly like XOR-MAPPED-ADDRESS (RFC 8489 §14.2), so NAT
//! application-level gateways that rewrite a private address they see in a payload leave them alone.

use super::types::{Candidate, CandidateKind, NatProfile, PeerName};
use crate::identity::PublicKey;
use crate::nat::{Allocation, Filtering, Mapping};
use crate::stun::{self, Class, Message, MessageType, MessageWriter, Method, HEADER_LEN, MAGIC_COOKIE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// REGISTER (request, peer to server): "I am NAME with KEY, reachable at these candidates".
pub const REGISTER: Method = match Method::new(0xA01) {
    Some(m) => m,
    None => panic!("12-bit method"),
};
/// CONNECT (request, peer to server): "introduce me to PEER-NAME".
pub const CONNECT: Method = match Method::new(0xA02) {
    Some(m) => m,
    None => panic!("12-bit method"),
};
/// PUSH (request, server to peer): "punch towards this peer now".
pub const PUSH: Method = match Method::new(0xA03) {
    Some(m) => m,
    None => panic!("12-bit method"),
};

/// PEER-NAME (comprehension-required): the other peer's name, UTF-8 (ASCII) text of 1–32 bytes.
pub const PEER_NAME: u16 = 0x4A01;
/// PEER-KEY (comprehension-required): a peer's X25519 public key, 32 bytes.
pub const PEER_KEY: u16 = 0x4A02;
/// CANDIDATE (comprehension-required): kind byte in the reserved first byte of an XOR-MAPPED-ADDRESS value.
pub const CANDIDATE: u16 = 0x4A03;
/// SESSION (comprehension-required): the introduction's 64-bit id.
pub const SESSION: u16 = 0x4A04;
/// NAT-PROFILE (comprehension-optional): 4 bytes, mapping, filtering, allocation and flags.
pub const NAT_PROFILE: u16 = 0xCA05;
/// NAT-PROFILE's signed sequential-allocation step (comprehension-optional, only with a sequential allocation).
pub const NAT_DELTA: u16 = 0xCA06;

/// TURN-USERNAME (comprehension-optional, in a REGISTER answer): a TURN REST username for the relay on this
/// server (docs/relay.md, "Credentials from the rendezvous"), UTF-8 text of at most 128 bytes.
pub const TURN_USERNAME: u16 = 0xCA07;
/// TURN-PASSWORD (comprehension-optional, with TURN-USERNAME): its password, at most 128 bytes.
pub const TURN_PASSWORD: u16 = 0xCA08;

/// Our own comprehension-required attribute types (a receiver answers 420 for any other unknown one).
pub const OWN_REQUIRED: [u16; 4] = [PEER_NAME, PEER_KEY, CANDIDATE, SESSION];

/// True when `data` is a STUN message (RFC 8489 magic-cookie form) of one of the rendezvous methods, in any
/// class: what stund's dispatcher checks before offering a datagram to the rendezvous server instead of the
/// Binding responder. Looks at the 20-byte header only.
pub fn is_signal_message(data: &[u8]) -> bool {
    if data.len() < HEADER_LEN || data[0] & 0xC0 != 0 || data[4..8] != MAGIC_COOKIE.to_be_bytes() {
        return false;
    }
    let method = MessageType::from_u16(u16::from_be_bytes([data[0], data[1]])).method;
    method == REGISTER || method == CONNECT || method == PUSH
}

/// What was wrong with one of our attributes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is malformed")]
    Malformed(&'static str),
    #[error(transparent)]
    Stun(#[from] stun::Error),
}

/// RFC 8489 §14.2 with `key` = header bytes 4..20; `first` goes in the reserved first byte.
fn encode_xaddr(out: &mut [u8], first: u8, addr: &SocketAddr, key: &[u8; 16]) {
    out[0] = first;
    let port = addr.port() ^ u16::from_be_bytes([key[0], key[1]]);
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ key[i];
            }
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ key[i];
            }
        }
    }
}

fn decode_xaddr(v: &[u8], key: &[u8; 16]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ u16::from_be_bytes([key[0], key[1]]);
    match (v[1], v.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

fn xaddr_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() {
        8
    } else {
        20
    }
}

fn kind_byte(k: CandidateKind) -> u8 {
    match k {
        CandidateKind::Host => 1,
        CandidateKind::PortMapped => 2,
        CandidateKind::Reflexive => 3,
        CandidateKind::Predicted => 4,
        CandidateKind::Relayed => 5,
    }
}

fn kind_of(b: u8) -> Option<CandidateKind> {
    Some(match b {
        1 => CandidateKind::Host,
        2 => CandidateKind::PortMapped,
        3 => CandidateKind::Reflexive,
        4 => CandidateKind::Predicted,
        5 => CandidateKind::Relayed,
        _ => return None,
    })
}

/// The 4 bytes of NAT-PROFILE, plus the sequential step when there is one (NAT-DELTA).
pub fn encode_profile(p: &NatProfile) -> ([u8; 4], Option<i32>) {
    let mapping = match p.mapping {
        Mapping::Unknown => 0,
        Mapping::EndpointIndependent => 1,
        Mapping::AddressDependent => 2,
        Mapping::AddressAndPortDependent => 3,
        Mapping::EndpointDependent => 4,
    };
    let filtering = match p.filtering {
        Filtering::Unknown => 0,
        Filtering::EndpointIndependent => 1,
        Filtering::AddressDependent => 2,
        Filtering::AddressAndPortDependent => 3,
    };
    let (allocation, delta) = match p.allocation {
        Allocation::Unknown => (0, None),
        Allocation::Preserved => (1, None),
        Allocation::Sequential { delta } => (2, Some(delta)),
        Allocation::Random => (3, None),
    };
    let flags = match p.hairpin {
        None => 0,
        Some(false) => 1,
        Some(true) => 3,
    } | (u8::from(p.port_mapping) << 2)
        | (u8::from(p.no_nat) << 3);
    ([mapping, filtering, allocation, flags], delta)
}

/// NAT-PROFILE back; unknown codes (a newer peer) read as `Unknown` rather than failing the message.
pub fn decode_profile(v: [u8; 4], delta: Option<i32>) -> NatProfile {
    let mapping = match v[0] {
        1 => Mapping::EndpointIndependent,
        2 => Mapping::AddressDependent,
        3 => Mapping::AddressAndPortDependent,
        4 => Mapping::EndpointDependent,
        _ => Mapping::Unknown,
    };
    let filtering = match v[1] {
        1 => Filtering::EndpointIndependent,
        2 => Filtering::AddressDependent,
        3 => Filtering::AddressAndPortDependent,
        _ => Filtering::Unknown,
    };
    let allocation = match (v[2], delta) {
        (1, _) => Allocation::Preserved,
        (2, Some(delta)) => Allocation::Sequential { delta },
        (3, _) => Allocation::Random,
        _ => Allocation::Unknown,
    };
    let hairpin = match v[3] & 3 {
        1 => Some(false),
        3 => Some(true),
        _ => None,
    };
    NatProfile { mapping, filtering, allocation, hairpin, port_mapping: v[3] & 4 != 0, no_nat: v[3] & 8 != 0 }
}

/// Typed writers for our attributes on top of [`MessageWriter::add_raw`].
pub trait WriteSignal {
    fn add_peer_name(&mut self, name: &PeerName) -> Result<(), stun::Error>;
    fn add_peer_key(&mut self, key: &PublicKey) -> Result<(), stun::Error>;
    fn add_candidate(&mut self, c: &Candidate, raw_id: &[u8; 16]) -> Result<(), stun::Error>;
    fn add_session(&mut self, session: u64) -> Result<(), stun::Error>;
    fn add_profile(&mut self, p: &NatProfile) -> Result<(), stun::Error>;
}

impl WriteSignal for MessageWriter<'_> {
    fn add_peer_name(&mut self, name: &PeerName) -> Result<(), stun::Error> {
        self.add_raw(PEER_NAME, name.as_str().as_bytes())
    }

    fn add_peer_key(&mut self, key: &PublicKey) -> Result<(), stun::Error> {
        self.add_raw(PEER_KEY, &key.0)
    }

    fn add_candidate(&mut self, c: &Candidate, raw_id: &[u8; 16]) -> Result<(), stun::Error> {
        let mut v = [0u8; 20];
        let n = xaddr_len(&c.addr);
        encode_xaddr(&mut v[..n], kind_byte(c.kind), &c.addr, raw_id);
        self.add_raw(CANDIDATE, &v[..n])
    }

    fn add_session(&mut self, session: u64) -> Result<(), stun::Error> {
        self.add_raw(SESSION, &session.to_be_bytes())
    }

    fn add_profile(&mut self, p: &NatProfile) -> Result<(), stun::Error> {
        let (v, delta) = encode_profile(p);
        self.add_raw(NAT_PROFILE, &v)?;
        if let Some(d) = delta {
            self.add_raw(NAT_DELTA, &d.to_be_bytes())?;
        }
        Ok(())
    }
}

/// The raw id the XOR addresses of a message being written are masked with.
pub fn raw_id_of(transaction_id: &[u8; 12]) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    raw[4..].copy_from_slice(transaction_id);
    raw
}

/// Start a message of our own methods.
pub fn writer<'b>(
    buf: &'b mut [u8],
    method: Method,
    class: Class,
    id: &[u8; 12],
) -> Result<MessageWriter<'b>, stun::Error> {
    MessageWriter::new(buf, MessageType::new(method, class), id)
}

/// The USERNAME as a peer name (requests carry the sender's name; pushes the recipient's).
pub fn username(m: &Message<'_>) -> Result<PeerName, WireError> {
    let raw = m.raw(stun::attr::USERNAME).ok_or(WireError::Missing("USERNAME"))?;
    name_from(raw.value, "USERNAME")
}

fn name_from(v: &[u8], what: &'static str) -> Result<PeerName, WireError> {
    let s = std::str::from_utf8(v).map_err(|_| WireError::Malformed(what))?;
    PeerName::new(s).map_err(|_| WireError::Malformed(what))
}

pub fn peer_name(m: &Message<'_>) -> Result<PeerName, WireError> {
    let raw = m.raw(PEER_NAME).ok_or(WireError::Missing("PEER-NAME"))?;
    name_from(raw.value, "PEER-NAME")
}

pub fn peer_key(m: &Message<'_>) -> Result<PublicKey, WireError> {
    let raw = m.raw(PEER_KEY).ok_or(WireError::Missing("PEER-KEY"))?;
    <[u8; 32]>::try_from(raw.value).map(PublicKey).map_err(|_| WireError::Malformed("PEER-KEY"))
}

pub fn session(m: &Message<'_>) -> Result<u64, WireError> {
    let raw = m.raw(SESSION).ok_or(WireError::Missing("SESSION"))?;
    <[u8; 8]>::try_from(raw.value).map(u64::from_be_bytes).map_err(|_| WireError::Malformed("SESSION"))
}

/// NAT-PROFILE; [`NatProfile::UNKNOWN`] when absent (it is optional).
pub fn profile(m: &Message<'_>) -> Result<NatProfile, WireError> {
    let Some(raw) = m.raw(NAT_PROFILE) else { return Ok(NatProfile::UNKNOWN) };
    let v = <[u8; 4]>::try_from(raw.value).map_err(|_| WireError::Malformed("NAT-PROFILE"))?;
    let delta = match m.raw(NAT_DELTA) {
        Some(d) => {
            Some(<[u8; 4]>::try_from(d.value).map(i32::from_be_bytes).map_err(|_| WireError::Malformed("NAT-DELTA"))?)
        }
        None => None,
    };
    Ok(decode_profile(v, delta))
}

/// Every CANDIDATE, in order, at most `max`; more than `max` or a malformed one is an error (a peer that
/// sends them is broken or hostile, and the server must not store an unbounded list).
pub fn candidates(m: &Message<'_>, max: usize) -> Result<Vec<Candidate>, WireError> {
    let mut out = Vec::new();
    for raw in m.effective_attributes().filter(|a| a.kind == CANDIDATE) {
        if out.len() == max {
            return Err(WireError::Malformed("CANDIDATE (too many)"));
        }
        let kind = raw.value.first().copied().and_then(kind_of).ok_or(WireError::Malformed("CANDIDATE"))?;
        let addr = decode_xaddr(raw.value, m.raw_id()).ok_or(WireError::Malformed("CANDIDATE"))?;
        out.push(Candidate { kind, addr });
    }
    Ok(out)
}

/// The NONCE attribute's bytes (read raw: our nonces are ASCII, and a malformed one simply fails to verify).
/// The TURN credentials a REGISTER answer carries, when it carries both and they are short text.
pub fn turn_credentials<'a>(m: &Message<'a>) -> Option<(&'a str, &'a str)> {
    let text = |kind| {
        let v = m.raw(kind)?.value;
        (v.len() <= 128).then(|| std::str::from_utf8(v).ok()).flatten()
    };
    Some((text(TURN_USERNAME)?, text(TURN_PASSWORD)?))
}

pub fn nonce<'a>(m: &Message<'a>) -> Option<&'a [u8]> {
    m.raw(stun::attr::NONCE).map(|a| a.value)
}

/// Comprehension-required attributes neither the codec nor the rendezvous knows (for a 420 answer).
pub fn unknown_required<'a>(m: &Message<'a>) -> impl Iterator<Item = u16> + 'a {
    m.unknown_comprehension_required().filter(|k| !OWN_REQUIRED.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_profile() -> impl Strategy<Value = NatProfile> {
        let mapping = prop_oneof![
            Just(Mapping::Unknown),
            Just(Mapping::EndpointIndependent),
            Just(Mapping::AddressDependent),
            Just(Mapping::AddressAndPortDependent),
            Just(Mapping::EndpointDependent)
        ];
        let filtering = prop_oneof![
            Just(Filtering::Unknown),
            Just(Filtering::EndpointIndependent),
            Just(Filtering::AddressDependent),
            Just(Filtering::AddressAndPortDependent)
        ];
        let allocation = prop_oneof![
            Just(Allocation::Unknown),
            Just(Allocation::Preserved),
            Just(Allocation::Random),
            any::<i32>().prop_map(|delta| Allocation::Sequential { delta })
        ];
        (mapping, filtering, allocation, any::<Option<bool>>(), any::<bool>(), any::<bool>()).prop_map(
            |(mapping, filtering, allocation, hairpin, port_mapping, no_nat)| NatProfile {
                mapping,
                filtering,
                allocation,
                hairpin,
                port_mapping,
                no_nat,
            },
        )
    }

    fn any_candidate() -> impl Strategy<Value = Candidate> {
        let kind = prop_oneof![
            Just(CandidateKind::Host),
            Just(CandidateKind::PortMapped),
            Just(CandidateKind::Reflexive),
            Just(CandidateKind::Predicted),
            Just(CandidateKind::Relayed)
        ];
        let addr = prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        ];
        (kind, addr).prop_map(|(kind, addr)| Candidate { kind, addr })
    }

    proptest! {
        #[test]
        fn attributes_round_trip(
            id in any::<[u8; 12]>(),
            key in any::<[u8; 32]>(),
            session_id in any::<u64>(),
            p in any_profile(),
            cands in proptest::collection::vec(any_candidate(), 0..=16),
        ) {
            let name = PeerName::new("alice-1").unwrap();
            let mut buf = [0u8; 1500];
            let mut w = writer(&mut buf, PUSH, Class::Request, &id).unwrap();
            w.add_peer_name(&name).unwrap();
            w.add_peer_key(&PublicKey(key)).unwrap();
            for c in &cands {
                w.add_candidate(c, &raw_id_of(&id)).unwrap();
            }
            w.add_profile(&p).unwrap();
            w.add_session(session_id).unwrap();
            w.add_fingerprint().unwrap();
            let n = w.finish();
            let m = Message::parse(&buf[..n]).unwrap();
            prop_assert!(is_signal_message(&buf[..n]));
            prop_assert_eq!(peer_name(&m).unwrap(), name);
            prop_assert_eq!(peer_key(&m).unwrap(), PublicKey(key));
            prop_assert_eq!(candidates(&m, 16).unwrap(), cands);
            prop_assert_eq!(profile(&m).unwrap(), p);
            prop_assert_eq!(session(&m).unwrap(), session_id);
            prop_assert_eq!(unknown_required(&m).count(), 0);
        }
    }

    #[test]
    fn candidate_addresses_are_xor_encoded() {
        let id = [7u8; 12];
        let c = Candidate { kind: CandidateKind::Host, addr: "192.168.1.10:6666".parse().unwrap() };
        let mut buf = [0u8; 64];
        let mut w = writer(&mut buf, REGISTER, Class::Request, &id).unwrap();
        w.add_candidate(&c, &raw_id_of(&id)).unwrap();
        let n = w.finish();
        let bytes = &buf[..n];
        assert!(!bytes.windows(4).any(|x| x == [192, 168, 1, 10]), "a NAT ALG would see the private address");
        assert_eq!(candidates(&Message::parse(bytes).unwrap(), 16).unwrap(), [c]);
    }

    #[test]
    fn method_check_looks_at_the_header_only() {
        let mut buf = [0u8; 20];
        let w = writer(&mut buf, CONNECT, Class::Success, &[1; 12]).unwrap();
        let n = w.finish();
        assert!(is_signal_message(&buf[..n]));
        let w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[1; 12]).unwrap();
        let n = w.finish();
        assert!(!is_signal_message(&buf[..n]));
        assert!(!is_signal_message(b"short"));
        assert!(!is_signal_message(&[0xff; 40]));
    }

    #[test]
    fn too_many_or_bad_candidates_are_errors() {
        let id = [3u8; 12];
        let mut buf = [0u8; 256];
        let mut w = writer(&mut buf, REGISTER, Class::Request, &id).unwrap();
        let c = Candidate { kind: CandidateKind::Host, addr: "10.0.0.1:1".parse().unwrap() };
        for _ in 0..3 {
            w.add_candidate(&c, &raw_id_of(&id)).unwrap();
        }
        w.add_raw(CANDIDATE, &[9, 1, 0, 0, 0, 0, 0, 0]).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert!(candidates(&m, 2).is_err());
        assert_eq!(candidates(&m, 16), Err(WireError::Malformed("CANDIDATE")));
    }
}

//! What the rendezvous servers of a cluster tell each other (docs/signal.md, "Cluster"): a registration made
//! at one instance, so every instance's replica knows the peer and who owns it, and an introduction an
//! instance asks the owner of a peer to push. Sans-IO: the bytes travel through whatever shared store the
//! driver uses (stund: Redis keys and pub/sub); decoding never panics and checks every length.
//!
//! Layout (all integers big-endian): version (1), kind (`R` registration, `I` introduction), then
//! - `R`: lifetime in milliseconds (u32), the record;
//! - `I`: the recipient's name (u8 length + bytes), the session (u64), the record of the peer it is told about;
//!
//! and a record is: owner (u8 length + bytes), name (u8 length + bytes), key (32), endpoint, local socket,
//! NAT-PROFILE (4) and NAT-DELTA (i32), candidate count (u8) and per candidate its kind (u8) and address;
//! an address is a family byte (4 or 6), the IP (4 or 16 bytes; an IPv4-mapped IPv6 address stays IPv6, as
//! a dual-stack socket reported it) and the port (u16). A typical record is about 100 bytes.

use super::registry::Registration;
use super::types::{Candidate, CandidateKind, InstanceId, PeerName, MAX_CANDIDATES};
use super::wire::{decode_profile, encode_profile};
use crate::identity::PublicKey;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use thiserror::Error;

const VERSION: u8 = 1;
const KIND_REGISTRATION: u8 = b'R';
const KIND_INTRODUCTION: u8 = b'I';

/// One message between cluster instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterMessage {
    /// `registration` (its `owner` set) lives `lifetime` from when it is received.
    Registration { registration: Registration, lifetime: Duration },
    /// The owner of `to` is asked to push `to` the introduction of `about` with this session id.
    Introduction { to: PeerName, about: Registration, session: u64 },
}

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ClusterWireError {
    #[error("cluster message truncated")]
    Truncated,
    #[error("cluster message of an unknown version or kind")]
    Unknown,
    #[error("cluster message with an invalid field")]
    Invalid,
    #[error("cluster record without an owner")]
    NoOwner,
}

impl ClusterMessage {
    /// The bytes of this message; a record whose `owner` is `None` is written as owned by `this`.
    pub fn encode(&self, this: &InstanceId) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        match self {
            ClusterMessage::Registration { registration, lifetime } => {
                out.push(KIND_REGISTRATION);
                let ms = u32::try_from(lifetime.as_millis()).unwrap_or(u32::MAX);
                out.extend_from_slice(&ms.to_be_bytes());
                put_record(&mut out, registration, this);
            }
            ClusterMessage::Introduction { to, about, session } => {
                out.push(KIND_INTRODUCTION);
                put_str(&mut out, to.as_str());
                out.extend_from_slice(&session.to_be_bytes());
                put_record(&mut out, about, this);
            }
        }
        out
    }

    /// A message from its bytes; every record comes back with its `owner` set.
    pub fn decode(bytes: &[u8]) -> Result<ClusterMessage, ClusterWireError> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(ClusterWireError::Unknown);
        }
        let msg = match r.u8()? {
            KIND_REGISTRATION => {
                let lifetime = Duration::from_millis(u64::from(r.u32()?));
                ClusterMessage::Registration { registration: r.record()?, lifetime }
            }
            KIND_INTRODUCTION => {
                let to = PeerName::new(r.str()?).map_err(|_| ClusterWireError::Invalid)?;
                let session = u64::from_be_bytes(r.array()?);
                ClusterMessage::Introduction { to, session, about: r.record()? }
            }
            _ => return Err(ClusterWireError::Unknown),
        };
        if !r.0.is_empty() {
            return Err(ClusterWireError::Invalid);
        }
        Ok(msg)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names and instance ids are at most 32 bytes (their constructors check it).
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn put_record(out: &mut Vec<u8>, reg: &Registration, this: &InstanceId) {
    put_str(out, reg.owner.as_ref().unwrap_or(this).as_str());
    put_str(out, reg.name.as_str());
    out.extend_from_slice(&reg.key.0);
    put_addr(out, reg.endpoint);
    put_addr(out, reg.local);
    let (profile, delta) = encode_profile(&reg.profile);
    out.extend_from_slice(&profile);
    out.extend_from_slice(&delta.unwrap_or(0).to_be_bytes());
    let candidates = &reg.candidates[..reg.candidates.len().min(MAX_CANDIDATES)];
    out.push(candidates.len() as u8);
    for c in candidates {
        out.push(c.kind as u8);
        put_addr(out, c.addr);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ClusterWireError> {
        if self.0.len() < n {
            return Err(ClusterWireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ClusterWireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ClusterWireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ClusterWireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<&'a str, ClusterWireError> {
        let n = usize::from(self.u8()?);
        std::str::from_utf8(self.take(n)?).map_err(|_| ClusterWireError::Invalid)
    }

    fn addr(&mut self) -> Result<SocketAddr, ClusterWireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(ClusterWireError::Invalid),
        };
        Ok(SocketAddr::new(ip, u16::from_be_bytes(self.array()?)))
    }

    fn record(&mut self) -> Result<Registration, ClusterWireError> {
        let owner = self.str()?;
        if owner.is_empty() {
            return Err(ClusterWireError::NoOwner);
        }
        let owner = InstanceId::new(owner).map_err(|_| ClusterWireError::Invalid)?;
        let name = PeerName::new(self.str()?).map_err(|_| ClusterWireError::Invalid)?;
        let key = PublicKey(self.array()?);
        let endpoint = self.addr()?;
        let local = self.addr()?;
        let profile: [u8; 4] = self.array()?;
        let delta = i32::from_be_bytes(self.array()?);
        let n = usize::from(self.u8()?);
        if n > MAX_CANDIDATES {
            return Err(ClusterWireError::Invalid);
        }
        let mut candidates = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = match self.u8()? {
                0 => CandidateKind::Host,
                1 => CandidateKind::PortMapped,
                2 => CandidateKind::Reflexive,
                3 => CandidateKind::Predicted,
                4 => CandidateKind::Relayed,
                _ => return Err(ClusterWireError::Invalid),
            };
            candidates.push(Candidate { kind, addr: self.addr()? });
        }
        Ok(Registration {
            name,
            key,
            endpoint,
            local,
            candidates,
            profile: decode_profile(profile, Some(delta)),
            owner: Some(owner),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{Allocation, Filtering, Mapping};
    use crate::signal::NatProfile;

    fn reg(owner: Option<&str>) -> Registration {
        Registration {
            name: PeerName::new("alice").unwrap(),
            key: PublicKey([7; 32]),
            endpoint: "[::ffff:203.0.113.1]:6666".parse().unwrap(),
            local: "192.0.2.1:3478".parse().unwrap(),
            candidates: vec![
                Candidate { kind: CandidateKind::Host, addr: "192.168.1.2:6666".parse().unwrap() },
                Candidate { kind: CandidateKind::Relayed, addr: "[2001:db8::1]:7000".parse().unwrap() },
            ],
            profile: NatProfile {
                mapping: Mapping::AddressAndPortDependent,
                filtering: Filtering::AddressDependent,
                allocation: Allocation::Sequential { delta: -2 },
                hairpin: Some(true),
                port_mapping: true,
                no_nat: false,
            },
            owner: owner.map(|o| InstanceId::new(o).unwrap()),
        }
    }

    #[test]
    fn messages_round_trip_with_their_owner() {
        let this = InstanceId::new("stund-a").unwrap();
        let m = ClusterMessage::Registration { registration: reg(None), lifetime: Duration::from_millis(15_000) };
        let bytes = m.encode(&this);
        assert!(bytes.len() < 140, "{} bytes", bytes.len());
        let back = ClusterMessage::decode(&bytes).unwrap();
        assert_eq!(
            back,
            ClusterMessage::Registration { registration: reg(Some("stund-a")), lifetime: Duration::from_secs(15) },
            "a local record goes out as owned by this instance, the mapped endpoint unchanged"
        );
        let i = ClusterMessage::Introduction {
            to: PeerName::new("bob").unwrap(),
            about: reg(Some("stund-b")),
            session: 0xdead_beef_0123,
        };
        assert_eq!(ClusterMessage::decode(&i.encode(&this)).unwrap(), i, "a remote owner is kept");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = ClusterMessage::decode(&bytes);
            let mut framed = vec![VERSION, KIND_REGISTRATION];
            framed.extend_from_slice(&bytes);
            let _ = ClusterMessage::decode(&framed);
            framed[1] = KIND_INTRODUCTION;
            let _ = ClusterMessage::decode(&framed);
        }

        #[test]
        fn any_registration_round_trips(
            ms in 0u32..=u32::MAX,
            port in proptest::prelude::any::<u16>(),
            v6 in proptest::prelude::any::<bool>(),
            n in 0usize..=MAX_CANDIDATES,
            session in proptest::prelude::any::<u64>(),
        ) {
            let mut r = reg(Some("stund-b"));
            r.endpoint = if v6 { SocketAddr::new("2001:db8::7".parse().unwrap(), port) } else { SocketAddr::new([198, 51, 100, 7].into(), port) };
            r.candidates = (0..n)
                .map(|i| Candidate { kind: CandidateKind::Predicted, addr: SocketAddr::new([10, 0, 0, i as u8].into(), port) })
                .collect();
            let this = InstanceId::new("stund-a").unwrap();
            let m = ClusterMessage::Registration { registration: r.clone(), lifetime: Duration::from_millis(u64::from(ms)) };
            proptest::prop_assert_eq!(ClusterMessage::decode(&m.encode(&this)).unwrap(), m);
            let i = ClusterMessage::Introduction { to: PeerName::new("bob").unwrap(), about: r, session };
            proptest::prop_assert_eq!(ClusterMessage::decode(&i.encode(&this)).unwrap(), i);
        }
    }

    #[test]
    fn bad_bytes_are_errors_never_panics() {
        let this = InstanceId::new("a").unwrap();
        let good = ClusterMessage::Registration { registration: reg(None), lifetime: Duration::from_secs(1) };
        let bytes = good.encode(&this);
        for n in 0..bytes.len() {
            assert!(ClusterMessage::decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(ClusterMessage::decode(&long), Err(ClusterWireError::Invalid));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(ClusterMessage::decode(&v2), Err(ClusterWireError::Unknown));
        let mut bad_name = bytes.clone();
        bad_name[9] = b' '; // the first byte of the name "alice" (after version, kind, lifetime, owner "a")
        assert!(ClusterMessage::decode(&bad_name).is_err());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = ClusterMessage::decode(&b);
        }
    }
}

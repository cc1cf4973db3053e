//! Where the rendezvous server keeps registrations (docs/signal.md, "Registry"): a trait, so a shared backend
//! (several stund instances behind one name) can replace the in-memory one without touching the protocol,
//! and [`MemoryRegistry`], the default: bounded capacity, compact entries, expiry by lifetime.

use super::types::{Candidate, CandidateKind, InstanceId, NatProfile, PeerName};
use super::wire::{decode_profile, encode_profile};
use crate::identity::PublicKey;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use thiserror::Error;

/// One peer's registration as the protocol sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub name: PeerName,
    pub key: PublicKey,
    /// The source of the REGISTER: the peer's server-reflexive endpoint, where pushes go.
    pub endpoint: SocketAddr,
    /// The server socket the REGISTER arrived on; pushes leave from it so the peer's NAT lets them in.
    pub local: SocketAddr,
    pub candidates: Vec<Candidate>,
    pub profile: NatProfile,
    /// The cluster instance the peer registered at (docs/signal.md, "Cluster"); `None`: this server. `local`
    /// is then that instance's socket, and only that instance can push to the peer.
    pub owner: Option<InstanceId>,
}

/// What a successful [`Registry::register`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// The name was not registered.
    New,
    /// Same endpoint: the lifetime was extended (and candidates/profile replaced).
    Refreshed,
    /// The peer registered from another endpoint, which replaces `from`.
    Moved { from: SocketAddr },
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The name is held by a live registration with another PEER-KEY.
    #[error("the name is registered with another key")]
    KeyMismatch,
    /// No room for another peer.
    #[error("the registry is full")]
    Full,
}

/// A registry backend. Every call gets `now`; backends never read a clock.
pub trait Registry {
    /// Insert or refresh `reg` until `now + lifetime`. A live registration of the same name with another key
    /// is [`RegistryError::KeyMismatch`]; a new name when there is no room is [`RegistryError::Full`].
    fn register(
        &mut self,
        now: Instant,
        lifetime: Duration,
        reg: &Registration,
    ) -> Result<RegisterOutcome, RegistryError>;
    /// The live registration of `name`.
    fn lookup(&self, now: Instant, name: &PeerName) -> Option<Registration>;
    /// How long the live registration of `name` has left.
    fn remaining(&self, now: Instant, name: &PeerName) -> Option<Duration>;
    /// Remove every registration whose lifetime is over, telling `expired` each name and whether it was
    /// registered at this server (`owner` `None`).
    fn expire(&mut self, now: Instant, expired: &mut dyn FnMut(PeerName, bool));
    /// Registrations held (expired ones not yet removed included).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes the backend holds in this process for its registrations.
    fn memory_bytes(&self) -> usize;
}

/// A name stored inline (no heap string per peer).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct NameKey {
    len: u8,
    bytes: [u8; PeerName::MAX_LEN],
}

impl NameKey {
    fn of(name: &PeerName) -> NameKey {
        let s = name.as_str().as_bytes();
        let mut bytes = [0u8; PeerName::MAX_LEN];
        bytes[..s.len()].copy_from_slice(s);
        NameKey { len: s.len() as u8, bytes }
    }

    fn name(&self) -> PeerName {
        let s = std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("");
        PeerName::new(s).expect("stored from a valid name")
    }
}

/// An address in 18 bytes: IPv4 stored as IPv4-mapped IPv6.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedAddr {
    ip: [u8; 16],
    port: u16,
}

impl PackedAddr {
    fn of(a: SocketAddr) -> PackedAddr {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        PackedAddr { ip, port: a.port() }
    }

    /// Back to a socket address; IPv4-mapped addresses come back as IPv4.
    fn addr(&self) -> SocketAddr {
        self.addr_as(false)
    }

    /// Back to a socket address; `mapped` keeps an IPv4-mapped IPv6 address in that form (the source
    /// address a dual-stack server socket reports, and must send to).
    fn addr_as(&self, mapped: bool) -> SocketAddr {
        let v6 = Ipv6Addr::from(self.ip);
        match v6.to_ipv4_mapped() {
            Some(v4) if !mapped => SocketAddr::new(IpAddr::V4(v4), self.port),
            _ => SocketAddr::new(IpAddr::V6(v6), self.port),
        }
    }
}

#[derive(Clone, Copy)]
struct PackedCandidate {
    addr: PackedAddr,
    kind: u8,
}

fn kind_code(k: CandidateKind) -> u8 {
    k as u8
}

fn kind_from(c: u8) -> CandidateKind {
    match c {
        0 => CandidateKind::Host,
        1 => CandidateKind::PortMapped,
        2 => CandidateKind::Reflexive,
        3 => CandidateKind::Predicted,
        _ => CandidateKind::Relayed,
    }
}

/// One registration: 32-byte key, packed endpoint, interned origin (owner and local socket), packed profile, expiry in
/// milliseconds since the registry's epoch, candidates in one boxed slice (no allocation when there are none).
struct Entry {
    key: [u8; 32],
    endpoint: PackedAddr,
    /// The endpoint arrived as an IPv4-mapped IPv6 address (a dual-stack server socket).
    endpoint_mapped: bool,
    /// Index into [`MemoryRegistry::origins`].
    origin: u8,
    profile: [u8; 4],
    delta: i32,
    expires_ms: u32,
    candidates: Box<[PackedCandidate]>,
}

/// Bytes of one table slot (name, entry, and hashbrown's control byte).
pub const MEMORY_SLOT_BYTES: usize = std::mem::size_of::<(NameKey, Entry)>() + 1;
/// Bytes of one stored candidate (heap, outside the table).
pub const MEMORY_CANDIDATE_BYTES: usize = std::mem::size_of::<PackedCandidate>();

/// The in-memory registry (the default backend).
pub struct MemoryRegistry {
    map: HashMap<NameKey, Entry>,
    capacity: usize,
    /// The (owner, server socket) pairs registrations arrived on: a handful (stund listens on at most four
    /// sockets, a cluster has a few instances), interned so an entry holds one byte for both.
    origins: Vec<(Option<InstanceId>, SocketAddr)>,
    epoch: Instant,
    candidate_count: usize,
}

impl MemoryRegistry {
    /// Most (owner, socket) pairs a registry records registrations from (the origin index is a byte).
    pub const MAX_ORIGINS: usize = 256;

    /// A registry for at most `capacity` peers whose clock starts at `now`.
    pub fn new(capacity: usize, now: Instant) -> MemoryRegistry {
        MemoryRegistry { map: HashMap::new(), capacity, origins: Vec::new(), epoch: now, candidate_count: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn ms(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u32::MAX)
    }

    fn origin_index(&mut self, owner: &Option<InstanceId>, local: SocketAddr) -> Option<u8> {
        if let Some(i) = self.origins.iter().position(|(o, l)| o == owner && *l == local) {
            return u8::try_from(i).ok();
        }
        if self.origins.len() >= Self::MAX_ORIGINS {
            return None;
        }
        self.origins.push((owner.clone(), local));
        u8::try_from(self.origins.len() - 1).ok()
    }

    fn unpack(&self, name: &NameKey, e: &Entry) -> Registration {
        Registration {
            name: name.name(),
            key: PublicKey(e.key),
            endpoint: e.endpoint.addr_as(e.endpoint_mapped),
            local: self.origins[usize::from(e.origin)].1,
            candidates: e
                .candidates
                .iter()
                .map(|c| Candidate { kind: kind_from(c.kind), addr: c.addr.addr() })
                .collect(),
            profile: decode_profile(e.profile, Some(e.delta)),
            owner: self.origins[usize::from(e.origin)].0.clone(),
        }
    }
}

impl Registry for MemoryRegistry {
    fn register(
        &mut self,
        now: Instant,
        lifetime: Duration,
        reg: &Registration,
    ) -> Result<RegisterOutcome, RegistryError> {
        let name = NameKey::of(&reg.name);
        let now_ms = self.ms(now);
        let outcome = match self.map.get(&name) {
            Some(e) if e.expires_ms > now_ms && e.key != reg.key.0 => return Err(RegistryError::KeyMismatch),
            // Registered at another instance of the cluster until now: new here.
            Some(e) if e.expires_ms > now_ms && self.origins[usize::from(e.origin)].0 != reg.owner => {
                RegisterOutcome::New
            }
            Some(e) if e.expires_ms > now_ms && e.endpoint != PackedAddr::of(reg.endpoint) => {
                RegisterOutcome::Moved { from: e.endpoint.addr_as(e.endpoint_mapped) }
            }
            Some(e) if e.expires_ms > now_ms => RegisterOutcome::Refreshed,
            Some(_) => RegisterOutcome::New,
            None if self.map.len() >= self.capacity => return Err(RegistryError::Full),
            None => RegisterOutcome::New,
        };
        let origin = self.origin_index(&reg.owner, reg.local).ok_or(RegistryError::Full)?;
        let (profile, delta) = encode_profile(&reg.profile);
        let candidates: Box<[PackedCandidate]> = reg
            .candidates
            .iter()
            .map(|c| PackedCandidate { addr: PackedAddr::of(c.addr), kind: kind_code(c.kind) })
            .collect();
        let entry = Entry {
            key: reg.key.0,
            endpoint: PackedAddr::of(reg.endpoint),
            endpoint_mapped: reg.endpoint.is_ipv6(),
            origin,
            profile,
            delta: delta.unwrap_or(0),
            expires_ms: self.ms(now + lifetime),
            candidates,
        };
        self.candidate_count += entry.candidates.len();
        if let Some(old) = self.map.insert(name, entry) {
            self.candidate_count -= old.candidates.len();
        }
        Ok(outcome)
    }

    fn lookup(&self, now: Instant, name: &PeerName) -> Option<Registration> {
        let key = NameKey::of(name);
        let e = self.map.get(&key)?;
        (e.expires_ms > self.ms(now)).then(|| self.unpack(&key, e))
    }

    fn remaining(&self, now: Instant, name: &PeerName) -> Option<Duration> {
        let e = self.map.get(&NameKey::of(name))?;
        let left = e.expires_ms.checked_sub(self.ms(now)).filter(|&ms| ms > 0)?;
        Some(Duration::from_millis(u64::from(left)))
    }

    fn expire(&mut self, now: Instant, expired: &mut dyn FnMut(PeerName, bool)) {
        let now_ms = self.ms(now);
        let mut dropped = 0;
        let origins = &self.origins;
        self.map.retain(|name, e| {
            let keep = e.expires_ms > now_ms;
            if !keep {
                dropped += e.candidates.len();
                expired(name.name(), origins[usize::from(e.origin)].0.is_none());
            }
            keep
        });
        self.candidate_count -= dropped;
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// The table (hashbrown keeps at most 7/8 of a power-of-two number of slots full) plus the candidates'
    /// heap slices; allocator overhead per slice is not counted.
    fn memory_bytes(&self) -> usize {
        let cap = self.map.capacity();
        let slots = if cap == 0 { 0 } else { (cap * 8 / 7).next_power_of_two() };
        slots * MEMORY_SLOT_BYTES + self.candidate_count * MEMORY_CANDIDATE_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{Allocation, Filtering, Mapping};

    fn reg(name: &str, key: u8, endpoint: &str) -> Registration {
        Registration {
            name: PeerName::new(name).unwrap(),
            key: PublicKey([key; 32]),
            endpoint: endpoint.parse().unwrap(),
            local: "192.0.2.1:3478".parse().unwrap(),
            candidates: vec![
                Candidate { kind: CandidateKind::Host, addr: "192.168.1.2:6666".parse().unwrap() },
                Candidate { kind: CandidateKind::Predicted, addr: "[2001:db8::1]:7000".parse().unwrap() },
            ],
            profile: NatProfile {
                mapping: Mapping::AddressAndPortDependent,
                filtering: Filtering::AddressDependent,
                allocation: Allocation::Sequential { delta: -2 },
                hairpin: Some(true),
                port_mapping: true,
                no_nat: false,
            },
            owner: None,
        }
    }

    const LIFE: Duration = Duration::from_secs(15);

    #[test]
    fn register_lookup_refresh_move_expire() {
        let t0 = Instant::now();
        let mut r = MemoryRegistry::new(10, t0);
        let a = reg("alice", 1, "203.0.113.1:6666");
        assert_eq!(r.register(t0, LIFE, &a), Ok(RegisterOutcome::New));
        assert_eq!(r.lookup(t0, &a.name), Some(a.clone()), "stored and unpacked losslessly");
        assert_eq!(r.register(t0 + Duration::from_secs(3), LIFE, &a), Ok(RegisterOutcome::Refreshed));
        let moved = reg("alice", 1, "203.0.113.9:4000");
        assert_eq!(
            r.register(t0 + Duration::from_secs(4), LIFE, &moved),
            Ok(RegisterOutcome::Moved { from: a.endpoint })
        );
        assert_eq!(r.lookup(t0 + Duration::from_secs(4), &a.name).unwrap().endpoint, moved.endpoint);
        let mut gone = Vec::new();
        r.expire(t0 + Duration::from_secs(18), &mut |n, _| gone.push(n));
        assert!(gone.is_empty());
        assert!(r.lookup(t0 + Duration::from_secs(19), &a.name).is_none(), "past its lifetime");
        r.expire(t0 + Duration::from_secs(19), &mut |n, _| gone.push(n));
        assert_eq!(gone, std::slice::from_ref(&a.name));
        assert!(r.is_empty());
        assert_eq!(r.memory_bytes() % MEMORY_SLOT_BYTES, 0, "candidates freed with their entry");
    }

    #[test]
    fn a_dual_stack_source_is_given_back_as_it_came() {
        let t0 = Instant::now();
        let mut r = MemoryRegistry::new(10, t0);
        let mapped = reg("alice", 1, "[::ffff:203.0.113.1]:6666");
        r.register(t0, LIFE, &mapped).unwrap();
        assert_eq!(r.lookup(t0, &mapped.name).unwrap().endpoint, mapped.endpoint);
        let plain = reg("bob", 2, "203.0.113.2:6666");
        r.register(t0, LIFE, &plain).unwrap();
        assert_eq!(r.lookup(t0, &plain.name).unwrap().endpoint, plain.endpoint);
    }

    #[test]
    fn a_name_is_pinned_to_its_key_until_it_expires() {
        let t0 = Instant::now();
        let mut r = MemoryRegistry::new(10, t0);
        r.register(t0, LIFE, &reg("alice", 1, "203.0.113.1:6666")).unwrap();
        let thief = reg("alice", 2, "198.51.100.7:6666");
        assert_eq!(r.register(t0 + Duration::from_secs(14), LIFE, &thief), Err(RegistryError::KeyMismatch));
        assert_eq!(r.register(t0 + LIFE, LIFE, &thief), Ok(RegisterOutcome::New), "after expiry it is free");
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let t0 = Instant::now();
        let mut r = MemoryRegistry::new(3, t0);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            r.register(t0, LIFE, &reg(n, i as u8, "203.0.113.1:1")).unwrap();
        }
        assert_eq!(r.register(t0, LIFE, &reg("d", 9, "203.0.113.1:1")), Err(RegistryError::Full));
        assert_eq!(r.register(t0, LIFE, &reg("a", 0, "203.0.113.1:1")), Ok(RegisterOutcome::Refreshed));
        r.expire(t0 + LIFE, &mut |_, _| {});
        assert_eq!(r.register(t0 + LIFE, LIFE, &reg("d", 9, "203.0.113.1:1")), Ok(RegisterOutcome::New));
    }

    #[test]
    fn bytes_per_registered_peer() {
        let t0 = Instant::now();
        let n = 100_000;
        let mut r = MemoryRegistry::new(n, t0);
        for i in 0..n {
            let mut x = reg(&format!("peer-{i}"), 1, "203.0.113.1:6666");
            x.candidates.clear();
            r.register(t0, LIFE, &x).unwrap();
        }
        let per_peer = r.memory_bytes() / n;
        eprintln!("slot {MEMORY_SLOT_BYTES} B, {per_peer} B per peer, {} B total", r.memory_bytes());
        const { assert!(MEMORY_SLOT_BYTES <= 128) };
        assert!(per_peer <= 200, "{per_peer} bytes per peer at 100 000 peers");
        assert_eq!(MEMORY_CANDIDATE_BYTES, 20);
    }
}

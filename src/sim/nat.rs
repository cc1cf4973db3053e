//! Simulated NATs and firewalls, in the RFC 4787 terms of [`crate::nat::behaviour`]: mapping (§4.1),
//! port assignment (§4.2), mapping refresh and timeout (§4.3), filtering (§5), hairpinning (§6) and an ALG
//! that rewrites addresses in payloads (§7). ICMP errors are translated through existing mappings only
//! (RFC 5508 §3); they never create or refresh one.

use super::SimError;
use crate::nat::behaviour::{Allocation, Filtering, Mapping};
use crate::net::Rng;
use crate::stun::{attr, Message};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Lowest port a NAT hands out; the well-known range below is never used for mappings.
pub const FIRST_PORT: u16 = 1024;
const PORTS: i64 = 65536 - FIRST_PORT as i64;

/// How a simulated NAT behaves. The behaviour names are the ones the diagnosis reports, so a test can
/// assert that the diagnosis finds what the simulator was told to be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NatConfig {
    /// [`Mapping::EndpointIndependent`], [`Mapping::AddressDependent`] or
    /// [`Mapping::AddressAndPortDependent`].
    pub mapping: Mapping,
    /// [`Filtering::EndpointIndependent`], [`Filtering::AddressDependent`] or
    /// [`Filtering::AddressAndPortDependent`].
    pub filtering: Filtering,
    /// [`Allocation::Preserved`] (the local port when free, else the next free one),
    /// [`Allocation::Sequential`] (from [`sequential_start`](NatConfig::sequential_start), `delta` apart) or
    /// [`Allocation::Random`].
    pub allocation: Allocation,
    /// Whether datagrams from inside to the NAT's own public address loop back in (RFC 4787 §6).
    pub hairpin: bool,
    /// A mapping unused this long is forgotten (RFC 4787 §4.3 asks for at least 2 minutes; real NATs vary).
    pub mapping_timeout: Duration,
    /// Whether inbound datagrams refresh a mapping too (RFC 4787 REQ-6 leaves it open; Linux does).
    pub inbound_refresh: bool,
    /// An ALG that rewrites a STUN MAPPED-ADDRESS equal to the public endpoint into the internal one on the
    /// way in, as some routers do to "fix" addresses in payloads (RFC 4787 §7). XOR-MAPPED-ADDRESS survives,
    /// and a FINGERPRINT no longer matches, exactly as behind such a router.
    pub alg: bool,
    /// First port of [`Allocation::Sequential`].
    pub sequential_start: u16,
}

impl NatConfig {
    /// Port preserving, no hairpinning, 2-minute timeout refreshed both ways, no ALG.
    pub fn new(mapping: Mapping, filtering: Filtering) -> NatConfig {
        NatConfig {
            mapping,
            filtering,
            allocation: Allocation::Preserved,
            hairpin: false,
            mapping_timeout: Duration::from_secs(120),
            inbound_refresh: true,
            alg: false,
            sequential_start: 20000,
        }
    }

    pub fn with_allocation(self, allocation: Allocation) -> NatConfig {
        NatConfig { allocation, ..self }
    }

    pub fn with_hairpin(self, hairpin: bool) -> NatConfig {
        NatConfig { hairpin, ..self }
    }

    pub fn with_timeout(self, mapping_timeout: Duration) -> NatConfig {
        NatConfig { mapping_timeout, ..self }
    }

    pub fn with_alg(self, alg: bool) -> NatConfig {
        NatConfig { alg, ..self }
    }

    /// Only behaviours the simulator models; the "could not tell" values of the diagnosis are not NATs.
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        if matches!(self.mapping, Mapping::EndpointDependent | Mapping::Unknown) {
            return Err(SimError::Unmodelled(self.mapping.as_str()));
        }
        check_filtering(self.filtering)?;
        match self.allocation {
            Allocation::Unknown => Err(SimError::Unmodelled(self.allocation.as_str())),
            Allocation::Sequential { delta } if delta == 0 || i64::from(delta).abs() >= PORTS => {
                Err(SimError::Unmodelled("sequential allocation with a zero or out-of-range step"))
            }
            _ => Ok(()),
        }
    }
}

fn check_filtering(filtering: Filtering) -> Result<(), SimError> {
    if filtering == Filtering::Unknown {
        return Err(SimError::Unmodelled(filtering.as_str()));
    }
    Ok(())
}

/// Why a middlebox dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoMapping,
    Filtered,
    PortsExhausted,
}

/// What sits between an inside network and an outside one.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Nat {
        config: NatConfig,
        public: IpAddr,
    },
    /// A stateful firewall: no translation, filtering only (inside hosts have outside addresses).
    Firewall {
        filtering: Filtering,
        timeout: Duration,
    },
}

/// One mapping (for a firewall: one inside endpoint's filter state; `public == internal`).
#[derive(Clone, Debug)]
struct Entry {
    internal: SocketAddr,
    /// The destination part the mapping depends on: None (endpoint-independent), the IP with port 0
    /// (address-dependent), or the whole address.
    key: Option<SocketAddr>,
    public: SocketAddr,
    /// Destinations sent to, for filtering (RFC 4787 §5).
    contacted: Vec<SocketAddr>,
    last: Instant,
    /// A port forward (NAT-PMP, PCP, UPnP or by hand): never times out and lets anyone in.
    forwarded: bool,
}

/// A NAT or firewall with its mapping table.
pub(crate) struct Middlebox {
    pub(crate) kind: Kind,
    entries: Vec<Entry>,
    next_port: u16,
}

impl Middlebox {
    pub(crate) fn nat(config: NatConfig, public: IpAddr) -> Result<Middlebox, SimError> {
        config.validate()?;
        let next_port = config.sequential_start.max(FIRST_PORT);
        Ok(Middlebox { kind: Kind::Nat { config, public }, entries: Vec::new(), next_port })
    }

    pub(crate) fn firewall(filtering: Filtering, timeout: Duration) -> Result<Middlebox, SimError> {
        check_filtering(filtering)?;
        Ok(Middlebox { kind: Kind::Firewall { filtering, timeout }, entries: Vec::new(), next_port: FIRST_PORT })
    }

    /// The NAT's public address (None for a firewall).
    pub(crate) fn public_ip(&self) -> Option<IpAddr> {
        match self.kind {
            Kind::Nat { public, .. } => Some(public),
            Kind::Firewall { .. } => None,
        }
    }

    pub(crate) fn hairpin(&self) -> bool {
        matches!(self.kind, Kind::Nat { config, .. } if config.hairpin)
    }

    fn alg(&self) -> bool {
        matches!(self.kind, Kind::Nat { config, .. } if config.alg)
    }

    fn timeout(&self) -> Duration {
        match self.kind {
            Kind::Nat { config, .. } => config.mapping_timeout,
            Kind::Firewall { timeout, .. } => timeout,
        }
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.timeout();
        self.entries.retain(|e| e.forwarded || now.saturating_duration_since(e.last) < timeout);
    }

    /// The live mappings as (internal, public) pairs, oldest first.
    pub(crate) fn mappings(&mut self, now: Instant) -> Vec<(SocketAddr, SocketAddr)> {
        self.expire(now);
        self.entries.iter().map(|e| (e.internal, e.public)).collect()
    }

    /// Forgets every mapping and port forward, as a router reboot does.
    pub(crate) fn flush(&mut self) {
        self.entries.clear();
    }

    /// Forwards public port `port` to `internal`, as a port mapping protocol asks the router to (RFC 6886
    /// §3.3, RFC 6887 §11). Returns the public endpoint, or None when the port is in use.
    pub(crate) fn forward(&mut self, now: Instant, port: u16, internal: SocketAddr) -> Option<SocketAddr> {
        self.expire(now);
        let public = SocketAddr::new(self.public_ip()?, port);
        if port < FIRST_PORT || self.entries.iter().any(|e| e.public == public) {
            return None;
        }
        let entry = Entry { internal, key: None, public, contacted: Vec::new(), last: now, forwarded: true };
        self.entries.push(entry);
        Some(public)
    }

    /// Removes the port forward on `port`; false when there was none.
    pub(crate) fn unforward(&mut self, port: u16) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| !(e.forwarded && e.public.port() == port));
        self.entries.len() != before
    }

    fn key(&self, dst: SocketAddr) -> Option<SocketAddr> {
        match self.kind {
            Kind::Nat { config, .. } => match config.mapping {
                Mapping::AddressDependent => Some(SocketAddr::new(dst.ip(), 0)),
                Mapping::AddressAndPortDependent => Some(dst),
                _ => None,
            },
            Kind::Firewall { .. } => None,
        }
    }

    /// A datagram (or, with `icmp`, an ICMP error) from `src` inside to `dst` outside: the source it leaves
    /// with. Datagrams create and refresh mappings; ICMP errors need one.
    pub(crate) fn outbound(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        icmp: bool,
        rng: &mut Rng,
    ) -> Result<SocketAddr, Refusal> {
        self.expire(now);
        let key = self.key(dst);
        if let Some(e) = self.entries.iter_mut().find(|e| e.internal == src && e.key == key) {
            if !icmp {
                e.last = now;
                if !e.contacted.contains(&dst) {
                    e.contacted.push(dst);
                }
            }
            return Ok(e.public);
        }
        if icmp {
            // A firewall lets the inside's own errors out; a NAT cannot translate one without a mapping.
            return match self.kind {
                Kind::Firewall { .. } => Ok(src),
                Kind::Nat { .. } => Err(Refusal::NoMapping),
            };
        }
        let public = match self.kind {
            Kind::Nat { config, public } => SocketAddr::new(public, self.allocate(config.allocation, src.port(), rng)?),
            Kind::Firewall { .. } => src,
        };
        self.entries.push(Entry { internal: src, key, public, contacted: vec![dst], last: now, forwarded: false });
        Ok(public)
    }

    /// A datagram (or ICMP error) from `src` outside to the public `dst`: the internal address it goes on to.
    /// `data` is rewritten when the NAT has an ALG.
    pub(crate) fn inbound(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        icmp: bool,
        data: &mut [u8],
    ) -> Result<SocketAddr, Refusal> {
        self.expire(now);
        let (filtering, refresh) = match self.kind {
            Kind::Nat { config, .. } => (config.filtering, config.inbound_refresh),
            Kind::Firewall { filtering, .. } => (filtering, true),
        };
        let alg = self.alg();
        let Some(e) = self.entries.iter_mut().find(|e| e.public == dst) else {
            return Err(Refusal::NoMapping);
        };
        let allowed = match filtering {
            _ if e.forwarded => true,
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => e.contacted.iter().any(|c| c.ip() == src.ip()),
            _ => e.contacted.contains(&src),
        };
        if !allowed {
            return Err(Refusal::Filtered);
        }
        if !icmp {
            if refresh {
                e.last = now;
            }
            if alg {
                alg_rewrite(data, e.public, e.internal);
            }
        }
        Ok(e.internal)
    }

    fn allocate(&mut self, allocation: Allocation, wanted: u16, rng: &mut Rng) -> Result<u16, Refusal> {
        let taken = |entries: &[Entry], p: u16| entries.iter().any(|e| e.public.port() == p);
        let step =
            |p: u16, d: i64| (FIRST_PORT as i64 + (i64::from(p) - FIRST_PORT as i64 + d).rem_euclid(PORTS)) as u16;
        match allocation {
            Allocation::Random => {
                for _ in 0..PORTS {
                    let p = FIRST_PORT + rng.below(PORTS as u64) as u16;
                    if !taken(&self.entries, p) {
                        return Ok(p);
                    }
                }
                Err(Refusal::PortsExhausted)
            }
            Allocation::Sequential { delta } => {
                let mut p = self.next_port;
                for _ in 0..PORTS {
                    if !taken(&self.entries, p) {
                        self.next_port = step(p, i64::from(delta));
                        return Ok(p);
                    }
                    p = step(p, i64::from(delta));
                }
                Err(Refusal::PortsExhausted)
            }
            // Preserved (Unknown is refused when the NAT is built).
            _ => {
                let mut p = wanted.max(FIRST_PORT);
                for _ in 0..PORTS {
                    if !taken(&self.entries, p) {
                        return Ok(p);
                    }
                    p = step(p, 1);
                }
                Err(Refusal::PortsExhausted)
            }
        }
    }
}

/// What a payload-rewriting ALG does to STUN: a plain MAPPED-ADDRESS naming the public endpoint becomes the
/// internal one. Anything else, and addresses of another family, pass untouched.
fn alg_rewrite(data: &mut [u8], public: SocketAddr, internal: SocketAddr) {
    let Ok(msg) = Message::parse(data) else { return };
    let Some(raw) = msg.raw(attr::MAPPED_ADDRESS) else { return };
    if msg.mapped_address() != Some(public) {
        return;
    }
    // Value: reserved, family, port, address (RFC 8489 §14.1).
    let off = raw.offset + 4;
    match (internal.ip(), raw.value.len()) {
        (IpAddr::V4(ip), 8) => data[off + 4..off + 8].copy_from_slice(&ip.octets()),
        (IpAddr::V6(ip), 20) => data[off + 4..off + 20].copy_from_slice(&ip.octets()),
        _ => return,
    }
    data[off + 2..off + 4].copy_from_slice(&internal.port().to_be_bytes());
}

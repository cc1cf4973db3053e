//! A deterministic simulated network for engine tests (docs/simulator.md).
//!
//! Hosts own engines of any type implementing [`net::Engine`](crate::net::Engine), bound to local socket
//! addresses; a datagram for a local address is offered to the host's engines bound there, in the order
//! they were added, until one takes it. Hosts sit on networks: the public internet ([`Sim::INTERNET`]) and
//! the inside networks of NATs and firewalls, which nest (a NAT on another NAT's inside network is a double
//! NAT). NATs behave as RFC 4787 describes, in the terms of [`crate::nat::behaviour`] (see [`NatConfig`]).
//! Links delay, jitter, lose and reorder datagrams ([`Link`]); hosts answer datagrams to closed ports with
//! ICMP port unreachable, which NATs translate back (RFC 5508) and engines receive through
//! `handle_unreachable`; a fault rule ([`Sim::set_fault`]) drops or refuses chosen datagrams.
//!
//! Time is fake: each step jumps to the earliest of every engine's `poll_timeout` and every datagram's
//! arrival. All randomness (loss, jitter, random port allocation, the servers' seeds) comes from one
//! [`net::Rng`](crate::net::Rng) seeded by the test, and nothing iterates a hash map, so the same seed gives
//! the same [`trace`](Sim::trace). Every run loop is bounded in steps and in simulated time.
//!
//! Compiled for the library's own tests and, with the `sim` feature, for other crates' tests.

mod engine;
mod link;
mod nat;
mod probe;
mod scripted;
mod trace;

#[cfg(test)]
mod tests;

pub use engine::EngineId;
pub use link::Link;
pub use nat::{NatConfig, FIRST_PORT};
pub use probe::{Probe, ProbeEvent};
pub use scripted::{Reply, Scripted};
pub use trace::{DropReason, TraceEntry, TraceEvent};

use crate::nat::behaviour::Filtering;
use crate::net::{Engine, Received, Rng, Seed, Transmit};
use crate::server::{ConfigError, Responder, ServerConfig};
use engine::{binds, Attached, Slot};
use nat::{Middlebox, Refusal};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most datagrams drained from one engine, or events taken, in one step: more means a runaway engine.
pub(crate) const MAX_BURST: usize = 10_000;
/// Most steps of one run call.
pub const MAX_STEPS: usize = 1_000_000;
/// Largest datagram an engine may send (the largest UDP payload).
const MAX_DATAGRAM: usize = 65_535;
/// The TTL of a datagram sent without one of its own (Linux's default).
const DEFAULT_TTL: u8 = 64;

/// A network: the internet or the inside of a NAT or firewall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetId(usize);

/// A host on a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(usize);

/// A NAT or firewall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatId(usize);

/// What is wrong with a simulated topology.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("the simulator does not model the behaviour \"{0}\"")]
    Unmodelled(&'static str),
    #[error("{0} is already in use on that network")]
    AddressInUse(IpAddr),
    #[error("{0} is not an address of the host")]
    NotOnHost(SocketAddr),
    #[error("no such network")]
    NoNetwork,
    #[error("public port {0} is in use, reserved, or the box is a firewall without public address")]
    PortUnavailable(u16),
    #[error(transparent)]
    Server(#[from] ConfigError),
}

/// Why a run stopped before its condition held.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    #[error("the condition did not hold within {0:?} of simulated time")]
    TimedOut(Duration),
    #[error("nothing left to happen: no datagram in flight and no engine timer")]
    Idle,
    #[error("{MAX_STEPS} steps without reaching the end (an engine that keeps waking at once?)")]
    StepLimit,
}

/// What the fault rule does with a datagram an engine sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    /// Let it travel, but have its destination refuse it with an ICMP port unreachable whatever listens
    /// there: the error comes back along the path after a round trip, as from a closed port.
    Unreachable,
}

/// A datagram as an engine sent it, shown to the fault rule.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The datagram's number in the trace; 0 for the first datagram of the run.
    pub packet: u64,
    pub host: HostId,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: &'a [u8],
}

/// Picks a [`Fate`] for each datagram an engine sends.
pub type FaultRule = Box<dyn FnMut(&Outgoing<'_>) -> Fate>;

/// A datagram an engine sent, with its bytes, kept while [capture](Sim::set_capture) is on (to check
/// retransmission schedules, transaction ids, what a request carried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Simulated time since the simulator was built.
    pub at: Duration,
    pub packet: u64,
    pub host: HostId,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

struct Network {
    /// The NAT or firewall this network is the inside of; None for the internet.
    gateway: Option<NatId>,
}

struct Host {
    net: NetId,
    ips: Vec<IpAddr>,
    link: Link,
    /// Whether the host answers datagrams to closed ports with ICMP port unreachable (as operating systems do).
    icmp: bool,
}

struct Gateway {
    mb: Middlebox,
    outer: NetId,
    inner: NetId,
    uplink: Link,
}

/// A datagram or an ICMP error in flight. An ICMP error travels from the unreachable address back to the
/// original sender, so its own (src, dst) are the original datagram's (dst, src) and NATs translate it
/// like a reply.
struct Packet {
    id: u64,
    /// Hops left: each NAT or firewall forwarding it takes one, and drops it when one is all that is left
    /// (a router checks the TTL before its NAT sees the packet).
    ttl: u8,
    src: SocketAddr,
    dst: SocketAddr,
    icmp: bool,
    /// The fault rule said the destination refuses it.
    refuse: bool,
    data: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Hop {
    /// Reaches a network, to be routed there.
    Net(NetId),
    /// Reaches a host.
    Host(HostId),
    /// Reaches a NAT or firewall from its outside.
    Outside(NatId),
}

struct Pending {
    at: Instant,
    seq: u64,
    hop: Hop,
    packet: Packet,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

enum Stop {
    Deadline,
    Idle,
}

/// The simulated network (see the module docs).
pub struct Sim {
    start: Instant,
    now: Instant,
    rng: Rng,
    nets: Vec<Network>,
    hosts: Vec<Host>,
    gateways: Vec<Gateway>,
    engines: Vec<Attached>,
    queue: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    next_packet: u64,
    trace: Vec<TraceEntry>,
    tracing: bool,
    fault: Option<FaultRule>,
    capture: Option<Vec<Captured>>,
    buf: Vec<u8>,
}

impl Sim {
    /// The public internet, which every simulator starts with.
    pub const INTERNET: NetId = NetId(0);

    /// An empty internet; `seed` drives every random choice of the run.
    pub fn new(seed: Seed) -> Sim {
        let now = Instant::now();
        Sim {
            start: now,
            now,
            rng: Rng::from_seed(seed),
            nets: vec![Network { gateway: None }],
            hosts: Vec::new(),
            gateways: Vec::new(),
            engines: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            next_packet: 0,
            trace: Vec::new(),
            tracing: true,
            fault: None,
            capture: None,
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// The simulated clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time since the simulator was built.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A seed for an engine, drawn from the run's generator (so the whole run still follows one seed).
    pub fn fork_seed(&mut self) -> Seed {
        self.rng.fork()
    }

    /// A NAT with public address `public` on network `outer`; returns it and its inside network.
    pub fn add_nat(
        &mut self,
        outer: NetId,
        public: IpAddr,
        config: NatConfig,
        uplink: Link,
    ) -> Result<(NatId, NetId), SimError> {
        self.check_net(outer)?;
        self.check_free(outer, public)?;
        let mb = Middlebox::nat(config, public)?;
        Ok(self.add_gateway(mb, outer, uplink))
    }

    /// A stateful firewall on `outer`: hosts inside keep addresses of `outer`, and inbound datagrams pass only
    /// as `filtering` allows, for `timeout` after the inside endpoint last sent. Returns it and its inside.
    pub fn add_firewall(
        &mut self,
        outer: NetId,
        filtering: Filtering,
        timeout: Duration,
        uplink: Link,
    ) -> Result<(NatId, NetId), SimError> {
        self.check_net(outer)?;
        let mb = Middlebox::firewall(filtering, timeout)?;
        Ok(self.add_gateway(mb, outer, uplink))
    }

    fn add_gateway(&mut self, mb: Middlebox, outer: NetId, uplink: Link) -> (NatId, NetId) {
        let id = NatId(self.gateways.len());
        let inner = NetId(self.nets.len());
        self.nets.push(Network { gateway: Some(id) });
        self.gateways.push(Gateway { mb, outer, inner, uplink });
        (id, inner)
    }

    /// A host with addresses `ips` on `net`, attached by `link`. It sends ICMP port unreachable for
    /// closed ports until [`set_icmp`](Sim::set_icmp) says otherwise.
    pub fn add_host(&mut self, net: NetId, ips: &[IpAddr], link: Link) -> Result<HostId, SimError> {
        self.check_net(net)?;
        for (i, ip) in ips.iter().enumerate() {
            if ips[..i].contains(ip) {
                return Err(SimError::AddressInUse(*ip));
            }
            self.check_free(net, *ip)?;
        }
        self.hosts.push(Host { net, ips: ips.to_vec(), link, icmp: true });
        Ok(HostId(self.hosts.len() - 1))
    }

    /// Whether `host` answers datagrams to closed ports with ICMP port unreachable.
    pub fn set_icmp(&mut self, host: HostId, on: bool) {
        self.hosts[host.0].icmp = on;
    }

    /// Replaces the link of `host` (to cut it off, make it lossy, slow it down mid-run).
    pub fn set_link(&mut self, host: HostId, link: Link) {
        self.hosts[host.0].link = link;
    }

    /// Replaces the uplink of a NAT or firewall.
    pub fn set_uplink(&mut self, nat: NatId, link: Link) {
        self.gateways[nat.0].uplink = link;
    }

    /// Puts `engine` on `host`, bound to `locals` (addresses of the host, or the wildcard of a family with a
    /// port: then it hears that port on every address of the family, and datagrams reach it with the
    /// wildcard as their local address, as a socket bound so would report).
    pub fn add_engine<E>(&mut self, host: HostId, locals: &[SocketAddr], engine: E) -> Result<EngineId<E>, SimError>
    where
        E: Engine + 'static,
        E::Event: 'static,
    {
        let h = &self.hosts[host.0];
        if let Some(bad) = locals.iter().find(|l| !l.ip().is_unspecified() && !h.ips.contains(&l.ip())) {
            return Err(SimError::NotOnHost(*bad));
        }
        self.engines.push(Attached {
            host: host.0,
            locals: locals.to_vec(),
            node: Box::new(Slot { engine, events: Vec::new() }),
        });
        Ok(EngineId::new(self.engines.len() - 1))
    }

    /// An RFC 5780 STUN server: the real [`Responder`] on a host of its own with the configured address(es),
    /// bound to every socket of `config` (four with an alternate address, else one). No rate limit.
    pub fn add_stun_server(
        &mut self,
        net: NetId,
        config: ServerConfig,
        link: Link,
    ) -> Result<(HostId, EngineId<Responder>), SimError> {
        let mut ips = vec![config.primary];
        ips.extend(config.alternate);
        let locals: Vec<SocketAddr> = config.local_sockets().iter().map(|&s| config.bind_addr(s)).collect();
        let responder = Responder::new(config, None, self.rng.next_u64(), self.now)?;
        let host = self.add_host(net, &ips, link)?;
        let id = self.add_engine(host, &locals, responder)?;
        Ok((host, id))
    }

    /// The engine behind `id`.
    pub fn engine<E: Engine + 'static>(&self, id: EngineId<E>) -> &E
    where
        E::Event: 'static,
    {
        &self.slot(id).engine
    }

    /// The engine behind `id`, to call its own methods between steps.
    pub fn engine_mut<E: Engine + 'static>(&mut self, id: EngineId<E>) -> &mut E
    where
        E::Event: 'static,
    {
        &mut self.slot_mut(id).engine
    }

    /// Takes the events the engine produced so far.
    pub fn events<E: Engine + 'static>(&mut self, id: EngineId<E>) -> Vec<E::Event>
    where
        E::Event: 'static,
    {
        std::mem::take(&mut self.slot_mut(id).events)
    }

    /// The events the engine produced and nobody took yet.
    pub fn pending_events<E: Engine + 'static>(&self, id: EngineId<E>) -> &[E::Event]
    where
        E::Event: 'static,
    {
        &self.slot(id).events
    }

    fn slot<E: Engine + 'static>(&self, id: EngineId<E>) -> &Slot<E>
    where
        E::Event: 'static,
    {
        // An EngineId<E> is only made by add_engine::<E>, so the downcast holds.
        self.engines[id.index].node.as_any().downcast_ref().expect("EngineId of another type")
    }

    fn slot_mut<E: Engine + 'static>(&mut self, id: EngineId<E>) -> &mut Slot<E>
    where
        E::Event: 'static,
    {
        self.engines[id.index].node.as_any_mut().downcast_mut().expect("EngineId of another type")
    }

    /// The live mappings of a NAT (or filter states of a firewall), as (internal, public), oldest first.
    pub fn mappings(&mut self, nat: NatId) -> Vec<(SocketAddr, SocketAddr)> {
        let now = self.now;
        self.gateways[nat.0].mb.mappings(now)
    }

    /// Forgets every mapping of a NAT, as a reboot does: the next datagram out gets a fresh one.
    pub fn flush_mappings(&mut self, nat: NatId) {
        self.gateways[nat.0].mb.flush();
    }

    /// Forwards the NAT's public port `port` to `internal` (a host inside), as a router does when a
    /// NAT-PMP, PCP or UPnP client asks: anyone outside may send to it, and it never times out. A test that
    /// runs a port mapping server engine on the router's inside address applies what it granted here.
    /// Returns the public endpoint. An endpoint-independent NAT also sends the internal endpoint's own
    /// datagrams out from it; a dependent one gives them mappings of their own, as Linux routers with
    /// miniupnpd do.
    pub fn forward_port(&mut self, nat: NatId, port: u16, internal: SocketAddr) -> Result<SocketAddr, SimError> {
        let now = self.now;
        self.gateways[nat.0].mb.forward(now, port, internal).ok_or(SimError::PortUnavailable(port))
    }

    /// Removes a port forward; false when there was none on `port`.
    pub fn unforward_port(&mut self, nat: NatId, port: u16) -> bool {
        self.gateways[nat.0].mb.unforward(port)
    }

    /// Decides the fate of every datagram engines send from now on.
    pub fn set_fault(&mut self, rule: FaultRule) {
        self.fault = Some(rule);
    }

    pub fn clear_fault(&mut self) {
        self.fault = None;
    }

    /// Everything that happened to every datagram so far.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// Starts (keeping what was captured) or stops (forgetting it) keeping every sent datagram's bytes.
    pub fn set_capture(&mut self, on: bool) {
        match (on, self.capture.is_some()) {
            (true, false) => self.capture = Some(Vec::new()),
            (false, _) => self.capture = None,
            _ => {}
        }
    }

    /// The datagrams engines sent while capture was on, in order.
    pub fn captured(&self) -> &[Captured] {
        self.capture.as_deref().unwrap_or_default()
    }

    /// Stops (or resumes) recording the trace, for long runs.
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
    }

    /// Runs `duration` of simulated time (stopping early is not an error: time just passes).
    pub fn run_for(&mut self, duration: Duration) -> Result<(), RunError> {
        let deadline = self.now + duration;
        for _ in 0..MAX_STEPS {
            self.flush();
            if let Some(stop) = self.step(deadline) {
                if let Stop::Idle = stop {
                    self.now = deadline;
                }
                return Ok(());
            }
        }
        Err(RunError::StepLimit)
    }

    /// Runs until `done` holds (checked after every step, once every engine's transmits and events are
    /// drained), for at most `limit` of simulated time. Returns the simulated time it took.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> Result<Duration, RunError> {
        let began = self.now;
        let deadline = began + limit;
        for _ in 0..MAX_STEPS {
            self.flush();
            if done(self) {
                return Ok(self.now - began);
            }
            match self.step(deadline) {
                None => {}
                Some(Stop::Deadline) => return Err(RunError::TimedOut(limit)),
                Some(Stop::Idle) => return Err(RunError::Idle),
            }
        }
        Err(RunError::StepLimit)
    }

    /// Runs until engine `id` has produced an event that `wanted` picks (events stay pending for
    /// [`events`](Sim::events)), for at most `limit`. Returns the simulated time it took.
    pub fn run_until_event<E: Engine + 'static>(
        &mut self,
        id: EngineId<E>,
        limit: Duration,
        mut wanted: impl FnMut(&E::Event) -> bool,
    ) -> Result<Duration, RunError>
    where
        E::Event: 'static,
    {
        self.run_until(limit, |sim| sim.pending_events(id).iter().any(&mut wanted))
    }

    /// Runs until nothing is in flight and no engine has a timer, for at most `limit`.
    pub fn run_until_idle(&mut self, limit: Duration) -> Result<Duration, RunError> {
        let began = self.now;
        let deadline = began + limit;
        for _ in 0..MAX_STEPS {
            self.flush();
            match self.step(deadline) {
                None => {}
                Some(Stop::Deadline) => return Err(RunError::TimedOut(limit)),
                Some(Stop::Idle) => return Ok(self.now - began),
            }
        }
        Err(RunError::StepLimit)
    }

    /// Advances to the next arrival or timer (not past `deadline`), delivers what is due and fires the
    /// timers that are. None when it did so; else why it stopped.
    fn step(&mut self, deadline: Instant) -> Option<Stop> {
        let next_packet = self.queue.peek().map(|p| p.0.at);
        let next_timer = self.engines.iter().filter_map(|e| e.node.next_timeout()).min();
        let next = match (next_packet, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return Some(Stop::Idle),
            },
        };
        if next > deadline {
            self.now = deadline;
            return Some(Stop::Deadline);
        }
        self.now = self.now.max(next);
        // Zero-delay links can add arrivals due now while this runs; routing always moves a datagram one
        // NAT outwards or inwards, so this ends, and the bound only guards against a bug here.
        for _ in 0..MAX_BURST * 100 {
            match self.queue.peek() {
                Some(p) if p.0.at <= self.now => {}
                _ => break,
            }
            if let Some(Reverse(p)) = self.queue.pop() {
                self.arrive(p.hop, p.packet);
            }
        }
        let now = self.now;
        for e in &mut self.engines {
            if e.node.next_timeout().is_some_and(|t| t <= now) {
                e.node.timeout(now);
            }
        }
        None
    }

    /// Sends what every engine has to send and collects their events.
    fn flush(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        for i in 0..self.engines.len() {
            for _ in 0..MAX_BURST {
                let Some(t) = self.engines[i].node.transmit(&mut buf) else { break };
                if t.len > buf.len() {
                    let host = HostId(self.engines[i].host);
                    let id = self.packet_id();
                    self.record(id, TraceEvent::Dropped(DropReason::TooBig(host)));
                    continue;
                }
                self.emit(i, t, &buf[..t.len]);
            }
            self.engines[i].node.collect_events();
        }
        self.buf = buf;
    }

    fn packet_id(&mut self) -> u64 {
        self.next_packet += 1;
        self.next_packet - 1
    }

    fn record(&mut self, packet: u64, event: TraceEvent) {
        if self.tracing {
            self.trace.push(TraceEntry { at: self.now - self.start, packet, event });
        }
    }

    /// One datagram from engine `i`.
    fn emit(&mut self, i: usize, t: Transmit, data: &[u8]) {
        let e = &self.engines[i];
        let host = HostId(e.host);
        let h = &self.hosts[e.host];
        let bound = e.locals.iter().any(|&b| b == t.local || binds(b, t.local));
        // A wildcard source leaves from the host's first address of the destination's family.
        let ip = if t.local.ip().is_unspecified() {
            h.ips.iter().copied().find(|ip| ip.is_ipv4() == t.dst.is_ipv4())
        } else {
            h.ips.contains(&t.local.ip()).then_some(t.local.ip())
        };
        let id = self.packet_id();
        let Some(ip) = ip.filter(|_| bound) else {
            self.record(id, TraceEvent::Dropped(DropReason::BadSource(host)));
            return;
        };
        let src = SocketAddr::new(ip, t.local.port());
        self.record(id, TraceEvent::Sent { host, src, dst: t.dst, len: data.len(), digest: crc32fast::hash(data) });
        if let Some(c) = self.capture.as_mut() {
            let at = self.now - self.start;
            c.push(Captured { at, packet: id, host, src, dst: t.dst, data: data.to_vec() });
        }
        let fate = match self.fault.as_mut() {
            Some(rule) => rule(&Outgoing { packet: id, host, src, dst: t.dst, data }),
            None => Fate::Deliver,
        };
        let (net, link) = (self.hosts[host.0].net, self.hosts[host.0].link);
        if fate == Fate::Drop {
            return self.record(id, TraceEvent::Dropped(DropReason::Fault));
        }
        let refuse = fate == Fate::Unreachable;
        let ttl = t.ttl.unwrap_or(DEFAULT_TTL);
        let packet = Packet { id, ttl, src, dst: t.dst, icmp: false, refuse, data: data.to_vec() };
        self.cross(link, Hop::Net(net), packet);
    }

    /// An ICMP error about packet `cause` from `src` to `dst`, travelling back to `src`.
    fn icmp_for(&mut self, cause: u64, src: SocketAddr, dst: SocketAddr) -> Packet {
        let id = self.packet_id();
        self.record(id, TraceEvent::IcmpSent { cause, src: dst, dst: src });
        Packet { id, ttl: DEFAULT_TTL, src: dst, dst: src, icmp: true, refuse: false, data: Vec::new() }
    }

    /// Sends `packet` over `link` towards `hop`, unless the link loses it.
    fn cross(&mut self, link: Link, hop: Hop, packet: Packet) {
        match link.transit(&mut self.rng, self.now) {
            Some(at) => {
                self.seq += 1;
                self.queue.push(Reverse(Pending { at, seq: self.seq, hop, packet }));
            }
            None => self.record(packet.id, TraceEvent::Dropped(DropReason::Loss)),
        }
    }

    fn arrive(&mut self, hop: Hop, packet: Packet) {
        match hop {
            Hop::Net(net) => self.route(net, packet),
            Hop::Host(host) => self.deliver(host, packet),
            Hop::Outside(nat) => self.inbound(nat, packet),
        }
    }

    /// Routes a packet that reached network `net`: to a host there, to a NAT or firewall whose outside is
    /// there, or out through the network's own gateway (looping back when it is the gateway's own address).
    fn route(&mut self, net: NetId, packet: Packet) {
        let ip = packet.dst.ip();
        if let Some(h) = self.hosts.iter().position(|h| h.net == net && h.ips.contains(&ip)) {
            let link = self.hosts[h].link;
            return self.cross(link, Hop::Host(HostId(h)), packet);
        }
        if let Some(g) = (0..self.gateways.len()).find(|&g| self.gateways[g].outer == net && self.behind(g, ip)) {
            let link = self.gateways[g].uplink;
            return self.cross(link, Hop::Outside(NatId(g)), packet);
        }
        match self.nets[net.0].gateway {
            Some(g) if self.gateways[g.0].mb.public_ip() == Some(ip) => self.hairpin(g, packet),
            Some(g) => self.outbound(g, packet),
            None => self.record(packet.id, TraceEvent::Dropped(DropReason::NoRoute)),
        }
    }

    /// Whether `ip` is reached through gateway `g` from its outside: its public address, or (for a
    /// firewall) any address inside it.
    fn behind(&self, g: usize, ip: IpAddr) -> bool {
        let gw = &self.gateways[g];
        match gw.mb.public_ip() {
            Some(public) => public == ip,
            None => self.inside(gw.inner, ip),
        }
    }

    /// Whether `ip` is an address of a host on `net`, or reached through a gateway on it.
    fn inside(&self, net: NetId, ip: IpAddr) -> bool {
        self.hosts.iter().any(|h| h.net == net && h.ips.contains(&ip))
            || (0..self.gateways.len()).any(|g| self.gateways[g].outer == net && self.behind(g, ip))
    }

    fn refused(&mut self, id: u64, nat: NatId, refusal: Refusal) {
        let reason = match refusal {
            Refusal::NoMapping => DropReason::NoMapping(nat),
            Refusal::Filtered => DropReason::Filtered(nat),
            Refusal::PortsExhausted => DropReason::PortsExhausted(nat),
        };
        self.record(id, TraceEvent::Dropped(reason));
    }

    /// A gateway forwards `packet`: false (and recorded) when its TTL runs out there.
    fn hop(&mut self, nat: NatId, packet: &mut Packet) -> bool {
        if packet.ttl <= 1 {
            self.record(packet.id, TraceEvent::Dropped(DropReason::TtlExpired(nat)));
            return false;
        }
        packet.ttl -= 1;
        true
    }

    /// Source translation on the way out, then on to the outside network.
    fn outbound(&mut self, nat: NatId, mut packet: Packet) {
        if !self.hop(nat, &mut packet) {
            return;
        }
        let now = self.now;
        let gw = &mut self.gateways[nat.0];
        match gw.mb.outbound(now, packet.src, packet.dst, packet.icmp, &mut self.rng) {
            Ok(src) => {
                let (outer, uplink) = (gw.outer, gw.uplink);
                if src != packet.src {
                    packet.src = src;
                    self.record(packet.id, TraceEvent::Translated { nat, src, dst: packet.dst });
                }
                self.cross(uplink, Hop::Net(outer), packet);
            }
            Err(r) => self.refused(packet.id, nat, r),
        }
    }

    /// Filtering and destination translation on the way in, then on to the inside network.
    fn inbound(&mut self, nat: NatId, mut packet: Packet) {
        if !self.hop(nat, &mut packet) {
            return;
        }
        let now = self.now;
        let gw = &mut self.gateways[nat.0];
        match gw.mb.inbound(now, packet.src, packet.dst, packet.icmp, &mut packet.data) {
            Ok(dst) => {
                let inner = gw.inner;
                if dst != packet.dst {
                    packet.dst = dst;
                    self.record(packet.id, TraceEvent::Translated { nat, src: packet.src, dst });
                }
                self.route(inner, packet);
            }
            Err(r) => self.refused(packet.id, nat, r),
        }
    }

    /// From inside to the NAT's own public address (RFC 4787 §6): translated out, then straight back in.
    /// Without hairpinning the NAT drops it; a datagram the fault rule refuses is then refused by the NAT
    /// itself, its destination, with an ICMP error back to the sender inside (a router that rejects what it
    /// does not hairpin).
    fn hairpin(&mut self, nat: NatId, mut packet: Packet) {
        let now = self.now;
        let gw = &mut self.gateways[nat.0];
        let inner = gw.inner;
        let sender = packet.src;
        match gw.mb.outbound(now, packet.src, packet.dst, packet.icmp, &mut self.rng) {
            Ok(src) => {
                let hairpin = gw.mb.hairpin();
                packet.src = src;
                self.record(packet.id, TraceEvent::Translated { nat, src, dst: packet.dst });
                if hairpin {
                    self.inbound(nat, packet);
                } else {
                    self.record(packet.id, TraceEvent::Dropped(DropReason::HairpinOff(nat)));
                    if packet.refuse {
                        let icmp = self.icmp_for(packet.id, sender, packet.dst);
                        self.route(inner, icmp);
                    }
                }
            }
            Err(r) => self.refused(packet.id, nat, r),
        }
    }

    /// A packet reached `host`: offer it to the engines bound to its destination, in order.
    fn deliver(&mut self, host: HostId, packet: Packet) {
        if packet.refuse {
            let h = &self.hosts[host.0];
            let (net, link) = (h.net, h.link);
            self.record(packet.id, TraceEvent::Dropped(DropReason::Fault));
            let icmp = self.icmp_for(packet.id, packet.src, packet.dst);
            return self.cross(link, Hop::Net(net), icmp);
        }
        let now = self.now;
        let mut bound = false;
        let mut consumed = false;
        let mut local = packet.dst;
        for e in self.engines.iter_mut().filter(|e| e.host == host.0) {
            let Some(&l) = e.locals.iter().find(|&&b| binds(b, packet.dst)) else { continue };
            bound = true;
            local = l;
            consumed = if packet.icmp {
                e.node.unreachable(now, l, packet.src)
            } else {
                e.node.input(now, Received::udp(l, packet.src), &packet.data)
            };
            if consumed {
                break;
            }
        }
        let h = &self.hosts[host.0];
        if bound {
            let event = if packet.icmp {
                TraceEvent::Unreachable { host, local, dst: packet.src, consumed }
            } else {
                TraceEvent::Delivered { host, local, source: packet.src, consumed }
            };
            self.record(packet.id, event);
        } else if h.icmp && !packet.icmp {
            // A closed port: the host says so (ICMP errors never cause ICMP errors).
            let (net, link) = (h.net, h.link);
            self.record(packet.id, TraceEvent::Dropped(DropReason::Unbound(host)));
            let icmp = self.icmp_for(packet.id, packet.src, packet.dst);
            self.cross(link, Hop::Net(net), icmp);
        } else {
            self.record(packet.id, TraceEvent::Dropped(DropReason::Unbound(host)));
        }
    }

    fn check_net(&self, net: NetId) -> Result<(), SimError> {
        if net.0 < self.nets.len() {
            Ok(())
        } else {
            Err(SimError::NoNetwork)
        }
    }

    /// An address is free on `net` when no host there and no NAT on it uses it; inside a firewall, the
    /// addresses belong to the outside network too.
    fn check_free(&self, net: NetId, ip: IpAddr) -> Result<(), SimError> {
        if self.inside(net, ip) {
            return Err(SimError::AddressInUse(ip));
        }
        match self.nets[net.0].gateway {
            Some(g) if self.gateways[g.0].mb.public_ip().is_none() => self.check_free(self.gateways[g.0].outer, ip),
            _ => Ok(()),
        }
    }
}

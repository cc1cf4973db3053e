//! The NAT diagnosis (`nat::Diagnosis`) scenario by scenario in the simulated network (`holepunch::sim`):
//! every RFC 4787 mapping × filtering combination, port allocation, hairpinning, ALGs, firewalls and the
//! open internet, RFC 3489 and plain RFC 8489 servers, loss, ICMP port unreachable, the RFC 8489 §6.2.1
//! retransmission schedule with its RTO cache and Karn's rule, mapping lifetimes, and hostile servers naming
//! addresses (docs/transactions.md, "Addresses a server names"). Deterministic: one seed, one run.
//!
//! The topology of every scenario: the client host sits at 192.168.1.10 behind a NAT whose public address
//! is 203.0.113.1 (or at 198.51.100.10 behind a firewall, or on the internet itself), and the STUN servers
//! sit on the internet. The one-way delay (10 ms unless a test says otherwise) is on one link of the path —
//! the NAT's or firewall's uplink, or the open host's own link — and every other link is instant, so every
//! round trip to a server takes twice the delay. RFC 5780 servers are the real responder; servers that
//! break a rule (RFC 3489 only, ignoring CHANGE-REQUEST, naming addresses that are not theirs) are
//! `Scripted` engines.

use holepunch::nat::{
    Allocation, Config, ConfigError, Diagnosis, Event, FailReason, Filtering, Mapping, NatKind, Report, Retransmit,
    Verdict,
};
use holepunch::net::{Engine, Received};
use holepunch::server::{Responder, ServerConfig};
use holepunch::sim::{EngineId, Fate, HostId, Link, NatConfig, Outgoing, Reply, Scripted, Sim, TraceEvent};
use holepunch::stun::{Attribute, Class, ErrorCode, Message, MessageType, MessageWriter, Method};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- the world: where the client sits, which servers answer, what the network does ----

/// Where the client sits.
#[derive(Clone, Copy, Debug)]
enum Gateway {
    /// Public host, nothing in the way.
    Open,
    /// Public host behind a stateful firewall.
    Firewall(Filtering),
    Nat(NatConfig),
}

fn nat(m: Mapping, f: Filtering) -> NatConfig {
    NatConfig::new(m, f)
}

/// How a scripted server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerStyle {
    /// RFC 5780: OTHER-ADDRESS, CHANGE-REQUEST, RESPONSE-PORT, both mapped attributes.
    Rfc5780,
    /// RFC 5780 server that answers CHANGE-REQUEST from the address contacted (broken).
    IgnoresChange,
    /// RFC 3489: MAPPED-ADDRESS, CHANGED-ADDRESS, honours CHANGE-REQUEST, 420 for RESPONSE-PORT.
    Legacy,
}

/// A STUN server in the world: the real responder (RFC 5780 with an alternate address, or plain), or a
/// scripted one that answers in its own style and may name addresses that are not its own.
#[derive(Clone, Copy, Debug)]
struct SimServer {
    ip: IpAddr,
    port: u16,
    alt_ip: IpAddr,
    alt_port: u16,
    /// None: the real responder.
    scripted: Option<ServerStyle>,
    /// A hostile or broken server: the alternate address it advertises (OTHER-ADDRESS, CHANGED-ADDRESS)
    /// instead of its own.
    named_other: Option<SocketAddr>,
    /// A hostile or broken server: the mapped address it reports instead of the request's source.
    named_mapped: Option<SocketAddr>,
}

impl SimServer {
    /// The real responder at 192.0.2.1:3478 with the alternate 192.0.2.2:3479.
    fn rfc5780() -> Self {
        SimServer {
            ip: ip("192.0.2.1"),
            port: 3478,
            alt_ip: ip("192.0.2.2"),
            alt_port: 3479,
            scripted: None,
            named_other: None,
            named_mapped: None,
        }
    }

    /// The real responder without an alternate address (RFC 8489 only: 420 for CHANGE-REQUEST).
    fn plain(addr: &str) -> Self {
        let a: SocketAddr = addr.parse().unwrap();
        SimServer { alt_ip: a.ip(), alt_port: a.port(), ..SimServer { ip: a.ip(), port: a.port(), ..Self::rfc5780() } }
    }

    /// A scripted server at the RFC 5780 server's addresses answering in `style`.
    fn with_style(mut self, style: ServerStyle) -> Self {
        self.scripted = Some(style);
        self
    }

    /// Advertise `other` as the alternate address (whatever it is); a scripted RFC 5780 server.
    fn naming_other(mut self, other: &str) -> Self {
        self.named_other = Some(other.parse().unwrap());
        self.scripted.get_or_insert(ServerStyle::Rfc5780);
        self
    }

    /// Report `mapped` as every client's public endpoint; a scripted RFC 5780 server.
    fn naming_mapped(mut self, mapped: &str) -> Self {
        self.named_mapped = Some(mapped.parse().unwrap());
        self.scripted.get_or_insert(ServerStyle::Rfc5780);
        self
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    fn has_alt(&self) -> bool {
        self.ip != self.alt_ip && self.port != self.alt_port
    }

    /// Every address it listens on.
    fn sockets(&self) -> Vec<SocketAddr> {
        let mut v = Vec::new();
        for ip in [self.ip, self.alt_ip] {
            for port in [self.port, self.alt_port] {
                let a = SocketAddr::new(ip, port);
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }

    /// The scripted server's answer to `data` from `src` arriving at `dst` (the old simulator's server).
    fn answer(&self, style: ServerStyle, src: SocketAddr, dst: SocketAddr, data: &[u8]) -> Option<Reply> {
        let msg = Message::parse(data).ok()?;
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            return None;
        }
        let mut out = [0u8; 512];
        let change = msg.change_request().unwrap_or_default();
        let rp = msg.response_port();
        if style == ServerStyle::Legacy && rp.is_some() {
            let ty = MessageType::new(Method::BINDING, Class::Error);
            let mut w = MessageWriter::new(&mut out, ty, msg.transaction_id()).ok()?;
            w.add(&Attribute::ErrorCode(ErrorCode { code: 420, reason: "Unknown Attribute" })).ok()?;
            let n = w.finish();
            return Some(Reply { local: dst, dst: src, data: out[..n].to_vec() });
        }
        let honours_change = style != ServerStyle::IgnoresChange;
        let swap = |a: IpAddr, x: IpAddr, y: IpAddr| if a == x { y } else { x };
        let swap_port = |a: u16, x: u16, y: u16| if a == x { y } else { x };
        let from_ip = if change.change_ip && honours_change { swap(dst.ip(), self.ip, self.alt_ip) } else { dst.ip() };
        let from_port = if change.change_port && honours_change {
            swap_port(dst.port(), self.port, self.alt_port)
        } else {
            dst.port()
        };
        let from = SocketAddr::new(from_ip, from_port);
        let to = match rp {
            Some(p) => SocketAddr::new(src.ip(), p),
            None => src,
        };
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let mut w = MessageWriter::new(&mut out, ty, msg.transaction_id()).ok()?;
        let other = self.named_other.unwrap_or(SocketAddr::new(
            swap(dst.ip(), self.ip, self.alt_ip),
            swap_port(dst.port(), self.port, self.alt_port),
        ));
        let mapped = self.named_mapped.unwrap_or(src);
        match style {
            ServerStyle::Rfc5780 | ServerStyle::IgnoresChange => {
                w.add(&Attribute::XorMappedAddress(mapped)).ok()?;
                w.add(&Attribute::MappedAddress(mapped)).ok()?;
                w.add(&Attribute::ResponseOrigin(from)).ok()?;
                if self.has_alt() || self.named_other.is_some() {
                    w.add(&Attribute::OtherAddress(other)).ok()?;
                }
            }
            ServerStyle::Legacy => {
                w.add(&Attribute::MappedAddress(mapped)).ok()?;
                w.add(&Attribute::SourceAddress(from)).ok()?;
                w.add(&Attribute::ChangedAddress(other)).ok()?;
            }
        }
        w.add(&Attribute::Software("sim")).ok()?;
        let n = w.finish();
        Some(Reply { local: from, dst: to, data: out[..n].to_vec() })
    }
}

/// Decides whether a client datagram (socket, destination, bytes) is refused with an ICMP port unreachable.
type IcmpRule = Box<dyn Fn(usize, SocketAddr, &[u8]) -> bool>;

/// One datagram a client socket sent: when, from which socket, to where, and the transaction id, so tests can
/// check the exact retransmission schedule.
#[derive(Clone, Debug)]
struct Sent {
    at: Duration,
    socket: usize,
    dst: SocketAddr,
    tid: [u8; 12],
    change: bool,
}

/// A scenario: built and run by [`World::run`], then inspected.
struct World {
    gateway: Gateway,
    servers: Vec<SimServer>,
    locals: Vec<SocketAddr>,
    delay: Duration,
    loss: f64,
    seed: u64,
    drop_sends: Vec<usize>,
    icmp: Option<IcmpRule>,
    /// The simulator, the client's host and the diagnosis, once run.
    ran: Option<(Sim, HostId, EngineId<Diagnosis>)>,
}

impl World {
    fn new(gateway: Gateway, servers: Vec<SimServer>, sockets: usize) -> Self {
        let host = match gateway {
            Gateway::Nat(_) => LAN_IP,
            _ => HOST_IP,
        };
        // The primary socket sits on 6666 like punchd; the others on distinct "random" ports.
        let locals = (0..sockets)
            .map(|i| SocketAddr::new(IpAddr::V4(host), if i == 0 { 6666 } else { 40000 + 17 * i as u16 }))
            .collect();
        World {
            gateway,
            servers,
            locals,
            delay: ms(10),
            loss: 0.0,
            seed: 0x1234_5678,
            drop_sends: Vec::new(),
            icmp: None,
            ran: None,
        }
    }

    /// One-way delay between the client and every server (default 10 ms).
    fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Each datagram to or from the client is lost with `percent` % probability; `seed` picks which.
    fn with_loss(mut self, percent: u64, seed: u64) -> Self {
        self.loss = percent as f64 / 100.0;
        self.seed = seed;
        self
    }

    /// Lose the client datagrams with these ordinals (0 = the first one the client sends).
    fn dropping_sends(mut self, ordinals: &[usize]) -> Self {
        self.drop_sends = ordinals.to_vec();
        self
    }

    /// Refuse the client datagrams that `rule` picks with an ICMP port unreachable (it comes back after a
    /// round trip).
    fn with_icmp(mut self, rule: IcmpRule) -> Self {
        self.icmp = Some(rule);
        self
    }

    /// Builds the network, runs the diagnosis to the end (bounded); returns the report and the simulated
    /// time it took.
    fn run(&mut self, cfg: Config) -> (Report, Duration) {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        let mut sim = Sim::new(seed);
        let path = Link::new(self.delay).with_loss(self.loss);
        let client = match self.gateway {
            Gateway::Nat(spec) => {
                let (_, lan) = sim.add_nat(Sim::INTERNET, PUBLIC_IP.into(), spec, path).unwrap();
                sim.add_host(lan, &[LAN_IP.into()], Link::new(Duration::ZERO)).unwrap()
            }
            Gateway::Firewall(f) => {
                let (_, inside) = sim.add_firewall(Sim::INTERNET, f, Duration::from_secs(120), path).unwrap();
                sim.add_host(inside, &[HOST_IP.into()], Link::new(Duration::ZERO)).unwrap()
            }
            Gateway::Open => sim.add_host(Sim::INTERNET, &[HOST_IP.into()], path).unwrap(),
        };
        self.add_servers(&mut sim);
        let (locals, drops, icmp) = (self.locals.clone(), self.drop_sends.clone(), self.icmp.take());
        let mut ordinal = 0;
        sim.set_fault(Box::new(move |out: &Outgoing| {
            if out.host != client {
                return Fate::Deliver;
            }
            ordinal += 1;
            let socket = locals.iter().position(|l| *l == out.src).expect("a send from a client socket");
            if drops.contains(&(ordinal - 1)) {
                Fate::Drop
            } else if icmp.as_ref().is_some_and(|rule| rule(socket, out.dst, out.data)) {
                Fate::Unreachable
            } else {
                Fate::Deliver
            }
        }));
        sim.set_capture(true);
        let diagnosis = Diagnosis::new(cfg, self.locals.clone(), sim.now()).expect("config");
        let id = sim.add_engine(client, &self.locals, diagnosis).unwrap();
        let took = sim.run_until_event(id, Duration::from_secs(3600), |e| *e == Event::Finished).expect("finishes");
        let report = sim.engine(id).report().expect("report after Finished").clone();
        self.ran = Some((sim, client, id));
        (report, took)
    }

    /// Real responders on hosts of their own (plain servers sharing an IP share a host), scripted servers
    /// on a host with both their addresses; all on instant links.
    fn add_servers(&self, sim: &mut Sim) {
        let mut hosts: Vec<(IpAddr, HostId)> = Vec::new();
        for s in &self.servers {
            match s.scripted {
                None if s.has_alt() => {
                    let config = ServerConfig {
                        alternate: Some(s.alt_ip),
                        alt_port: s.alt_port,
                        ..ServerConfig::plain(s.ip, s.port)
                    };
                    sim.add_stun_server(Sim::INTERNET, config, Link::new(Duration::ZERO)).unwrap();
                }
                None => {
                    let host = match hosts.iter().find(|(ip, _)| *ip == s.ip) {
                        Some(&(_, h)) => h,
                        None => {
                            let h = sim.add_host(Sim::INTERNET, &[s.ip], Link::new(Duration::ZERO)).unwrap();
                            hosts.push((s.ip, h));
                            h
                        }
                    };
                    let seed = u64::from_le_bytes(sim.fork_seed()[..8].try_into().unwrap());
                    let responder = Responder::new(ServerConfig::plain(s.ip, s.port), None, seed, sim.now()).unwrap();
                    sim.add_engine(host, &[s.addr()], responder).unwrap();
                }
                Some(style) => {
                    let host = sim.add_host(Sim::INTERNET, &[s.ip, s.alt_ip], Link::new(Duration::ZERO)).unwrap();
                    let server = *s;
                    let script = move |_: Instant, rx: Received, data: &[u8]| {
                        Some(server.answer(style, rx.source, rx.local, data).into_iter().collect())
                    };
                    sim.add_engine(host, &s.sockets(), Scripted::new(script)).unwrap();
                }
            }
        }
    }

    /// How many ICMP errors reached the client's sockets.
    fn unreachables(&self) -> usize {
        let (sim, client, _) = self.ran.as_ref().expect("run first");
        sim.trace()
            .iter()
            .filter(|e| matches!(e.event, TraceEvent::Unreachable { host, .. } if host == *client))
            .count()
    }

    /// The engine after [`World::run`], for its RTT estimates.
    fn diag(&self) -> &Diagnosis {
        let (sim, _, id) = self.ran.as_ref().expect("run first");
        sim.engine(*id)
    }

    /// Every client datagram, in order.
    fn log(&self) -> Vec<Sent> {
        let (sim, client, _) = self.ran.as_ref().expect("run first");
        sim.captured()
            .iter()
            .filter(|c| c.host == *client)
            .map(|c| {
                let msg = Message::parse(&c.data).ok();
                Sent {
                    at: c.at,
                    socket: self.locals.iter().position(|l| *l == c.src).expect("a client socket"),
                    dst: c.dst,
                    tid: msg.as_ref().map(|m| *m.transaction_id()).unwrap_or_default(),
                    change: msg.as_ref().is_some_and(|m| m.change_request().is_some()),
                }
            })
            .collect()
    }

    /// How many datagrams the client sent.
    fn sent(&self) -> usize {
        self.log().len()
    }

    /// The datagrams sent from `socket` with CHANGE-REQUEST (or not), grouped by transaction in order of the
    /// first send; each group lists the send times.
    fn schedule(&self, socket: usize, change: bool) -> Vec<Vec<Duration>> {
        let mut out: Vec<([u8; 12], Vec<Duration>)> = Vec::new();
        for s in self.log().iter().filter(|s| s.socket == socket && s.change == change) {
            match out.iter_mut().find(|(t, _)| *t == s.tid) {
                Some((_, v)) => v.push(s.at),
                None => out.push((s.tid, vec![s.at])),
            }
        }
        out.into_iter().map(|(_, v)| v).collect()
    }
}

// ---- the scenarios ----

fn cfg(_world: &World, servers: Vec<std::net::SocketAddr>) -> Config {
    let mut c = Config::new(servers, [7; 32]);
    // Fast schedule so negative tests end quickly in simulated time; the logic is the same.
    c.retransmit = Retransmit { rto: Duration::from_millis(100), rc: 4, rm: 8, ..Retransmit::default() };
    c
}

fn sockets(lifetime: bool) -> usize {
    let mut c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    if lifetime {
        c.lifetime = Some(Duration::from_secs(1));
    }
    c.plan().count()
}

fn run_nat(spec: NatConfig) -> Report {
    let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(false));
    let c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    w.run(c).0
}

#[test]
fn full_cone() {
    let r = run_nat(nat(Mapping::EndpointIndependent, Filtering::EndpointIndependent));
    assert_eq!(r.nat, Some(true));
    assert_eq!(r.mapping, Mapping::EndpointIndependent, "{}", r.mapping_reason);
    assert_eq!(r.filtering, Filtering::EndpointIndependent, "{}", r.filtering_reason);
    assert_eq!(r.kind, NatKind::FullCone);
    assert_eq!(r.verdict, Verdict::Direct);
    assert_eq!(r.port_preserved, Some(true));
    assert_eq!(r.allocation, Allocation::Preserved);
    assert_eq!(r.public, Some("203.0.113.1:6666".parse().unwrap()));
    assert!(r.rfc5780 && !r.legacy);
    assert_eq!(r.alg, Some(false));
}

#[test]
fn restricted_cone() {
    let r = run_nat(nat(Mapping::EndpointIndependent, Filtering::AddressDependent));
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::AddressDependent, "{}", r.filtering_reason);
    assert_eq!(r.kind, NatKind::RestrictedCone);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn port_restricted_cone() {
    let r = run_nat(nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent));
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::AddressAndPortDependent, "{}", r.filtering_reason);
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn address_dependent_mapping() {
    let mut spec = nat(Mapping::AddressDependent, Filtering::AddressDependent);
    spec.allocation = Allocation::Sequential { delta: 1 };
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::AddressDependent, "{}", r.mapping_reason);
    assert_eq!(r.kind, NatKind::Symmetric);
    assert_eq!(r.allocation, Allocation::Sequential { delta: 1 });
    assert_eq!(r.verdict, Verdict::PeerMustBeCone);
}

#[test]
fn symmetric_random_ports_needs_relay() {
    let mut spec = nat(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent);
    spec.allocation = Allocation::Random;
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::AddressAndPortDependent, "{}", r.mapping_reason);
    assert_eq!(r.filtering, Filtering::AddressAndPortDependent);
    assert_eq!(r.allocation, Allocation::Random, "{}", r.allocation_reason);
    assert_eq!(r.port_preserved, Some(false));
    assert_eq!(r.verdict, Verdict::Relay, "{}", r.verdict_reason);
}

#[test]
fn symmetric_sequential_ports_needs_cone_peer() {
    let mut spec = nat(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent);
    spec.allocation = Allocation::Sequential { delta: 2 };
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::AddressAndPortDependent);
    assert_eq!(r.allocation, Allocation::Sequential { delta: 2 });
    assert_eq!(r.verdict, Verdict::PeerMustBeCone);
    assert!(r.verdict_reason.contains("prediction"), "{}", r.verdict_reason);
}

#[test]
fn eim_without_port_preservation() {
    let mut spec = nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
    spec.allocation = Allocation::Random;
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.port_preserved, Some(false));
    assert_eq!(r.allocation, Allocation::Random);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn open_internet() {
    let mut w = World::new(Gateway::Open, vec![SimServer::rfc5780()], sockets(false));
    let c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    let r = w.run(c).0;
    assert_eq!(r.nat, Some(false));
    assert_eq!(r.kind, NatKind::OpenInternet);
    assert_eq!(r.filtering, Filtering::EndpointIndependent);
    assert_eq!(r.hairpin, None);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn firewall_without_nat() {
    for (f, want) in [
        (Filtering::AddressAndPortDependent, Filtering::AddressAndPortDependent),
        (Filtering::AddressDependent, Filtering::AddressDependent),
    ] {
        let mut w = World::new(Gateway::Firewall(f), vec![SimServer::rfc5780()], sockets(false));
        let c = cfg(&w, vec![SimServer::rfc5780().addr()]);
        let r = w.run(c).0;
        assert_eq!(r.nat, Some(false));
        assert_eq!(r.filtering, want);
        assert_eq!(r.kind, NatKind::FirewallWithoutNat);
        assert_eq!(r.verdict, Verdict::Direct);
    }
}

#[test]
fn hairpin_on_and_off() {
    for (hairpin, filter) in [
        (true, Filtering::AddressAndPortDependent),
        (false, Filtering::AddressAndPortDependent),
        (true, Filtering::EndpointIndependent),
    ] {
        let mut spec = nat(Mapping::EndpointIndependent, filter);
        spec.hairpin = hairpin;
        let r = run_nat(spec);
        assert_eq!(r.hairpin, Some(hairpin), "{}", r.hairpin_reason);
    }
}

#[test]
fn alg_detected() {
    let mut spec = nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
    spec.alg = true;
    let r = run_nat(spec);
    assert_eq!(r.alg, Some(true), "{}", r.alg_reason);
    // The XOR form survives, so the public endpoint is still right.
    assert_eq!(r.public, Some("203.0.113.1:6666".parse().unwrap()));
}

#[test]
fn legacy_rfc3489_server() {
    let server = SimServer::rfc5780().with_style(ServerStyle::Legacy);
    let mut spec = nat(Mapping::EndpointIndependent, Filtering::AddressDependent);
    spec.allocation = Allocation::Preserved;
    let mut w = World::new(Gateway::Nat(spec), vec![server], sockets(false));
    let c = cfg(&w, vec![server.addr()]);
    let r = w.run(c).0;
    assert!(r.legacy);
    assert!(r.notes.iter().any(|n| n.starts_with("legacy")));
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::AddressDependent);
    assert_eq!(r.alg, None);
    assert_eq!(r.kind, NatKind::RestrictedCone);
}

#[test]
fn legacy_symmetric() {
    let server = SimServer::rfc5780().with_style(ServerStyle::Legacy);
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)),
        vec![server],
        sockets(false),
    );
    let c = cfg(&w, vec![server.addr()]);
    let r = w.run(c).0;
    assert!(r.legacy);
    assert_eq!(r.mapping, Mapping::AddressAndPortDependent);
    assert_eq!(r.kind, NatKind::Symmetric);
}

#[test]
fn two_plain_servers_infer_mapping() {
    let a = SimServer::plain("192.0.2.50:3478");
    let b = SimServer::plain("198.51.100.77:19302");
    for (m, want) in [
        (Mapping::EndpointIndependent, Mapping::EndpointIndependent),
        (Mapping::AddressAndPortDependent, Mapping::EndpointDependent),
        (Mapping::AddressDependent, Mapping::EndpointDependent),
    ] {
        let mut w = World::new(Gateway::Nat(nat(m, Filtering::AddressAndPortDependent)), vec![a, b], sockets(false));
        let c = cfg(&w, vec![a.addr(), b.addr()]);
        let r = w.run(c).0;
        assert_eq!(r.mapping, want, "{}", r.mapping_reason);
        assert!(!r.rfc5780);
        assert_eq!(r.filtering, Filtering::Unknown);
        assert!(r.not_tested.iter().any(|n| n.starts_with("filtering: not tested")), "{:?}", r.not_tested);
    }
}

#[test]
fn plain_servers_same_ip_two_ports() {
    let a = SimServer::plain("192.0.2.50:3478");
    let b = SimServer::plain("192.0.2.50:3479");
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)),
        vec![a, b],
        sockets(false),
    );
    let c = cfg(&w, vec![a.addr(), b.addr()]);
    assert_eq!(w.run(c).0.mapping, Mapping::AddressAndPortDependent);
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::AddressDependent, Filtering::AddressAndPortDependent)),
        vec![a, b],
        sockets(false),
    );
    let c = cfg(&w, vec![a.addr(), b.addr()]);
    let r = w.run(c).0;
    assert_eq!(r.mapping, Mapping::Unknown, "same IP cannot tell EIM from ADM");
}

#[test]
fn single_plain_server_says_what_is_missing() {
    let a = SimServer::plain("192.0.2.50:3478");
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)),
        vec![a],
        sockets(false),
    );
    let c = cfg(&w, vec![a.addr()]);
    let r = w.run(c).0;
    assert_eq!(r.mapping, Mapping::Unknown);
    assert!(r.mapping_reason.contains("--server"), "{}", r.mapping_reason);
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(r.port_preserved, Some(true));
}

#[test]
fn no_server_answers_within_the_schedule() {
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::EndpointIndependent, Filtering::EndpointIndependent)),
        vec![],
        sockets(false),
    );
    let c = cfg(&w, vec!["192.0.2.99:3478".parse().unwrap()]);
    let give_up = c.retransmit.give_up_after();
    let (r, took) = w.run(c);
    assert!(r.no_answer());
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(took, give_up);
    assert_eq!(w.sent(), 4, "Rc requests, no more");
}

#[test]
fn server_ignoring_change_request_gives_unknown_filtering() {
    let server = SimServer::rfc5780().with_style(ServerStyle::IgnoresChange);
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)),
        vec![server],
        sockets(false),
    );
    let c = cfg(&w, vec![server.addr()]);
    let r = w.run(c).0;
    assert_eq!(r.filtering, Filtering::Unknown);
    assert!(r.filtering_reason.contains("ignored CHANGE-REQUEST"), "{}", r.filtering_reason);
}

#[test]
fn lossy_network_still_correct() {
    for seed in 1..6 {
        let mut spec = nat(Mapping::EndpointIndependent, Filtering::AddressDependent);
        spec.hairpin = true;
        let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(false)).with_loss(20, seed);
        let mut c = cfg(&w, vec![SimServer::rfc5780().addr()]);
        c.retransmit.rc = 7;
        let r = w.run(c).0;
        assert_eq!(r.mapping, Mapping::EndpointIndependent, "seed {seed}");
        assert_eq!(r.filtering, Filtering::AddressDependent, "seed {seed}: {}", r.filtering_reason);
        assert_eq!(r.hairpin, Some(true), "seed {seed}");
    }
}

#[test]
fn lifetime_bracket() {
    let mut spec = nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
    spec.mapping_timeout = Duration::from_secs(30);
    let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(true));
    let mut c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    c.lifetime = Some(Duration::from_secs(160));
    let (r, took) = w.run(c);
    let range = r.lifetime.expect("requested").expect("measured");
    let expired = range.expired.expect("expires within max-wait");
    assert!(range.alive < Duration::from_secs(30) && expired >= Duration::from_secs(30), "{range:?}");
    assert!(expired - range.alive <= Duration::from_secs(5), "refined: {range:?}");
    assert!(took <= Duration::from_secs(160) + Duration::from_secs(5), "took {took:?}");
}

#[test]
fn lifetime_longer_than_max_wait() {
    let mut spec = nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
    spec.mapping_timeout = Duration::from_secs(300);
    let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(true));
    let mut c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    c.lifetime = Some(Duration::from_secs(60));
    let r = w.run(c).0;
    let range = r.lifetime.expect("requested").expect("measured");
    assert_eq!(range.alive, Duration::from_secs(60));
    assert_eq!(range.expired, None);
}

#[test]
fn lifetime_without_response_port_is_unknown() {
    let server = SimServer::rfc5780().with_style(ServerStyle::Legacy);
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)),
        vec![server],
        sockets(true),
    );
    let mut c = cfg(&w, vec![server.addr()]);
    c.lifetime = Some(Duration::from_secs(60));
    let r = w.run(c).0;
    let e = r.lifetime.expect("requested").expect_err("cannot be measured");
    assert!(e.contains("RESPONSE-PORT"), "{e}");
}

#[test]
fn deterministic() {
    let mut spec = nat(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent);
    spec.allocation = Allocation::Random;
    let a = run_nat(spec);
    let b = run_nat(spec);
    assert_eq!(a.observations, b.observations);
    assert_eq!(a.allocation_samples, b.allocation_samples);
}

#[test]
fn config_errors() {
    let locals = vec!["192.168.1.10:6666".parse().unwrap(); 3];
    let now = std::time::Instant::now();
    let c = Config::new(vec![], [0; 32]);
    assert_eq!(Diagnosis::new(c, locals.clone(), now).unwrap_err(), ConfigError::NoServer);
    let c = Config::new(vec!["[::1]:3478".parse().unwrap()], [0; 32]);
    let n = c.plan().count();
    let l = vec!["192.168.1.10:6666".parse().unwrap(); n];
    assert!(matches!(Diagnosis::new(c, l, now), Err(ConfigError::MixedFamilies(_))));
    let c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    assert!(matches!(Diagnosis::new(c, locals, now), Err(ConfigError::SocketCount { .. })));
    let c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    let l = vec!["192.168.1.10:6666".parse().unwrap(); c.plan().count()];
    assert_eq!(
        Diagnosis::new(c, l, now).unwrap_err(),
        ConfigError::DuplicateSocket("192.168.1.10:6666".parse().unwrap())
    );
    let mut c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    c.lifetime = Some(Duration::ZERO);
    let l = distinct_locals(c.plan().count());
    assert_eq!(Diagnosis::new(c, l, now).unwrap_err(), ConfigError::ZeroLifetime);
    assert_eq!(ConfigError::ZeroLifetime.to_string(), "lifetime wait is zero");
}

/// `n` distinct local addresses, as a caller's sockets would have.
fn distinct_locals(n: usize) -> Vec<std::net::SocketAddr> {
    (0..n).map(|i| std::net::SocketAddr::new("192.168.1.10".parse().unwrap(), 6666 + i as u16)).collect()
}

#[test]
fn garbage_is_ignored() {
    let c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    let n = c.plan().count();
    let locals = distinct_locals(n);
    let now = std::time::Instant::now();
    let mut d = Diagnosis::new(c, locals.clone(), now).unwrap();
    let from = "192.0.2.1:3478".parse().unwrap();
    for data in [&b""[..], &[0xff; 40][..], &[0u8; 20][..], &[0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42][..]] {
        assert!(!d.handle_input(now, Received::udp(locals[0], from), data));
    }
    assert!(!d.handle_input(now, Received::udp("192.168.1.10:9".parse().unwrap(), from), &[0u8; 20]));
    assert!(!d.is_finished());
}

// ---- RFC 8489 §6.2.1 RTO cache: exact schedules, Karn's rule, loss, ICMP port unreachable ----

const FILTERING_SOCKET: usize = 1;

/// Send times of one transaction: start, then start + RTO·(2^n − 1).
fn sends(start: Duration, rto: Duration, rc: u32) -> Vec<Duration> {
    (0..rc).map(|n| start + rto * ((1u32 << n) - 1)).collect()
}

/// Defaults as the binary has them: RTO 500 ms, Rc 7, Rm 16, floor 100 ms.
fn default_cfg() -> Config {
    Config::new(vec![SimServer::rfc5780().addr()], [7; 32])
}

fn port_restricted_world() -> World {
    // 10 ms each way: every round trip is 20 ms.
    World::new(
        Gateway::Nat(nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)),
        vec![SimServer::rfc5780()],
        sockets(false),
    )
}

#[test]
fn learned_rto_schedule_with_floor() {
    let mut w = port_restricted_world();
    let (r, took) = w.run(default_cfg());
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    assert_eq!(r.hairpin, Some(false));
    // Test I answers at 20 ms (RTO 20 + 4·10 = 60 ms, floored to 100 ms); filtering test I, sent at 20 ms,
    // answers at 40 ms; tests II and III start then with RTO 100 ms and are never answered (the filter drops
    // them): sends at 40 + 100·(2^n − 1) ms, give up 16 RTO after the last.
    let want = sends(ms(40), ms(100), 7);
    assert_eq!(w.schedule(FILTERING_SOCKET, true), vec![want.clone(), want.clone()]);
    assert_eq!(*want.last().unwrap(), ms(6340));
    // The hairpin requests (to our own public address) start at 40 ms on the reference server's RTO.
    let hairpin: Vec<Duration> =
        w.log().iter().filter(|s| s.dst.ip() == std::net::IpAddr::V4(PUBLIC_IP)).map(|s| s.at).collect();
    let mut three = Vec::new();
    for t in &want {
        three.extend([*t; 3]);
    }
    assert_eq!(hairpin, three);
    assert_eq!(took, ms(6340 + 1600), "(2^(Rc-1) - 1 + Rm) x 100 ms after the 40 ms of answers");
    // The first transaction had the configured RTO: test I answered at once, so it was sent once.
    assert_eq!(w.schedule(0, false)[0], vec![ms(0)]);
}

#[test]
fn learned_rto_schedule_rfc6298_values() {
    let mut w = port_restricted_world();
    let mut c = default_cfg();
    c.min_rto = ms(1); // no floor in the way: the RFC 6298 values themselves
    let (r, took) = w.run(c);
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    // At 40 ms the server IP has two 20 ms samples (test I, filtering test I): SRTT 20, RTTVAR 7.5 -> RTO 50.
    let want = sends(ms(40), ms(50), 7);
    assert_eq!(w.schedule(FILTERING_SOCKET, true), vec![want.clone(), want]);
    // The hairpin test starts after one more sample (the hairpin socket's mapping): RTTVAR 5.625 -> 42.5 ms.
    let hairpin: Vec<Duration> =
        w.log().iter().filter(|s| s.dst.ip() == std::net::IpAddr::V4(PUBLIC_IP)).map(|s| s.at).step_by(3).collect();
    assert_eq!(hairpin, sends(ms(40), Duration::from_micros(42_500), 7));
    assert_eq!(took, ms(3190 + 16 * 50));
    let server = SimServer::rfc5780();
    let d = w.diag();
    assert_eq!(d.rtt_estimate(server.ip).unwrap().srtt, ms(20));
    // The alternate address was seeded from the primary and then measured itself (mapping tests II, III).
    assert_eq!(d.rtt_estimate(server.alt_ip).unwrap().srtt, ms(20));
}

#[test]
fn karn_no_sample_from_a_retransmitted_request() {
    // Lose test I's first request (send #0): its answer comes after the retransmission at 500 ms and is
    // ambiguous, so nothing is learned. Then lose filtering test I's first request (send #3, after mapping
    // test II; test III waits for test II's answer): it must be retransmitted after the configured 500 ms,
    // not after a learned RTO.
    let mut w = port_restricted_world().dropping_sends(&[0, 3]);
    let mut c = default_cfg();
    c.min_rto = ms(1);
    let r = w.run(c).0;
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    assert_eq!(w.schedule(0, false)[0], vec![ms(0), ms(500)], "test I");
    assert_eq!(w.schedule(FILTERING_SOCKET, false)[0], vec![ms(520), ms(1020)], "filtering test I");
    // Had the ambiguous 520 ms been taken as a sample, SRTT could not be back at exactly 20 ms.
    let d = w.diag();
    assert_eq!(d.rtt_estimate(SimServer::rfc5780().ip).unwrap().srtt, ms(20));

    // Control: test I answered at once, so the same loss of filtering test I's first request (now send #2)
    // is repaired after the learned 60 ms.
    let mut w = port_restricted_world().dropping_sends(&[2]);
    let mut c = default_cfg();
    c.min_rto = ms(1);
    w.run(c);
    assert_eq!(w.schedule(FILTERING_SOCKET, false)[0], vec![ms(20), ms(80)]);
}

#[test]
fn min_rto_at_initial_keeps_the_plain_schedule() {
    let mut w = port_restricted_world();
    let mut c = default_cfg();
    c.min_rto = c.retransmit.rto;
    let took = w.run(c).1;
    assert_eq!(w.schedule(FILTERING_SOCKET, true)[0], sends(ms(40), ms(500), 7));
    assert_eq!(took, ms(40 + 39_500));
}

#[test]
fn lossy_network_with_learned_rto_still_correct() {
    // 20 % loss each way with the default schedule: fewer samples, but never a wrong verdict.
    for seed in 1..=8u64 {
        for (filter, hairpin, want) in [
            (Filtering::AddressAndPortDependent, false, Filtering::AddressAndPortDependent),
            (Filtering::AddressDependent, true, Filtering::AddressDependent),
            (Filtering::EndpointIndependent, false, Filtering::EndpointIndependent),
        ] {
            let mut spec = nat(Mapping::EndpointIndependent, filter);
            spec.hairpin = hairpin;
            let mut w =
                World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(false)).with_loss(20, seed * 7919);
            let (r, took) = w.run(default_cfg());
            assert_eq!(r.mapping, Mapping::EndpointIndependent, "seed {seed} {filter:?}: {}", r.mapping_reason);
            assert_eq!(r.filtering, want, "seed {seed} {filter:?}: {}", r.filtering_reason);
            assert_eq!(r.hairpin, Some(hairpin), "seed {seed} {filter:?}: {}", r.hairpin_reason);
            assert!(took < ms(4 * 39_500), "seed {seed}: {took:?}");
        }
    }
}

#[test]
fn slow_path_learns_a_longer_rto() {
    // 60 ms each way: RTT 120 ms -> RTO 120 + 4·60 = 360 ms after test I; the negative tests use the learned
    // value, above the floor and below the configured 500 ms.
    let mut w = port_restricted_world().with_delay(ms(60));
    let r = w.run(default_cfg()).0;
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    // Second sample (filtering test I, 120 ms): RTTVAR 45 -> RTO 300 ms.
    assert_eq!(w.schedule(FILTERING_SOCKET, true)[0], sends(ms(240), ms(300), 7));
}

// ---- ICMP port unreachable ----

#[test]
fn icmp_port_unreachable_fails_fast() {
    let wrong: std::net::SocketAddr = "192.0.2.1:3999".parse().unwrap();
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)),
        vec![SimServer::rfc5780()],
        sockets(false),
    )
    .with_icmp(Box::new(move |_, dst, _| dst == wrong));
    let mut c = default_cfg();
    c.servers = vec![wrong];
    let (r, took) = w.run(c);
    assert!(r.no_answer());
    assert_eq!(took, ms(20), "one round trip, not 39.5 s");
    assert_eq!(w.sent(), 1);
    let e = r.servers[0].error.as_ref().unwrap();
    assert_eq!(e, &FailReason::Unreachable { dst: wrong });
    assert!(e.to_string().contains("port unreachable (ICMP)"), "{e}");
}

#[test]
fn icmp_on_the_filtering_socket_is_unknown_not_a_filter() {
    // Whatever produced it, an ICMP error for a changed-address request says nothing about the filter: the
    // result must be "unknown" with the reason, never address-and-port-dependent.
    let mut w = port_restricted_world()
        .with_icmp(Box::new(|socket, _, data| socket == FILTERING_SOCKET && has_change_request(data)));
    let r = w.run(default_cfg()).0;
    assert_eq!(r.filtering, Filtering::Unknown);
    assert!(r.filtering_reason.contains("port unreachable (ICMP)"), "{}", r.filtering_reason);
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.hairpin, Some(false));
}

#[test]
fn icmp_only_fails_requests_from_that_socket_to_that_address() {
    // Mapping test III's destination (alternate IP and port) rejects; test I and II are unaffected, so the
    // mapping is still known, and the filtering socket's requests to the primary address are untouched.
    let server = SimServer::rfc5780();
    let alt = std::net::SocketAddr::new(server.alt_ip, server.alt_port);
    let mut w = port_restricted_world().with_icmp(Box::new(move |socket, dst, _| socket == 0 && dst == alt));
    let r = w.run(default_cfg()).0;
    assert_eq!(r.mapping, Mapping::EndpointIndependent, "{}", r.mapping_reason);
    assert_eq!(r.observations.len(), 2);
    assert_eq!(r.filtering, Filtering::AddressAndPortDependent, "{}", r.filtering_reason);
}

#[test]
fn icmp_from_our_own_router_does_not_decide_hairpinning() {
    // A router that rejects what it does not hairpin: the ICMP errors are ignored, the test judges by arrival
    // and still ends with "false" after its schedule.
    let mut w = port_restricted_world().with_icmp(Box::new(|_, dst, _| dst.ip() == std::net::IpAddr::V4(PUBLIC_IP)));
    let (r, took) = w.run(default_cfg());
    assert!(w.unreachables() > 0, "the router's ICMP errors reached the diagnosis");
    assert_eq!(r.hairpin, Some(false), "{}", r.hairpin_reason);
    assert_eq!(took, ms(40 + 6300 + 1600));
}

fn has_change_request(data: &[u8]) -> bool {
    Message::parse(data).is_ok_and(|m| m.change_request().is_some())
}

// ---- hostile or broken servers: addresses they name (docs/transactions.md, "Addresses a server names") ----

/// A NAT world whose only server is `server`; the report, and every client datagram to `victim`'s IP.
fn run_against(server: SimServer, victim: &str) -> (Report, Vec<Sent>) {
    let victim: std::net::SocketAddr = victim.parse().unwrap();
    let mut w = World::new(
        Gateway::Nat(nat(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)),
        vec![server],
        sockets(false),
    );
    let r = w.run(default_cfg()).0;
    let hits = w.log().iter().filter(|s| s.dst.ip() == victim.ip()).cloned().collect();
    (r, hits)
}

#[test]
fn alternate_that_never_answers_gets_one_transaction() {
    // OTHER-ADDRESS names a third party with a global address: it cannot be told from a real alternate, but
    // once it leaves mapping test II unanswered, test III is not sent there too.
    let (r, hits) = run_against(SimServer::rfc5780().naming_other("192.0.2.99:3479"), "192.0.2.99:3479");
    let mut tids: Vec<_> = hits.iter().map(|s| s.tid).collect();
    tids.dedup();
    assert_eq!(tids.len(), 1, "one transaction to the named alternate: {hits:?}");
    assert_eq!(hits.len(), 7, "the RFC 8489 schedule once, not twice");
    assert_eq!(r.mapping, Mapping::Unknown);
    assert!(r.notes.iter().any(|n| n.starts_with("mapping test III was not run")), "{:?}", r.notes);
    assert!(
        r.mapping_reason.contains("mapping test III: not run, the alternate address 192.0.2.99 did not answer test II"),
        "{}",
        r.mapping_reason
    );
}

#[test]
fn unusable_alternates_are_never_sent_to() {
    for other in ["255.255.255.255:9", "0.0.0.0:0", "224.0.0.1:3479", "127.0.0.1:3479", "10.0.0.1:3479"] {
        let (r, hits) = run_against(SimServer::rfc5780().naming_other(other), other);
        assert!(hits.is_empty(), "{other}: sent there: {hits:?}");
        assert!(!r.rfc5780, "{other}: an unusable alternate is no RFC 5780 support");
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains(&format!("named {other} as its alternate address")) && n.contains("not used")),
            "{other}: {:?}",
            r.notes
        );
        assert_eq!(r.public, Some(std::net::SocketAddr::new(PUBLIC_IP.into(), 6666)), "{other}: test I still counts");
    }
}

#[test]
fn unusable_mapped_address_is_refused_and_never_sent_to() {
    // The hairpinning test sends to the mapped address: a server reporting a broadcast, unspecified, or
    // someone's private address as our public endpoint must not aim those requests there.
    for mapped in ["255.255.255.255:9", "0.0.0.0:0", "192.168.7.7:6666", "127.0.0.1:6666", "198.51.100.9:0"] {
        let (r, hits) = run_against(SimServer::rfc5780().naming_mapped(mapped), mapped);
        assert!(hits.iter().all(|s| s.dst != mapped.parse().unwrap()), "{mapped}: sent there: {hits:?}");
        assert_eq!(r.public, None, "{mapped}: not a public endpoint");
        let err = r.servers[0].error.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(err.contains(&format!("unusable answer from 192.0.2.1:3478: mapped address {mapped} is")), "{err}");
    }
}

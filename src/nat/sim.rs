//! A simulated network for engine tests: one client host (behind a NAT, a firewall, or nothing), STUN servers
//! of several kinds, a fake clock, fixed delay and seeded loss, chosen client sends dropped, and ICMP port
//! unreachable reports where a rule says so. Deterministic: the same seed gives the same run.

use super::config::Config;
use super::diagnosis::{Diagnosis, Event};
use super::report::Report;
use crate::net::{Engine, Received};
use crate::stun::{attr, Attribute, Class, ErrorCode, Message, MessageType, MessageWriter, Method};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimMapping {
    Eim,
    Adm,
    Apdm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimFilter {
    Eif,
    Adf,
    Apdf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimAlloc {
    Preserve,
    Sequential(u16),
    Random,
}

#[derive(Clone, Copy, Debug)]
pub struct NatSpec {
    pub mapping: SimMapping,
    pub filter: SimFilter,
    pub alloc: SimAlloc,
    pub hairpin: bool,
    pub timeout: Duration,
    pub alg: bool,
}

impl NatSpec {
    pub fn new(mapping: SimMapping, filter: SimFilter) -> Self {
        NatSpec {
            mapping,
            filter,
            alloc: SimAlloc::Preserve,
            hairpin: false,
            timeout: Duration::from_secs(120),
            alg: false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Gateway {
    /// Public host, nothing in the way.
    Open,
    /// Public host behind a stateful firewall.
    Firewall(SimFilter),
    Nat(NatSpec),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStyle {
    /// RFC 5780: OTHER-ADDRESS, CHANGE-REQUEST, RESPONSE-PORT, both mapped attributes.
    Rfc5780,
    /// RFC 5780 server that answers CHANGE-REQUEST from the address contacted (broken).
    IgnoresChange,
    /// RFC 5389 only: XOR-MAPPED-ADDRESS, 420 for CHANGE-REQUEST / RESPONSE-PORT.
    Plain,
    /// RFC 3489: MAPPED-ADDRESS, CHANGED-ADDRESS, honours CHANGE-REQUEST, 420 for RESPONSE-PORT.
    Legacy,
}

#[derive(Clone, Copy, Debug)]
pub struct SimServer {
    pub ip: IpAddr,
    pub port: u16,
    pub alt_ip: IpAddr,
    pub alt_port: u16,
    pub style: ServerStyle,
    /// A hostile or broken server: the alternate address it advertises (OTHER-ADDRESS, CHANGED-ADDRESS)
    /// instead of its own.
    pub named_other: Option<SocketAddr>,
    /// A hostile or broken server: the mapped address it reports instead of the request's source.
    pub named_mapped: Option<SocketAddr>,
}

impl SimServer {
    pub fn rfc5780() -> Self {
        SimServer {
            ip: ip("192.0.2.1"),
            port: 3478,
            alt_ip: ip("192.0.2.2"),
            alt_port: 3479,
            style: ServerStyle::Rfc5780,
            named_other: None,
            named_mapped: None,
        }
    }
    pub fn plain(addr: &str) -> Self {
        let a: SocketAddr = addr.parse().unwrap();
        SimServer {
            ip: a.ip(),
            port: a.port(),
            alt_ip: a.ip(),
            alt_port: a.port(),
            style: ServerStyle::Plain,
            named_other: None,
            named_mapped: None,
        }
    }
    pub fn with_style(mut self, style: ServerStyle) -> Self {
        self.style = style;
        self
    }
    /// Advertise `other` as the alternate address (whatever it is).
    pub fn naming_other(mut self, other: &str) -> Self {
        self.named_other = Some(other.parse().unwrap());
        self
    }
    /// Report `mapped` as every client's public endpoint.
    pub fn naming_mapped(mut self, mapped: &str) -> Self {
        self.named_mapped = Some(mapped.parse().unwrap());
        self
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
    fn listens(&self, a: SocketAddr) -> bool {
        let ips = [self.ip, self.alt_ip];
        let ports = [self.port, self.alt_port];
        ips.contains(&a.ip()) && ports.contains(&a.port())
    }
    fn has_alt(&self) -> bool {
        self.ip != self.alt_ip && self.port != self.alt_port
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

struct NatMapping {
    internal: SocketAddr,
    key: Option<SocketAddr>,
    public_port: u16,
    contacted: HashSet<SocketAddr>,
    last: Instant,
}

struct Packet {
    at: Instant,
    src: SocketAddr,
    dst: SocketAddr,
    data: Vec<u8>,
    /// An ICMP port unreachable for a datagram the client sent from `dst` (a local address) to `src`.
    icmp: bool,
}

/// One datagram a client socket sent: when (from the start of the run), from which socket, to where, and the
/// transaction id, so tests can check the exact retransmission schedule.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Duration,
    pub socket: usize,
    pub dst: SocketAddr,
    pub tid: [u8; 12],
    pub change: bool,
}

/// Decides whether a client datagram (socket, destination, bytes) is answered by an ICMP port unreachable
/// (the datagram itself is then dropped).
pub type IcmpRule = Box<dyn Fn(usize, SocketAddr, &[u8]) -> bool>;

pub struct World {
    pub now: Instant,
    gateway: Gateway,
    servers: Vec<SimServer>,
    pub locals: Vec<SocketAddr>,
    mappings: Vec<NatMapping>,
    /// Firewall state: (internal, remote) pairs sent to.
    fw: HashSet<(SocketAddr, SocketAddr)>,
    queue: Vec<Packet>,
    delay: Duration,
    loss_percent: u64,
    rng: u64,
    next_seq_port: u16,
    pub sent: usize,
    /// Every client datagram, in order.
    pub log: Vec<Sent>,
    start: Instant,
    /// Ordinals (0-based, in `log` order) of client datagrams the network loses.
    drop_sends: Vec<usize>,
    icmp: Option<IcmpRule>,
    /// The engine after [`World::run`], for its RTT estimates.
    pub diag: Option<Diagnosis>,
}

impl World {
    pub fn new(gateway: Gateway, servers: Vec<SimServer>, sockets: usize) -> Self {
        let host = match gateway {
            Gateway::Nat(_) => LAN_IP,
            _ => HOST_IP,
        };
        // The primary socket sits on 6666 like punchd; the others on distinct "random" ports.
        let locals = (0..sockets)
            .map(|i| SocketAddr::new(IpAddr::V4(host), if i == 0 { 6666 } else { 40000 + 17 * i as u16 }))
            .collect();
        World {
            now: Instant::now(),
            gateway,
            servers,
            locals,
            mappings: Vec::new(),
            fw: HashSet::new(),
            queue: Vec::new(),
            delay: Duration::from_millis(10),
            loss_percent: 0,
            rng: 0x1234_5678,
            next_seq_port: 20000,
            sent: 0,
            log: Vec::new(),
            start: Instant::now(),
            drop_sends: Vec::new(),
            icmp: None,
            diag: None,
        }
    }

    /// One-way delay of every packet (default 10 ms).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Lose the client datagrams with these ordinals (0 = the first one the client sends).
    pub fn dropping_sends(mut self, ordinals: &[usize]) -> Self {
        self.drop_sends = ordinals.to_vec();
        self
    }

    /// Answer client datagrams that `rule` picks with an ICMP port unreachable after the usual delay.
    pub fn with_icmp(mut self, rule: IcmpRule) -> Self {
        self.icmp = Some(rule);
        self
    }

    /// The datagrams sent from `socket` with CHANGE-REQUEST (or not), grouped by transaction in order of the
    /// first send; each group lists the send times.
    pub fn schedule(&self, socket: usize, change: bool) -> Vec<Vec<Duration>> {
        let mut out: Vec<([u8; 12], Vec<Duration>)> = Vec::new();
        for s in self.log.iter().filter(|s| s.socket == socket && s.change == change) {
            match out.iter_mut().find(|(t, _)| *t == s.tid) {
                Some((_, v)) => v.push(s.at),
                None => out.push((s.tid, vec![s.at])),
            }
        }
        out.into_iter().map(|(_, v)| v).collect()
    }

    pub fn with_loss(mut self, percent: u64, seed: u64) -> Self {
        self.loss_percent = percent;
        self.rng = seed;
        self
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn push(&mut self, src: SocketAddr, dst: SocketAddr, data: Vec<u8>) {
        if self.loss_percent > 0 && self.rand() % 100 < self.loss_percent {
            return;
        }
        self.queue.push(Packet { at: self.now + self.delay, src, dst, data, icmp: false });
    }

    fn alive(&self, m: &NatMapping, spec: &NatSpec) -> bool {
        self.now.duration_since(m.last) < spec.timeout
    }

    /// Client socket `socket` sends `data` to `dst`.
    pub fn client_send(&mut self, socket: usize, dst: SocketAddr, data: Vec<u8>) {
        let ordinal = self.sent;
        self.sent += 1;
        let src = self.locals[socket];
        let msg = Message::parse(&data).ok();
        self.log.push(Sent {
            at: self.now.duration_since(self.start),
            socket,
            dst,
            tid: msg.as_ref().map(|m| *m.transaction_id()).unwrap_or_default(),
            change: msg.as_ref().is_some_and(|m| m.change_request().is_some()),
        });
        if self.drop_sends.contains(&ordinal) {
            return;
        }
        if self.icmp.as_ref().is_some_and(|rule| rule(socket, dst, &data)) {
            self.queue.push(Packet { at: self.now + self.delay * 2, src: dst, dst: src, data: Vec::new(), icmp: true });
            return;
        }
        match self.gateway {
            Gateway::Open => self.push(src, dst, data),
            Gateway::Firewall(_) => {
                self.fw.insert((src, dst));
                self.push(src, dst, data)
            }
            Gateway::Nat(spec) => {
                let key = match spec.mapping {
                    SimMapping::Eim => None,
                    SimMapping::Adm => Some(SocketAddr::new(dst.ip(), 0)),
                    SimMapping::Apdm => Some(dst),
                };
                let existing =
                    self.mappings.iter().position(|m| m.internal == src && m.key == key && self.alive(m, &spec));
                let idx = match existing {
                    Some(i) => i,
                    None => {
                        let port = self.allocate(spec, src.port());
                        self.mappings.push(NatMapping {
                            internal: src,
                            key,
                            public_port: port,
                            contacted: HashSet::new(),
                            last: self.now,
                        });
                        self.mappings.len() - 1
                    }
                };
                let now = self.now;
                let m = &mut self.mappings[idx];
                m.contacted.insert(dst);
                m.last = now;
                let public = SocketAddr::new(IpAddr::V4(PUBLIC_IP), m.public_port);
                if dst.ip() == IpAddr::V4(PUBLIC_IP) {
                    if spec.hairpin {
                        self.push(public, dst, data);
                    }
                    return;
                }
                self.push(public, dst, data);
            }
        }
    }

    fn allocate(&mut self, spec: NatSpec, wanted: u16) -> u16 {
        let taken = |w: &World, p: u16| w.mappings.iter().any(|m| m.public_port == p && w.alive(m, &spec));
        match spec.alloc {
            SimAlloc::Preserve => {
                let mut p = wanted;
                while taken(self, p) {
                    p = p.wrapping_add(1).max(1024);
                }
                p
            }
            SimAlloc::Sequential(d) => {
                let mut p = self.next_seq_port;
                while taken(self, p) {
                    p = p.wrapping_add(d).max(1024);
                }
                self.next_seq_port = p.wrapping_add(d).max(1024);
                p
            }
            SimAlloc::Random => loop {
                let p = 1024 + (self.rand() % 64000) as u16;
                if !taken(self, p) {
                    break p;
                }
            },
        }
    }

    /// Deliver a packet arriving from outside at `dst`; returns (socket, from, data) if it reaches the client.
    fn inbound(&mut self, src: SocketAddr, dst: SocketAddr, mut data: Vec<u8>) -> Option<(usize, SocketAddr, Vec<u8>)> {
        match self.gateway {
            Gateway::Open => {
                let s = self.locals.iter().position(|l| *l == dst)?;
                Some((s, src, data))
            }
            Gateway::Firewall(f) => {
                let s = self.locals.iter().position(|l| *l == dst)?;
                let ok = self.locals.contains(&src)
                    || match f {
                        SimFilter::Eif => true,
                        SimFilter::Adf => self.fw.iter().any(|(i, r)| *i == dst && r.ip() == src.ip()),
                        SimFilter::Apdf => self.fw.contains(&(dst, src)),
                    };
                ok.then_some((s, src, data))
            }
            Gateway::Nat(spec) => {
                if dst.ip() != IpAddr::V4(PUBLIC_IP) {
                    return None;
                }
                let now = self.now;
                let idx = self.mappings.iter().position(|m| m.public_port == dst.port() && self.alive(m, &spec))?;
                let m = &mut self.mappings[idx];
                let ok = match spec.filter {
                    SimFilter::Eif => true,
                    SimFilter::Adf => m.contacted.iter().any(|c| c.ip() == src.ip()),
                    SimFilter::Apdf => m.contacted.contains(&src),
                };
                if !ok {
                    return None;
                }
                m.last = now; // like Linux conntrack, replies refresh the mapping
                let internal = m.internal;
                if spec.alg {
                    alg_rewrite(&mut data, dst, internal);
                }
                let s = self.locals.iter().position(|l| *l == internal)?;
                Some((s, src, data))
            }
        }
    }

    fn server_receive(&mut self, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let Some(server) = self.servers.iter().find(|s| s.listens(dst)).copied() else { return };
        let Ok(msg) = Message::parse(data) else { return };
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            return;
        }
        let mut out = [0u8; 512];
        let change = msg.change_request().unwrap_or_default();
        let rp = msg.response_port();
        let refuse = match server.style {
            ServerStyle::Plain => msg.raw(attr::CHANGE_REQUEST).is_some() || rp.is_some(),
            ServerStyle::Legacy => rp.is_some(),
            _ => false,
        };
        if refuse {
            let ty = MessageType::new(Method::BINDING, Class::Error);
            let mut w = MessageWriter::new(&mut out, ty, msg.transaction_id()).unwrap();
            w.add(&Attribute::ErrorCode(ErrorCode { code: 420, reason: "Unknown Attribute" })).unwrap();
            let n = w.finish();
            self.push(dst, src, out[..n].to_vec());
            return;
        }
        let honours_change = matches!(server.style, ServerStyle::Rfc5780 | ServerStyle::Legacy);
        let from_ip = if change.change_ip && honours_change {
            if dst.ip() == server.ip {
                server.alt_ip
            } else {
                server.ip
            }
        } else {
            dst.ip()
        };
        let from_port = if change.change_port && honours_change {
            if dst.port() == server.port {
                server.alt_port
            } else {
                server.port
            }
        } else {
            dst.port()
        };
        let from = SocketAddr::new(from_ip, from_port);
        let to = match rp {
            Some(p) => SocketAddr::new(src.ip(), p),
            None => src,
        };
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let mut w = MessageWriter::new(&mut out, ty, msg.transaction_id()).unwrap();
        let other = server.named_other.unwrap_or(SocketAddr::new(
            if dst.ip() == server.ip { server.alt_ip } else { server.ip },
            if dst.port() == server.port { server.alt_port } else { server.port },
        ));
        let src = server.named_mapped.unwrap_or(src);
        match server.style {
            ServerStyle::Rfc5780 | ServerStyle::IgnoresChange => {
                w.add(&Attribute::XorMappedAddress(src)).unwrap();
                w.add(&Attribute::MappedAddress(src)).unwrap();
                w.add(&Attribute::ResponseOrigin(from)).unwrap();
                if server.has_alt() || server.named_other.is_some() {
                    w.add(&Attribute::OtherAddress(other)).unwrap();
                }
            }
            ServerStyle::Plain => {
                w.add(&Attribute::XorMappedAddress(src)).unwrap();
            }
            ServerStyle::Legacy => {
                w.add(&Attribute::MappedAddress(src)).unwrap();
                w.add(&Attribute::SourceAddress(from)).unwrap();
                w.add(&Attribute::ChangedAddress(other)).unwrap();
            }
        }
        w.add(&Attribute::Software("sim")).unwrap();
        let n = w.finish();
        self.push(from, to, out[..n].to_vec());
    }

    /// Run the diagnosis to the end (bounded); returns the report and the simulated time it took.
    pub fn run(&mut self, cfg: Config) -> (Report, Duration) {
        let start = self.now;
        self.start = start;
        let mut d = Diagnosis::new(cfg, self.locals.clone(), self.now).expect("config");
        let mut buf = [0u8; 1500];
        for _ in 0..200_000 {
            while let Some(t) = d.poll_transmit(&mut buf) {
                let socket = self.locals.iter().position(|l| *l == t.local).expect("a transmit from a known socket");
                self.client_send(socket, t.dst, buf[..t.len].to_vec());
            }
            while let Some(e) = d.poll_event() {
                if e == Event::Finished {
                    let r = d.report().expect("report after Finished").clone();
                    self.diag = Some(d);
                    return (r, self.now.duration_since(start));
                }
            }
            let next_pkt = self.queue.iter().map(|p| p.at).min();
            let next = match (d.poll_timeout(), next_pkt) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("engine idle without a report"),
            };
            self.now = self.now.max(next);
            self.queue.sort_by_key(|p| p.at);
            while self.queue.first().is_some_and(|p| p.at <= self.now) {
                let p = self.queue.remove(0);
                if p.icmp {
                    if self.locals.contains(&p.dst) {
                        d.handle_unreachable(self.now, p.dst, p.src);
                    }
                } else if self.servers.iter().any(|s| s.listens(p.dst)) {
                    self.server_receive(p.src, p.dst, &p.data);
                } else if let Some((s, from, data)) = self.inbound(p.src, p.dst, p.data) {
                    d.handle_input(self.now, Received::udp(self.locals[s], from), &data);
                }
            }
            d.handle_timeout(self.now);
        }
        panic!("simulation did not finish");
    }
}

/// What an ALG does: rewrite the plain MAPPED-ADDRESS it recognises as the public endpoint to the internal one.
fn alg_rewrite(data: &mut [u8], public: SocketAddr, internal: SocketAddr) {
    let Ok(msg) = Message::parse(data) else { return };
    let Some(raw) = msg.raw(attr::MAPPED_ADDRESS) else { return };
    if msg.mapped_address() != Some(public) {
        return;
    }
    let off = raw.offset + 4;
    if let (IpAddr::V4(ip), true) = (internal.ip(), raw.value.len() == 8) {
        data[off + 2..off + 4].copy_from_slice(&internal.port().to_be_bytes());
        data[off + 4..off + 8].copy_from_slice(&ip.octets());
    }
}

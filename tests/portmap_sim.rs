//! The NAT-PMP and PCP engines against a simulated gateway in `holepunch::sim`: the gateway's server, written
//! here from the RFC layouts (independently of the library's encoders), is an engine on the router's inside
//! address (192.168.1.1:5351) that applies what it grants to the simulated NAT as port forwards; the client
//! sits at 192.168.1.20 on the same LAN, 10 ms away; a fault rule loses chosen client datagrams; a gateway
//! reboot restarts the server's epoch and flushes the NAT. Then the blocking sessions (`io::portmap`) against
//! the same server on loopback sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holepunch::io::portmap::{NatPmpSession, PcpSession};
use holepunch::nat::{Filtering, Mapping};
use holepunch::net::{Engine, Received, Retransmit};
use holepunch::portmap::natpmp;
use holepunch::portmap::pcp;
use holepunch::portmap::{PortmapError, Protocol};
use holepunch::sim::{EngineId, Fate, HostId, Link, NatConfig, NatId, Outgoing, Reply, RunError, Scripted, Sim};

const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// (protocol number, client ip, internal port)
type MappingKey = (u8, IpAddr, u16);

/// What the gateway's server asks its NAT to do for a UDP mapping it granted or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Forward { external_port: u16, internal: SocketAddr },
    Remove { external_port: u16 },
}

/// A gateway's NAT-PMP + PCP server.
struct SimGateway {
    boot: Instant,
    speaks_pcp: bool,
    /// -> (external port, PCP nonce)
    mappings: HashMap<MappingKey, (u16, Option<[u8; 12]>)>,
    requests: usize,
    /// UDP grants not yet applied to the NAT (the simulator applies them; on loopback nobody does).
    grants: Vec<Grant>,
}

impl SimGateway {
    fn new(now: Instant, speaks_pcp: bool) -> Self {
        SimGateway { boot: now, speaks_pcp, mappings: HashMap::new(), requests: 0, grants: Vec::new() }
    }

    /// Records what the NAT must do for the mapping of `key`: forward `external_port` to it, or (None) stop
    /// forwarding `removed`.
    fn grant(&mut self, key: MappingKey, external_port: Option<u16>, removed: Option<u16>) {
        if key.0 != 17 {
            return; // the simulator carries UDP only
        }
        if let Some(old) = removed {
            self.grants.push(Grant::Remove { external_port: old });
        }
        if let Some(e) = external_port {
            self.grants.push(Grant::Forward { external_port: e, internal: SocketAddr::new(key.1, key.2) });
        }
    }

    fn epoch(&self, now: Instant) -> u32 {
        now.duration_since(self.boot).as_secs() as u32
    }

    fn reboot(&mut self, now: Instant) {
        self.boot = now;
        self.mappings.clear();
    }

    fn handle(&mut self, now: Instant, from: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
        self.requests += 1;
        match req.first()? {
            0 => self.natpmp(now, from, req),
            _ if !self.speaks_pcp => {
                // RFC 6887 §9: a NAT-PMP-only server answers "unsupported version".
                let mut r = vec![0, 128 + (req.get(1)? & 0x7f), 0, 1];
                r.extend_from_slice(&self.epoch(now).to_be_bytes());
                Some(r)
            }
            _ => self.pcp(now, from, req),
        }
    }

    fn natpmp(&mut self, now: Instant, from: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
        let op = *req.get(1)?;
        let mut r = vec![0, 128 + op, 0, 0];
        r.extend_from_slice(&self.epoch(now).to_be_bytes());
        match op {
            0 => r.extend_from_slice(&EXTERNAL.octets()),
            1 | 2 if req.len() == 12 => {
                let proto = if op == 1 { 17 } else { 6 };
                let iport = u16::from_be_bytes([req[4], req[5]]);
                let sugg = u16::from_be_bytes([req[6], req[7]]);
                let life = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
                let key = (proto, from.ip(), iport);
                let eport = if life == 0 {
                    let old = self.mappings.remove(&key).map(|(e, _)| e);
                    self.grant(key, None, old);
                    0
                } else {
                    let e = if sugg == 0 { iport } else { sugg };
                    let old = self.mappings.insert(key, (e, None)).map(|(e, _)| e);
                    self.grant(key, Some(e), old);
                    e
                };
                r.extend_from_slice(&iport.to_be_bytes());
                r.extend_from_slice(&eport.to_be_bytes());
                r.extend_from_slice(&life.min(3600).to_be_bytes());
            }
            _ => r[3] = 5,
        }
        Some(r)
    }

    fn pcp(&mut self, now: Instant, from: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
        if req.len() < 24 || req.len() % 4 != 0 || req[1] & 0x80 != 0 {
            return None;
        }
        let mut r = req.to_vec();
        r[1] |= 0x80;
        r[2] = 0;
        let set = |r: &mut Vec<u8>, code: u8, life: u32, epoch: u32| {
            r[3] = code;
            r[4..8].copy_from_slice(&life.to_be_bytes());
            r[8..12].copy_from_slice(&epoch.to_be_bytes());
            r[12..24].fill(0);
        };
        let epoch = self.epoch(now);
        if req[0] != 2 {
            set(&mut r, 1, 0, epoch);
            r[0] = 2;
            r.truncate(24);
            return Some(r);
        }
        let client = pcp::ip_from_wire(req[8..24].try_into().ok()?);
        if client != from.ip() {
            set(&mut r, 12, 0, epoch);
            return Some(r);
        }
        match req[1] {
            0 => set(&mut r, 0, 0, epoch),
            1 if req.len() >= 60 => {
                let life = u32::from_be_bytes([req[4], req[5], req[6], req[7]]);
                let nonce: [u8; 12] = req[24..36].try_into().ok()?;
                let proto = req[36];
                let iport = u16::from_be_bytes([req[40], req[41]]);
                let sugg = u16::from_be_bytes([req[42], req[43]]);
                let key = (proto, from.ip(), iport);
                if let Some((_, Some(n))) = self.mappings.get(&key) {
                    if *n != nonce {
                        set(&mut r, 2, 0, epoch);
                        return Some(r);
                    }
                }
                let eport = if life == 0 {
                    let old = self.mappings.remove(&key).map(|(e, _)| e);
                    self.grant(key, None, old);
                    0
                } else {
                    let e = if sugg == 0 { iport } else { sugg };
                    let old = self.mappings.insert(key, (e, Some(nonce))).map(|(e, _)| e);
                    self.grant(key, Some(e), old);
                    e
                };
                set(&mut r, 0, life.min(3600), epoch);
                r[42..44].copy_from_slice(&eport.to_be_bytes());
                r[44..60].copy_from_slice(&pcp::ip_to_wire(IpAddr::V4(EXTERNAL)));
            }
            _ => set(&mut r, 4, 0, epoch),
        }
        Some(r)
    }
}

/// The client's LAN in the simulator: the NAT to the internet, the router's port mapping server on its inside
/// address, and the client host. Everything the server grants reaches the NAT as a port forward.
struct Lan {
    sim: Sim,
    nat: NatId,
    client_host: HostId,
    client: SocketAddr,
    server: SocketAddr,
    gateway: Rc<RefCell<SimGateway>>,
    /// Client datagrams to lose, by index among the client's sends.
    drop_to_server: Rc<RefCell<Vec<usize>>>,
}

impl Lan {
    /// A gateway whose server booted `uptime` ago; the client 10 ms away from it.
    fn new(uptime: Duration, speaks_pcp: bool) -> Lan {
        let (client, server) = addrs();
        let mut sim = Sim::new([3; 32]);
        let config = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
        let (nat, lan) = sim.add_nat(Sim::INTERNET, IpAddr::V4(EXTERNAL), config, Link::default()).unwrap();
        let router = sim.add_host(lan, &[server.ip()], Link::new(Duration::ZERO)).unwrap();
        let client_host = sim.add_host(lan, &[client.ip()], Link::new(Duration::from_millis(10))).unwrap();
        let gateway = Rc::new(RefCell::new(SimGateway::new(sim.now() - uptime, speaks_pcp)));
        let gw = gateway.clone();
        let script = move |now: Instant, rx: Received, data: &[u8]| {
            let reply = gw.borrow_mut().handle(now, rx.source, data);
            Some(reply.map(|data| Reply { local: rx.local, dst: rx.source, data }).into_iter().collect())
        };
        sim.add_engine(router, &[server], Scripted::new(script)).unwrap();
        let drop_to_server = Rc::new(RefCell::new(Vec::new()));
        let drops = drop_to_server.clone();
        let mut sent = 0;
        sim.set_fault(Box::new(move |out: &Outgoing| {
            if out.host != client_host {
                return Fate::Deliver;
            }
            sent += 1;
            if drops.borrow().contains(&(sent - 1)) {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        }));
        sim.set_capture(true);
        Lan { sim, nat, client_host, client, server, gateway, drop_to_server }
    }

    fn add<E: Engine + 'static>(&mut self, engine: E) -> EngineId<E>
    where
        E::Event: 'static,
    {
        self.sim.add_engine(self.client_host, &[self.client], engine).unwrap()
    }

    /// Run until nothing is in flight and no engine waits for a timer (bounded), applying the server's
    /// grants to the NAT as they are made.
    fn run(&mut self) {
        let (gateway, nat) = (self.gateway.clone(), self.nat);
        let apply = move |sim: &mut Sim| {
            for grant in gateway.borrow_mut().grants.drain(..) {
                match grant {
                    Grant::Forward { external_port, internal } => {
                        sim.unforward_port(nat, external_port);
                        sim.forward_port(nat, external_port, internal).unwrap();
                    }
                    Grant::Remove { external_port } => {
                        sim.unforward_port(nat, external_port);
                    }
                }
            }
            false
        };
        match self.sim.run_until(Duration::from_secs(600), apply) {
            Err(RunError::Idle) => {}
            other => panic!("simulation did not settle: {other:?}"),
        }
    }

    /// When the client sent each datagram to the server, from `since` (simulated time since the start).
    fn send_times(&self, since: Duration) -> Vec<Duration> {
        let sends = self.sim.captured().iter().filter(|c| c.host == self.client_host && c.at >= since);
        sends.inspect(|c| assert_eq!((c.src, c.dst), (self.client, self.server))).map(|c| c.at - since).collect()
    }

    /// Whether the NAT forwards its public `port` to the client's `internal_port`.
    fn forwarded(&mut self, port: u16, internal_port: u16) -> bool {
        let (public, internal) =
            (SocketAddr::new(IpAddr::V4(EXTERNAL), port), SocketAddr::new(self.client.ip(), internal_port));
        self.sim.mappings(self.nat).contains(&(internal, public))
    }

    /// The gateway reboots: a new epoch from `uptime` ago, and the NAT forgets every mapping.
    fn reboot(&mut self, uptime: Duration) {
        self.gateway.borrow_mut().reboot(self.sim.now() - uptime);
        self.sim.flush_mappings(self.nat);
    }
}

fn addrs() -> (SocketAddr, SocketAddr) {
    ("192.168.1.20:40000".parse().unwrap(), "192.168.1.1:5351".parse().unwrap())
}

#[test]
fn natpmp_map_and_delete_through_loss() {
    let mut lan = Lan::new(Duration::from_secs(1000), true);
    *lan.drop_to_server.borrow_mut() = vec![0, 1];
    let (client, server) = addrs();
    let c = lan.add(natpmp::Client::new(client, server, Retransmit::diagnostic()));
    let now = lan.sim.now();
    let id = lan.sim.engine_mut(c).request(
        now,
        natpmp::Request::Map {
            protocol: Protocol::Udp,
            internal_port: 6666,
            suggested_external_port: 0,
            lifetime: 120,
        },
    );
    lan.run();
    // RFC 6886 §3.1 timing: 0, 250 ms, then 500 ms later.
    assert_eq!(
        lan.send_times(Duration::ZERO),
        [Duration::ZERO, Duration::from_millis(250), Duration::from_millis(750)]
    );
    let ev = lan.sim.events(c);
    assert_eq!(
        ev,
        vec![natpmp::Event::Completed {
            id,
            request: natpmp::Request::Map {
                protocol: Protocol::Udp,
                internal_port: 6666,
                suggested_external_port: 0,
                lifetime: 120
            },
            result: Ok(natpmp::Response::Mapping {
                epoch: 1000,
                protocol: Protocol::Udp,
                internal_port: 6666,
                external_port: 6666,
                lifetime: 120
            }),
        }]
    );
    assert_eq!(lan.gateway.borrow().mappings.len(), 1);
    assert!(lan.forwarded(6666, 6666), "the NAT forwards what the gateway granted");
    let since = lan.sim.elapsed();
    let now = lan.sim.now();
    lan.sim.engine_mut(c).request(now, natpmp::Request::delete(Protocol::Udp, 6666));
    lan.run();
    assert!(matches!(
        &lan.sim.events(c)[..],
        [natpmp::Event::Completed { result: Ok(natpmp::Response::Mapping { external_port: 0, lifetime: 0, .. }), .. }]
    ));
    assert_eq!(lan.send_times(since), [Duration::ZERO]);
    assert!(lan.gateway.borrow().mappings.is_empty());
    assert!(!lan.forwarded(6666, 6666));
}

#[test]
fn natpmp_queue_and_reboot_detection() {
    let mut lan = Lan::new(Duration::from_secs(5000), true);
    let (client, server) = addrs();
    let c = lan.add(natpmp::Client::new(client, server, Retransmit::diagnostic()));
    let now = lan.sim.now();
    let a = lan.sim.engine_mut(c).request(now, natpmp::Request::ExternalAddress);
    let b = lan.sim.engine_mut(c).request(
        now,
        natpmp::Request::Map {
            protocol: Protocol::Tcp,
            internal_port: 80,
            suggested_external_port: 8080,
            lifetime: 60,
        },
    );
    lan.run();
    let ev = lan.sim.events(c);
    assert_eq!(ev.len(), 2);
    assert!(
        matches!(&ev[0], natpmp::Event::Completed { id, result: Ok(natpmp::Response::ExternalAddress { address: EXTERNAL, .. }), .. } if *id == a)
    );
    assert!(
        matches!(&ev[1], natpmp::Event::Completed { id, result: Ok(natpmp::Response::Mapping { external_port: 8080, .. }), .. } if *id == b)
    );
    // Requests went out one at a time (NAT-PMP has no transaction id).
    assert_eq!(lan.send_times(Duration::ZERO), [Duration::ZERO, Duration::from_millis(20)]);
    // The gateway reboots; the next answer carries a small epoch and the engine says so.
    lan.sim.run_for(Duration::from_secs(30)).unwrap();
    lan.reboot(Duration::from_secs(3));
    let now = lan.sim.now();
    lan.sim.engine_mut(c).request(now, natpmp::Request::ExternalAddress);
    lan.run();
    let ev = lan.sim.events(c);
    assert_eq!(ev[0], natpmp::Event::ServerReset { epoch: 3 });
    assert!(matches!(ev[1], natpmp::Event::Completed { result: Ok(_), .. }));
}

#[test]
fn natpmp_gives_up_within_bound() {
    let mut lan = Lan::new(Duration::ZERO, true);
    *lan.drop_to_server.borrow_mut() = (0..100).collect();
    let (client, server) = addrs();
    let c = lan.add(natpmp::Client::new(client, server, Retransmit::diagnostic()));
    let now = lan.sim.now();
    lan.sim.engine_mut(c).request(now, natpmp::Request::ExternalAddress);
    lan.run();
    assert_eq!(lan.sim.elapsed(), Duration::from_millis(3750));
    match lan.sim.events(c).as_slice() {
        [natpmp::Event::Completed { result: Err(PortmapError::Timeout { sends: 4, .. }), .. }] => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(lan.gateway.borrow().requests, 0);
}

#[test]
fn pcp_map_delete_needs_the_nonce() {
    let mut lan = Lan::new(Duration::from_secs(100), true);
    *lan.drop_to_server.borrow_mut() = vec![0];
    let (client, server) = addrs();
    let c = lan.add(pcp::Client::new(client, server, client.ip(), Retransmit::diagnostic(), [1; 32]));
    let now = lan.sim.now();
    lan.sim.engine_mut(c).request(now, pcp::Request::Announce);
    let nonce = [7u8; 12];
    lan.sim.engine_mut(c).request(
        now,
        pcp::Request::Map(pcp::MapRequest {
            nonce,
            protocol: Protocol::Udp,
            internal_port: 6666,
            suggested_external: None,
            lifetime: 120,
        }),
    );
    lan.run();
    let ev = lan.sim.events(c);
    assert!(
        matches!(ev[0], pcp::Event::Completed { result: Ok(pcp::Response::Announce { epoch: 100 }), .. }),
        "{ev:?}"
    );
    let pcp::Event::Completed { result: Ok(pcp::Response::Map(m)), .. } = &ev[1] else { panic!("{ev:?}") };
    assert_eq!(m.external, SocketAddr::new(IpAddr::V4(EXTERNAL), 6666));
    assert_eq!((m.nonce, m.lifetime), (nonce, 120));
    assert!(lan.forwarded(6666, 6666), "the NAT forwards what the gateway granted");
    // A delete with another nonce is refused; with the mapping's own it works.
    let mut other = *m;
    other.nonce = [8; 12];
    let now = lan.sim.now();
    lan.sim.engine_mut(c).request(now, other.delete_request());
    lan.sim.engine_mut(c).request(now, m.delete_request());
    lan.run();
    let ev = lan.sim.events(c);
    assert!(
        matches!(
            ev[0],
            pcp::Event::Completed { result: Err(PortmapError::Pcp { code: pcp::ResultCode::NotAuthorized, .. }), .. }
        ),
        "{ev:?}"
    );
    assert!(
        matches!(ev[1], pcp::Event::Completed { result: Ok(pcp::Response::Map(pcp::Mapping { lifetime: 0, .. })), .. }),
        "{ev:?}"
    );
    assert!(lan.gateway.borrow().mappings.is_empty());
    assert!(!lan.forwarded(6666, 6666));
}

#[test]
fn pcp_against_natpmp_only_server_negotiates_down() {
    let mut lan = Lan::new(Duration::ZERO, false);
    let (client, server) = addrs();
    let c = lan.add(pcp::Client::new(client, server, client.ip(), Retransmit::diagnostic(), [1; 32]));
    let now = lan.sim.now();
    lan.sim.engine_mut(c).request(now, pcp::Request::Announce);
    lan.run();
    // One round trip, no retransmission.
    assert_eq!(lan.send_times(Duration::ZERO).len(), 1);
    match lan.sim.events(c).as_slice() {
        [pcp::Event::Completed {
            result: Err(e @ PortmapError::PcpUnsupportedVersion { server_version: 0 }), ..
        }] => {
            assert_eq!(e.to_string(), "PCP version 2 unsupported by the server (it speaks NAT-PMP only)")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pcp_reports_address_mismatch_behind_a_nat() {
    let mut lan = Lan::new(Duration::ZERO, true);
    let (client, server) = addrs();
    // The client believes it is 10.9.9.9, but the server sees 192.168.1.20.
    let c = lan.add(pcp::Client::new(client, server, "10.9.9.9".parse().unwrap(), Retransmit::diagnostic(), [1; 32]));
    let now = lan.sim.now();
    lan.sim.engine_mut(c).request(
        now,
        pcp::Request::Map(pcp::MapRequest {
            nonce: [1; 12],
            protocol: Protocol::Udp,
            internal_port: 1,
            suggested_external: None,
            lifetime: 60,
        }),
    );
    lan.run();
    assert!(matches!(
        lan.sim.events(c).as_slice(),
        [pcp::Event::Completed { result: Err(PortmapError::Pcp { code: pcp::ResultCode::AddressMismatch, .. }), .. }]
    ));
}

/// The simulated gateway behind a real UDP socket on loopback, until dropped.
struct LoopbackGateway {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<Mutex<SimGateway>>,
}

impl LoopbackGateway {
    fn start(speaks_pcp: bool) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(SimGateway::new(Instant::now() - Duration::from_secs(42), speaks_pcp)));
        let (st, s2) = (stop.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let end = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let reply = s2.lock().unwrap().handle(Instant::now(), from, &buf[..n]);
                    if let Some(r) = reply {
                        let _ = sock.send_to(&r, from);
                    }
                }
            }
        });
        LoopbackGateway { addr, stop, thread: Some(thread), state }
    }
}

impl Drop for LoopbackGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn blocking_sessions_on_loopback() {
    let gw = LoopbackGateway::start(true);
    let mut n = NatPmpSession::connect(gw.addr, Retransmit::diagnostic()).unwrap();
    let (addr, epoch) = n.external_address().unwrap();
    assert_eq!(addr, EXTERNAL);
    assert!((42..50).contains(&epoch));
    let m = n.map(Protocol::Udp, 6666, 0, 120).unwrap();
    assert_eq!((m.external_port, m.lifetime), (6666, 120));
    assert_eq!(gw.state.lock().unwrap().mappings.len(), 1);
    n.delete(Protocol::Udp, 6666).unwrap();
    assert!(gw.state.lock().unwrap().mappings.is_empty());
    assert!(n.map(Protocol::Udp, 6666, 0, 0).is_err());

    let mut p = PcpSession::connect(gw.addr, Retransmit::diagnostic()).unwrap();
    assert!(p.announce().unwrap() >= 42);
    let m = p.map(Protocol::Udp, 7777, None, 60).unwrap();
    assert_eq!(m.external, SocketAddr::new(IpAddr::V4(EXTERNAL), 7777));
    assert_ne!(m.nonce, [0; 12]);
    p.delete(&m).unwrap();
    assert!(gw.state.lock().unwrap().mappings.is_empty());

    let only_natpmp = LoopbackGateway::start(false);
    let mut p = PcpSession::connect(only_natpmp.addr, Retransmit::diagnostic()).unwrap();
    assert_eq!(p.announce(), Err(PortmapError::PcpUnsupportedVersion { server_version: 0 }));
}

#[test]
fn blocking_session_refused_or_timeout_is_bounded() {
    // A loopback port nobody listens on: ICMP port unreachable, reported at once.
    let free = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let t = Instant::now();
    let mut n = NatPmpSession::connect(addr, Retransmit::diagnostic()).unwrap();
    assert_eq!(n.external_address(), Err(PortmapError::Refused { server: addr }));
    assert!(t.elapsed() < Duration::from_secs(1));
    // A socket that swallows everything: the schedule's bound.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = Retransmit { rto: Duration::from_millis(50), rc: 3, rm: 4, max_interval: Duration::from_secs(1) };
    let t = Instant::now();
    let mut p = PcpSession::connect(silent.local_addr().unwrap(), r).unwrap();
    match p.announce() {
        Err(PortmapError::Timeout { sends: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "{took:?}");
    let mut buf = [0u8; 100];
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut got = 0;
    while silent.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 3);
}

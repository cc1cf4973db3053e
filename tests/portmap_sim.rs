//! The NAT-PMP and PCP engines against a simulated gateway: fake clock, in-memory network with loss and delay,
//! a server written here from the RFC layouts (independently of the library's encoders), driven through the
//! `net::Engine` contract. Then the blocking sessions (`io::portmap`) against the same server on loopback
//! sockets.

use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holepunch::io::portmap::{NatPmpSession, PcpSession};
use holepunch::net::{Engine, Received, Retransmit};
use holepunch::portmap::natpmp;
use holepunch::portmap::pcp;
use holepunch::portmap::{PortmapError, Protocol};

const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// (protocol number, client ip, internal port)
type MappingKey = (u8, IpAddr, u16);

/// A gateway's NAT-PMP + PCP server.
struct SimGateway {
    boot: Instant,
    speaks_pcp: bool,
    /// -> (external port, PCP nonce)
    mappings: HashMap<MappingKey, (u16, Option<[u8; 12]>)>,
    requests: usize,
}

impl SimGateway {
    fn new(now: Instant, speaks_pcp: bool) -> Self {
        SimGateway { boot: now, speaks_pcp, mappings: HashMap::new(), requests: 0 }
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
                    self.mappings.remove(&key);
                    0
                } else {
                    let e = if sugg == 0 { iport } else { sugg };
                    self.mappings.insert(key, (e, None));
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
                    self.mappings.remove(&key);
                    0
                } else {
                    let e = if sugg == 0 { iport } else { sugg };
                    self.mappings.insert(key, (e, Some(nonce)));
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

/// In-flight datagram, ordered by delivery time.
#[derive(PartialEq, Eq)]
struct Flight {
    at: Instant,
    seq: u64,
    to_server: bool,
    from: SocketAddr,
    data: Vec<u8>,
}
impl Ord for Flight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Flight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Simulated LAN between one client and the gateway.
struct Net {
    now: Instant,
    delay: Duration,
    /// Client→server datagrams to drop, by index.
    drop_to_server: Vec<usize>,
    sent_to_server: usize,
    send_times: Vec<Duration>,
    t0: Instant,
    flights: BinaryHeap<Flight>,
    seq: u64,
    client: SocketAddr,
    server: SocketAddr,
}

impl Net {
    fn new(t0: Instant, client: SocketAddr, server: SocketAddr) -> Self {
        Net {
            now: t0,
            delay: Duration::from_millis(10),
            drop_to_server: vec![],
            sent_to_server: 0,
            send_times: vec![],
            t0,
            flights: BinaryHeap::new(),
            seq: 0,
            client,
            server,
        }
    }

    fn send(&mut self, to_server: bool, data: Vec<u8>) {
        if to_server {
            self.send_times.push(self.now - self.t0);
            self.sent_to_server += 1;
            if self.drop_to_server.contains(&(self.sent_to_server - 1)) {
                return;
            }
        }
        self.seq += 1;
        let from = if to_server { self.client } else { self.server };
        self.flights.push(Flight { at: self.now + self.delay, seq: self.seq, to_server, from, data });
    }
}

/// Run until the engine has nothing left to wait for (bounded).
fn run<E: Engine>(e: &mut E, net: &mut Net, gw: &mut SimGateway) {
    let mut buf = [0u8; 1100];
    for _ in 0..10_000 {
        while let Some(t) = e.poll_transmit(&mut buf) {
            assert_eq!((t.local, t.dst), (net.client, net.server));
            let d = buf[..t.len].to_vec();
            net.send(true, d);
        }
        let next_flight = net.flights.peek().map(|f| f.at);
        let next = match (e.poll_timeout(), next_flight) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return,
            },
        };
        net.now = next;
        while net.flights.peek().is_some_and(|f| f.at <= net.now) {
            let Some(f) = net.flights.pop() else { break };
            if f.to_server {
                if let Some(reply) = gw.handle(net.now, f.from, &f.data) {
                    net.send(false, reply);
                }
            } else {
                e.handle_input(net.now, Received::udp(net.client, f.from), &f.data);
            }
        }
        e.handle_timeout(net.now);
    }
    panic!("simulation did not settle");
}

fn addrs() -> (SocketAddr, SocketAddr) {
    ("192.168.1.20:40000".parse().unwrap(), "192.168.1.1:5351".parse().unwrap())
}

fn natpmp_done(c: &mut natpmp::Client) -> Vec<natpmp::Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn natpmp_map_and_delete_through_loss() {
    let t0 = Instant::now();
    let (client, server) = addrs();
    let mut net = Net::new(t0, client, server);
    net.drop_to_server = vec![0, 1];
    let mut gw = SimGateway::new(t0 - Duration::from_secs(1000), true);
    let mut c = natpmp::Client::new(client, server, Retransmit::diagnostic());
    let id = c.request(
        t0,
        natpmp::Request::Map {
            protocol: Protocol::Udp,
            internal_port: 6666,
            suggested_external_port: 0,
            lifetime: 120,
        },
    );
    run(&mut c, &mut net, &mut gw);
    // RFC 6886 §3.1 timing: 0, 250 ms, then 500 ms later.
    assert_eq!(net.send_times, [Duration::ZERO, Duration::from_millis(250), Duration::from_millis(750)]);
    let ev = natpmp_done(&mut c);
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
    assert_eq!(gw.mappings.len(), 1);
    net.t0 = net.now;
    net.send_times.clear();
    c.request(net.now, natpmp::Request::delete(Protocol::Udp, 6666));
    run(&mut c, &mut net, &mut gw);
    assert!(matches!(
        &natpmp_done(&mut c)[..],
        [natpmp::Event::Completed { result: Ok(natpmp::Response::Mapping { external_port: 0, lifetime: 0, .. }), .. }]
    ));
    assert!(gw.mappings.is_empty());
}

#[test]
fn natpmp_queue_and_reboot_detection() {
    let t0 = Instant::now();
    let (client, server) = addrs();
    let mut net = Net::new(t0, client, server);
    let mut gw = SimGateway::new(t0 - Duration::from_secs(5000), true);
    let mut c = natpmp::Client::new(client, server, Retransmit::diagnostic());
    let a = c.request(t0, natpmp::Request::ExternalAddress);
    let b = c.request(
        t0,
        natpmp::Request::Map {
            protocol: Protocol::Tcp,
            internal_port: 80,
            suggested_external_port: 8080,
            lifetime: 60,
        },
    );
    run(&mut c, &mut net, &mut gw);
    let ev = natpmp_done(&mut c);
    assert_eq!(ev.len(), 2);
    assert!(
        matches!(&ev[0], natpmp::Event::Completed { id, result: Ok(natpmp::Response::ExternalAddress { address: EXTERNAL, .. }), .. } if *id == a)
    );
    assert!(
        matches!(&ev[1], natpmp::Event::Completed { id, result: Ok(natpmp::Response::Mapping { external_port: 8080, .. }), .. } if *id == b)
    );
    // Requests went out one at a time (NAT-PMP has no transaction id).
    assert_eq!(net.send_times, [Duration::ZERO, Duration::from_millis(20)]);
    // The gateway reboots; the next answer carries a small epoch and the engine says so.
    net.now += Duration::from_secs(30);
    gw.reboot(net.now - Duration::from_secs(3));
    c.request(net.now, natpmp::Request::ExternalAddress);
    run(&mut c, &mut net, &mut gw);
    let ev = natpmp_done(&mut c);
    assert_eq!(ev[0], natpmp::Event::ServerReset { epoch: 3 });
    assert!(matches!(ev[1], natpmp::Event::Completed { result: Ok(_), .. }));
}

#[test]
fn natpmp_gives_up_within_bound() {
    let t0 = Instant::now();
    let (client, server) = addrs();
    let mut net = Net::new(t0, client, server);
    net.drop_to_server = (0..100).collect();
    let mut gw = SimGateway::new(t0, true);
    let mut c = natpmp::Client::new(client, server, Retransmit::diagnostic());
    c.request(t0, natpmp::Request::ExternalAddress);
    run(&mut c, &mut net, &mut gw);
    assert_eq!(net.now - t0, Duration::from_millis(3750));
    match natpmp_done(&mut c).as_slice() {
        [natpmp::Event::Completed { result: Err(PortmapError::Timeout { sends: 4, .. }), .. }] => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(gw.requests, 0);
}

fn pcp_events(c: &mut pcp::Client) -> Vec<pcp::Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn pcp_map_delete_needs_the_nonce() {
    let t0 = Instant::now();
    let (client, server) = addrs();
    let mut net = Net::new(t0, client, server);
    net.drop_to_server = vec![0];
    let mut gw = SimGateway::new(t0 - Duration::from_secs(100), true);
    let mut c = pcp::Client::new(client, server, client.ip(), Retransmit::diagnostic(), [1; 32]);
    c.request(t0, pcp::Request::Announce);
    let nonce = [7u8; 12];
    c.request(
        t0,
        pcp::Request::Map(pcp::MapRequest {
            nonce,
            protocol: Protocol::Udp,
            internal_port: 6666,
            suggested_external: None,
            lifetime: 120,
        }),
    );
    run(&mut c, &mut net, &mut gw);
    let ev = pcp_events(&mut c);
    assert!(
        matches!(ev[0], pcp::Event::Completed { result: Ok(pcp::Response::Announce { epoch: 100 }), .. }),
        "{ev:?}"
    );
    let pcp::Event::Completed { result: Ok(pcp::Response::Map(m)), .. } = &ev[1] else { panic!("{ev:?}") };
    assert_eq!(m.external, SocketAddr::new(IpAddr::V4(EXTERNAL), 6666));
    assert_eq!((m.nonce, m.lifetime), (nonce, 120));
    // A delete with another nonce is refused; with the mapping's own it works.
    let mut other = *m;
    other.nonce = [8; 12];
    c.request(net.now, other.delete_request());
    c.request(net.now, m.delete_request());
    run(&mut c, &mut net, &mut gw);
    let ev = pcp_events(&mut c);
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
    assert!(gw.mappings.is_empty());
}

#[test]
fn pcp_against_natpmp_only_server_negotiates_down() {
    let t0 = Instant::now();
    let (client, server) = addrs();
    let mut net = Net::new(t0, client, server);
    let mut gw = SimGateway::new(t0, false);
    let mut c = pcp::Client::new(client, server, client.ip(), Retransmit::diagnostic(), [1; 32]);
    c.request(t0, pcp::Request::Announce);
    run(&mut c, &mut net, &mut gw);
    // One round trip, no retransmission.
    assert_eq!(net.send_times.len(), 1);
    match pcp_events(&mut c).as_slice() {
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
    let t0 = Instant::now();
    let (client, server) = addrs();
    let mut net = Net::new(t0, client, server);
    let mut gw = SimGateway::new(t0, true);
    // The client believes it is 10.9.9.9, but the server sees 192.168.1.20.
    let mut c = pcp::Client::new(client, server, "10.9.9.9".parse().unwrap(), Retransmit::diagnostic(), [1; 32]);
    c.request(
        t0,
        pcp::Request::Map(pcp::MapRequest {
            nonce: [1; 12],
            protocol: Protocol::Udp,
            internal_port: 1,
            suggested_external: None,
            lifetime: 60,
        }),
    );
    run(&mut c, &mut net, &mut gw);
    assert!(matches!(
        pcp_events(&mut c).as_slice(),
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

//! Engine tests of the TURN server with a fake clock: authentication, nonces, quotas, the peer policy,
//! permissions, channel rules, lifetimes, and that a third-party codec (stun-rs) reads what we write.

use super::auth::rest_password;
use super::server::{Event, RelayConfig, RelayServer};
use super::IpRange;
use crate::net::{Engine, Received, Transmit};
use crate::stun::attr::{self, Attribute, ErrorCode, Family};
use crate::stun::integrity::long_term_key_md5;
use crate::stun::{ChannelData, Class, Message, MessageType, MessageWriter, Method};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const REALM: &str = "test.realm";
const UNIX0: u64 = 1_800_000_000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server_addr() -> SocketAddr {
    sa("192.0.2.1:3478")
}

fn config() -> RelayConfig {
    let mut c = RelayConfig::new(REALM);
    c.credentials.add_user("alice", "secret", REALM);
    c.credentials.add_user("bob", "hunter2", REALM);
    c.credentials.set_secret(b"shared".to_vec());
    c.policy.own = vec![server_addr().ip()];
    c.policy.relay_ports = (49152, 65535);
    c.rate_limit = None;
    c
}

struct Harness {
    s: RelayServer,
    t0: Instant,
    now: Instant,
    next_port: u16,
    next_id: u32,
}

/// What a request carries besides its method-specific attributes.
struct Creds<'a> {
    user: &'a str,
    password: &'a str,
    nonce: String,
}

impl Harness {
    fn new(c: RelayConfig) -> Harness {
        let t0 = Instant::now();
        Harness { s: RelayServer::new(c, [7; 32], t0, UNIX0).unwrap(), t0, now: t0, next_port: 50000, next_id: 0 }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }

    fn tid(&mut self) -> [u8; 12] {
        self.next_id += 1;
        let mut id = [1u8; 12];
        id[..4].copy_from_slice(&self.next_id.to_be_bytes());
        id
    }

    /// A request from `client` built by `fill`, signed when `creds` is given; returns the answers.
    fn request(
        &mut self,
        client: SocketAddr,
        method: Method,
        creds: Option<&Creds<'_>>,
        fill: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<Vec<u8>> {
        let tid = self.tid();
        self.request_tid(client, method, tid, creds, fill)
    }

    fn request_tid(
        &mut self,
        client: SocketAddr,
        method: Method,
        tid: [u8; 12],
        creds: Option<&Creds<'_>>,
        fill: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), &tid).unwrap();
        fill(&mut w);
        if let Some(c) = creds {
            w.add(&Attribute::Username(c.user)).unwrap();
            w.add(&Attribute::Realm(REALM)).unwrap();
            w.add(&Attribute::Nonce(&c.nonce)).unwrap();
            w.add_message_integrity(&long_term_key_md5(c.user, REALM, c.password)).unwrap();
        }
        w.add_fingerprint().unwrap();
        let n = w.finish();
        self.input(client, &buf[..n])
    }

    fn input(&mut self, client: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
        assert!(self.s.handle_input(self.now, Received::udp(server_addr(), client), data));
        self.drive()
    }

    /// Runs the driver's side: opens relay sockets (ports counting up) and drains transmits.
    fn drive(&mut self) -> Vec<Vec<u8>> {
        while let Some(e) = self.s.poll_event() {
            if let Event::OpenRelay { id, even, reserve_next, .. } = e {
                let mut port = self.next_port;
                if even && port % 2 == 1 {
                    port += 1;
                }
                self.next_port = port + 2;
                let at = |p: u16| SocketAddr::new(server_addr().ip(), p);
                let reserved = reserve_next.then(|| at(port + 1));
                self.s.relay_opened_with_reservation(self.now, id, Some(at(port)), reserved);
            }
        }
        self.drain().into_iter().map(|(_, d)| d).collect()
    }

    fn drain(&mut self) -> Vec<(Transmit, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(t) = self.s.poll_transmit(&mut buf) {
            out.push((t, buf[..t.len].to_vec()));
        }
        out
    }

    /// The nonce a credential-less Allocate earns (its 401).
    fn nonce(&mut self, client: SocketAddr) -> String {
        let r = self.request(client, Method::ALLOCATE, None, |w| {
            w.add(&Attribute::RequestedTransport(17)).unwrap();
        });
        let m = Message::parse(&r[0]).unwrap();
        assert_eq!(m.error_code().unwrap().code, 401);
        match m.get(attr::NONCE).unwrap() {
            Some(Attribute::Nonce(n)) => n.to_string(),
            _ => panic!("no nonce"),
        }
    }

    /// A full allocation for `client` as `user`; returns its relayed address and the credentials.
    fn allocate<'a>(&mut self, client: SocketAddr, user: &'a str, password: &'a str) -> (SocketAddr, Creds<'a>) {
        let creds = Creds { user, password, nonce: self.nonce(client) };
        let r = self.request(client, Method::ALLOCATE, Some(&creds), |w| {
            w.add(&Attribute::RequestedTransport(17)).unwrap();
        });
        let m = Message::parse(&r[0]).unwrap();
        assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
        m.check_integrity(&long_term_key_md5(user, REALM, password)).unwrap();
        assert_eq!(m.xor_mapped_address(), Some(client));
        let relay = match m.get(attr::XOR_RELAYED_ADDRESS).unwrap() {
            Some(Attribute::XorRelayedAddress(a)) => a,
            _ => panic!("no relayed address"),
        };
        (relay, creds)
    }

    fn error_of(answers: &[Vec<u8>]) -> u16 {
        assert_eq!(answers.len(), 1, "one answer expected");
        Message::parse(&answers[0]).unwrap().error_code().map_or(0, |e| e.code)
    }

    fn permit(&mut self, client: SocketAddr, creds: &Creds<'_>, peer: SocketAddr) -> u16 {
        let r = self.request(client, Method::CREATE_PERMISSION, Some(creds), |w| {
            w.add(&Attribute::XorPeerAddress(peer)).unwrap();
        });
        Self::error_of(&r)
    }

    fn bind(&mut self, client: SocketAddr, creds: &Creds<'_>, number: u16, peer: SocketAddr) -> u16 {
        let r = self.request(client, Method::CHANNEL_BIND, Some(creds), |w| {
            w.add(&Attribute::ChannelNumber(number)).unwrap();
            w.add(&Attribute::XorPeerAddress(peer)).unwrap();
        });
        Self::error_of(&r)
    }

    /// A datagram from `peer` to the relayed address `relay`; returns what the engine sends.
    fn peer_sends(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Vec<(Transmit, Vec<u8>)> {
        assert!(self.s.handle_input(self.now, Received::udp(relay, peer), data));
        self.drain()
    }

    fn send_indication(&mut self, client: SocketAddr, peer: SocketAddr, data: &[u8]) -> Vec<(Transmit, Vec<u8>)> {
        let mut buf = [0u8; 1024];
        let tid = self.tid();
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::SEND, Class::Indication), &tid).unwrap();
        w.add(&Attribute::XorPeerAddress(peer)).unwrap();
        w.add(&Attribute::Data(data)).unwrap();
        let n = w.finish();
        assert!(self.s.handle_input(self.now, Received::udp(server_addr(), client), &buf[..n]));
        self.drain()
    }
}

const PEER: &str = "198.51.100.20:7000";

#[test]
fn no_allocation_without_credentials() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let r = h.request(client, Method::ALLOCATE, None, |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    let m = Message::parse(&r[0]).unwrap();
    assert_eq!(m.error_code().unwrap().code, ErrorCode::UNAUTHORIZED);
    assert!(matches!(m.get(attr::REALM).unwrap(), Some(Attribute::Realm(REALM))));
    assert!(m.get(attr::NONCE).unwrap().is_some());
    assert!(m.raw(attr::MESSAGE_INTEGRITY).is_none());
    assert_eq!(h.s.poll_event(), None);
    assert_eq!(h.s.stats().allocations, 0);

    // Wrong password, unknown user, wrong realm: 401, no allocation.
    let nonce = h.nonce(client);
    for (user, password) in [("alice", "wrong"), ("mallory", "x")] {
        let creds = Creds { user, password, nonce: nonce.clone() };
        let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
            w.add(&Attribute::RequestedTransport(17)).unwrap();
        });
        assert_eq!(Harness::error_of(&r), 401);
    }
    // Without a credential configured at all, nobody allocates.
    let mut bare = Harness::new(RelayConfig::new(REALM));
    let nonce = bare.nonce(client);
    let creds = Creds { user: "alice", password: "secret", nonce };
    let r = bare.request(client, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 401);
    assert_eq!(h.s.stats().allocations + bare.s.stats().allocations, 0);
}

#[test]
fn allocate_answers_and_retransmission() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let creds = Creds { user: "alice", password: "secret", nonce: h.nonce(client) };
    let tid = [0x42; 12];
    let fill = |w: &mut MessageWriter<'_>| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::Lifetime(100_000)).unwrap();
    };
    let first = h.request_tid(client, Method::ALLOCATE, tid, Some(&creds), fill);
    let m = Message::parse(&first[0]).unwrap();
    assert_eq!(m.class(), Class::Success);
    // Asked for more than the maximum: granted the maximum.
    assert_eq!(m.get(attr::LIFETIME).unwrap(), Some(Attribute::Lifetime(3600)));
    assert!(m.check_fingerprint().unwrap());
    // A retransmission gets the same allocation; a new transaction gets 437.
    let again = h.request_tid(client, Method::ALLOCATE, tid, Some(&creds), fill);
    let m2 = Message::parse(&again[0]).unwrap();
    assert_eq!(m2.get(attr::XOR_RELAYED_ADDRESS).unwrap(), m.get(attr::XOR_RELAYED_ADDRESS).unwrap());
    let other = h.request(client, Method::ALLOCATE, Some(&creds), fill);
    assert_eq!(Harness::error_of(&other), ErrorCode::ALLOCATION_MISMATCH);
    assert_eq!(h.s.stats().allocations, 1);

    // Missing REQUESTED-TRANSPORT: 400; TCP: 442; DONT-FRAGMENT: 420.
    let c2 = sa("203.0.113.5:40001");
    let r = h.request(c2, Method::ALLOCATE, Some(&creds), |_| {});
    assert_eq!(Harness::error_of(&r), 400);
    let r = h.request(c2, Method::ALLOCATE, Some(&creds), |w| w.add(&Attribute::RequestedTransport(6)).unwrap());
    assert_eq!(Harness::error_of(&r), 442);
    let r = h.request(c2, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::DontFragment).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 420);
    // A family the relay does not have: 440.
    h.s = {
        let mut c = config();
        c.relay_family = Some(Family::V4);
        RelayServer::new(c, [7; 32], h.now, UNIX0).unwrap()
    };
    let creds = Creds { nonce: h.nonce(c2), ..creds };
    let r = h.request(c2, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::RequestedAddressFamily(Family::V6)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 440);
    // EVEN-PORT with R: an even port, and a RESERVATION-TOKEN for the next one.
    let r = h.request(c2, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::EvenPort(true)).unwrap();
    });
    let m = Message::parse(&r[0]).unwrap();
    let relay = match m.get(attr::XOR_RELAYED_ADDRESS).unwrap() {
        Some(Attribute::XorRelayedAddress(a)) => a,
        _ => panic!("{:?}", m.error_code()),
    };
    assert_eq!(relay.port() % 2, 0);
    let Ok(Some(Attribute::ReservationToken(token))) = m.get(attr::RESERVATION_TOKEN) else { panic!("no token") };
    // Another client takes the reserved port with the token; the same token again gets 508.
    let c3 = sa("203.0.113.5:40003");
    let with_token = |h: &mut Harness, c: SocketAddr| {
        h.request(c, Method::ALLOCATE, Some(&creds), |w| {
            w.add(&Attribute::RequestedTransport(17)).unwrap();
            w.add(&Attribute::ReservationToken(token)).unwrap();
        })
    };
    let r = with_token(&mut h, c3);
    let m = Message::parse(&r[0]).unwrap();
    let next = SocketAddr::new(relay.ip(), relay.port() + 1);
    assert_eq!(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), Some(Attribute::XorRelayedAddress(next)));
    assert_eq!(Harness::error_of(&with_token(&mut h, sa("203.0.113.5:40004"))), 508);
    // EVEN-PORT and RESERVATION-TOKEN together: 400.
    let r = h.request(sa("203.0.113.5:40005"), Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::EvenPort(false)).unwrap();
        w.add(&Attribute::ReservationToken(token)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 400);
    // An unused reservation lapses after 30 s and its socket is closed.
    let r = h.request(sa("203.0.113.5:40006"), Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::EvenPort(true)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 0);
    h.advance(Duration::from_secs(31));
    assert!(matches!(h.s.poll_event(), Some(Event::CloseRelay { id: 0, .. })));
    // EVEN-PORT without R: the driver is asked for an even port.
    assert!(h.s.handle_input(h.now, Received::udp(server_addr(), sa("203.0.113.5:40007")), &{
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), &[9; 12]).unwrap();
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::EvenPort(false)).unwrap();
        w.add(&Attribute::Username("alice")).unwrap();
        w.add(&Attribute::Realm(REALM)).unwrap();
        w.add(&Attribute::Nonce(&creds.nonce)).unwrap();
        w.add_message_integrity(&long_term_key_md5("alice", REALM, "secret")).unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }));
    assert!(matches!(h.s.poll_event(), Some(Event::OpenRelay { even: true, reserve_next: false, .. })));
}

#[test]
fn stale_nonce_is_438_with_a_fresh_one() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let creds = Creds { user: "alice", password: "secret", nonce: h.nonce(client) };
    h.advance(Duration::from_secs(601));
    let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    let m = Message::parse(&r[0]).unwrap();
    assert_eq!(m.error_code().unwrap().code, ErrorCode::STALE_NONCE);
    let fresh = match m.get(attr::NONCE).unwrap() {
        Some(Attribute::Nonce(n)) => n.to_string(),
        _ => panic!("438 without NONCE"),
    };
    assert_ne!(fresh, creds.nonce);
    let creds = Creds { nonce: fresh, ..creds };
    let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    assert_eq!(Message::parse(&r[0]).unwrap().class(), Class::Success);
    // A nonce issued to another address is no good here.
    let other = sa("203.0.113.99:1");
    let creds = Creds { user: "alice", password: "secret", nonce: h.nonce(other) };
    let r = h.request(sa("203.0.113.5:40002"), Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 438);
    assert_eq!(h.s.stats().stale_nonces, 2);
}

#[test]
fn quota_per_user_and_capacity() {
    let mut c = config();
    c.user_quota = 2;
    c.max_allocations = 3;
    let mut h = Harness::new(c);
    h.allocate(sa("203.0.113.5:40000"), "alice", "secret");
    h.allocate(sa("203.0.113.5:40001"), "alice", "secret");
    let client = sa("203.0.113.5:40002");
    let creds = Creds { user: "alice", password: "secret", nonce: h.nonce(client) };
    let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), ErrorCode::ALLOCATION_QUOTA_REACHED);
    assert_eq!(h.s.stats().quota_refused, 1);
    // REST users are counted by the user part: a new expiry is no fresh quota.
    let secret = b"shared";
    for (i, expiry) in [UNIX0 + 100, UNIX0 + 200].into_iter().enumerate() {
        let name = format!("{expiry}:carol");
        let pw = rest_password(secret, &name);
        let client = sa(&format!("203.0.113.6:{}", 40000 + i));
        let creds = Creds { user: &name, password: &pw, nonce: h.nonce(client) };
        let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
            w.add(&Attribute::RequestedTransport(17)).unwrap();
        });
        // The first fills the server (3 of 3); the second is over capacity.
        let want = if i == 0 { 0 } else { ErrorCode::INSUFFICIENT_CAPACITY };
        assert_eq!(Harness::error_of(&r), want);
    }
    // Deleting one frees its quota.
    let (_, creds) = (0, Creds { user: "alice", password: "secret", nonce: h.nonce(sa("203.0.113.5:40000")) });
    let r = h.request(sa("203.0.113.5:40000"), Method::REFRESH, Some(&creds), |w| {
        w.add(&Attribute::Lifetime(0)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 0);
    assert_eq!(h.s.stats().allocations_deleted, 1);
    let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 0);
}

#[test]
fn rest_credentials_expire() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let name = format!("{}:dave", UNIX0 + 60);
    let pw = rest_password(b"shared", &name);
    let creds = Creds { user: &name, password: &pw, nonce: h.nonce(client) };
    h.advance(Duration::from_secs(61));
    let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 401);
    let bad = rest_password(b"other secret", &name);
    let creds = Creds { user: &name, password: &bad, nonce: h.nonce(client) };
    let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 401);
}

#[test]
fn denied_peers_are_403() {
    let mut c = config();
    c.policy.denied = vec!["198.51.100.128/25".parse::<IpRange>().unwrap()];
    let mut h = Harness::new(c);
    let client = sa("203.0.113.5:40000");
    let (relay, creds) = h.allocate(client, "alice", "secret");
    for peer in ["127.0.0.1:7000", "10.0.0.1:7000", "169.254.169.254:80", "198.51.100.200:7000", "192.0.2.1:3478"] {
        assert_eq!(h.permit(client, &creds, sa(peer)), ErrorCode::FORBIDDEN, "{peer}");
        assert_eq!(h.bind(client, &creds, 0x4000, sa(peer)), ErrorCode::FORBIDDEN, "{peer}");
    }
    assert_eq!(h.permit(client, &creds, sa("[2001:db8::1]:7000")), ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
    // Another relayed address on this server is a fine peer.
    assert_eq!(h.permit(client, &creds, relay), 0);
    assert_eq!(h.permit(client, &creds, sa(PEER)), 0);
    // All or nothing: one denied peer refuses the whole request.
    let r = h.request(client, Method::CREATE_PERMISSION, Some(&creds), |w| {
        w.add(&Attribute::XorPeerAddress(sa("198.51.100.30:1"))).unwrap();
        w.add(&Attribute::XorPeerAddress(sa("10.1.1.1:1"))).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 403);
    assert!(h.send_indication(client, sa("198.51.100.30:1"), b"x").is_empty());
    assert!(h.s.stats().peer_denied >= 11);

    // Allowed ranges open the private ones (but not the server's own ports).
    let mut c = config();
    c.policy.allowed = vec!["127.0.0.0/8".parse().unwrap()];
    c.policy.own.push("127.0.0.1".parse().unwrap());
    let mut h = Harness::new(c);
    let (_, creds) = h.allocate(client, "alice", "secret");
    assert_eq!(h.permit(client, &creds, sa("127.0.0.2:7000")), 0);
    assert_eq!(h.permit(client, &creds, sa("127.0.0.1:3478")), 403);
}

#[test]
fn permissions_gate_both_directions_and_expire() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let (relay, creds) = h.allocate(client, "alice", "secret");
    let relay_local = SocketAddr::new(server_addr().ip(), relay.port());
    let peer = sa(PEER);
    assert!(h.send_indication(client, peer, b"hello").is_empty(), "no permission yet");
    assert!(h.peer_sends(relay_local, peer, b"hi").is_empty(), "no permission yet");
    assert_eq!(h.permit(client, &creds, peer), 0);
    let out = h.send_indication(client, peer, b"hello");
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.local, out[0].0.dst, out[0].1.as_slice()), (relay_local, peer, &b"hello"[..]));
    // Any port of the permitted IP may answer; the client gets a Data indication.
    let back = h.peer_sends(relay_local, sa("198.51.100.20:7001"), b"hi");
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].0.local, back[0].0.dst), (server_addr(), client));
    let m = Message::parse(&back[0].1).unwrap();
    assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA).unwrap(), Some(Attribute::Data(b"hi")));
    assert_eq!(m.get(attr::XOR_PEER_ADDRESS).unwrap(), Some(Attribute::XorPeerAddress(sa("198.51.100.20:7001"))));
    // Permissions last 300 s.
    h.advance(Duration::from_secs(299));
    assert_eq!(h.send_indication(client, peer, b"x").len(), 1);
    h.advance(Duration::from_secs(2));
    assert!(h.send_indication(client, peer, b"x").is_empty());
    assert!(h.peer_sends(relay_local, peer, b"x").is_empty());
    let s = h.s.stats();
    assert_eq!((s.to_peer_packets, s.to_client_packets), (2, 1));
    assert!(s.dropped_no_permission >= 4);
}

#[test]
fn channel_bind_rules_and_channel_data() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let (relay, mut creds) = h.allocate(client, "alice", "secret");
    let relay_local = SocketAddr::new(server_addr().ip(), relay.port());
    let (p1, p2) = (sa(PEER), sa("198.51.100.21:7000"));
    assert_eq!(h.bind(client, &creds, 0x3FFF, p1), 400, "below the channel range");
    assert_eq!(h.bind(client, &creds, 0x8000, p1), 400, "above the channel range");
    assert_eq!(h.bind(client, &creds, 0x4000, p1), 0);
    assert_eq!(h.bind(client, &creds, 0x4000, p1), 0, "a refresh");
    assert_eq!(h.bind(client, &creds, 0x4000, p2), 400, "number bound to another peer");
    assert_eq!(h.bind(client, &creds, 0x4001, p1), 400, "peer bound to another number");
    assert_eq!(h.bind(client, &creds, 0x4001, p2), 0);
    assert_eq!(h.bind(client, &creds, 0x7FFF, sa("198.51.100.22:1")), 0, "RFC 5766 range, as coturn clients use");
    // ChannelData out, and the peer's answer as ChannelData (a bind installs the permission).
    let mut cd = [0u8; 16];
    let n = ChannelData::write(0x4001, b"ping", false, &mut cd).unwrap();
    assert!(h.s.handle_input(h.now, Received::udp(server_addr(), client), &cd[..n]));
    let out = h.drain();
    assert_eq!((out[0].0.local, out[0].0.dst, out[0].1.as_slice()), (relay_local, p2, &b"ping"[..]));
    let back = h.peer_sends(relay_local, p2, b"pong");
    assert_eq!(ChannelData::parse(&back[0].1).unwrap(), ChannelData { channel: 0x4001, data: b"pong" });
    // An unbound channel carries nothing.
    let n = ChannelData::write(0x4002, b"ping", false, &mut cd).unwrap();
    assert!(h.s.handle_input(h.now, Received::udp(server_addr(), client), &cd[..n]));
    assert!(h.drain().is_empty());
    // Channels last 600 s, then stay reserved for 5 more minutes.
    h.advance(Duration::from_secs(299));
    assert_eq!(h.permit(client, &creds, p1), 0); // keep the permission alive
    assert_eq!(Harness::error_of(&h.request(client, Method::REFRESH, Some(&creds), |_| {})), 0);
    h.advance(Duration::from_secs(302));
    let n = ChannelData::write(0x4000, b"late", false, &mut cd).unwrap();
    assert!(h.s.handle_input(h.now, Received::udp(server_addr(), client), &cd[..n]));
    assert!(h.drain().is_empty(), "expired channel");
    creds.nonce = h.nonce(client);
    assert_eq!(h.permit(client, &creds, p1), 0);
    let back = h.peer_sends(relay_local, p1, b"now a Data indication");
    assert_eq!(Message::parse(&back[0].1).unwrap().method(), Method::DATA);
    assert_eq!(h.bind(client, &creds, 0x4000, p2), 400, "quarantined number");
    assert_eq!(Harness::error_of(&h.request(client, Method::REFRESH, Some(&creds), |_| {})), 0);
    h.advance(Duration::from_secs(299));
    assert_eq!(h.bind(client, &creds, 0x4000, p2), 0, "free again after the quarantine");
}

#[test]
fn lifetimes_refresh_and_expiry() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let (relay, creds) = h.allocate(client, "alice", "secret");
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(1)));
    h.advance(Duration::from_secs(500));
    // Refresh with no LIFETIME: the default again.
    let r = h.request(client, Method::REFRESH, Some(&creds), |_| {});
    assert_eq!(Message::parse(&r[0]).unwrap().get(attr::LIFETIME).unwrap(), Some(Attribute::Lifetime(600)));
    // Another user may not refresh it.
    let bob = Creds { user: "bob", password: "hunter2", nonce: creds.nonce.clone() };
    let r = h.request(client, Method::REFRESH, Some(&bob), |_| {});
    assert_eq!(Harness::error_of(&r), ErrorCode::WRONG_CREDENTIALS);
    h.advance(Duration::from_secs(599));
    assert_eq!(h.s.stats().allocations, 1);
    assert_eq!(h.s.poll_event(), None);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.s.stats().allocations, 0);
    let relay_local = SocketAddr::new(server_addr().ip(), relay.port());
    assert!(matches!(h.s.poll_event(), Some(Event::CloseRelay { relay, .. }) if relay == relay_local));
    assert_eq!(h.s.poll_timeout(), None);
    assert_eq!(h.s.stats().allocations_expired, 1);
    // A refresh after that: 437.
    let creds = Creds { nonce: h.nonce(client), ..creds };
    let r = h.request(client, Method::REFRESH, Some(&creds), |_| {});
    assert_eq!(Harness::error_of(&r), ErrorCode::ALLOCATION_MISMATCH);
    let _ = h.t0;
}

#[test]
fn bandwidth_limit_drops_the_excess() {
    let mut c = config();
    c.bandwidth = 1000;
    let mut h = Harness::new(c);
    let client = sa("203.0.113.5:40000");
    let (_, creds) = h.allocate(client, "alice", "secret");
    assert_eq!(h.permit(client, &creds, sa(PEER)), 0);
    let sent: usize = (0..20).map(|_| h.send_indication(client, sa(PEER), &[0; 100]).len()).sum();
    assert_eq!(sent, 10);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.send_indication(client, sa(PEER), &[0; 100]).len(), 1);
    assert_eq!(h.s.stats().dropped_bandwidth, 10);
}

/// An Allocate flood, authenticated or not, cannot grow memory past the configured caps.
#[test]
fn allocate_flood_memory_is_bounded() {
    let mut c = config();
    c.max_allocations = 50;
    c.user_quota = 1000;
    let mut h = Harness::new(c);
    for i in 0..2000u32 {
        let client = SocketAddr::new(format!("203.0.{}.{}", (i >> 8) & 0xFF, i & 0xFF).parse().unwrap(), 5000);
        h.request(client, Method::ALLOCATE, None, |w| w.add(&Attribute::RequestedTransport(17)).unwrap());
    }
    assert_eq!(h.s.stats().allocations, 0, "401s keep no state");
    let client = sa("203.0.113.5:1");
    let creds = Creds { user: "alice", password: "secret", nonce: h.nonce(client) };
    let mut refused = 0;
    for port in 1..=500u16 {
        let r = h.request(SocketAddr::new(client.ip(), port), Method::ALLOCATE, Some(&creds), |w| {
            w.add(&Attribute::RequestedTransport(17)).unwrap();
        });
        refused += usize::from(Harness::error_of(&r) == ErrorCode::INSUFFICIENT_CAPACITY);
    }
    assert_eq!(h.s.stats().allocations, 50);
    assert_eq!(refused, 450);
}

/// What we write, a third-party TURN codec (stun-rs) reads.
#[test]
fn stun_rs_decodes_our_turn_messages() {
    use stun_rs::attributes::stun::{ErrorCode as RsErrorCode, Nonce, Realm, XorMappedAddress};
    use stun_rs::attributes::turn::{Data, LifeTime, XorPeerAddress, XorRelayedAddress};
    use stun_rs::{MessageClass, MessageDecoderBuilder};

    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let decoder = MessageDecoderBuilder::default().build();

    // The 401 challenge.
    let r = h.request(client, Method::ALLOCATE, None, |w| w.add(&Attribute::RequestedTransport(17)).unwrap());
    let (m, _) = decoder.decode(&r[0]).expect("stun-rs decodes the 401");
    assert_eq!(m.class(), MessageClass::ErrorResponse);
    assert_eq!(m.get::<RsErrorCode>().unwrap().as_error_code().unwrap().error_code().error_code(), 401);
    assert_eq!(m.get::<Realm>().unwrap().as_realm().unwrap().as_str(), REALM);
    assert!(m.get::<Nonce>().is_some());

    // The Allocate success.
    let creds = Creds { user: "alice", password: "secret", nonce: h.nonce(client) };
    let r = h.request(client, Method::ALLOCATE, Some(&creds), |w| w.add(&Attribute::RequestedTransport(17)).unwrap());
    let (m, _) = decoder.decode(&r[0]).expect("stun-rs decodes the Allocate success");
    assert_eq!(m.class(), MessageClass::SuccessResponse);
    let relay = *m.get::<XorRelayedAddress>().unwrap().as_xor_relayed_address().unwrap().socket_address();
    assert_eq!(relay.ip(), server_addr().ip());
    assert_eq!(*m.get::<XorMappedAddress>().unwrap().as_xor_mapped_address().unwrap().socket_address(), client);
    assert_eq!(m.get::<LifeTime>().unwrap().as_life_time().unwrap().as_u32(), 600);

    // A Data indication.
    assert_eq!(h.permit(client, &creds, sa(PEER)), 0);
    let back = h.peer_sends(relay, sa(PEER), b"payload");
    let (m, _) = decoder.decode(&back[0].1).expect("stun-rs decodes the Data indication");
    assert_eq!(m.class(), MessageClass::Indication);
    assert_eq!(m.get::<Data>().unwrap().as_data().unwrap().as_ref(), b"payload");
    assert_eq!(*m.get::<XorPeerAddress>().unwrap().as_xor_peer_address().unwrap().socket_address(), sa(PEER));
}

/// Over TCP: the 5-tuple includes the transport, ChannelData towards the client is padded (RFC 8656 §12.5),
/// and the allocation ends with its connection.
#[test]
fn tcp_allocation_pads_channel_data_and_ends_with_the_connection() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let tcp = Received { local: server_addr(), source: client, transport: crate::net::Transport::Tcp };
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), &[1; 12]).unwrap();
    w.add(&Attribute::RequestedTransport(17)).unwrap();
    let n = w.finish();
    assert!(h.s.handle_input(h.now, tcp, &buf[..n]));
    let r = h.drive();
    let nonce = match Message::parse(&r[0]).unwrap().get(attr::NONCE).unwrap() {
        Some(Attribute::Nonce(n)) => n.to_string(),
        _ => panic!(),
    };
    let signed = |h: &mut Harness, method: Method, tid: u8, fill: &dyn Fn(&mut MessageWriter<'_>)| {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), &[tid; 12]).unwrap();
        fill(&mut w);
        w.add(&Attribute::Username("alice")).unwrap();
        w.add(&Attribute::Realm(REALM)).unwrap();
        w.add(&Attribute::Nonce(&nonce)).unwrap();
        w.add_message_integrity(&long_term_key_md5("alice", REALM, "secret")).unwrap();
        let n = w.finish();
        assert!(h.s.handle_input(h.now, tcp, &buf[..n]));
        h.drive()
    };
    let r = signed(&mut h, Method::ALLOCATE, 2, &|w| w.add(&Attribute::RequestedTransport(17)).unwrap());
    let relay = match Message::parse(&r[0]).unwrap().get(attr::XOR_RELAYED_ADDRESS).unwrap() {
        Some(Attribute::XorRelayedAddress(a)) => a,
        _ => panic!("{:?}", Message::parse(&r[0]).unwrap().error_code()),
    };
    let r = signed(&mut h, Method::CHANNEL_BIND, 3, &|w| {
        w.add(&Attribute::ChannelNumber(0x4000)).unwrap();
        w.add(&Attribute::XorPeerAddress(sa(PEER))).unwrap();
    });
    assert_eq!(Harness::error_of(&r), 0);
    // The same client address over UDP has no allocation.
    assert_eq!(h.send_indication(client, sa(PEER), b"x").len(), 0);
    let back = h.peer_sends(relay, sa(PEER), b"abcde");
    assert_eq!(back[0].1.len(), 12, "4 + 5 padded to 12");
    assert_eq!(ChannelData::parse(&back[0].1[..9]).unwrap().data, b"abcde");
    assert!(h.s.connection_closed(client, server_addr()));
    assert_eq!(h.s.stats().allocations, 0);
    assert!(matches!(h.s.poll_event(), Some(Event::CloseRelay { .. })));
}

/// Unauthenticated answers stay within the amplification bound (4x the request): a bare 20-byte Allocate gets
/// no 401 (it would be 84 bytes), a real first Allocate (28 bytes, with REQUESTED-TRANSPORT) does.
#[test]
fn unauthenticated_answers_respect_the_amplification_bound() {
    let mut h = Harness::new(config());
    let client = sa("203.0.113.5:40000");
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), &[1; 12]).unwrap();
    let n = w.finish();
    assert_eq!(n, 20);
    assert!(h.input(client, &buf[..n]).is_empty());
    assert_eq!(h.s.stats().dropped_amplification, 1);
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), &[2; 12]).unwrap();
    w.add(&Attribute::RequestedTransport(17)).unwrap();
    let n = w.finish();
    let r = h.input(client, &buf[..n]);
    assert_eq!(r.len(), 1);
    assert!(r[0].len() <= 4 * n, "{} > 4 x {n}", r[0].len());
    assert_eq!(Harness::error_of(&r), 401);
}

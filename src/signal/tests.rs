//! Engine tests: a server and several clients wired together in one process through a zero-delay network
//! with one NAT mapping per client (its public endpoint can change mid-test), plus hostile inputs.

use super::client::{Client, ClientConfig, ConnectFailure, Event as CEvent, RefuseReason};
use super::server::{Event as SEvent, Refusal, Server, ServerConfig};
use super::*;
use crate::identity::PublicKey;
use crate::net::{Engine, Received};
use crate::stun::{self, attr, Attribute, Class, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SERVER: &str = "192.0.2.1:3478";
const SECRET: &[u8] = b"correct horse battery staple";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn name(s: &str) -> PeerName {
    PeerName::new(s).unwrap()
}

struct Peer {
    client: Client,
    /// The public endpoint the peer's NAT maps its local socket to.
    public: SocketAddr,
    events: Vec<(Instant, CEvent)>,
    /// Not driven (switched off) when false.
    up: bool,
}

/// What crossed the network: (from, to, bytes).
type Wire = Vec<(SocketAddr, SocketAddr, Vec<u8>)>;

/// Decides which datagrams (from, to, bytes) the network loses.
type DropRule = Box<dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> bool>;

struct Net {
    t0: Instant,
    now: Instant,
    server: Server<MemoryRegistry>,
    server_up: bool,
    server_events: Vec<(Instant, SEvent)>,
    peers: Vec<Peer>,
    /// Returns true to drop a datagram (from, to, bytes).
    drop: DropRule,
    wire: Wire,
}

fn server_config() -> ServerConfig {
    ServerConfig::new(NetworkSecret::new(SECRET.to_vec()))
}

impl Net {
    fn new(config: ServerConfig) -> Net {
        let t0 = Instant::now();
        let registry = MemoryRegistry::new(config.capacity, t0);
        Net {
            t0,
            now: t0,
            server: Server::new(config, registry, [1; 32], t0).unwrap(),
            server_up: true,
            server_events: Vec::new(),
            peers: Vec::new(),
            drop: Box::new(|_, _, _| false),
            wire: Vec::new(),
        }
    }

    /// Add a peer named `n` behind a NAT mapping 10.0.0.x:6666 to 203.0.113.x:40000; returns its index.
    fn peer_with_secret(&mut self, n: &str, secret: &[u8]) -> usize {
        let i = self.peers.len();
        let public = SocketAddr::new([203, 0, 113, i as u8 + 1].into(), 40000);
        let client = self.client(i, n, secret, [i as u8 + 10; 32]);
        self.peers.push(Peer { client, public, events: Vec::new(), up: true });
        i
    }

    /// Peer `i`'s client (local 10.0.0.x:6666, key [x; 32]), started now with `seed`.
    fn client(&self, i: usize, n: &str, secret: &[u8], seed: [u8; 32]) -> Client {
        let local = SocketAddr::new([10, 0, 0, i as u8 + 1].into(), 6666);
        let key = PublicKey([i as u8 + 1; 32]);
        let config = ClientConfig::new(local, addr(SERVER), name(n), key, &NetworkSecret::new(secret.to_vec()));
        Client::new(config, seed, self.now)
    }

    /// Peer `i`'s daemon restarts: a fresh client with the same name, key and endpoint, and no memory.
    fn restart(&mut self, i: usize, n: &str) {
        self.peers[i].client = self.client(i, n, SECRET, [i as u8 + 40; 32]);
        self.peers[i].events.clear();
    }

    fn peer(&mut self, n: &str) -> usize {
        self.peer_with_secret(n, SECRET)
    }

    /// Deliver everything queued, at `now` (zero delay), until quiet.
    fn deliver(&mut self) {
        let mut buf = [0u8; 1500];
        for _ in 0..10_000 {
            let mut moved = false;
            if self.server_up {
                while let Some(t) = self.server.poll_transmit(&mut buf) {
                    assert_eq!(t.local, addr(SERVER));
                    let bytes = buf[..t.len].to_vec();
                    self.wire.push((t.local, t.dst, bytes.clone()));
                    moved = true;
                    if (self.drop)(t.local, t.dst, &bytes) {
                        continue;
                    }
                    if let Some(p) = self.peers.iter_mut().find(|p| p.public == t.dst && p.up) {
                        let input = Received::udp(p.client.config().local, t.local);
                        assert!(
                            p.client.handle_input(self.now, input, &bytes),
                            "the client consumes its server's messages"
                        );
                    }
                }
            }
            for p in self.peers.iter_mut().filter(|p| p.up) {
                while let Some(t) = p.client.poll_transmit(&mut buf) {
                    assert_eq!((t.local, t.dst), (p.client.config().local, addr(SERVER)));
                    let bytes = buf[..t.len].to_vec();
                    self.wire.push((p.public, t.dst, bytes.clone()));
                    moved = true;
                    if (self.drop)(p.public, t.dst, &bytes) || !self.server_up {
                        continue;
                    }
                    assert!(self.server.handle_input(self.now, Received::udp(t.dst, p.public), &bytes));
                }
            }
            self.collect();
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    fn collect(&mut self) {
        while let Some(e) = self.server.poll_event() {
            self.server_events.push((self.now, e));
        }
        for p in &mut self.peers {
            while let Some(e) = p.client.poll_event() {
                p.events.push((self.now, e));
            }
        }
    }

    /// Run timers and deliveries until `t0 + at`.
    fn run_until(&mut self, at: Duration) {
        let until = self.t0 + at;
        for _ in 0..100_000 {
            self.deliver();
            let mut next = until;
            if self.server_up {
                next = next.min(self.server.poll_timeout().unwrap_or(until));
            }
            for p in self.peers.iter().filter(|p| p.up) {
                next = next.min(p.client.poll_timeout().unwrap_or(until));
            }
            if next >= until {
                self.now = until;
                self.timeouts();
                self.deliver();
                return;
            }
            self.now = self.now.max(next);
            self.timeouts();
        }
        panic!("run_until never reached its end");
    }

    fn timeouts(&mut self) {
        let now = self.now;
        if self.server_up && self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        for p in self.peers.iter_mut().filter(|p| p.up) {
            if p.client.poll_timeout().is_some_and(|t| t <= now) {
                p.client.handle_timeout(now);
            }
        }
        self.collect();
    }

    fn events(&self, i: usize) -> Vec<CEvent> {
        self.peers[i].events.iter().map(|(_, e)| e.clone()).collect()
    }

    fn introductions(&self, i: usize) -> Vec<(Instant, Introduction)> {
        self.peers[i]
            .events
            .iter()
            .filter_map(|(t, e)| match e {
                CEvent::Introduced(intro) => Some((*t, intro.clone())),
                _ => None,
            })
            .collect()
    }

    fn connect(&mut self, i: usize, to: &str) {
        let now = self.now;
        self.peers[i].client.connect(now, &name(to));
        self.deliver();
    }

    /// Datagrams of `method` and `class` seen on the wire towards `dst`.
    fn sent(&self, dst: SocketAddr, method: stun::Method, class: Class) -> Vec<Vec<u8>> {
        self.wire
            .iter()
            .filter(|(_, d, b)| {
                *d == dst && Message::parse(b).is_ok_and(|m| m.method() == method && m.class() == class)
            })
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

#[test]
fn two_peers_register_and_are_introduced_in_the_same_instant() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let bob = net.peer("bob");
    let cands = vec![Candidate { kind: CandidateKind::Host, addr: addr("10.0.0.2:6666") }];
    net.peers[bob].client.set_candidates(net.now, cands.clone());
    net.run_until(secs(1));
    assert_eq!(net.events(alice), [CEvent::Registered { reflexive: net.peers[alice].public }]);
    assert_eq!(net.events(bob), [CEvent::Registered { reflexive: net.peers[bob].public }]);
    assert_eq!(net.server.registry().len(), 2);
    assert_eq!(net.server.stats().challenged, 2, "each peer's first request met the nonce challenge once");

    net.connect(alice, "bob");
    net.run_until(secs(2));
    let a = net.introductions(alice);
    let b = net.introductions(bob);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].0, b[0].0, "both pushes arrive in the same instant");
    let (ia, ib) = (&a[0].1, &b[0].1);
    assert_eq!(ia.session, ib.session);
    assert_eq!((ia.peer.as_str(), ia.key, ia.reflexive), ("bob", PublicKey([2; 32]), net.peers[bob].public));
    assert_eq!(ia.candidates, cands);
    assert_eq!((ib.peer.as_str(), ib.reflexive), ("alice", net.peers[alice].public));
    assert!(net.server_events.iter().any(
        |(_, e)| matches!(e, SEvent::Introduced { from, to, .. } if from.as_str() == "alice" && to.as_str() == "bob")
    ));
    assert_eq!(net.server.stats().pushes_acked, 2);
    assert_eq!(net.server.introductions().1, 0, "no push left in flight");
}

#[test]
fn both_pushes_leave_in_the_handle_input_of_the_connect() {
    let mut net = Net::new(server_config());
    net.peer("alice");
    net.peer("bob");
    net.run_until(secs(1));
    // Capture alice's CONNECT instead of delivering it, then hand it to the server by hand.
    let mut captured = None;
    net.peers[0].client.connect(net.now, &name("bob"));
    let mut buf = [0u8; 1500];
    while let Some(t) = net.peers[0].client.poll_transmit(&mut buf) {
        captured = Some(buf[..t.len].to_vec());
    }
    let req = captured.expect("a CONNECT");
    assert!(net.server.handle_input(net.now, Received::udp(addr(SERVER), net.peers[0].public), &req));
    let mut dsts = Vec::new();
    while let Some(t) = net.server.poll_transmit(&mut buf) {
        let m = Message::parse(&buf[..t.len]).unwrap();
        dsts.push((t.dst, m.method(), m.class()));
    }
    assert!(dsts.contains(&(net.peers[0].public, wire::CONNECT, Class::Success)));
    assert!(dsts.contains(&(net.peers[0].public, wire::PUSH, Class::Request)));
    assert!(dsts.contains(&(net.peers[1].public, wire::PUSH, Class::Request)));
}

#[test]
fn wrong_secret_is_refused_with_a_typed_reason() {
    let mut net = Net::new(server_config());
    let mallory = net.peer_with_secret("mallory", b"guessed");
    net.run_until(secs(30));
    let events = net.events(mallory);
    assert_eq!(events, [CEvent::Refused(RefuseReason::WrongSecret)], "reported once; the server is not lost");
    assert_eq!(RefuseReason::WrongSecret.to_string(), "the server refused our credentials: wrong network secret");
    assert!(net.server.registry().is_empty());
    assert!(net.server_events.iter().any(|(_, e)| matches!(e, SEvent::Refused { reason: Refusal::BadIntegrity, .. })));
    // Every answer to mallory is an unsigned error no larger than what she sent.
    let largest_request = net.sent(addr(SERVER), wire::REGISTER, Class::Request).iter().map(Vec::len).min().unwrap();
    for answer in net.sent(net.peers[mallory].public, wire::REGISTER, Class::Error) {
        assert!(answer.len() <= largest_request);
        let m = Message::parse(&answer).unwrap();
        assert!(m.raw(attr::MESSAGE_INTEGRITY_SHA256).is_none());
        assert!(m.raw(attr::XOR_MAPPED_ADDRESS).is_none());
    }
}

#[test]
fn a_register_replayed_from_another_source_only_gets_a_challenge() {
    let mut net = Net::new(server_config());
    net.peer("alice");
    net.run_until(secs(1));
    let accepted = net.sent(addr(SERVER), wire::REGISTER, Class::Request).pop().unwrap();
    let attacker = addr("198.51.100.66:6666");
    let before = net.server.stats();
    assert!(net.server.handle_input(net.now, Received::udp(addr(SERVER), attacker), &accepted));
    let mut buf = [0u8; 1500];
    let t = net.server.poll_transmit(&mut buf).expect("a challenge");
    assert!(net.server.poll_transmit(&mut buf).is_none());
    assert_eq!(t.dst, attacker);
    assert!(t.len <= accepted.len());
    let m = Message::parse(&buf[..t.len]).unwrap();
    assert_eq!(m.error_code().unwrap().code, codes::STALE_NONCE);
    assert!(m.raw(attr::NONCE).is_some());
    assert_eq!(net.server.stats().challenged, before.challenged + 1);
    let reg = net.server.registry().lookup(net.now, &name("alice")).unwrap();
    assert_eq!(reg.endpoint, net.peers[0].public, "the replay moved nothing");
}

#[test]
fn a_stale_nonce_is_renewed_without_losing_the_registration() {
    let mut config = server_config();
    config.nonce_bucket = secs(5);
    let mut net = Net::new(config);
    let alice = net.peer("alice");
    net.run_until(secs(60));
    assert_eq!(net.events(alice), [CEvent::Registered { reflexive: net.peers[alice].public }]);
    let challenged = net.server.stats().challenged;
    assert!((6..=13).contains(&challenged), "one challenge per nonce lifetime (5–10 s), got {challenged}");
    assert!(net.server.stats().refreshes >= 18);
}

#[test]
fn connect_to_an_unknown_peer_says_so() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    net.run_until(secs(1));
    net.connect(alice, "carol");
    net.run_until(secs(2));
    let failed: Vec<_> = net.events(alice).into_iter().filter(|e| matches!(e, CEvent::ConnectFailed { .. })).collect();
    assert_eq!(failed, [CEvent::ConnectFailed { peer: name("carol"), reason: ConnectFailure::PeerNotRegistered }]);
    assert_eq!(ConnectFailure::PeerNotRegistered.to_string(), "not registered with the server");
}

#[test]
fn connect_before_registration_waits_for_it() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    net.peer("bob");
    net.connect(alice, "bob");
    net.run_until(secs(2));
    assert_eq!(net.introductions(alice).len(), 1);
    assert_eq!(net.introductions(1).len(), 1);
}

#[test]
fn lost_pushes_are_retransmitted_and_reported_once() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let bob = net.peer("bob");
    net.run_until(secs(1));
    let bob_public = net.peers[bob].public;
    let mut dropped_pushes = 0;
    let mut dropped_answers = 0;
    net.drop = Box::new(move |from, to, bytes| {
        let Ok(m) = Message::parse(bytes) else { return false };
        if m.method() != wire::PUSH {
            return false;
        }
        if to == bob_public && dropped_pushes < 2 {
            dropped_pushes += 1;
            return true;
        }
        if from == bob_public && m.class() == Class::Success && dropped_answers < 1 {
            dropped_answers += 1;
            return true;
        }
        false
    });
    net.connect(alice, "bob");
    net.run_until(secs(10));
    assert_eq!(net.introductions(alice).len(), 1);
    let b = net.introductions(bob);
    assert_eq!(b.len(), 1, "a retransmitted push is reported once");
    assert_eq!(b[0].0 - net.introductions(alice)[0].0, Duration::from_millis(1500), "third send at 1.5 s");
    assert_eq!(net.sent(bob_public, wire::PUSH, Class::Request).len(), 4, "two lost, one whose answer was lost, one");
    assert_eq!(net.server.stats().pushes_acked, 2);
    assert_eq!(net.server.stats().pushes_failed, 0);
}

#[test]
fn a_push_nobody_answers_fails_after_its_schedule() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let bob = net.peer("bob");
    net.run_until(secs(1));
    net.peers[bob].up = false;
    net.connect(alice, "bob");
    net.run_until(secs(20));
    assert!(net.server_events.iter().any(
        |(_, e)| matches!(e, SEvent::PushFailed { to, reason, .. } if to.as_str() == "bob" && reason.is_no_answer())
    ));
    assert_eq!(net.sent(net.peers[bob].public, wire::PUSH, Class::Request).len(), 5);
}

#[test]
fn repeated_connects_reuse_the_introduction_within_the_window() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let bob = net.peer("bob");
    net.run_until(secs(1));
    net.connect(alice, "bob");
    net.run_until(secs(2));
    net.connect(alice, "bob");
    net.connect(bob, "alice");
    net.run_until(secs(4));
    assert_eq!(net.server.stats().introductions, 1);
    assert_eq!(net.introductions(alice).len(), 1);
    assert_eq!(net.introductions(bob).len(), 1);
    // After the window a new request is a new introduction.
    net.run_until(secs(12));
    net.connect(bob, "alice");
    net.run_until(secs(13));
    assert_eq!(net.server.stats().introductions, 2);
    let a = net.introductions(alice);
    assert_eq!(a.len(), 2);
    assert_ne!(a[0].1.session, a[1].1.session);
}

#[test]
fn peers_that_restarted_within_the_window_are_introduced_again() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let bob = net.peer("bob");
    net.run_until(secs(1));
    net.connect(alice, "bob");
    net.run_until(secs(2));
    assert_eq!(net.server.stats().pushes_acked, 2);
    // Both daemons restart (fresh clients, same names, keys and endpoints) and alice asks again at once: the
    // session is reused, but its pushes ended, so both are pushed it again and the fresh clients report it.
    net.restart(alice, "alice");
    net.restart(bob, "bob");
    net.run_until(secs(3));
    net.connect(alice, "bob");
    net.run_until(secs(4));
    assert_eq!(net.server.stats().introductions, 1, "the same introduction, not a new one");
    for i in [alice, bob] {
        assert_eq!(net.introductions(i).len(), 1, "peer {i} learns the session again");
    }
    // A further repeat reaches the clients too, and each reports the session only once.
    net.connect(bob, "alice");
    net.run_until(secs(5));
    assert_eq!(net.introductions(alice).len(), 1);
    assert_eq!(net.introductions(bob).len(), 1);
}

#[test]
fn a_connect_after_a_peer_moved_is_a_new_introduction_within_the_window() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let _bob = net.peer("bob");
    net.run_until(secs(1));
    net.connect(alice, "bob");
    net.run_until(secs(2));
    // Alice's NAT mapping moves; her next registration (at 3 s) tells the server, then she asks again.
    net.peers[alice].public = addr("203.0.113.200:51000");
    net.run_until(secs(4));
    net.connect(alice, "bob");
    net.run_until(secs(5));
    assert_eq!(net.server.stats().introductions, 2);
    let a = net.introductions(alice);
    assert_eq!(a.len(), 2);
    assert_ne!(a[0].1.session, a[1].1.session);
}

#[test]
fn a_connect_after_a_peer_registered_new_candidates_is_a_new_introduction_within_the_window() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let bob = net.peer("bob");
    net.run_until(secs(1));
    net.connect(alice, "bob");
    net.run_until(secs(2));
    // Alice's router grants a port mapping: she registers it at once, then asks again.
    let mapped = Candidate { kind: CandidateKind::PortMapped, addr: addr("203.0.113.9:6666") };
    let now = net.now;
    net.peers[alice].client.set_candidates(now, vec![mapped]);
    net.run_until(secs(3));
    net.connect(alice, "bob");
    net.run_until(secs(4));
    assert_eq!(net.server.stats().introductions, 2);
    let b = net.introductions(bob);
    assert_eq!(b.len(), 2);
    assert!(!b[0].1.candidates.contains(&mapped));
    assert!(b[1].1.candidates.contains(&mapped), "{:?}", b[1].1.candidates);
}

#[test]
fn registrations_expire_when_keepalives_stop() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    let bob = net.peer("bob");
    net.run_until(secs(1));
    net.peers[bob].up = false;
    net.run_until(secs(14));
    assert!(net.server_events.iter().all(|(_, e)| !matches!(e, SEvent::Expired { .. })), "not before the lifetime");
    net.run_until(secs(18));
    assert!(net.server_events.iter().any(|(_, e)| matches!(e, SEvent::Expired { name } if name.as_str() == "bob")));
    net.connect(alice, "bob");
    net.run_until(secs(19));
    assert!(net
        .events(alice)
        .contains(&CEvent::ConnectFailed { peer: name("bob"), reason: ConnectFailure::PeerNotRegistered }));
}

#[test]
fn a_silent_server_is_lost_and_found_again_after_a_restart() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    net.run_until(secs(1));
    net.server_up = false;
    net.run_until(secs(20));
    assert_eq!(net.events(alice), [CEvent::Registered { reflexive: net.peers[alice].public }, CEvent::ServerLost]);
    // A restarted server: new nonce key, empty registry.
    let config = server_config();
    net.server = Server::new(config, MemoryRegistry::new(100, net.now), [2; 32], net.now).unwrap();
    net.server_up = true;
    net.run_until(secs(24));
    assert_eq!(net.events(alice).last(), Some(&CEvent::Registered { reflexive: net.peers[alice].public }));
    assert_eq!(net.server.registry().len(), 1);
}

#[test]
fn re_registering_from_a_new_endpoint_replaces_the_old_one() {
    let mut net = Net::new(server_config());
    let alice = net.peer("alice");
    net.run_until(secs(1));
    let old = net.peers[alice].public;
    let new = addr("203.0.113.200:51000");
    net.peers[alice].public = new;
    net.run_until(secs(5));
    assert_eq!(net.events(alice)[1], CEvent::ReflexiveChanged { old, new });
    assert_eq!(net.server.registry().lookup(net.now, &name("alice")).unwrap().endpoint, new);
    assert!(net.server_events.iter().any(
        |(_, e)| matches!(e, SEvent::Registered { moved_from: Some(f), endpoint, .. } if *f == old && *endpoint == new)
    ));
}

#[test]
fn a_name_held_by_another_key_is_refused() {
    let mut net = Net::new(server_config());
    net.peer("alice");
    net.run_until(secs(1));
    // Another peer (key [2; 32]) claims "alice".
    let i = net.peer("bob");
    let local = net.peers[i].client.config().local;
    let config =
        ClientConfig::new(local, addr(SERVER), name("alice"), PublicKey([9; 32]), &NetworkSecret::new(SECRET.to_vec()));
    net.peers[i].client = Client::new(config, [77; 32], net.now);
    net.run_until(secs(3));
    assert_eq!(net.events(i), [CEvent::Refused(RefuseReason::NameTaken)]);
    assert_eq!(net.server.registry().lookup(net.now, &name("alice")).unwrap().key, PublicKey([1; 32]));
}

#[test]
fn clients_and_server_leave_other_traffic_alone() {
    let t0 = Instant::now();
    let mut server = Server::new(server_config(), MemoryRegistry::new(10, t0), [1; 32], t0).unwrap();
    let local = addr("10.0.0.1:6666");
    let config =
        ClientConfig::new(local, addr(SERVER), name("alice"), PublicKey([1; 32]), &NetworkSecret::new(SECRET.to_vec()));
    let mut client = Client::new(config, [3; 32], t0);
    let mut buf = [0u8; 64];
    let w = stun::MessageWriter::new(&mut buf, stun::MessageType::new(stun::Method::BINDING, Class::Request), &[1; 12])
        .unwrap();
    let n = w.finish();
    let binding = &buf[..n];
    assert!(!server.handle_input(t0, Received::udp(addr(SERVER), local), binding), "Binding is the responder's");
    assert!(!client.handle_input(t0, Received::udp(local, addr(SERVER)), binding));
    // A rendezvous message from a peer (not the server) on the punching socket is not the client's either.
    let mut push = [0u8; 64];
    let n = wire::writer(&mut push, wire::PUSH, Class::Request, &[2; 12]).unwrap().finish();
    assert!(!client.handle_input(t0, Received::udp(local, addr("203.0.113.9:6666")), &push[..n]));
    assert!(
        client.handle_input(t0, Received::udp(local, addr(SERVER)), &push[..n]),
        "from the server: consumed (and dropped)"
    );
    assert!(client.poll_transmit(&mut [0u8; 1500]).is_none(), "an unauthenticated push gets no answer");
    assert!(!client.handle_input(t0, Received::udp(local, addr(SERVER)), b"WireGuard-ish bytes"));
}

/// A REGISTER for `n` signed with `secret`, optionally with a nonce.
fn register_request(n: &str, secret: &[u8], id: [u8; 12], nonce: Option<&[u8]>) -> Vec<u8> {
    use wire::WriteSignal;
    let mut buf = [0u8; 1500];
    let mut w = wire::writer(&mut buf, wire::REGISTER, Class::Request, &id).unwrap();
    w.add(&Attribute::Username(n)).unwrap();
    w.add_peer_key(&PublicKey([5; 32])).unwrap();
    if let Some(nonce) = nonce {
        w.add_raw(attr::NONCE, nonce).unwrap();
    }
    let k = NetworkSecret::new(secret.to_vec()).peer_key(&name(n));
    w.add_message_integrity_sha256(k.as_bytes()).unwrap();
    w.add_fingerprint().unwrap();
    let len = w.finish();
    buf[..len].to_vec()
}

#[test]
fn memory_stays_bounded_under_a_flood_of_registrations() {
    let t0 = Instant::now();
    let mut config = server_config();
    config.capacity = 1000;
    let mut server = Server::new(config, MemoryRegistry::new(1000, t0), [1; 32], t0).unwrap();
    let mut buf = [0u8; 1500];
    let mut now = t0;
    // 5 000 authenticated peers from 5 000 sources (two requests each: the challenge, then the real one),
    // then 20 000 forged ones.
    for i in 0..5000u32 {
        now += Duration::from_micros(100);
        let source = SocketAddr::new(std::net::Ipv4Addr::from(0x0A00_0000 + i).into(), 6666);
        let n = format!("peer-{i}");
        let first = register_request(&n, SECRET, [1; 12], None);
        server.handle_input(now, Received::udp(addr(SERVER), source), &first);
        let t = server.poll_transmit(&mut buf).unwrap();
        let nonce = Message::parse(&buf[..t.len]).unwrap().raw(attr::NONCE).unwrap().value.to_vec();
        let second = register_request(&n, SECRET, [2; 12], Some(&nonce));
        server.handle_input(now, Received::udp(addr(SERVER), source), &second);
        while server.poll_transmit(&mut buf).is_some() {}
        while server.poll_event().is_some() {}
    }
    for i in 0..20_000u32 {
        let source = SocketAddr::new(std::net::Ipv4Addr::from(0x0B00_0000 + i).into(), 6666);
        let forged = register_request(&format!("x{i}"), b"wrong", [3; 12], Some(b"AAAAAAAAAAAAAAAAAAAA"));
        server.handle_input(now, Received::udp(addr(SERVER), source), &forged);
        while let Some(t) = server.poll_transmit(&mut buf) {
            assert!(t.len <= forged.len());
        }
        while server.poll_event().is_some() {}
    }
    let registry = server.registry();
    assert_eq!(registry.len(), 1000, "capacity reached, never passed");
    assert!(registry.memory_bytes() <= 2048 * registry::MEMORY_SLOT_BYTES, "{} bytes", registry.memory_bytes());
    assert_eq!(server.stats().registrations, 1000);
    assert_eq!(server.stats().unauthenticated, 20_000);
    // Once the registrations expire the room is given to newcomers.
    now += secs(16);
    let source = addr("10.200.0.1:6666");
    server.handle_input(now, Received::udp(addr(SERVER), source), &register_request("late", SECRET, [4; 12], None));
    let t = server.poll_transmit(&mut buf).unwrap();
    let nonce = Message::parse(&buf[..t.len]).unwrap().raw(attr::NONCE).unwrap().value.to_vec();
    server.handle_input(
        now,
        Received::udp(addr(SERVER), source),
        &register_request("late", SECRET, [5; 12], Some(&nonce)),
    );
    let t = server.poll_transmit(&mut buf).unwrap();
    assert_eq!(Message::parse(&buf[..t.len]).unwrap().class(), Class::Success);
    assert_eq!(server.registry().len(), 1);
}

#[test]
fn per_source_rate_limit_drops_silently() {
    let t0 = Instant::now();
    let mut server = Server::new(server_config(), MemoryRegistry::new(10, t0), [1; 32], t0).unwrap();
    let source = addr("198.51.100.1:6666");
    let req = register_request("alice", SECRET, [1; 12], None);
    let mut answered = 0;
    for _ in 0..100 {
        server.handle_input(t0, Received::udp(addr(SERVER), source), &req);
        while server.poll_transmit(&mut [0u8; 1500]).is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 40, "the burst, then silence");
    assert_eq!(server.stats().rate_limited, 60);
}

/// A PUSH for alice about bob, signed with `secret`.
fn push_request(secret: &[u8], id: [u8; 12], session: u64) -> Vec<u8> {
    use wire::WriteSignal;
    let mut buf = [0u8; 1500];
    let mut w = wire::writer(&mut buf, wire::PUSH, Class::Request, &id).unwrap();
    let raw_id = w.raw_id();
    w.add(&Attribute::Username("alice")).unwrap();
    w.add_peer_name(&name("bob")).unwrap();
    w.add_peer_key(&PublicKey([2; 32])).unwrap();
    w.add(&Attribute::XorPeerAddress(addr("203.0.113.2:40000"))).unwrap();
    w.add_candidate(&Candidate { kind: CandidateKind::Host, addr: addr("10.0.0.2:6666") }, &raw_id).unwrap();
    w.add_profile(&NatProfile::UNKNOWN).unwrap();
    w.add_session(session).unwrap();
    let k = NetworkSecret::new(secret.to_vec()).peer_key(&name("alice"));
    w.add_message_integrity_sha256(k.as_bytes()).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

fn alice_client(t0: Instant) -> Client {
    let config = ClientConfig::new(
        addr("10.0.0.1:6666"),
        addr(SERVER),
        name("alice"),
        PublicKey([1; 32]),
        &NetworkSecret::new(SECRET.to_vec()),
    );
    Client::new(config, [3; 32], t0)
}

#[test]
fn a_signed_push_is_answered_and_reported_once_per_session() {
    let t0 = Instant::now();
    let mut client = alice_client(t0);
    let from_server = Received::udp(addr("10.0.0.1:6666"), addr(SERVER));
    let mut buf = [0u8; 1500];
    for (id, session) in [([1; 12], 7), ([2; 12], 7), ([3; 12], 8)] {
        assert!(client.handle_input(t0, from_server, &push_request(SECRET, id, session)));
        let t = client.poll_transmit(&mut buf).expect("every signed push is answered");
        let m = Message::parse(&buf[..t.len]).unwrap();
        assert_eq!((m.method(), m.class(), m.transaction_id()), (wire::PUSH, Class::Success, &id));
        let k = NetworkSecret::new(SECRET.to_vec()).peer_key(&name("alice"));
        assert!(m.check_integrity_sha256(k.as_bytes()).is_ok());
    }
    let sessions: Vec<u64> = std::iter::from_fn(|| client.poll_event())
        .filter_map(|e| match e {
            CEvent::Introduced(i) => Some(i.session),
            _ => None,
        })
        .collect();
    assert_eq!(sessions, [7, 8]);
    // Signed with another secret: dropped without an answer.
    assert!(client.handle_input(t0, from_server, &push_request(b"other", [4; 12], 9)));
    assert!(client.poll_transmit(&mut buf).is_none());
    assert!(client.poll_event().is_none());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A client never answers or reports anything that is not a PUSH signed with its key, whatever the
        /// server's address sends (a mutated signed PUSH included), and never panics.
        #[test]
        fn the_client_answers_only_signed_pushes(
            flip in proptest::option::of((0usize..400, 1u8..=255)),
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            use_junk in any::<bool>(),
        ) {
            let t0 = Instant::now();
            let mut client = alice_client(t0);
            let mut data = if use_junk { junk } else { push_request(SECRET, [5; 12], 1) };
            let mut changed = false;
            if let (Some((at, x)), false) = (flip, data.is_empty()) {
                let at = at % data.len();
                data[at] ^= x;
                changed = true;
            }
            let from_server = Received::udp(addr("10.0.0.1:6666"), addr(SERVER));
            let consumed = client.handle_input(t0, from_server, &data);
            prop_assert_eq!(consumed, is_signal_message(&data));
            let answered = client.poll_transmit(&mut [0u8; 1500]).is_some();
            let introduced = client.poll_event().is_some();
            if use_junk || changed {
                // A change anywhere breaks FINGERPRINT or integrity (or the header): no answer, no event.
                prop_assert!(!answered && !introduced);
            } else {
                prop_assert!(answered && introduced);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever arrives without proof of its source (no valid integrity and nonce), the server answers
        /// at most one datagram, never larger than what it received, and stores nothing.
        #[test]
        fn unauthenticated_answers_are_never_larger_than_the_request(
            user in "[a-z]{1,32}",
            wrong in proptest::collection::vec(any::<u8>(), 0..40),
            nonce in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            connect in any::<bool>(),
            flip in proptest::option::of((0usize..200, any::<u8>())),
            id in any::<[u8; 12]>(),
        ) {
            let t0 = Instant::now();
            let mut server = Server::new(server_config(), MemoryRegistry::new(10, t0), [1; 32], t0).unwrap();
            let secret: &[u8] = if wrong.is_empty() { SECRET } else { &wrong };
            let mut req = register_request(&user, secret, id, nonce.as_deref());
            if connect {
                req[1] = (stun::MessageType::new(wire::CONNECT, Class::Request).to_u16() & 0xff) as u8;
            }
            if let Some((at, x)) = flip {
                let at = at % req.len();
                req[at] ^= x;
            }
            let source = addr("198.51.100.1:6666");
            let consumed = server.handle_input(t0, Received::udp(addr(SERVER), source), &req);
            prop_assert_eq!(consumed, is_signal_message(&req));
            let mut buf = [0u8; 1500];
            let mut answers = 0;
            while let Some(t) = server.poll_transmit(&mut buf) {
                answers += 1;
                prop_assert!(t.len <= req.len(), "{} byte answer to {} bytes", t.len, req.len());
                prop_assert_eq!(t.dst, source);
            }
            prop_assert!(answers <= 1);
            prop_assert!(server.registry().is_empty());
        }
    }
}

/// Two servers of one cluster (docs/signal.md, "Cluster"), each with its own peers, the cluster messages
/// carried between them as their encoded bytes (what stund puts through Redis), at zero delay.
mod cluster {
    use super::*;
    use crate::signal::{ClusterMessage, ClusterOut, InstanceId};

    const A: &str = "192.0.2.1:3478";
    const B: &str = "192.0.2.2:3478";

    struct Instance {
        id: InstanceId,
        addr: SocketAddr,
        server: Server<MemoryRegistry>,
    }

    struct ClusterNet {
        now: Instant,
        instances: [Instance; 2],
        /// Each peer: its client, its address (no NAT here) and its events.
        peers: Vec<(Client, Vec<CEvent>)>,
        /// (from, to, bytes) of every datagram.
        wire: Wire,
    }

    fn instance(id: &str, at: &str, cluster: bool, now: Instant) -> Instance {
        let config = ServerConfig { cluster, ..server_config() };
        let server = Server::new(config, MemoryRegistry::new(100, now), [id.len() as u8; 32], now).unwrap();
        Instance { id: InstanceId::new(id).unwrap(), addr: addr(at), server }
    }

    impl ClusterNet {
        fn new() -> ClusterNet {
            let now = Instant::now();
            let instances = [instance("stund-a", A, true, now), instance("stund-b", B, true, now)];
            ClusterNet { now, instances, peers: Vec::new(), wire: Vec::new() }
        }

        /// A peer named `n` with key [`key`; 32] registering at `server`.
        fn peer(&mut self, n: &str, key: u8, server: &str) -> usize {
            let i = self.peers.len();
            let local = SocketAddr::new([203, 0, 113, i as u8 + 1].into(), 40000);
            let secret = NetworkSecret::new(SECRET.to_vec());
            let config = ClientConfig::new(local, addr(server), name(n), PublicKey([key; 32]), &secret);
            self.peers.push((Client::new(config, [i as u8 + 50; 32], self.now), Vec::new()));
            i
        }

        /// Carries what each side has until quiet: cluster messages first (as stund does).
        fn deliver(&mut self) {
            let mut buf = [0u8; 1500];
            for _ in 0..1000 {
                let mut moved = false;
                for s in 0..2 {
                    while let Some(out) = self.instances[s].server.poll_cluster() {
                        moved = true;
                        let bytes = out.message().encode(&self.instances[s].id);
                        let targets: Vec<usize> = match &out {
                            ClusterOut::Registered { .. } => vec![1 - s],
                            ClusterOut::Introduce { owner, .. } => {
                                (0..2).filter(|&o| self.instances[o].id == *owner).collect()
                            }
                        };
                        for o in targets {
                            let now = self.now;
                            let server = &mut self.instances[o].server;
                            match ClusterMessage::decode(&bytes).unwrap() {
                                ClusterMessage::Registration { registration, lifetime } => {
                                    let _ = server.apply_remote(now, &registration, lifetime);
                                }
                                ClusterMessage::Introduction { to, about, session } => {
                                    server.introduce_remote(now, &to, &about, session);
                                }
                            }
                        }
                    }
                    while let Some(t) = self.instances[s].server.poll_transmit(&mut buf) {
                        moved = true;
                        assert_eq!(t.local, self.instances[s].addr, "sent from the socket it serves on");
                        self.wire.push((t.local, t.dst, buf[..t.len].to_vec()));
                        if let Some((c, _)) = self.peers.iter_mut().find(|(c, _)| c.config().local == t.dst) {
                            assert!(c.handle_input(self.now, Received::udp(t.dst, t.local), &buf[..t.len]));
                        }
                    }
                }
                for (c, events) in &mut self.peers {
                    while let Some(t) = c.poll_transmit(&mut buf) {
                        moved = true;
                        self.wire.push((t.local, t.dst, buf[..t.len].to_vec()));
                        if let Some(s) = self.instances.iter_mut().find(|s| s.addr == t.dst) {
                            s.server.handle_input(self.now, Received::udp(t.dst, t.local), &buf[..t.len]);
                        }
                    }
                    while let Some(e) = c.poll_event() {
                        events.push(e);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("the cluster never went quiet");
        }

        /// Advances time by `d` in 100 ms steps, running every timer.
        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += Duration::from_millis(100);
                let now = self.now;
                for s in &mut self.instances {
                    s.server.handle_timeout(now);
                }
                for (c, _) in &mut self.peers {
                    c.handle_timeout(now);
                }
                self.deliver();
            }
        }

        fn pushes_to(&self, peer: usize) -> Vec<SocketAddr> {
            let local = self.peers[peer].0.config().local;
            self.wire
                .iter()
                .filter(|(_, d, b)| {
                    *d == local
                        && Message::parse(b).is_ok_and(|m| m.method() == wire::PUSH && m.class() == Class::Request)
                })
                .map(|(from, _, _)| *from)
                .collect()
        }

        fn introductions(&self, peer: usize) -> Vec<Introduction> {
            self.peers[peer]
                .1
                .iter()
                .filter_map(|e| match e {
                    CEvent::Introduced(i) => Some(i.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn peers_registered_at_two_instances_are_introduced_each_by_its_own() {
        let mut net = ClusterNet::new();
        let alice = net.peer("alice", 1, A);
        let bob = net.peer("bob", 2, B);
        net.run(secs(1));
        let (a, b) = (&net.instances[0].server, &net.instances[1].server);
        let bob_at_a = a.registry().lookup(net.now, &name("bob")).expect("A's replica knows bob");
        assert_eq!(bob_at_a.owner, Some(InstanceId::new("stund-b").unwrap()));
        assert_eq!(bob_at_a.local, addr(B), "registered on B's socket");
        assert_eq!(b.registry().lookup(net.now, &name("alice")).unwrap().owner.unwrap().as_str(), "stund-a");
        assert_eq!(a.registry().lookup(net.now, &name("alice")).unwrap().owner, None, "alice is A's own");

        let now = net.now;
        net.peers[alice].0.connect(now, &name("bob"));
        net.deliver();
        assert_eq!(net.pushes_to(alice), [addr(A)], "alice's push leaves A, where she registered");
        assert_eq!(net.pushes_to(bob), [addr(B)], "bob's push leaves B, where he registered");
        let (to_alice, to_bob) = (net.introductions(alice), net.introductions(bob));
        assert_eq!((to_alice.len(), to_bob.len()), (1, 1), "both introduced in the same instant");
        assert_eq!(to_alice[0].peer, name("bob"));
        assert_eq!(to_alice[0].key, PublicKey([2; 32]));
        assert_eq!(to_bob[0].peer, name("alice"));
        assert_eq!(to_bob[0].session, to_alice[0].session, "one session");
        let (a, b) = (net.instances[0].server.stats(), net.instances[1].server.stats());
        assert_eq!((a.pushes_acked, b.pushes_acked), (1, 1), "each owner got its peer's answer");
        assert_eq!((a.introductions, b.remote_introductions), (1, 1));

        // A repeated CONNECT within the window is the same introduction; bob's push is not restarted.
        let now = net.now;
        net.peers[alice].0.connect(now, &name("bob"));
        net.run(secs(1));
        assert!(net.introductions(bob).iter().all(|i| i.session == to_bob[0].session));
    }

    #[test]
    fn a_name_is_pinned_to_its_key_across_instances() {
        let mut net = ClusterNet::new();
        net.peer("alice", 1, A);
        net.run(secs(1));
        let thief = net.peer("alice", 9, B);
        net.run(secs(1));
        assert_eq!(net.peers[thief].1, [CEvent::Refused(RefuseReason::NameTaken)]);
        assert_eq!(net.instances[1].server.registry().lookup(net.now, &name("alice")).unwrap().key, PublicKey([1; 32]));
    }

    #[test]
    fn a_peer_that_moves_to_another_instance_is_pushed_from_there() {
        let mut net = ClusterNet::new();
        let alice = net.peer("alice", 1, A);
        net.peer("bob", 2, A);
        net.run(secs(1));
        // alice's daemon fails over to B (same key, same endpoint).
        let local = net.peers[alice].0.config().local;
        let secret = NetworkSecret::new(SECRET.to_vec());
        let config = ClientConfig::new(local, addr(B), name("alice"), PublicKey([1; 32]), &secret);
        net.peers[alice].0 = Client::new(config, [99; 32], net.now);
        net.run(secs(1));
        assert_eq!(
            net.instances[0].server.registry().lookup(net.now, &name("alice")).unwrap().owner,
            None,
            "A keeps her while its registration is fresh (she may be registered at both)"
        );
        // Her registration at A ages past a third of its lifetime; B's next announcement (each refresh) wins.
        net.run(secs(6));
        let at_a = net.instances[0].server.registry().lookup(net.now, &name("alice")).unwrap();
        assert_eq!(at_a.owner.unwrap().as_str(), "stund-b");
        net.wire.clear();
        let now = net.now;
        net.peers[1].0.connect(now, &name("alice"));
        net.deliver();
        assert_eq!(net.pushes_to(alice), [addr(B)]);
        assert_eq!(net.pushes_to(1), [addr(A)]);
    }

    #[test]
    fn a_peer_registered_at_both_instances_stays_local_at_each_until_it_stops_refreshing() {
        let mut net = ClusterNet::new();
        net.peer("alice", 1, A);
        net.run(secs(1));
        let mut at_b = net.instances[0].server.registry().lookup(net.now, &name("alice")).unwrap();
        at_b.owner = Some(InstanceId::new("stund-b").unwrap());
        at_b.local = addr(B);
        // alice also registered at B (same key), and B says so: A keeps her as its own while she refreshes.
        let a = &mut net.instances[0].server;
        assert_eq!(a.apply_remote(net.now, &at_b, secs(15)), Ok(RegisterOutcome::Refreshed));
        assert_eq!(a.registry().lookup(net.now, &name("alice")).unwrap().owner, None);
        // She stops refreshing at A (moved to B): after a third of her lifetime B's next announcement wins.
        net.peers.clear();
        net.run(secs(6));
        let a = &mut net.instances[0].server;
        assert!(a.apply_remote(net.now, &at_b, secs(15)).is_ok());
        assert_eq!(a.registry().lookup(net.now, &name("alice")).unwrap().owner.unwrap().as_str(), "stund-b");
        assert_eq!(a.registry().lookup(net.now, &name("alice")).unwrap().local, addr(B));
    }

    #[test]
    fn remote_entries_expire_with_their_lifetime_and_lost_introductions_send_nothing() {
        let mut net = ClusterNet::new();
        net.peer("alice", 1, A);
        net.run(secs(1));
        assert_eq!(net.instances[1].server.registry().len(), 1);
        // A goes silent (its peers are gone): B's replica forgets alice once her lifetime is over.
        net.peers.clear();
        net.run(secs(16));
        assert!(net.instances[1].server.registry().is_empty());
        let b = &mut net.instances[1].server;
        let stranger = b.registry().lookup(net.now, &name("alice"));
        assert!(stranger.is_none());
        let about = Registration {
            name: name("carol"),
            key: PublicKey([3; 32]),
            endpoint: addr("203.0.113.9:1"),
            local: addr(A),
            candidates: Vec::new(),
            profile: NatProfile::UNKNOWN,
            owner: Some(InstanceId::new("stund-a").unwrap()),
        };
        assert!(!b.introduce_remote(net.now, &name("alice"), &about, 7));
        let mut buf = [0u8; 1500];
        assert!(b.poll_transmit(&mut buf).is_none(), "nothing to push to");
        assert_eq!(b.stats().remote_introductions_lost, 1);
        assert!(
            !b.poll_event().is_some_and(|e| matches!(e, SEvent::Expired { .. })),
            "a remote registration's expiry is not this server's event"
        );
    }

    #[test]
    fn a_server_outside_a_cluster_owes_nothing_to_others() {
        let now = Instant::now();
        let mut net = ClusterNet::new();
        net.instances[0] = instance("stund-a", A, false, now);
        net.now = now;
        net.peer("alice", 1, A);
        net.run(secs(1));
        assert!(net.instances[0].server.poll_cluster().is_none());
        assert!(net.instances[1].server.registry().is_empty());
    }
}

//! Agent tests on a bare wire (no NATs): two or three agents, datagrams delivered after a fixed delay unless a
//! rule drops them. The NAT matrix runs through the simulator (tests/sim_punch.rs).

use super::*;
use crate::identity::{PublicKey, SecretKey};
use crate::net::{Engine, Received};
use crate::signal::{Candidate, CandidateKind, Introduction, NatProfile, PeerName};
use crate::stun::{Attribute, Class, Message, MessageType, MessageWriter, Method};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const A: &str = "198.51.100.1:6666";
const B: &str = "203.0.113.2:6666";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn name(s: &str) -> PeerName {
    PeerName::new(s).unwrap()
}

struct Node {
    agent: Agent,
    addrs: Vec<SocketAddr>,
    events: Vec<AgentEvent>,
}

type Rule = Box<dyn FnMut(SocketAddr, SocketAddr) -> bool>;

/// A wire between agents: `deliver(src, dst)` false drops the datagram.
struct Wire {
    now: Instant,
    nodes: Vec<Node>,
    delay: Duration,
    flight: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    rule: Rule,
    /// Datagrams some node refused (handle_input false).
    refused: usize,
}

impl Wire {
    fn new(nodes: Vec<Node>, now: Instant) -> Wire {
        Wire {
            now,
            nodes,
            delay: Duration::from_millis(10),
            flight: Vec::new(),
            rule: Box::new(|_, _| true),
            refused: 0,
        }
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 1500];
        for n in &mut self.nodes {
            while let Some(t) = n.agent.poll_transmit(&mut buf) {
                // A node with a second (public) address sends to public destinations from it: a one-to-one
                // NAT in front of its LAN address.
                let public = !t.dst.ip().to_string().starts_with("192.168.");
                let src = if public && n.addrs.len() > 1 { n.addrs[1] } else { t.local };
                if (self.rule)(src, t.dst) {
                    self.flight.push((self.now + self.delay, src, t.dst, buf[..t.len].to_vec()));
                }
            }
            while let Some(e) = n.agent.poll_event() {
                n.events.push(e);
            }
        }
    }

    fn step(&mut self, limit: Instant) -> bool {
        self.drain();
        let timer = self.nodes.iter().filter_map(|n| n.agent.poll_timeout()).min();
        let arrival = self.flight.iter().map(|f| f.0).min();
        let Some(next) = [timer, arrival].into_iter().flatten().min() else { return false };
        if next > limit {
            self.now = limit;
            return false;
        }
        assert!(next >= self.now, "a timer in the past");
        self.now = next;
        let due: Vec<_> = {
            let (due, rest): (Vec<_>, Vec<_>) = self.flight.drain(..).partition(|f| f.0 <= next);
            self.flight = rest;
            due
        };
        for (_, src, dst, data) in due {
            if let Some(n) = self.nodes.iter_mut().find(|n| n.addrs.contains(&dst)) {
                if !n.agent.handle_input(next, Received::udp(n.addrs[0], src), &data) {
                    self.refused += 1;
                }
            }
        }
        for n in &mut self.nodes {
            if n.agent.poll_timeout().is_some_and(|t| t <= next) {
                n.agent.handle_timeout(next);
            }
        }
        true
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        for _ in 0..200_000 {
            if !self.step(limit) {
                self.drain();
                return;
            }
        }
        panic!("step limit");
    }

    fn run_until(&mut self, d: Duration, mut done: impl FnMut(&Wire) -> bool) -> Option<Duration> {
        let start = self.now;
        let limit = self.now + d;
        for _ in 0..200_000 {
            self.drain();
            if done(self) {
                return Some(self.now - start);
            }
            if !self.step(limit) {
                return None;
            }
        }
        panic!("step limit");
    }

    fn opened(&self, i: usize) -> bool {
        self.nodes[i].events.iter().any(|e| matches!(e, AgentEvent::PathOpened { .. }))
    }
}

/// An agent on a bare wire: no primers (nothing here is a router for their TTL to die at; see
/// `primers_go_first_with_their_ttl_on_the_pairs_through_nats`).
fn agent(me: &str, key: &SecretKey, local: &str) -> Agent {
    let seed = key.public().0;
    let mut config = AgentConfig::new(addr(local), name(me), SecretKey::from_base64(&key.to_base64()).unwrap());
    config.primer_ttl = None;
    Agent::new(config, seed)
}

fn intro(peer: &str, key: PublicKey, reflexive: &str, host: Option<&str>, session: u64) -> Introduction {
    let mut candidates = vec![Candidate { kind: CandidateKind::Reflexive, addr: addr(reflexive) }];
    if let Some(h) = host {
        candidates.push(Candidate { kind: CandidateKind::Host, addr: addr(h) });
    }
    Introduction {
        peer: name(peer),
        key,
        reflexive: addr(reflexive),
        candidates,
        profile: NatProfile::UNKNOWN,
        session,
    }
}

/// Alice at A and Bob at B, each configured with the other; not yet introduced.
fn pair_of_agents(t0: Instant) -> (Wire, SecretKey, SecretKey) {
    let ka = SecretKey::from_seed([1; 32]);
    let kb = SecretKey::from_seed([2; 32]);
    let mut a = agent("alice", &ka, A);
    let mut b = agent("bob", &kb, B);
    a.add_peer(name("bob"), kb.public()).unwrap();
    b.add_peer(name("alice"), ka.public()).unwrap();
    let wire = Wire::new(
        vec![
            Node { agent: a, addrs: vec![addr(A)], events: vec![] },
            Node { agent: b, addrs: vec![addr(B)], events: vec![] },
        ],
        t0,
    );
    (wire, ka, kb)
}

fn introduce_both(w: &mut Wire, ka: &SecretKey, kb: &SecretKey, session: u64) {
    let now = w.now;
    w.nodes[0].agent.introduce(now, intro("bob", kb.public(), B, None, session)).unwrap();
    w.nodes[1].agent.introduce(now, intro("alice", ka.public(), A, None, session)).unwrap();
}

#[test]
fn two_public_peers_open_a_direct_path_in_one_round_trip() {
    let t0 = Instant::now();
    let (mut w, ka, kb) = pair_of_agents(t0);
    introduce_both(&mut w, &ka, &kb, 1);
    let took = w.run_until(Duration::from_secs(5), |w| w.opened(0) && w.opened(1)).expect("both paths open");
    assert!(took <= Duration::from_millis(25), "one round trip (20 ms), took {took:?}");
    for (i, remote) in [(0, B), (1, A)] {
        let AgentEvent::PathOpened { kind, remote: r, rtt, .. } =
            w.nodes[i].events.iter().find(|e| matches!(e, AgentEvent::PathOpened { .. })).unwrap().clone()
        else {
            unreachable!()
        };
        assert_eq!((kind, r), (PathKind::Direct, addr(remote)));
        assert_eq!(rtt, Some(Duration::from_millis(20)));
    }
    let st = &w.nodes[0].agent.status()[0];
    assert_eq!((st.phase, st.path, st.remote), (Phase::Connected, PathKind::Direct, Some(addr(B))));
    assert_eq!(st.prediction, Some(Prediction::Unknown));
    assert_eq!(w.refused, 0, "every check and answer was taken by the agents");
    // Keepalives keep the path; the RTT stays measured.
    w.run_for(Duration::from_secs(30));
    let st = &w.nodes[0].agent.status()[0];
    assert_eq!(st.path, PathKind::Direct);
    assert_eq!(st.rtt, Some(Duration::from_millis(20)));
    assert!(st.last_keepalive.is_some_and(|t| w.now - t <= Duration::from_secs(3)));
    assert!(!w.nodes[0].events.iter().any(|e| matches!(e, AgentEvent::PathDied { .. })));
}

#[test]
fn one_sided_introduction_still_connects_by_triggered_checks() {
    let t0 = Instant::now();
    let (mut w, _ka, kb) = pair_of_agents(t0);
    // Only Alice's push arrived: Bob answers her checks and checks back (peer-reflexive pair).
    w.nodes[0].agent.introduce(t0, intro("bob", kb.public(), B, None, 1)).unwrap();
    w.run_until(Duration::from_secs(5), |w| w.opened(0) && w.opened(1)).expect("both paths open");
    let st = &w.nodes[1].agent.status()[0];
    assert_eq!(st.remote_kind, Some(RemoteKind::PeerReflexive));
}

#[test]
fn wrong_key_gets_no_path_and_no_answer() {
    let t0 = Instant::now();
    let ka = SecretKey::from_seed([1; 32]);
    let kb = SecretKey::from_seed([2; 32]);
    let mallory = SecretKey::from_seed([3; 32]);
    let mut a = agent("alice", &ka, A);
    let mut b = agent("bob", &kb, B);
    a.add_peer(name("bob"), kb.public()).unwrap();
    // Bob trusts another key for "alice".
    b.add_peer(name("alice"), mallory.public()).unwrap();
    let mut w = Wire::new(
        vec![
            Node { agent: a, addrs: vec![addr(A)], events: vec![] },
            Node { agent: b, addrs: vec![addr(B)], events: vec![] },
        ],
        t0,
    );
    w.nodes[0].agent.introduce(t0, intro("bob", kb.public(), B, None, 1)).unwrap();
    w.nodes[1].agent.introduce(t0, intro("alice", mallory.public(), A, None, 1)).unwrap();
    w.run_for(Duration::from_secs(10));
    assert!(!w.opened(0) && !w.opened(1));
    assert_eq!(w.refused, 0, "checks are consumed (dropped), not offered to other engines");
    assert!(w.nodes[0].events.iter().any(|e| matches!(e, AgentEvent::NeedsRelay { .. })));
}

#[test]
fn hostile_rendezvous_key_swap_and_forged_endpoint_lead_nowhere() {
    let t0 = Instant::now();
    let (mut w, _ka, kb) = pair_of_agents(t0);
    let mallory = SecretKey::from_seed([3; 32]);
    // A key swap is refused outright.
    let err = w.nodes[0].agent.introduce(t0, intro("bob", mallory.public(), B, None, 1)).unwrap_err();
    assert!(matches!(err, PeerError::KeyMismatch { .. }));
    assert_eq!(
        w.nodes[0].agent.introduce(t0, intro("carol", kb.public(), B, None, 1)).unwrap_err(),
        PeerError::Unknown(name("carol"))
    );
    // A forged endpoint: Mallory at M answers Alice's checks, with her own key and with no integrity.
    const M: &str = "192.0.2.66:6666";
    let mut m = agent("mallory", &mallory, M);
    m.add_peer(name("alice"), w.nodes[0].agent.public_key()).unwrap();
    w.nodes.push(Node { agent: m, addrs: vec![addr(M)], events: vec![] });
    w.nodes[0].agent.introduce(t0, intro("bob", kb.public(), M, None, 2)).unwrap();
    w.run_for(Duration::from_secs(10));
    assert!(!w.opened(0), "nothing from Mallory verifies");

    // A bare answer to one of Alice's checks with the right transaction id but no integrity is consumed and
    // ignored.
    let mut buf = [0u8; 256];
    let mut agent = agent("alice", &SecretKey::from_seed([1; 32]), A);
    agent.add_peer(name("bob"), kb.public()).unwrap();
    agent.introduce(t0, intro("bob", kb.public(), M, None, 1)).unwrap();
    let t = agent.poll_transmit(&mut buf).unwrap();
    let req = Message::parse(&buf[..t.len]).unwrap();
    let mut out = [0u8; 128];
    let mut wr =
        MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Success), req.transaction_id()).unwrap();
    wr.add(&Attribute::XorMappedAddress(addr(A))).unwrap();
    wr.add_fingerprint().unwrap();
    let n = wr.finish();
    assert!(agent.handle_input(t0, Received::udp(addr(A), addr(M)), &out[..n]));
    assert!(agent.poll_event().is_some_and(|e| matches!(e, AgentEvent::Prediction { .. })));
    assert_eq!(agent.poll_event(), None);
    assert_eq!(agent.status()[0].path, PathKind::None);
}

#[test]
fn primers_go_first_with_their_ttl_on_the_pairs_through_nats() {
    let t0 = Instant::now();
    let kb = SecretKey::from_seed([2; 32]);
    let config = AgentConfig::new(addr(A), name("alice"), SecretKey::from_seed([1; 32]));
    let lead = config.primer_lead;
    let mut a = Agent::new(config, [5; 32]);
    a.add_peer(name("bob"), kb.public()).unwrap();
    a.introduce(t0, intro("bob", kb.public(), B, Some("192.168.7.2:6666"), 1)).unwrap();
    let mut buf = [0u8; 256];
    // At once: one primer, to the reflexive candidate only (the host one has no NAT in between).
    let mut sent = Vec::new();
    while let Some(t) = a.poll_transmit(&mut buf) {
        sent.push(t);
    }
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].dst, sent[0].ttl), (addr(B), Some(DEFAULT_PRIMER_TTL)));
    let primer = Message::parse(&buf[..sent[0].len]).unwrap();
    assert!(auth::check_shape(&primer).is_some(), "a primer is a check: useful if it does arrive");
    // The real checks (default TTL) wait for the lead.
    assert_eq!(a.poll_timeout(), Some(t0 + lead));
    a.handle_timeout(t0 + lead);
    let t = a.poll_transmit(&mut buf).expect("the first check");
    assert_eq!(t.ttl, None);
}

#[test]
fn other_stun_traffic_is_not_ours() {
    let t0 = Instant::now();
    let mut a = agent("alice", &SecretKey::from_seed([1; 32]), A);
    let from = Received::udp(addr(A), addr("192.0.2.1:3478"));
    // A plain Binding request (someone's STUN query), an answer to a transaction we never started, garbage.
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[1; 12]).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    assert!(!a.handle_input(t0, from, &buf[..n]));
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Success), &[1; 12]).unwrap();
    w.add(&Attribute::XorMappedAddress(addr(A))).unwrap();
    let n = w.finish();
    assert!(!a.handle_input(t0, from, &buf[..n]));
    assert!(!a.handle_input(t0, from, b"\x01\x00\x00\x00 not stun at all"));
}

#[test]
fn lan_pair_wins_over_a_public_path_that_answered_first() {
    let t0 = Instant::now();
    let ka = SecretKey::from_seed([1; 32]);
    let kb = SecretKey::from_seed([2; 32]);
    const AL: &str = "192.168.1.10:6666";
    const BL: &str = "192.168.1.20:6666";
    // Each agent's socket answers to its LAN and public address (as a wildcard-bound socket would).
    let mut a = agent("alice", &ka, AL);
    let mut b = agent("bob", &kb, BL);
    a.add_peer(name("bob"), kb.public()).unwrap();
    b.add_peer(name("alice"), ka.public()).unwrap();
    let mut w = Wire::new(
        vec![
            Node { agent: a, addrs: vec![addr(AL), addr(A)], events: vec![] },
            Node { agent: b, addrs: vec![addr(BL), addr(B)], events: vec![] },
        ],
        t0,
    );
    // The LAN drops the first 150 ms of traffic, so the public pair answers first.
    let lan_open_at = t0 + Duration::from_millis(150);
    let clock = std::rc::Rc::new(std::cell::Cell::new(t0));
    let c = clock.clone();
    w.rule = Box::new(move |_src, dst| !(dst.ip().to_string().starts_with("192.168.") && c.get() < lan_open_at));
    w.nodes[0].agent.introduce(t0, intro("bob", kb.public(), B, Some(BL), 1)).unwrap();
    w.nodes[1].agent.introduce(t0, intro("alice", ka.public(), A, Some(AL), 1)).unwrap();
    for _ in 0..100_000 {
        clock.set(w.now);
        if !w.step(t0 + Duration::from_secs(5)) {
            break;
        }
    }
    w.drain();
    let ev = &w.nodes[0].events;
    assert!(ev.iter().any(|e| matches!(e, AgentEvent::PathOpened { kind: PathKind::Direct, .. })), "{ev:?}");
    assert!(
        ev.iter().any(|e| matches!(e, AgentEvent::PathChanged { kind: PathKind::Lan, why: SwitchReason::Lan, .. })),
        "{ev:?}"
    );
    assert_eq!(w.nodes[0].agent.status()[0].path, PathKind::Lan);
}

#[test]
fn silent_path_dies_then_re_punches_after_backoff() {
    let t0 = Instant::now();
    let (mut w, ka, kb) = pair_of_agents(t0);
    introduce_both(&mut w, &ka, &kb, 1);
    w.run_until(Duration::from_secs(5), |w| w.opened(0) && w.opened(1)).unwrap();
    let cut_at = w.now;
    let cut = std::rc::Rc::new(std::cell::Cell::new(true));
    let c = cut.clone();
    w.rule = Box::new(move |_, _| !c.get());
    let died = w
        .run_until(Duration::from_secs(30), |w| {
            w.nodes[0].events.iter().any(|e| matches!(e, AgentEvent::PathDied { .. }))
        })
        .expect("the path dies");
    // Dead after 3 keepalive intervals without an answer (9 s after the last one answered).
    assert!(died <= Duration::from_secs(10) && died >= Duration::from_secs(6), "{died:?}");
    assert_eq!(w.nodes[0].agent.status()[0].path, PathKind::None);
    // The link comes back: the agent re-punches the same candidates by itself.
    cut.set(false);
    for n in &mut w.nodes {
        n.events.clear();
    }
    let back = w.run_until(Duration::from_secs(30), |w| w.opened(0) && w.opened(1)).expect("re-punched");
    assert!(w.now - cut_at < Duration::from_secs(15), "{back:?}");
}

#[test]
fn reflexive_change_re_punches_at_once_and_repeated_pushes_are_idempotent() {
    let t0 = Instant::now();
    let (mut w, ka, kb) = pair_of_agents(t0);
    introduce_both(&mut w, &ka, &kb, 7);
    w.run_until(Duration::from_secs(5), |w| w.opened(0)).unwrap();
    w.run_for(Duration::from_secs(1));
    // The same push again: nothing restarts.
    let now = w.now;
    w.nodes[0].agent.introduce(now, intro("bob", kb.public(), B, None, 7)).unwrap();
    let mut buf = [0u8; 256];
    assert!(w.nodes[0].agent.poll_transmit(&mut buf).is_none(), "no new checks for a repeated push");
    // Our public endpoint moved: checks go out at once (the path stays until a check says otherwise).
    w.nodes[0].agent.local_reflexive_changed(now, addr("198.51.100.1:7777"));
    assert!(w.nodes[0].agent.poll_transmit(&mut buf).is_some(), "a check right away");
    assert_eq!(w.nodes[0].agent.status()[0].path, PathKind::Direct);
}

#[test]
fn peer_configuration_errors() {
    let ka = SecretKey::from_seed([1; 32]);
    let mut a = agent("alice", &ka, A);
    let kb = SecretKey::from_seed([2; 32]).public();
    a.add_peer(name("bob"), kb).unwrap();
    assert_eq!(a.add_peer(name("bob"), SecretKey::from_seed([4; 32]).public()), Err(PeerError::Duplicate(name("bob"))));
    assert_eq!(a.add_peer(name("me"), ka.public()), Err(PeerError::OwnKey(name("me"))));
    assert_eq!(a.add_peer(name("zero"), PublicKey([0; 32])), Err(PeerError::WeakKey(name("zero"))));
}

#[test]
fn recheck_after_a_suspend_ends_a_dead_path_after_one_keepalive() {
    let t0 = Instant::now();
    let (mut w, ka, kb) = pair_of_agents(t0);
    introduce_both(&mut w, &ka, &kb, 1);
    w.run_until(Duration::from_secs(5), |w| w.opened(0) && w.opened(1)).unwrap();
    // The host slept and the NAT forgot us meanwhile: nothing gets through any more.
    w.rule = Box::new(|_, _| false);
    let now = w.now;
    w.nodes[0].agent.recheck(now);
    let died = w
        .run_until(Duration::from_secs(10), |w| {
            w.nodes[0].events.iter().any(|e| matches!(e, AgentEvent::PathDied { .. }))
        })
        .expect("the path dies");
    // One keepalive transaction's schedule (2.6 s), not three keepalive intervals.
    assert!(died <= Duration::from_secs(3), "{died:?}");
}

mod hostile_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives, the agent neither panics nor answers anything unverified, and it only claims STUN
        /// Binding messages.
        #[test]
        fn arbitrary_datagrams_are_never_answered(data in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..200) {
            let t0 = Instant::now();
            let kb = SecretKey::from_seed([2; 32]);
            let mut a = agent("alice", &SecretKey::from_seed([1; 32]), A);
            a.add_peer(name("bob"), kb.public()).unwrap();
            let from = Received::udp(addr(A), addr(B));
            let taken = a.handle_input(t0, from, &data);
            prop_assert!(!taken || crate::stun::looks_like_stun(&data));
            prop_assert!(a.poll_transmit(&mut [0u8; 1500]).is_none());
            // A real check from Bob with one byte flipped: consumed, never answered, no path.
            let mut b = agent("bob", &kb, B);
            b.add_peer(name("alice"), SecretKey::from_seed([1; 32]).public()).unwrap();
            b.introduce(t0, intro("alice", SecretKey::from_seed([1; 32]).public(), A, None, 1)).unwrap();
            let mut buf = [0u8; 256];
            let t = b.poll_transmit(&mut buf).unwrap();
            let mut check = buf[..t.len].to_vec();
            let i = 20 + flip % (check.len() - 20);
            check[i] ^= 0x01;
            a.handle_input(t0, from, &check);
            prop_assert!(a.poll_transmit(&mut [0u8; 1500]).is_none());
            prop_assert_eq!(a.status()[0].path, PathKind::None);
        }
    }
}

//! Two punchd nodes (`punch::Node`: rendezvous client + punch agent on one socket) behind their own NATs in
//! the simulated network (docs/simulator.md), with stund's engines on the internet (the rendezvous
//! `signal::Server` and the Binding `Responder` on one socket, told apart as stund does). Cone NATs connect
//! directly; two symmetric NATs need a relay; a wrong pinned key opens nothing; a NAT that forgets its
//! mappings gets its path back within two keepalives plus one round trip.

use holepunch::identity::SecretKey;
use holepunch::nat::behaviour::{Allocation, Filtering, Mapping};
use holepunch::net::{Engine, Received, Transmit};
use holepunch::punch::{AgentEvent, Node, NodeConfig, NodeEvent, PathKind, Prediction};
use holepunch::server::{Responder, ServerConfig as StunConfig};
use holepunch::signal::{is_signal_message, MemoryRegistry, NatProfile, NetworkSecret, PeerName, Server, ServerConfig};
use holepunch::sim::{EngineId, Fate, Link, NatConfig, NatId, Sim};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const SERVER: &str = "192.0.2.1:3478";
const KEEPALIVE: Duration = Duration::from_secs(3);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn name(s: &str) -> PeerName {
    PeerName::new(s).unwrap()
}

/// stund's UDP socket: rendezvous messages to the signal server, everything else to the Binding responder.
struct Stund {
    signal: Server<MemoryRegistry>,
    binding: Responder,
}

impl Engine for Stund {
    type Event = ();

    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if is_signal_message(data) {
            self.signal.handle_input(now, input, data)
        } else {
            self.binding.handle_input(now, input, data)
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.signal.handle_timeout(now);
        self.binding.handle_timeout(now);
        while self.signal.poll_event().is_some() {}
        while self.binding.poll_event().is_some() {}
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.signal.poll_transmit(buf).or_else(|| self.binding.poll_transmit(buf))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.signal.poll_timeout(), self.binding.poll_timeout()].into_iter().flatten().min()
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

struct World {
    sim: Sim,
    alice: EngineId<Node>,
    bob: EngineId<Node>,
    alice_nat: NatId,
}

/// Alice behind `a`, bob behind `b`; each pins the other's key, except that alice pins `bob_key_seen` for
/// bob when given (a wrong key).
fn world(seed: u8, a: NatConfig, b: NatConfig, bob_key_seen: Option<SecretKey>) -> World {
    world_on(seed, a, b, bob_key_seen, Link::new(Duration::from_millis(20)))
}

fn world_on(seed: u8, a: NatConfig, b: NatConfig, bob_key_seen: Option<SecretKey>, uplink: Link) -> World {
    world_with_servers(seed, a, b, bob_key_seen, uplink, &[SERVER])
}

/// As [`world_on`], with a stund (its own registry) at each of `servers`; the peers know them all, in order.
fn world_with_servers(
    seed: u8,
    a: NatConfig,
    b: NatConfig,
    bob_key_seen: Option<SecretKey>,
    uplink: Link,
    servers: &[&str],
) -> World {
    let mut sim = Sim::new([seed; 32]);
    let secret = NetworkSecret::new(&b"simulated network secret"[..]);
    let now = sim.now();
    for server in servers {
        let server = sa(server);
        let signal =
            Server::new(ServerConfig::new(secret.clone()), MemoryRegistry::new(1000, now), sim.fork_seed(), now)
                .unwrap();
        let binding = Responder::new(StunConfig::plain(server.ip(), server.port()), None, 7, now).unwrap();
        let host = sim.add_host(Sim::INTERNET, &[server.ip()], Link::new(Duration::from_millis(5))).unwrap();
        sim.add_engine(host, &[server], Stund { signal, binding }).unwrap();
    }

    let (alice_nat, alice_lan) = sim.add_nat(Sim::INTERNET, ip("203.0.113.1"), a, uplink).unwrap();
    let (_bob_nat, bob_lan) = sim.add_nat(Sim::INTERNET, ip("198.51.100.1"), b, uplink).unwrap();
    let keys = [SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32])];
    let bob_pinned = bob_key_seen.map_or(keys[1].public(), |k| k.public());
    let node = |sim: &mut Sim, lan, nat: NatConfig, host_ip: &str, me: &str, seed: u8, peer: (&str, _)| {
        let host = sim.add_host(lan, &[ip(host_ip)], Link::default()).unwrap();
        let local = SocketAddr::new(ip(host_ip), 6666);
        let mut config = NodeConfig::new(
            local,
            sa(servers[0]),
            name(me),
            SecretKey::from_seed([seed; 32]),
            &secret,
            vec![(name(peer.0), peer.1)],
        )
        .with_keepalive(KEEPALIVE);
        config.fallback_servers = servers[1..].iter().map(|s| sa(s)).collect();
        config.host_candidates = vec![local];
        // What the diagnosis at start would have found.
        config.profile = NatProfile {
            mapping: nat.mapping,
            filtering: nat.filtering,
            allocation: nat.allocation,
            ..NatProfile::UNKNOWN
        };
        let node = Node::new(config, sim.fork_seed(), sim.now()).unwrap();
        sim.add_engine(host, &[local], node).unwrap()
    };
    let alice = node(&mut sim, alice_lan, a, "192.168.1.10", "alice", 1, ("bob", bob_pinned));
    let bob = node(&mut sim, bob_lan, b, "10.0.0.10", "bob", 2, ("alice", keys[0].public()));
    World { sim, alice, bob, alice_nat }
}

fn cone(filtering: Filtering) -> NatConfig {
    NatConfig::new(Mapping::EndpointIndependent, filtering)
}

fn symmetric() -> NatConfig {
    NatConfig::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)
        .with_allocation(Allocation::Random)
}

/// Both registered, then alice connects to bob.
fn connect(w: &mut World) {
    let (alice, bob) = (w.alice, w.bob);
    w.sim
        .run_until(Duration::from_secs(10), |s| s.engine(alice).is_registered() && s.engine(bob).is_registered())
        .unwrap();
    let now = w.sim.now();
    w.sim.engine_mut(alice).connect(now, &name("bob")).unwrap();
}

fn path_kind(sim: &Sim, node: EngineId<Node>) -> PathKind {
    sim.engine(node).status()[0].path
}

#[test]
fn cone_nats_connect_directly() {
    for seed in 1..=4 {
        let mut w = world(seed, cone(Filtering::AddressAndPortDependent), cone(Filtering::AddressDependent), None);
        connect(&mut w);
        let (alice, bob) = (w.alice, w.bob);
        let took = w
            .sim
            .run_until(Duration::from_secs(10), |s| {
                path_kind(s, alice) == PathKind::Direct && path_kind(s, bob) == PathKind::Direct
            })
            .unwrap();
        // Registration to introduction to a verified round trip: a few RTTs of 50 ms.
        assert!(took < Duration::from_secs(2), "seed {seed}: {took:?}");
        let events = w.sim.events(alice);
        assert!(events.iter().any(|e| matches!(e, NodeEvent::Registered { .. })), "{events:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, NodeEvent::Punch(AgentEvent::PathOpened { kind: PathKind::Direct, .. }, _))),
            "{events:?}"
        );
        let status = &w.sim.engine(alice).status()[0];
        assert!(status.rtt.is_some());
        assert_eq!(w.sim.engine(alice).stats().refused_introductions, 0);
    }
}

#[test]
fn cone_nats_connect_over_a_bad_network() {
    // 40 ms each way with 20 ms jitter, 10 % loss and 10 % reordering on both NATs' uplinks.
    let bad = Link::new(Duration::from_millis(40))
        .with_jitter(Duration::from_millis(20))
        .with_loss(0.1)
        .with_reordering(0.1, Duration::from_millis(50));
    for seed in 1..=8 {
        let mut w =
            world_on(seed, cone(Filtering::AddressAndPortDependent), cone(Filtering::AddressDependent), None, bad);
        connect(&mut w);
        let (alice, bob) = (w.alice, w.bob);
        w.sim
            .run_until(Duration::from_secs(15), |s| {
                path_kind(s, alice) == PathKind::Direct && path_kind(s, bob) == PathKind::Direct
            })
            .unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
    }
}

#[test]
fn symmetric_against_symmetric_needs_relay() {
    let mut w = world(5, symmetric(), symmetric(), None);
    connect(&mut w);
    let alice = w.alice;
    w.sim
        .run_until_event(alice, Duration::from_secs(30), |e| {
            matches!(e, NodeEvent::Punch(AgentEvent::NeedsRelay { .. }, _))
        })
        .unwrap();
    assert_eq!(path_kind(&w.sim, alice), PathKind::None);
    let events = w.sim.events(alice);
    assert!(
        events.iter().any(|e| matches!(
            e,
            NodeEvent::Punch(AgentEvent::Prediction { prediction: Prediction::NeedsRelay, .. }, _)
        )),
        "{events:?}"
    );
}

#[test]
fn a_wrong_pinned_key_opens_no_path() {
    let mut w = world(
        6,
        cone(Filtering::EndpointIndependent),
        cone(Filtering::EndpointIndependent),
        Some(SecretKey::from_seed([9; 32])),
    );
    connect(&mut w);
    let (alice, bob) = (w.alice, w.bob);
    w.sim.run_for(Duration::from_secs(10)).unwrap();
    assert_eq!(path_kind(&w.sim, alice), PathKind::None);
    assert_eq!(path_kind(&w.sim, bob), PathKind::None);
    assert!(w.sim.engine(alice).stats().refused_introductions >= 1);
    let events = w.sim.events(alice);
    assert!(events.iter().any(|e| matches!(e, NodeEvent::IntroductionRefused { .. })), "{events:?}");
}

#[test]
fn a_flushed_nat_gets_its_path_back_within_two_keepalives_and_a_round_trip() {
    // Random ports: the mapping made after the flush is a new public endpoint, which the peer must learn.
    let a = cone(Filtering::AddressAndPortDependent).with_allocation(Allocation::Random);
    let mut w = world(7, a, cone(Filtering::AddressAndPortDependent), None);
    connect(&mut w);
    let (alice, bob) = (w.alice, w.bob);
    w.sim
        .run_until(Duration::from_secs(10), |s| {
            path_kind(s, alice) == PathKind::Direct && path_kind(s, bob) == PathKind::Direct
        })
        .unwrap();
    w.sim.run_for(Duration::from_secs(5)).unwrap();
    let rtt = w.sim.engine(alice).status()[0].rtt.unwrap();
    let before = w.sim.engine(alice).status()[0].remote;
    let bob_saw = w.sim.engine(bob).status()[0].remote;
    w.sim.events(alice);
    // Alice's router forgets every mapping (a conntrack flush, a reboot).
    w.sim.flush_mappings(w.alice_nat);
    let flushed = w.sim.now();
    // Back when both ends have a verified round trip on a path after the flush.
    let verified_since = |s: &Sim, n: EngineId<Node>| {
        let st = &s.engine(n).status()[0];
        st.path != PathKind::None && st.last_keepalive.is_some_and(|t| t > flushed + rtt)
    };
    let took = w
        .sim
        .run_until(Duration::from_secs(30), |s| {
            verified_since(s, alice) && verified_since(s, bob) && s.engine(alice).status()[0].remote == before
        })
        .unwrap();
    let after = w.sim.engine(bob).status()[0].remote;
    let bound = KEEPALIVE * 2 + rtt;
    let events = w.sim.events(alice);
    eprintln!("back after {took:?} (bound {bound:?}): {events:?}");
    assert_ne!(after, bob_saw, "bob now sends to alice's new mapping");
    assert!(took <= bound, "back after {took:?}, bound {bound:?} (rtt {rtt:?}); before {before:?}");
}

#[test]
fn a_silent_server_is_replaced_by_the_next_without_touching_the_path() {
    const SECOND: &str = "192.0.2.2:3478";
    let nat = cone(Filtering::AddressAndPortDependent);
    let mut w = world_with_servers(8, nat, nat, None, Link::new(Duration::from_millis(20)), &[SERVER, SECOND]);
    connect(&mut w);
    let (alice, bob) = (w.alice, w.bob);
    let direct = |s: &Sim| path_kind(s, alice) == PathKind::Direct && path_kind(s, bob) == PathKind::Direct;
    w.sim.run_until(Duration::from_secs(10), |s| direct(s)).unwrap();
    assert_eq!(w.sim.engine(alice).server(), sa(SERVER));
    w.sim.events(alice);
    // The first server goes dark: nothing reaches it any more.
    let dead = sa(SERVER).ip();
    w.sim.set_fault(Box::new(move |o| if o.dst.ip() == dead { Fate::Drop } else { Fate::Deliver }));
    let died = w.sim.now();
    let mut path_held = true;
    let took = w
        .sim
        .run_until(Duration::from_secs(30), |s| {
            path_held &= direct(s);
            [alice, bob].iter().all(|&n| s.engine(n).server() == sa(SECOND) && s.engine(n).is_registered())
        })
        .unwrap();
    assert!(path_held, "the direct path stayed up while the rendezvous moved");
    // Three keepalives of silence, then a registration round trip.
    assert!(took <= KEEPALIVE * 4, "registered at the second server {took:?} after the first went dark");
    let events = w.sim.events(alice);
    assert!(events.iter().any(|e| *e == NodeEvent::ServerChanged { from: sa(SERVER), to: sa(SECOND) }), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, NodeEvent::Punch(AgentEvent::PathDied { .. }, _))), "{events:?}");
    // The second server introduces them: a fresh connect is served there.
    let before = w.sim.engine(bob).stats().introductions;
    let now = w.sim.now();
    w.sim.engine_mut(alice).connect(now, &name("bob")).unwrap();
    w.sim.run_until(Duration::from_secs(5), |s| s.engine(bob).stats().introductions > before).unwrap();
    assert!(direct(&w.sim));
    eprintln!("failed over {took:?} after {died:?}");
}

#[test]
fn strangers_datagrams_are_dropped_counted_and_never_answered() {
    let t0 = Instant::now();
    let secret = NetworkSecret::new(&b"simulated network secret"[..]);
    let local = sa("192.168.1.10:6666");
    let config = NodeConfig::new(
        local,
        sa(SERVER),
        name("alice"),
        SecretKey::from_seed([1; 32]),
        &secret,
        vec![(name("bob"), SecretKey::from_seed([2; 32]).public())],
    );
    let mut node = Node::new(config, [3; 32], t0).unwrap();
    let mut buf = [0u8; 1500];
    // The first registration is due at once; drain it.
    node.handle_timeout(t0);
    while node.poll_transmit(&mut buf).is_some() {}
    let stranger = Received::udp(local, sa("198.51.100.99:4000"));
    // A plain Binding request (no peer check), junk, and a rendezvous-looking message not from the server.
    let mut binding = [0u8; 20];
    binding[..2].copy_from_slice(&[0x00, 0x01]);
    binding[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    for data in [&binding[..], b"hello", &[0u8; 64][..]] {
        assert!(!node.handle_input(t0, stranger, data));
    }
    assert_eq!(node.stats().dropped, 3);
    assert!(node.poll_transmit(&mut buf).is_none(), "nothing answered");
}

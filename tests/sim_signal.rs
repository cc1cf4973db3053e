//! The rendezvous engines (docs/signal.md) in the simulated network (docs/simulator.md): a `signal::Server` on
//! the internet and two `signal::Client`s behind their own NATs, over links with delay, jitter, loss and
//! reordering. Registration and introduction complete; lost PUSHes are retransmitted; a NAT mapping that
//! changes is reported by the client and followed by the server.

use holepunch::identity::SecretKey;
use holepunch::nat::behaviour::{Allocation, Filtering, Mapping};
use holepunch::signal::wire::PUSH;
use holepunch::signal::{
    Client, ClientConfig, ClientEvent, MemoryRegistry, NetworkSecret, PeerName, Registry, Server, ServerConfig,
    ServerEvent,
};
use holepunch::sim::{EngineId, Fate, Link, NatConfig, NatId, Outgoing, Sim};
use holepunch::stun::{Class, Message};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const SERVER: &str = "192.0.2.1:3478";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn name(s: &str) -> PeerName {
    PeerName::new(s).unwrap()
}

struct World {
    sim: Sim,
    server: EngineId<Server<MemoryRegistry>>,
    alice: EngineId<Client>,
    bob: EngineId<Client>,
    alice_nat: NatId,
    bob_nat: NatId,
    keys: [SecretKey; 2],
}

/// The server on the internet behind `server_link`; alice behind a port-restricted cone with sequential
/// ports, bob behind a symmetric NAT with random ports, each NAT's uplink `uplink`.
fn world(seed: u8, uplink: Link, server_link: Link) -> World {
    let mut sim = Sim::new([seed; 32]);
    let secret = NetworkSecret::new(&b"simulated network secret"[..]);
    let server = Server::new(
        ServerConfig::new(secret.clone()),
        MemoryRegistry::new(1000, sim.now()),
        sim.fork_seed(),
        sim.now(),
    )
    .unwrap();
    let server_host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1")], server_link).unwrap();
    let server = sim.add_engine(server_host, &[sa(SERVER)], server).unwrap();

    let cone = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)
        .with_allocation(Allocation::Sequential { delta: 1 });
    let (alice_nat, alice_lan) = sim.add_nat(Sim::INTERNET, ip("203.0.113.1"), cone, uplink).unwrap();
    let symmetric = NatConfig::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)
        .with_allocation(Allocation::Random);
    let (bob_nat, bob_lan) = sim.add_nat(Sim::INTERNET, ip("198.51.100.1"), symmetric, uplink).unwrap();

    let keys = [SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32])];
    let client = |sim: &mut Sim, lan, host_ip: &str, peer: &str, key: &SecretKey| {
        let host = sim.add_host(lan, &[ip(host_ip)], Link::default()).unwrap();
        let local = SocketAddr::new(ip(host_ip), 6666);
        let config = ClientConfig::new(local, sa(SERVER), name(peer), key.public(), &secret);
        let c = Client::new(config, sim.fork_seed(), sim.now());
        sim.add_engine(host, &[local], c).unwrap()
    };
    let alice = client(&mut sim, alice_lan, "192.168.1.10", "alice", &keys[0]);
    let bob = client(&mut sim, bob_lan, "10.0.0.10", "bob", &keys[1]);
    World { sim, server, alice, bob, alice_nat, bob_nat, keys }
}

/// The public endpoint `nat` maps its only host's punching socket to.
fn public(sim: &mut Sim, nat: NatId) -> SocketAddr {
    let m = sim.mappings(nat);
    assert_eq!(m.len(), 1, "{m:?}");
    m[0].1
}

fn introduced(events: &[ClientEvent]) -> Vec<&holepunch::signal::Introduction> {
    events.iter().filter_map(|e| if let ClientEvent::Introduced(i) = e { Some(i) } else { None }).collect()
}

/// Both register and alice asks for bob: both get the other's introduction, however the network treats them.
fn register_and_introduce(w: &mut World) {
    let (alice, bob) = (w.alice, w.bob);
    w.sim.run_until(secs(30), |s| s.engine(alice).is_registered() && s.engine(bob).is_registered()).unwrap();
    let now = w.sim.now();
    w.sim.engine_mut(alice).connect(now, &name("bob"));
    w.sim
        .run_until(secs(30), |s| {
            !introduced(s.pending_events(alice)).is_empty() && !introduced(s.pending_events(bob)).is_empty()
        })
        .unwrap();
    let (alice_public, bob_public) = (public(&mut w.sim, w.alice_nat), public(&mut w.sim, w.bob_nat));
    let (a, b) = (w.sim.events(alice), w.sim.events(bob));
    let (to_alice, to_bob) = (introduced(&a)[0], introduced(&b)[0]);
    assert_eq!((to_alice.peer.as_str(), to_alice.key), ("bob", w.keys[1].public()));
    assert_eq!((to_bob.peer.as_str(), to_bob.key), ("alice", w.keys[0].public()));
    assert_eq!(to_alice.reflexive, bob_public, "bob's endpoint as the server saw it");
    assert_eq!(to_bob.reflexive, alice_public);
    assert_eq!(to_alice.session, to_bob.session);
    assert!(!a.iter().chain(&b).any(|e| matches!(e, ClientEvent::ConnectFailed { .. } | ClientEvent::Refused(_))));
}

#[test]
fn registration_and_introduction_complete_over_a_bad_network() {
    // 40 ms each way with up to 30 ms jitter, a tenth of the datagrams lost and a tenth held back by 50 ms, on
    // both NATs' uplinks and the server's link: a datagram between a peer and the server crosses two of them.
    let bad = Link::new(ms(40)).with_jitter(ms(30)).with_loss(0.1).with_reordering(0.1, ms(50));
    for seed in 1..=8 {
        let mut w = world(seed, bad, bad);
        register_and_introduce(&mut w);
        let stats = w.sim.engine(w.server).stats();
        assert_eq!(stats.introductions, 1, "seed {seed}: a retransmitted CONNECT is idempotent");
    }
}

/// PUSH requests towards `to` (the server's sends, whatever their fate).
fn is_push_to(out: &Outgoing<'_>, to: IpAddr) -> bool {
    out.dst.ip() == to && Message::parse(out.data).is_ok_and(|m| m.class() == Class::Request && m.method() == PUSH)
}

#[test]
fn lost_pushes_are_retransmitted() {
    let mut w = world(3, Link::new(ms(20)), Link::new(ms(5)));
    let (alice, bob) = (w.alice, w.bob);
    w.sim.run_until(secs(10), |s| s.engine(alice).is_registered() && s.engine(bob).is_registered()).unwrap();
    // The first three PUSHes towards bob's NAT are lost: the fourth send (3.5 s after the first) gets through.
    let bob_ip = ip("198.51.100.1");
    let mut dropped = 0;
    w.sim.set_fault(Box::new(move |out: &Outgoing<'_>| {
        if is_push_to(out, bob_ip) && dropped < 3 {
            dropped += 1;
            Fate::Drop
        } else {
            Fate::Deliver
        }
    }));
    w.sim.set_capture(true);
    let now = w.sim.now();
    w.sim.engine_mut(alice).connect(now, &name("bob"));
    let took = w.sim.run_until_event(bob, secs(20), |e| matches!(e, ClientEvent::Introduced(_))).unwrap();
    assert!((secs(3)..secs(5)).contains(&took), "bob introduced after {took:?}");
    // Alice's answer came at once; the server stops sending to each peer once it answers.
    w.sim.run_for(secs(20)).unwrap();
    let pushes: Vec<_> = w
        .sim
        .captured()
        .iter()
        .filter(|c| c.src == sa(SERVER))
        .filter(|c| Message::parse(&c.data).is_ok_and(|m| m.class() == Class::Request && m.method() == PUSH))
        .map(|c| c.dst.ip())
        .collect();
    assert_eq!(pushes.iter().filter(|d| **d == bob_ip).count(), 4, "{pushes:?}");
    assert_eq!(pushes.iter().filter(|d| **d == ip("203.0.113.1")).count(), 1, "{pushes:?}");
    let stats = w.sim.engine(w.server).stats();
    assert_eq!((stats.pushes_acked, stats.pushes_failed), (2, 0));
    let bob_events = w.sim.events(bob);
    assert_eq!(introduced(&bob_events).len(), 1, "reported once: {bob_events:?}");
}

#[test]
fn a_new_nat_mapping_is_reported_and_the_server_follows_it() {
    let link = Link::new(ms(15)).with_jitter(ms(10)).with_loss(0.05);
    let mut w = world(4, link, Link::new(ms(5)));
    let (alice, bob, server) = (w.alice, w.bob, w.server);
    w.sim.run_until(secs(30), |s| s.engine(alice).is_registered() && s.engine(bob).is_registered()).unwrap();
    let old = public(&mut w.sim, w.alice_nat);
    w.sim.events(alice);
    w.sim.events(server);

    // Alice's router reboots: her next registration leaves from a new public port.
    w.sim.flush_mappings(w.alice_nat);
    w.sim.run_until_event(alice, secs(30), |e| matches!(e, ClientEvent::ReflexiveChanged { .. })).unwrap();
    let new = public(&mut w.sim, w.alice_nat);
    assert_ne!(new, old);
    assert_eq!(w.sim.events(alice), [ClientEvent::ReflexiveChanged { old, new }]);
    let moved = w.sim.events(server);
    assert!(
        moved.contains(&ServerEvent::Registered { name: name("alice"), endpoint: new, moved_from: Some(old) }),
        "{moved:?}"
    );
    let now = w.sim.now();
    assert_eq!(w.sim.engine(server).registry().lookup(now, &name("alice")).map(|r| r.endpoint), Some(new));

    // Bob now asks for alice: he is told her new endpoint.
    w.sim.engine_mut(bob).connect(now, &name("alice"));
    w.sim.run_until_event(bob, secs(30), |e| matches!(e, ClientEvent::Introduced(_))).unwrap();
    let events = w.sim.events(bob);
    assert_eq!(introduced(&events)[0].reflexive, new);
}

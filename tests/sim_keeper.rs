//! The reflexive keeper (punchd's keepalive engine) in the simulated network, against the real STUN server,
//! through the NAT events it exists for: the mapping kept alive past the NAT's timeout, a router reboot that
//! moves the mapping, and an outage long enough for the server to be declared lost and the mapping to expire.

use holepunch::nat::behaviour::{Allocation, Filtering, Mapping};
use holepunch::punch::{Event, KeeperConfig, ReflexiveKeeper};
use holepunch::server::ServerConfig;
use holepunch::sim::{Link, NatConfig, Sim, TraceEvent};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn keeper_follows_the_mapping_through_reboot_and_outage() {
    let mut sim = Sim::new([5; 32]);
    // A port-restricted cone with sequential ports, so every new mapping has a new port, and a 30 s timeout,
    // ten keepalive intervals.
    let config = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)
        .with_allocation(Allocation::Sequential { delta: 1 })
        .with_timeout(secs(30));
    let uplink = Link::new(Duration::from_millis(15));
    let (nat, lan) = sim.add_nat(Sim::INTERNET, ip("203.0.113.1"), config, uplink).unwrap();
    sim.add_stun_server(Sim::INTERNET, ServerConfig::plain(ip("192.0.2.1"), 3478), Link::new(Duration::from_millis(5)))
        .unwrap();
    let host = sim.add_host(lan, &[ip("192.168.1.10")], Link::default()).unwrap();
    // punchd binds its punching socket to the wildcard, as here.
    let local = sa("0.0.0.0:6666");
    let keeper = ReflexiveKeeper::new(KeeperConfig::new(local, sa("192.0.2.1:3478")), sim.now(), sim.fork_seed());
    let keeper = sim.add_engine(host, &[local], keeper).unwrap();

    sim.run_until_event(keeper, secs(5), |e| matches!(e, Event::Discovered(_))).unwrap();
    assert_eq!(sim.events(keeper), [Event::Discovered(sa("203.0.113.1:20000"))]);

    // Keepalives every 3 s hold the mapping for two minutes, four times its timeout: nothing to report.
    sim.run_for(secs(120)).unwrap();
    assert!(sim.events(keeper).is_empty());
    assert_eq!(sim.mappings(nat), [(sa("192.168.1.10:6666"), sa("203.0.113.1:20000"))]);

    // The router reboots: the next keepalive gets a new port, and the keeper says so.
    sim.flush_mappings(nat);
    let took = sim.run_until_event(keeper, secs(5), |e| matches!(e, Event::Changed { .. })).unwrap();
    assert!(took <= secs(3), "noticed at the next keepalive, {took:?}");
    let changed = Event::Changed { old: sa("203.0.113.1:20000"), new: sa("203.0.113.1:20001") };
    assert_eq!(sim.events(keeper), [changed]);

    // The host's own link goes dead for two minutes (on the NAT's uplink instead, the keepalives would still
    // refresh the mapping on their way out): the keeper gives up on the server (RFC 8489 §6.2.1, 39.5 s),
    // paces itself while it is down, and the NAT forgets the mapping meanwhile.
    let sent_before = sent(&sim);
    sim.set_link(host, Link::default().with_loss(1.0));
    sim.run_until_event(keeper, secs(60), |e| *e == Event::ServerLost).unwrap();
    sim.run_for(secs(80)).unwrap();
    assert_eq!(sim.events(keeper), [Event::ServerLost]);
    assert!(sim.mappings(nat).is_empty());
    // One transaction at a time, its Rc = 7 sends spread over its whole schedule, the next one a keepalive
    // interval after the last gave up: fewer than two sends per interval, no storm (60 in this run).
    let sends = sent(&sim) - sent_before;
    assert!((7..=2 * 120 / 3).contains(&sends), "{sends} sends");

    // Back up: the next transaction that gets through reports the new mapping.
    sim.set_link(host, Link::default());
    sim.run_until_event(keeper, secs(60), |e| matches!(e, Event::Changed { .. })).unwrap();
    let events = sim.events(keeper);
    assert!(
        matches!(events[..], [Event::Changed { old, new }] if old == sa("203.0.113.1:20001") && new.port() > 20001),
        "{events:?}"
    );
    assert_eq!(sim.engine(keeper).public(), Some(sim.mappings(nat)[0].1));
}

/// Datagrams the keeper sent so far.
fn sent(sim: &Sim) -> usize {
    sim.trace().iter().filter(|e| matches!(e.event, TraceEvent::Sent { ref src, .. } if src.port() == 6666)).count()
}

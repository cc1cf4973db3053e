//! The simulator's own tests: who reaches whom through every mapping × filtering combination, port
//! allocation, hairpinning, mapping timeout, links, ICMP, nesting, and determinism.

use super::*;
use crate::nat::behaviour::{classify_allocation, Allocation, Mapping};

const SEED: Seed = [7; 32];
const PUBLIC: &str = "203.0.113.1";
const CLIENT: &str = "192.168.1.10:5000";
/// The echo server's sockets: two ports on one address, one port on another.
const ECHO_A: &str = "192.0.2.1:3478";
const ECHO_B: &str = "192.0.2.1:3479";
const ECHO_C: &str = "192.0.2.2:3478";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A client behind one NAT, and an echo server on the internet with three sockets.
struct World {
    sim: Sim,
    nat: NatId,
    lan: NetId,
    client_host: HostId,
    client: EngineId<Probe>,
    echo_host: HostId,
    echo: EngineId<Probe>,
}

fn world(config: NatConfig) -> World {
    let mut sim = Sim::new(SEED);
    let (nat, lan) = sim.add_nat(Sim::INTERNET, ip(PUBLIC), config, Link::new(ms(5))).unwrap();
    let client_host = sim.add_host(lan, &[sa(CLIENT).ip()], Link::default()).unwrap();
    let client = sim.add_engine(client_host, &[sa(CLIENT)], Probe::new()).unwrap();
    let echo_host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1"), ip("192.0.2.2")], Link::default()).unwrap();
    let echo = sim.add_engine(echo_host, &[sa(ECHO_A), sa(ECHO_B), sa(ECHO_C)], Probe::echo()).unwrap();
    World { sim, nat, lan, client_host, client, echo_host, echo }
}

/// Datagrams the probe received: (local, source, data).
fn received(sim: &mut Sim, id: EngineId<Probe>) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    sim.events(id)
        .into_iter()
        .filter_map(|e| match e {
            ProbeEvent::Received { local, source, data, .. } => Some((local, source, data)),
            ProbeEvent::Unreachable { .. } => None,
        })
        .collect()
}

/// Sends from `local` to the echo socket `dst` and returns the public address the echo saw.
fn mapped(sim: &mut Sim, client: EngineId<Probe>, local: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
    sim.engine_mut(client).send(local, dst, b"who am i");
    sim.run_for(ms(100)).unwrap();
    let got = received(sim, client);
    got.iter().filter(|(l, s, _)| *l == local && *s == dst).find_map(|(_, _, data)| Probe::observed(data))
}

const MAPPINGS: [Mapping; 3] =
    [Mapping::EndpointIndependent, Mapping::AddressDependent, Mapping::AddressAndPortDependent];
const FILTERINGS: [Filtering; 3] =
    [Filtering::EndpointIndependent, Filtering::AddressDependent, Filtering::AddressAndPortDependent];

#[test]
fn every_mapping_and_filtering_combination() {
    for mapping in MAPPINGS {
        for filtering in FILTERINGS {
            let label = format!("{mapping} / {filtering}");
            let mut w = world(NatConfig::new(mapping, filtering));
            let local = sa(CLIENT);
            let a = mapped(&mut w.sim, w.client, local, sa(ECHO_A)).expect(&label);
            let b = mapped(&mut w.sim, w.client, local, sa(ECHO_B)).expect(&label);
            let c = mapped(&mut w.sim, w.client, local, sa(ECHO_C)).expect(&label);
            assert_eq!(a.ip(), ip(PUBLIC), "{label}");
            assert_eq!(a.port(), 5000, "{label}: the first mapping keeps the local port");
            match mapping {
                Mapping::EndpointIndependent => assert!(a == b && b == c, "{label}: {a} {b} {c}"),
                Mapping::AddressDependent => assert!(a == b && b != c, "{label}: {a} {b} {c}"),
                _ => assert!(a != b && b != c && a != c, "{label}: {a} {b} {c}"),
            }

            // Strangers try the mapping made towards ECHO_A: a new port of that address, and a new address.
            let same_ip = w.sim.add_engine(w.echo_host, &[sa("192.0.2.1:4000")], Probe::new()).unwrap();
            let other_host = w.sim.add_host(Sim::INTERNET, &[ip("198.51.100.7")], Link::default()).unwrap();
            let other_ip = w.sim.add_engine(other_host, &[sa("198.51.100.7:3478")], Probe::new()).unwrap();
            w.sim.engine_mut(same_ip).send(sa("192.0.2.1:4000"), a, b"same address, new port");
            w.sim.engine_mut(other_ip).send(sa("198.51.100.7:3478"), a, b"new address");
            // The endpoint the client contacted gets through whatever the filter.
            w.sim.engine_mut(w.echo).send(sa(ECHO_A), a, b"contacted");
            w.sim.run_for(ms(100)).unwrap();
            let got: Vec<Vec<u8>> = received(&mut w.sim, w.client).into_iter().map(|(_, _, d)| d).collect();
            let arrived = |m: &[u8]| got.iter().any(|d| d == m);
            assert!(arrived(b"contacted"), "{label}");
            let (port_ok, ip_ok) = match filtering {
                Filtering::EndpointIndependent => (true, true),
                Filtering::AddressDependent => (true, false),
                _ => (false, false),
            };
            assert_eq!(arrived(b"same address, new port"), port_ok, "{label}");
            assert_eq!(arrived(b"new address"), ip_ok, "{label}");
            if !ip_ok {
                assert!(
                    w.sim.trace().iter().any(|e| e.event == TraceEvent::Dropped(DropReason::Filtered(w.nat))),
                    "{label}: the trace says the filter dropped it"
                );
            }
        }
    }
}

/// Public ports of fresh sockets 5000, 6000, 7000, 8000 (each its own mapping).
fn allocation_samples(allocation: Allocation) -> Vec<(u16, u16)> {
    let config =
        NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent).with_allocation(allocation);
    let mut w = world(config);
    let locals: Vec<SocketAddr> =
        [5000u16, 6000, 7000, 8000].iter().map(|&p| SocketAddr::new(sa(CLIENT).ip(), p)).collect();
    let probe = w.sim.add_engine(w.client_host, &locals[1..], Probe::new()).unwrap();
    let mut out = Vec::new();
    for (i, &local) in locals.iter().enumerate() {
        let engine = if i == 0 { w.client } else { probe };
        let m = mapped(&mut w.sim, engine, local, sa(ECHO_A)).unwrap();
        out.push((local.port(), m.port()));
    }
    out
}

#[test]
fn port_allocation_patterns() {
    let preserved = allocation_samples(Allocation::Preserved);
    assert!(preserved.iter().all(|(l, p)| l == p), "{preserved:?}");
    assert_eq!(classify_allocation(&preserved).0, Allocation::Preserved);

    let sequential = allocation_samples(Allocation::Sequential { delta: 3 });
    assert_eq!(sequential.iter().map(|s| s.1).collect::<Vec<_>>(), [20000, 20003, 20006, 20009]);
    assert_eq!(classify_allocation(&sequential).0, Allocation::Sequential { delta: 3 });

    let down = allocation_samples(Allocation::Sequential { delta: -1 });
    assert_eq!(down.iter().map(|s| s.1).collect::<Vec<_>>(), [20000, 19999, 19998, 19997]);

    let random = allocation_samples(Allocation::Random);
    assert!(random.iter().all(|(_, p)| *p >= FIRST_PORT), "{random:?}");
    assert_eq!(classify_allocation(&random).0, Allocation::Random, "{random:?}");
}

#[test]
fn preserving_nat_moves_on_when_the_port_is_taken() {
    // Two inside hosts on the same local port: the second gets the next free public port.
    let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent));
    let other = w.sim.add_host(w.lan, &[ip("192.168.1.11")], Link::default()).unwrap();
    let probe = w.sim.add_engine(other, &[sa("192.168.1.11:5000")], Probe::new()).unwrap();
    assert_eq!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)), Some(sa("203.0.113.1:5000")));
    assert_eq!(mapped(&mut w.sim, probe, sa("192.168.1.11:5000"), sa(ECHO_A)), Some(sa("203.0.113.1:5001")));
    assert_eq!(
        w.sim.mappings(w.nat),
        [(sa(CLIENT), sa("203.0.113.1:5000")), (sa("192.168.1.11:5000"), sa("203.0.113.1:5001"))]
    );
}

/// Two inside hosts; B sends to A's public endpoint (the NAT's own address).
fn hairpin_run(hairpin: bool) -> (World, bool) {
    let config = NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent).with_hairpin(hairpin);
    let mut w = world(config);
    let b_addr = sa("192.168.1.11:6000");
    let other = w.sim.add_host(w.lan, &[b_addr.ip()], Link::default()).unwrap();
    let b = w.sim.add_engine(other, &[b_addr], Probe::new()).unwrap();
    let a_public = mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)).unwrap();
    let b_public = mapped(&mut w.sim, b, b_addr, sa(ECHO_A)).unwrap();
    w.sim.engine_mut(b).send(b_addr, a_public, b"hairpin");
    w.sim.run_for(ms(100)).unwrap();
    let got = received(&mut w.sim, w.client);
    let arrived = got.iter().any(|(l, s, d)| *l == sa(CLIENT) && *s == b_public && d == b"hairpin");
    (w, arrived)
}

#[test]
fn hairpinning_on_and_off() {
    let (_, arrived) = hairpin_run(true);
    assert!(arrived, "with hairpinning, A hears B from B's public endpoint (RFC 4787 REQ-9)");
    let (w, arrived) = hairpin_run(false);
    assert!(!arrived);
    assert!(w.sim.trace().iter().any(|e| e.event == TraceEvent::Dropped(DropReason::HairpinOff(w.nat))));
}

#[test]
fn a_refused_datagram_to_the_nat_itself_comes_back_as_icmp_from_the_nat() {
    // Without hairpinning, a datagram the fault rule refuses that reaches the NAT's own address is refused
    // by the NAT: the ICMP error goes straight back to the sender inside, nothing hairpins.
    let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent));
    let public = mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)).unwrap();
    w.sim.set_fault(Box::new(move |o| if o.dst == public { Fate::Unreachable } else { Fate::Deliver }));
    w.sim.engine_mut(w.client).send(sa(CLIENT), public, b"to myself");
    w.sim.run_for(ms(100)).unwrap();
    let events = w.sim.events(w.client);
    assert!(
        matches!(events[..], [ProbeEvent::Unreachable { local, dst, .. }] if local == sa(CLIENT) && dst == public),
        "{events:?}"
    );
    // With hairpinning the datagram loops back in and the client's own socket refuses it, as a destination.
    let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent).with_hairpin(true));
    let public = mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)).unwrap();
    w.sim.set_fault(Box::new(move |o| if o.dst == public { Fate::Unreachable } else { Fate::Deliver }));
    w.sim.engine_mut(w.client).send(sa(CLIENT), public, b"to myself");
    w.sim.run_for(ms(100)).unwrap();
    let events = w.sim.events(w.client);
    assert!(matches!(events[..], [ProbeEvent::Unreachable { dst, .. }] if dst == public), "{events:?}");
}

#[test]
fn mappings_time_out_unless_refreshed() {
    let config = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)
        .with_allocation(Allocation::Sequential { delta: 1 })
        .with_timeout(Duration::from_secs(30));
    let mut w = world(config);
    let first = mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)).unwrap();
    // Refreshed every 20 s, it lives past its timeout.
    for _ in 0..3 {
        w.sim.run_for(Duration::from_secs(20)).unwrap();
        assert_eq!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)), Some(first));
    }
    // Idle past the timeout: the server's datagram finds no mapping, and the next one out gets a new port.
    w.sim.run_for(Duration::from_secs(31)).unwrap();
    assert!(w.sim.mappings(w.nat).is_empty());
    w.sim.engine_mut(w.echo).send(sa(ECHO_A), first, b"late");
    w.sim.run_for(ms(100)).unwrap();
    assert!(received(&mut w.sim, w.client).is_empty());
    assert!(w.sim.trace().iter().any(|e| e.event == TraceEvent::Dropped(DropReason::NoMapping(w.nat))));
    let second = mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)).unwrap();
    assert_ne!(second, first);
    // A reboot forgets mappings at once.
    w.sim.flush_mappings(w.nat);
    assert_ne!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)), Some(second));
}

#[test]
fn inbound_refresh_is_configurable() {
    for refresh in [true, false] {
        let mut config = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)
            .with_allocation(Allocation::Sequential { delta: 1 })
            .with_timeout(Duration::from_secs(30));
        config.inbound_refresh = refresh;
        let mut w = world(config);
        let first = mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)).unwrap();
        for _ in 0..2 {
            w.sim.run_for(Duration::from_secs(20)).unwrap();
            w.sim.engine_mut(w.echo).send(sa(ECHO_A), first, b"inbound");
        }
        w.sim.run_for(Duration::from_secs(20)).unwrap();
        assert_eq!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)) == Some(first), refresh);
    }
}

#[test]
fn link_loss_rate() {
    let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent));
    w.sim.set_link(w.client_host, Link::default().with_loss(0.2));
    let sink = w.sim.add_engine(w.echo_host, &[sa("192.0.2.1:9")], Probe::new()).unwrap();
    for i in 0..2000u32 {
        w.sim.engine_mut(w.client).send(sa(CLIENT), sa("192.0.2.1:9"), &i.to_be_bytes());
    }
    w.sim.run_for(ms(100)).unwrap();
    let n = received(&mut w.sim, sink).len();
    // 1600 expected; the binomial standard deviation is 18.
    assert!((1500..=1700).contains(&n), "{n} of 2000 arrived");
    let lost = w.sim.trace().iter().filter(|e| e.event == TraceEvent::Dropped(DropReason::Loss)).count();
    assert_eq!(lost + n, 2000);
}

#[test]
fn delay_jitter_and_reordering() {
    let arrivals = |link: Link| {
        let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent));
        w.sim.set_link(w.client_host, link);
        let sink = w.sim.add_engine(w.echo_host, &[sa("192.0.2.1:9")], Probe::new()).unwrap();
        let start = w.sim.now();
        for i in 0..200u32 {
            w.sim.engine_mut(w.client).send(sa(CLIENT), sa("192.0.2.1:9"), &i.to_be_bytes());
        }
        w.sim.run_for(Duration::from_secs(1)).unwrap();
        let events = w.sim.events(sink);
        events
            .into_iter()
            .map(|e| match e {
                ProbeEvent::Received { at, data, .. } => {
                    (at - start, u32::from_be_bytes(data[..4].try_into().unwrap()))
                }
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    // Client link 10 ms + NAT uplink 5 ms + server link 1 ms, in order.
    let plain = arrivals(Link::new(ms(10)));
    assert_eq!(plain.len(), 200);
    assert!(plain.iter().all(|(at, _)| *at == ms(16)));
    assert!(plain.windows(2).all(|w| w[0].1 < w[1].1));

    let jittery = arrivals(Link::new(ms(10)).with_jitter(ms(5)));
    assert_eq!(jittery.len(), 200);
    assert!(jittery.iter().all(|(at, _)| *at >= ms(16) && *at <= ms(21)));
    assert!(jittery.windows(2).any(|w| w[0].1 > w[1].1), "jitter reorders");

    let reordered = arrivals(Link::new(ms(10)).with_reordering(0.25, ms(30)));
    assert_eq!(reordered.len(), 200);
    let late = reordered.iter().filter(|(at, _)| *at == ms(46)).count();
    assert!((25..=75).contains(&late), "{late} held back");
    assert!(reordered.windows(2).any(|w| w[0].1 > w[1].1));
}

#[test]
fn closed_port_answers_with_icmp_through_the_nat() {
    let mut w = world(NatConfig::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent));
    let closed = sa("192.0.2.1:7");
    w.sim.engine_mut(w.client).send(sa(CLIENT), closed, b"anyone?");
    w.sim.run_for(ms(100)).unwrap();
    let events = w.sim.events(w.client);
    assert!(
        matches!(events[..], [ProbeEvent::Unreachable { local, dst, .. }] if local == sa(CLIENT) && dst == closed),
        "{events:?}"
    );
    // A host that keeps quiet: nothing comes back.
    w.sim.set_icmp(w.echo_host, false);
    w.sim.engine_mut(w.client).send(sa(CLIENT), closed, b"anyone?");
    w.sim.run_for(ms(100)).unwrap();
    assert!(w.sim.events(w.client).is_empty());
    assert!(w.sim.trace().iter().any(|e| e.event == TraceEvent::Dropped(DropReason::Unbound(w.echo_host))));
}

#[test]
fn fault_rule_drops_or_refuses_chosen_datagrams() {
    let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent));
    let client_host = w.client_host;
    // The client's first datagram is lost; datagrams to ECHO_B are refused by "a router".
    w.sim.set_fault(Box::new(move |o| {
        if o.host != client_host {
            Fate::Deliver
        } else if o.packet == 0 {
            Fate::Drop
        } else if o.dst == sa(ECHO_B) {
            Fate::Unreachable
        } else {
            Fate::Deliver
        }
    }));
    assert_eq!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)), None);
    assert!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)).is_some());
    w.sim.events(w.echo);
    w.sim.engine_mut(w.client).send(sa(CLIENT), sa(ECHO_B), b"x");
    let start = w.sim.now();
    w.sim.run_for(ms(100)).unwrap();
    let events = w.sim.events(w.client);
    // Refused at the destination although the echo listens there: back after a round trip (1 + 5 + 1 ms
    // each way), translated by the NAT.
    assert!(
        matches!(events[..], [ProbeEvent::Unreachable { at, local, dst }]
            if dst == sa(ECHO_B) && local == sa(CLIENT) && at - start == ms(14)),
        "{events:?}"
    );
    assert!(w.sim.pending_events(w.echo).is_empty());
    w.sim.clear_fault();
    assert!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_B)).is_some());
}

#[test]
fn double_nat() {
    let mut sim = Sim::new(SEED);
    let cgn_config = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressDependent)
        .with_allocation(Allocation::Sequential { delta: 1 });
    let (cgn, carrier) = sim.add_nat(Sim::INTERNET, ip("203.0.113.5"), cgn_config, Link::new(ms(5))).unwrap();
    let home_config = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
    let (home, lan) = sim.add_nat(carrier, ip("100.64.0.2"), home_config, Link::new(ms(2))).unwrap();
    let client_host = sim.add_host(lan, &[sa(CLIENT).ip()], Link::default()).unwrap();
    let client = sim.add_engine(client_host, &[sa(CLIENT)], Probe::new()).unwrap();
    let echo_host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1")], Link::default()).unwrap();
    let echo = sim.add_engine(echo_host, &[sa(ECHO_A)], Probe::echo()).unwrap();
    sim.engine_mut(client).send(sa(CLIENT), sa(ECHO_A), b"hello");
    sim.run_for(ms(100)).unwrap();
    let got = received(&mut sim, client);
    assert_eq!(got.len(), 1);
    assert_eq!(Probe::observed(&got[0].2), Some(sa("203.0.113.5:20000")));
    assert_eq!(sim.mappings(home), [(sa(CLIENT), sa("100.64.0.2:5000"))]);
    assert_eq!(sim.mappings(cgn), [(sa("100.64.0.2:5000"), sa("203.0.113.5:20000"))]);
    // Round trip: client link 1 + home uplink 2 + CGN uplink 5 + server link 1, twice.
    let sent = sim.trace().iter().find(|e| matches!(e.event, TraceEvent::Sent { .. })).unwrap().at;
    let back = sim.trace().iter().filter(|e| matches!(e.event, TraceEvent::Delivered { .. })).nth(1).unwrap().at;
    assert_eq!(back - sent, ms(18));
    // Unsolicited from the internet: stopped at the CGN (address-dependent filtering).
    let stranger = sim.add_host(Sim::INTERNET, &[ip("198.51.100.7")], Link::default()).unwrap();
    let s = sim.add_engine(stranger, &[sa("198.51.100.7:1")], Probe::new()).unwrap();
    sim.engine_mut(s).send(sa("198.51.100.7:1"), sa("203.0.113.5:20000"), b"hi");
    sim.run_for(ms(100)).unwrap();
    assert!(received(&mut sim, client).is_empty());
    assert_eq!(sim.trace().last().unwrap().event, TraceEvent::Dropped(DropReason::Filtered(cgn)));
    let _ = echo;
}

#[test]
fn firewall_filters_without_translating() {
    for filtering in FILTERINGS {
        let mut sim = Sim::new(SEED);
        let (fw, inside) =
            sim.add_firewall(Sim::INTERNET, filtering, Duration::from_secs(60), Link::default()).unwrap();
        let host = sim.add_host(inside, &[ip("198.51.100.10")], Link::default()).unwrap();
        let local = sa("198.51.100.10:6666");
        let client = sim.add_engine(host, &[local], Probe::new()).unwrap();
        let echo_host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1")], Link::default()).unwrap();
        let echo = sim.add_engine(echo_host, &[sa(ECHO_A), sa(ECHO_B)], Probe::echo()).unwrap();
        sim.engine_mut(client).send(local, sa(ECHO_A), b"x");
        sim.run_for(ms(100)).unwrap();
        let got = received(&mut sim, client);
        assert_eq!(Probe::observed(&got[0].2), Some(local), "no translation");
        sim.engine_mut(echo).send(sa(ECHO_B), local, b"other port");
        sim.run_for(ms(100)).unwrap();
        let arrived = !received(&mut sim, client).is_empty();
        assert_eq!(arrived, filtering != Filtering::AddressAndPortDependent, "{filtering}");
        assert!(sim.mappings(fw).len() == 1);
    }
}

#[test]
fn wildcard_binding_hears_every_address_and_sends_from_the_first() {
    let mut sim = Sim::new(SEED);
    let host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1"), ip("192.0.2.2")], Link::default()).unwrap();
    let any = sa("0.0.0.0:3478");
    let server = sim.add_engine(host, &[any], Probe::echo()).unwrap();
    let client_host = sim.add_host(Sim::INTERNET, &[ip("198.51.100.1")], Link::default()).unwrap();
    let client = sim.add_engine(client_host, &[sa("198.51.100.1:1")], Probe::new()).unwrap();
    sim.engine_mut(client).send(sa("198.51.100.1:1"), sa("192.0.2.2:3478"), b"x");
    sim.run_for(ms(100)).unwrap();
    let events = sim.events(server);
    assert!(matches!(events[..], [ProbeEvent::Received { local, .. }] if local == any));
    // The echo answers from the wildcard: it leaves from the host's first address, as an unconnected
    // socket's answer would on a host without source routing.
    let got = received(&mut sim, client);
    assert_eq!(got[0].1, sa("192.0.2.1:3478"));
    // An engine may not send from an address its host lacks.
    sim.engine_mut(client).send(sa("198.51.100.9:1"), sa("192.0.2.1:3478"), b"x");
    sim.run_for(ms(100)).unwrap();
    assert_eq!(sim.trace().last().unwrap().event, TraceEvent::Dropped(DropReason::BadSource(client_host)));
}

#[test]
fn engines_sharing_a_socket_are_offered_datagrams_in_order() {
    /// Takes only datagrams starting with its tag.
    struct Picky(u8, Vec<u8>);
    impl Engine for Picky {
        type Event = ();
        fn handle_input(&mut self, _: Instant, _: Received, data: &[u8]) -> bool {
            let mine = data.first() == Some(&self.0);
            if mine {
                self.1.push(data[1]);
            }
            mine
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self, _: &mut [u8]) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
    }
    let mut sim = Sim::new(SEED);
    let host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1")], Link::default()).unwrap();
    let a = sim.add_engine(host, &[sa(ECHO_A)], Picky(b'a', Vec::new())).unwrap();
    let b = sim.add_engine(host, &[sa(ECHO_A)], Picky(b'b', Vec::new())).unwrap();
    let other = sim.add_host(Sim::INTERNET, &[ip("198.51.100.1")], Link::default()).unwrap();
    let client = sim.add_engine(other, &[sa("198.51.100.1:1")], Probe::new()).unwrap();
    for m in [b"a1", b"b2", b"c3", b"a4"] {
        sim.engine_mut(client).send(sa("198.51.100.1:1"), sa(ECHO_A), m);
    }
    sim.run_for(ms(100)).unwrap();
    assert_eq!(sim.engine(a).1, b"14");
    assert_eq!(sim.engine(b).1, b"2");
    let unclaimed = sim.trace().iter().filter(|e| matches!(e.event, TraceEvent::Delivered { consumed: false, .. }));
    assert_eq!(unclaimed.count(), 1);
}

#[test]
fn port_forwards_let_anyone_in_until_removed() {
    let config = NatConfig::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)
        .with_timeout(Duration::from_secs(30));
    let mut w = world(config);
    assert_eq!(w.sim.forward_port(w.nat, 6000, sa(CLIENT)), Ok(sa("203.0.113.1:6000")));
    assert_eq!(w.sim.forward_port(w.nat, 6000, sa(CLIENT)), Err(SimError::PortUnavailable(6000)));
    // Long past the mapping timeout, a stranger still gets in.
    w.sim.run_for(Duration::from_secs(300)).unwrap();
    w.sim.engine_mut(w.echo).send(sa(ECHO_C), sa("203.0.113.1:6000"), b"through the forward");
    w.sim.run_for(ms(100)).unwrap();
    let got = received(&mut w.sim, w.client);
    assert_eq!(got, [(sa(CLIENT), sa(ECHO_C), b"through the forward".to_vec())]);
    // The client's own datagrams still get a mapping of their own (dependent mapping).
    assert_eq!(mapped(&mut w.sim, w.client, sa(CLIENT), sa(ECHO_A)), Some(sa("203.0.113.1:5000")));
    assert!(w.sim.unforward_port(w.nat, 6000));
    assert!(!w.sim.unforward_port(w.nat, 6000));
    w.sim.engine_mut(w.echo).send(sa(ECHO_C), sa("203.0.113.1:6000"), b"closed again");
    w.sim.run_for(ms(100)).unwrap();
    assert!(received(&mut w.sim, w.client).is_empty());
}

#[test]
fn scripted_engines_and_capture() {
    let mut sim = Sim::new(SEED);
    let host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1")], Link::default()).unwrap();
    // Answers "ping" with "pong" from another port; leaves anything else alone.
    let pong = Scripted::new(|_, rx: Received, data: &[u8]| {
        (data == b"ping").then(|| vec![Reply { local: sa(ECHO_B), dst: rx.source, data: b"pong".to_vec() }])
    });
    sim.add_engine(host, &[sa(ECHO_A), sa(ECHO_B)], pong).unwrap();
    let other = sim.add_host(Sim::INTERNET, &[ip("198.51.100.1")], Link::default()).unwrap();
    let client = sim.add_engine(other, &[sa("198.51.100.1:1")], Probe::new()).unwrap();
    sim.set_capture(true);
    sim.engine_mut(client).send(sa("198.51.100.1:1"), sa(ECHO_A), b"ping");
    sim.engine_mut(client).send(sa("198.51.100.1:1"), sa(ECHO_A), b"other");
    let took = sim
        .run_until_event(
            client,
            Duration::from_secs(1),
            |e| matches!(e, ProbeEvent::Received { data, .. } if data == b"pong"),
        )
        .unwrap();
    assert_eq!(took, ms(4));
    let sent: Vec<(SocketAddr, &[u8])> = sim.captured().iter().map(|c| (c.src, &c.data[..])).collect();
    assert_eq!(sent, [(sa("198.51.100.1:1"), &b"ping"[..]), (sa("198.51.100.1:1"), b"other"), (sa(ECHO_B), b"pong")]);
    assert_eq!(sim.captured()[2].at, ms(2));
    let unclaimed = sim.trace().iter().filter(|e| matches!(e.event, TraceEvent::Delivered { consumed: false, .. }));
    assert_eq!(unclaimed.count(), 1);
    sim.set_capture(false);
    assert!(sim.captured().is_empty());
}

/// A lossy, jittery run with random ports, as a trace.
fn noisy_run(seed: Seed) -> Vec<TraceEntry> {
    let mut sim = Sim::new(seed);
    let config = NatConfig::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)
        .with_allocation(Allocation::Random);
    let lossy = Link::new(ms(10)).with_jitter(ms(8)).with_loss(0.1).with_reordering(0.1, ms(20));
    let (_, lan) = sim.add_nat(Sim::INTERNET, ip(PUBLIC), config, lossy).unwrap();
    let host = sim.add_host(lan, &[sa(CLIENT).ip()], lossy).unwrap();
    let client = sim.add_engine(host, &[sa(CLIENT)], Probe::new()).unwrap();
    let echo_host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1"), ip("192.0.2.2")], lossy).unwrap();
    sim.add_engine(echo_host, &[sa(ECHO_A), sa(ECHO_B), sa(ECHO_C)], Probe::echo()).unwrap();
    for round in 0..20u8 {
        for dst in [ECHO_A, ECHO_B, ECHO_C] {
            sim.engine_mut(client).send(sa(CLIENT), sa(dst), &[round]);
        }
        sim.run_for(ms(7)).unwrap();
    }
    sim.run_until_idle(Duration::from_secs(1)).unwrap();
    sim.trace().to_vec()
}

#[test]
fn same_seed_same_trace() {
    let a = noisy_run([1; 32]);
    assert_eq!(a, noisy_run([1; 32]));
    assert_ne!(a, noisy_run([2; 32]));
    assert!(a.iter().any(|e| e.event == TraceEvent::Dropped(DropReason::Loss)));
}

#[test]
fn run_loops_are_bounded() {
    /// Always due, never done.
    struct Busy;
    impl Engine for Busy {
        type Event = ();
        fn handle_input(&mut self, _: Instant, _: Received, _: &[u8]) -> bool {
            false
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self, _: &mut [u8]) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            Some(Instant::now() - Duration::from_secs(1))
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
    }
    let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent));
    assert_eq!(w.sim.run_until(Duration::from_secs(1), |_| false), Err(RunError::Idle));
    assert_eq!(w.sim.run_until_idle(Duration::from_secs(1)), Ok(Duration::ZERO));
    let host = w.client_host;
    w.sim.add_engine(host, &[sa("192.168.1.10:1")], Busy).unwrap();
    assert_eq!(w.sim.run_for(Duration::from_secs(1)), Err(RunError::StepLimit));
}

#[test]
fn run_until_stops_when_the_condition_holds_or_time_is_up() {
    let mut w = world(NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent));
    w.sim.engine_mut(w.client).send(sa(CLIENT), sa(ECHO_A), b"x");
    let client = w.client;
    let took = w.sim.run_until(Duration::from_secs(1), |sim| !sim.pending_events(client).is_empty()).unwrap();
    // There and back: 1 + 5 + 1 ms each way.
    assert_eq!(took, ms(14));
    assert_eq!(w.sim.run_until(ms(50), |_| false), Err(RunError::Idle));
    w.sim.engine_mut(w.client).send(sa(CLIENT), sa(ECHO_A), b"x");
    assert_eq!(w.sim.run_until(ms(5), |_| false), Err(RunError::TimedOut(ms(5))));
    assert_eq!(w.sim.elapsed(), ms(19));
}

#[test]
fn unmodelled_behaviours_and_bad_topologies_are_refused() {
    let mut sim = Sim::new(SEED);
    let bad = NatConfig::new(Mapping::Unknown, Filtering::EndpointIndependent);
    assert_eq!(
        sim.add_nat(Sim::INTERNET, ip(PUBLIC), bad, Link::default()).err(),
        Some(SimError::Unmodelled("unknown"))
    );
    let bad = NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent)
        .with_allocation(Allocation::Sequential { delta: 0 });
    assert!(matches!(sim.add_nat(Sim::INTERNET, ip(PUBLIC), bad, Link::default()), Err(SimError::Unmodelled(_))));
    let host = sim.add_host(Sim::INTERNET, &[ip("192.0.2.1")], Link::default()).unwrap();
    assert_eq!(
        sim.add_host(Sim::INTERNET, &[ip("192.0.2.1")], Link::default()),
        Err(SimError::AddressInUse(ip("192.0.2.1")))
    );
    let ok = NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    assert_eq!(
        sim.add_nat(Sim::INTERNET, ip("192.0.2.1"), ok, Link::default()),
        Err(SimError::AddressInUse(ip("192.0.2.1")))
    );
    assert_eq!(
        sim.add_engine(host, &[sa("192.0.2.9:1")], Probe::new()).err(),
        Some(SimError::NotOnHost(sa("192.0.2.9:1")))
    );
    // Inside a firewall, addresses belong to the outside network too.
    let timeout = Duration::from_secs(1);
    let (_, inside) = sim.add_firewall(Sim::INTERNET, Filtering::AddressDependent, timeout, Link::default()).unwrap();
    assert_eq!(sim.add_host(inside, &[ip("192.0.2.1")], Link::default()), Err(SimError::AddressInUse(ip("192.0.2.1"))));
    sim.add_host(inside, &[ip("192.0.2.7")], Link::default()).unwrap();
    assert_eq!(
        sim.add_host(Sim::INTERNET, &[ip("192.0.2.7")], Link::default()),
        Err(SimError::AddressInUse(ip("192.0.2.7")))
    );
}

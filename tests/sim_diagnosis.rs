//! The NAT diagnosis (`nat::Diagnosis`) in the simulated network against the real RFC 5780 server: whatever
//! the simulator is told the NAT is, the diagnosis must find. Uses the `sim` feature.

use holepunch::nat::{Allocation, Config, Diagnosis, Event, Filtering, Mapping, Report, Retransmit, Verdict};
use holepunch::server::ServerConfig;
use holepunch::sim::{Link, NatConfig, Sim};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Where the client sits.
enum Site {
    Nat(NatConfig),
    Firewall(Filtering),
    Open,
}

fn diagnose(site: Site, seed: u8) -> Report {
    let mut sim = Sim::new([seed; 32]);
    let server =
        ServerConfig { alternate: Some(ip("192.0.2.2")), alt_port: 3479, ..ServerConfig::plain(ip("192.0.2.1"), 3478) };
    sim.add_stun_server(Sim::INTERNET, server, Link::new(ms(5))).unwrap();
    let (net, host_ip) = match site {
        Site::Nat(config) => {
            (sim.add_nat(Sim::INTERNET, ip("203.0.113.1"), config, Link::new(ms(10))).unwrap().1, ip("192.168.1.10"))
        }
        Site::Firewall(f) => (
            sim.add_firewall(Sim::INTERNET, f, Duration::from_secs(120), Link::new(ms(10))).unwrap().1,
            ip("198.51.100.10"),
        ),
        Site::Open => (Sim::INTERNET, ip("198.51.100.10")),
    };
    let host = sim.add_host(net, &[host_ip], Link::default()).unwrap();
    let mut config = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], sim.fork_seed());
    // A short schedule so negative tests end quickly in simulated time; the logic is the same.
    config.retransmit = Retransmit { rto: ms(100), rc: 4, rm: 8, ..Retransmit::default() };
    let locals: Vec<SocketAddr> = (0..config.plan().count())
        .map(|i| SocketAddr::new(host_ip, if i == 0 { 6666 } else { 40000 + 17 * i as u16 }))
        .collect();
    let diagnosis = Diagnosis::new(config, locals.clone(), sim.now()).unwrap();
    let id = sim.add_engine(host, &locals, diagnosis).unwrap();
    sim.run_until_event(id, Duration::from_secs(300), |e| *e == Event::Finished).unwrap();
    sim.engine(id).report().expect("a report once finished").clone()
}

#[test]
fn the_diagnosis_finds_every_mapping_and_filtering() {
    for mapping in [Mapping::EndpointIndependent, Mapping::AddressDependent, Mapping::AddressAndPortDependent] {
        for filtering in
            [Filtering::EndpointIndependent, Filtering::AddressDependent, Filtering::AddressAndPortDependent]
        {
            let r = diagnose(Site::Nat(NatConfig::new(mapping, filtering)), 1);
            assert_eq!(r.nat, Some(true));
            assert_eq!(r.mapping, mapping, "{mapping}/{filtering}: {}", r.mapping_reason);
            assert_eq!(r.filtering, filtering, "{mapping}/{filtering}: {}", r.filtering_reason);
            assert_eq!(r.public, Some("203.0.113.1:6666".parse().unwrap()));
            let verdict =
                if mapping == Mapping::EndpointIndependent { Verdict::Direct } else { Verdict::PeerMustBeCone };
            assert_eq!(r.verdict, verdict, "{mapping}/{filtering}: {}", r.verdict_reason);
        }
    }
}

#[test]
fn the_diagnosis_finds_allocation_hairpinning_and_alg() {
    let symmetric = NatConfig::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent);
    let r = diagnose(Site::Nat(symmetric.with_allocation(Allocation::Random)), 2);
    assert_eq!((r.allocation, r.port_preserved, r.verdict), (Allocation::Random, Some(false), Verdict::Relay));
    let r = diagnose(Site::Nat(symmetric.with_allocation(Allocation::Sequential { delta: 2 })), 2);
    assert_eq!(r.allocation, Allocation::Sequential { delta: 2 }, "{}", r.allocation_reason);
    let cone = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent);
    assert_eq!(diagnose(Site::Nat(cone), 3).allocation, Allocation::Preserved);
    for hairpin in [true, false] {
        let r = diagnose(Site::Nat(cone.with_hairpin(hairpin)), 3);
        assert_eq!(r.hairpin, Some(hairpin), "{}", r.hairpin_reason);
    }
    let r = diagnose(Site::Nat(cone.with_alg(true)), 3);
    assert_eq!(r.alg, Some(true), "{}", r.alg_reason);
    assert_eq!(r.public, Some("203.0.113.1:6666".parse().unwrap()), "XOR-MAPPED-ADDRESS survives the ALG");
}

#[test]
fn the_diagnosis_tells_a_firewall_and_the_open_internet_from_a_nat() {
    for filtering in [Filtering::EndpointIndependent, Filtering::AddressDependent, Filtering::AddressAndPortDependent] {
        let r = diagnose(Site::Firewall(filtering), 4);
        assert_eq!(r.nat, Some(false));
        assert_eq!(r.filtering, filtering, "{}", r.filtering_reason);
    }
    let r = diagnose(Site::Open, 4);
    assert_eq!((r.nat, r.filtering, r.verdict), (Some(false), Filtering::EndpointIndependent, Verdict::Direct));
}

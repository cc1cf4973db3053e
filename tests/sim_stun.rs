//! The real RFC 5780 STUN server (`server::Responder`, two addresses × two ports) inside the simulated network,
//! probed through every NAT type the way RFC 5780 §4.3–§4.4 does it. Uses the `sim` feature (enabled for the
//! integration tests by the crate's dev-dependency on itself).

use holepunch::nat::behaviour::{Allocation, Filtering, Mapping};
use holepunch::server::ServerConfig;
use holepunch::sim::{Link, NatConfig, Probe, ProbeEvent, Sim};
use holepunch::stun::{Attribute, ChangeRequest, Class, Message, MessageType, MessageWriter, Method};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const CLIENT: &str = "192.168.1.10:6666";
const PRIMARY: &str = "192.0.2.1:3478";

fn server_config() -> ServerConfig {
    ServerConfig {
        alternate: Some(ip("192.0.2.2")),
        alt_port: 3479,
        software: Some("sim".into()),
        ..ServerConfig::plain(ip("192.0.2.1"), 3478)
    }
}

fn binding(id: u8, change: Option<ChangeRequest>) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[id; 12]).unwrap();
    if let Some(c) = change {
        w.add(&Attribute::ChangeRequest(c)).unwrap();
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

struct Answer {
    from: SocketAddr,
    xor_mapped: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
    other: Option<SocketAddr>,
}

/// A client behind a NAT and the real server; `ask` sends one request and returns the answers.
struct Lab {
    sim: Sim,
    client: holepunch::sim::EngineId<Probe>,
}

impl Lab {
    fn new(config: NatConfig) -> Lab {
        let mut sim = Sim::new([3; 32]);
        let (_, lan) =
            sim.add_nat(Sim::INTERNET, ip("203.0.113.1"), config, Link::new(Duration::from_millis(5))).unwrap();
        let host = sim.add_host(lan, &[sa(CLIENT).ip()], Link::default()).unwrap();
        let client = sim.add_engine(host, &[sa(CLIENT)], Probe::new()).unwrap();
        sim.add_stun_server(Sim::INTERNET, server_config(), Link::new(Duration::from_millis(10))).unwrap();
        Lab { sim, client }
    }

    fn ask(&mut self, id: u8, dst: &str, change: Option<ChangeRequest>) -> Vec<Answer> {
        self.sim.engine_mut(self.client).send(sa(CLIENT), sa(dst), &binding(id, change));
        self.sim.run_for(Duration::from_millis(200)).unwrap();
        self.sim
            .events(self.client)
            .into_iter()
            .filter_map(|e| match e {
                ProbeEvent::Received { source, data, .. } => {
                    let m = Message::parse(&data).ok()?;
                    (m.transaction_id() == &[id; 12]).then(|| Answer {
                        from: source,
                        xor_mapped: m.xor_mapped_address(),
                        mapped: m.mapped_address(),
                        other: m.other_address(),
                    })
                }
                ProbeEvent::Unreachable { .. } => None,
            })
            .collect()
    }
}

#[test]
fn rfc5780_tests_through_every_nat_type() {
    let change_both = ChangeRequest { change_ip: true, change_port: true };
    let change_port = ChangeRequest { change_ip: false, change_port: true };
    for mapping in [Mapping::EndpointIndependent, Mapping::AddressDependent, Mapping::AddressAndPortDependent] {
        for filtering in
            [Filtering::EndpointIndependent, Filtering::AddressDependent, Filtering::AddressAndPortDependent]
        {
            let label = format!("{mapping} / {filtering}");
            let config = NatConfig::new(mapping, filtering).with_allocation(Allocation::Sequential { delta: 1 });
            let mut lab = Lab::new(config);
            // Mapping test I: the primary address.
            let one = lab.ask(1, PRIMARY, None);
            assert_eq!(one.len(), 1, "{label}");
            assert_eq!(one[0].from, sa(PRIMARY));
            let public = one[0].xor_mapped.unwrap();
            assert_eq!(public, sa("203.0.113.1:20000"), "{label}");
            assert_eq!(one[0].other, Some(sa("192.0.2.2:3479")));
            // Filtering test II (from the other address and port) and III (other port).
            let two = lab.ask(2, PRIMARY, Some(change_both));
            assert_eq!(two.len(), usize::from(filtering == Filtering::EndpointIndependent), "{label}");
            if let Some(a) = two.first() {
                assert_eq!(a.from, sa("192.0.2.2:3479"));
            }
            let three = lab.ask(3, PRIMARY, Some(change_port));
            assert_eq!(three.len(), usize::from(filtering != Filtering::AddressAndPortDependent), "{label}");
            // Mapping tests II (alternate address, primary port) and III (alternate address and port).
            let m2 = lab.ask(4, "192.0.2.2:3478", None)[0].xor_mapped.unwrap();
            let m3 = lab.ask(5, "192.0.2.2:3479", None)[0].xor_mapped.unwrap();
            match mapping {
                Mapping::EndpointIndependent => assert!(m2 == public && m3 == public, "{label}"),
                Mapping::AddressDependent => assert!(m2 != public && m3 == m2, "{label}"),
                _ => assert!(m2 != public && m3 != m2, "{label}"),
            }
        }
    }
}

#[test]
fn alg_rewrites_mapped_address_but_not_the_xor_form() {
    let config = NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent).with_alg(true);
    let mut lab = Lab::new(config);
    let a = lab.ask(1, PRIMARY, None);
    assert_eq!(a[0].xor_mapped, Some(sa("203.0.113.1:6666")));
    assert_eq!(a[0].mapped, Some(sa(CLIENT)), "the ALG put the internal address into MAPPED-ADDRESS");
    let mut lab = Lab::new(NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent));
    assert_eq!(lab.ask(1, PRIMARY, None)[0].mapped, Some(sa("203.0.113.1:6666")));
}

#[test]
fn the_server_counts_what_the_simulated_clients_sent() {
    let mut sim = Sim::new([4; 32]);
    let (_, server) = sim.add_stun_server(Sim::INTERNET, server_config(), Link::default()).unwrap();
    let host = sim.add_host(Sim::INTERNET, &[ip("198.51.100.1")], Link::default()).unwrap();
    let client = sim.add_engine(host, &[sa("198.51.100.1:5000")], Probe::new()).unwrap();
    for (i, dst) in ["192.0.2.1:3478", "192.0.2.1:3479", "192.0.2.2:3478", "192.0.2.2:3479"].iter().enumerate() {
        sim.engine_mut(client).send(sa("198.51.100.1:5000"), sa(dst), &binding(i as u8, None));
    }
    sim.engine_mut(client).send(sa("198.51.100.1:5000"), sa(PRIMARY), b"not stun");
    sim.run_until_idle(Duration::from_secs(1)).unwrap();
    let counters = *sim.engine(server).counters();
    assert_eq!(counters.requests_binding, 4);
    assert_eq!(counters.responses_success, 4);
    assert_eq!(counters.dropped_malformed, 1);
    // Each answer came from the socket asked, with no NAT in the way.
    let from: Vec<SocketAddr> = sim
        .events(client)
        .into_iter()
        .filter_map(|e| match e {
            ProbeEvent::Received { source, .. } => Some(source),
            ProbeEvent::Unreachable { .. } => None,
        })
        .collect();
    assert_eq!(from, ["192.0.2.1:3478", "192.0.2.1:3479", "192.0.2.2:3478", "192.0.2.2:3479"].map(sa));
}

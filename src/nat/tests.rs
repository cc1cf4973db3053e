//! Engine tests: every NAT type through the simulated network, with a fake clock. Deterministic.

use super::sim::*;
use super::*;
use crate::net::{Engine, Received};
use std::time::Duration;

fn cfg(_world: &World, servers: Vec<std::net::SocketAddr>) -> Config {
    let mut c = Config::new(servers, [7; 32]);
    // Fast schedule so negative tests end quickly in simulated time; the logic is the same.
    c.retransmit = Retransmit { rto: Duration::from_millis(100), rc: 4, rm: 8, ..Retransmit::default() };
    c
}

fn sockets(lifetime: bool) -> usize {
    let mut c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    if lifetime {
        c.lifetime = Some(Duration::from_secs(1));
    }
    c.plan().count()
}

fn run_nat(spec: NatSpec) -> Report {
    let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(false));
    let c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    w.run(c).0
}

fn nat(m: SimMapping, f: SimFilter) -> NatSpec {
    NatSpec::new(m, f)
}

#[test]
fn full_cone() {
    let r = run_nat(nat(SimMapping::Eim, SimFilter::Eif));
    assert_eq!(r.nat, Some(true));
    assert_eq!(r.mapping, Mapping::EndpointIndependent, "{}", r.mapping_reason);
    assert_eq!(r.filtering, Filtering::EndpointIndependent, "{}", r.filtering_reason);
    assert_eq!(r.kind, NatKind::FullCone);
    assert_eq!(r.verdict, Verdict::Direct);
    assert_eq!(r.port_preserved, Some(true));
    assert_eq!(r.allocation, Allocation::Preserved);
    assert_eq!(r.public, Some("203.0.113.1:6666".parse().unwrap()));
    assert!(r.rfc5780 && !r.legacy);
    assert_eq!(r.alg, Some(false));
}

#[test]
fn restricted_cone() {
    let r = run_nat(nat(SimMapping::Eim, SimFilter::Adf));
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::AddressDependent, "{}", r.filtering_reason);
    assert_eq!(r.kind, NatKind::RestrictedCone);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn port_restricted_cone() {
    let r = run_nat(nat(SimMapping::Eim, SimFilter::Apdf));
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::AddressAndPortDependent, "{}", r.filtering_reason);
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn address_dependent_mapping() {
    let mut spec = nat(SimMapping::Adm, SimFilter::Adf);
    spec.alloc = SimAlloc::Sequential(1);
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::AddressDependent, "{}", r.mapping_reason);
    assert_eq!(r.kind, NatKind::Symmetric);
    assert_eq!(r.allocation, Allocation::Sequential { delta: 1 });
    assert_eq!(r.verdict, Verdict::PeerMustBeCone);
}

#[test]
fn symmetric_random_ports_needs_relay() {
    let mut spec = nat(SimMapping::Apdm, SimFilter::Apdf);
    spec.alloc = SimAlloc::Random;
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::AddressAndPortDependent, "{}", r.mapping_reason);
    assert_eq!(r.filtering, Filtering::AddressAndPortDependent);
    assert_eq!(r.allocation, Allocation::Random, "{}", r.allocation_reason);
    assert_eq!(r.port_preserved, Some(false));
    assert_eq!(r.verdict, Verdict::Relay, "{}", r.verdict_reason);
}

#[test]
fn symmetric_sequential_ports_needs_cone_peer() {
    let mut spec = nat(SimMapping::Apdm, SimFilter::Apdf);
    spec.alloc = SimAlloc::Sequential(2);
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::AddressAndPortDependent);
    assert_eq!(r.allocation, Allocation::Sequential { delta: 2 });
    assert_eq!(r.verdict, Verdict::PeerMustBeCone);
    assert!(r.verdict_reason.contains("prediction"), "{}", r.verdict_reason);
}

#[test]
fn eim_without_port_preservation() {
    let mut spec = nat(SimMapping::Eim, SimFilter::Apdf);
    spec.alloc = SimAlloc::Random;
    let r = run_nat(spec);
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.port_preserved, Some(false));
    assert_eq!(r.allocation, Allocation::Random);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn open_internet() {
    let mut w = World::new(Gateway::Open, vec![SimServer::rfc5780()], sockets(false));
    let c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    let r = w.run(c).0;
    assert_eq!(r.nat, Some(false));
    assert_eq!(r.kind, NatKind::OpenInternet);
    assert_eq!(r.filtering, Filtering::EndpointIndependent);
    assert_eq!(r.hairpin, None);
    assert_eq!(r.verdict, Verdict::Direct);
}

#[test]
fn firewall_without_nat() {
    for (f, want) in
        [(SimFilter::Apdf, Filtering::AddressAndPortDependent), (SimFilter::Adf, Filtering::AddressDependent)]
    {
        let mut w = World::new(Gateway::Firewall(f), vec![SimServer::rfc5780()], sockets(false));
        let c = cfg(&w, vec![SimServer::rfc5780().addr()]);
        let r = w.run(c).0;
        assert_eq!(r.nat, Some(false));
        assert_eq!(r.filtering, want);
        assert_eq!(r.kind, NatKind::FirewallWithoutNat);
        assert_eq!(r.verdict, Verdict::Direct);
    }
}

#[test]
fn hairpin_on_and_off() {
    for (hairpin, filter) in [(true, SimFilter::Apdf), (false, SimFilter::Apdf), (true, SimFilter::Eif)] {
        let mut spec = nat(SimMapping::Eim, filter);
        spec.hairpin = hairpin;
        let r = run_nat(spec);
        assert_eq!(r.hairpin, Some(hairpin), "{}", r.hairpin_reason);
    }
}

#[test]
fn alg_detected() {
    let mut spec = nat(SimMapping::Eim, SimFilter::Apdf);
    spec.alg = true;
    let r = run_nat(spec);
    assert_eq!(r.alg, Some(true), "{}", r.alg_reason);
    // The XOR form survives, so the public endpoint is still right.
    assert_eq!(r.public, Some("203.0.113.1:6666".parse().unwrap()));
}

#[test]
fn legacy_rfc3489_server() {
    let server = SimServer::rfc5780().with_style(ServerStyle::Legacy);
    let mut spec = nat(SimMapping::Eim, SimFilter::Adf);
    spec.alloc = SimAlloc::Preserve;
    let mut w = World::new(Gateway::Nat(spec), vec![server], sockets(false));
    let c = cfg(&w, vec![server.addr()]);
    let r = w.run(c).0;
    assert!(r.legacy);
    assert!(r.notes.iter().any(|n| n.starts_with("legacy")));
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::AddressDependent);
    assert_eq!(r.alg, None);
    assert_eq!(r.kind, NatKind::RestrictedCone);
}

#[test]
fn legacy_symmetric() {
    let server = SimServer::rfc5780().with_style(ServerStyle::Legacy);
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Apdm, SimFilter::Apdf)), vec![server], sockets(false));
    let c = cfg(&w, vec![server.addr()]);
    let r = w.run(c).0;
    assert!(r.legacy);
    assert_eq!(r.mapping, Mapping::AddressAndPortDependent);
    assert_eq!(r.kind, NatKind::Symmetric);
}

#[test]
fn two_plain_servers_infer_mapping() {
    let a = SimServer::plain("192.0.2.50:3478");
    let b = SimServer::plain("198.51.100.77:19302");
    for (m, want) in [
        (SimMapping::Eim, Mapping::EndpointIndependent),
        (SimMapping::Apdm, Mapping::EndpointDependent),
        (SimMapping::Adm, Mapping::EndpointDependent),
    ] {
        let mut w = World::new(Gateway::Nat(nat(m, SimFilter::Apdf)), vec![a, b], sockets(false));
        let c = cfg(&w, vec![a.addr(), b.addr()]);
        let r = w.run(c).0;
        assert_eq!(r.mapping, want, "{}", r.mapping_reason);
        assert!(!r.rfc5780);
        assert_eq!(r.filtering, Filtering::Unknown);
        assert!(r.not_tested.iter().any(|n| n.starts_with("filtering: not tested")), "{:?}", r.not_tested);
    }
}

#[test]
fn plain_servers_same_ip_two_ports() {
    let a = SimServer::plain("192.0.2.50:3478");
    let b = SimServer::plain("192.0.2.50:3479");
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Apdm, SimFilter::Apdf)), vec![a, b], sockets(false));
    let c = cfg(&w, vec![a.addr(), b.addr()]);
    assert_eq!(w.run(c).0.mapping, Mapping::AddressAndPortDependent);
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Adm, SimFilter::Apdf)), vec![a, b], sockets(false));
    let c = cfg(&w, vec![a.addr(), b.addr()]);
    let r = w.run(c).0;
    assert_eq!(r.mapping, Mapping::Unknown, "same IP cannot tell EIM from ADM");
}

#[test]
fn single_plain_server_says_what_is_missing() {
    let a = SimServer::plain("192.0.2.50:3478");
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Eim, SimFilter::Apdf)), vec![a], sockets(false));
    let c = cfg(&w, vec![a.addr()]);
    let r = w.run(c).0;
    assert_eq!(r.mapping, Mapping::Unknown);
    assert!(r.mapping_reason.contains("--server"), "{}", r.mapping_reason);
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(r.port_preserved, Some(true));
}

#[test]
fn no_server_answers_within_the_schedule() {
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Eim, SimFilter::Eif)), vec![], sockets(false));
    let c = cfg(&w, vec!["192.0.2.99:3478".parse().unwrap()]);
    let give_up = c.retransmit.give_up_after();
    let (r, took) = w.run(c);
    assert!(r.no_answer());
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(took, give_up);
    assert_eq!(w.sent, 4, "Rc requests, no more");
}

#[test]
fn server_ignoring_change_request_gives_unknown_filtering() {
    let server = SimServer::rfc5780().with_style(ServerStyle::IgnoresChange);
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Eim, SimFilter::Apdf)), vec![server], sockets(false));
    let c = cfg(&w, vec![server.addr()]);
    let r = w.run(c).0;
    assert_eq!(r.filtering, Filtering::Unknown);
    assert!(r.filtering_reason.contains("ignored CHANGE-REQUEST"), "{}", r.filtering_reason);
}

#[test]
fn lossy_network_still_correct() {
    for seed in 1..6 {
        let mut spec = nat(SimMapping::Eim, SimFilter::Adf);
        spec.hairpin = true;
        let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(false)).with_loss(20, seed);
        let mut c = cfg(&w, vec![SimServer::rfc5780().addr()]);
        c.retransmit.rc = 7;
        let r = w.run(c).0;
        assert_eq!(r.mapping, Mapping::EndpointIndependent, "seed {seed}");
        assert_eq!(r.filtering, Filtering::AddressDependent, "seed {seed}: {}", r.filtering_reason);
        assert_eq!(r.hairpin, Some(true), "seed {seed}");
    }
}

#[test]
fn lifetime_bracket() {
    let mut spec = nat(SimMapping::Eim, SimFilter::Apdf);
    spec.timeout = Duration::from_secs(30);
    let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(true));
    let mut c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    c.lifetime = Some(Duration::from_secs(160));
    let (r, took) = w.run(c);
    let range = r.lifetime.expect("requested").expect("measured");
    let expired = range.expired.expect("expires within max-wait");
    assert!(range.alive < Duration::from_secs(30) && expired >= Duration::from_secs(30), "{range:?}");
    assert!(expired - range.alive <= Duration::from_secs(5), "refined: {range:?}");
    assert!(took <= Duration::from_secs(160) + Duration::from_secs(5), "took {took:?}");
}

#[test]
fn lifetime_longer_than_max_wait() {
    let mut spec = nat(SimMapping::Eim, SimFilter::Apdf);
    spec.timeout = Duration::from_secs(300);
    let mut w = World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(true));
    let mut c = cfg(&w, vec![SimServer::rfc5780().addr()]);
    c.lifetime = Some(Duration::from_secs(60));
    let r = w.run(c).0;
    let range = r.lifetime.expect("requested").expect("measured");
    assert_eq!(range.alive, Duration::from_secs(60));
    assert_eq!(range.expired, None);
}

#[test]
fn lifetime_without_response_port_is_unknown() {
    let server = SimServer::rfc5780().with_style(ServerStyle::Legacy);
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Eim, SimFilter::Apdf)), vec![server], sockets(true));
    let mut c = cfg(&w, vec![server.addr()]);
    c.lifetime = Some(Duration::from_secs(60));
    let r = w.run(c).0;
    let e = r.lifetime.expect("requested").expect_err("cannot be measured");
    assert!(e.contains("RESPONSE-PORT"), "{e}");
}

#[test]
fn deterministic() {
    let mut spec = nat(SimMapping::Apdm, SimFilter::Apdf);
    spec.alloc = SimAlloc::Random;
    let a = run_nat(spec);
    let b = run_nat(spec);
    assert_eq!(a.observations, b.observations);
    assert_eq!(a.allocation_samples, b.allocation_samples);
}

#[test]
fn config_errors() {
    let locals = vec!["192.168.1.10:6666".parse().unwrap(); 3];
    let now = std::time::Instant::now();
    let c = Config::new(vec![], [0; 32]);
    assert_eq!(Diagnosis::new(c, locals.clone(), now).unwrap_err(), ConfigError::NoServer);
    let c = Config::new(vec!["[::1]:3478".parse().unwrap()], [0; 32]);
    let n = c.plan().count();
    let l = vec!["192.168.1.10:6666".parse().unwrap(); n];
    assert!(matches!(Diagnosis::new(c, l, now), Err(ConfigError::MixedFamilies(_))));
    let c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    assert!(matches!(Diagnosis::new(c, locals, now), Err(ConfigError::SocketCount { .. })));
    let c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    let l = vec!["192.168.1.10:6666".parse().unwrap(); c.plan().count()];
    assert_eq!(
        Diagnosis::new(c, l, now).unwrap_err(),
        ConfigError::DuplicateSocket("192.168.1.10:6666".parse().unwrap())
    );
    let mut c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    c.lifetime = Some(Duration::ZERO);
    let l = distinct_locals(c.plan().count());
    assert_eq!(Diagnosis::new(c, l, now).unwrap_err(), ConfigError::ZeroLifetime);
    assert_eq!(ConfigError::ZeroLifetime.to_string(), "lifetime wait is zero");
}

/// `n` distinct local addresses, as a caller's sockets would have.
fn distinct_locals(n: usize) -> Vec<std::net::SocketAddr> {
    (0..n).map(|i| std::net::SocketAddr::new("192.168.1.10".parse().unwrap(), 6666 + i as u16)).collect()
}

#[test]
fn garbage_is_ignored() {
    let c = Config::new(vec!["192.0.2.1:3478".parse().unwrap()], [0; 32]);
    let n = c.plan().count();
    let locals = distinct_locals(n);
    let now = std::time::Instant::now();
    let mut d = Diagnosis::new(c, locals.clone(), now).unwrap();
    let from = "192.0.2.1:3478".parse().unwrap();
    for data in [&b""[..], &[0xff; 40][..], &[0u8; 20][..], &[0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42][..]] {
        assert!(!d.handle_input(now, Received::udp(locals[0], from), data));
    }
    assert!(!d.handle_input(now, Received::udp("192.168.1.10:9".parse().unwrap(), from), &[0u8; 20]));
    assert!(!d.is_finished());
}

// ---- RFC 8489 §6.2.1 RTO cache: exact schedules, Karn's rule, loss, ICMP port unreachable ----

const FILTERING_SOCKET: usize = 1;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Send times of one transaction: start, then start + RTO·(2^n − 1).
fn sends(start: Duration, rto: Duration, rc: u32) -> Vec<Duration> {
    (0..rc).map(|n| start + rto * ((1u32 << n) - 1)).collect()
}

/// Defaults as the binary has them: RTO 500 ms, Rc 7, Rm 16, floor 100 ms.
fn default_cfg() -> Config {
    Config::new(vec![SimServer::rfc5780().addr()], [7; 32])
}

fn port_restricted_world() -> World {
    // 10 ms each way: every round trip is 20 ms.
    World::new(Gateway::Nat(nat(SimMapping::Eim, SimFilter::Apdf)), vec![SimServer::rfc5780()], sockets(false))
}

#[test]
fn learned_rto_schedule_with_floor() {
    let mut w = port_restricted_world();
    let (r, took) = w.run(default_cfg());
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    assert_eq!(r.hairpin, Some(false));
    // Test I answers at 20 ms (RTO 20 + 4·10 = 60 ms, floored to 100 ms); filtering test I, sent at 20 ms,
    // answers at 40 ms; tests II and III start then with RTO 100 ms and are never answered (the filter drops
    // them): sends at 40 + 100·(2^n − 1) ms, give up 16 RTO after the last.
    let want = sends(ms(40), ms(100), 7);
    assert_eq!(w.schedule(FILTERING_SOCKET, true), vec![want.clone(), want.clone()]);
    assert_eq!(*want.last().unwrap(), ms(6340));
    // The hairpin requests (to our own public address) start at 40 ms on the reference server's RTO.
    let hairpin: Vec<Duration> =
        w.log.iter().filter(|s| s.dst.ip() == std::net::IpAddr::V4(PUBLIC_IP)).map(|s| s.at).collect();
    let mut three = Vec::new();
    for t in &want {
        three.extend([*t; 3]);
    }
    assert_eq!(hairpin, three);
    assert_eq!(took, ms(6340 + 1600), "(2^(Rc-1) - 1 + Rm) x 100 ms after the 40 ms of answers");
    // The first transaction had the configured RTO: test I answered at once, so it was sent once.
    assert_eq!(w.schedule(0, false)[0], vec![ms(0)]);
}

#[test]
fn learned_rto_schedule_rfc6298_values() {
    let mut w = port_restricted_world();
    let mut c = default_cfg();
    c.min_rto = ms(1); // no floor in the way: the RFC 6298 values themselves
    let (r, took) = w.run(c);
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    // At 40 ms the server IP has two 20 ms samples (test I, filtering test I): SRTT 20, RTTVAR 7.5 -> RTO 50.
    let want = sends(ms(40), ms(50), 7);
    assert_eq!(w.schedule(FILTERING_SOCKET, true), vec![want.clone(), want]);
    // The hairpin test starts after one more sample (the hairpin socket's mapping): RTTVAR 5.625 -> 42.5 ms.
    let hairpin: Vec<Duration> =
        w.log.iter().filter(|s| s.dst.ip() == std::net::IpAddr::V4(PUBLIC_IP)).map(|s| s.at).step_by(3).collect();
    assert_eq!(hairpin, sends(ms(40), Duration::from_micros(42_500), 7));
    assert_eq!(took, ms(3190 + 16 * 50));
    let server = SimServer::rfc5780();
    let d = w.diag.as_ref().unwrap();
    assert_eq!(d.rtt_estimate(server.ip).unwrap().srtt, ms(20));
    // The alternate address was seeded from the primary and then measured itself (mapping tests II, III).
    assert_eq!(d.rtt_estimate(server.alt_ip).unwrap().srtt, ms(20));
}

#[test]
fn karn_no_sample_from_a_retransmitted_request() {
    // Lose test I's first request (send #0): its answer comes after the retransmission at 500 ms and is
    // ambiguous, so nothing is learned. Then lose filtering test I's first request (send #3, after mapping
    // test II; test III waits for test II's answer): it must be retransmitted after the configured 500 ms,
    // not after a learned RTO.
    let mut w = port_restricted_world().dropping_sends(&[0, 3]);
    let mut c = default_cfg();
    c.min_rto = ms(1);
    let r = w.run(c).0;
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    assert_eq!(w.schedule(0, false)[0], vec![ms(0), ms(500)], "test I");
    assert_eq!(w.schedule(FILTERING_SOCKET, false)[0], vec![ms(520), ms(1020)], "filtering test I");
    // Had the ambiguous 520 ms been taken as a sample, SRTT could not be back at exactly 20 ms.
    let d = w.diag.as_ref().unwrap();
    assert_eq!(d.rtt_estimate(SimServer::rfc5780().ip).unwrap().srtt, ms(20));

    // Control: test I answered at once, so the same loss of filtering test I's first request (now send #2)
    // is repaired after the learned 60 ms.
    let mut w = port_restricted_world().dropping_sends(&[2]);
    let mut c = default_cfg();
    c.min_rto = ms(1);
    w.run(c);
    assert_eq!(w.schedule(FILTERING_SOCKET, false)[0], vec![ms(20), ms(80)]);
}

#[test]
fn min_rto_at_initial_keeps_the_plain_schedule() {
    let mut w = port_restricted_world();
    let mut c = default_cfg();
    c.min_rto = c.retransmit.rto;
    let took = w.run(c).1;
    assert_eq!(w.schedule(FILTERING_SOCKET, true)[0], sends(ms(40), ms(500), 7));
    assert_eq!(took, ms(40 + 39_500));
}

#[test]
fn lossy_network_with_learned_rto_still_correct() {
    // 20 % loss each way with the default schedule: fewer samples, but never a wrong verdict.
    for seed in 1..=8u64 {
        for (filter, hairpin, want) in [
            (SimFilter::Apdf, false, Filtering::AddressAndPortDependent),
            (SimFilter::Adf, true, Filtering::AddressDependent),
            (SimFilter::Eif, false, Filtering::EndpointIndependent),
        ] {
            let mut spec = nat(SimMapping::Eim, filter);
            spec.hairpin = hairpin;
            let mut w =
                World::new(Gateway::Nat(spec), vec![SimServer::rfc5780()], sockets(false)).with_loss(20, seed * 7919);
            let (r, took) = w.run(default_cfg());
            assert_eq!(r.mapping, Mapping::EndpointIndependent, "seed {seed} {filter:?}: {}", r.mapping_reason);
            assert_eq!(r.filtering, want, "seed {seed} {filter:?}: {}", r.filtering_reason);
            assert_eq!(r.hairpin, Some(hairpin), "seed {seed} {filter:?}: {}", r.hairpin_reason);
            assert!(took < ms(4 * 39_500), "seed {seed}: {took:?}");
        }
    }
}

#[test]
fn slow_path_learns_a_longer_rto() {
    // 60 ms each way: RTT 120 ms -> RTO 120 + 4·60 = 360 ms after test I; the negative tests use the learned
    // value, above the floor and below the configured 500 ms.
    let mut w = port_restricted_world().with_delay(ms(60));
    let r = w.run(default_cfg()).0;
    assert_eq!(r.kind, NatKind::PortRestrictedCone);
    // Second sample (filtering test I, 120 ms): RTTVAR 45 -> RTO 300 ms.
    assert_eq!(w.schedule(FILTERING_SOCKET, true)[0], sends(ms(240), ms(300), 7));
}

// ---- ICMP port unreachable ----

#[test]
fn icmp_port_unreachable_fails_fast() {
    let wrong: std::net::SocketAddr = "192.0.2.1:3999".parse().unwrap();
    let mut w =
        World::new(Gateway::Nat(nat(SimMapping::Eim, SimFilter::Apdf)), vec![SimServer::rfc5780()], sockets(false))
            .with_icmp(Box::new(move |_, dst, _| dst == wrong));
    let mut c = default_cfg();
    c.servers = vec![wrong];
    let (r, took) = w.run(c);
    assert!(r.no_answer());
    assert_eq!(took, ms(20), "one round trip, not 39.5 s");
    assert_eq!(w.sent, 1);
    let e = r.servers[0].error.as_ref().unwrap();
    assert_eq!(e, &FailReason::Unreachable { dst: wrong });
    assert!(e.to_string().contains("port unreachable (ICMP)"), "{e}");
}

#[test]
fn icmp_on_the_filtering_socket_is_unknown_not_a_filter() {
    // Whatever produced it, an ICMP error for a changed-address request says nothing about the filter: the
    // result must be "unknown" with the reason, never address-and-port-dependent.
    let mut w = port_restricted_world()
        .with_icmp(Box::new(|socket, _, data| socket == FILTERING_SOCKET && has_change_request(data)));
    let r = w.run(default_cfg()).0;
    assert_eq!(r.filtering, Filtering::Unknown);
    assert!(r.filtering_reason.contains("port unreachable (ICMP)"), "{}", r.filtering_reason);
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.hairpin, Some(false));
}

#[test]
fn icmp_only_fails_requests_from_that_socket_to_that_address() {
    // Mapping test III's destination (alternate IP and port) rejects; test I and II are unaffected, so the
    // mapping is still known, and the filtering socket's requests to the primary address are untouched.
    let server = SimServer::rfc5780();
    let alt = std::net::SocketAddr::new(server.alt_ip, server.alt_port);
    let mut w = port_restricted_world().with_icmp(Box::new(move |socket, dst, _| socket == 0 && dst == alt));
    let r = w.run(default_cfg()).0;
    assert_eq!(r.mapping, Mapping::EndpointIndependent, "{}", r.mapping_reason);
    assert_eq!(r.observations.len(), 2);
    assert_eq!(r.filtering, Filtering::AddressAndPortDependent, "{}", r.filtering_reason);
}

#[test]
fn icmp_from_our_own_router_does_not_decide_hairpinning() {
    // A router that rejects what it does not hairpin: the ICMP errors are ignored, the test judges by arrival
    // and still ends with "false" after its schedule.
    let mut w = port_restricted_world().with_icmp(Box::new(|_, dst, _| dst.ip() == std::net::IpAddr::V4(PUBLIC_IP)));
    let (r, took) = w.run(default_cfg());
    assert_eq!(r.hairpin, Some(false), "{}", r.hairpin_reason);
    assert_eq!(took, ms(40 + 6300 + 1600));
}

fn has_change_request(data: &[u8]) -> bool {
    crate::stun::Message::parse(data).is_ok_and(|m| m.change_request().is_some())
}

// ---- hostile or broken servers: addresses they name (docs/transactions.md, "Addresses a server names") ----

/// A NAT world whose only server is `server`; the report, and every client datagram to `victim`'s IP.
fn run_against(server: SimServer, victim: &str) -> (Report, Vec<Sent>) {
    let victim: std::net::SocketAddr = victim.parse().unwrap();
    let mut w = World::new(Gateway::Nat(nat(SimMapping::Eim, SimFilter::Apdf)), vec![server], sockets(false));
    let r = w.run(default_cfg()).0;
    let hits = w.log.iter().filter(|s| s.dst.ip() == victim.ip()).cloned().collect();
    (r, hits)
}

#[test]
fn alternate_that_never_answers_gets_one_transaction() {
    // OTHER-ADDRESS names a third party with a global address: it cannot be told from a real alternate, but
    // once it leaves mapping test II unanswered, test III is not sent there too.
    let (r, hits) = run_against(SimServer::rfc5780().naming_other("192.0.2.99:3479"), "192.0.2.99:3479");
    let mut tids: Vec<_> = hits.iter().map(|s| s.tid).collect();
    tids.dedup();
    assert_eq!(tids.len(), 1, "one transaction to the named alternate: {hits:?}");
    assert_eq!(hits.len(), 7, "the RFC 8489 schedule once, not twice");
    assert_eq!(r.mapping, Mapping::Unknown);
    assert!(r.notes.iter().any(|n| n.starts_with("mapping test III was not run")), "{:?}", r.notes);
    assert!(
        r.mapping_reason.contains("mapping test III: not run, the alternate address 192.0.2.99 did not answer test II"),
        "{}",
        r.mapping_reason
    );
}

#[test]
fn unusable_alternates_are_never_sent_to() {
    for other in ["255.255.255.255:9", "0.0.0.0:0", "224.0.0.1:3479", "127.0.0.1:3479", "10.0.0.1:3479"] {
        let (r, hits) = run_against(SimServer::rfc5780().naming_other(other), other);
        assert!(hits.is_empty(), "{other}: sent there: {hits:?}");
        assert!(!r.rfc5780, "{other}: an unusable alternate is no RFC 5780 support");
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains(&format!("named {other} as its alternate address")) && n.contains("not used")),
            "{other}: {:?}",
            r.notes
        );
        assert_eq!(r.public, Some(std::net::SocketAddr::new(PUBLIC_IP.into(), 6666)), "{other}: test I still counts");
    }
}

#[test]
fn unusable_mapped_address_is_refused_and_never_sent_to() {
    // The hairpinning test sends to the mapped address: a server reporting a broadcast, unspecified, or
    // someone's private address as our public endpoint must not aim those requests there.
    for mapped in ["255.255.255.255:9", "0.0.0.0:0", "192.168.7.7:6666", "127.0.0.1:6666", "198.51.100.9:0"] {
        let (r, hits) = run_against(SimServer::rfc5780().naming_mapped(mapped), mapped);
        assert!(hits.iter().all(|s| s.dst != mapped.parse().unwrap()), "{mapped}: sent there: {hits:?}");
        assert_eq!(r.public, None, "{mapped}: not a public endpoint");
        let err = r.servers[0].error.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(err.contains(&format!("unusable answer from 192.0.2.1:3478: mapped address {mapped} is")), "{err}");
    }
}

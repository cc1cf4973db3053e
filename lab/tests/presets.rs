//! Each preset behaves as named: mapping, filtering and port preservation seen by the lab's own UDP
//! probe (not our stunclient), hairpin on and off, and the router's drop of unsolicited packets.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{probe_bin, probe_send};
use holepunch_lab::check::{self, hairpin_works, observe, start_responder};
use holepunch_lab::preset::PORT_SHIFT_XOR;
use holepunch_lab::{require_lab, Filtering, Lab, Mapping, Preset, SiteSpec};

/// Builds server + one site with `spec`, observes host a1 and checks it against the preset.
fn check_site(spec: SiteSpec) -> check::Observed {
    let preset = spec.preset;
    let expected = spec.behaviour();
    let lab = Lab::builder().server().site("a", spec).build().expect("build lab");
    let _responder = start_responder(&lab, probe_bin()).expect("responder");
    let port = 40000;
    let o = observe(&lab, probe_bin(), "a1", port).expect("observe");
    assert_eq!(o.translated, expected.translated, "{preset}: translation; saw {}", o.mapped);
    assert_eq!(o.mapping, expected.mapping, "{preset}: mapping; saw {:?}", o.mappings);
    assert_eq!(o.filtering, expected.filtering, "{preset}: filtering");
    assert_eq!(o.port_preserved, expected.port_preserving, "{preset}: port preservation; saw {}", o.mapped);
    let public = match preset {
        Preset::Firewall => lab.host("a1").ip(),
        _ => lab.public_ip("a"),
    };
    assert_eq!(o.mapped.ip(), IpAddr::V4(public), "{preset}: mapped address");
    o
}

#[test]
fn preset1_full_cone_is_eim_eif_port_preserving() {
    require_lab!();
    check_site(Preset::FullCone.into());
}

#[test]
fn preset2_address_restricted_is_eim_adf() {
    require_lab!();
    check_site(Preset::AddressRestricted.into());
}

#[test]
fn preset3_port_restricted_is_eim_apdf() {
    require_lab!();
    check_site(Preset::PortRestricted.into());
}

#[test]
fn preset4_symmetric_gets_a_new_random_port_per_destination() {
    require_lab!();
    let o = check_site(Preset::Symmetric.into());
    let ports: Vec<u16> = o.mappings.iter().map(SocketAddr::port).collect();
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2], "ports {ports:?}");
}

#[test]
fn preset5_port_shift_maps_to_a_fixed_function_of_the_port() {
    require_lab!();
    let o = check_site(Preset::PortShift.into());
    assert_eq!(o.mapped.port(), 40000 ^ PORT_SHIFT_XOR);
    assert_eq!(o.mapping, Mapping::EndpointIndependent);
}

#[test]
fn preset7_double_nat_is_eim_apdf_through_both_nats() {
    require_lab!();
    check_site(Preset::DoubleNat.into());
}

#[test]
fn preset8_firewall_does_not_translate_and_lets_only_replies_in() {
    require_lab!();
    let o = check_site(Preset::Firewall.into());
    assert_eq!(o.filtering, Filtering::AddressAndPortDependent);
}

#[test]
fn full_cone_with_two_hosts_keeps_each_mapping_apart() {
    require_lab!();
    let lab = Lab::builder().server().site("a", SiteSpec::new(Preset::FullCone).hosts(2)).build().unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    let o1 = observe(&lab, probe_bin(), "a1", 40010).unwrap();
    let o2 = observe(&lab, probe_bin(), "a2", 40020).unwrap();
    assert_eq!((o1.filtering, o2.filtering), (Filtering::EndpointIndependent, Filtering::EndpointIndependent));
    assert_ne!(o1.mapped, o2.mapped);
}

#[test]
fn preset6_hairpin_on_lets_a_host_reach_its_neighbour_via_the_public_address() {
    require_lab!();
    let lab = Lab::builder().server().site("a", Preset::Hairpin).build().unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    assert!(hairpin_works(&lab, probe_bin(), "a1", "a2", 41000, 41100).unwrap());
}

#[test]
fn preset6_hairpin_off_drops_packets_to_the_own_public_address() {
    require_lab!();
    let lab = Lab::builder().server().site("a", Preset::NoHairpin).build().unwrap();
    assert_eq!(lab.site("a").hosts().len(), 2);
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    assert!(!hairpin_works(&lab, probe_bin(), "a1", "a2", 41000, 41100).unwrap());
}

#[test]
fn hairpin_can_be_added_to_full_cone() {
    require_lab!();
    let spec = SiteSpec::new(Preset::FullCone).hosts(2).hairpin(true);
    let lab = Lab::builder().server().site("a", spec).build().unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    assert!(hairpin_works(&lab, probe_bin(), "a1", "a2", 41000, 41100).unwrap());
}

/// docs/lab.md, "Facts the lab relies on": a strict router leaves no conntrack entry for an unsolicited packet
/// to its own address; a permissive one (adversarial preset) does.
#[test]
fn strict_router_drops_unsolicited_packets_permissive_router_tracks_them() {
    require_lab!();
    let lab = Lab::builder()
        .server()
        .site("a", Preset::PortRestricted)
        .site("b", SiteSpec::new(Preset::PortRestricted).permissive())
        .build()
        .unwrap();
    for (site, expect_entry) in [("a", false), ("b", true)] {
        let to = format!("{}:7777", lab.public_ip(site));
        probe_send(lab.server(), "203.0.113.10:7000", &to, 2);
        let ct = lab.router(site).run(&["conntrack", "-L", "-p", "udp", "--dport", "7777"]).unwrap();
        assert_eq!(ct.contains("dport=7777"), expect_entry, "site {site}: conntrack {ct:?}");
    }
}

#[test]
fn nodes_and_addresses_are_as_documented() {
    require_lab!();
    let lab = Lab::builder()
        .server()
        .public_host("relay")
        .site("a", Preset::FullCone)
        .site("b", Preset::DoubleNat)
        .site("c", Preset::Firewall)
        .build()
        .unwrap();
    assert_eq!(
        lab.server().ips(),
        &["203.0.113.10".parse().unwrap(), "203.0.113.11".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(lab.host("relay").ip().to_string(), "203.0.113.20");
    assert_eq!(lab.public_ip("a").to_string(), "198.51.100.10");
    assert_eq!(lab.public_ip("b").to_string(), "198.51.100.11");
    assert_eq!(lab.site("b").isp(), Some("b-isp"));
    assert_eq!(lab.host("b-nat").ip().to_string(), "100.64.2.2");
    assert_eq!(lab.host("c1").ip().to_string(), "192.0.2.34");
    // The relay (a public host) reaches the server directly, and a firewall host's address is routed.
    lab.host("relay").run(&["ping", "-c1", "-W2", "203.0.113.11"]).unwrap();
    lab.server()
        .run(&["ping", "-c1", "-W2", "198.51.100.10"])
        .expect_err("NAT routers do not answer unsolicited pings");
    lab.host("c1").run(&["ping", "-c1", "-W2", "203.0.113.10"]).unwrap();
}

/// Preset 9: a port-mapping service on the router. A NAT-PMP mapping opens the port-restricted NAT
/// to a stranger (the alternate server address, which the host never contacted).
#[test]
fn preset9_port_mapping_service_opens_an_inbound_mapping() {
    require_lab!();
    let lab = Lab::builder().server().site("a", SiteSpec::new(Preset::PortRestricted).port_mapping()).build().unwrap();
    let gw = lab.site("a").natpmp_addr().expect("a NAT-PMP server");
    let bin = probe_bin().to_str().unwrap();
    let a1 = lab.host("a1");
    let mut listener = a1.spawn(&[bin, "probe", "listen", "--bind", "0.0.0.0:9000", "--secs", "10"]).unwrap();
    let to = |port: u16| format!("{}:{port}", lab.public_ip("a"));

    // Without a mapping the stranger is filtered.
    probe_send(lab.server(), "203.0.113.11:4100", &to(9000), 1);
    assert!(listener.wait_for_line(std::time::Duration::from_millis(500), |l| l.starts_with("got ")).is_err());

    let out = a1
        .run(&[
            bin,
            "probe",
            "natpmp",
            "--gateway",
            &gw.to_string(),
            "--internal",
            "9000",
            "--external",
            "9000",
            "--lifetime",
            "600",
        ])
        .unwrap();
    let ext: u16 = out.split_whitespace().find_map(|w| w.strip_prefix("external=")).unwrap().parse().unwrap();
    probe_send(lab.server(), "203.0.113.11:4100", &to(ext), 1);
    listener.wait_for_line(std::time::Duration::from_secs(2), |l| l.starts_with("got 203.0.113.11:4100")).unwrap();
}

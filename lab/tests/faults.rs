//! Faults: flushing a NAT's conntrack, renumbering its public address, cutting a link.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{probe_bin, probe_send};
use holepunch_lab::check::{query, responder_addrs, start_responder};
use holepunch_lab::{require_lab, Lab, Preset};

/// Sends 1 unsolicited datagram from the alternate server address to `to`.
fn send_from_alternate(lab: &Lab, to: SocketAddr) {
    probe_send(lab.server(), "203.0.113.11:4100", &to.to_string(), 1);
}

#[test]
fn flushing_conntrack_forgets_the_full_cone_mapping() {
    require_lab!();
    let lab = Lab::builder().server().site("a", Preset::FullCone).build().unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    let a1 = lab.host("a1");
    let mut cmd = a1.command(probe_bin());
    cmd.args([
        "probe",
        "listen",
        "--bind",
        "0.0.0.0:7000",
        "--hello",
        &responder_addrs()[0].to_string(),
        "--secs",
        "8",
    ]);
    let mut listener = a1.spawn_command(cmd).unwrap();
    let line = listener.wait_for_line(Duration::from_secs(4), |l| l.starts_with("mapped ")).unwrap();
    let mapped: SocketAddr = line.trim_start_matches("mapped ").parse().expect("a mapping");

    // Endpoint-independent filtering: a stranger gets in.
    send_from_alternate(&lab, mapped);
    listener.wait_for_line(Duration::from_secs(2), |l| l.starts_with("got 203.0.113.11:4100")).unwrap();

    lab.flush_conntrack("a").unwrap();
    listener.drain_lines();
    let ct = lab.router("a").run(&["conntrack", "-L"]).unwrap();
    assert!(!ct.contains("sport=7000"), "conntrack still has the flow: {ct}");
    send_from_alternate(&lab, mapped);
    let late = listener.wait_for_line(Duration::from_millis(700), |l| l.starts_with("got "));
    assert!(late.is_err(), "mapping survived the flush: {late:?}");
}

#[test]
fn changing_the_public_ip_moves_new_mappings_to_the_new_address() {
    require_lab!();
    let lab = Lab::builder().server().site("a", Preset::PortRestricted).site("b", Preset::DoubleNat).build().unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    let s1 = responder_addrs()[0].to_string();
    for (site, host) in [("a", "a1"), ("b", "b1")] {
        let old = lab.public_ip(site);
        let before =
            query(&lab, probe_bin(), host, 42000, std::slice::from_ref(&s1), Duration::from_millis(600)).unwrap();
        assert_eq!(before[0].unwrap().0.ip(), std::net::IpAddr::V4(old));
        let new = lab.change_public_ip(site).unwrap();
        assert_ne!(new, old);
        assert_eq!(lab.public_ip(site), new);
        let after =
            query(&lab, probe_bin(), host, 42000, std::slice::from_ref(&s1), Duration::from_millis(600)).unwrap();
        assert_eq!(after[0].expect("answer after renumbering").0.ip(), std::net::IpAddr::V4(new), "site {site}");
    }
}

#[test]
fn firewall_sites_have_no_public_ip_to_change() {
    require_lab!();
    let lab = Lab::builder().site("a", Preset::Firewall).build().unwrap();
    assert!(lab.change_public_ip("a").is_err());
    assert!(lab.change_public_ip("nosuchsite").is_err());
}

#[test]
fn cutting_a_link_stops_traffic_and_restoring_brings_it_back() {
    require_lab!();
    let lab = Lab::builder().server().site("a", Preset::PortRestricted).build().unwrap();
    let _responder = start_responder(&lab, probe_bin()).unwrap();
    let q = [responder_addrs()[0].to_string()];
    let t = Duration::from_millis(600);
    assert!(query(&lab, probe_bin(), "a1", 42100, &q, t).unwrap()[0].is_some());
    lab.cut_link("a").unwrap();
    assert!(query(&lab, probe_bin(), "a1", 42100, &q, t).unwrap()[0].is_none(), "traffic passed a cut link");
    lab.restore_link("a").unwrap();
    assert!(query(&lab, probe_bin(), "a1", 42100, &q, Duration::from_secs(2)).unwrap()[0].is_some());
    // The server's own link can be cut too.
    lab.cut_link("server").unwrap();
    assert!(query(&lab, probe_bin(), "a1", 42101, &q, t).unwrap()[0].is_none());
    lab.restore_link("server").unwrap();
    assert!(lab.cut_link("nosuch").is_err());
}

//! Third-party clients against our stund on loopback: coturn's turnutils_stunclient (plain and -f, RFC 5780),
//! turnutils_natdiscovery -m -f, and the classic Vovida `stun` client (RFC 3489).
//!
//! A missing tool skips the test with one line, except when CI=true: then it fails (CI must run them all).

mod common;

use common::*;
use std::time::Duration;

fn rfc5780_server() -> Server {
    Server::start(&["--primary", "127.0.0.1", "--alternate", "127.0.0.2", "--rate-limit", "0"])
}

#[test]
fn coturn_stunclient_plain() {
    let Some(bin) = tool("turnutils_stunclient", "coturn") else { return };
    let s = Server::start(&["--primary", "127.0.0.1"]);
    let (code, out) = run(&bin, &["-p", &s.port.to_string(), "127.0.0.1"], Duration::from_secs(20));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
}

#[test]
fn coturn_stunclient_rfc5780() {
    let Some(bin) = tool("turnutils_stunclient", "coturn") else { return };
    let s = rfc5780_server();
    let (p1, p2) = (s.port, s.alt_port);
    let (code, out) = run(&bin, &["-f", "-p", &p1.to_string(), "127.0.0.1"], Duration::from_secs(20));
    assert_eq!(code, Some(0), "{out}");
    // Response 1: plain; 2: change IP and port; 3: to the other address. All name OTHER-ADDRESS A2:P2.
    assert!(out.contains(&format!("Response origin: : 127.0.0.1:{p1}")), "{out}");
    assert!(out.contains(&format!("Response origin: : 127.0.0.2:{p2}")), "{out}");
    assert!(out.contains(&format!("Other addr: : 127.0.0.2:{p2}")), "{out}");
    assert!(out.contains("RFC 5780 response 3"), "{out}");
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
}

#[test]
fn coturn_natdiscovery_reports_endpoint_independent_mapping_and_filtering() {
    let Some(bin) = tool("turnutils_natdiscovery", "coturn") else { return };
    let s = rfc5780_server();
    let (code, out) = run(&bin, &["-m", "-f", "-p", &s.port.to_string(), "127.0.0.1"], Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("NAT with Endpoint Independent Mapping!"), "{out}");
    assert!(out.contains("NAT with Endpoint Independent Filtering!"), "{out}");
}

/// Vovida's classic client speaks RFC 3489 (no magic cookie): checks the RFC 3489 answer form, CHANGED-ADDRESS
/// and CHANGE-REQUEST on our four sockets. On loopback there is no NAT: "Open".
#[test]
fn vovida_stun_client_rfc3489() {
    let Some(bin) = tool("stun", "stun-client") else { return };
    let s = rfc5780_server();
    let target = format!("127.0.0.1:{}", s.port);
    let (code, out) = run(&bin, &[&target, "-v"], Duration::from_secs(30));
    // Its exit code is the NAT type bit field; 1 means "Open".
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Primary: Open"), "{out}");
    // The mapped address it saw must be its own socket ("Opened port N ... MappedAddress = 127.0.0.1:N").
    let opened: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Opened port "))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert!(!opened.is_empty(), "{out}");
    assert!(out.contains(&format!("MappedAddress = 127.0.0.1:{}", opened[0])), "{out}");
    assert!(!out.contains("Bad length"), "classic parser complained: {out}");
    assert!(s.log().contains("ready"));
}

#[test]
fn vovida_stun_client_against_plain_server() {
    let Some(bin) = tool("stun", "stun-client") else { return };
    let s = Server::start(&["--primary", "127.0.0.1", "--rate-limit", "0"]);
    let (_, out) = run(&bin, &[&format!("127.0.0.1:{}", s.port), "-v"], Duration::from_secs(30));
    // Test I (no flags) must be answered with its own address; without an alternate the rest is refused.
    assert!(out.contains("test I = 1"), "{out}");
    let opened = out.lines().find_map(|l| l.strip_prefix("Opened port ")).and_then(|r| r.split_whitespace().next());
    let opened = opened.unwrap_or_else(|| panic!("{out}"));
    assert!(out.contains(&format!("MappedAddress = 127.0.0.1:{opened}")), "{out}");
}

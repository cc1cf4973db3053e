//! stunclient against real servers on loopback: our stund and coturn in RFC 5780 mode must give the same
//! verdicts; two single-address servers exercise the multi-server inference; Vovida stund the RFC 3489 path;
//! bad servers give a one-line error and the documented exit code within the retransmission bound.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The fields every loopback run must agree on: loopback has no NAT and no filter.
fn assert_open_loopback(v: &Value, who: &str) {
    assert_eq!(v["nat"], Value::Bool(false), "{who}: {v}");
    assert_eq!(s(v, "type"), "open-internet", "{who}");
    assert_eq!(s(v, "mapping"), "endpoint-independent", "{who}");
    assert_eq!(s(v, "filtering"), "endpoint-independent", "{who}: {}", v["filtering_reason"]);
    assert_eq!(s(v, "verdict"), "direct peer-to-peer likely", "{who}");
    assert_eq!(v["port_preserved"], Value::Bool(true), "{who}");
    assert_eq!(s(v, "port_allocation"), "preserved", "{who}");
    assert_eq!(v["hairpin"], Value::Null, "{who}: no NAT, nothing to hairpin");
    assert_eq!(v["schema_version"], 1);
}

fn verdict_fields(v: &Value) -> Vec<Value> {
    ["nat", "type", "mapping", "filtering", "port_preserved", "port_allocation", "hairpin", "verdict"]
        .iter()
        .map(|k| v[*k].clone())
        .collect()
}

#[test]
fn stund_and_coturn_agree_in_rfc5780_mode() {
    let Some(turnserver) = tool("turnserver", "coturn") else { return };
    let (p, ap) = (free_port(&["127.0.0.1", "127.0.0.2"]), free_port(&["127.0.0.1", "127.0.0.2"]));
    let _ours = start_stund("127.0.0.1", p, Some(("127.0.0.2", ap)));
    let (cp, cap) = (free_port(&["127.0.0.1", "127.0.0.2"]), free_port(&["127.0.0.1", "127.0.0.2"]));
    let _coturn = start_coturn(&turnserver, &["127.0.0.1", "127.0.0.2"], cp, cap);

    let ours = diagnose(&[&["--server", &format!("127.0.0.1:{p}"), "--local-port", "0"], &FAST[..]].concat());
    let theirs = diagnose(&[&["--server", &format!("127.0.0.1:{cp}"), "--local-port", "0"], &FAST[..]].concat());
    for (v, who, alt) in [(&ours, "stund", ap), (&theirs, "coturn", cap)] {
        assert_open_loopback(v, who);
        assert_eq!(v["rfc5780"], Value::Bool(true), "{who}");
        assert_eq!(v["legacy"], Value::Bool(false), "{who}");
        assert_eq!(s(&v["servers"][0], "alternate"), format!("127.0.0.2:{alt}"), "{who}");
        // Test I, II (alternate IP) and III (alternate IP and port) all reached.
        assert_eq!(v["mappings"].as_array().unwrap().len(), 3, "{who}: {}", v["mappings"]);
        assert_eq!(v["alg"], Value::Bool(false), "{who}: both send MAPPED-ADDRESS and XOR-MAPPED-ADDRESS");
    }
    assert_eq!(verdict_fields(&ours), verdict_fields(&theirs));
}

#[test]
fn two_single_address_servers_infer_mapping() {
    let Some(turnserver) = tool("turnserver", "coturn") else { return };
    // Our stund alone on 127.0.0.1 and coturn with one address on 127.0.0.2: plain RFC 5389 servers.
    let p = free_port(&["127.0.0.1"]);
    let _a = start_stund("127.0.0.1", p, None);
    let (cp, cap) = (free_port(&["127.0.0.2"]), free_port(&["127.0.0.2"]));
    let _b = start_coturn(&turnserver, &["127.0.0.2"], cp, cap);
    let v = diagnose(
        &[
            &["--server", &format!("127.0.0.1:{p}"), "--server", &format!("127.0.0.2:{cp}")],
            &["--local-port", "0"][..],
            &FAST[..],
        ]
        .concat(),
    );
    assert_eq!(v["rfc5780"], Value::Bool(false), "{v}");
    for srv in v["servers"].as_array().unwrap() {
        assert_eq!(srv["alternate"], Value::Null, "single-address server advertised an alternate: {srv}");
    }
    let mappings = v["mappings"].as_array().unwrap();
    assert_eq!(mappings.len(), 2, "one mapping per server from the same socket");
    assert_eq!(mappings[0]["public"], mappings[1]["public"]);
    assert_eq!(s(&v, "mapping"), "endpoint-independent");
    assert_eq!(s(&v, "filtering"), "unknown");
    assert!(s(&v, "filtering_reason").contains("RFC 5780"), "{}", v["filtering_reason"]);
    let not_tested: Vec<&str> = v["not_tested"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(not_tested.iter().any(|n| n.starts_with("filtering")), "{not_tested:?}");
    let notes: Vec<&str> = v["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(notes.iter().any(|n| n.contains("inferred")), "{notes:?}");
    assert_eq!(s(&v, "verdict"), "direct peer-to-peer likely");
}

#[test]
fn single_plain_server_says_what_was_not_tested() {
    let p = free_port(&["127.0.0.1"]);
    let _a = start_stund("127.0.0.1", p, None);
    let v = diagnose(&[&["--server", &format!("127.0.0.1:{p}"), "--local-port", "0"], &FAST[..]].concat());
    assert_eq!(v["rfc5780"], Value::Bool(false));
    assert_eq!(s(&v, "filtering"), "unknown");
    // No NAT on loopback, so the mapping is known without a second server.
    assert_eq!(s(&v, "type"), "no-nat");
    assert_eq!(s(&v, "verdict"), "direct peer-to-peer likely");
}

#[test]
fn vovida_rfc3489_server_is_legacy() {
    let Some(vovida) = tool("/usr/sbin/stund", "stun-server") else { return };
    let (p, ap) = (free_port(&["127.0.0.1", "127.0.0.2"]), free_port(&["127.0.0.1", "127.0.0.2"]));
    let _v = start_vovida(&vovida, "127.0.0.1", "127.0.0.2", p, ap);
    let v = diagnose(
        &[&["--server", &format!("127.0.0.1:{p}"), "--local-port", "0", "--lifetime", "--max-wait", "1s"], &FAST[..]]
            .concat(),
    );
    assert_eq!(v["legacy"], Value::Bool(true), "{v}");
    assert_eq!(v["servers"][0]["legacy"], Value::Bool(true));
    assert_eq!(s(&v["servers"][0], "alternate"), format!("127.0.0.2:{ap}"), "CHANGED-ADDRESS used");
    let notes: Vec<&str> = v["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(notes.iter().any(|n| n.starts_with("legacy")), "{notes:?}");
    assert_open_loopback(&v, "vovida");
    // Vovida has no RESPONSE-PORT: the lifetime test must say so, not guess.
    assert_eq!(v["lifetime"]["tested"], Value::Bool(true));
    assert_eq!(v["lifetime"]["alive_seconds"], Value::Null);
    assert!(s(&v["lifetime"], "reason").contains("RESPONSE-PORT"), "{}", v["lifetime"]);
}

#[test]
fn lifetime_with_response_port() {
    let (p, ap) = (free_port(&["127.0.0.1", "127.0.0.2"]), free_port(&["127.0.0.1", "127.0.0.2"]));
    let _s = start_stund("127.0.0.1", p, Some(("127.0.0.2", ap)));
    let started = Instant::now();
    let v = diagnose(
        &[&["--server", &format!("127.0.0.1:{p}"), "--local-port", "0", "--lifetime", "--max-wait", "2s"], &FAST[..]]
            .concat(),
    );
    // No NAT: the "mapping" never expires; the test stops at --max-wait.
    assert_eq!(v["lifetime"]["tested"], Value::Bool(true), "{}", v["lifetime"]);
    assert_eq!(v["lifetime"]["alive_seconds"].as_f64(), Some(2.0), "{}", v["lifetime"]);
    assert_eq!(v["lifetime"]["expired_seconds"], Value::Null);
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by --max-wait plus one timeout");
}

#[test]
fn host_names_resolve() {
    let p = free_port(&["127.0.0.1"]);
    let _a = start_stund("127.0.0.1", p, None);
    // "localhost" comes from /etc/hosts: no DNS traffic leaves the machine.
    let v = diagnose(&[&["--server", &format!("localhost:{p}"), "--local-port", "0", "-4"], &FAST[..]].concat());
    assert_eq!(s(&v["servers"][0], "server"), format!("localhost:{p}"));
    assert_eq!(s(&v["servers"][0], "address"), format!("127.0.0.1:{p}"));
}

#[test]
fn silent_server_is_a_one_line_error_within_the_timeout() {
    // A socket that is bound but never reads: no answer and no ICMP error, so only the schedule can tell.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let out =
        run_stunclient(&[&["--server", &addr.to_string(), "--local-port", "0", "--no-portmap"], &FAST[..]].concat());
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "no answer => exit 4");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&format!("no answer from {addr}")), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout in human mode");
    // RTO 50 ms, 4 sends, Rm 16: 0.35 s + 0.8 s = 1.15 s. Nothing was learned: the server never answered.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(took >= Duration::from_millis(1100), "gave up too early: {took:?}");
}

#[test]
fn wrong_port_fails_fast_with_icmp() {
    // Nothing listens: Linux answers with ICMP port unreachable, which IP_RECVERR hands to the engine. With the
    // default schedule (39.5 s of silence) the run must still end at once.
    let p = free_port(&["127.0.0.1"]);
    let started = Instant::now();
    let out = run_stunclient(&["--server", &format!("127.0.0.1:{p}"), "--local-port", "0", "--no-portmap"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{p}: port unreachable (ICMP)")), "{stderr}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn wrong_port_among_servers_is_a_note() {
    // One good server and one wrong port, with the default schedule: the diagnosis goes on with the good one,
    // and the wrong one is a note instead of 39.5 s of waiting.
    let (p, ap) = (free_port(&["127.0.0.1", "127.0.0.2"]), free_port(&["127.0.0.1", "127.0.0.2"]));
    let _s = start_stund("127.0.0.1", p, Some(("127.0.0.2", ap)));
    let wrong = free_port(&["127.0.0.1"]);
    let started = Instant::now();
    let v = diagnose(&[
        "--server",
        &format!("127.0.0.1:{p}"),
        "--server",
        &format!("127.0.0.1:{wrong}"),
        "--local-port",
        "0",
    ]);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_open_loopback(&v, "stund + wrong port");
    assert_eq!(v["servers"][1]["answered"], Value::Bool(false));
    assert!(s(&v["servers"][1], "error").contains("port unreachable (ICMP)"), "{}", v["servers"][1]);
    let notes: Vec<&str> = v["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(notes.iter().any(|n| n.contains("port unreachable (ICMP)")), "{notes:?}");
}

#[test]
fn silent_port_json_still_prints_a_report() {
    let p = free_port(&["127.0.0.1"]);
    let out = run_stunclient(
        &[&["--json", "--no-portmap", "--server", &format!("127.0.0.1:{p}"), "--local-port", "0"], &FAST[..]].concat(),
    );
    assert_eq!(out.status.code(), Some(4));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON even without answers");
    assert_eq!(s(&v, "verdict"), "unknown");
    assert_eq!(v["public"], Value::Null);
    assert_eq!(v["servers"][0]["answered"], Value::Bool(false));
    assert!(s(&v["servers"][0], "error").contains("port unreachable (ICMP)"), "{}", v["servers"][0]);
}

#[test]
fn usage_errors() {
    let out = run_stunclient(&["--server", "127.0.0.1:notaport"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
    let out = run_stunclient(&[]);
    assert_eq!(out.status.code(), Some(2), "--server is required");
    // An IPv4 literal cannot satisfy -6: a resolution error, found without any network traffic.
    let out = run_stunclient(&["-6", "--server", "127.0.0.1:3478"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no IPv6 address"));
    for bad in ["0ms", "500us"] {
        let out = run_stunclient(&["--min-rto", bad, "--server", "127.0.0.1:3478"]);
        assert_eq!(out.status.code(), Some(2), "--min-rto {bad}");
    }
}

#[test]
fn explicit_local_port_in_use_is_an_error() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let p = free_port(&["127.0.0.1"]);
    let out = run_stunclient(
        &[&["--server", &format!("127.0.0.1:{p}"), "--local-port", &port, "--no-portmap"], &FAST[..]].concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn default_local_port_busy_falls_back() {
    let p = free_port(&["127.0.0.1"]);
    let _a = start_stund("127.0.0.1", p, None);
    // Hold 6666 ourselves if we can; if someone else holds it the fallback must happen all the same.
    let _holder = std::net::UdpSocket::bind("127.0.0.1:6666");
    let v = diagnose(&[&["--server", &format!("127.0.0.1:{p}")], &FAST[..]].concat());
    assert_ne!(s(&v, "local"), "127.0.0.1:6666");
    let notes: Vec<&str> = v["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(notes.iter().any(|n| n.contains("6666") && n.contains("in use")), "{notes:?}");
}

#[test]
fn ipv6_loopback() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        assert!(!ci(), "no IPv6 loopback under CI");
        eprintln!("SKIP: no IPv6 loopback");
        return;
    }
    let p = free_port(&["::1"]);
    let _a = start_stund("::1", p, None);
    let v = diagnose(&[&["-6", "--server", &format!("[::1]:{p}"), "--local-port", "0"], &FAST[..]].concat());
    assert!(s(&v, "local").starts_with("[::1]:"), "{}", v["local"]);
    assert_eq!(v["public"], v["local"]);
    assert_eq!(s(&v, "type"), "no-nat");
}

#[test]
fn unresolvable_name_is_exit_3() {
    // Run in a fresh network namespace with only a down loopback: the resolver cannot send a single packet,
    // so no query for this name reaches any DNS server (and the failure is immediate).
    let Some(unshare) = tool("unshare", "util-linux") else { return };
    let probe = std::process::Command::new(&unshare).args(["-n", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(!ci(), "unshare -n needs root under CI");
        eprintln!("SKIP: unshare -n not permitted");
        return;
    }
    let started = Instant::now();
    let out = std::process::Command::new(&unshare)
        .arg("-n")
        .arg(stunclient_bin())
        .args(["--server", "no-such-host.invalid", "--no-portmap", "--local-port", "0"])
        .output()
        .expect("run stunclient");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot resolve \"no-such-host.invalid\""), "{stderr}");
    // Creating a network namespace can wait seconds for the kernel's network lock while other tests build and
    // remove labs; the bound only catches a hang (the resolver itself fails at once here).
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

//! The WireGuard tunnel between punchd peers behind real nftables NATs in the NAT lab (docs/lab.md,
//! docs/tunnel.md): ping and an iperf3 TCP run between the tunnel addresses, no plaintext on the public
//! segment, the stream surviving a conntrack flush and a new public address underneath it, a wrong peer key
//! delivering nothing, and a three-peer mesh. Needs root, ip, nft, conntrack, ping, iperf3 and tcpdump; without
//! them the tests skip with one line, and under CI=true they fail.
#![cfg(unix)]

mod common;
use common::lab::World;
use holepunch::identity::SecretKey;
use holepunch::tunnel::{derived_address, DEFAULT_OVERLAY};
use holepunch_lab::{Lab, Preset, Process};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The tunnel on, device `hp0` (each peer in its own namespace).
const TUN: &str = "--tun-name hp0";

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// The tunnel address every peer derives for `key` (no address configured anywhere).
fn tunnel_ip(key: &SecretKey) -> IpAddr {
    derived_address(&key.public(), DEFAULT_OVERLAY).unwrap()
}

fn logs(ps: &mut [&mut Process]) -> String {
    ps.iter_mut().map(|p| p.drain_lines().join("\n")).collect::<Vec<_>>().join("\n----\n")
}

/// Pings `to` from lab host `host` until `count` answers come back (at most `limit`); the output on failure.
fn ping(w: &World, host: &str, to: IpAddr, count: u32, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = w
            .lab
            .host(host)
            .output(&["ping", "-n", "-c", &count.to_string(), "-i", "0.2", "-W", "1", &to.to_string()])
            .map_err(|e| e.to_string())?;
        last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() && last.contains(&format!("{count} received")) {
            return Ok(last);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("ping {to} from {host} failed within {limit:?}:\n{last}"))
}

/// Two peers with the tunnel on: bob behind `b`, alice behind `a` connecting; both paths up.
fn pair(tag: &str, a: Preset, b: Preset, extra_alice: &str) -> (World, Process, Process) {
    let lab = Lab::builder().server().site("a", a).site("b", b).build().expect("build lab");
    let w = World::new(lab, tag, "");
    let (ka, kb) = (key(1), key(2));
    let mut bob = w.punchd("b1", "bob", &kb, 6666, ("alice", &ka.public()), TUN).proc;
    let mut alice =
        w.punchd("a1", "alice", &ka, 6666, ("bob", &kb.public()), &format!("{TUN} --connect bob {extra_alice}")).proc;
    if let Err(e) = alice.wait_for_line(Duration::from_secs(15), |l| l.starts_with("path to bob opened")) {
        panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob]));
    }
    (w, alice, bob)
}

/// iperf3's JSON result of a TCP run of `secs` from `client` to `server_ip` (server on `server_host`).
fn iperf(
    w: &World,
    server_host: &str,
    client: &str,
    server_ip: IpAddr,
    secs: u32,
) -> Result<serde_json::Value, String> {
    let mut server = w
        .lab
        .host(server_host)
        .spawn(&["iperf3", "-s", "-1", "-B", &server_ip.to_string()])
        .map_err(|e| e.to_string())?;
    let _ = server.wait_for_line(Duration::from_secs(5), |l| l.contains("Server listening"));
    let out = w
        .lab
        .host(client)
        .output(&["iperf3", "-c", &server_ip.to_string(), "-t", &secs.to_string(), "-J", "--connect-timeout", "3000"])
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("iperf3 output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))?;
    if let Some(e) = v.get("error") {
        return Err(format!("iperf3: {e}"));
    }
    server.kill();
    Ok(v)
}

fn received_bits_per_second(v: &serde_json::Value) -> f64 {
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0)
}

#[test]
fn ping_and_iperf3_through_the_tunnel_with_no_plaintext_on_the_wire() {
    holepunch_lab::require_lab!();
    let (w, mut alice, mut bob) = pair("tun-basic", Preset::FullCone, Preset::PortRestricted, "");
    let (ia, ib) = (tunnel_ip(&key(1)), tunnel_ip(&key(2)));
    // Both ways.
    ping(&w, "a1", ib, 3, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    ping(&w, "b1", ia, 3, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));

    // A capture on site b's public side while a known payload crosses the tunnel: the payload never shows.
    let router = w.lab.router("b");
    let pcap = w.dir.0.join("public.pcap");
    let mut capture =
        router.spawn(&["tcpdump", "-i", "pub", "-n", "-U", "-w", pcap.to_str().unwrap(), "udp"]).expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    let marker = "6d61726b65722d686f6c6570756e6368"; // "marker-holepunch"
    let out = w
        .lab
        .host("a1")
        .output(&["ping", "-n", "-c", "3", "-i", "0.2", "-p", marker, "-s", "64", &ib.to_string()])
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    std::thread::sleep(Duration::from_millis(300));
    capture.kill();
    let bytes = std::fs::read(&pcap).expect("capture file");
    assert!(bytes.len() > 24 + 3 * 100, "the capture saw the tunnel's datagrams ({} bytes)", bytes.len());
    assert!(!bytes.windows(16).any(|win| win == b"marker-holepunch"), "plaintext on the public segment");
    assert!(!bytes.windows(8).any(|win| win == b"marker-h"), "plaintext on the public segment");

    // A short TCP run.
    let v = iperf(&w, "b1", "a1", ib, 2).unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    let bps = received_bits_per_second(&v);
    eprintln!("iperf3 through the tunnel: {:.0} Mbit/s", bps / 1e6);
    assert!(bps > 1e6, "{v}");

    // The status shows the tunnel.
    let s = common::lab::Peer::status_cli_at(&w.control("alice")).expect("status");
    assert_eq!(s["tunnel"]["device"], "hp0");
    let t = &s["peers"][0]["tunnel"];
    assert_eq!(t["address"], ib.to_string());
    assert!(t["handshake_ms_ago"].is_number(), "{s}");
    assert!(t["rx_bytes"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn an_iperf3_stream_survives_a_conntrack_flush_and_a_new_public_ip() {
    holepunch_lab::require_lab!();
    let (w, mut alice, mut bob) = pair("tun-move", Preset::FullCone, Preset::PortRestricted, "");
    let ib = tunnel_ip(&key(2));
    ping(&w, "a1", ib, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    let mut server = w.lab.host("b1").spawn(&["iperf3", "-s", "-1", "-B", &ib.to_string()]).expect("iperf3 -s");
    let _ = server.wait_for_line(Duration::from_secs(5), |l| l.contains("Server listening"));
    // 12 s of TCP; underneath it, b's router forgets every mapping at 2 s and gets a new public address at 6 s.
    let mut client = w
        .lab
        .host("a1")
        .spawn(&["iperf3", "-c", &ib.to_string(), "-t", "12", "-i", "1", "-J", "--connect-timeout", "3000"])
        .expect("iperf3 -c");
    std::thread::sleep(Duration::from_secs(2));
    w.lab.flush_conntrack("b").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let new = w.lab.change_public_ip("b").unwrap();
    let out = client.lines_until_eof(Duration::from_secs(30)).join("\n");
    server.kill();
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("iperf3 output ({e}): {out}\n{}", logs(&mut [&mut alice, &mut bob])));
    assert!(v.get("error").is_none(), "the stream was reset: {v}\n{}", logs(&mut [&mut alice, &mut bob]));
    let intervals = v["intervals"].as_array().cloned().unwrap_or_default();
    let mbits: Vec<f64> = intervals.iter().map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6).collect();
    eprintln!("per-second Mbit/s across the flush (2 s) and the new public IP {new} (6 s): {mbits:.0?}");
    assert!(mbits.len() >= 11, "{v}");
    // The stream carried data again after the move: the last seconds are not empty.
    assert!(mbits[mbits.len() - 2..].iter().all(|&m| m > 1.0), "{mbits:?}\n{}", logs(&mut [&mut alice, &mut bob]));
    // And the path did move: alice's endpoint for bob is on the new address.
    let s = common::lab::Peer::status_cli_at(&w.control("alice")).expect("status");
    let endpoint = s["peers"][0]["tunnel"]["endpoint"].as_str().unwrap_or_default().to_string();
    assert!(endpoint.starts_with(&format!("{new}:")), "{s}");
}

#[test]
fn a_wrong_peer_key_gets_no_tunnel_and_delivers_nothing() {
    holepunch_lab::require_lab!();
    let lab = Lab::builder().server().site("a", Preset::FullCone).site("b", Preset::FullCone).build().expect("lab");
    let w = World::new(lab, "tun-wrongkey", "");
    let (ka, kb, wrong, other) = (key(1), key(2), key(9), key(10));
    let mut bob = w.punchd("b1", "bob", &kb, 6666, ("alice", &ka.public()), TUN).proc;
    // Alice pins a wrong key for bob: the rendezvous introduces bob with his real key, and alice refuses it.
    // She also has "mallory", a plain WireGuard peer with a static endpoint that is really bob's (b's full
    // cone forwards it) and a key that is not bob's: her handshakes reach bob, who cannot verify them.
    let public_b = w.lab.public_ip("b");
    let mallory = format!("--peer mallory={},endpoint={public_b}:6666", other.public());
    let mut alice =
        w.punchd("a1", "alice", &ka, 6666, ("bob", &wrong.public()), &format!("{TUN} --connect bob {mallory}")).proc;
    let refused = alice.wait_for_line(Duration::from_secs(15), |l| l.contains("introduction of bob refused"));
    assert!(refused.is_ok(), "{}", logs(&mut [&mut alice, &mut bob]));
    for ip in [tunnel_ip(&wrong), tunnel_ip(&other)] {
        let out = w.lab.host("a1").output(&["ping", "-n", "-c", "2", "-i", "0.3", "-W", "1", &ip.to_string()]).unwrap();
        assert!(!out.status.success(), "a ping to {ip} answered");
    }
    let refusal = bob.wait_for_line(Duration::from_secs(5), |l| l.contains("refused: rejected: authentication failed"));
    assert!(refusal.is_ok(), "bob says why he dropped the handshakes\n{}", logs(&mut [&mut alice, &mut bob]));
    let s = common::lab::Peer::status_cli_at(&w.control("bob")).expect("bob's status");
    assert_eq!(s["peers"][0]["tunnel"]["rx_bytes"], 0, "nothing delivered to bob's device: {s}");
    assert!(s["peers"][0]["tunnel"]["handshake_ms_ago"].is_null(), "no session: {s}");
}

/// Three peers, each behind its own NAT, each configured with the other two: a mesh where every peer pings
/// the other two through the one tunnel device, packets routed by destination.
#[test]
fn three_peers_form_a_mesh() {
    holepunch_lab::require_lab!();
    let lab = Lab::builder()
        .server()
        .site("a", Preset::FullCone)
        .site("b", Preset::PortRestricted)
        .site("c", Preset::AddressRestricted)
        .build()
        .expect("lab");
    let w = World::new(lab, "tun-mesh", "");
    let names = ["alice", "bob", "carol"];
    let keys = [key(1), key(2), key(3)];
    let mut procs = Vec::new();
    for i in 0..3 {
        let (j, k) = ((i + 1) % 3, (i + 2) % 3);
        // Each connects to the next one; the third pair is asked for by both ends' neighbours in turn.
        let extra =
            format!("{TUN} --peer {}={} --connect {} --connect {}", names[k], keys[k].public(), names[j], names[k]);
        let host = format!("{}1", ["a", "b", "c"][i]);
        procs.push(w.punchd(&host, names[i], &keys[i], 6666, (names[j], &keys[j].public()), &extra).proc);
    }
    for i in 0..3 {
        for j in 0..3 {
            if i == j {
                continue;
            }
            let host = format!("{}1", ["a", "b", "c"][i]);
            if let Err(e) = ping(&w, &host, tunnel_ip(&keys[j]), 2, Duration::from_secs(20)) {
                let mut refs: Vec<&mut Process> = procs.iter_mut().collect();
                panic!("{} -> {}: {e}\n{}", names[i], names[j], logs(&mut refs));
            }
        }
    }
}

/// Site b's router has a 1400-byte MTU towards the internet and sends no ICMP "fragmentation needed" (a
/// black hole, as behind some PPPoE links and firewalls): the path opens, but a full tunnel datagram (1432
/// bytes at MTU 1400) cannot cross it. Both peers say so and what to set.
#[test]
fn a_path_that_cannot_carry_the_mtu_is_reported_with_what_to_set() {
    holepunch_lab::require_lab!();
    let lab = Lab::builder().server().site("a", Preset::FullCone).site("b", Preset::FullCone).build().expect("lab");
    let router = lab.router("b");
    router.run(&["ip", "link", "set", "dev", "pub", "mtu", "1400"]).expect("router MTU");
    router
        .run(&["nft", "add table inet hp_blackhole"])
        .and_then(|_| router.run(&["nft", "add chain inet hp_blackhole out { type filter hook output priority 0 ; }"]))
        .and_then(|_| router.run(&["nft", "add rule inet hp_blackhole out icmp type destination-unreachable drop"]))
        .expect("drop ICMP errors");
    let w = World::new(lab, "tun-mtu", "");
    let (ka, kb) = (key(1), key(2));
    let mut bob = w.punchd("b1", "bob", &kb, 6666, ("alice", &ka.public()), TUN).proc;
    let mut alice = w.punchd("a1", "alice", &ka, 6666, ("bob", &kb.public()), &format!("{TUN} --connect bob")).proc;
    let said =
        alice.wait_for_line(Duration::from_secs(20), |l| l.starts_with("path to bob lost a full-size 1432-byte"));
    let line = said.unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    assert!(line.contains("set --mtu 1280 on both peers"), "{line}");
    // Small packets still cross the tunnel.
    ping(&w, "a1", tunnel_ip(&kb), 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
}

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

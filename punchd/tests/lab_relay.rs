//! punchd through a TURN relay in the NAT lab (docs/relay.md): two peers behind symmetric NATs (no direct
//! path can open) connect through stund's TURN relay (with the credentials stund grants at registration, no
//! relay flags) and through coturn's, and the WireGuard tunnel carries ping over it; a cut direct path moves
//! to the relay and back under a running TCP stream. Needs
//! root, ip, nft and conntrack; without them the tests skip with one line, and under CI=true they fail.
#![cfg(unix)]

mod common;
use common::lab::{Peer, World};
use holepunch::identity::SecretKey;
use holepunch::tunnel::{derived_address, DEFAULT_OVERLAY};
use holepunch_lab::{Lab, Preset, Process};
use std::time::{Duration, Instant};

const TURN_SECRET: &[u8] = b"the lab's TURN REST secret\n";

fn logs(ps: &mut [&mut Process]) -> String {
    ps.iter_mut().map(|p| p.drain_lines().join("\n")).collect::<Vec<_>>().join("\n----\n")
}

#[test]
fn two_symmetric_nats_connect_through_stunds_relay_and_ping_through_the_tunnel() {
    holepunch_lab::require_lab!();
    let lab = Lab::builder().server().site("a", Preset::Symmetric).site("b", Preset::Symmetric).build().expect("lab");
    // stund with TURN on (REST credentials); the lab's public addresses are a documentation range, which the
    // relay refuses unless allowed.
    let dir = common::Scratch::new("turn-secret-stund");
    let secret = dir.private("turn.secret", TURN_SECRET);
    let stund_extra =
        format!("--auth-secret-file {} --allowed-peer-ip 198.51.100.0/24 --relay-bandwidth 0", secret.display());
    let w = World::new(lab, "relay-sym", &stund_extra);
    // No relay flags: stund relays too and grants each registered peer TURN credentials.
    through_the_relay(&w, "--tun-name hp0", "203.0.113.10:");
}

/// The same through coturn (Debian's `turnserver`, REST credentials from the same kind of shared secret) on
/// the lab server's second address: punchd allocates on any standard TURN server.
#[test]
fn two_symmetric_nats_connect_through_coturn_and_ping_through_the_tunnel() {
    holepunch_lab::require_lab!();
    let lab = Lab::builder().server().site("a", Preset::Symmetric).site("b", Preset::Symmetric).build().expect("lab");
    let dir = common::Scratch::new("turn-secret-coturn");
    let secret = dir.private("turn.secret", TURN_SECRET);
    let w = World::new(lab, "relay-coturn", "");
    let (_, alternate) = w.lab.server_ips();
    let text = String::from_utf8_lossy(TURN_SECRET).trim().to_string();
    let log = dir.0.join("coturn.log").display().to_string();
    let alt = alternate.to_string();
    let auth = format!("--static-auth-secret={text}");
    let mut coturn = w
        .lab
        .server()
        .spawn(&[
            "turnserver",
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "-L",
            &alt,
            "-E",
            &alt,
            "-p",
            "3480",
            "--min-port",
            "50000",
            "--max-port",
            "50999",
            "--use-auth-secret",
            &auth,
            "-r",
            "lab",
            "--allowed-peer-ip=198.51.100.0-198.51.100.255",
            "--no-stdout-log",
            "--log-file",
            &log,
        ])
        .expect("turnserver (Debian package coturn)");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(coturn.is_running(), "turnserver exited at start");
    let relay = format!("--tun-name hp0 --relay turn:{alt}:3480 --relay-secret-file {}", secret.display());
    through_the_relay(&w, &relay, &format!("{alt}:"));
    coturn.kill();
}

/// Alice and Bob behind the lab's two symmetric NATs with `relay` flags: a relay path on both ends, a ping
/// through the tunnel over it, and alice's relayed address starting with `relayed_prefix`.
fn through_the_relay(w: &World, relay: &str, relayed_prefix: &str) {
    let (ka, kb) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut bob = w.punchd("b1", "bob", &kb, 6666, ("alice", &ka.public()), relay).proc;
    let mut alice = w.punchd("a1", "alice", &ka, 6666, ("bob", &kb.public()), &format!("{relay} --connect bob")).proc;
    let opened = alice.wait_for_line(Duration::from_secs(20), |l| l.starts_with("path to bob opened: relay"));
    let line = opened.unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    eprintln!("{line}");
    // Both ends see a relay path.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        let a = Peer::status_cli_at(&w.control("alice"));
        let b = Peer::status_cli_at(&w.control("bob"));
        let relay_path = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(|v| v["peers"][0]["path"] == "relay");
        if relay_path(&a) && relay_path(&b) {
            last = None;
            break;
        }
        last = Some((a, b));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(last.is_none(), "{last:?}\n{}", logs(&mut [&mut alice, &mut bob]));
    // The tunnel rides on the relay.
    let ib = derived_address(&kb.public(), DEFAULT_OVERLAY).unwrap();
    let mut answered = String::new();
    for _ in 0..20 {
        let out = w.lab.host("a1").output(&["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", &ib.to_string()]).unwrap();
        answered = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(answered.contains(" 0% packet loss"), "{answered}\n{}", logs(&mut [&mut alice, &mut bob]));
    let s = Peer::status_cli_at(&w.control("alice")).unwrap();
    assert!(s["relayed"].as_str().is_some_and(|r| r.starts_with(relayed_prefix)), "{s}");
    // Two seconds of iperf3 TCP through the tunnel over the relay.
    let mut server = w.lab.host("b1").spawn(&["iperf3", "-s", "-1", "-B", &ib.to_string()]).expect("iperf3 -s");
    let _ = server.wait_for_line(Duration::from_secs(5), |l| l.contains("Server listening"));
    let out = w
        .lab
        .host("a1")
        .output(&["iperf3", "-c", &ib.to_string(), "-t", "2", "-J", "--connect-timeout", "3000"])
        .unwrap();
    server.kill();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    eprintln!("iperf3 through the tunnel over the relay: {:.0} Mbit/s", bps / 1e6);
    assert!(bps > 1e6, "{v}\n{}", logs(&mut [&mut alice, &mut bob]));
}

/// A direct path that is cut (site b's router starts dropping everything between the two public addresses):
/// the pair moves to the relay; when the cut is lifted, back to direct (direct pairs are checked again every
/// 10 s on a relay path). An iperf3 TCP stream through the tunnel carries on across both moves.
#[test]
fn a_cut_direct_path_falls_back_to_the_relay_and_back_without_breaking_a_tcp_stream() {
    holepunch_lab::require_lab!();
    let lab =
        Lab::builder().server().site("a", Preset::FullCone).site("b", Preset::PortRestricted).build().expect("lab");
    let dir = common::Scratch::new("turn-secret-cut");
    let secret = dir.private("turn.secret", TURN_SECRET);
    let stund_extra =
        format!("--auth-secret-file {} --allowed-peer-ip 198.51.100.0/24 --relay-bandwidth 0", secret.display());
    let w = World::new(lab, "relay-cut", &stund_extra);
    let relay = format!("--tun-name hp0 --relay turn:{} --relay-secret-file {}", w.server, secret.display());
    let (ka, kb) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut bob = w.punchd("b1", "bob", &kb, 6666, ("alice", &ka.public()), &relay).proc;
    let mut alice = w.punchd("a1", "alice", &ka, 6666, ("bob", &kb.public()), &format!("{relay} --connect bob")).proc;
    let opened = alice.wait_for_line(Duration::from_secs(20), |l| l.starts_with("path to bob opened: direct"));
    opened.unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    let ib = derived_address(&kb.public(), DEFAULT_OVERLAY).unwrap();
    let mut server = w.lab.host("b1").spawn(&["iperf3", "-s", "-1", "-B", &ib.to_string()]).expect("iperf3 -s");
    let _ = server.wait_for_line(Duration::from_secs(5), |l| l.contains("Server listening"));
    let mut client = w
        .lab
        .host("a1")
        .spawn(&["iperf3", "-c", &ib.to_string(), "-t", "30", "-i", "1", "-J", "--connect-timeout", "3000"])
        .expect("iperf3 -c");
    std::thread::sleep(Duration::from_secs(3));
    // Cut: b's router drops everything to and from a's public address (the relay stays reachable).
    let a_public = w.lab.public_ip("a").to_string();
    let router = w.lab.router("b");
    router
        .run(&["nft", "add table inet hp_cut"])
        .and_then(|_| router.run(&["nft", "add chain inet hp_cut cutfwd { type filter hook forward priority -10 ; }"]))
        .and_then(|_| router.run(&["nft", &format!("add rule inet hp_cut cutfwd ip saddr {a_public} drop")]))
        .and_then(|_| router.run(&["nft", &format!("add rule inet hp_cut cutfwd ip daddr {a_public} drop")]))
        .and_then(|_| {
            router.run(&["nft", "add chain inet hp_cut cutpre { type filter hook prerouting priority -400 ; }"])
        })
        .and_then(|_| router.run(&["nft", &format!("add rule inet hp_cut cutpre ip saddr {a_public} drop")]))
        .expect("cut the direct path");
    let moved = alice.wait_for_line(Duration::from_secs(20), |l| {
        l.contains("path to bob opened: relay") || l.contains("path to bob changed: relay")
    });
    let line = moved.unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    eprintln!("{line}");
    let cut = Instant::now();
    router.run(&["nft", "delete table inet hp_cut"]).expect("lift the cut");
    let back = alice.wait_for_line(Duration::from_secs(25), |l| l.starts_with("path to bob changed: direct"));
    let line = back.unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob])));
    eprintln!("{line} ({:?} after the cut was lifted)", cut.elapsed());
    let out = client.lines_until_eof(Duration::from_secs(60)).join("\n");
    server.kill();
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("iperf3 output ({e}): {out}\n{}", logs(&mut [&mut alice, &mut bob])));
    assert!(v.get("error").is_none(), "the stream broke: {v}\n{}", logs(&mut [&mut alice, &mut bob]));
    let mbits: Vec<f64> = v["intervals"]
        .as_array()
        .map(|a| a.iter().map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6).collect())
        .unwrap_or_default();
    eprintln!("per-second Mbit/s, direct path cut at 3 s, then lifted: {mbits:.0?}");
    assert!(mbits.len() >= 29, "{v}");
    assert!(mbits[mbits.len() - 3..].iter().all(|&m| m > 1.0), "no data over the relay: {mbits:?}");
}

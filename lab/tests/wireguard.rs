//! The WireGuard reference peer and the measuring helpers: two lab namespaces on the internet bridge, each
//! running Debian's wireguard-go with the other as its peer on a static endpoint (docs/lab.md, "A WireGuard
//! reference peer"); pings across the tunnel addresses both ways and a short iperf3 TCP run through it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use holepunch_lab::peers::Scratch;
use holepunch_lab::wireguard::{self, WgConfig, WgPeer, WireguardGo};
use holepunch_lab::{iperf, ping, require_lab, Lab};

const LEFT_TUN: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 1);
const RIGHT_TUN: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
const PORT: u16 = 51820;

#[test]
fn wireguard_go_pair_carries_pings_both_ways_and_tcp() {
    require_lab!();
    if wireguard::skip_unless_available("wireguard_go_pair_carries_pings_both_ways_and_tcp") {
        return;
    }
    let lab = Lab::builder().public_host("left").public_host("right").build().unwrap();
    let dir = Scratch::new("wgtest").unwrap();
    let (left, right) = (lab.host("left"), lab.host("right"));
    failed_start_leaves_nothing(left);
    let left_key = wireguard::genkey(&dir.path("left.key")).unwrap();
    let right_key = wireguard::genkey(&dir.path("right.key")).unwrap();
    let (left_pub, right_pub) = (wireguard::pubkey(&left_key).unwrap(), wireguard::pubkey(&right_key).unwrap());
    assert_ne!(left_pub, right_pub);

    // The side without keepalive first: nothing is sent before both are configured, so the first handshake is
    // not lost to a peer without its key (which would cost wireguard-go's 5 s retry).
    let right_cfg = WgConfig::new(&right_key, PORT, &format!("{RIGHT_TUN}/10"))
        .peer(WgPeer::new(&left_pub, LEFT_TUN).endpoint(SocketAddr::new(left.ip().into(), PORT)));
    let right_wg = WireguardGo::start(right, &right_cfg).unwrap();
    let left_cfg = WgConfig::new(&left_key, PORT, &format!("{LEFT_TUN}/10"))
        .peer(WgPeer::new(&right_pub, RIGHT_TUN).endpoint(SocketAddr::new(right.ip().into(), PORT)).keepalive(25));
    let left_wg = WireguardGo::start(left, &left_cfg).unwrap();

    ping::wait_reachable(left, RIGHT_TUN, Duration::from_secs(10)).unwrap();
    assert!(left_wg.latest_handshake(&right_pub).unwrap() > 0, "no handshake: {}", left_wg.dump().unwrap());
    for (from, to) in [(left, RIGHT_TUN), (right, LEFT_TUN)] {
        let s = ping::run(from, to, 5, Duration::from_millis(50)).unwrap();
        assert_eq!((s.sent, s.received), (5, 5), "{} -> {to}", from.name());
        assert!(s.p50().is_some() && s.p99() >= s.p50());
    }
    let mtu = left.run(&["ip", "-o", "link", "show", "dev", left_wg.ifname()]).unwrap();
    assert!(mtu.contains("mtu 1400"), "{mtu}");

    // TCP across the tunnel: the iperf3 server listens on the tunnel address only, so the bytes went through it.
    let _server = iperf::server(right, RIGHT_TUN, 5201).unwrap();
    let opts = iperf::ClientOpts { duration: Duration::from_secs(1), ..Default::default() };
    let r = iperf::client(left, RIGHT_TUN, 5201, opts).unwrap();
    assert!(r.bytes > 0 && r.bits_per_second > 0.0, "{r:?}");
    let (rx_bytes, _) = transfer(&left_wg, &right_pub);
    assert!(rx_bytes > 0, "{}", left_wg.dump().unwrap());
    let (_, tx_bytes) = transfer(&left_wg, &right_pub);
    assert!(tx_bytes >= r.bytes, "wireguard-go sent {tx_bytes} bytes, iperf3 received {}", r.bytes);

    // Dropping the handle removes the interface and wireguard-go's control socket.
    let (ns, ifname) = (left.netns().to_owned(), left_wg.ifname().to_owned());
    drop(left_wg);
    assert!(!Path::new(&format!("/var/run/wireguard/{ifname}.sock")).exists());
    let gone = std::process::Command::new("ip").args(["-n", &ns, "link", "show", "dev", &ifname]).output().unwrap();
    assert!(!gone.status.success(), "{ifname} still exists in {ns}");
    drop(right_wg);
}

/// Bytes received from and sent to `peer` (`wg show … dump`: fields 6 and 7 of the peer's line).
fn transfer(wg: &WireguardGo, peer: &str) -> (u64, u64) {
    let dump = wg.dump().unwrap();
    let line = dump.lines().skip(1).find(|l| l.starts_with(peer)).expect("peer line");
    let f: Vec<&str> = line.split('\t').collect();
    (f[5].parse().unwrap(), f[6].parse().unwrap())
}

/// wireguard-go starts, then `wg set` fails on a missing key: the half-made interface and the control socket
/// must go again. (Part of the one test of this file, so that no other daemon of this process runs meanwhile.)
fn failed_start_leaves_nothing(node: &holepunch_lab::Node) {
    let cfg = WgConfig::new(Path::new("/nonexistent/holepunch.key"), PORT, "100.64.1.9/10");
    let err = WireguardGo::start(node, &cfg).unwrap_err();
    assert!(err.to_string().contains("wg"), "{err}");
    let links = node.run(&["ip", "-o", "link", "show"]).unwrap();
    assert_eq!(links.lines().count(), 2, "only lo and eth0 should be left:\n{links}");
    let prefix = format!("hl{}w", std::process::id());
    let sockets: Vec<String> = std::fs::read_dir("/var/run/wireguard")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!sockets.iter().any(|n| n.starts_with(&prefix)), "left over: {sockets:?}");
}

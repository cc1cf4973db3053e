//! Interop of punchd's tunnel with another WireGuard: punchd (tunnel on) on one lab host, Debian's wireguard-go
//! configured with `wg` on another (docs/lab.md, "A WireGuard reference peer"), each pinning the other's key;
//! wireguard-go has punchd's socket as a static endpoint and punchd has wireguard-go's (`--peer
//! NAME=KEY,ip=ADDR,endpoint=IP:PORT`, docs/tunnel.md), nobody punches. Pings cross the tunnel both ways, with
//! either side starting the handshake, and a short iperf3 TCP run goes through it. Both key files come from `wg
//! genkey`: punchd's key format is WireGuard's. Needs root, ip, nft, conntrack, ping, iperf3, wireguard-go and
//! wg; under CI=true a missing one fails the test.
#![cfg(unix)]

mod common;
use common::lab::World;
use common::PUNCHD;
use holepunch_lab::wireguard::{self, WgConfig, WgPeer, WireguardGo};
use holepunch_lab::{iperf, ping, Lab, Process};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const PUNCHD_TUN: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 1);
const WG_TUN: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
const PUNCHD_PORT: u16 = 6666;
const WG_PORT: u16 = 51820;

/// punchd on `pd` and wireguard-go on `wg`, both configured; nothing sent yet (no keepalive anywhere).
struct Pair {
    // Dropped in this order: the daemons before the world's lab.
    punchd: Process,
    wg: WireguardGo,
    punchd_pub: String,
    world: World,
}

fn pair(tag: &str) -> Pair {
    let lab = Lab::builder().server().public_host("pd").public_host("wg").build().expect("build lab");
    let world = World::new(lab, tag, "");
    let (pd, wg) = (world.lab.host("pd"), world.lab.host("wg"));
    let punchd_key = wireguard::genkey(&world.dir.0.join("punchd.key")).unwrap();
    let wg_key = wireguard::genkey(&world.dir.0.join("wg.key")).unwrap();
    let punchd_pub = wireguard::pubkey(&punchd_key).unwrap();
    let wg_pub = wireguard::pubkey(&wg_key).unwrap();

    let cfg = WgConfig::new(&wg_key, WG_PORT, &format!("{WG_TUN}/10"))
        .peer(WgPeer::new(&punchd_pub, PUNCHD_TUN).endpoint(SocketAddr::new(pd.ip().into(), PUNCHD_PORT)));
    let wg_daemon = WireguardGo::start(wg, &cfg).expect("wireguard-go");

    let mut cmd = pd.command("sh");
    cmd.env("RUST_LOG", std::env::var("LAB_PUNCHD_LOG").unwrap_or_else(|_| "info".into())).arg("-c").arg(format!(
        "exec {PUNCHD} --peer-id pd --server {} --port {PUNCHD_PORT} --key {} --secret-file {} \
         --peer wg={wg_pub},ip={WG_TUN},endpoint={}:{WG_PORT} --tun-ip {PUNCHD_TUN}/10 --tun-name hp0 --mtu 1400 \
         --control {} 2>&1",
        world.server,
        punchd_key.display(),
        world.secret_file().display(),
        wg.ip(),
        world.control("pd").display(),
    ));
    let mut punchd = pd.spawn_command(cmd).expect("start punchd");
    punchd
        .wait_for_line(Duration::from_secs(15), |l| l.contains("tunnel hp0 up"))
        .unwrap_or_else(|e| panic!("punchd's tunnel did not come up: {e}\n{}", punchd.drain_lines().join("\n")));
    Pair { punchd, wg: wg_daemon, punchd_pub, world }
}

impl Pair {
    fn logs(&mut self) -> String {
        format!(
            "--- punchd ---\n{}\n--- wg ---\n{}",
            self.punchd.drain_lines().join("\n"),
            self.wg.dump().unwrap_or_default()
        )
    }

    /// Pings across the tunnel from `host` to `to` (bounded wait for the first answer, then 5 more).
    fn ping(&mut self, host: &str, to: Ipv4Addr) {
        let node = self.world.lab.host(host).clone();
        if let Err(e) = ping::wait_reachable(&node, to, Duration::from_secs(12)) {
            panic!("{host} -> {to}: {e}\n{}", self.logs());
        }
        let s = ping::run(&node, to, 5, Duration::from_millis(50)).unwrap();
        assert_eq!((s.sent, s.received), (5, 5), "{host} -> {to}\n{}", self.logs());
    }
}

#[test]
fn wireguard_go_starts_the_handshake_and_pings_cross_both_ways() {
    holepunch_lab::require_lab!();
    if wireguard::skip_unless_available("wireguard_go_starts_the_handshake_and_pings_cross_both_ways") {
        return;
    }
    let mut p = pair("wg-interop-wg");
    p.ping("wg", PUNCHD_TUN);
    assert!(p.wg.latest_handshake(&p.punchd_pub).unwrap() > 0, "{}", p.logs());
    p.ping("pd", WG_TUN);

    // TCP through the tunnel, wireguard-go's side sending: the server listens on punchd's tunnel address only.
    let _server = iperf::server(p.world.lab.host("pd"), PUNCHD_TUN, 5201).unwrap();
    let opts = iperf::ClientOpts { duration: Duration::from_secs(1), ..Default::default() };
    let r =
        iperf::client(p.world.lab.host("wg"), PUNCHD_TUN, 5201, opts).unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert!(r.bytes > 0, "{r:?}");

    // punchd's status shows the session with the plain WireGuard peer; it is a snapshot the daemon publishes
    // from its loop (docs/punchd.md), so it may lag the last packets for a moment.
    let control = p.world.control("pd");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = common::lab::Peer::status_cli_at(&control).expect("status");
        let rx = s["peers"][0]["tunnel"]["rx_bytes"].as_u64().unwrap_or(0);
        if rx >= r.bytes || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let t = &s["peers"][0]["tunnel"];
    assert_eq!(t["address"], WG_TUN.to_string(), "{s}");
    assert!(t["handshake_ms_ago"].is_number(), "{s}");
    // The inner packets punchd decrypted hold at least the TCP payload iperf3 received.
    let rx = t["rx_bytes"].as_u64().unwrap_or(0);
    assert!(rx >= r.bytes, "punchd decrypted {rx} bytes, iperf3 received {}\n{s}", r.bytes);
}

#[test]
fn punchd_starts_the_handshake_and_pings_cross_both_ways() {
    holepunch_lab::require_lab!();
    if wireguard::skip_unless_available("punchd_starts_the_handshake_and_pings_cross_both_ways") {
        return;
    }
    let mut p = pair("wg-interop-pd");
    p.ping("pd", WG_TUN);
    assert!(p.wg.latest_handshake(&p.punchd_pub).unwrap() > 0, "{}", p.logs());
    p.ping("wg", PUNCHD_TUN);
}

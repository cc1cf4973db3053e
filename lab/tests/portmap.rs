//! The port-mapping router preset: miniupnpd in a router namespace, probed with raw NAT-PMP (RFC 6886) bytes.
//!
//! Topology built here: host (192.168.77.2) <-veth-> router (lan 192.168.77.1, wan 203.0.113.10) <-veth->
//! public (203.0.113.1). The router masquerades its LAN, drops new inbound packets to itself and forwards only
//! established flows and flows a mapping dnat'ed, like the lab's presets.
//!
//! Needs root. Without root each test prints one line and passes, unless CI=true.

mod common;

use common::{run, udp_in, Netns};
use holepunch_lab::portmap::{PortMapConfig, PortMapper, FILTER_TABLE, NAT_TABLE};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const LAN_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// Root, the lab's tools and miniupnpd; without them one line and a skip, or a failure under CI=true.
fn lab_ready(test: &str) -> bool {
    if holepunch_lab::skip_unless_available(test) {
        return false;
    }
    if !std::path::Path::new("/usr/sbin/miniupnpd").exists() {
        assert!(
            !holepunch_lab::in_ci(),
            "{test}: CI=true but miniupnpd is missing (apt-get install miniupnpd-nftables)"
        );
        eprintln!("SKIP {test}: miniupnpd is missing (apt-get install miniupnpd-nftables)");
        return false;
    }
    true
}

/// A namespace of the site, `lo` up.
fn netns(role: &str) -> Netns {
    let ns = Netns::add("hppm", role);
    ns.exec(&["ip", "link", "set", "dev", "lo", "up"]);
    ns
}

struct Site {
    host: Netns,
    router: Netns,
    public: Netns,
}

const ROUTER_RULES: &str = r#"
table ip lab {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 192.168.77.0/24 oifname "wan" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct status dnat accept
    iifname "lan" oifname "wan" accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state new drop
  }
}
"#;

impl Site {
    fn new() -> Site {
        let site = Site { host: netns("h"), router: netns("r"), public: netns("p") };
        let (h, r, p) = (&site.host.0, &site.router.0, &site.public.0);
        run(&["ip", "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", "lan", "netns", r]);
        run(&["ip", "-n", p, "link", "add", "up0", "type", "veth", "peer", "name", "wan", "netns", r]);
        run(&["ip", "-n", h, "addr", "add", "192.168.77.2/24", "dev", "eth0"]);
        run(&["ip", "-n", r, "addr", "add", "192.168.77.1/24", "dev", "lan"]);
        run(&["ip", "-n", r, "addr", "add", "203.0.113.10/24", "dev", "wan"]);
        run(&["ip", "-n", p, "addr", "add", "203.0.113.1/24", "dev", "up0"]);
        for (ns, ifname) in [(h, "eth0"), (r, "lan"), (r, "wan"), (p, "up0")] {
            run(&["ip", "-n", ns, "link", "set", "dev", ifname, "up"]);
        }
        run(&["ip", "-n", h, "route", "add", "default", "via", "192.168.77.1"]);
        site.router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let rules = std::env::temp_dir().join(format!("{r}.nft"));
        std::fs::write(&rules, ROUTER_RULES).unwrap();
        site.router.exec(&["nft", "-f", rules.to_str().unwrap()]);
        let _ = std::fs::remove_file(rules);
        site
    }

    fn start_mapper(&self) -> PortMapper {
        let cfg = PortMapConfig::new(&self.router.0, "wan", WAN, "lan", LAN_ROUTER, 24);
        PortMapper::start(&cfg).unwrap_or_else(|e| panic!("start miniupnpd: {e}"))
    }
}

/// Sends a NAT-PMP request and waits for the answer with the RFC 6886 §3.1 schedule (250 ms, doubling),
/// bounded to four tries. Returns the answer's bytes.
fn natpmp(sock: &UdpSocket, gateway: SocketAddrV4, request: &[u8], opcode: u8) -> Vec<u8> {
    let mut wait = Duration::from_millis(250);
    let mut buf = [0u8; 64];
    for _ in 0..4 {
        sock.send_to(request, gateway).expect("send NAT-PMP request");
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            // Only the gateway's answer to this opcode counts (RFC 6886 §3.1).
            if from == gateway.into() && n >= 4 && buf[0] == 0 && buf[1] == 128 + opcode {
                return buf[..n].to_vec();
            }
        }
        wait *= 2;
    }
    panic!("no NAT-PMP answer to opcode {opcode} from {gateway}");
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// RFC 6886 §3.3: version 0, opcode 1 (UDP), reserved, internal port, suggested external port, lifetime.
fn map_udp_request(internal: u16, external: u16, lifetime: u32) -> Vec<u8> {
    let mut r = vec![0, 1, 0, 0];
    r.extend_from_slice(&internal.to_be_bytes());
    r.extend_from_slice(&external.to_be_bytes());
    r.extend_from_slice(&lifetime.to_be_bytes());
    r
}

/// Whether a datagram sent from the public side to `WAN:port` reaches `inside` within half a second.
fn reaches(public: &UdpSocket, port: u16, inside: &UdpSocket) -> bool {
    let target = SocketAddrV4::new(WAN, port);
    inside.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..5u8 {
        public.send_to(&[b'p', i], target).expect("public send");
        if let Ok((n, from)) = inside.recv_from(&mut buf) {
            assert_eq!(from, std::net::SocketAddr::V4(public_addr(public)));
            assert_eq!(buf[0], b'p');
            assert!(n == 2);
            return true;
        }
    }
    false
}

fn public_addr(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn natpmp_reports_the_wan_address_and_maps_udp() {
    if !lab_ready("natpmp_reports_the_wan_address_and_maps_udp") {
        return;
    }
    let site = Site::new();
    let mapper = site.start_mapper();
    let gateway = mapper.natpmp_addr();
    assert_eq!(gateway, SocketAddrV4::new(LAN_ROUTER, 5351));
    // miniupnpd learned the documentation-range WAN address by STUN and trusts it for forwarding.
    let log = mapper.log();
    assert!(log.contains("Port forwarding is now enabled"), "STUN did not enable port forwarding:\n{log}");
    let client = udp_in(&site.host.0, SocketAddrV4::new(HOST, 0));

    // External address (RFC 6886 §3.2): request 00 00, answer 00 80 result(2) epoch(4) address(4).
    let answer = natpmp(&client, gateway, &[0, 0], 0);
    assert_eq!(answer.len(), 12, "answer {answer:?}");
    assert_eq!(be16(&answer, 2), 0, "result code, log:\n{}", mapper.log());
    assert_eq!(Ipv4Addr::from(be32(&answer, 8)), WAN);

    // A UDP mapping for a socket of the host, and proof that it forwards.
    let inside = udp_in(&site.host.0, SocketAddrV4::new(HOST, 0));
    let internal = public_addr(&inside).port();
    let public = udp_in(&site.public.0, SocketAddrV4::new(PUBLIC, 0));
    assert!(!reaches(&public, internal, &inside), "the router forwards unsolicited packets even without a mapping");
    let answer = natpmp(&client, gateway, &map_udp_request(internal, internal, 600), 1);
    assert_eq!(answer.len(), 16, "answer {answer:?}");
    assert_eq!(be16(&answer, 2), 0, "result code, log:\n{}", mapper.log());
    assert_eq!(be16(&answer, 8), internal);
    let external = be16(&answer, 10);
    let lifetime = be32(&answer, 12);
    assert!(external >= 1024, "external port {external}");
    assert!((120..=600).contains(&lifetime), "lifetime {lifetime}");
    let rules = site.router.exec(&["nft", "list", "table", "inet", NAT_TABLE]);
    assert!(
        rules.contains(&format!("dport {external}")) && rules.contains("dnat"),
        "no dnat rule for {external}:\n{rules}"
    );
    assert!(reaches(&public, external, &inside), "the mapping WAN:{external} -> host:{internal} does not forward");

    // Delete (RFC 6886 §3.4): lifetime 0 and external port 0; the answer repeats the internal port.
    let answer = natpmp(&client, gateway, &map_udp_request(internal, 0, 0), 1);
    assert_eq!(be16(&answer, 2), 0, "delete result, log:\n{}", mapper.log());
    assert_eq!(be16(&answer, 8), internal);
    assert_eq!(be32(&answer, 12), 0);
    let rules = site.router.exec(&["nft", "list", "table", "inet", NAT_TABLE]);
    assert!(!rules.contains(&format!("dport {external}")), "mapping still present after delete:\n{rules}");
    // The forwarded flow above left a conntrack entry; only a new flow shows the mapping is gone.
    let public2 = udp_in(&site.public.0, SocketAddrV4::new(PUBLIC, 0));
    assert!(!reaches(&public2, external, &inside), "WAN:{external} still forwards after delete");

    // Drop stops miniupnpd and removes its tables.
    let pid = mapper.pid().expect("miniupnpd runs");
    drop(mapper);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "miniupnpd {pid} survived drop");
    let tables = site.router.exec(&["nft", "list", "tables"]);
    for t in [FILTER_TABLE, NAT_TABLE] {
        assert!(!tables.contains(t), "table {t} left behind:\n{tables}");
    }
}

#[test]
fn two_routers_run_side_by_side() {
    if !lab_ready("two_routers_run_side_by_side") {
        return;
    }
    // Separate pid files, temp dirs and namespaces: two lab sites with port mapping at once.
    let (a, b) = (Site::new(), Site::new());
    let (ma, mb) = (a.start_mapper(), b.start_mapper());
    for (site, mapper) in [(&a, &ma), (&b, &mb)] {
        let client = udp_in(&site.host.0, SocketAddrV4::new(HOST, 0));
        let answer = natpmp(&client, mapper.natpmp_addr(), &[0, 0], 0);
        assert_eq!(be16(&answer, 2), 0);
        assert_eq!(Ipv4Addr::from(be32(&answer, 8)), WAN);
    }
}

/// RFC 6887 §7.1 + §11.1: a PCP MAP request for UDP from `client`, 60 bytes.
fn pcp_map_request(client: Ipv4Addr, nonce: [u8; 12], internal: u16, lifetime: u32) -> Vec<u8> {
    let mapped = |ip: Ipv4Addr| {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&ip.octets());
        a
    };
    let mut r = vec![2, 1, 0, 0];
    r.extend_from_slice(&lifetime.to_be_bytes());
    r.extend_from_slice(&mapped(client));
    r.extend_from_slice(&nonce);
    r.extend_from_slice(&[17, 0, 0, 0]);
    r.extend_from_slice(&internal.to_be_bytes());
    r.extend_from_slice(&internal.to_be_bytes()); // suggested external port
    r.extend_from_slice(&mapped(Ipv4Addr::UNSPECIFIED));
    r
}

/// Sends a PCP request with bounded retries and returns the MAP answer carrying `nonce`.
fn pcp(sock: &UdpSocket, gateway: SocketAddrV4, request: &[u8], nonce: &[u8; 12]) -> Vec<u8> {
    let mut buf = [0u8; 1100];
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    for _ in 0..4 {
        sock.send_to(request, gateway).expect("send PCP request");
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        if from == gateway.into() && n >= 60 && buf[0] == 2 && buf[1] == 0x81 && &buf[24..36] == nonce {
            return buf[..n].to_vec();
        }
    }
    panic!("no PCP MAP answer from {gateway}");
}

#[test]
fn pcp_maps_and_upnp_describes_the_gateway() {
    if !lab_ready("pcp_maps_and_upnp_describes_the_gateway") {
        return;
    }
    let site = Site::new();
    let mapper = site.start_mapper();
    let client = udp_in(&site.host.0, SocketAddrV4::new(HOST, 0));
    let inside = udp_in(&site.host.0, SocketAddrV4::new(HOST, 0));
    let internal = public_addr(&inside).port();
    let nonce = [0x5a; 12];

    let answer = pcp(&client, mapper.natpmp_addr(), &pcp_map_request(HOST, nonce, internal, 600), &nonce);
    assert_eq!(answer[3], 0, "PCP result code, log:\n{}", mapper.log());
    assert!((120..=600).contains(&be32(&answer, 4)), "lifetime {}", be32(&answer, 4));
    assert_eq!(be16(&answer, 40), internal);
    let external = be16(&answer, 42);
    assert_eq!(&answer[44..56], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    assert_eq!(Ipv4Addr::new(answer[56], answer[57], answer[58], answer[59]), WAN);
    let public = udp_in(&site.public.0, SocketAddrV4::new(PUBLIC, 0));
    assert!(reaches(&public, external, &inside), "PCP mapping WAN:{external} does not forward");
    let answer = pcp(&client, mapper.natpmp_addr(), &pcp_map_request(HOST, nonce, internal, 0), &nonce);
    assert_eq!(answer[3], 0, "PCP delete result, log:\n{}", mapper.log());
    assert_eq!(be32(&answer, 4), 0);

    // UPnP IGD: the device description is served on the LAN address.
    let port = mapper.http_port().expect("miniupnpd logged its HTTP port");
    let body = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(format!("/run/netns/{}", site.host.0)).unwrap();
            // SAFETY: plain syscall on a valid descriptor; only this scoped thread changes namespace.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let mut tcp = std::net::TcpStream::connect_timeout(
                &SocketAddrV4::new(LAN_ROUTER, port).into(),
                Duration::from_secs(2),
            )
            .expect("connect to the UPnP HTTP server");
            tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let req = format!("GET /rootDesc.xml HTTP/1.1\r\nHost: {LAN_ROUTER}:{port}\r\nConnection: close\r\n\r\n");
            std::io::Write::write_all(&mut tcp, req.as_bytes()).unwrap();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut tcp, &mut body).expect("read the description");
            body
        })
        .join()
        .expect("HTTP thread")
    });
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("urn:schemas-upnp-org:device:InternetGatewayDevice:"), "{body}");
}

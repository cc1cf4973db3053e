//! The TURN relay of stund on loopback: coturn's `turnutils_uclient` against it (client-to-client, channels
//! and Send indications, long-term and REST credentials, no loss allowed), and the abuse cases: no allocation
//! without credentials, denied peers, the per-user quota, and memory under an Allocate flood.
//!
//! A missing tool skips the uclient tests with one line, except when CI=true: then they fail.

mod common;

use common::*;
use holepunch::stun::attr::{self, Attribute};
use holepunch::stun::integrity::long_term_key_md5;
use holepunch::stun::{Class, Message, MessageType, MessageWriter, Method};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const SECRET: &str = "northwind-test-secret";
const REALM: &str = "holepunch";
/// Shared by the tests: the driver skips ports in use, so parallel servers share the range.
const RELAY_PORTS: &str = "61000-62999";

/// stund with TURN on: a user `alice:secret`, the REST secret, loopback peers allowed, metrics on.
fn turn_server(extra: &[&str]) -> (Server, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let m = metrics.to_string();
    let mut args = vec![
        "--primary",
        "127.0.0.1",
        "--no-tcp",
        "--threads",
        "1",
        "--user",
        "alice:secret",
        "--auth-secret",
        SECRET,
        "--relay-ports",
        RELAY_PORTS,
        "--metrics",
        &m,
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), metrics)
}

/// uclient's totals: (messages sent, messages received, lost percentage text).
fn uclient_totals(out: &str) -> (u64, u64, bool) {
    let line =
        out.lines().rev().find(|l| l.contains("start_mclient: tot_send_msgs=")).unwrap_or_else(|| panic!("{out}"));
    let num = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{line}")) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let no_loss = out.contains("Total lost packets 0 (0.000000%)");
    (num("tot_send_msgs="), num("tot_recv_msgs="), no_loss)
}

/// Runs uclient client-to-client (`-y`) and checks every message came back. `creds` are its credential flags;
/// `extra` may add `-c` (no RTCP allocations: without it each client also allocates an RTP/RTCP port pair with
/// EVEN-PORT's R bit and a RESERVATION-TOKEN).
fn uclient_passes(port: u16, creds: &[&str], extra: &[&str], clients: u64, messages: u64) -> String {
    let bin = tool("turnutils_uclient", "coturn").expect("checked by the caller");
    let (p, m, n) = (port.to_string(), clients.to_string(), messages.to_string());
    let mut args = vec!["-y", "-p", &p, "-m", &m, "-n", &n, "-z", "5"];
    if !extra.contains(&"-l") {
        args.extend(["-l", "200"]);
    }
    args.extend_from_slice(creds);
    args.extend_from_slice(extra);
    args.push("127.0.0.1");
    let (code, out) = run(&bin, &args, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    let (sent, received, no_loss) = uclient_totals(&out);
    assert_eq!((sent, received), (clients * messages, clients * messages), "{out}");
    assert!(no_loss, "{out}");
    out
}

#[test]
fn coturn_uclient_rest_credentials_over_channels() {
    if tool("turnutils_uclient", "coturn").is_none() {
        return;
    }
    let (s, metrics) = turn_server(&["--allowed-peer-ip", "127.0.0.1", "--rate-limit", "0"]);
    // With RTCP: each client's Allocate asks for an even port and a reservation of the next one (EVEN-PORT
    // with R), and its second allocation takes the reservation (RESERVATION-TOKEN).
    uclient_passes(s.port, &["-W", SECRET, "-u", "carol"], &[], 4, 100);
    // Every message went client -> its relay -> the other client's relay (the peer) -> the other client.
    for direction in ["to_peer", "to_client"] {
        let name = format!("stund_turn_relayed_packets_total{{direction=\"{direction}\"}}");
        assert!(wait_metric(metrics, &name, |v| v >= 400) >= 400, "{}", s.log());
    }
    assert!(s.log().contains("reserved relay"), "no allocation took a reservation:\n{}", s.log());
}

#[test]
fn coturn_uclient_long_term_credentials() {
    if tool("turnutils_uclient", "coturn").is_none() {
        return;
    }
    let (s, metrics) = turn_server(&["--allowed-peer-ip", "127.0.0.1", "--rate-limit", "0"]);
    uclient_passes(s.port, &["-u", "alice", "-w", "secret"], &["-c"], 2, 100);
    // Send and Data indications instead of channels.
    uclient_passes(s.port, &["-u", "alice", "-w", "secret"], &["-c", "-s"], 2, 100);
    // -y with 2 clients: 2 allocations per run.
    let created = wait_metric(metrics, "stund_turn_allocations_total{event=\"created\"}", |v| v >= 4);
    assert!(created >= 4, "{created}");
    // A wrong password allocates nothing.
    let bin = tool("turnutils_uclient", "coturn").unwrap();
    let p = s.port.to_string();
    let (code, out) = run(
        &bin,
        &["-y", "-c", "-p", &p, "-n", "5", "-u", "alice", "-w", "wrong", "127.0.0.1"],
        Duration::from_secs(30),
    );
    assert!(code != Some(0) || out.contains("Cannot complete Allocation"), "{out}");
    std::thread::sleep(Duration::from_millis(300)); // the relay thread publishes every 250 ms
    assert_eq!(metric(&http_get(metrics, "/metrics"), "stund_turn_allocations_total{event=\"created\"}"), created);
}

/// TURN over TCP (RFC 8656 §3.1) on a `--tcp-port` of its own: channels with a length that needs padding
/// (RFC 8656 §12.5), and Send/Data indications.
#[test]
fn coturn_uclient_over_tcp() {
    if tool("turnutils_uclient", "coturn").is_none() {
        return;
    }
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let tcp_port = free_tcp_port().to_string();
    let m = metrics.to_string();
    let s = Server::start(&[
        "--primary",
        "127.0.0.1",
        "--threads",
        "1",
        "--tcp-port",
        &tcp_port,
        "--user",
        "alice:secret",
        "--relay-ports",
        RELAY_PORTS,
        "--allowed-peer-ip",
        "127.0.0.1",
        "--rate-limit",
        "0",
        "--metrics",
        &m,
    ]);
    let port: u16 = tcp_port.parse().unwrap();
    uclient_passes(port, &["-u", "alice", "-w", "secret"], &["-c", "-t", "-l", "171"], 2, 100);
    uclient_passes(port, &["-u", "alice", "-w", "secret"], &["-c", "-t", "-s"], 2, 100);
    // The allocations ended with their connections.
    assert_eq!(wait_metric(metrics, "stund_turn_allocations", |v| v == 0), 0, "{}", s.log());
}

/// A tiny TURN client over the library's codec for the abuse tests.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    nonce: String,
    user: String,
    password: String,
    n: u32,
}

impl Client {
    fn new(server: SocketAddr, user: &str, password: &str) -> Client {
        Client { sock: client(false), server, nonce: String::new(), user: user.into(), password: password.into(), n: 0 }
    }

    /// One request; signed when `signed` (after the first 401 taught us the nonce).
    fn request(&mut self, method: Method, signed: bool, fill: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        self.n += 1;
        let mut tid = [3u8; 12];
        tid[..4].copy_from_slice(&self.n.to_be_bytes());
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), &tid).unwrap();
        fill(&mut w);
        if signed {
            w.add(&Attribute::Username(&self.user)).unwrap();
            w.add(&Attribute::Realm(REALM)).unwrap();
            w.add(&Attribute::Nonce(&self.nonce)).unwrap();
            w.add_message_integrity(&long_term_key_md5(&self.user, REALM, &self.password)).unwrap();
        }
        let n = w.finish();
        let (resp, _) = transact(&self.sock, self.server, &buf[..n]).expect("an answer");
        resp
    }

    /// The error code of an answer (0: success).
    fn code(resp: &[u8]) -> u16 {
        Message::parse(resp).unwrap().error_code().map_or(0, |e| e.code)
    }

    /// Allocate: the unsigned request (401, learn the nonce), then the signed one. Returns its error code.
    fn allocate(&mut self) -> u16 {
        let first = self.request(Method::ALLOCATE, false, |w| w.add(&Attribute::RequestedTransport(17)).unwrap());
        let m = Message::parse(&first).unwrap();
        assert_eq!(m.error_code().map(|e| e.code), Some(401));
        assert!(m.raw(attr::MESSAGE_INTEGRITY).is_none());
        if let Ok(Some(Attribute::Nonce(n))) = m.get(attr::NONCE) {
            self.nonce = n.to_string();
        }
        let r = self.request(Method::ALLOCATE, true, |w| w.add(&Attribute::RequestedTransport(17)).unwrap());
        Self::code(&r)
    }

    fn permit(&mut self, peer: SocketAddr) -> u16 {
        let r = self.request(Method::CREATE_PERMISSION, true, |w| w.add(&Attribute::XorPeerAddress(peer)).unwrap());
        Self::code(&r)
    }
}

#[test]
fn no_allocation_without_credentials() {
    let (s, metrics) = turn_server(&[]);
    let server = SocketAddr::from(([127, 0, 0, 1], s.port));
    let mut c = Client::new(server, "alice", "wrong");
    assert_eq!(c.allocate(), 401);
    let mut c = Client::new(server, "mallory", "secret");
    assert_eq!(c.allocate(), 401);
    assert!(wait_metric(metrics, "stund_turn_refused_total{reason=\"auth\"}", |v| v >= 2) >= 2);
    assert_eq!(metric(&http_get(metrics, "/metrics"), "stund_turn_allocations"), 0);
    // Without --user or --auth-secret, TURN is off: no Allocate gets a success.
    let off = Server::start(&["--primary", "127.0.0.1", "--no-tcp"]);
    let c = Client::new(SocketAddr::from(([127, 0, 0, 1], off.port)), "alice", "secret");
    c.sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), &[1; 12]).unwrap();
    w.add(&Attribute::RequestedTransport(17)).unwrap();
    let n = w.finish();
    if let Some((resp, _)) = transact(&c.sock, c.server, &buf[..n]) {
        assert_ne!(Message::parse(&resp).unwrap().class(), Class::Success);
    }
}

#[test]
fn relay_to_denied_addresses_is_refused() {
    let (s, metrics) = turn_server(&["--allowed-peer-ip", "127.0.0.0/8", "--denied-peer-ip", "127.0.0.99"]);
    let server = SocketAddr::from(([127, 0, 0, 1], s.port));
    let mut c = Client::new(server, "alice", "secret");
    assert_eq!(c.allocate(), 0);
    for peer in [
        "10.0.0.1:9",         // private, not allowed
        "169.254.169.254:80", // link-local (cloud metadata)
        "127.0.0.99:9",       // denied, though inside an allowed range
        "[::1]:9",            // loopback of the other family
    ] {
        let code = c.permit(peer.parse().unwrap());
        assert!(code == 403 || code == 443, "{peer}: {code}");
    }
    // The server's own listening port, though 127.0.0.0/8 is allowed: only relay ports are peers there.
    assert_eq!(c.permit(server), 403);
    assert_eq!(c.permit("127.0.0.2:9".parse().unwrap()), 0);
    assert!(wait_metric(metrics, "stund_turn_refused_total{reason=\"peer_denied\"}", |v| v >= 3) >= 3);
}

#[test]
fn quota_exceeded_is_486() {
    let (s, metrics) = turn_server(&["--user-quota", "2"]);
    let server = SocketAddr::from(([127, 0, 0, 1], s.port));
    let mut clients: Vec<Client> = (0..3).map(|_| Client::new(server, "alice", "secret")).collect();
    let codes: Vec<u16> = clients.iter_mut().map(Client::allocate).collect();
    assert_eq!(codes, [0, 0, 486]);
    assert_eq!(wait_metric(metrics, "stund_turn_refused_total{reason=\"quota\"}", |v| v >= 1), 1);
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An Allocate flood, unauthenticated and authenticated, leaves stund's memory where it was: unauthenticated
/// requests keep no state, and authenticated ones stop at --max-allocations.
#[test]
fn memory_bounded_under_allocate_flood() {
    let (s, metrics) = turn_server(&["--rate-limit", "0", "--max-allocations", "20", "--user-quota", "1000"]);
    let server = SocketAddr::from(([127, 0, 0, 1], s.port));
    let before = rss_kib(s.pid());
    let flood = client(false);
    let mut buf = [0u8; 64];
    for i in 0..20_000u32 {
        let mut tid = [5u8; 12];
        tid[..4].copy_from_slice(&i.to_be_bytes());
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), &tid).unwrap();
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        let n = w.finish();
        let _ = flood.send_to(&buf[..n], server);
        if i % 64 == 0 {
            // Let the server keep up rather than overflow the socket buffer (bounded: 20000 sends).
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut codes = Vec::new();
    for _ in 0..60 {
        let mut c = Client::new(server, "alice", "secret");
        codes.push(c.allocate());
        std::mem::forget(c.sock); // keep the 5-tuple (and its allocation) alive until the end
    }
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 20, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 508).count(), 40, "{codes:?}");
    assert_eq!(wait_metric(metrics, "stund_turn_allocations", |v| v >= 20), 20);
    let after = rss_kib(s.pid());
    // 20 allocations are well under a MiB; allow generous slack for the allocator.
    assert!(after < before + 8 * 1024, "RSS grew from {before} KiB to {after} KiB");
}

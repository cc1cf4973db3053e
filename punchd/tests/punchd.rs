//! punchd end to end on loopback, against a tiny STUN responder in the test (so the daemon is checked without
//! depending on stund).

use holepunch::stun::{Attribute, Class, Message, MessageType, MessageWriter, Method};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

struct Responder {
    addr: SocketAddr,
    answered: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers Binding requests with the true source, or with its port shifted by `shift` after `after` answers
/// (a NAT that re-mapped the flow).
fn responder(after: u32, shift: u16) -> Responder {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = sock.local_addr().unwrap();
    let answered = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, s) = (answered.clone(), stop.clone());
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            let Ok(req) = Message::parse(&buf[..n]) else { continue };
            let count = a.fetch_add(1, Ordering::Relaxed);
            let mut mapped = from;
            if count >= after {
                mapped.set_port(from.port().wrapping_add(shift));
            }
            let mut out = [0u8; 128];
            let ty = MessageType::new(Method::BINDING, Class::Success);
            let mut w = MessageWriter::new(&mut out, ty, req.transaction_id()).unwrap();
            w.add(&Attribute::XorMappedAddress(mapped)).unwrap();
            let len = w.finish();
            let _ = sock.send_to(&out[..len], from);
        }
    });
    Responder { addr, answered, stop }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn punchd(args: &[&str]) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_punchd"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// punchd bound to 127.0.0.1:`port`, tracking `server`, with `extra` flags.
fn on_loopback(server: SocketAddr, port: u16, extra: &[&str]) -> Daemon {
    let (server, port) = (server.to_string(), port.to_string());
    let mut args = vec!["--server", &server, "--port", &port, "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    punchd(&args)
}

fn wait_exit(d: &mut Daemon, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = d.0.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "punchd did not exit within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn once_prints_the_public_endpoint() {
    let r = responder(u32::MAX, 0);
    let port = free_udp_port();
    let mut d = on_loopback(r.addr, port, &["--once", "--json"]);
    assert!(wait_exit(&mut d, Duration::from_secs(10)).success());
    let line = BufReader::new(d.0.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "discovered");
    assert_eq!(v["public"], format!("127.0.0.1:{port}"), "loopback has no NAT: public is the fixed local port");
    assert_eq!(v["local"], format!("127.0.0.1:{port}"));
}

#[test]
fn keepalives_continue_and_a_moved_mapping_is_reported() {
    let r = responder(2, 1000);
    let port = free_udp_port();
    let mut d = on_loopback(r.addr, port, &["--keepalive", "100ms", "--json"]);
    let mut lines = BufReader::new(d.0.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "discovered");
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["event"], "changed");
    assert_eq!(second["old"], format!("127.0.0.1:{port}"));
    assert_eq!(second["public"], format!("127.0.0.1:{}", port.wrapping_add(1000)));
    assert!(r.answered.load(Ordering::Relaxed) >= 3, "keepalives kept coming");
}

#[test]
fn silent_server_is_reported_not_hung() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never answers
    let port = free_udp_port();
    let mut d =
        on_loopback(silent.local_addr().unwrap(), port, &["--rto", "50ms", "--retries", "2", "--once", "--json"]);
    let st = wait_exit(&mut d, Duration::from_secs(10));
    assert_eq!(st.code(), Some(2));
    let line = BufReader::new(d.0.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    assert!(line.contains("server-lost"), "{line}");
}

#[test]
fn port_in_use_is_a_one_line_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut d = on_loopback("127.0.0.1:3478".parse().unwrap(), port, &["--once"]);
    let st = wait_exit(&mut d, Duration::from_secs(10));
    assert_eq!(st.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut d.0.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn sigterm_stops_it_cleanly() {
    let r = responder(u32::MAX, 0);
    let port = free_udp_port();
    let mut d = on_loopback(r.addr, port, &[]);
    let mut lines = BufReader::new(d.0.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("public endpoint"));
    let pid = d.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(wait_exit(&mut d, Duration::from_secs(5)).success());
}

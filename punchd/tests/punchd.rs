//! punchd end to end on loopback, against a tiny STUN responder in the test (so the daemon is checked without
//! depending on stund).

use holepunch::stun::{Attribute, Class, ErrorCode, Message, MessageType, MessageWriter, Method};
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
    serve(move |req, from, count| {
        let mut mapped = from;
        if count >= after {
            mapped.set_port(from.port().wrapping_add(shift));
        }
        reply(req, Class::Success, |w| w.add(&Attribute::XorMappedAddress(mapped)).unwrap())
    })
}

/// A message of `class` for `req`'s transaction, with the attributes `add` writes.
fn reply(req: &Message<'_>, class: Class, add: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut out = [0u8; 256];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, class), req.transaction_id()).unwrap();
    add(&mut w);
    let len = w.finish();
    out[..len].to_vec()
}

/// A loopback STUN "server" whose answer to the `count`-th request from `from` is `answer(..)` (hostile ones
/// included); bounded to 60 s.
fn serve(answer: impl Fn(&Message<'_>, SocketAddr, u32) -> Vec<u8> + Send + 'static) -> Responder {
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
            let _ = sock.send_to(&answer(&req, from, count), from);
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

fn stdout_of(d: &mut Daemon) -> String {
    let mut out = String::new();
    std::io::Read::read_to_string(&mut d.0.stdout.take().unwrap(), &mut out).unwrap();
    out
}

fn stderr_of(d: &mut Daemon) -> String {
    let mut err = String::new();
    std::io::Read::read_to_string(&mut d.0.stderr.take().unwrap(), &mut err).unwrap();
    err
}

/// `--once` against a server answering every request with `answer`: the exit code and stdout.
fn once_against(
    answer: impl Fn(&Message<'_>, SocketAddr, u32) -> Vec<u8> + Send + 'static,
    extra: &[&str],
    limit: Duration,
) -> (Option<i32>, String) {
    let r = serve(answer);
    let mut args = vec!["--once"];
    args.extend_from_slice(extra);
    let mut d = on_loopback(r.addr, free_udp_port(), &args);
    let st = wait_exit(&mut d, limit);
    (st.code(), stdout_of(&mut d))
}

#[test]
fn once_ends_with_exit_3_on_error_responses() {
    // Each used to leave --once sending a keepalive every 3 s forever.
    type Add = fn(&mut MessageWriter<'_>);
    let cases: [(&str, Add); 3] = [
        ("400", |w| w.add(&Attribute::ErrorCode(ErrorCode { code: 400, reason: "Bad Request" })).unwrap()),
        ("300", |w| w.add(&Attribute::ErrorCode(ErrorCode { code: 300, reason: "Try Alternate" })).unwrap()),
        ("no ERROR-CODE", |_| {}),
    ];
    for (what, add) in cases {
        let started = Instant::now();
        let (code, out) =
            once_against(move |req, _, _| reply(req, Class::Error, add), &["--json"], Duration::from_secs(10));
        assert_eq!(code, Some(3), "{what}: {out}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["event"], "refused", "{what}");
        assert!(v["reason"].as_str().unwrap().contains("answered with"), "{what}: {v}");
        assert!(started.elapsed() < Duration::from_secs(3), "{what}: at once, not after the schedule");
    }
}

#[test]
fn once_ends_with_exit_3_on_unusable_success() {
    let mapped = |m: &'static str| {
        move |req: &Message<'_>, _: SocketAddr, _: u32| {
            reply(req, Class::Success, |w| w.add(&Attribute::XorMappedAddress(m.parse().unwrap())).unwrap())
        }
    };
    for bad in ["0.0.0.0:0", "255.255.255.255:9", "192.168.1.20:6666", "127.0.0.1:0"] {
        let (code, out) = once_against(mapped(bad), &[], Duration::from_secs(10));
        assert_eq!(code, Some(3), "{bad}: {out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("server answered without a usable public endpoint"), "{out}");
        assert!(out.contains(&format!("mapped address {bad} is")), "{out}");
        assert!(!out.contains("public endpoint 0") && !out.contains("public endpoint 2"), "never announced: {out}");
    }
    let (code, out) = once_against(|req, _, _| reply(req, Class::Success, |_| {}), &[], Duration::from_secs(10));
    assert_eq!(code, Some(3), "no mapped address: {out}");
    assert!(out.contains("carries no mapped address"), "{out}");
}

#[test]
fn once_refuses_unknown_comprehension_required_attributes() {
    // RFC 8489 §6.3.3: a success response with an unknown comprehension-required attribute fails the
    // transaction, even with a perfectly good XOR-MAPPED-ADDRESS next to it.
    let (code, out) = once_against(
        |req, from, _| {
            reply(req, Class::Success, |w| {
                w.add(&Attribute::XorMappedAddress(from)).unwrap();
                w.add_raw(0x7f01, b"what").unwrap();
            })
        },
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("unknown comprehension-required attributes 0x7f01"), "{out}");
}

#[test]
fn once_ends_with_exit_2_within_the_schedule_when_only_indications_come_back() {
    // An indication is not an answer (RFC 8489 §6.3): the transaction runs out its schedule. With --rto 50ms
    // and --retries 2 that is 50 ms x (2^1 - 1 + 16) = 0.85 s.
    let started = Instant::now();
    let (code, out) = once_against(
        |req, from, _| reply(req, Class::Indication, |w| w.add(&Attribute::XorMappedAddress(from)).unwrap()),
        &["--rto", "50ms", "--retries", "2"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("server does not answer"), "{out}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn server_text_cannot_forge_lines() {
    let forged = "Bad\x1b[2J\r\npublic endpoint 203.0.113.66:1 (local 127.0.0.1:1)\x07";
    let (code, out) = once_against(
        move |req, _, _| {
            reply(req, Class::Error, |w| w.add(&Attribute::ErrorCode(ErrorCode { code: 400, reason: forged })).unwrap())
        },
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(3));
    assert_eq!(out.lines().count(), 1, "one line, whatever the server wrote: {out:?}");
    assert!(!out.trim_end().chars().any(char::is_control), "{out:?}");
    assert!(out.contains("Bad\\u{1b}[2J\\r\\npublic endpoint 203.0.113.66:1"), "{out:?}");
}

#[test]
fn zero_or_tiny_intervals_are_usage_errors() {
    for (flag, value) in [("--rto", "0s"), ("--keepalive", "0s"), ("--rto", "500us"), ("--keepalive", "10ms")] {
        let mut d = on_loopback("127.0.0.1:3478".parse().unwrap(), free_udp_port(), &[flag, value]);
        let st = wait_exit(&mut d, Duration::from_secs(5));
        assert_eq!(st.code(), Some(4), "{flag} {value}");
        let err = stderr_of(&mut d);
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        assert!(err.contains(flag) && err.contains("must be at least"), "{err}");
    }
    let mut d = on_loopback("127.0.0.1:3478".parse().unwrap(), free_udp_port(), &["--retries", "0"]);
    assert_eq!(wait_exit(&mut d, Duration::from_secs(5)).code(), Some(4), "every usage error is exit 4");
    let mut d = punchd(&["--port", "1"]);
    assert_eq!(wait_exit(&mut d, Duration::from_secs(5)).code(), Some(4));
    let err = stderr_of(&mut d);
    assert_eq!(
        err.trim_end().lines().collect::<Vec<_>>(),
        ["punchd: the following required arguments were not provided: --server <SERVER>"]
    );
}

#[test]
fn help_lists_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_punchd")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "0  --once: the public endpoint",
        "2  --once: the server did not answer",
        "3  --once: the server answered",
        "4  usage error",
    ] {
        assert!(help.contains(line), "{line}: {help}");
    }
}

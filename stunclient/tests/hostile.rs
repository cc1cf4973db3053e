//! stunclient against hostile or broken STUN servers on loopback (a responder in the test): addresses a server
//! names are used only when docs/transactions.md's rule allows them, an alternate that never answered gets one
//! transaction, unusable answers are errors, and a server's text cannot drive the terminal.
//! Every address used here is on 127.0.0.0/8 or is one no datagram can leave for (broadcast without
//! SO_BROADCAST, port 0).

mod common;
use common::*;
use holepunch::stun::{Attribute, Class, ErrorCode, Message, MessageType, MessageWriter, Method};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A loopback socket that answers each Binding request with `answer(request, source)` (or counts what it
/// receives when `answer` is None: a victim that never answers). Stops when dropped, or after 60 s.
struct Endpoint {
    addr: SocketAddr,
    received: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Answer = Box<dyn Fn(&Message<'_>, SocketAddr) -> Vec<u8> + Send>;

fn endpoint(bind: &str, answer: Option<Answer>) -> Endpoint {
    let sock = UdpSocket::bind(bind).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = sock.local_addr().unwrap();
    let received = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (r, s) = (received.clone(), stop.clone());
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            r.fetch_add(1, Ordering::Relaxed);
            let (Some(answer), Ok(req)) = (&answer, Message::parse(&buf[..n])) else { continue };
            let _ = sock.send_to(&answer(&req, from), from);
        }
    });
    Endpoint { addr, received, stop }
}

fn reply(req: &Message<'_>, class: Class, add: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut out = [0u8; 512];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, class), req.transaction_id()).unwrap();
    add(&mut w);
    let n = w.finish();
    out[..n].to_vec()
}

/// A server on 127.0.0.1 that answers with the true source and advertises `other` as its alternate.
fn naming_other(other: SocketAddr) -> Endpoint {
    endpoint(
        "127.0.0.1:0",
        Some(Box::new(move |req, from| {
            reply(req, Class::Success, |w| {
                w.add(&Attribute::XorMappedAddress(from)).unwrap();
                w.add(&Attribute::OtherAddress(other)).unwrap();
            })
        })),
    )
}

/// A server on 127.0.0.1 that reports `mapped` as everybody's public endpoint.
fn naming_mapped(mapped: SocketAddr) -> Endpoint {
    endpoint(
        "127.0.0.1:0",
        Some(Box::new(move |req, _| {
            reply(req, Class::Success, |w| w.add(&Attribute::XorMappedAddress(mapped)).unwrap())
        })),
    )
}

fn error_server(code: u16, reason: &'static str) -> Endpoint {
    endpoint(
        "127.0.0.1:0",
        Some(Box::new(move |req, _| {
            reply(req, Class::Error, |w| w.add(&Attribute::ErrorCode(ErrorCode { code, reason })).unwrap())
        })),
    )
}

fn run(server: SocketAddr, extra: &[&str]) -> std::process::Output {
    let server = server.to_string();
    run_stunclient(&[&["--server", &server, "--local-port", "0", "--no-portmap"], extra, &FAST[..]].concat())
}

#[test]
fn alternate_that_never_answers_gets_one_transaction() {
    // The "alternate" 127.0.0.3 is a third party that never answers: mapping test II goes to its IP at the
    // server's port; test III would go to the advertised address itself. Both are watched.
    let victim = endpoint("127.0.0.3:0", None);
    let server = naming_other(victim.addr);
    let victim_at_server_port = endpoint(&format!("127.0.0.3:{}", server.addr.port()), None);
    let v = diagnose(&[&["--server", &server.addr.to_string(), "--local-port", "0"], &FAST[..]].concat());
    let total = victim.received.load(Ordering::Relaxed) + victim_at_server_port.received.load(Ordering::Relaxed);
    assert_eq!(total, 4, "one transaction of --retries 4 to the silent alternate, then no more");
    assert_eq!(victim.received.load(Ordering::Relaxed), 0, "test III not started after test II went unanswered");
    assert_eq!(v["rfc5780"], Value::Bool(true), "the alternate itself was usable: {v}");
    let notes: Vec<&str> = v["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(
        notes.iter().any(|n| n.starts_with("mapping test III was not run: the alternate address 127.0.0.3 did not")),
        "the report says why: {notes:?}"
    );
}

#[test]
fn unusable_alternates_are_not_used() {
    for other in ["255.255.255.255:9", "0.0.0.0:0", "127.0.0.3:0"] {
        let server = naming_other(other.parse().unwrap());
        let v = diagnose(&[&["--server", &server.addr.to_string(), "--local-port", "0"], &FAST[..]].concat());
        assert_eq!(v["rfc5780"], Value::Bool(false), "{other}: {v}");
        assert_eq!(s(&v["servers"][0], "alternate"), other, "reported as advertised");
        let notes: Vec<&str> = v["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.contains(&format!("named {other} as its alternate address")) && n.contains("not used")),
            "{other}: {notes:?}"
        );
        assert!(!notes.iter().any(|n| n.contains("sending to")), "{other}: nothing was sent there: {notes:?}");
    }
    let server = naming_other("255.255.255.255:9".parse().unwrap());
    let out = run(server.addr, &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("alternate 255.255.255.255:9 (not used: a broadcast address)"), "{stdout}");
}

#[test]
fn unusable_mapped_address_is_not_an_answer() {
    for mapped in ["0.0.0.0:0", "255.255.255.255:9", "127.0.0.1:0"] {
        let server = naming_mapped(mapped.parse().unwrap());
        let out = run(server.addr, &[]);
        assert_eq!(out.status.code(), Some(4), "{mapped}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        let want = format!("unusable answer from {}: mapped address {mapped} is", server.addr);
        assert!(stderr.contains(&want), "{mapped}: {stderr}");
    }
}

#[test]
fn unknown_comprehension_required_attribute_is_not_an_answer() {
    // RFC 8489 §6.3.3: the transaction fails, even with a good XOR-MAPPED-ADDRESS next to the attribute.
    let server = endpoint(
        "127.0.0.1:0",
        Some(Box::new(|req, from| {
            reply(req, Class::Success, |w| {
                w.add(&Attribute::XorMappedAddress(from)).unwrap();
                w.add_raw(0x7f01, b"what").unwrap();
            })
        })),
    );
    let out = run(server.addr, &[]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown comprehension-required attributes 0x7f01"), "{stderr}");
}

const FORGED: &str = "Bad\x1b[2J\r\nVerdict: direct peer-to-peer likely\x07\u{202e}";

#[test]
fn error_reason_cannot_forge_lines_on_stderr() {
    let server = error_server(400, FORGED);
    let out = run(server.addr, &[]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(!stderr.trim_end().chars().any(char::is_control), "{stderr:?}");
    assert!(
        stderr.contains("error 400 Bad\\u{1b}[2J\\r\\nVerdict: direct peer-to-peer likely\\u{7}\\u{202e}"),
        "{stderr:?}"
    );
}

#[test]
fn error_reason_cannot_forge_lines_in_the_report() {
    // One good server, one whose error reason tries to forge the verdict: the human report has one verdict.
    let good = endpoint(
        "127.0.0.1:0",
        Some(Box::new(|req, from| reply(req, Class::Success, |w| w.add(&Attribute::XorMappedAddress(from)).unwrap()))),
    );
    let bad = error_server(400, FORGED);
    let out = run(good.addr, &["--server", &bad.addr.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.chars().any(|c| c.is_control() && c != '\n'), "{stdout:?}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("Verdict:")).count(), 1, "{stdout}");
    assert!(stdout.contains("\\u{1b}[2J\\r\\nVerdict: direct"), "the reason is shown, escaped: {stdout}");
    // JSON keeps the text as an escaped JSON string (serde), readable by any parser.
    let v = diagnose(&[&["--server", &good.addr.to_string(), "--server", &bad.addr.to_string()], &FAST[..]].concat());
    assert!(s(&v["servers"][1], "error").contains("error 400 Bad"), "{}", v["servers"][1]);
}

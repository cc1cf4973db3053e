//! stund's hot path does not touch the heap: `Responder::handle` (rate limiter, parse, checks, and the success
//! response with XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT, plus the RFC 5780 attributes) into a caller's buffer
//! is zero allocations; so are parsing and verifying a signed message. Counted with a per-thread counting allocator
//! (tests run on several threads; only this thread's allocations are counted).

use holepunch::net::Received;
use holepunch::server::{RateLimitConfig, Responder, ServerConfig};
use holepunch::stun::{Attribute, Class, Message, MessageType, MessageWriter, Method};
use std::net::SocketAddr;
use std::time::Instant;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

/// Allocations this thread made while running `f`.
fn allocations_in(f: impl FnOnce()) -> usize {
    counting_alloc::allocations_in(f).0
}

/// stund's real responder, rate limiter on as stund runs it; `alternate` turns on RFC 5780 mode.
fn responder(alternate: Option<&str>) -> Responder {
    let mut config = ServerConfig::plain("192.0.2.10".parse().unwrap(), 3478);
    config.alternate = alternate.map(|a| a.parse().unwrap());
    config.software = Some("holepunch stund".into());
    Responder::new(config, Some(RateLimitConfig::default()), 7, Instant::now()).unwrap()
}

#[test]
fn binding_parse_and_respond_allocates_nothing() {
    let mut req = [0u8; 64];
    let mut w = MessageWriter::new(&mut req, MessageType::new(Method::BINDING, Class::Request), &[9; 12]).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let mut out = [0u8; 512];
    for alternate in [None, Some("192.0.2.11")] {
        let mut r = responder(alternate);
        for from in ["198.51.100.1:3478", "[2001:db8::1]:40000"] {
            let from: SocketAddr = from.parse().unwrap();
            let rx = Received::udp("192.0.2.10:3478".parse().unwrap(), from);
            let mut action = None;
            let allocs = allocations_in(|| action = Some(r.handle(Instant::now(), rx, &req[..n], &mut out)));
            let Some(Ok(t)) = action else { panic!("no response: {action:?}") };
            let len = t.len;
            assert_eq!(allocs, 0, "parse + respond allocated ({alternate:?}, {from})");
            assert_eq!(t.dst, from);
            let m = Message::parse(&out[..len]).unwrap();
            assert_eq!(m.xor_mapped_address(), Some(from));
            assert_eq!(m.check_fingerprint(), Ok(true));
        }
    }
}

#[test]
fn parse_and_verify_signed_message_allocates_nothing() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[1; 12]).unwrap();
    w.add(&Attribute::Username("evtj:h6vY")).unwrap();
    w.add(&Attribute::Software("STUN test client")).unwrap();
    w.add(&Attribute::Priority(0x6e0001ff)).unwrap();
    w.add_message_integrity(b"VOkJxbRl1RmTxUk/WvJxBt").unwrap();
    w.add_message_integrity_sha256(b"VOkJxbRl1RmTxUk/WvJxBt").unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let mut ok = false;
    let allocs = allocations_in(|| {
        let m = Message::parse(&buf[..n]).unwrap();
        ok = m.attributes().all(|r| Attribute::decode(r, m.raw_id()).is_ok())
            && m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBt").is_ok()
            && m.check_integrity_sha256(b"VOkJxbRl1RmTxUk/WvJxBt").is_ok()
            && m.check_fingerprint() == Ok(true);
    });
    assert!(ok);
    assert_eq!(allocs, 0, "parse + verify allocated");
}

/// The counter itself works (otherwise the tests above would pass vacuously).
#[test]
fn counter_sees_allocations() {
    let allocs = allocations_in(|| {
        std::hint::black_box(vec![1u8; 100]);
    });
    assert!(allocs >= 1);
}

//! Criterion benchmarks of the STUN codec on the stund hot path, next to the same work done with `stun-rs`
//! in the same run (compare the ratio, not the absolute figures: machines here are noisy).
//!
//! - `binding/parse+respond`: stund's `Responder::handle` on a Binding request (with FINGERPRINT, as most
//!   clients send): parse, checks, and the success response with XOR-MAPPED-ADDRESS, SOFTWARE and FINGERPRINT
//!   into a caller's buffer; stun-rs does the same parse and build.
//! - `rfc5769/parse`: parse RFC 5769 §2.1 (header + framing validation; typed decoding is lazy).
//! - `rfc5769/parse+verify`: the same, decoding every attribute and verifying MESSAGE-INTEGRITY and
//!   FINGERPRINT (stun-rs with a key and validation does the same work).
//!
//! Before the timings, allocations per operation are counted with a counting global allocator and printed.
//!
//! Run: `cargo bench -p holepunch --bench codec`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use holepunch::net::Received;
use holepunch::server::{Responder, ServerConfig};
use holepunch::stun::{Attribute, Class, Message, MessageType, MessageWriter, Method};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use stun_rs::attributes::stun::{Fingerprint, Software, XorMappedAddress};
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoder, MessageDecoderBuilder, MessageEncoder,
    MessageEncoderBuilder, StunMessageBuilder,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SOFTWARE: &str = "holepunch stund";
const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// A Binding request as typical clients send it: header + FINGERPRINT.
fn binding_request() -> Vec<u8> {
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[0x5a; 12]).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

fn rfc5769_request() -> Vec<u8> {
    let hex = "00010058 2112a442 b7e7a701 bc34d686 fa87dfae 80220010 5354554e 20746573 7420636c 69656e74
               00240004 6e0001ff 80290008 932ff9b1 51263b36 00060009 6576746a 3a683676 59202020
               00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2 80280004 e57a3bcf";
    hex::decode(hex.split_whitespace().collect::<String>()).unwrap()
}

/// Ours: stund's own responder (plain RFC 8489 mode; rate limiting off, since the bench is one source).
/// The server's socket, as stund's driver reports it.
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)), 3478);

fn responder() -> Responder {
    let mut config = ServerConfig::plain(LOCAL.ip(), LOCAL.port());
    config.software = Some(SOFTWARE.into());
    Responder::new(config, None, 7, Instant::now()).unwrap()
}

fn ours_respond(r: &mut Responder, req: &[u8], from: SocketAddr, out: &mut [u8]) -> Option<usize> {
    let rx = Received::udp(LOCAL, from);
    r.handle(Instant::now(), rx, req, out).ok().map(|t| t.len)
}

/// The same with stun-rs (decoder validates FINGERPRINT when asked to).
fn theirs_respond(
    dec: &MessageDecoder,
    enc: &MessageEncoder,
    req: &[u8],
    from: SocketAddr,
    out: &mut [u8],
) -> Option<usize> {
    let (m, _) = dec.decode(req).ok()?;
    if m.class() != MessageClass::Request || m.method() != stun_rs::methods::BINDING {
        return None;
    }
    let resp = StunMessageBuilder::new(stun_rs::methods::BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*m.transaction_id())
        .with_attribute(XorMappedAddress::from(from))
        .with_attribute(Software::new(SOFTWARE).ok()?)
        .with_attribute(Fingerprint::default())
        .build();
    enc.encode(out, &resp).ok()
}

fn ours_parse_verify(buf: &[u8]) -> bool {
    let Ok(m) = Message::parse(buf) else { return false };
    for raw in m.attributes() {
        if Attribute::decode(raw, m.raw_id()).is_err() {
            return false;
        }
    }
    m.check_integrity(PASSWORD.as_bytes()).is_ok() && m.check_fingerprint() == Ok(true)
}

fn allocations(mut f: impl FnMut()) -> f64 {
    const N: usize = 1000;
    f();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        f();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
}

fn bench(c: &mut Criterion) {
    let req = binding_request();
    let rfc = rfc5769_request();
    let from: SocketAddr = "203.0.113.9:54321".parse().unwrap();
    let dec = MessageDecoderBuilder::default()
        .with_context(DecoderContextBuilder::default().with_validation().build())
        .build();
    let dec_key = MessageDecoderBuilder::default()
        .with_context(
            DecoderContextBuilder::default()
                .with_key(HMACKey::new_short_term(PASSWORD).unwrap())
                .with_validation()
                .build(),
        )
        .build();
    let dec_plain = MessageDecoderBuilder::default().build();
    let enc = MessageEncoderBuilder::default().build();
    let mut out = [0u8; 1500];
    let mut ours = responder();

    // Both implementations must produce the same response before they are timed.
    let n = ours_respond(&mut ours, &req, from, &mut out).unwrap();
    let ours_bytes = out[..n].to_vec();
    let n = theirs_respond(&dec, &enc, &req, from, &mut out).unwrap();
    assert_eq!(ours_bytes, out[..n], "ours and stun-rs build different responses");
    assert!(ours_parse_verify(&rfc));
    assert!(dec_key.decode(&rfc).is_ok());

    println!(
        "allocations per op: binding parse+respond ours {} stun-rs {}; rfc5769 parse ours {} stun-rs {}; \
         rfc5769 parse+verify ours {} stun-rs {}",
        allocations(|| {
            black_box(ours_respond(&mut ours, black_box(&req), from, &mut out));
        }),
        allocations(|| {
            black_box(theirs_respond(&dec, &enc, black_box(&req), from, &mut out));
        }),
        allocations(|| {
            black_box(Message::parse(black_box(&rfc)).is_ok());
        }),
        allocations(|| {
            black_box(dec_plain.decode(black_box(&rfc)).is_ok());
        }),
        allocations(|| {
            black_box(ours_parse_verify(black_box(&rfc)));
        }),
        allocations(|| {
            black_box(dec_key.decode(black_box(&rfc)).is_ok());
        }),
    );

    let mut g = c.benchmark_group("binding");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+respond/ours", |b| b.iter(|| ours_respond(&mut ours, black_box(&req), from, &mut out)));
    g.bench_function("parse+respond/stun-rs", |b| {
        b.iter(|| theirs_respond(&dec, &enc, black_box(&req), from, &mut out))
    });
    g.finish();

    let mut g = c.benchmark_group("rfc5769");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse/ours", |b| b.iter(|| Message::parse(black_box(&rfc)).is_ok()));
    g.bench_function("parse/stun-rs", |b| b.iter(|| dec_plain.decode(black_box(&rfc)).is_ok()));
    g.bench_function("parse+verify/ours", |b| b.iter(|| ours_parse_verify(black_box(&rfc))));
    g.bench_function("parse+verify/stun-rs", |b| b.iter(|| dec_key.decode(black_box(&rfc)).is_ok()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

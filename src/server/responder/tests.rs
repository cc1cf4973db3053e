//! Responder tests. Requests and expected answers are built by hand here (not with the codec's writer), so a
//! codec bug cannot hide a server bug; comparisons are byte for byte.

use super::*;
use crate::net::Engine;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Outcome of one request, as [`Responder::handle`] returns it.
type Action = Result<Transmit, Dropped>;

const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const TID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];
const ID3489: [u8; 16] = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10, 11, 12, 13, 14, 15];

fn client() -> SocketAddr {
    "192.0.2.1:32853".parse().unwrap()
}

/// Hand-built STUN message: `ty`, header bytes 4..20 `id`, attributes, and optionally FINGERPRINT.
fn msg(ty: u16, id: &[u8], attrs: &[(u16, &[u8])], fingerprint: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&ty.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(id);
    for (kind, value) in attrs {
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        while m.len() % 4 != 0 {
            m.push(0);
        }
    }
    if fingerprint {
        let len = (m.len() - 20 + 8) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&m) ^ 0x5354_554E;
        m.extend_from_slice(&[0x80, 0x28, 0, 4]);
        m.extend_from_slice(&crc.to_be_bytes());
    }
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn id5389() -> Vec<u8> {
    let mut id = COOKIE.to_vec();
    id.extend_from_slice(&TID);
    id
}

fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    msg(0x0001, &id5389(), attrs, false)
}

fn request3489(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    msg(0x0001, &ID3489, attrs, false)
}

/// MAPPED-ADDRESS-style value.
fn addr(a: SocketAddr) -> Vec<u8> {
    let mut v = vec![0, if a.is_ipv4() { 1 } else { 2 }];
    v.extend_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => v.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => v.extend_from_slice(&ip.octets()),
    }
    v
}

/// XOR-MAPPED-ADDRESS value for the TID above.
fn xaddr(a: SocketAddr) -> Vec<u8> {
    let mut v = addr(a);
    let key = id5389();
    v[2] ^= key[0];
    v[3] ^= key[1];
    for (i, b) in v[4..].iter_mut().enumerate() {
        *b ^= key[i];
    }
    v
}

fn change(ip: bool, port: bool) -> [u8; 4] {
    [0, 0, 0, (u8::from(ip) << 2) | (u8::from(port) << 1)]
}

fn error_value(code: u16, reason: &str) -> Vec<u8> {
    let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
    v.extend_from_slice(reason.as_bytes());
    v
}

fn plain() -> ServerConfig {
    ServerConfig { software: Some("test".into()), ..ServerConfig::plain(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 3478) }
}

fn rfc5780() -> ServerConfig {
    ServerConfig { alternate: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))), alt_port: 3479, ..plain() }
}

fn responder(config: ServerConfig) -> Responder {
    Responder::new(config, None, 7, Instant::now()).unwrap()
}

/// The address of each socket of the test servers (primary 10.0.0.1:3478, alternate 10.0.0.2:3479).
fn addr_of(s: LocalSocket) -> SocketAddr {
    let ip = Ipv4Addr::new(10, 0, 0, if s.alt_ip { 2 } else { 1 });
    SocketAddr::new(IpAddr::V4(ip), if s.alt_port { 3479 } else { 3478 })
}

fn udp(local: LocalSocket) -> Received {
    Received::udp(addr_of(local), client())
}

/// Runs one request; returns the action and the answer bytes.
fn run(r: &mut Responder, rx: Received, req: &[u8]) -> (Action, Vec<u8>) {
    let mut out = [0u8; 4096];
    let action = r.handle(Instant::now(), rx, req, &mut out);
    match action {
        Ok(t) => (action, out[..t.len].to_vec()),
        Err(_) => (action, Vec::new()),
    }
}

fn reply(from: LocalSocket, to: SocketAddr, len: usize) -> Action {
    Ok(Transmit { local: addr_of(from), dst: to, len, ttl: None })
}

#[test]
fn plain_binding_is_byte_exact() {
    let mut r = responder(plain());
    let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request(&[]));
    // XOR-MAPPED-ADDRESS of 192.0.2.1:32853, worked by hand: port 0x8055 ^ 0x2112, address ^ cookie.
    let mut expect = vec![0x01, 0x01, 0x00, 0x1c];
    expect.extend_from_slice(&id5389());
    expect.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    expect.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b't', b'e', b's', b't']);
    let crc = crc32fast::hash(&{
        let mut pre = expect.clone();
        pre[2..4].copy_from_slice(&0x1cu16.to_be_bytes());
        pre
    }) ^ 0x5354_554E;
    expect.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
    expect.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(out, expect);
    assert_eq!(action, reply(LocalSocket::PRIMARY, client(), expect.len()));
    assert_eq!(out, msg(0x0101, &id5389(), &[(0x0020, &xaddr(client())), (0x8022, b"test")], true));
    assert_eq!(r.counters().requests_binding, 1);
    assert_eq!(r.counters().responses_success, 1);
}

#[test]
fn plain_binding_without_software_and_with_request_fingerprint() {
    let mut r = responder(ServerConfig { software: None, ..plain() });
    let req = msg(0x0001, &id5389(), &[(0x8022, b"client")], true);
    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &req);
    assert_eq!(out, msg(0x0101, &id5389(), &[(0x0020, &xaddr(client()))], true));
}

#[test]
fn ipv6_binding() {
    let server: IpAddr = "2001:db8::1".parse().unwrap();
    let mut r = responder(ServerConfig { software: None, ..ServerConfig::plain(server, 3478) });
    let from: SocketAddr = "[2001:db8:1::77]:40000".parse().unwrap();
    let local = SocketAddr::new(server, 3478);
    let (action, out) = run(&mut r, Received::udp(local, from), &request(&[]));
    assert_eq!(out, msg(0x0101, &id5389(), &[(0x0020, &xaddr(from))], true));
    assert_eq!(action, Ok(Transmit { local, dst: from, len: out.len(), ttl: None }));
}

#[test]
fn ipv4_mapped_source_is_reported_as_ipv4() {
    let mut r = responder(ServerConfig { software: None, ..plain() });
    let from = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()), 32853);
    let rx = Received::udp(addr_of(LocalSocket::PRIMARY), from);
    let (action, out) = run(&mut r, rx, &request(&[]));
    assert_eq!(out, msg(0x0101, &id5389(), &[(0x0020, &xaddr(client()))], true));
    // The reply still goes to the address the socket knows.
    assert_eq!(action, reply(LocalSocket::PRIMARY, from, out.len()));
}

/// RFC 5780 §6.1 Table 1, for a request arriving on each of the four sockets with each flag combination.
#[test]
fn rfc5780_table_1() {
    let cfg = rfc5780();
    let mut r = responder(cfg.clone());
    for local in LocalSocket::ALL {
        for (ip, port) in [(false, false), (true, false), (false, true), (true, true)] {
            let req = request(&[(0x0003, &change(ip, port))]);
            let (action, out) = run(&mut r, udp(local), &req);
            let source = LocalSocket { alt_ip: local.alt_ip ^ ip, alt_port: local.alt_port ^ port };
            let other = LocalSocket { alt_ip: !local.alt_ip, alt_port: !local.alt_port };
            let expect = msg(
                0x0101,
                &id5389(),
                &[
                    (0x0020, &xaddr(client())),
                    (0x0001, &addr(client())),
                    (0x802b, &addr(cfg.bind_addr(source))),
                    (0x802c, &addr(cfg.bind_addr(other))),
                    (0x8022, b"test"),
                ],
                true,
            );
            assert_eq!(out, expect, "local {local:?} change ip {ip} port {port}");
            assert_eq!(action, reply(source, client(), expect.len()));
        }
    }
    assert_eq!(r.counters().requests_change_request, 12);
    assert_eq!(r.counters().responses_success, 16);
}

#[test]
fn rfc5780_without_change_request_still_has_other_address_and_origin() {
    let cfg = rfc5780();
    let mut r = responder(cfg.clone());
    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request(&[]));
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.other_address(), Some("10.0.0.2:3479".parse().unwrap()));
    assert_eq!(m.response_origin(), Some("10.0.0.1:3478".parse().unwrap()));
    assert_eq!(m.mapped_address(), Some(client()));
    assert_eq!(m.xor_mapped_address(), Some(client()));
}

#[test]
fn public_addresses_are_advertised() {
    let cfg = ServerConfig {
        public_primary: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))),
        public_alternate: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2))),
        ..rfc5780()
    };
    let mut r = responder(cfg);
    let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request(&[(0x0003, &change(false, true))]));
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.response_origin(), Some("203.0.113.1:3479".parse().unwrap()));
    assert_eq!(m.other_address(), Some("203.0.113.2:3479".parse().unwrap()));
    assert_eq!(action, reply(LocalSocket { alt_ip: false, alt_port: true }, client(), out.len()));
    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request3489(&[]));
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.source_address(), Some("203.0.113.1:3478".parse().unwrap()));
    assert_eq!(m.changed_address(), Some("203.0.113.2:3479".parse().unwrap()));
}

#[test]
fn plain_server_refuses_change_request_with_420() {
    let mut r = responder(plain());
    // Any value, a malformed one included (RFC 5780 §6: 420 to any request with a CHANGE-REQUEST).
    let (ff, tt, ft) = (change(false, false), change(true, true), change(false, true));
    for flags in [&ff[..], &tt[..], &ft[..], &[0, 0, 6][..]] {
        let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request(&[(0x0003, flags)]));
        let expect = msg(
            0x0111,
            &id5389(),
            &[(0x0009, &error_value(420, "Unknown Attribute")), (0x000a, &[0x00, 0x03]), (0x8022, b"test")],
            true,
        );
        assert_eq!(out, expect);
        assert_eq!(action, reply(LocalSocket::PRIMARY, client(), expect.len()));
    }
    assert_eq!(r.counters().responses_error, 4);
}

#[test]
fn rfc3489_request_answered_in_rfc3489_form() {
    let cfg = rfc5780();
    let mut r = responder(cfg.clone());
    let req = request3489(&[(0x0003, &change(true, false))]);
    let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &req);
    let source = LocalSocket { alt_ip: true, alt_port: false };
    let expect = msg(
        0x0101,
        &ID3489,
        &[
            (0x0001, &addr(client())),
            (0x0004, &addr(cfg.bind_addr(source))),
            (0x0005, &addr(cfg.bind_addr(LocalSocket { alt_ip: true, alt_port: true }))),
        ],
        false,
    );
    assert_eq!(out, expect);
    assert_eq!(action, reply(source, client(), expect.len()));
    assert_eq!(r.counters().requests_rfc3489, 1);
}

#[test]
fn rfc3489_on_plain_server() {
    let cfg = plain();
    let mut r = responder(cfg.clone());
    // Classic clients send CHANGE-REQUEST with no flags on every request: answered.
    let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request3489(&[(0x0003, &change(false, false))]));
    let expect =
        msg(0x0101, &ID3489, &[(0x0001, &addr(client())), (0x0004, &addr(cfg.bind_addr(LocalSocket::PRIMARY)))], false);
    assert_eq!(out, expect);
    assert_eq!(action, reply(LocalSocket::PRIMARY, client(), expect.len()));
    // A flag it cannot honour: 420 in RFC 3489 form (no FINGERPRINT, no SOFTWARE).
    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request3489(&[(0x0003, &change(true, false))]));
    let expect =
        msg(0x0111, &ID3489, &[(0x0009, &error_value(420, "Unknown Attribute")), (0x000a, &[0x00, 0x03])], false);
    assert_eq!(out, expect);
}

#[test]
fn unknown_comprehension_required_gets_420_and_optional_is_ignored() {
    let mut r = responder(plain());
    let req = request(&[(0x7777, b"x"), (0xC001, b"optional"), (0x0002, &addr(client())), (0x7777, b"again")]);
    let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &req);
    let expect = msg(
        0x0111,
        &id5389(),
        &[
            (0x0009, &error_value(420, "Unknown Attribute")),
            // Duplicates listed once; RESPONSE-ADDRESS (0x0002) is never honoured, so it is "unknown" to us.
            (0x000a, &[0x77, 0x77, 0x00, 0x02]),
            (0x8022, b"test"),
        ],
        true,
    );
    assert_eq!(out, expect);
    assert_eq!(action, reply(LocalSocket::PRIMARY, client(), expect.len()));

    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request(&[(0xC001, b"optional")]));
    assert_eq!(out, msg(0x0101, &id5389(), &[(0x0020, &xaddr(client())), (0x8022, b"test")], true));
}

#[test]
fn unknown_attributes_list_is_bounded() {
    let mut r = responder(plain());
    let kinds: Vec<[u8; 2]> = (0x7000u16..0x7040).map(|k| k.to_be_bytes()).collect();
    let attrs: Vec<(u16, &[u8])> = (0x7000u16..0x7040).zip(&kinds).map(|(k, _)| (k, &[][..])).collect();
    let req = request(&attrs);
    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &req);
    let m = Message::parse(&out).unwrap();
    match m.get(attr::UNKNOWN_ATTRIBUTES).unwrap() {
        Some(Attribute::UnknownAttributes(l)) => assert_eq!(l.iter().count(), MAX_UNKNOWN_LISTED),
        other => panic!("{other:?}"),
    }
    assert!(out.len() <= MAX_RESPONSE_LEN);
}

#[test]
fn response_port_goes_to_same_ip_other_port() {
    let mut r = responder(plain());
    let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &request(&[(0x0027, &[0x1f, 0x90, 0, 0])]));
    // XOR-MAPPED-ADDRESS is still the request's source; only the destination port changes.
    assert_eq!(out, msg(0x0101, &id5389(), &[(0x0020, &xaddr(client())), (0x8022, b"test")], true));
    assert_eq!(action, reply(LocalSocket::PRIMARY, "192.0.2.1:8080".parse().unwrap(), out.len()));
    assert_eq!(r.counters().requests_response_port, 1);
}

#[test]
fn bad_values_get_400() {
    let mut r = responder(rfc5780());
    let bad = |reason: &str| msg(0x0111, &id5389(), &[(0x0009, &error_value(400, reason)), (0x8022, b"test")], true);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (request(&[(0x0027, &[0, 0, 0, 0])]), "Bad Request: RESPONSE-PORT"),
        (request(&[(0x0027, &[0x1f, 0x90, 0])]), "Bad Request: RESPONSE-PORT"),
        (request(&[(0x0003, &[0, 0, 4])]), "Bad Request: CHANGE-REQUEST"),
        (request(&[(0x0027, &[0x1f, 0x90, 0, 0]), (0x0026, &[0; 8])]), "Bad Request: PADDING with RESPONSE-PORT"),
    ];
    for (req, reason) in cases {
        let (action, out) = run(&mut r, udp(LocalSocket::PRIMARY), &req);
        assert_eq!(out, bad(reason), "{reason}");
        // Errors go back where the request came from, from where it arrived.
        assert_eq!(action, reply(LocalSocket::PRIMARY, client(), out.len()));
    }
    // Over TCP neither CHANGE-REQUEST flags nor RESPONSE-PORT can be honoured.
    let tcp = Received { transport: Transport::Tcp, ..udp(LocalSocket::PRIMARY) };
    for req in [request(&[(0x0003, &change(true, false))]), request(&[(0x0027, &[0x1f, 0x90, 0, 0])])] {
        let (_, out) = run(&mut r, tcp, &req);
        assert_eq!(out, bad("Bad Request: not possible over TCP"));
    }
    // ... but a no-op CHANGE-REQUEST is fine over TCP.
    let (action, _) = run(&mut r, tcp, &request(&[(0x0003, &change(false, false))]));
    assert!(action.is_ok());
    assert_eq!(r.counters().requests_tcp, 3);
}

#[test]
fn padding_is_mirrored_within_the_request_size() {
    let mut r = responder(plain());
    // Big request: the response carries as much PADDING as fits in the request's size.
    let req = request(&[(0x0026, &[0xAA; 1500])]);
    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &req);
    assert_eq!(out.len(), req.len());
    let base = 20 + 12 + 8 + 8;
    let pad = req.len() - base - 4;
    let zeros = vec![0u8; pad];
    let expect = msg(0x0101, &id5389(), &[(0x0020, &xaddr(client())), (0x0026, &zeros), (0x8022, b"test")], true);
    assert_eq!(out, expect);
    // Small PADDING: the response cannot shrink below its base size, and pads with nothing.
    let req = request(&[(0x0026, &[1; 4])]);
    let (_, out) = run(&mut r, udp(LocalSocket::PRIMARY), &req);
    let expect = msg(0x0101, &id5389(), &[(0x0020, &xaddr(client())), (0x0026, &[]), (0x8022, b"test")], true);
    assert_eq!(out, expect);
    assert_eq!(r.counters().requests_padding, 2);
}

#[test]
fn malformed_and_non_requests_are_dropped() {
    let mut r = responder(rfc5780());
    let good = request(&[]);
    let mut bad_cookie_bits = good.clone();
    bad_cookie_bits[0] = 0x40;
    let mut bad_len = good.clone();
    bad_len[3] = 4;
    let mut bad_fp = msg(0x0001, &id5389(), &[], true);
    let n = bad_fp.len();
    bad_fp[n - 1] ^= 1;
    let overrun = {
        let mut m = request(&[(0x8022, b"abcd")]);
        m[23] = 200; // SOFTWARE length past the end
        m
    };
    let huge = request(&[(0x0026, &[0; MAX_REQUEST_LEN])]);
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("truncated header", good[..19].to_vec()),
        ("first bits", bad_cookie_bits),
        ("length field", bad_len),
        ("truncated body", request(&[(0x8022, b"abcd")])[..24].to_vec()),
        ("attribute overrun", overrun),
        ("fingerprint", bad_fp),
        ("oversized", huge),
    ] {
        let (action, _) = run(&mut r, udp(LocalSocket::PRIMARY), &bytes);
        assert_eq!(action, Err(Dropped::Malformed), "{name}");
    }
    for ty in [0x0011u16, 0x0101, 0x0111, 0x0003, 0x0002] {
        let (action, _) = run(&mut r, udp(LocalSocket::PRIMARY), &msg(ty, &id5389(), &[], false));
        assert_eq!(action, Err(Dropped::NotRequest), "type {ty:#06x}");
    }
    let zero_port = Received { source: "192.0.2.1:0".parse().unwrap(), ..udp(LocalSocket::PRIMARY) };
    assert_eq!(run(&mut r, zero_port, &good).0, Err(Dropped::Malformed));
    assert_eq!(r.counters().dropped_malformed, 9);
    assert_eq!(r.counters().dropped_not_request, 5);
    assert_eq!(r.counters().responses_success + r.counters().responses_error, 0);
}

#[test]
fn rate_limit_drops_after_burst() {
    let rl = RateLimitConfig { rate_per_sec: 1, burst: 3, slots: 64 };
    let t0 = Instant::now();
    let mut r = Responder::new(plain(), Some(rl), 1, t0).unwrap();
    let mut out = [0u8; 512];
    let req = request(&[]);
    let results: Vec<Action> = (0..5).map(|_| r.handle(t0, udp(LocalSocket::PRIMARY), &req, &mut out)).collect();
    assert!(results[..3].iter().all(|a| a.is_ok()));
    assert_eq!(results[3], Err(Dropped::RateLimited));
    assert_eq!(results[4], Err(Dropped::RateLimited));
    // Another source is not affected; malformed input costs no tokens.
    let other = Received { source: "192.0.2.99:1000".parse().unwrap(), ..udp(LocalSocket::PRIMARY) };
    assert!(r.handle(t0, other, &req, &mut out).is_ok());
    let later = t0 + std::time::Duration::from_millis(1000);
    assert!(r.handle(later, udp(LocalSocket::PRIMARY), &req, &mut out).is_ok());
    assert_eq!(r.counters().dropped_rate_limited, 2);
    assert_eq!(r.counters().requests_binding, 7);
    assert!(r.limiter_memory_bytes() > 0);
}

#[test]
fn small_output_buffer_drops_instead_of_panicking() {
    let mut r = responder(rfc5780());
    let mut out = [0u8; 40];
    let action = r.handle(Instant::now(), udp(LocalSocket::PRIMARY), &request(&[]), &mut out);
    assert_eq!(action, Err(Dropped::Malformed));
}

#[test]
fn config_validation() {
    let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
    let bad = |cfg: ServerConfig| Responder::new(cfg, None, 0, Instant::now()).err().unwrap();
    assert_eq!(bad(ServerConfig::plain(v4("0.0.0.0"), 3478)), ConfigError::Unspecified(v4("0.0.0.0")));
    assert_eq!(bad(ServerConfig::plain(v4("10.0.0.1"), 0)), ConfigError::PortZero);
    assert_eq!(
        bad(ServerConfig { alternate: Some(v4("10.0.0.1")), ..plain() }),
        ConfigError::SameAddress(v4("10.0.0.1"))
    );
    assert_eq!(
        bad(ServerConfig { alternate: Some(v4("::2")), ..plain() }),
        ConfigError::FamilyMismatch(Field::Alternate, Field::Primary)
    );
    assert_eq!(bad(ServerConfig { alt_port: 3478, ..rfc5780() }), ConfigError::SamePort(3478));
    assert_eq!(
        bad(ServerConfig { public_alternate: Some(v4("1.2.3.4")), ..plain() }),
        ConfigError::PublicAlternateWithoutAlternate
    );
    assert_eq!(bad(ServerConfig { software: Some("x".repeat(129)), ..plain() }), ConfigError::SoftwareTooLong(129));
    let rl = RateLimitConfig { rate_per_sec: 0, burst: 1, slots: 8 };
    assert!(matches!(Responder::new(plain(), Some(rl), 0, Instant::now()), Err(ConfigError::RateLimit(_))));
    let v6 = ServerConfig { software: None, ..ServerConfig::plain(IpAddr::V6(Ipv6Addr::LOCALHOST), 3478) };
    assert!(Responder::new(v6, None, 0, Instant::now()).is_ok());
}

#[test]
fn max_response_len_is_reachable_and_not_exceeded() {
    let cfg = ServerConfig {
        primary: "2001:db8::1".parse().unwrap(),
        alternate: Some("2001:db8::2".parse().unwrap()),
        software: Some("s".repeat(MAX_SOFTWARE_LEN)),
        ..rfc5780()
    };
    let mut r = responder(cfg);
    let from: SocketAddr = "[2001:db8:9::9]:5000".parse().unwrap();
    let rx = Received::udp("[2001:db8::1]:3478".parse().unwrap(), from);
    // Every optional attribute only fits the amplification bound for a request of at least 65 bytes; the
    // PADDING content is then cut to nothing (the response without it is already longer than the request).
    let (_, out) = run(&mut r, rx, &request(&[(0x0026, &[0; 48])]));
    assert_eq!(out.len(), MAX_RESPONSE_LEN);
}

#[test]
fn local_socket_comes_from_the_configured_addresses() {
    let cfg = ServerConfig {
        public_primary: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))),
        public_alternate: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2))),
        ..rfc5780()
    };
    let mut r = responder(cfg.clone());
    for s in LocalSocket::ALL {
        assert_eq!(cfg.local_socket(cfg.bind_addr(s)), Some(s));
        assert_eq!(cfg.local_socket(cfg.advertised_addr(s)), Some(s));
        // A driver behind a 1:1 NAT may report the advertised address; the answer leaves from it unchanged,
        // or from the bind address of the socket a CHANGE-REQUEST picks.
        let (action, _) = run(&mut r, Received::udp(cfg.advertised_addr(s), client()), &request(&[]));
        assert_eq!(action.map(|t| t.local), Ok(cfg.advertised_addr(s)));
        let req = request(&[(0x0003, &change(true, true))]);
        let (action, _) = run(&mut r, Received::udp(cfg.advertised_addr(s), client()), &req);
        assert_eq!(action.map(|t| t.local), Ok(cfg.bind_addr(s.changed(true, true))));
    }
    let before = *r.counters();
    let elsewhere = Received::udp("10.0.0.9:3478".parse().unwrap(), client());
    assert_eq!(run(&mut r, elsewhere, &request(&[])).0, Err(Dropped::NotLocal));
    // The alternate's addresses are not sockets of a plain server.
    let mut plain_r = responder(plain());
    assert_eq!(run(&mut plain_r, udp(LocalSocket::ALL[3]), &request(&[])).0, Err(Dropped::NotLocal));
    assert_eq!(*r.counters(), before, "a datagram for another address is not counted");
}

#[test]
fn engine_queues_the_same_answers() {
    let cfg = rfc5780();
    let mut direct = responder(cfg.clone());
    let mut engine = responder(cfg);
    let now = Instant::now();
    let reqs = [request(&[]), request(&[(0x0003, &change(true, false))]), request(&[(0x7777, b"x")])];
    let mut expected = Vec::new();
    for req in &reqs {
        expected.push(run(&mut direct, udp(LocalSocket::PRIMARY), req));
        assert!(engine.handle_input(now, udp(LocalSocket::PRIMARY), req));
    }
    let mut buf = [0u8; 1500];
    for (action, bytes) in expected {
        let t = engine.poll_transmit(&mut buf).expect("queued answer");
        assert_eq!(Ok(t), action);
        assert_eq!(&buf[..t.len], &bytes[..]);
    }
    assert_eq!(engine.poll_transmit(&mut buf), None);
    assert_eq!(engine.poll_timeout(), None);
    assert!(engine.poll_event().is_none());
    // Not ours: left for the next engine on the socket.
    let indication = msg(0x0011, &id5389(), &[], false);
    assert!(!engine.handle_input(now, udp(LocalSocket::PRIMARY), &indication));
    assert!(!engine.handle_input(now, udp(LocalSocket::PRIMARY), b"not stun"));
    assert!(!engine.handle_input(now, Received::udp("10.0.0.9:1".parse().unwrap(), client()), &reqs[0]));
    assert_eq!(engine.poll_transmit(&mut buf), None);
}

#[test]
fn engine_queue_is_bounded() {
    let mut r = responder(plain());
    let now = Instant::now();
    for _ in 0..MAX_QUEUED_REPLIES + 5 {
        assert!(r.handle_input(now, udp(LocalSocket::PRIMARY), &request(&[])));
    }
    assert_eq!(r.counters().send_errors, 5);
    let mut buf = [0u8; 1500];
    let mut n = 0;
    while r.poll_transmit(&mut buf).is_some() {
        n += 1;
        assert!(n <= MAX_QUEUED_REPLIES);
    }
    assert_eq!(n, MAX_QUEUED_REPLIES);
    // A buffer too small for the answer drops it rather than truncating.
    assert!(r.handle_input(now, udp(LocalSocket::PRIMARY), &request(&[])));
    assert_eq!(r.poll_transmit(&mut buf[..10]), None);
    assert_eq!(r.counters().send_errors, 6);
}

/// Every kind of answer, to the smallest request that gets it.
mod amplification {
    use super::*;
    use crate::server::AMPLIFICATION_FACTOR;

    /// The kinds of answer a client can get, each with the smallest request that produces it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Kind {
        /// Binding success, RFC 5389 form.
        Success,
        /// Binding success in RFC 3489 form (no magic cookie).
        Success3489,
        /// Success to a request with an empty PADDING.
        Padding,
        /// 420 for an unknown comprehension-required attribute with an empty value.
        Unknown420,
        /// 420 in RFC 3489 form (RESPONSE-ADDRESS is never honoured).
        Unknown420Rfc3489,
        /// 420 for CHANGE-REQUEST on a plain server (empty value: RFC 5780 §6 says any CHANGE-REQUEST).
        ChangeRequest420,
        /// 400 for an empty RESPONSE-PORT.
        BadResponsePort400,
        /// 400 for an empty CHANGE-REQUEST (RFC 5780 mode).
        BadChangeRequest400,
        /// 400 for PADDING with RESPONSE-PORT (RFC 5780 §6.1).
        PaddingWithResponsePort400,
        /// 400 for a CHANGE-REQUEST flag over TCP.
        ChangeOverTcp400,
    }

    pub(super) const KINDS: [Kind; 10] = [
        Kind::Success,
        Kind::Success3489,
        Kind::Padding,
        Kind::Unknown420,
        Kind::Unknown420Rfc3489,
        Kind::ChangeRequest420,
        Kind::BadResponsePort400,
        Kind::BadChangeRequest400,
        Kind::PaddingWithResponsePort400,
        Kind::ChangeOverTcp400,
    ];

    /// The minimal request for `kind`, whether it goes over TCP, and the error code expected (None: success).
    pub(super) fn minimal(kind: Kind) -> (Vec<u8>, bool, Option<u16>) {
        match kind {
            Kind::Success => (request(&[]), false, None),
            Kind::Success3489 => (request3489(&[]), false, None),
            Kind::Padding => (request(&[(0x0026, &[])]), false, None),
            Kind::Unknown420 => (request(&[(0x7777, &[])]), false, Some(420)),
            Kind::Unknown420Rfc3489 => (request3489(&[(0x0002, &[])]), false, Some(420)),
            Kind::ChangeRequest420 => (request(&[(0x0003, &[])]), false, Some(420)),
            Kind::BadResponsePort400 => (request(&[(0x0027, &[])]), false, Some(400)),
            Kind::BadChangeRequest400 => (request(&[(0x0003, &[])]), false, Some(400)),
            Kind::PaddingWithResponsePort400 => {
                (request(&[(0x0027, &[0x1f, 0x90, 0, 0]), (0x0026, &[])]), false, Some(400))
            }
            Kind::ChangeOverTcp400 => (request(&[(0x0003, &change(false, true))]), true, Some(400)),
        }
    }

    /// A server of the given family, mode and SOFTWARE, and a client address of that family.
    pub(super) fn setup(ipv6: bool, rfc5780: bool, software: Option<String>) -> (ServerConfig, SocketAddr) {
        let (primary, alternate, from): (IpAddr, IpAddr, SocketAddr) = if ipv6 {
            ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap(), "[2001:db8:9::9]:40000".parse().unwrap())
        } else {
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), client())
        };
        let mut cfg = ServerConfig { software, ..ServerConfig::plain(primary, 3478) };
        if rfc5780 {
            cfg.alternate = Some(alternate);
            cfg.alt_port = 3479;
        }
        (cfg, from)
    }

    /// Whether `kind` exists on a server in this mode (CHANGE-REQUEST is 420 on a plain server, 400 when
    /// malformed on an RFC 5780 one).
    pub(super) fn applies(kind: Kind, rfc5780: bool) -> bool {
        match kind {
            Kind::ChangeRequest420 => !rfc5780,
            Kind::BadChangeRequest400 | Kind::ChangeOverTcp400 => rfc5780,
            _ => true,
        }
    }

    /// Answer length for the minimal request of `kind`.
    pub(super) fn answer(kind: Kind, ipv6: bool, rfc5780: bool, software: Option<String>) -> (usize, usize) {
        let (cfg, from) = setup(ipv6, rfc5780, software);
        let local = cfg.bind_addr(LocalSocket::PRIMARY);
        let mut r = responder(cfg);
        let (req, tcp, code) = minimal(kind);
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let rx = Received { local, source: from, transport };
        let (action, out) = run(&mut r, rx, &req);
        assert!(action.is_ok(), "{kind:?}: {action:?}");
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.error_code().map(|e| e.code), code, "{kind:?} ipv6 {ipv6} rfc5780 {rfc5780}");
        if code.is_none() {
            // What the client cannot do without is always there.
            assert!(m.xor_mapped_address().or(m.mapped_address()).is_some(), "{kind:?}");
            if rfc5780 {
                assert!(m.other_address().or(m.changed_address()).is_some(), "{kind:?}");
            }
        }
        (req.len(), out.len())
    }

    /// The factor of every kind of answer to its minimal request, IPv4 and IPv6, plain and RFC 5780, with the
    /// longest SOFTWARE allowed: never above 4.
    #[test]
    fn every_kind_of_answer_is_within_the_bound() {
        for kind in KINDS {
            for ipv6 in [false, true] {
                for rfc5780 in [false, true] {
                    if !applies(kind, rfc5780) {
                        continue;
                    }
                    for software in [None, Some("test".to_string()), Some("s".repeat(MAX_SOFTWARE_LEN))] {
                        let (req, out) = answer(kind, ipv6, rfc5780, software.clone());
                        assert!(
                            out <= AMPLIFICATION_FACTOR * req,
                            "{kind:?} ipv6 {ipv6} rfc5780 {rfc5780} software {software:?}: {out} > 4 x {req}"
                        );
                    }
                }
            }
        }
    }

    /// The figures of the table in docs/stund.md ("Amplification bound"), without SOFTWARE (the default).
    #[test]
    fn documented_factors() {
        let len = |kind, ipv6, rfc5780| answer(kind, ipv6, rfc5780, None);
        // (kind, ipv6, rfc5780) -> (request, answer)
        let table = [
            (Kind::Success, false, false, 20, 40),
            (Kind::Success, true, false, 20, 52),
            (Kind::Success, false, true, 20, 76),
            (Kind::Success, true, true, 20, 76),
            (Kind::Success3489, false, false, 20, 44),
            (Kind::Success3489, false, true, 20, 56),
            (Kind::Success3489, true, true, 20, 68),
            (Kind::Padding, false, true, 24, 80),
            (Kind::Padding, true, true, 24, 80),
            (Kind::Unknown420, false, false, 24, 64),
            (Kind::Unknown420Rfc3489, false, false, 24, 56),
            (Kind::ChangeRequest420, false, false, 24, 64),
            (Kind::BadResponsePort400, false, false, 24, 64),
            (Kind::BadChangeRequest400, false, true, 24, 64),
            (Kind::PaddingWithResponsePort400, false, true, 32, 76),
            (Kind::ChangeOverTcp400, false, true, 28, 72),
        ];
        for (kind, ipv6, rfc5780, req, out) in table {
            assert_eq!(len(kind, ipv6, rfc5780), (req, out), "{kind:?} ipv6 {ipv6} rfc5780 {rfc5780}");
        }
    }

    /// Which optional attributes a minimal request gets, and that a bigger request gets the rest.
    #[test]
    fn optional_attributes_follow_the_request_size() {
        let (cfg, from) = setup(false, true, Some("holepunch stund 0.1.0".into()));
        let mut r = responder(cfg.clone());
        let rx = Received::udp(cfg.bind_addr(LocalSocket::PRIMARY), from);
        // IPv4, 20-byte request: RESPONSE-ORIGIN and MAPPED-ADDRESS fit (76 bytes), SOFTWARE does not.
        let (_, out) = run(&mut r, rx, &request(&[]));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.response_origin(), Some(cfg.bind_addr(LocalSocket::PRIMARY)));
        assert_eq!(m.mapped_address(), Some(from));
        assert_eq!(m.software(), None);
        // A client that sends its own SOFTWARE gets everything.
        let (_, out) = run(&mut r, rx, &request(&[(0x8022, b"client 1.0")]));
        assert_eq!(Message::parse(&out).unwrap().software(), Some("holepunch stund 0.1.0"));

        // IPv6, 20-byte request: only XOR-MAPPED-ADDRESS, OTHER-ADDRESS and FINGERPRINT (76 bytes).
        let (cfg, from) = setup(true, true, None);
        let mut r = responder(cfg.clone());
        let rx = Received::udp(cfg.bind_addr(LocalSocket::PRIMARY), from);
        let (_, out) = run(&mut r, rx, &request(&[]));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.xor_mapped_address(), Some(from));
        assert_eq!(m.other_address(), Some(cfg.bind_addr(LocalSocket { alt_ip: true, alt_port: true })));
        assert_eq!((m.response_origin(), m.mapped_address()), (None, None));
        // RFC 3489 form over IPv6: SOURCE-ADDRESS is the one left out.
        let (_, out) = run(&mut r, rx, &request3489(&[]));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.mapped_address(), Some(from));
        assert!(m.changed_address().is_some());
        assert_eq!(m.source_address(), None);
        // A 28-byte request (Vovida's, with CHANGE-REQUEST) gets it.
        let (_, out) = run(&mut r, rx, &request3489(&[(0x0003, &change(false, false))]));
        assert_eq!(Message::parse(&out).unwrap().source_address(), Some(cfg.bind_addr(LocalSocket::PRIMARY)));
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn attribute() -> impl Strategy<Value = (u16, Vec<u8>)> {
        let kind = prop_oneof![
            Just(0x0003u16),
            Just(0x0026),
            Just(0x0027),
            Just(0x0002),
            Just(0x8022),
            Just(0x0020),
            0u16..0x0030,
            any::<u16>(),
        ];
        (kind, proptest::collection::vec(any::<u8>(), 0..64))
    }

    proptest! {
        /// Whatever arrives: no panic, and no answer above max(MAX_RESPONSE_LEN, request length), from a
        /// socket that exists, to the request's source IP.
        #[test]
        fn amplification_bound_holds(
            attrs in proptest::collection::vec(attribute(), 0..8),
            cookie in any::<bool>(),
            fingerprint in any::<bool>(),
            alternate in any::<bool>(),
            pad in 0usize..1600,
            local in 0usize..4,
            tcp in any::<bool>(),
        ) {
            let cfg = if alternate { rfc5780() } else { plain() };
            let cfg = ServerConfig { software: Some("s".repeat(MAX_SOFTWARE_LEN)), ..cfg };
            let n = cfg.local_sockets().len();
            let mut r = responder(cfg);
            let mut attrs: Vec<(u16, &[u8])> = attrs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let padding = vec![0u8; pad];
            if pad % 3 == 0 {
                attrs.push((0x0026, &padding));
            }
            let id = if cookie { id5389() } else { ID3489.to_vec() };
            let req = msg(0x0001, &id, &attrs, fingerprint);
            let rx = Received {
                transport: if tcp { Transport::Tcp } else { Transport::Udp },
                local: addr_of(LocalSocket::ALL[local % n]),
                source: client(),
            };
            let mut out = vec![0u8; 8192];
            if let Ok(Transmit { len, local: from, dst: to, .. }) = r.handle(Instant::now(), rx, &req, &mut out) {
                prop_assert!(len <= MAX_RESPONSE_LEN.max(req.len()), "{} > max({}, {})", len, MAX_RESPONSE_LEN, req.len());
                let bound = crate::server::AMPLIFICATION_FACTOR * req.len();
                prop_assert!(len <= bound, "{} > 4 x {}", len, req.len());
                prop_assert!(r.config().local_socket(from).is_some_and(|s| s.index() < n));
                prop_assert_eq!(to.ip(), client().ip());
                prop_assert!(Message::parse(&out[..len]).is_ok());
            }
        }

        /// Every kind of answer, to its minimal request, in every configuration: at most 4 x the request.
        #[test]
        fn minimal_requests_stay_within_the_factor(
            kind in proptest::sample::select(amplification::KINDS.to_vec()),
            ipv6 in any::<bool>(),
            rfc5780 in any::<bool>(),
            software_len in proptest::option::of(0usize..=MAX_SOFTWARE_LEN),
        ) {
            prop_assume!(amplification::applies(kind, rfc5780));
            let (req, out) = amplification::answer(kind, ipv6, rfc5780, software_len.map(|n| "s".repeat(n)));
            prop_assert!(out <= crate::server::AMPLIFICATION_FACTOR * req, "{:?}: {} > 4 x {}", kind, out, req);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = responder(rfc5780());
            let mut out = [0u8; 600];
            let _ = r.handle(Instant::now(), udp(LocalSocket::PRIMARY), &bytes, &mut out);
        }
    }
}

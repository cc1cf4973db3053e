//! Byte-for-byte answers of the running server: malformed, truncated, oversized, RFC 3489 and
//! unknown-attribute requests, each checked for its exact answer or for silence.
//!
//! Silence is checked without sleeping per case: the server runs one worker thread, every datagram comes
//! from one client socket, so they are handled in order; after each packet that must stay unanswered we send
//! a sentinel request, and the next datagram we receive must be the sentinel's answer.

mod common;

use common::*;
use holepunch::stun::integrity::fingerprint;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// A message built by hand: type, header bytes 4..20, attributes, optional FINGERPRINT.
fn msg(ty: u16, id: &[u8; 16], attrs: &[(u16, &[u8])], with_fingerprint: bool) -> Vec<u8> {
    let mut m = ty.to_be_bytes().to_vec();
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(id);
    for (kind, value) in attrs {
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        m.resize(m.len().div_ceil(4) * 4, 0);
    }
    if with_fingerprint {
        let len = (m.len() - 20 + 8) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = fingerprint(&m);
        m.extend_from_slice(&[0x80, 0x28, 0, 4]);
        m.extend_from_slice(&crc.to_be_bytes());
    }
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn id(n: u8) -> [u8; 16] {
    let mut id = [n; 16];
    id[..4].copy_from_slice(&COOKIE);
    id
}

fn id3489(n: u8) -> [u8; 16] {
    [n, 0x55, 0xAA, n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, n]
}

fn addr_value(a: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(a) = a else { panic!("IPv4 only here") };
    let mut v = vec![0, 1];
    v.extend_from_slice(&a.port().to_be_bytes());
    v.extend_from_slice(&a.ip().octets());
    v
}

fn xor_value(a: SocketAddr, id: &[u8; 16]) -> Vec<u8> {
    let mut v = addr_value(a);
    v[2] ^= id[0];
    v[3] ^= id[1];
    for i in 0..4 {
        v[4 + i] ^= id[i];
    }
    v
}

fn error_value(code: u16, reason: &str) -> Vec<u8> {
    let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
    v.extend_from_slice(reason.as_bytes());
    v
}

struct Rig {
    _server: Server,
    sock: UdpSocket,
    me: SocketAddr,
    p1: SocketAddr,
    a2p2: SocketAddr,
    sentinel: u8,
}

impl Rig {
    fn new() -> Rig {
        let server = Server::start(&[
            "--primary",
            "127.0.0.1",
            "--alternate",
            "127.0.0.2",
            "--threads",
            "1",
            "--rate-limit",
            "0",
        ]);
        let sock = client(false);
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let me = sock.local_addr().unwrap();
        let p1: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
        let a2p2: SocketAddr = format!("127.0.0.2:{}", server.alt_port).parse().unwrap();
        // Make sure the server is there before the ordered exchange starts.
        let warm = msg(0x0001, &id(0xEE), &[], false);
        transact(&sock, p1, &warm).expect("server answers");
        Rig { _server: server, sock, me, p1, a2p2, sentinel: 0x80 }
    }

    fn recv(&self) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        let (n, from) = self.sock.recv_from(&mut buf).expect("an answer within 2 s");
        assert_eq!(from, self.p1, "answer from the primary socket");
        buf[..n].to_vec()
    }

    /// `req` must be answered with exactly `expect`.
    fn answered(&mut self, name: &str, req: &[u8], expect: &[u8]) {
        self.sock.send_to(req, self.p1).unwrap();
        let got = self.recv();
        assert_eq!(got, expect, "{name}: answer differs");
    }

    /// `req` must get no answer at all.
    fn silent(&mut self, name: &str, req: &[u8]) {
        self.sentinel += 1;
        let sentinel = msg(0x0001, &id(self.sentinel), &[], false);
        self.sock.send_to(req, self.p1).unwrap();
        self.sock.send_to(&sentinel, self.p1).unwrap();
        let got = self.recv();
        assert_eq!(&got[4..20], &sentinel[4..20], "{name}: expected silence, got an answer {got:02x?}");
    }

    /// The success answer; `software`: whether SOFTWARE fits the amplification bound (4 x the request), which
    /// it does not for a 20-byte request (76 bytes without it).
    fn success(&self, id: &[u8; 16], padding: Option<usize>, software: bool) -> Vec<u8> {
        let pad = vec![0u8; padding.unwrap_or(0)];
        let mut attrs: Vec<(u16, Vec<u8>)> = vec![
            (0x0020, xor_value(self.me, id)),
            (0x0001, addr_value(self.me)),
            (0x802B, addr_value(self.p1)),
            (0x802C, addr_value(self.a2p2)),
        ];
        if padding.is_some() {
            attrs.push((0x0026, pad));
        }
        if software {
            attrs.push((0x8022, SOFTWARE.as_bytes().to_vec()));
        }
        let refs: Vec<(u16, &[u8])> = attrs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        msg(0x0101, id, &refs, true)
    }
}

#[test]
fn answers_and_silences_byte_for_byte() {
    let mut r = Rig::new();

    // A plain RFC 5389 request, and one with FINGERPRINT and an unknown comprehension-optional attribute.
    let expect = r.success(&id(1), None, false);
    r.answered("plain", &msg(0x0001, &id(1), &[], false), &expect);
    assert_eq!(expect.len(), 76, "at most 4 x the 20-byte request");
    let expect = r.success(&id(1), None, true);
    r.answered("optional+fingerprint", &msg(0x0001, &id(1), &[(0xC0DE, b"whatever")], true), &expect);

    // RFC 3489 request: MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS; no FINGERPRINT, no SOFTWARE.
    let i3 = id3489(3);
    let expect = msg(
        0x0101,
        &i3,
        &[(0x0001, &addr_value(r.me)), (0x0004, &addr_value(r.p1)), (0x0005, &addr_value(r.a2p2))],
        false,
    );
    r.answered("rfc3489", &msg(0x0001, &i3, &[(0x0003, &[0, 0, 0, 0])], false), &expect);

    // Unknown comprehension-required attributes: 420 listing them (RFC 5389 form, and RFC 3489 form).
    let expect = msg(
        0x0111,
        &id(4),
        &[(0x0009, &error_value(420, "Unknown Attribute")), (0x000A, &[0x7F, 0x00]), (0x8022, SOFTWARE.as_bytes())],
        true,
    );
    r.answered("unknown attribute", &msg(0x0001, &id(4), &[(0x7F00, &[1, 2, 3])], true), &expect);
    let i5 = id3489(5);
    let expect = msg(0x0111, &i5, &[(0x0009, &error_value(420, "Unknown Attribute")), (0x000A, &[0x00, 0x02])], false);
    r.answered("rfc3489 RESPONSE-ADDRESS", &msg(0x0001, &i5, &[(0x0002, &addr_value(r.me))], false), &expect);

    // Bad values of known attributes: 400.
    let expect = msg(
        0x0111,
        &id(6),
        &[(0x0009, &error_value(400, "Bad Request: PADDING with RESPONSE-PORT")), (0x8022, SOFTWARE.as_bytes())],
        true,
    );
    r.answered(
        "padding+response-port",
        &msg(0x0001, &id(6), &[(0x0026, &[0; 8]), (0x0027, &[0x30, 0x39, 0, 0])], false),
        &expect,
    );

    // PADDING: mirrored, cut so the answer is exactly as long as the request.
    let req = msg(0x0001, &id(7), &[(0x0026, &[0xAB; 1400])], false);
    let base = r.success(&id(7), Some(0), true).len();
    let expect = r.success(&id(7), Some(req.len() - base), true);
    assert_eq!(expect.len(), req.len());
    r.answered("padding", &req, &expect);

    // Silence: truncated, malformed, oversized, not STUN, not a request, bad FINGERPRINT.
    let good = msg(0x0001, &id(8), &[(0x8022, b"client")], true);
    r.silent("empty", &[]);
    r.silent("19-byte header", &good[..19]);
    r.silent("truncated body", &good[..good.len() - 4]);
    let mut p = good.clone();
    p[3] += 4;
    r.silent("length field too long", &p);
    let mut p = good.clone();
    p[0] = 0xC0;
    r.silent("first bits set", &p);
    let mut p = good.clone();
    let n = p.len();
    p[n - 1] ^= 0xFF;
    r.silent("bad fingerprint", &p);
    let mut p = msg(0x0001, &id(9), &[(0x8022, b"abcd")], false);
    p[23] = 0xFF;
    r.silent("attribute overruns message", &p);
    r.silent("oversized", &msg(0x0001, &id(10), &[(0x0026, &[0; 4000])], false));
    r.silent("binding indication", &msg(0x0011, &id(11), &[], true));
    r.silent("binding success response", &msg(0x0101, &id(12), &[], true));
    r.silent("binding error response", &msg(0x0111, &id(13), &[], true));
    r.silent("allocate request", &msg(0x0003, &id(14), &[], true));
    r.silent("not stun at all", b"GET / HTTP/1.1\r\n\r\n");

    // And it still answers normally.
    let expect = r.success(&id(15), None, false);
    r.answered("after all that", &msg(0x0001, &id(15), &[], false), &expect);
}

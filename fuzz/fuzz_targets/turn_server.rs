//! Arbitrary bytes into the TURN server engine (src/relay/): as a client's datagram on the listening address
//! and as a peer's datagram on a relay socket, with an allocation, a permission and a channel in place, and
//! into the ChannelData parser. The bytes also go in as the attributes of a well-framed TURN message (the
//! first byte picks method and class, the header's length is made to fit), so the fuzzer reaches the request
//! handlers instead of stopping at the framing checks. Any panic is a bug.
#![no_main]

use holepunch::net::{Engine, Received};
use holepunch::relay::{Event, RelayConfig, RelayServer};
use holepunch::stun::attr::Attribute;
use holepunch::stun::channel::channel_frame_len;
use holepunch::stun::integrity::long_term_key_md5;
use holepunch::stun::{ChannelData, Class, Message, MessageType, MessageWriter, Method};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::Instant;

fn request(method: Method, id: u8, nonce: Option<&str>, fill: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), &[id; 12]).unwrap();
    fill(&mut w);
    if let Some(n) = nonce {
        w.add(&Attribute::Username("u")).unwrap();
        w.add(&Attribute::Realm("r")).unwrap();
        w.add(&Attribute::Nonce(n)).unwrap();
        w.add_message_integrity(&long_term_key_md5("u", "r", "p")).unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

fuzz_target!(|data: &[u8]| {
    let _ = ChannelData::parse(data);
    let _ = channel_frame_len(data);
    let now = Instant::now();
    let mut c = RelayConfig::new("r");
    c.credentials.add_user("u", "p", "r");
    c.policy.allowed = vec!["0.0.0.0/0".parse().unwrap()];
    c.rate_limit = None;
    let mut s = RelayServer::new(c, [1; 32], now, 1_800_000_000).unwrap();
    let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let client: SocketAddr = "203.0.113.1:5000".parse().unwrap();
    let relay: SocketAddr = "192.0.2.1:50000".parse().unwrap();
    let peer: SocketAddr = "198.51.100.1:7000".parse().unwrap();
    let rx = Received::udp(server, client);
    let mut out = [0u8; 4096];
    s.handle_input(now, rx, &request(Method::ALLOCATE, 1, None, |_| {}));
    let t = s.poll_transmit(&mut out).unwrap();
    let nonce = Message::parse(&out[..t.len]).unwrap().get(holepunch::stun::attr::NONCE).unwrap();
    let Some(Attribute::Nonce(nonce)) = nonce else { panic!() };
    let nonce = nonce.to_string();
    s.handle_input(now, rx, &request(Method::ALLOCATE, 2, Some(&nonce), |w| {
        w.add(&Attribute::RequestedTransport(17)).unwrap()
    }));
    while let Some(e) = s.poll_event() {
        if let Event::OpenRelay { id, .. } = e {
            s.relay_opened(now, id, Some(relay));
        }
    }
    s.handle_input(now, rx, &request(Method::CHANNEL_BIND, 3, Some(&nonce), |w| {
        w.add(&Attribute::ChannelNumber(0x4000)).unwrap();
        w.add(&Attribute::XorPeerAddress(peer)).unwrap();
    }));
    while s.poll_transmit(&mut out).is_some() {}
    assert!(s.is_relay(relay));

    s.handle_input(now, rx, data);
    s.handle_input(now, Received::udp(relay, peer), data);
    if let Some((&sel, rest)) = data.split_first() {
        let methods = [Method::ALLOCATE, Method::REFRESH, Method::SEND, Method::CREATE_PERMISSION, Method::CHANNEL_BIND];
        let class = if sel & 0x80 != 0 { Class::Indication } else { Class::Request };
        let ty = MessageType::new(methods[usize::from(sel & 0x7F) % methods.len()], class);
        let body = &rest[..(rest.len() & !3).min(1024)];
        let mut framed = Vec::with_capacity(20 + body.len());
        framed.extend_from_slice(&ty.to_u16().to_be_bytes());
        framed.extend_from_slice(&(body.len() as u16).to_be_bytes());
        framed.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        framed.extend_from_slice(&[sel; 12]);
        framed.extend_from_slice(body);
        s.handle_input(now, rx, &framed);
    }
    s.handle_timeout(now);
    while s.poll_transmit(&mut out).is_some() {}
    while s.poll_event().is_some() {}
});

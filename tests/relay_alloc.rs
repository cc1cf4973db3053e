//! The TURN relay's data path does not touch the heap once warm: ChannelData and Send indications from the
//! client out to the peer, and the peer's datagrams back as ChannelData or Data indications, through
//! `handle_input` and `poll_transmit`, are zero allocations (the engine recycles its transmit buffers). Counted
//! with the per-thread counting allocator, like tests/stun_alloc.rs.

use holepunch::net::{Engine, Received};
use holepunch::relay::{Event, RelayConfig, RelayServer};
use holepunch::stun::attr::{self, Attribute};
use holepunch::stun::integrity::long_term_key_md5;
use holepunch::stun::{ChannelData, Class, Message, MessageType, MessageWriter, Method};
use std::net::SocketAddr;
use std::time::Instant;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn request(method: Method, id: u8, nonce: Option<&str>, fill: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), &[id; 12]).unwrap();
    fill(&mut w);
    if let Some(n) = nonce {
        w.add(&Attribute::Username("alice")).unwrap();
        w.add(&Attribute::Realm("r")).unwrap();
        w.add(&Attribute::Nonce(n)).unwrap();
        w.add_message_integrity(&long_term_key_md5("alice", "r", "secret")).unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

#[test]
fn relaying_allocates_nothing() {
    let now = Instant::now();
    let mut c = RelayConfig::new("r");
    c.credentials.add_user("alice", "secret", "r");
    let mut s = RelayServer::new(c, [3; 32], now, 1_800_000_000).unwrap();
    let (server, client, relay) = (sa("192.0.2.1:3478"), sa("203.0.113.1:5000"), sa("192.0.2.1:50000"));
    let (p1, p2) = (sa("198.51.100.1:7000"), sa("198.51.100.2:7000"));
    let rx = Received::udp(server, client);
    let mut out = [0u8; 4096];
    s.handle_input(now, rx, &request(Method::ALLOCATE, 1, None, |_| {}));
    let t = s.poll_transmit(&mut out).unwrap();
    let Ok(Some(Attribute::Nonce(nonce))) = Message::parse(&out[..t.len]).unwrap().get(attr::NONCE) else {
        panic!("no nonce")
    };
    let nonce = nonce.to_string();
    s.handle_input(
        now,
        rx,
        &request(Method::ALLOCATE, 2, Some(&nonce), |w| w.add(&Attribute::RequestedTransport(17)).unwrap()),
    );
    while let Some(e) = s.poll_event() {
        if let Event::OpenRelay { id, .. } = e {
            assert!(s.relay_opened(now, id, Some(relay)));
        }
    }
    // A channel to p1, only a permission for p2.
    s.handle_input(
        now,
        rx,
        &request(Method::CHANNEL_BIND, 3, Some(&nonce), |w| {
            w.add(&Attribute::ChannelNumber(0x4000)).unwrap();
            w.add(&Attribute::XorPeerAddress(p1)).unwrap();
        }),
    );
    s.handle_input(
        now,
        rx,
        &request(Method::CREATE_PERMISSION, 4, Some(&nonce), |w| {
            w.add(&Attribute::XorPeerAddress(p2)).unwrap();
        }),
    );
    while s.poll_transmit(&mut out).is_some() {}

    let mut cd = [0u8; 1300];
    let cd_len = ChannelData::write(0x4000, &[7; 1200], false, &mut cd).unwrap();
    let mut send = [0u8; 1300];
    let mut w = MessageWriter::new(&mut send, MessageType::new(Method::SEND, Class::Indication), &[5; 12]).unwrap();
    w.add(&Attribute::XorPeerAddress(p2)).unwrap();
    w.add(&Attribute::Data(&[8; 1200])).unwrap();
    let send_len = w.finish();
    let payload = [9u8; 1200];
    let round = |s: &mut RelayServer, out: &mut [u8]| {
        let mut sent = 0;
        s.handle_input(now, rx, &cd[..cd_len]);
        s.handle_input(now, rx, &send[..send_len]);
        s.handle_input(now, Received::udp(relay, p1), &payload);
        s.handle_input(now, Received::udp(relay, p2), &payload);
        while s.poll_transmit(out).is_some() {
            sent += 1;
        }
        sent
    };
    // Warm-up fills the engine's pool of transmit buffers.
    for _ in 0..4 {
        assert_eq!(round(&mut s, &mut out), 4);
    }
    let (allocs, _) = counting_alloc::allocations_in(|| {
        for _ in 0..1000 {
            assert_eq!(round(&mut s, &mut out), 4);
        }
    });
    assert_eq!(allocs, 0, "4000 relayed datagrams allocated");
    assert_eq!(s.stats().to_peer_packets, 2 * 1004);
}

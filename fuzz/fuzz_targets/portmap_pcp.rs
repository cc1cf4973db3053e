//! Arbitrary bytes as a PCP response (RFC 6887): `pcp::parse_response`, then the same datagram into a
//! `pcp::Client` waiting for an ANNOUNCE or a MAP (fixed nonce, so the fuzzer can learn to match it). Any panic
//! is a bug; the asserts are the framing rules of §7.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use holepunch::portmap::pcp::{parse_response, Client, MapRequest, Request, ResultCode};
use holepunch::net::{Engine, Received, Retransmit};
use holepunch::portmap::{pcp, Protocol};
use libfuzzer_sys::fuzz_target;

fn drive(request: Request, data: &[u8]) {
    let server = SocketAddr::from((Ipv4Addr::new(192, 168, 1, 1), 5351));
    let client_ip = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));
    let local = SocketAddr::new(client_ip, 40000);
    let now = Instant::now();
    let mut client = Client::new(local, server, client_ip, Retransmit::diagnostic(), [0; 32]);
    let id = client.request(now, request);
    let mut buf = [0u8; 1100];
    let tx = client.poll_transmit(&mut buf).expect("a queued request is sent at once");
    assert!(tx.len <= buf.len());
    client.handle_input(now, Received::udp(local, server), data);
    for _ in 0..4 {
        match client.poll_event() {
            Some(pcp::Event::Completed { id: done, request: r, .. }) => {
                assert_eq!((done, r), (id, request));
                assert_eq!(client.pending(), 0);
            }
            Some(pcp::Event::ServerReset { .. }) => {}
            None => return,
        }
    }
    panic!("more than three events from one datagram");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = parse_response(data) {
        assert!((24..=1100).contains(&data.len()) && data.len().is_multiple_of(4));
        assert_ne!(data[1] & 0x80, 0);
        if reply.version != 2 {
            assert_eq!(reply.result, ResultCode::UnsuppVersion);
        }
        if let Some(map) = reply.map {
            assert_eq!(reply.opcode, 1);
            assert_eq!(map.nonce[..], data[24..36]);
        }
        if reply.result == ResultCode::Success {
            assert!(reply.opcode == 0 || reply.map.is_some());
        }
    }
    let map = MapRequest {
        nonce: *b"holepunchfuz",
        protocol: Protocol::Udp,
        internal_port: 6666,
        suggested_external: None,
        lifetime: 7200,
    };
    drive(Request::Announce, data);
    drive(Request::Map(map), data);
    drive(Request::Map(MapRequest { lifetime: 0, ..map }), data);
});

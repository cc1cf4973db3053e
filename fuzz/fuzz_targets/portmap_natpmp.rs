//! Arbitrary bytes as a NAT-PMP response (RFC 6886): `natpmp::parse_response`, then the same datagram into a
//! `natpmp::Client` with a request of each kind on the wire, from the server and from a stranger. Any panic is a
//! bug; the asserts are what §3.2/§3.3 promise a caller.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use holepunch::portmap::natpmp::{parse_response, Client, Request, ResultCode};
use holepunch::net::{Engine, Received, Retransmit};
use holepunch::portmap::{natpmp, Protocol};
use libfuzzer_sys::fuzz_target;

fn drive(request: Request, from: SocketAddr, server: SocketAddr, data: &[u8]) {
    let local = SocketAddr::from((Ipv4Addr::new(192, 168, 1, 2), 40000));
    let now = Instant::now();
    let mut client = Client::new(local, server, Retransmit::diagnostic());
    let id = client.request(now, request);
    let mut buf = [0u8; 64];
    let tx = client.poll_transmit(&mut buf).expect("a queued request is sent at once");
    assert!(tx.len <= buf.len());
    client.handle_input(now, Received::udp(local, from), data);
    // A bounded drain: one request yields at most a reset and a completion.
    for _ in 0..4 {
        match client.poll_event() {
            Some(natpmp::Event::Completed { id: done, request: r, .. }) => {
                assert_eq!((done, r), (id, request));
                assert_eq!(client.pending(), 0);
            }
            Some(natpmp::Event::ServerReset { .. }) => {}
            None => return,
        }
    }
    panic!("more than three events from one datagram");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = parse_response(data) {
        assert_eq!(reply.response.is_some(), reply.result == ResultCode::Success);
        assert_eq!(data[0], 0);
        assert_eq!(reply.opcode, data[1] - 128);
        match reply.response {
            Some(natpmp::Response::ExternalAddress { epoch, .. }) => {
                assert_eq!((reply.opcode, data.len(), epoch), (0, 12, reply.epoch));
            }
            Some(natpmp::Response::Mapping { epoch, protocol, internal_port, .. }) => {
                let want = if reply.opcode == 1 { Protocol::Udp } else { Protocol::Tcp };
                assert_eq!((protocol, data.len(), epoch), (want, 16, reply.epoch));
                assert_eq!(reply.internal_port, Some(internal_port));
            }
            None => {}
        }
    }
    let server = SocketAddr::from((Ipv4Addr::new(192, 168, 1, 1), 5351));
    let stranger = SocketAddr::from((Ipv4Addr::new(192, 168, 1, 66), 5351));
    let map =
        Request::Map { protocol: Protocol::Udp, internal_port: 6666, suggested_external_port: 6666, lifetime: 7200 };
    for request in [Request::ExternalAddress, map, Request::delete(Protocol::Tcp, 6666)] {
        drive(request, server, server, data);
    }
    drive(map, stranger, server, data);
});

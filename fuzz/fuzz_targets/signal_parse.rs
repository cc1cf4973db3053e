//! Arbitrary datagrams into the rendezvous server and client, on both their paths: as sent by anyone, and as
//! sent by the address each trusts (a peer's source for the server, the server's address for the client).
//! Both must never panic, the server must never answer a datagram that proved nothing with more bytes than
//! it got, and the client must never answer a datagram not signed with its key. The first byte picks the
//! scenario (a registration in flight or not, from the server's address or not); the rest is the datagram.
#![no_main]

use holepunch::identity::PublicKey;
use holepunch::net::{Engine, Received};
use holepunch::stun::Message;
use holepunch::signal::{Client, ClientConfig, MemoryRegistry, NetworkSecret, PeerName, Server, ServerConfig};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, datagram)) = data.split_first() else { return };
    let t0 = Instant::now();
    let server_addr: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let peer: SocketAddr = "198.51.100.1:6666".parse().unwrap();
    let secret = NetworkSecret::new(b"fuzz".to_vec());
    let mut buf = [0u8; 1500];

    let mut server =
        Server::new(ServerConfig::new(secret.clone()), MemoryRegistry::new(16, t0), [1; 32], t0).unwrap();
    let consumed = server.handle_input(t0, Received::udp(server_addr, peer), datagram);
    assert_eq!(consumed, holepunch::signal::is_signal_message(datagram));
    while let Some(t) = server.poll_transmit(&mut buf) {
        // An answer larger than the request needs a verified nonce: only possible with the secret, and
        // nonces come from the server's random key, which the fuzzer cannot know.
        assert!(t.len <= datagram.len(), "{} byte answer to {} bytes", t.len, datagram.len());
    }
    server.handle_timeout(t0 + Duration::from_secs(1));
    while server.poll_event().is_some() {}

    let name = PeerName::new("alice").unwrap();
    let key = secret.peer_key(&name);
    let config = ClientConfig::new(peer, server_addr, name, PublicKey([1; 32]), &secret);
    let mut client = Client::new(config, [2; 32], t0);
    if mode & 1 == 1 {
        // With a registration in flight, so answers can match a transaction id only if they guess it.
        client.handle_timeout(t0);
        while client.poll_transmit(&mut buf).is_some() {}
    }
    let source = if mode & 2 == 2 { server_addr } else { "203.0.113.9:6666".parse().unwrap() };
    let _ = client.handle_input(t0, Received::udp(peer, source), datagram);
    let signed = Message::parse(datagram).is_ok_and(|m| m.check_integrity_sha256(key.as_bytes()).is_ok());
    if client.poll_transmit(&mut buf).is_some() {
        // Only a PUSH signed with alice's key is answered; anything else is silently dropped.
        assert!(signed, "the client answered an unsigned datagram");
    }
    client.handle_timeout(t0 + Duration::from_secs(1));
    while client.poll_event().is_some() {}
});

//! Criterion benchmark of the rendezvous server's steady state: an authenticated REGISTER refresh (rate
//! limit, FINGERPRINT, integrity under K(name), nonce, registry refresh with two candidates, the signed
//! success answer) through `signal::Server::handle_input` and `poll_transmit`. Every registered peer sends one
//! every keepalive (3 s), so peers served per core ≈ 3 × refreshes per second.
//!
//! Run: `cargo bench -p holepunch --bench signal`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use holepunch::identity::PublicKey;
use holepunch::net::{Engine, Received};
use holepunch::server::{RateLimitConfig, MAX_BURST, MAX_RATE};
use holepunch::signal::wire::{self, WriteSignal};
use holepunch::signal::{Candidate, CandidateKind, MemoryRegistry, NetworkSecret, PeerName, Server, ServerConfig};
use holepunch::stun::{attr, Attribute, Class, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn register(name: &PeerName, secret: &NetworkSecret, id: [u8; 12], nonce: Option<&[u8]>) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let mut w = wire::writer(&mut buf, wire::REGISTER, Class::Request, &id).unwrap();
    let raw_id = w.raw_id();
    w.add(&Attribute::Username(name.as_str())).unwrap();
    w.add_peer_key(&PublicKey([7; 32])).unwrap();
    for addr in ["192.168.1.20:6666", "[2001:db8::20]:6666"] {
        w.add_candidate(&Candidate { kind: CandidateKind::Host, addr: addr.parse().unwrap() }, &raw_id).unwrap();
    }
    if let Some(n) = nonce {
        w.add_raw(attr::NONCE, n).unwrap();
    }
    w.add_message_integrity_sha256(secret.peer_key(name).as_bytes()).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

fn refresh(c: &mut Criterion) {
    let t0 = Instant::now();
    let secret = NetworkSecret::new(b"bench secret".to_vec());
    let mut config = ServerConfig::new(secret.clone());
    config.rate_limit = RateLimitConfig { rate_per_sec: MAX_RATE, burst: MAX_BURST, slots: 1024 };
    let mut server = Server::new(config, MemoryRegistry::new(1000, t0), [1; 32], t0).unwrap();
    let local: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let source: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    let name = PeerName::new("alice").unwrap();
    let mut buf = [0u8; 1500];
    server.handle_input(t0, Received::udp(local, source), &register(&name, &secret, [1; 12], None));
    let t = server.poll_transmit(&mut buf).unwrap();
    let nonce = Message::parse(&buf[..t.len]).unwrap().raw(attr::NONCE).unwrap().value.to_vec();
    let req = register(&name, &secret, [2; 12], Some(&nonce));
    let mut now = t0;
    let mut group = c.benchmark_group("signal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("register-refresh", |b| {
        b.iter(|| {
            // 1 µs per refresh keeps the nonce (60 s bucket) valid for 60 million iterations.
            now += Duration::from_micros(1);
            server.handle_input(now, Received::udp(local, source), black_box(&req));
            let t = server.poll_transmit(&mut buf).unwrap();
            black_box(t.len)
        })
    });
    group.finish();
    assert_eq!(server.stats().registrations, 1);
    assert!(server.stats().refreshes > 0);
}

criterion_group!(benches, refresh);
criterion_main!(benches);

//! Arbitrary bytes as a message from another rendezvous instance (docs/signal.md, "Cluster"): what stund
//! reads from Redis. Decoding never panics; what decodes re-encodes to a message that decodes the same; and a
//! decoded message fed to a server (as a registration to its replica, or as an introduction to push) never
//! panics it either.
#![no_main]

use holepunch::net::Engine;
use holepunch::signal::{ClusterMessage, InstanceId, MemoryRegistry, NetworkSecret, Server, ServerConfig};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ClusterMessage::decode(data) else { return };
    let this = InstanceId::new("fuzz").unwrap();
    assert_eq!(ClusterMessage::decode(&msg.encode(&this)).as_ref(), Ok(&msg));
    let t0 = Instant::now();
    let config = ServerConfig { cluster: true, ..ServerConfig::new(NetworkSecret::new(b"fuzz".to_vec())) };
    let mut server = Server::new(config, MemoryRegistry::new(16, t0), [1; 32], t0).unwrap();
    match msg {
        ClusterMessage::Registration { registration, lifetime } => {
            let _ = server.apply_remote(t0, &registration, lifetime);
        }
        ClusterMessage::Introduction { to, about, session } => {
            let _ = server.introduce_remote(t0, &to, &about, session);
        }
    }
    let mut buf = [0u8; 1500];
    while server.poll_transmit(&mut buf).is_some() {}
    server.handle_timeout(t0 + Duration::from_secs(20));
    while server.poll_event().is_some() {}
    while server.poll_cluster().is_some() {}
});

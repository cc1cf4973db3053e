//! Arbitrary datagrams into the punching agent (src/punch), as a configured peer's source and as a stranger's,
//! with and without an introduction under way. The agent must never panic, claim only STUN-looking
//! datagrams, and never answer one that is not a check signed with the key it shares with that peer (which
//! the fuzzer cannot know: X25519 of two fixed secrets, then HMAC).
#![no_main]

use holepunch::identity::SecretKey;
use holepunch::net::{Engine, Received};
use holepunch::punch::{auth, Agent, AgentConfig};
use holepunch::signal::{Introduction, NatProfile, PeerName};
use holepunch::stun::Message;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, datagram)) = data.split_first() else { return };
    let t0 = Instant::now();
    let alice_addr: SocketAddr = "192.0.2.1:6666".parse().unwrap();
    let bob_addr: SocketAddr = "198.51.100.1:6666".parse().unwrap();
    let alice_key = SecretKey::from_seed([1; 32]);
    let bob_key = SecretKey::from_seed([2; 32]);
    let probe_key = auth::probe_key(&alice_key, &bob_key.public()).unwrap();
    let mut agent =
        Agent::new(AgentConfig::new(alice_addr, PeerName::new("alice").unwrap(), alice_key), [3; 32]);
    agent.add_peer(PeerName::new("bob").unwrap(), bob_key.public()).unwrap();
    let mut buf = [0u8; 1500];
    if mode & 1 == 1 {
        let intro = Introduction {
            peer: PeerName::new("bob").unwrap(),
            key: bob_key.public(),
            reflexive: bob_addr,
            candidates: Vec::new(),
            profile: NatProfile::UNKNOWN,
            session: 1,
        };
        agent.introduce(t0, intro).unwrap();
        while agent.poll_transmit(&mut buf).is_some() {}
    }
    let source = if mode & 2 == 2 { bob_addr } else { "203.0.113.9:6666".parse().unwrap() };
    let taken = agent.handle_input(t0, Received::udp(alice_addr, source), datagram);
    assert!(!taken || holepunch::stun::looks_like_stun(datagram), "claimed a non-STUN datagram");
    let signed = Message::parse(datagram).is_ok_and(|m| auth::verify(&m, &probe_key));
    if agent.poll_transmit(&mut buf).is_some() {
        assert!(signed, "the agent answered a datagram not signed with the probe key");
    }
    agent.handle_timeout(t0 + Duration::from_secs(1));
    while agent.poll_event().is_some() {}
    let _ = agent.status();
});

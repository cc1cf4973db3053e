//! The TURN client against the TURN server engine, in memory with a fake clock: the challenge, allocation,
//! permissions and channels, data both ways (Send/Data indications, then ChannelData), refreshes, stale
//! nonces, wrong credentials, REST credentials, and the close.

use super::client::{AllocationError, TurnClient, TurnClientConfig, TurnCredentials, TurnEvent};
use super::server::{Event, RelayConfig, RelayServer};
use crate::net::{Engine, Received};
use crate::stun::{looks_like_channel_data, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const REALM: &str = "client.test";
const UNIX0: u64 = 1_800_000_000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const SERVER: &str = "192.0.2.1:3478";
const CLIENT: &str = "203.0.113.5:6666";
const PEER: &str = "198.51.100.7:9000";

struct World {
    server: RelayServer,
    client: TurnClient,
    now: Instant,
    next_port: u16,
    /// Datagrams the relay sent to peers: (relay socket, peer, payload).
    to_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Relayed data the client unwrapped: (peer, payload).
    from_peers: Vec<(SocketAddr, Vec<u8>)>,
    /// Relayed datagrams the client got as ChannelData (not Data indications).
    channel_data: usize,
    events: Vec<TurnEvent>,
}

fn server_config() -> RelayConfig {
    let mut c = RelayConfig::new(REALM);
    c.credentials.add_user("alice", "secret", REALM);
    c.credentials.set_secret(b"shared".to_vec());
    c.policy.own = vec![sa(SERVER).ip()];
    c.policy.allowed = vec!["198.51.100.0/24".parse().unwrap()];
    c.rate_limit = None;
    c
}

impl World {
    fn new(credentials: TurnCredentials, server: RelayConfig) -> World {
        let now = Instant::now();
        let server = RelayServer::new(server, [3; 32], now, UNIX0).unwrap();
        let client = TurnClient::new(TurnClientConfig::new(sa(CLIENT), sa(SERVER), credentials), [4; 32], now);
        let mut w = World {
            server,
            client,
            now,
            next_port: 50000,
            to_peers: Vec::new(),
            from_peers: Vec::new(),
            channel_data: 0,
            events: Vec::new(),
        };
        w.pump();
        w
    }

    /// Moves datagrams between the client and the server until both are quiet (bounded).
    fn pump(&mut self) {
        let mut buf = [0u8; 4096];
        for _ in 0..100 {
            let mut any = false;
            while let Some(t) = self.client.poll_transmit(&mut buf) {
                any = true;
                assert_eq!((t.local, t.dst), (sa(CLIENT), sa(SERVER)));
                self.server.handle_input(self.now, Received::udp(sa(SERVER), sa(CLIENT)), &buf[..t.len]);
            }
            while let Some(e) = self.server.poll_event() {
                if let Event::OpenRelay { id, .. } = e {
                    let relay = SocketAddr::new(sa(SERVER).ip(), self.next_port);
                    self.next_port += 1;
                    self.server.relay_opened(self.now, id, Some(relay));
                }
            }
            while let Some(t) = self.server.poll_transmit(&mut buf) {
                any = true;
                let data = buf[..t.len].to_vec();
                if t.dst == sa(CLIENT) {
                    let input = Received::udp(sa(CLIENT), sa(SERVER));
                    if let Some((peer, payload)) = self.client.unwrap(input, &data) {
                        self.channel_data += usize::from(looks_like_channel_data(&data));
                        self.from_peers.push((peer, payload.to_vec()));
                    } else {
                        self.client.handle_input(self.now, input, &data);
                    }
                } else {
                    self.to_peers.push((t.local, t.dst, data));
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if !any {
                return;
            }
        }
        panic!("client and server never went quiet");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        // Step through both engines' timers, at most one second at a time.
        while self.now < end {
            let next = [self.client.poll_timeout(), Some(self.now + Duration::from_secs(1))]
                .into_iter()
                .flatten()
                .min()
                .unwrap()
                .min(end)
                .max(self.now + Duration::from_millis(1));
            self.now = next;
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            self.pump();
        }
    }

    /// A datagram from `peer` to the relayed address.
    fn peer_sends(&mut self, peer: SocketAddr, payload: &[u8]) {
        let relayed = self.client.relayed().unwrap();
        self.server.handle_input(self.now, Received::udp(relayed, peer), payload);
        self.pump();
    }

    fn client_sends(&mut self, peer: SocketAddr, payload: &[u8]) -> bool {
        let mut buf = [0u8; 2048];
        let Some(t) = self.client.wrap(peer, payload, &mut buf) else { return false };
        self.server.handle_input(self.now, Received::udp(sa(SERVER), sa(CLIENT)), &buf[..t.len]);
        self.pump();
        true
    }
}

fn allocated(w: &World) -> SocketAddr {
    match w.events.iter().find(|e| matches!(e, TurnEvent::Allocated { .. })) {
        Some(TurnEvent::Allocated { relayed, mapped, .. }) => {
            assert_eq!(*mapped, Some(sa(CLIENT)));
            *relayed
        }
        _ => panic!("no allocation: {:?}", w.events),
    }
}

#[test]
fn allocates_after_the_challenge_and_relays_both_ways() {
    let mut w = World::new(TurnCredentials::new("alice", "secret"), server_config());
    let relayed = allocated(&w);
    assert_eq!(relayed.ip(), sa(SERVER).ip());
    assert_eq!(w.client.relayed(), Some(relayed));
    // Without a permission nothing is relayed either way.
    assert!(!w.client_sends(sa(PEER), b"too early"));
    w.peer_sends(sa(PEER), b"unasked");
    assert!(w.from_peers.is_empty());
    // A peer: permission and channel.
    assert!(w.client.add_peer(w.now, sa(PEER)));
    w.pump();
    assert!(w.events.iter().any(|e| matches!(e, TurnEvent::ChannelBound { channel: 0x4000, .. })), "{:?}", w.events);
    assert!(w.client_sends(sa(PEER), b"hello peer"));
    assert_eq!(w.to_peers.last().unwrap(), &(relayed, sa(PEER), b"hello peer".to_vec()));
    w.peer_sends(sa(PEER), b"hello client");
    assert_eq!(w.from_peers.last().unwrap(), &(sa(PEER), b"hello client".to_vec()));
    assert_eq!(w.channel_data, 1, "a bound channel carries ChannelData");
    // Another port of the same IP has the permission but no channel: Data indications, Send indications.
    let other = sa("198.51.100.7:9001");
    w.peer_sends(other, b"from another port");
    assert_eq!(w.from_peers.last().unwrap(), &(other, b"from another port".to_vec()));
    assert_eq!(w.channel_data, 1);
    assert!(w.client_sends(other, b"to another port"));
    assert_eq!(w.to_peers.last().unwrap(), &(relayed, other, b"to another port".to_vec()));
}

#[test]
fn the_allocation_permissions_and_channels_stay_alive() {
    let mut w = World::new(TurnCredentials::new("alice", "secret"), server_config());
    allocated(&w);
    w.client.add_peer(w.now, sa(PEER));
    w.pump();
    // Past the allocation's 10 minutes, the permission's 5 and the channel's 10, twice.
    w.advance(Duration::from_secs(1300));
    assert!(w.client.relayed().is_some(), "{:?}", w.events);
    assert!(!w.events.iter().any(|e| matches!(e, TurnEvent::Failed(_))), "{:?}", w.events);
    w.peer_sends(sa(PEER), b"still here");
    assert_eq!(w.from_peers.last().unwrap(), &(sa(PEER), b"still here".to_vec()));
    assert!(w.client_sends(sa(PEER), b"me too"));
    assert!(w.server.stats().stale_nonces >= 1, "the nonce aged out at least once and the client followed");
}

#[test]
fn wrong_credentials_fail_with_a_reason() {
    let mut w = World::new(TurnCredentials::new("alice", "wrong"), server_config());
    w.pump();
    assert!(w.events.contains(&TurnEvent::Failed(AllocationError::Unauthorized)), "{:?}", w.events);
    assert_eq!(w.client.relayed(), None);
    assert_eq!(AllocationError::Unauthorized.to_string(), "the TURN server refused our credentials (401)");
}

#[test]
fn rest_credentials_from_the_shared_secret() {
    let ok = World::new(TurnCredentials::rest(b"shared", "alice", UNIX0 + 3600), server_config());
    allocated(&ok);
    let expired = World::new(TurnCredentials::rest(b"shared", "alice", UNIX0 - 1), server_config());
    assert!(expired.events.iter().any(|e| matches!(e, TurnEvent::Failed(_))), "{:?}", expired.events);
    let wrong = World::new(TurnCredentials::rest(b"not shared", "alice", UNIX0 + 3600), server_config());
    assert!(wrong.events.contains(&TurnEvent::Failed(AllocationError::Unauthorized)), "{:?}", wrong.events);
    // The password is never printed.
    let c = TurnCredentials::new("u", "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn close_deletes_the_allocation_and_forged_data_is_not_taken() {
    let mut w = World::new(TurnCredentials::new("alice", "secret"), server_config());
    allocated(&w);
    w.client.add_peer(w.now, sa(PEER));
    w.pump();
    // Relayed data from anyone but the server, or on another socket, is not unwrapped.
    let mut buf = [0u8; 64];
    let t = w.client.wrap(sa(PEER), b"x", &mut buf).unwrap();
    let frame = buf[..t.len].to_vec();
    assert!(w.client.unwrap(Received::udp(sa(CLIENT), sa(PEER)), &frame).is_none());
    assert!(w.client.unwrap(Received::udp(sa("203.0.113.5:7777"), sa(SERVER)), &frame).is_none());
    assert!(w.client.unwrap(Received::udp(sa(CLIENT), sa(SERVER)), b"garbage").is_none());
    assert_eq!(w.server.stats().allocations, 1);
    w.client.close(w.now);
    w.pump();
    assert_eq!(w.server.stats().allocations, 0);
    assert_eq!(w.client.relayed(), None);
    assert!(Message::parse(&frame).is_err(), "ChannelData is not STUN");
}

//! Two and three tunnels talking through memory: handshake, data both ways, cryptokey routing, roaming and
//! path changes, and every way a datagram is refused.

use super::*;
use crate::identity::SecretKey;
use crate::net::{IpPrefix, Transmit};
use std::net::{IpAddr, SocketAddr};

const A_SOCK: &str = "192.0.2.1:6666";
const B_SOCK: &str = "198.51.100.2:6666";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn tunnel_ip(n: u8) -> IpAddr {
    format!("100.64.0.{n}").parse().unwrap()
}

fn peer(n: u8, endpoint: Option<&str>) -> TunnelPeerConfig {
    TunnelPeerConfig {
        name: format!("peer{n}"),
        key: key(n).public(),
        allowed_ips: vec![IpPrefix::host(tunnel_ip(n))],
        endpoint: endpoint.map(sa),
    }
}

fn tunnel(n: u8, local: &str, peers: Vec<TunnelPeerConfig>) -> Tunnel {
    Tunnel::new(TunnelConfig { key: key(n), local: sa(local), peers, persistent_keepalive: None }).unwrap()
}

/// An IPv4/UDP packet from `src` to `dst` with `payload`.
fn ip_packet(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else { panic!("v4 only") };
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, ((8 + payload.len()) >> 8) as u8, (8 + payload.len()) as u8, 0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Delivers `datagram` (sent by `t` towards `to`) to `to`: what `to` made of it.
fn deliver(to: &Tunnel, t: Transmit, datagram: &[u8], out: &mut [u8]) -> Decapsulated {
    to.decapsulate(t.dst, t.local, &datagram[..t.len], out)
}

/// Alice (1) and Bob (2) with each other's keys and endpoints; a completed handshake carrying `first`.
fn handshaken(first: &[u8]) -> (Tunnel, Tunnel) {
    let a = tunnel(1, A_SOCK, vec![peer(2, Some(B_SOCK))]);
    let b = tunnel(2, B_SOCK, vec![peer(1, None)]);
    let (mut abuf, mut bbuf) = ([0u8; 2048], [0u8; 2048]);
    // Alice's first packet waits for the handshake; the initiation goes out instead.
    let Encapsulated::Send(init, _) = a.encapsulate(first, &mut abuf) else { panic!("initiation") };
    assert_eq!(init.dst, sa(B_SOCK));
    assert_eq!(packet::wireguard_type(&abuf[..init.len]), Some(packet::HANDSHAKE_INIT));
    let Decapsulated::Reply(resp, Some(_)) = deliver(&b, init, &abuf, &mut bbuf) else { panic!("response") };
    assert_eq!(resp.dst, sa(A_SOCK), "the response answers the initiation's source");
    let after = deliver(&a, resp, &bbuf, &mut abuf);
    let id = match after {
        Decapsulated::Reply(_, Some(id)) | Decapsulated::Done(id) => id,
        other => panic!("{other:?}"),
    };
    // The queued packet now leaves, and Bob delivers it.
    let mut delivered = false;
    while let Some(t) = a.flush(id, &mut abuf) {
        if let Decapsulated::ToTun { offset, len, .. } = deliver(&b, t, &abuf, &mut bbuf) {
            assert_eq!(&bbuf[offset..offset + len], first);
            delivered = true;
        }
    }
    // boringtun may instead confirm with a keepalive first and then send the packet.
    if let Decapsulated::Reply(t, _) = after {
        if let Decapsulated::ToTun { offset, len, .. } = deliver(&b, t, &abuf, &mut bbuf) {
            assert_eq!(&bbuf[offset..offset + len], first);
            delivered = true;
        }
    }
    assert!(delivered, "the packet that waited for the handshake arrives");
    (a, b)
}

#[test]
fn handshake_then_data_both_ways() {
    let first = ip_packet(tunnel_ip(1), tunnel_ip(2), b"hello bob");
    let (a, b) = handshaken(&first);
    let (mut abuf, mut bbuf) = ([0u8; 2048], [0u8; 2048]);
    // Bob learnt Alice's endpoint from her authenticated datagrams and answers without configuration.
    let reply = ip_packet(tunnel_ip(2), tunnel_ip(1), b"hello alice");
    let Encapsulated::Send(t, _) = b.encapsulate(&reply, &mut bbuf) else { panic!("bob sends") };
    assert_eq!(t.dst, sa(A_SOCK));
    let Decapsulated::ToTun { offset, len, .. } = deliver(&a, t, &bbuf, &mut abuf) else { panic!("alice gets it") };
    assert_eq!(&abuf[offset..offset + len], &reply[..]);
    // The ciphertext does not contain the plaintext.
    let big = ip_packet(tunnel_ip(1), tunnel_ip(2), &[0x5a; 1000]);
    let Encapsulated::Send(t, _) = a.encapsulate(&big, &mut abuf) else { panic!() };
    assert_eq!(t.len, big.len() + 32);
    assert!(!abuf[..t.len].windows(16).any(|w| w == [0x5a; 16]));
    let st = a.status();
    assert_eq!(st[0].name, "peer2");
    assert!(st[0].last_handshake.is_some());
    assert!(st[0].rx_packets >= 1 && st[0].tx_packets >= 2, "{st:?}");
}

#[test]
fn path_changes_move_packets_without_a_new_handshake() {
    let (a, b) = handshaken(&ip_packet(tunnel_ip(1), tunnel_ip(2), b"x"));
    let (mut abuf, mut bbuf) = ([0u8; 2048], [0u8; 2048]);
    let bob = a.peer_by_key(&key(2).public()).unwrap();
    // The node found a LAN path from another local address.
    let lan = (sa("10.0.0.1:6666"), sa("10.0.0.2:6666"));
    a.set_path(bob, Some(lan));
    let p = ip_packet(tunnel_ip(1), tunnel_ip(2), b"over the lan");
    let Encapsulated::Send(t, _) = a.encapsulate(&p, &mut abuf) else { panic!() };
    assert_eq!((t.local, t.dst), lan);
    assert_eq!(packet::wireguard_type(&abuf[..t.len]), Some(packet::TRANSPORT_DATA), "same session, no handshake");
    let Decapsulated::ToTun { offset, len, .. } = b.decapsulate(lan.1, lan.0, &abuf[..t.len], &mut bbuf) else {
        panic!()
    };
    assert_eq!(&bbuf[offset..offset + len], &p[..]);
    // Bob roams to the LAN source too.
    let alice = b.peer_by_key(&key(1).public()).unwrap();
    assert_eq!(b.status()[alice.0].endpoint.unwrap().remote, lan.0);
    // The path goes: back to the configured endpoint.
    a.set_path(bob, None);
    let Encapsulated::Send(t, _) = a.encapsulate(&p, &mut abuf) else { panic!() };
    assert_eq!(t.dst, sa(B_SOCK));
}

#[test]
fn refusals() {
    let (a, b) = handshaken(&ip_packet(tunnel_ip(1), tunnel_ip(2), b"x"));
    let (mut abuf, mut bbuf) = ([0u8; 2048], [0u8; 2048]);
    // No route, not IP.
    let stray = ip_packet(tunnel_ip(1), "100.64.0.77".parse().unwrap(), b"x");
    assert!(matches!(a.encapsulate(&stray, &mut abuf), Encapsulated::Dropped(Drop::NoRoute(_))));
    assert_eq!(a.encapsulate(&[0x10; 40], &mut abuf), Encapsulated::Dropped(Drop::NotIp));
    // Too small a buffer is refused, not a panic.
    let p = ip_packet(tunnel_ip(1), tunnel_ip(2), &[1; 500]);
    assert_eq!(a.encapsulate(&p, &mut abuf[..300]), Encapsulated::Dropped(Drop::BufferTooSmall));
    // Alice may not speak for another address: Bob drops a packet whose inner source is not hers.
    let spoof = ip_packet("100.64.0.9".parse().unwrap(), tunnel_ip(2), b"spoof");
    // Alice routes by destination only; the source check is the receiver's.
    let Encapsulated::Send(t, _) = a.encapsulate(&spoof, &mut abuf) else { panic!() };
    assert!(matches!(deliver(&b, t, &abuf, &mut bbuf), Decapsulated::Dropped(Drop::SourceNotAllowed(_))));
    // A tampered data message fails its tag.
    let p = ip_packet(tunnel_ip(1), tunnel_ip(2), b"intact");
    let Encapsulated::Send(t, _) = a.encapsulate(&p, &mut abuf) else { panic!() };
    abuf[t.len - 1] ^= 1;
    assert!(matches!(deliver(&b, t, &abuf, &mut bbuf), Decapsulated::Dropped(Drop::Rejected(Some(_), _))));
    // Replaying an accepted message is refused.
    abuf[t.len - 1] ^= 1;
    let copy = abuf[..t.len].to_vec();
    assert!(matches!(deliver(&b, t, &abuf, &mut bbuf), Decapsulated::ToTun { .. }));
    assert!(matches!(deliver(&b, t, &copy, &mut bbuf), Decapsulated::Dropped(Drop::Rejected(..))));
    // Garbage and unknown indices.
    assert_eq!(b.decapsulate(sa(B_SOCK), sa(A_SOCK), b"hello", &mut bbuf), Decapsulated::Dropped(Drop::NotWireGuard));
    let mut forged = [0u8; 64];
    forged[0] = 4;
    forged[4..8].copy_from_slice(&(77u32 << 8).to_le_bytes());
    assert_eq!(b.decapsulate(sa(B_SOCK), sa(A_SOCK), &forged, &mut bbuf), Decapsulated::Dropped(Drop::UnknownIndex));
    assert!(b.unknown() >= 2);
}

#[test]
fn strangers_get_nothing() {
    // Carol knows Bob's key, but Bob does not know hers: her handshake leads nowhere and gets no answer.
    let carol = tunnel(3, A_SOCK, vec![peer(2, Some(B_SOCK))]);
    let b = tunnel(2, B_SOCK, vec![peer(1, None)]);
    let (mut cbuf, mut bbuf) = ([0u8; 2048], [0u8; 2048]);
    let Encapsulated::Send(init, _) = carol.encapsulate(&ip_packet(tunnel_ip(3), tunnel_ip(2), b"hi"), &mut cbuf)
    else {
        panic!()
    };
    assert_eq!(deliver(&b, init, &cbuf, &mut bbuf), Decapsulated::Dropped(Drop::UnknownPeer));
    // Alice with a wrong key for Bob (she pinned Carol's): Bob cannot even read her initiation.
    let wrong = TunnelPeerConfig { key: key(3).public(), ..peer(2, Some(B_SOCK)) };
    let a = tunnel(1, A_SOCK, vec![wrong]);
    let Encapsulated::Send(init, _) = a.encapsulate(&ip_packet(tunnel_ip(1), tunnel_ip(2), b"hi"), &mut cbuf) else {
        panic!()
    };
    assert!(matches!(deliver(&b, init, &cbuf, &mut bbuf), Decapsulated::Dropped(_)));
    // A peer without an endpoint cannot be sent to.
    let lonely = tunnel(1, A_SOCK, vec![peer(2, None)]);
    assert!(matches!(
        lonely.encapsulate(&ip_packet(tunnel_ip(1), tunnel_ip(2), b"hi"), &mut cbuf),
        Encapsulated::Dropped(Drop::NoPath(_))
    ));
}

#[test]
fn configuration_errors() {
    let dup = Tunnel::new(TunnelConfig {
        key: key(1),
        local: sa(A_SOCK),
        peers: vec![peer(2, None), TunnelPeerConfig { name: "again".into(), ..peer(2, None) }],
        persistent_keepalive: None,
    });
    assert_eq!(dup.unwrap_err().to_string(), "peer again is configured twice (same key)");
    let own = Tunnel::new(TunnelConfig {
        key: key(1),
        local: sa(A_SOCK),
        peers: vec![peer(1, None)],
        persistent_keepalive: None,
    });
    assert_eq!(own.unwrap_err().to_string(), "peer peer1 has our own key");
    let clash = TunnelPeerConfig { allowed_ips: vec![IpPrefix::host(tunnel_ip(2))], ..peer(3, None) };
    let taken = Tunnel::new(TunnelConfig {
        key: key(1),
        local: sa(A_SOCK),
        peers: vec![peer(2, None), clash],
        persistent_keepalive: None,
    });
    assert_eq!(taken.unwrap_err().to_string(), "peer peer3: allowed IP 100.64.0.2/32 is already peer2's");
}

#[test]
fn a_mesh_routes_by_destination() {
    let a = tunnel(1, A_SOCK, vec![peer(2, Some(B_SOCK)), peer(3, Some("203.0.113.3:6666"))]);
    let mut buf = [0u8; 2048];
    let Encapsulated::Send(t, id) = a.encapsulate(&ip_packet(tunnel_ip(1), tunnel_ip(3), b"c"), &mut buf) else {
        panic!()
    };
    assert_eq!(t.dst, sa("203.0.113.3:6666"));
    assert_eq!(id, a.peer_by_key(&key(3).public()).unwrap());
    let Encapsulated::Send(t, _) = a.encapsulate(&ip_packet(tunnel_ip(1), tunnel_ip(2), b"b"), &mut buf) else {
        panic!()
    };
    assert_eq!(t.dst, sa(B_SOCK));
}

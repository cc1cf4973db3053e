//! What a datagram or an IP packet is, read from its first bytes, never trusted beyond them.
//!
//! WireGuard messages (the WireGuard whitepaper §5.4: types 1–4, then three reserved zero bytes) share the
//! punching socket with STUN; docs/architecture.md ("One socket, demultiplexed") gives the rule. A WireGuard
//! message can never be taken for STUN: its bytes 2–3 (STUN's length field) are zero, so STUN would need a
//! 20-byte datagram, and the shortest WireGuard message is 32 bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Handshake initiation, response, cookie reply, transport data.
pub const HANDSHAKE_INIT: u8 = 1;
pub const HANDSHAKE_RESPONSE: u8 = 2;
pub const COOKIE_REPLY: u8 = 3;
pub const TRANSPORT_DATA: u8 = 4;

/// Sizes of the fixed messages and the overhead of a data message (header 16 + Poly1305 tag 16).
pub const HANDSHAKE_INIT_LEN: usize = 148;
pub const HANDSHAKE_RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
pub const DATA_OVERHEAD: usize = 32;

/// The WireGuard message type of `datagram` when it has the form of one (type, reserved zeros, the type's
/// length), else `None`.
pub fn wireguard_type(datagram: &[u8]) -> Option<u8> {
    if datagram.len() < DATA_OVERHEAD || datagram[1..4] != [0, 0, 0] {
        return None;
    }
    let t = datagram[0];
    let fits = match t {
        HANDSHAKE_INIT => datagram.len() == HANDSHAKE_INIT_LEN,
        HANDSHAKE_RESPONSE => datagram.len() == HANDSHAKE_RESPONSE_LEN,
        COOKIE_REPLY => datagram.len() == COOKIE_REPLY_LEN,
        // Padded towards 16 bytes (whitepaper §5.4.6), but never beyond the sender's MTU, so any length.
        TRANSPORT_DATA => true,
        _ => false,
    };
    fits.then_some(t)
}

/// The receiver index of a response, cookie reply or data message (bytes 4..8 or, for the response, 8..12).
pub fn receiver_index(datagram: &[u8]) -> Option<u32> {
    let at = match wireguard_type(datagram)? {
        HANDSHAKE_RESPONSE => 8,
        COOKIE_REPLY | TRANSPORT_DATA => 4,
        _ => return None,
    };
    let b: [u8; 4] = datagram.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// The source and destination of an IPv4 or IPv6 packet, if it has a whole header.
pub fn ip_addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wireguard_forms() {
        let mut init = [0u8; HANDSHAKE_INIT_LEN];
        init[0] = 1;
        assert_eq!(wireguard_type(&init), Some(1));
        assert_eq!(wireguard_type(&init[..147]), None);
        init[2] = 1;
        assert_eq!(wireguard_type(&init), None, "reserved bytes must be zero");
        let mut data = [0u8; 32 + 1424];
        data[0] = 4;
        data[4..8].copy_from_slice(&0x0102_0300u32.to_le_bytes());
        assert_eq!(wireguard_type(&data), Some(4));
        assert_eq!(receiver_index(&data), Some(0x0102_0300));
        assert_eq!(wireguard_type(&data[..31]), None);
        assert_eq!(wireguard_type(&[4, 0, 0, 0]), None);
        assert_eq!(wireguard_type(&[5; 64]), None);
        // A STUN Binding request is never WireGuard.
        let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(wireguard_type(&stun), None);
    }

    #[test]
    fn ip_headers() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[100, 64, 0, 1]);
        v4[16..20].copy_from_slice(&[100, 64, 0, 2]);
        assert_eq!(ip_addresses(&v4), Some(("100.64.0.1".parse().unwrap(), "100.64.0.2".parse().unwrap())));
        assert_eq!(ip_addresses(&v4[..19]), None);
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[23] = 1;
        v6[39] = 2;
        assert_eq!(ip_addresses(&v6), Some(("::1".parse().unwrap(), "::2".parse().unwrap())));
        assert_eq!(ip_addresses(&[]), None);
        assert_eq!(ip_addresses(&[0x75; 60]), None);
    }
}

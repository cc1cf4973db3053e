//! The MTU arithmetic (docs/tunnel.md, "MTU"). A tunnel packet of `mtu` bytes leaves as one UDP datagram of
//! `mtu + 32` bytes (WireGuard's 16-byte header and 16-byte Poly1305 tag; padding to 16 stops at the MTU), in
//! an outer IP packet of 20 (IPv4) or 40 (IPv6) more bytes and 8 of UDP. With the default 1400 the outer
//! packet is 1460 (IPv4) or 1480 (IPv6) bytes: inside a 1500-byte Ethernet path with room for PPPoE (8) and
//! one more encapsulation.

use super::packet::DATA_OVERHEAD;

/// The tunnel's default MTU.
pub const DEFAULT_MTU: u16 = 1400;
/// The smallest MTU IPv6 allows a link (RFC 8200 §5); below it the device could not carry IPv6 at all.
pub const MIN_MTU: u16 = 1280;
const UDP_HEADER: usize = 8;

/// The outer IP packet's size for a full tunnel packet of `mtu` bytes.
pub fn outer_packet_size(mtu: u16, ipv6_path: bool) -> usize {
    usize::from(mtu) + DATA_OVERHEAD + UDP_HEADER + if ipv6_path { 40 } else { 20 }
}

/// The largest tunnel MTU a path carrying outer packets of `path_mtu` bytes fits.
pub fn tunnel_mtu_for(path_mtu: usize, ipv6_path: bool) -> usize {
    path_mtu.saturating_sub(DATA_OVERHEAD + UDP_HEADER + if ipv6_path { 40 } else { 20 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overheads() {
        assert_eq!(outer_packet_size(1400, false), 1460);
        assert_eq!(outer_packet_size(1400, true), 1480);
        assert_eq!(tunnel_mtu_for(1500, false), 1440);
        assert_eq!(tunnel_mtu_for(1500, true), 1420);
        assert_eq!(tunnel_mtu_for(40, true), 0);
    }
}

//! The address encodings shared by MAPPED-ADDRESS-like attributes (RFC 8489 §14.1) and their XOR form
//! (§14.2): family, port and address, where the XOR form masks them with the cookie and transaction id.

use super::Error;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const FAMILY_IPV4: u8 = 0x01;
pub const FAMILY_IPV6: u8 = 0x02;

/// Encoded length of an address value for `addr`.
pub fn encoded_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Decode a plain address value. `key` is `None`, or the 16 header bytes 4..20 for the XOR form.
pub fn decode(kind: u16, value: &[u8], key: Option<&[u8; 16]>) -> Result<SocketAddr, Error> {
    if value.len() < 4 {
        return Err(Error::BadAttributeLength { kind, len: value.len() });
    }
    // The first byte is reserved: RFC 8489 §14.1 says to ignore it on receipt.
    let family = value[1];
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if let Some(k) = key {
        port ^= u16::from_be_bytes([k[0], k[1]]);
    }
    match family {
        FAMILY_IPV4 => {
            if value.len() != 8 {
                return Err(Error::BadAttributeLength { kind, len: value.len() });
            }
            let mut ip = [value[4], value[5], value[6], value[7]];
            if let Some(k) = key {
                for (b, m) in ip.iter_mut().zip(&k[..4]) {
                    *b ^= m;
                }
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        FAMILY_IPV6 => {
            if value.len() != 20 {
                return Err(Error::BadAttributeLength { kind, len: value.len() });
            }
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&value[4..20]);
            if let Some(k) = key {
                for (b, m) in ip.iter_mut().zip(k.iter()) {
                    *b ^= m;
                }
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        other => Err(Error::BadFamily(other)),
    }
}

/// Encode `addr` into `out` (which is exactly `encoded_len(addr)` long).
pub fn encode(addr: &SocketAddr, out: &mut [u8], key: Option<&[u8; 16]>) {
    let mut port = addr.port();
    if let Some(k) = key {
        port ^= u16::from_be_bytes([k[0], k[1]]);
    }
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            out[4..8].copy_from_slice(&ip.octets());
            if let Some(k) = key {
                for (b, m) in out[4..8].iter_mut().zip(&k[..4]) {
                    *b ^= m;
                }
            }
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            out[4..20].copy_from_slice(&ip.octets());
            if let Some(k) = key {
                for (b, m) in out[4..20].iter_mut().zip(k.iter()) {
                    *b ^= m;
                }
            }
        }
    }
}

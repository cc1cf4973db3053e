//! IP prefixes ("100.64.1.1/10"): an address with a prefix length, as `ip addr` writes them. The tunnel uses
//! them for its overlay range, tunnel addresses and allowed source addresses (docs/tunnel.md).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address and a prefix length; the address keeps its host bits (an interface address "100.64.1.1/10"
/// names both the address and the network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix did not parse or build.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("prefix length {len} is longer than {max} for {addr}")]
    Length { addr: IpAddr, len: u32, max: u8 },
    #[error("{0:?} is not a prefix length")]
    LengthText(String),
}

impl IpPrefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, PrefixError> {
        let max = max_len(addr);
        if len > max {
            return Err(PrefixError::Length { addr, len: len.into(), max });
        }
        Ok(IpPrefix { addr, len })
    }

    /// An IPv4 prefix in a constant; `None` when `len` is over 32.
    pub const fn const_v4(addr: Ipv4Addr, len: u8) -> Option<IpPrefix> {
        if len > 32 {
            return None;
        }
        Some(IpPrefix { addr: IpAddr::V4(addr), len })
    }

    /// The prefix of one address (/32 or /128).
    pub fn host(addr: IpAddr) -> IpPrefix {
        IpPrefix { addr, len: max_len(addr) }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for /0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first address of the network (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.len))),
        }
    }

    /// True when `ip` lies in the network (same family, same leading `len` bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) ^ u32::from(a)) & mask32(self.len) == 0,
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n) ^ u128::from(a)) & mask128(self.len) == 0,
            _ => false,
        }
    }

    /// True when the two networks share any address.
    pub fn overlaps(&self, other: &IpPrefix) -> bool {
        let shorter = if self.len <= other.len { self } else { other };
        let longer = if self.len <= other.len { other } else { self };
        shorter.contains(longer.addr)
    }

    /// The address `host` (counted from the network's first address) inside the network, or `None` when the
    /// network has fewer addresses.
    pub fn nth(&self, host: u128) -> Option<IpAddr> {
        let bits = u32::from(max_len(self.addr) - self.len);
        if bits < 128 && host >> bits != 0 {
            return None;
        }
        match self.network() {
            IpAddr::V4(n) => Some(IpAddr::V4(Ipv4Addr::from(u32::from(n) | u32::try_from(host).ok()?))),
            IpAddr::V6(n) => Some(IpAddr::V6(Ipv6Addr::from(u128::from(n) | host))),
        }
    }

    /// How many host bits the network has (32 - len or 128 - len).
    pub fn host_bits(&self) -> u8 {
        max_len(self.addr) - self.len
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// "ADDR/LEN", or a bare address for a host prefix.
impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<IpPrefix, PrefixError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| PrefixError::Address(addr.to_string()))?;
        match len {
            None => Ok(IpPrefix::host(addr)),
            Some(l) => {
                let len: u32 = l.trim().parse().map_err(|_| PrefixError::LengthText(l.to_string()))?;
                let max = max_len(addr);
                let len = u8::try_from(len).ok().filter(|&n| n <= max).ok_or(PrefixError::Length { addr, len, max })?;
                IpPrefix::new(addr, len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(p("100.64.1.1/10").to_string(), "100.64.1.1/10");
        assert_eq!(p("100.64.1.1").to_string(), "100.64.1.1/32");
        assert_eq!(p("fd00::1/64").to_string(), "fd00::1/64");
        assert_eq!(
            "100.64.1.1/33".parse::<IpPrefix>().unwrap_err().to_string(),
            "prefix length 33 is longer than 32 for 100.64.1.1"
        );
        assert!("100.64.1/10".parse::<IpPrefix>().is_err());
        assert!("100.64.1.1/x".parse::<IpPrefix>().is_err());
        assert!("100.64.1.1/999999999999".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn containment_and_network() {
        let cgnat = p("100.64.0.0/10");
        assert!(cgnat.contains("100.127.255.255".parse().unwrap()));
        assert!(!cgnat.contains("100.128.0.0".parse().unwrap()));
        assert!(!cgnat.contains("::1".parse().unwrap()));
        assert_eq!(p("100.64.1.1/10").network().to_string(), "100.64.0.0");
        assert!(p("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(cgnat.overlaps(&p("100.100.0.1/16")));
        assert!(p("100.100.0.1/16").overlaps(&cgnat));
        assert!(!cgnat.overlaps(&p("192.168.0.0/16")));
    }

    #[test]
    fn nth_address() {
        let cgnat = p("100.64.0.0/10");
        assert_eq!(cgnat.host_bits(), 22);
        assert_eq!(cgnat.nth(1).unwrap().to_string(), "100.64.0.1");
        assert_eq!(cgnat.nth((1 << 22) - 1).unwrap().to_string(), "100.127.255.255");
        assert_eq!(cgnat.nth(1 << 22), None);
        assert_eq!(p("fd00::/64").nth(5).unwrap().to_string(), "fd00::5");
        assert_eq!(p("::/0").nth(u128::MAX).unwrap().to_string(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    }
}

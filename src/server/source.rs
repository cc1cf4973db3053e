//! Who a request or a connection is counted against: an IPv4 address, or the /64 prefix of an IPv6 address.
//! One host usually owns a whole IPv6 /64 (RFC 4291 §2.5.4 interface identifiers are 64 bits, SLAAC hands
//! them out freely) and could rotate addresses inside it to escape a per-address limit. An IPv4-mapped IPv6
//! address is its IPv4 source, so a dual-stack socket does not give IPv4 clients a second identity.

use std::net::{IpAddr, Ipv4Addr};

/// The unit the rate limiter and the connection caps count per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl Source {
    /// The source `ip` is counted as.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_by_slash64_and_mapped_ipv4_as_ipv4() {
        let s = |a: &str| Source::of(a.parse().unwrap());
        assert_eq!(s("2001:db8:1:2::1"), s("2001:db8:1:2:ffff::9"));
        assert_ne!(s("2001:db8:1:2::1"), s("2001:db8:1:3::1"));
        assert_eq!(s("::ffff:198.51.100.7"), s("198.51.100.7"));
        assert_ne!(s("198.51.100.7"), s("198.51.100.8"));
    }
}

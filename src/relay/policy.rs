//! Which peers a relay may talk to (RFC 8656 §21.3 "Open relay" concerns; §9 and §11 answer 403 Forbidden for
//! a peer address the server will not relay to).
//!
//! A TURN server on a public host reaches networks its clients cannot: its own loopback and services, the
//! private network behind it, link-local metadata services. So by default a peer address is refused when it
//! is reserved ([`is_reserved`]: unspecified, loopback, RFC 1918 private, RFC 6598 shared, link-local,
//! benchmarking, multicast and broadcast, IPv6 unique-local and link-local, NAT64) or is one of the server's
//! own addresses on a port outside the relay range (another allocation's relayed address on this server is
//! a legitimate peer; port 3478 or a metrics port is not). Operators widen this with allowed ranges
//! (`--allowed-peer-ip`) and narrow it with denied ranges (`--denied-peer-ip`); a denied range wins over
//! everything.

use crate::net::{IpPrefix, PrefixError};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use thiserror::Error;

/// An address range in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, or one address): the library's
/// [`IpPrefix`] with IPv4-mapped IPv6 addresses taken as IPv4, on both sides of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange(IpPrefix);

/// Why a range did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("{0:?} is not an IP address or ADDRESS/PREFIX")]
    Syntax(String),
    #[error("prefix /{0} is too long for the address family")]
    Prefix(u8),
}

impl IpRange {
    pub fn new(net: IpAddr, prefix: u8) -> Result<IpRange, RangeError> {
        let p = IpPrefix::new(net, prefix).map_err(|_| RangeError::Prefix(prefix))?;
        // A mapped address's /N (N >= 96) is the IPv4 address's /(N - 96).
        Ok(match canonical(net) {
            IpAddr::V4(v4) if net.is_ipv6() => {
                IpRange(IpPrefix::new(IpAddr::V4(v4), prefix.saturating_sub(96)).unwrap_or(p))
            }
            _ => IpRange(p),
        })
    }

    /// Whether `ip` (IPv4-mapped IPv6 taken as IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(canonical(ip))
    }
}

impl FromStr for IpRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<IpRange, RangeError> {
        let syntax = || RangeError::Syntax(s.to_string());
        let p: IpPrefix = s.parse().map_err(|e| match e {
            PrefixError::Length { len, .. } => RangeError::Prefix(u8::try_from(len).unwrap_or(u8::MAX)),
            _ => syntax(),
        })?;
        IpRange::new(p.addr(), p.len())
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.network(), self.0.len())
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address: otherwise `::ffff:127.0.0.1` would slip past the IPv4
/// ranges.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Address ranges no relay reaches unless allowed explicitly.
pub fn is_reserved(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_unspecified()
                || o[0] == 0 // 0.0.0.0/8 "this network"
                || a.is_loopback()
                || a.is_private()
                || (o[0] == 100 && o[1] & 0xC0 == 64) // 100.64.0.0/10 shared (RFC 6598)
                || a.is_link_local()
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
                || (o[0] == 198 && o[1] & 0xFE == 18) // 198.18.0.0/15 benchmarking
                || a.is_multicast()
                || o[0] >= 240 // 240.0.0.0/4 reserved and the broadcast address
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_unspecified()
                || a.is_loopback()
                || s[0] & 0xFE00 == 0xFC00 // fc00::/7 unique local
                || s[0] & 0xFFC0 == 0xFE80 // fe80::/10 link local
                || a.is_multicast()
                || (s[0] == 0x64 && s[1] == 0xFF9B) // 64:ff9b::/96 NAT64 reaches IPv4 behind the server
                || s[..6] == [0; 6] // IPv4-compatible (deprecated) addresses
        }
    }
}

/// Why a peer is refused (a 403 to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Denied {
    #[error("in a denied range")]
    Configured,
    #[error("one of the server's own addresses outside the relay port range")]
    Server,
    #[error("a reserved (loopback, private, link-local, ...) address not in an allowed range")]
    Reserved,
}

/// The peer filter: built-in reserved ranges, the server's own addresses, and the operator's ranges.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// Ranges relayed to even though reserved (`--allowed-peer-ip`).
    pub allowed: Vec<IpRange>,
    /// Ranges never relayed to (`--denied-peer-ip`); wins over `allowed`.
    pub denied: Vec<IpRange>,
    /// The server's own addresses (listening and relay).
    pub own: Vec<IpAddr>,
    /// The relay port range: on the server's own addresses, only these ports are peers.
    pub relay_ports: (u16, u16),
}

impl PeerPolicy {
    /// Whether the relay may send to (and accept from) `peer`.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denied> {
        let ip = canonical(peer.ip());
        if self.denied.iter().any(|r| r.contains(ip)) {
            return Err(Denied::Configured);
        }
        if self.own.iter().any(|&o| canonical(o) == ip) {
            let (lo, hi) = self.relay_ports;
            return if (lo..=hi).contains(&peer.port()) { Ok(()) } else { Err(Denied::Server) };
        }
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        if is_reserved(ip) {
            return Err(Denied::Reserved);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        let r: IpRange = "10.1.0.0/16".parse().unwrap();
        assert!(r.contains("10.1.200.3".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: IpRange = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpRange = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
    }

    #[test]
    fn reserved_peers_are_refused_by_default() {
        let p = PeerPolicy {
            own: vec!["203.0.113.10".parse().unwrap()],
            relay_ports: (49152, 65535),
            ..Default::default()
        };
        for peer in [
            "127.0.0.1:80",
            "10.0.0.1:1",
            "172.16.5.5:1",
            "192.168.1.1:1",
            "169.254.169.254:80",
            "100.64.0.1:1",
            "0.0.0.0:1",
            "255.255.255.255:1",
            "224.0.0.1:1",
            "[::1]:1",
            "[fe80::1]:1",
            "[fd00::1]:1",
            "[::ffff:127.0.0.1]:1",
            "[64:ff9b::a00:1]:1",
        ] {
            assert_eq!(p.check(sa(peer)), Err(Denied::Reserved), "{peer}");
        }
        assert_eq!(p.check(sa("198.51.100.7:5000")), Ok(()));
        assert_eq!(p.check(sa("[2001:db8::7]:5000")), Ok(()));
        // The server itself: only other allocations' relayed addresses.
        assert_eq!(p.check(sa("203.0.113.10:3478")), Err(Denied::Server));
        assert_eq!(p.check(sa("203.0.113.10:50000")), Ok(()));
    }

    #[test]
    fn allowed_widens_denied_narrows() {
        let p = PeerPolicy {
            allowed: vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            denied: vec!["10.9.0.0/16".parse().unwrap(), "198.51.100.0/24".parse().unwrap()],
            own: vec!["127.0.0.1".parse().unwrap()],
            relay_ports: (50000, 50010),
        };
        assert_eq!(p.check(sa("127.0.0.2:9")), Ok(()));
        assert_eq!(p.check(sa("10.1.1.1:9")), Ok(()));
        assert_eq!(p.check(sa("10.9.1.1:9")), Err(Denied::Configured));
        assert_eq!(p.check(sa("198.51.100.1:9")), Err(Denied::Configured));
        assert_eq!(p.check(sa("127.0.0.1:3478")), Err(Denied::Server));
        assert_eq!(p.check(sa("127.0.0.1:50005")), Ok(()));
    }
}

//! Which addresses a STUN client may send to because a server named them: the alternate address of RFC 5780
//! §7.3 (OTHER-ADDRESS) or RFC 3489 §11.2.3 (CHANGED-ADDRESS), and the mapped address a hairpinning test
//! (RFC 5780 §4.5) sends to. RFC 8489 §16 warns that a server can lie in these attributes; a client that
//! trusts them can be aimed at a third party. One pure rule, used by every client engine (the NAT
//! diagnosis, the reflexive keeper): the address must be one the client could plausibly reach *because* it
//! reached that server (docs/transactions.md, "Addresses a server names").

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a server-named address is not used. `Display` gives a short phrase ("a broadcast address").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Not of the server's address family (or an IPv4-mapped IPv6 address, which would leave the family).
    Family,
    /// 0.0.0.0/8 or `::`.
    Unspecified,
    PortZero,
    /// 255.255.255.255.
    Broadcast,
    Multicast,
    /// 240.0.0.0/4 (reserved for future use, RFC 1112 §4).
    Reserved,
    /// A loopback address named by a server that is not on loopback.
    Loopback,
    /// A private (RFC 1918, RFC 6598 shared, RFC 4193 unique local) address named by a server that is not on a
    /// private network.
    Private,
    /// A link-local address named by a server that is not link-local.
    LinkLocal,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::Family => "not of the server's address family",
            Unusable::Unspecified => "an unspecified address",
            Unusable::PortZero => "port 0",
            Unusable::Broadcast => "a broadcast address",
            Unusable::Multicast => "a multicast address",
            Unusable::Reserved => "a reserved address",
            Unusable::Loopback => "a loopback address from a server that is not on loopback",
            Unusable::Private => "a private address from a server that is not on a private network",
            Unusable::LinkLocal => "a link-local address from a server that is not link-local",
        })
    }
}

/// How far an address reaches. A server can name a global address whatever its own scope; any other scope
/// only when the server itself is in that scope (a server on loopback may name loopback addresses, one on a
/// private network private ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Loopback,
    LinkLocal,
    Private,
    Global,
}

/// The address's scope, or why no client should ever send there.
fn scope(ip: IpAddr) -> Result<Scope, Unusable> {
    match ip {
        IpAddr::V4(v4) => scope_v4(v4),
        IpAddr::V6(v6) => scope_v6(v6),
    }
}

fn scope_v4(ip: Ipv4Addr) -> Result<Scope, Unusable> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Err(Unusable::Unspecified)
    } else if ip.is_broadcast() {
        Err(Unusable::Broadcast)
    } else if ip.is_multicast() {
        Err(Unusable::Multicast)
    } else if a >= 240 {
        Err(Unusable::Reserved)
    } else if ip.is_loopback() {
        Ok(Scope::Loopback)
    } else if ip.is_link_local() {
        Ok(Scope::LinkLocal)
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Ok(Scope::Private)
    } else {
        Ok(Scope::Global)
    }
}

fn scope_v6(ip: Ipv6Addr) -> Result<Scope, Unusable> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Err(Unusable::Unspecified)
    } else if ip.is_multicast() {
        Err(Unusable::Multicast)
    } else if ip.to_ipv4_mapped().is_some() {
        Err(Unusable::Family)
    } else if ip.is_loopback() {
        Ok(Scope::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Ok(Scope::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        // Unique local (RFC 4193) and the deprecated site-local prefix.
        Ok(Scope::Private)
    } else {
        Ok(Scope::Global)
    }
}

/// May a client that talks to `server` send to `target`, an address `server` named (alternate or mapped
/// address)? Same family; never unspecified, broadcast, multicast, reserved or port 0; loopback, link-local
/// and private addresses only when the server is in that same scope.
pub fn check_target(server: SocketAddr, target: SocketAddr) -> Result<(), Unusable> {
    if server.is_ipv4() != target.is_ipv4() {
        return Err(Unusable::Family);
    }
    let scope_of_target = scope(target.ip())?;
    if target.port() == 0 {
        return Err(Unusable::PortZero);
    }
    // A server we reached at an address no client should use tells us nothing about scope: treat it as global.
    let scope_of_server = scope(server.ip()).unwrap_or(Scope::Global);
    match scope_of_target {
        Scope::Global => Ok(()),
        s if s == scope_of_server => Ok(()),
        Scope::Loopback => Err(Unusable::Loopback),
        Scope::LinkLocal => Err(Unusable::LinkLocal),
        Scope::Private => Err(Unusable::Private),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(server: &str, target: &str) -> Result<(), Unusable> {
        check_target(server.parse().unwrap(), target.parse().unwrap())
    }

    #[test]
    fn never_usable() {
        for server in ["192.0.2.1:3478", "127.0.0.1:3478", "10.0.0.1:3478"] {
            assert_eq!(check(server, "0.0.0.0:0"), Err(Unusable::Unspecified));
            assert_eq!(check(server, "0.1.2.3:3478"), Err(Unusable::Unspecified));
            assert_eq!(check(server, "255.255.255.255:9"), Err(Unusable::Broadcast));
            assert_eq!(check(server, "224.0.0.1:3478"), Err(Unusable::Multicast));
            assert_eq!(check(server, "240.0.0.1:3478"), Err(Unusable::Reserved));
            assert_eq!(check(server, "192.0.2.9:0"), Err(Unusable::PortZero));
            assert_eq!(check(server, "[2001:db8::1]:3478"), Err(Unusable::Family));
        }
        for server in ["[2001:db8::1]:3478", "[::1]:3478"] {
            assert_eq!(check(server, "[::]:3478"), Err(Unusable::Unspecified));
            assert_eq!(check(server, "[ff02::1]:3478"), Err(Unusable::Multicast));
            assert_eq!(check(server, "[::ffff:192.0.2.1]:3478"), Err(Unusable::Family));
            assert_eq!(check(server, "192.0.2.1:3478"), Err(Unusable::Family));
        }
    }

    #[test]
    fn scoped_addresses_only_from_a_server_in_that_scope() {
        assert_eq!(check("192.0.2.1:3478", "198.51.100.7:40000"), Ok(()));
        assert_eq!(check("127.0.0.1:3478", "198.51.100.7:40000"), Ok(()), "global is always fine");
        assert_eq!(check("192.0.2.1:3478", "127.0.0.2:3479"), Err(Unusable::Loopback));
        assert_eq!(check("127.0.0.1:3478", "127.0.0.2:3479"), Ok(()));
        assert_eq!(check("127.0.0.1:3478", "10.0.0.1:3479"), Err(Unusable::Private));
        assert_eq!(check("192.0.2.1:3478", "192.168.1.10:6666"), Err(Unusable::Private));
        assert_eq!(check("192.0.2.1:3478", "100.64.2.2:6666"), Err(Unusable::Private), "RFC 6598 shared");
        assert_eq!(check("10.0.0.1:3478", "192.168.1.10:6666"), Ok(()));
        assert_eq!(check("192.0.2.1:3478", "169.254.1.1:3479"), Err(Unusable::LinkLocal));
        assert_eq!(check("169.254.0.1:3478", "169.254.1.1:3479"), Ok(()));
        assert_eq!(check("[2001:db8::1]:3478", "[::1]:3479"), Err(Unusable::Loopback));
        assert_eq!(check("[::1]:3478", "[::1]:3479"), Ok(()));
        assert_eq!(check("[2001:db8::1]:3478", "[fd00::1]:3479"), Err(Unusable::Private));
        assert_eq!(check("[2001:db8::1]:3478", "[fe80::1]:3479"), Err(Unusable::LinkLocal));
        assert_eq!(check("[fd00::2]:3478", "[fd00::1]:3479"), Ok(()));
    }

    #[test]
    fn reasons_read_as_phrases() {
        assert_eq!(Unusable::Broadcast.to_string(), "a broadcast address");
    }
}

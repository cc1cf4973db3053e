//! This host's interface addresses (getifaddrs(3) on Linux), and from them the host candidates a punching
//! socket reports to the rendezvous (docs/punchd.md, "The node"): every LAN address of the socket's family
//! with its port.

use std::net::{IpAddr, SocketAddr};

use super::route::local_address_toward;

/// Every address configured on this host's interfaces that are up (loopback and link-local included).
#[cfg(target_os = "linux")]
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    use std::mem::size_of;
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    // Bounded by the kernel's list (a linked list it built; each node visited once).
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) == 0 || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and starts with the family field.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let len = match family {
            libc::AF_INET => size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
            _ => continue,
        };
        // SAFETY: the family says ifa_addr points at a sockaddr_in(6) of `len` bytes.
        if let Some(a) = unsafe { super::sockaddr::read_raw(ifa.ifa_addr, len) } {
            if !out.contains(&a.ip()) {
                out.push(a.ip());
            }
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Elsewhere the interfaces are not listed (yet): callers fall back to the routing lookup.
#[cfg(not(target_os = "linux"))]
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "interface addresses are listed on Linux only"))
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The host candidates of punching socket `local` talking to `server`: `local` itself when bound to one
/// address; else every interface address of its family with its port, loopback and link-local left out
/// unless the server is on loopback (a test on one machine). When nothing is left (or the interfaces cannot
/// be listed), the address the kernel would send to the server from.
pub fn host_candidates(local: SocketAddr, server: SocketAddr) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let loopback_ok = server.ip().is_loopback();
    let mut out: Vec<SocketAddr> = interface_addresses()
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| ip.is_ipv4() == local.is_ipv4())
        .filter(|ip| loopback_ok || !(ip.is_loopback() || link_local(*ip)))
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect();
    if out.is_empty() {
        if let Ok(ip) = local_address_toward(server) {
            out.push(SocketAddr::new(ip, local.port()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn loopback_is_listed() {
        let ips = interface_addresses().unwrap();
        assert!(ips.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()), "{ips:?}");
    }

    #[test]
    fn candidates_follow_the_socket_and_the_server() {
        let bound: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        assert_eq!(host_candidates(bound, "127.0.0.1:3478".parse().unwrap()), [bound]);
        let any: SocketAddr = "0.0.0.0:6666".parse().unwrap();
        let on_loopback = host_candidates(any, "127.0.0.1:3478".parse().unwrap());
        assert!(on_loopback.contains(&bound), "{on_loopback:?}");
        assert!(on_loopback.iter().all(|a| a.is_ipv4() && a.port() == 6666));
        // A public server (nothing is sent): no loopback or link-local candidate.
        let public = host_candidates(any, "192.0.2.1:3478".parse().unwrap());
        assert!(public.iter().all(|a| !a.ip().is_loopback() && !link_local(a.ip())), "{public:?}");
    }
}

//! Route and gateway lookups: which local address the kernel picks toward a destination, and the default
//! IPv4 gateway from the Linux routing table.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::net::ephemeral_like;
use crate::portmap::{parse_proc_net_route, DefaultRoute, PortmapError};

/// Why the source address toward a destination is unknown.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No UDP socket could be opened to ask the kernel.
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    /// The kernel has no route to the destination.
    #[error("no route to {dst}: {source}")]
    NoRoute { dst: SocketAddr, source: std::io::Error },
    /// The socket's local address could not be read back.
    #[error("cannot read the local address: {0}")]
    LocalAddress(std::io::Error),
}

/// This host's source address toward `dst`: a routing lookup (a UDP `connect`), nothing is sent.
pub fn local_address_toward(dst: SocketAddr) -> Result<IpAddr, RouteError> {
    let socket = UdpSocket::bind(ephemeral_like(dst)).map_err(RouteError::Socket)?;
    socket.connect(dst).map_err(|source| RouteError::NoRoute { dst, source })?;
    let local = socket.local_addr().map_err(RouteError::LocalAddress)?;
    Ok(local.ip())
}

/// The default IPv4 gateway of the calling thread's network namespace (Linux).
///
/// Reads `/proc/thread-self/net/route` first, so a thread that entered another namespace sees that
/// namespace's table, then `/proc/net/route`.
pub fn default_gateway() -> Result<DefaultRoute, PortmapError> {
    if !cfg!(target_os = "linux") {
        return Err(PortmapError::Gateway("discovery is implemented for Linux only; pass the gateway".into()));
    }
    let mut last_err = None;
    for path in ["/proc/thread-self/net/route", "/proc/net/route"] {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                return parse_proc_net_route(&text)?
                    .ok_or_else(|| PortmapError::Gateway("no IPv4 default route".into()));
            }
            Err(e) => last_err = Some(format!("{path}: {e}")),
        }
    }
    Err(PortmapError::Gateway(last_err.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_routes_from_loopback() {
        let ip = local_address_toward("127.0.0.1:5351".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}

//! Opening sockets, with one clear line when it fails (port in use, address not here, no privilege).

use anyhow::{anyhow, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a blocked receive waits before the worker looks at the stop flag (bounds shutdown time).
pub const RECV_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
}

/// Turns a bind error into the sentence an operator needs.
pub fn bind_error(proto: Proto, addr: SocketAddr, e: &io::Error) -> anyhow::Error {
    let p = proto.name();
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            anyhow!("{p} {addr} is already in use (another server running? stop it or choose another port)")
        }
        io::ErrorKind::AddrNotAvailable => anyhow!(
            "cannot bind {p} {addr}: {} is not an address of this host (behind 1:1 NAT, bind the private address \
             and pass the public one with --public-primary/--public-alternate)",
            addr.ip()
        ),
        io::ErrorKind::PermissionDenied => {
            anyhow!("permission denied binding {p} {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE")
        }
        _ => anyhow!("cannot bind {p} {addr}: {e}"),
    }
}

fn new_socket(proto: Proto, addr: SocketAddr) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let s = match proto {
        Proto::Udp => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
        Proto::Tcp => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
    };
    if addr.is_ipv6() {
        // Serve exactly the address given; never pick up IPv4 through a mapped wildcard.
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// Binds `addr` once without SO_REUSEPORT and closes it again. SO_REUSEPORT would let us silently share the port
/// with another server of the same user; this probe turns that case into an "in use" error.
pub fn probe_free(proto: Proto, addr: SocketAddr) -> Result<()> {
    let s = new_socket(proto, addr).map_err(|e| bind_error(proto, addr, &e))?;
    if let Proto::Tcp = proto {
        // TIME_WAIT leftovers of a previous run must not block a restart.
        s.set_reuse_address(true).map_err(|e| bind_error(proto, addr, &e))?;
    }
    s.bind(&SockAddr::from(addr)).map_err(|e| bind_error(proto, addr, &e))
}

/// A UDP socket for one worker: SO_REUSEPORT when there are several workers, so each has its own socket on
/// the same address (the kernel spreads flows over them; with one worker the plain lookup is cheaper), a
/// receive timeout for the stop flag, and large buffers when allowed.
pub fn udp_worker_socket(addr: SocketAddr, reuse_port: bool) -> Result<std::net::UdpSocket> {
    let s = new_socket(Proto::Udp, addr).map_err(|e| bind_error(Proto::Udp, addr, &e))?;
    if reuse_port {
        s.set_reuse_port(true).map_err(|e| bind_error(Proto::Udp, addr, &e))?;
    }
    // Bigger buffers absorb bursts; the kernel caps them at net.core.{r,w}mem_max, which is fine.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&SockAddr::from(addr)).map_err(|e| bind_error(Proto::Udp, addr, &e))?;
    s.set_read_timeout(Some(RECV_TIMEOUT)).map_err(|e| anyhow!("cannot set receive timeout on {addr}: {e}"))?;
    Ok(s.into())
}

/// A listening TCP socket (non-blocking, for tokio).
pub fn tcp_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let s = new_socket(Proto::Tcp, addr).map_err(|e| bind_error(Proto::Tcp, addr, &e))?;
    s.set_reuse_address(true).map_err(|e| bind_error(Proto::Tcp, addr, &e))?;
    s.bind(&SockAddr::from(addr)).map_err(|e| bind_error(Proto::Tcp, addr, &e))?;
    s.listen(1024).map_err(|e| bind_error(Proto::Tcp, addr, &e))?;
    s.set_nonblocking(true).map_err(|e| anyhow!("cannot make {addr} non-blocking: {e}"))?;
    Ok(s.into())
}

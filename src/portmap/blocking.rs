//! Blocking drivers for the NAT-PMP and PCP engines: one connected UDP socket, std timeouts, one request at a
//! time. Every call returns within the engine's retransmission bound.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::retransmit::Retransmit;
use super::{natpmp, pcp, PortmapError, Protocol, RequestId, Transmit};

/// What the driver loop needs from an engine.
trait Engine {
    type Request;
    type Response;
    type Event;
    fn request(&mut self, now: Instant, request: Self::Request) -> RequestId;
    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn handle_datagram(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]);
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// The request id and result when `event` completes a request.
    fn completed(event: Self::Event) -> Option<(RequestId, Result<Self::Response, PortmapError>)>;
}

/// The NAT-PMP and PCP clients have the same inherent API; forward to it.
macro_rules! impl_engine {
    ($m:ident) => {
        impl Engine for $m::Client {
            type Request = $m::Request;
            type Response = $m::Response;
            type Event = $m::Event;
            fn request(&mut self, now: Instant, request: $m::Request) -> RequestId {
                $m::Client::request(self, now, request)
            }
            fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
                $m::Client::poll_transmit(self, buf)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                $m::Client::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                $m::Client::handle_timeout(self, now)
            }
            fn handle_datagram(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]) {
                $m::Client::handle_datagram(self, now, local, from, data)
            }
            fn poll_event(&mut self) -> Option<$m::Event> {
                $m::Client::poll_event(self)
            }
            fn completed(event: $m::Event) -> Option<(RequestId, Result<$m::Response, PortmapError>)> {
                match event {
                    $m::Event::Completed { id, result, .. } => Some((id, result)),
                    _ => None,
                }
            }
        }
    };
}

impl_engine!(natpmp);
impl_engine!(pcp);

/// Run `engine` over `socket` until `done` yields a value. `limit` bounds the whole call even if the engine
/// misbehaves.
fn drive<E: Engine, T>(
    socket: &UdpSocket,
    local: SocketAddr,
    engine: &mut E,
    limit: Duration,
    mut done: impl FnMut(&mut E) -> Option<T>,
) -> Result<T, PortmapError> {
    let start = Instant::now();
    let server = socket.peer_addr().map_err(|e| PortmapError::io("peer address", &e))?;
    let mut buf = [0u8; 1100];
    loop {
        while let Some(t) = engine.poll_transmit(&mut buf) {
            match socket.send(&buf[..t.len]) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(PortmapError::Refused { server }),
                Err(e) => return Err(PortmapError::io("send", &e)),
            }
        }
        if let Some(v) = done(engine) {
            return Ok(v);
        }
        let now = Instant::now();
        if now.duration_since(start) > limit {
            return Err(PortmapError::Timeout { server, sends: 0, waited: now.duration_since(start), malformed: None });
        }
        let Some(wake) = engine.poll_timeout() else {
            return Err(PortmapError::Internal("engine idle without an answer"));
        };
        if wake <= now {
            engine.handle_timeout(now);
            continue;
        }
        socket.set_read_timeout(Some(wake - now)).map_err(|e| PortmapError::io("set timeout", &e))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => engine.handle_datagram(Instant::now(), local, from, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                engine.handle_timeout(Instant::now())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // ICMP port unreachable from the gateway: nothing listens on 5351.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(PortmapError::Refused { server }),
            Err(e) => return Err(PortmapError::io("receive", &e)),
        }
    }
}

fn connect(server: SocketAddr) -> Result<(UdpSocket, SocketAddr), PortmapError> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).map_err(|e| PortmapError::io("bind", &e))?;
    socket.connect(server).map_err(|e| PortmapError::io("connect", &e))?;
    let local = socket.local_addr().map_err(|e| PortmapError::io("local address", &e))?;
    Ok((socket, local))
}

/// This host's source address toward `gateway` (a routing lookup; nothing is sent).
pub fn local_address_toward(gateway: IpAddr) -> Result<IpAddr, PortmapError> {
    connect(SocketAddr::new(gateway, natpmp::SERVER_PORT)).map(|(_, local)| local.ip())
}

/// An engine on a connected socket, run one blocking request at a time.
#[derive(Debug)]
struct Exchange<E> {
    socket: UdpSocket,
    local: SocketAddr,
    client: E,
    limit: Duration,
}

impl<E: Engine> Exchange<E> {
    /// `client` gets this socket's local address (PCP puts it in requests).
    fn connect(
        server: SocketAddr,
        retransmit: Retransmit,
        client: impl FnOnce(SocketAddr) -> E,
    ) -> Result<Self, PortmapError> {
        let (socket, local) = connect(server)?;
        Ok(Exchange { socket, local, client: client(local), limit: retransmit.total() + Duration::from_secs(1) })
    }

    fn run(&mut self, request: E::Request) -> Result<E::Response, PortmapError> {
        let id = self.client.request(Instant::now(), request);
        drive(&self.socket, self.local, &mut self.client, self.limit, |c| {
            while let Some(ev) = c.poll_event() {
                match E::completed(ev) {
                    Some((got, result)) if got == id => return Some(result),
                    _ => {}
                }
            }
            None
        })?
    }
}

/// A NAT-PMP mapping the gateway granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatPmpMapping {
    pub protocol: Protocol,
    pub internal_port: u16,
    pub external_port: u16,
    /// Granted lifetime in seconds (may differ from the one asked).
    pub lifetime: u32,
    pub epoch: u32,
}

/// Blocking NAT-PMP client for one gateway.
#[derive(Debug)]
pub struct NatPmpSession {
    exchange: Exchange<natpmp::Client>,
}

impl NatPmpSession {
    /// Client of `gateway`, port 5351.
    pub fn new(gateway: Ipv4Addr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        Self::connect(SocketAddr::new(IpAddr::V4(gateway), natpmp::SERVER_PORT), retransmit)
    }

    /// Client of a server at any address and port (tests, non-standard set-ups).
    pub fn connect(server: SocketAddr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        let exchange = Exchange::connect(server, retransmit, |_| natpmp::Client::new(server, retransmit))?;
        Ok(NatPmpSession { exchange })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.exchange.local
    }

    pub fn epoch(&self) -> Option<u32> {
        self.exchange.client.epoch()
    }

    /// External address request (RFC 6886 §3.2): the address and the server's epoch.
    pub fn external_address(&mut self) -> Result<(Ipv4Addr, u32), PortmapError> {
        match self.exchange.run(natpmp::Request::ExternalAddress)? {
            natpmp::Response::ExternalAddress { epoch, address } => Ok((address, epoch)),
            other => Err(PortmapError::BadReply(format!("NAT-PMP {other:?}"))),
        }
    }

    /// Create or renew a mapping (§3.3). `suggested_external_port` 0 means no preference.
    pub fn map(
        &mut self,
        protocol: Protocol,
        internal_port: u16,
        suggested_external_port: u16,
        lifetime: u32,
    ) -> Result<NatPmpMapping, PortmapError> {
        if lifetime == 0 {
            return Err(PortmapError::InvalidRequest("lifetime 0 deletes; use delete()"));
        }
        let req = natpmp::Request::Map { protocol, internal_port, suggested_external_port, lifetime };
        match self.exchange.run(req)? {
            natpmp::Response::Mapping { epoch, protocol, internal_port, external_port, lifetime } => {
                Ok(NatPmpMapping { protocol, internal_port, external_port, lifetime, epoch })
            }
            other => Err(PortmapError::BadReply(format!("NAT-PMP {other:?}"))),
        }
    }

    /// Delete the mapping of `internal_port` (§3.4).
    pub fn delete(&mut self, protocol: Protocol, internal_port: u16) -> Result<(), PortmapError> {
        self.exchange.run(natpmp::Request::delete(protocol, internal_port)).map(|_| ())
    }
}

/// Fresh random bytes: the OS generator where there is one, else std's randomly keyed SipHash.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; N];
    #[cfg(unix)]
    {
        use std::io::Read;
        if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut out)).is_ok() {
            return out;
        }
    }
    let state = std::collections::hash_map::RandomState::new();
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

/// Blocking PCP client for one server.
#[derive(Debug)]
pub struct PcpSession {
    exchange: Exchange<pcp::Client>,
}

impl PcpSession {
    /// The client address put in requests is this socket's source address toward `server_ip`.
    pub fn new(server_ip: IpAddr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        Self::connect(SocketAddr::new(server_ip, pcp::SERVER_PORT), retransmit)
    }

    /// Client of a server at any address and port (tests, non-standard set-ups).
    pub fn connect(server: SocketAddr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        let exchange = Exchange::connect(server, retransmit, |local: SocketAddr| {
            pcp::Client::new(server, local.ip(), retransmit)
        })?;
        Ok(PcpSession { exchange })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.exchange.local
    }

    pub fn epoch(&self) -> Option<u32> {
        self.exchange.client.epoch()
    }

    /// ANNOUNCE (RFC 6887 §14.1): is a PCP server there; returns its epoch.
    pub fn announce(&mut self) -> Result<u32, PortmapError> {
        match self.exchange.run(pcp::Request::Announce)? {
            pcp::Response::Announce { epoch } => Ok(epoch),
            other => Err(PortmapError::BadReply(format!("PCP {other:?}"))),
        }
    }

    /// MAP with a fresh random nonce (§11.1). Keep the returned mapping: renewing and deleting need its nonce.
    pub fn map(
        &mut self,
        protocol: Protocol,
        internal_port: u16,
        suggested_external: Option<SocketAddr>,
        lifetime: u32,
    ) -> Result<pcp::Mapping, PortmapError> {
        if lifetime == 0 {
            return Err(PortmapError::InvalidRequest("lifetime 0 deletes; use delete()"));
        }
        let req = pcp::MapRequest { nonce: random_bytes(), protocol, internal_port, suggested_external, lifetime };
        self.map_request(req)
    }

    /// Send a prepared MAP request (renewals reuse the mapping's nonce).
    pub fn map_request(&mut self, req: pcp::MapRequest) -> Result<pcp::Mapping, PortmapError> {
        match self.exchange.run(pcp::Request::Map(req))? {
            pcp::Response::Map(m) => Ok(m),
            other => Err(PortmapError::BadReply(format!("PCP {other:?}"))),
        }
    }

    /// Delete a mapping (MAP with its nonce and lifetime 0, §15).
    pub fn delete(&mut self, mapping: &pcp::Mapping) -> Result<(), PortmapError> {
        self.exchange.run(mapping.delete_request()).map(|_| ())
    }
}

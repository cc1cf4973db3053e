//! Blocking drivers of the NAT-PMP and PCP engines: one connected UDP socket, std timeouts, one request at a
//! time. Every call returns within the engine's retransmission bound (`Retransmit::give_up_after`) plus a
//! second.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::net::{ephemeral_like, Engine, Received, Retransmit, Seed};
use crate::portmap::{natpmp, pcp, PortmapError, Protocol, RequestId};

/// Run `engine` over the connected `socket` until `done` takes a value out of one of its events. `limit`
/// bounds the whole call even if the engine misbehaves.
fn drive<E: Engine, T>(
    socket: &UdpSocket,
    local: SocketAddr,
    engine: &mut E,
    limit: Duration,
    mut done: impl FnMut(E::Event) -> Option<T>,
) -> Result<T, PortmapError> {
    let start = Instant::now();
    let server = socket.peer_addr().map_err(|e| PortmapError::io("peer address", &e))?;
    let mut buf = [0u8; 1100];
    loop {
        while let Some(t) = engine.poll_transmit(&mut buf) {
            match socket.send(&buf[..t.len]) {
                Ok(_) => {}
                // ICMP port unreachable from an earlier send: nothing listens on the server's port.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused(engine, local, server)?,
                Err(e) => return Err(PortmapError::io("send", &e)),
            }
        }
        while let Some(ev) = engine.poll_event() {
            if let Some(v) = done(ev) {
                return Ok(v);
            }
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
            Ok((n, from)) => {
                engine.handle_input(Instant::now(), Received::udp(local, from), &buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                engine.handle_timeout(Instant::now())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused(engine, local, server)?,
            Err(e) => return Err(PortmapError::io("receive", &e)),
        }
    }
}

/// Hand ICMP port unreachable to the engine, which fails its request with `Refused`; an engine with nothing
/// in flight there cannot, so the error ends the call here.
fn refused<E: Engine>(engine: &mut E, local: SocketAddr, server: SocketAddr) -> Result<(), PortmapError> {
    if engine.handle_unreachable(Instant::now(), local, server) {
        Ok(())
    } else {
        Err(PortmapError::Refused { server })
    }
}

fn connect(server: SocketAddr) -> Result<(UdpSocket, SocketAddr), PortmapError> {
    let socket = UdpSocket::bind(ephemeral_like(server)).map_err(|e| PortmapError::io("bind", &e))?;
    socket.connect(server).map_err(|e| PortmapError::io("connect", &e))?;
    let local = socket.local_addr().map_err(|e| PortmapError::io("local address", &e))?;
    Ok((socket, local))
}

fn limit(retransmit: Retransmit) -> Duration {
    retransmit.give_up_after().saturating_add(Duration::from_secs(1))
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
    socket: UdpSocket,
    client: natpmp::Client,
    limit: Duration,
}

impl NatPmpSession {
    /// Client of `gateway`, port 5351.
    pub fn new(gateway: Ipv4Addr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        Self::connect(SocketAddr::new(IpAddr::V4(gateway), natpmp::SERVER_PORT), retransmit)
    }

    /// Client of a server at any address and port (tests, non-standard set-ups).
    pub fn connect(server: SocketAddr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        let (socket, local) = connect(server)?;
        let client = natpmp::Client::new(local, server, retransmit);
        Ok(NatPmpSession { socket, client, limit: limit(retransmit) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.client.local()
    }

    pub fn epoch(&self) -> Option<u32> {
        self.client.epoch()
    }

    fn run(&mut self, request: natpmp::Request) -> Result<natpmp::Response, PortmapError> {
        let id = self.client.request(Instant::now(), request);
        let local = self.client.local();
        drive(&self.socket, local, &mut self.client, self.limit, |ev| match ev {
            natpmp::Event::Completed { id: got, result, .. } if got == id => Some(result),
            _ => None,
        })?
    }

    /// External address request (RFC 6886 §3.2): the address and the server's epoch.
    pub fn external_address(&mut self) -> Result<(Ipv4Addr, u32), PortmapError> {
        match self.run(natpmp::Request::ExternalAddress)? {
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
        match self.run(req)? {
            natpmp::Response::Mapping { epoch, protocol, internal_port, external_port, lifetime } => {
                Ok(NatPmpMapping { protocol, internal_port, external_port, lifetime, epoch })
            }
            other => Err(PortmapError::BadReply(format!("NAT-PMP {other:?}"))),
        }
    }

    /// Delete the mapping of `internal_port` (§3.4).
    pub fn delete(&mut self, protocol: Protocol, internal_port: u16) -> Result<(), PortmapError> {
        self.run(natpmp::Request::delete(protocol, internal_port)).map(|_| ())
    }
}

/// Blocking PCP client for one server.
#[derive(Debug)]
pub struct PcpSession {
    socket: UdpSocket,
    client: pcp::Client,
    limit: Duration,
}

impl PcpSession {
    /// Client of `server_ip`, port 5351. The client address put in requests is this socket's source address
    /// toward it; mapping nonces come from a generator seeded from the OS.
    pub fn new(server_ip: IpAddr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        Self::connect(SocketAddr::new(server_ip, pcp::SERVER_PORT), retransmit)
    }

    /// Client of a server at any address and port (tests, non-standard set-ups).
    pub fn connect(server: SocketAddr, retransmit: Retransmit) -> Result<Self, PortmapError> {
        let seed = crate::io::os_seed().map_err(|e| PortmapError::io("OS randomness", &e))?;
        Self::with_seed(server, retransmit, seed)
    }

    /// [`PcpSession::connect`] with the nonce generator's seed given (tests, or a caller that already read
    /// one from the OS).
    pub fn with_seed(server: SocketAddr, retransmit: Retransmit, seed: Seed) -> Result<Self, PortmapError> {
        let (socket, local) = connect(server)?;
        let client = pcp::Client::new(local, server, local.ip(), retransmit, seed);
        Ok(PcpSession { socket, client, limit: limit(retransmit) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.client.local()
    }

    pub fn epoch(&self) -> Option<u32> {
        self.client.epoch()
    }

    fn run(
        &mut self,
        submit: impl FnOnce(&mut pcp::Client, Instant) -> RequestId,
    ) -> Result<pcp::Response, PortmapError> {
        let id = submit(&mut self.client, Instant::now());
        let local = self.client.local();
        drive(&self.socket, local, &mut self.client, self.limit, |ev| match ev {
            pcp::Event::Completed { id: got, result, .. } if got == id => Some(result),
            _ => None,
        })?
    }

    /// ANNOUNCE (RFC 6887 §14.1): is a PCP server there; returns its epoch.
    pub fn announce(&mut self) -> Result<u32, PortmapError> {
        match self.run(|c, now| c.request(now, pcp::Request::Announce))? {
            pcp::Response::Announce { epoch } => Ok(epoch),
            other => Err(PortmapError::BadReply(format!("PCP {other:?}"))),
        }
    }

    /// MAP with a fresh nonce (§11.1). Keep the returned mapping: renewing and deleting need its nonce.
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
        let response = self.run(|c, now| c.map(now, protocol, internal_port, suggested_external, lifetime))?;
        match response {
            pcp::Response::Map(m) => Ok(m),
            other => Err(PortmapError::BadReply(format!("PCP {other:?}"))),
        }
    }

    /// Send a prepared MAP request (renewals reuse the mapping's nonce).
    pub fn map_request(&mut self, req: pcp::MapRequest) -> Result<pcp::Mapping, PortmapError> {
        match self.run(|c, now| c.request(now, pcp::Request::Map(req)))? {
            pcp::Response::Map(m) => Ok(m),
            other => Err(PortmapError::BadReply(format!("PCP {other:?}"))),
        }
    }

    /// Delete a mapping (MAP with its nonce and lifetime 0, §15).
    pub fn delete(&mut self, mapping: &pcp::Mapping) -> Result<(), PortmapError> {
        self.run(|c, now| c.request(now, mapping.delete_request())).map(|_| ())
    }
}

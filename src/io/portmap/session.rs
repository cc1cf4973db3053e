//! Blocking drivers of the NAT-PMP and PCP engines: one connected UDP socket under the generic blocking
//! driver (`io::blocking::Driver`), one request at a time. Every call returns within the engine's
//! retransmission bound (`Retransmit::give_up_after`) plus a second, and at once when the server's port
//! answers with ICMP port unreachable (`PortmapError::Refused`, from the engine).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::io::blocking::Driver;
use crate::io::{Exit, Notice};
use crate::net::{ephemeral_like, Engine, Retransmit, Seed};
use crate::portmap::{natpmp, pcp, PortmapError, Protocol, RequestId};

/// Run `engine` in `driver` until `done` takes a value out of one of its events. `limit` bounds the whole
/// call even if the engine misbehaves; `server` is the peer, for the timeout's error.
fn drive<E: Engine, T>(
    driver: &mut Driver,
    server: SocketAddr,
    engine: &mut E,
    limit: Duration,
    mut done: impl FnMut(E::Event) -> Option<T>,
) -> Result<T, PortmapError> {
    let start = Instant::now();
    driver.set_deadline(Some(start + limit));
    let exit = driver
        .run(engine, |notice| match notice {
            Notice::Event(ev) => match done(ev) {
                Some(v) => ControlFlow::Break(Ok(v)),
                None => ControlFlow::Continue(()),
            },
            Notice::SendFailed { error, .. } => ControlFlow::Break(Err(PortmapError::io("send", &error))),
        })
        .map_err(|e| PortmapError::io("socket", &e))?;
    match exit {
        Exit::Done(result) => result,
        Exit::Deadline | Exit::Stopped => {
            Err(PortmapError::Timeout { server, sends: 0, waited: start.elapsed(), malformed: None })
        }
    }
}

/// A driver over one socket connected to `server`, and the socket's local address.
fn connect(server: SocketAddr) -> Result<(Driver, SocketAddr), PortmapError> {
    let socket = UdpSocket::bind(ephemeral_like(server)).map_err(|e| PortmapError::io("bind", &e))?;
    socket.connect(server).map_err(|e| PortmapError::io("connect", &e))?;
    let driver = Driver::new(vec![socket]).map_err(|e| PortmapError::io("local address", &e))?;
    let local = driver.locals()[0];
    Ok((driver, local))
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
    driver: Driver,
    server: SocketAddr,
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
        let (driver, local) = connect(server)?;
        let client = natpmp::Client::new(local, server, retransmit);
        Ok(NatPmpSession { driver, server, client, limit: limit(retransmit) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.client.local()
    }

    pub fn epoch(&self) -> Option<u32> {
        self.client.epoch()
    }

    fn run(&mut self, request: natpmp::Request) -> Result<natpmp::Response, PortmapError> {
        let id = self.client.request(Instant::now(), request);
        drive(&mut self.driver, self.server, &mut self.client, self.limit, |ev| match ev {
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
    driver: Driver,
    server: SocketAddr,
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
        let (driver, local) = connect(server)?;
        let client = pcp::Client::new(local, server, local.ip(), retransmit, seed);
        Ok(PcpSession { driver, server, client, limit: limit(retransmit) })
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
        drive(&mut self.driver, self.server, &mut self.client, self.limit, |ev| match ev {
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

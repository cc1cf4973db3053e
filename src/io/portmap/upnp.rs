//! Blocking UPnP IGD client: the SSDP search over a UDP socket, and each HTTP exchange (device description,
//! SOAP actions) over its own TCP connection, everything bounded in time. What is sent and how answers are
//! read is `portmap::upnp` and `portmap::ssdp`; this only carries bytes.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::net::{Engine, Received};
use crate::portmap::ssdp::{self, Search};
use crate::portmap::upnp::{Action, ActionReply, Candidates, DiscoverOptions, Igd, PortMapping, PortMappingEntry, Url};
use crate::portmap::{PortmapError, Protocol, ResponseReader};

/// One HTTP exchange on a fresh connection to `addr`: `request` out, the response's status and body back.
/// Everything (connect, send, receive) is bounded by `timeout`; `what` names the exchange in errors.
fn http_exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
    what: &str,
) -> Result<(u16, Vec<u8>), PortmapError> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| PortmapError::Http(format!("{what} timed out after {} ms", timeout.as_millis())))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(|e| PortmapError::io("HTTP connect", &e))?;
    stream.set_write_timeout(Some(left()?)).map_err(|e| PortmapError::io("HTTP set timeout", &e))?;
    stream.write_all(request).map_err(|e| PortmapError::io("HTTP send", &e))?;
    let mut reader = ResponseReader::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(|e| PortmapError::io("HTTP set timeout", &e))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                left()?;
                continue;
            }
            Err(e) => return Err(PortmapError::io("HTTP receive", &e)),
        };
        if let Some(r) = reader.handle_data(&chunk[..n])? {
            log::debug!("http: {what} -> {} ({} body bytes)", r.status, r.body.len());
            return Ok((r.status, r.body));
        }
    }
}

/// A discovered Internet Gateway Device, driven over blocking sockets.
#[derive(Debug, Clone)]
pub struct IgdClient {
    /// The device and its WAN connection service.
    pub igd: Igd,
    /// Bound on each HTTP exchange.
    pub http_timeout: Duration,
}

impl IgdClient {
    /// SSDP search, then the first usable device description.
    pub fn discover(opts: &DiscoverOptions) -> Result<IgdClient, PortmapError> {
        if let Some(IpAddr::V6(_)) = opts.gateway {
            return Err(PortmapError::Unsupported("UPnP discovery is implemented over IPv4 SSDP only"));
        }
        let bind = SocketAddr::new(IpAddr::V4(opts.local_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)), 0);
        let socket = UdpSocket::bind(bind).map_err(|e| PortmapError::io("SSDP bind", &e))?;
        // UDA 1.1 §1.1.2: TTL 2 by default. With a bound source address Linux sends the multicast out of
        // that address's interface.
        socket.set_multicast_ttl_v4(2).map_err(|e| PortmapError::io("SSDP set TTL", &e))?;
        let local = socket.local_addr().map_err(|e| PortmapError::io("SSDP local address", &e))?;
        let start = Instant::now();
        let mut search = Search::new(start, local, opts.search.clone());
        let hard_deadline = start + opts.search.wait + Duration::from_secs(1);
        let mut candidates = Candidates::new(opts.gateway);
        let mut last_error: Option<PortmapError> = None;
        let mut buf = [0u8; 2048];
        loop {
            while let Some(t) = search.poll_transmit(&mut buf) {
                if let Err(e) = socket.send_to(&buf[..t.len], t.dst) {
                    // No multicast route, say: report it rather than wait for nothing.
                    return Err(PortmapError::io("SSDP send", &e));
                }
            }
            while let Some(ev) = search.poll_event() {
                match ev {
                    ssdp::Event::Found { from, response } => {
                        let fetched = candidates.consider(from, &response).and_then(|location| match location {
                            Some(location) => {
                                IgdClient::fetch(location, response.server.clone(), opts.http_timeout).map(Some)
                            }
                            None => Ok(None),
                        });
                        match fetched {
                            Ok(Some(igd)) => return Ok(igd),
                            Ok(None) => {}
                            Err(e) => {
                                log::debug!("upnp: {} unusable: {e}", response.location);
                                last_error = Some(e);
                            }
                        }
                    }
                    ssdp::Event::Finished { .. } => {
                        return Err(last_error.unwrap_or(candidates.not_found(opts.search.wait)));
                    }
                }
            }
            let now = Instant::now();
            if now >= hard_deadline {
                return Err(last_error.unwrap_or(candidates.not_found(opts.search.wait)));
            }
            let wake = search.poll_timeout().unwrap_or(hard_deadline).min(hard_deadline);
            if wake <= now {
                search.handle_timeout(now);
                continue;
            }
            socket.set_read_timeout(Some(wake - now)).map_err(|e| PortmapError::io("SSDP set timeout", &e))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    search.handle_input(Instant::now(), Received::udp(local, from), &buf[..n]);
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    search.handle_timeout(Instant::now())
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PortmapError::io("SSDP receive", &e)),
            }
        }
    }

    fn fetch(location: Url, server: Option<String>, timeout: Duration) -> Result<IgdClient, PortmapError> {
        let request = Igd::description_request(&location);
        let (status, body) =
            http_exchange(location.socket_addr(), &request, timeout, &format!("GET {}", location.path))?;
        let igd = Igd::from_description(location, status, &body, server)?;
        Ok(IgdClient { igd, http_timeout: timeout })
    }

    /// Fetch a device description and pick its best WAN connection service.
    pub fn from_location(location: Url, timeout: Duration) -> Result<IgdClient, PortmapError> {
        IgdClient::fetch(location, None, timeout)
    }

    /// Perform one SOAP action.
    pub fn call(&self, action: &Action) -> Result<ActionReply, PortmapError> {
        let request = self.igd.request(action)?;
        let what = format!("POST {}", self.igd.service.control_url.path);
        let (status, body) = http_exchange(self.igd.control_addr(), &request, self.http_timeout, &what)?;
        action.parse_reply(status, &body)
    }

    /// GetExternalIPAddress.
    pub fn external_ip(&self) -> Result<IpAddr, PortmapError> {
        match self.call(&Action::GetExternalIpAddress)? {
            ActionReply::ExternalIp(ip) => Ok(ip),
            other => Err(PortmapError::BadReply(format!("UPnP {other:?}"))),
        }
    }

    /// AddPortMapping (any remote host).
    pub fn add_port_mapping(&self, m: &PortMapping) -> Result<(), PortmapError> {
        self.call(&Action::AddPortMapping(m.clone())).map(|_| ())
    }

    /// GetSpecificPortMappingEntry.
    pub fn get_port_mapping(&self, protocol: Protocol, external_port: u16) -> Result<PortMappingEntry, PortmapError> {
        match self.call(&Action::GetSpecificPortMappingEntry { protocol, external_port })? {
            ActionReply::Entry(e) => Ok(e),
            other => Err(PortmapError::BadReply(format!("UPnP {other:?}"))),
        }
    }

    /// DeletePortMapping.
    pub fn delete_port_mapping(&self, protocol: Protocol, external_port: u16) -> Result<(), PortmapError> {
        self.call(&Action::DeletePortMapping { protocol, external_port }).map(|_| ())
    }
}

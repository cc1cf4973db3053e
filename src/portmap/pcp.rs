//! PCP (RFC 6887): wire format of the common header (§7.1, §7.2), options framing (§7.3), ANNOUNCE (§14.1) and
//! MAP (§11.1), and a sans-IO client engine (§8.1.1 retransmission, §8.5 epoch, §9 version negotiation).
//!
//! Addresses on the wire are 128 bits; IPv4 is carried IPv4-mapped (`::ffff:a.b.c.d`, §5). A NAT-PMP-only
//! server answers a PCP request with a NAT-PMP "unsupported version" reply (version 0, result 1, §9); the engine
//! turns that into [`PortmapError::PcpUnsupportedVersion`] with `server_version: 0`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::epoch::{EpochRule, EpochTracker};
use super::queue::{Completion, RequestQueue};
use super::{natpmp, PortmapError, Protocol, RequestId};
use crate::net::{unspecified_like, Engine, Received, Retransmit, Rng, Seed, Transmit, Transport};

/// PCP server port (same as NAT-PMP).
pub const SERVER_PORT: u16 = 5351;
/// The version this client speaks (RFC 6887).
pub const VERSION: u8 = 2;
pub const OP_ANNOUNCE: u8 = 0;
pub const OP_MAP: u8 = 1;
pub const OP_PEER: u8 = 2;
/// The R bit of the opcode byte: set in responses.
pub const RESPONSE_BIT: u8 = 0x80;
pub const HEADER_LEN: usize = 24;
/// Length of the MAP opcode-specific data.
pub const MAP_LEN: usize = 36;
/// Largest PCP message (§7).
pub const MAX_LEN: usize = 1100;
/// IANA protocol numbers used in MAP.
pub const PROTO_UDP: u8 = 17;
pub const PROTO_TCP: u8 = 6;

/// Result codes (RFC 6887 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    Success,
    UnsuppVersion,
    NotAuthorized,
    MalformedRequest,
    UnsuppOpcode,
    UnsuppOption,
    MalformedOption,
    NetworkFailure,
    NoResources,
    UnsuppProtocol,
    UserExQuota,
    CannotProvideExternal,
    AddressMismatch,
    ExcessiveRemotePeers,
    Other(u8),
}

impl ResultCode {
    pub fn from_u8(v: u8) -> Self {
        use ResultCode::*;
        match v {
            0 => Success,
            1 => UnsuppVersion,
            2 => NotAuthorized,
            3 => MalformedRequest,
            4 => UnsuppOpcode,
            5 => UnsuppOption,
            6 => MalformedOption,
            7 => NetworkFailure,
            8 => NoResources,
            9 => UnsuppProtocol,
            10 => UserExQuota,
            11 => CannotProvideExternal,
            12 => AddressMismatch,
            13 => ExcessiveRemotePeers,
            n => Other(n),
        }
    }

    pub fn to_u8(self) -> u8 {
        use ResultCode::*;
        match self {
            Success => 0,
            UnsuppVersion => 1,
            NotAuthorized => 2,
            MalformedRequest => 3,
            UnsuppOpcode => 4,
            UnsuppOption => 5,
            MalformedOption => 6,
            NetworkFailure => 7,
            NoResources => 8,
            UnsuppProtocol => 9,
            UserExQuota => 10,
            CannotProvideExternal => 11,
            AddressMismatch => 12,
            ExcessiveRemotePeers => 13,
            Other(n) => n,
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ResultCode::*;
        let text = match self {
            Success => "SUCCESS",
            UnsuppVersion => "UNSUPP_VERSION",
            NotAuthorized => "NOT_AUTHORIZED",
            MalformedRequest => "MALFORMED_REQUEST",
            UnsuppOpcode => "UNSUPP_OPCODE",
            UnsuppOption => "UNSUPP_OPTION",
            MalformedOption => "MALFORMED_OPTION",
            NetworkFailure => "NETWORK_FAILURE",
            NoResources => "NO_RESOURCES",
            UnsuppProtocol => "UNSUPP_PROTOCOL",
            UserExQuota => "USER_EX_QUOTA",
            CannotProvideExternal => "CANNOT_PROVIDE_EXTERNAL",
            // §8.2: the server saw another source address than the one in the request: a NAT in between.
            AddressMismatch => "ADDRESS_MISMATCH (a NAT between client and server)",
            ExcessiveRemotePeers => "EXCESSIVE_REMOTE_PEERS",
            Other(_) => "unknown result code",
        };
        write!(f, "{} ({})", text, self.to_u8())
    }
}

/// 128-bit wire form of an address (§5): IPv4 as IPv4-mapped IPv6.
pub fn ip_to_wire(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Inverse of [`ip_to_wire`]: IPv4-mapped addresses come back as IPv4.
pub fn ip_from_wire(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Udp => PROTO_UDP,
        Protocol::Tcp => PROTO_TCP,
    }
}

/// A MAP request (§11.1). The nonce identifies the mapping: renewals and the deletion must reuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    pub nonce: [u8; 12],
    pub protocol: Protocol,
    pub internal_port: u16,
    /// Preferred external address and port; `None` means no preference (all-zeros address, port 0).
    pub suggested_external: Option<SocketAddr>,
    /// Requested lifetime in seconds; 0 deletes the mapping (§15).
    pub lifetime: u32,
}

/// A client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// §14.1: header only, lifetime 0; a cheap "is anyone there" and epoch check.
    Announce,
    Map(MapRequest),
}

impl Request {
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Announce => OP_ANNOUNCE,
            Request::Map(_) => OP_MAP,
        }
    }

    /// Write the request into `buf`. `client_ip` is this host's address as the server sees it (§8.1).
    pub fn encode(&self, client_ip: IpAddr, buf: &mut [u8]) -> Result<usize, PortmapError> {
        let len = match self {
            Request::Announce => HEADER_LEN,
            Request::Map(_) => HEADER_LEN + MAP_LEN,
        };
        let out = buf.get_mut(..len).ok_or(PortmapError::InvalidRequest("buffer too small"))?;
        out.fill(0);
        out[0] = VERSION;
        out[1] = self.opcode();
        let lifetime = match self {
            Request::Announce => 0,
            Request::Map(m) => m.lifetime,
        };
        out[4..8].copy_from_slice(&lifetime.to_be_bytes());
        out[8..24].copy_from_slice(&ip_to_wire(client_ip));
        if let Request::Map(m) = self {
            if m.internal_port == 0 {
                // Internal port 0 means "all ports" (§11.1); a client of ours never wants that.
                return Err(PortmapError::InvalidRequest("internal port 0"));
            }
            let d = &mut out[HEADER_LEN..];
            d[0..12].copy_from_slice(&m.nonce);
            d[12] = protocol_number(m.protocol);
            d[16..18].copy_from_slice(&m.internal_port.to_be_bytes());
            let (port, ip) = match m.suggested_external {
                Some(sa) => (sa.port(), sa.ip()),
                // §11.1: no preference is the address-family-specific all-zeros address.
                None => (0, unspecified_like(client_ip)),
            };
            d[18..20].copy_from_slice(&port.to_be_bytes());
            d[20..36].copy_from_slice(&ip_to_wire(ip));
        }
        Ok(len)
    }
}

/// MAP opcode data of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapData {
    pub nonce: [u8; 12],
    /// IANA protocol number as sent.
    pub protocol: u8,
    pub internal_port: u16,
    pub external: SocketAddr,
}

/// Any well-formed PCP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub version: u8,
    pub opcode: u8,
    pub result: ResultCode,
    /// Mapping lifetime on success; on error, how long the error is expected to last (§7.2).
    pub lifetime: u32,
    pub epoch: u32,
    /// MAP data, when the opcode is MAP and the reply carries it (errors may be header only).
    pub map: Option<MapData>,
    /// Number of options (validated for framing, otherwise ignored as §7.3 tells clients).
    pub options: usize,
}

/// Why a datagram is not a valid PCP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0} bytes, a PCP message is 24 to 1100 bytes and a multiple of 4")]
    BadLength(usize),
    #[error("version {0}, expected 2")]
    Version(u8),
    #[error("R bit clear: a request, not a response")]
    NotAResponse,
    #[error("MAP success reply of {0} bytes, needs 60")]
    MapTooShort(usize),
    #[error("unknown response opcode {0}")]
    UnknownOpcode(u8),
    #[error("option at offset {0} runs past the end")]
    OptionOverrun(usize),
    #[error("reserved bytes not zero")]
    Reserved,
}

/// Parse a response (RFC 6887 §7.2, §11.1, §14.1). Strict on framing; never panics.
pub fn parse_response(data: &[u8]) -> Result<Reply, ParseError> {
    if data.len() < HEADER_LEN || data.len() > MAX_LEN || data.len() % 4 != 0 {
        return Err(ParseError::BadLength(data.len()));
    }
    let version = data[0];
    if data[1] & RESPONSE_BIT == 0 {
        return Err(ParseError::NotAResponse);
    }
    let opcode = data[1] & !RESPONSE_BIT;
    let result = ResultCode::from_u8(data[3]);
    let lifetime = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let epoch = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    if version != VERSION {
        // §9: an UNSUPP_VERSION reply carries the server's highest version in the version field.
        if result == ResultCode::UnsuppVersion {
            return Ok(Reply { version, opcode, result, lifetime, epoch, map: None, options: 0 });
        }
        return Err(ParseError::Version(version));
    }
    let body = &data[HEADER_LEN..];
    let (map, rest) = match opcode {
        OP_ANNOUNCE => (None, body),
        OP_MAP => {
            if body.len() < MAP_LEN {
                // Error replies may come without the opcode data.
                if result == ResultCode::Success || !body.is_empty() {
                    return Err(ParseError::MapTooShort(data.len()));
                }
                (None, body)
            } else {
                if body[13..16] != [0, 0, 0] {
                    return Err(ParseError::Reserved);
                }
                let mut nonce = [0u8; 12];
                nonce.copy_from_slice(&body[..12]);
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&body[20..36]);
                let map = MapData {
                    nonce,
                    protocol: body[12],
                    internal_port: u16::from_be_bytes([body[16], body[17]]),
                    external: SocketAddr::new(ip_from_wire(ip), u16::from_be_bytes([body[18], body[19]])),
                };
                (Some(map), &body[MAP_LEN..])
            }
        }
        // PEER and others are never requested; an error reply to them still parses.
        _ if result != ResultCode::Success => (None, &body[..0]),
        other => return Err(ParseError::UnknownOpcode(other)),
    };
    let options = count_options(rest, data.len() - rest.len())?;
    Ok(Reply { version, opcode, result, lifetime, epoch, map, options })
}

/// Walk the options (§7.3): code, reserved, 16-bit length, data padded to 4 bytes.
fn count_options(mut rest: &[u8], mut offset: usize) -> Result<usize, ParseError> {
    let mut n = 0;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(ParseError::OptionOverrun(offset));
        }
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let padded = (len + 3) & !3;
        let total = 4 + padded;
        if total > rest.len() {
            return Err(ParseError::OptionOverrun(offset));
        }
        rest = &rest[total..];
        offset += total;
        n += 1;
    }
    Ok(n)
}

/// A mapping the server granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub nonce: [u8; 12],
    pub protocol: Protocol,
    pub internal_port: u16,
    /// Assigned external address and port (port 0 after a deletion).
    pub external: SocketAddr,
    pub lifetime: u32,
    pub epoch: u32,
}

impl Mapping {
    /// The request that deletes this mapping (same nonce, lifetime 0; §15).
    pub fn delete_request(&self) -> Request {
        Request::Map(MapRequest {
            nonce: self.nonce,
            protocol: self.protocol,
            internal_port: self.internal_port,
            suggested_external: Some(self.external),
            lifetime: 0,
        })
    }
}

/// A successful response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    Announce { epoch: u32 },
    Map(Mapping),
}

/// What the engine tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Completed {
        id: RequestId,
        request: Request,
        result: Result<Response, PortmapError>,
    },
    /// The epoch shows the server lost its state: mappings must be requested again (§8.5).
    ServerReset {
        epoch: u32,
    },
}

impl Completion for Event {
    type Request = Request;
    type Response = Response;
    fn completed(id: RequestId, request: Request, result: Result<Response, PortmapError>) -> Self {
        Event::Completed { id, request, result }
    }
}

/// Sans-IO PCP client for one server, a [`net::Engine`](Engine) driven like [`natpmp::Client`]: one request on
/// the wire at a time, the rest queued; sends are stamped with the latest time the engine was given. It
/// consumes every datagram from the server's address and port, so a NAT-PMP client of the same gateway needs
/// a socket of its own.
#[derive(Debug)]
pub struct Client {
    client_ip: IpAddr,
    queue: RequestQueue<Event, ParseError>,
    epoch: EpochTracker,
    rng: Rng,
}

impl Client {
    /// A client sending from the socket bound to `local` to `server` (the gateway, port [`SERVER_PORT`]).
    /// `client_ip` is this host's source address toward the server, which goes into every request (the
    /// server answers ADDRESS_MISMATCH when it sees another, §8.2); `local` may be a wildcard address, this
    /// may not. `seed` keys the generator of mapping nonces ([`Client::map`]).
    pub fn new(local: SocketAddr, server: SocketAddr, client_ip: IpAddr, retransmit: Retransmit, seed: Seed) -> Self {
        Client {
            client_ip,
            queue: RequestQueue::new(local, server, retransmit),
            epoch: EpochTracker::new(EpochRule::Pcp),
            rng: Rng::from_seed(seed),
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.queue.server()
    }

    pub fn local(&self) -> SocketAddr {
        self.queue.local()
    }

    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// A fresh mapping nonce (§11.1: "a random 96-bit value"), from the engine's CSPRNG.
    pub fn nonce(&mut self) -> [u8; 12] {
        self.rng.bytes()
    }

    /// Queue a MAP request for a new mapping with a fresh nonce (§11.1). Keep the nonce of the mapping it
    /// returns: renewing and deleting it need the same one.
    pub fn map(
        &mut self,
        now: Instant,
        protocol: Protocol,
        internal_port: u16,
        suggested_external: Option<SocketAddr>,
        lifetime: u32,
    ) -> RequestId {
        let nonce = self.nonce();
        self.request(now, Request::Map(MapRequest { nonce, protocol, internal_port, suggested_external, lifetime }))
    }

    pub fn epoch(&self) -> Option<u32> {
        self.epoch.last()
    }

    pub fn request(&mut self, now: Instant, request: Request) -> RequestId {
        self.queue.request(now, request)
    }

    pub fn pending(&self) -> usize {
        self.queue.pending()
    }

    fn handle_reply(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let server = self.queue.server();
        if data.first() == Some(&natpmp::VERSION) {
            self.handle_natpmp_reply(data);
            return;
        }
        let reply = match parse_response(data) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("pcp: malformed reply from {from}: {e}");
                self.queue.malformed(e);
                return;
            }
        };
        if reply.version == VERSION && self.epoch.observe(reply.epoch, now) {
            log::info!("pcp: server {server} lost its mapping state (epoch {})", reply.epoch);
            self.queue.push_event(Event::ServerReset { epoch: reply.epoch });
        }
        let Some(head) = self.queue.head() else {
            log::debug!("pcp: unsolicited reply (opcode {}) from {from}", reply.opcode);
            return;
        };
        let result = match check(head, &reply) {
            Ok(r) => r,
            Err(why) => {
                log::debug!("pcp: reply does not match the request in flight: {why}");
                return;
            }
        };
        self.queue.answer(result);
    }

    /// A NAT-PMP-only server answers any PCP request with version 0, result "unsupported version" (§9).
    fn handle_natpmp_reply(&mut self, data: &[u8]) {
        match natpmp::parse_response(data) {
            Ok(r) if r.result == natpmp::ResultCode::UnsupportedVersion => {
                if self.queue.fail(PortmapError::PcpUnsupportedVersion { server_version: 0 }) {
                    log::debug!("pcp: {} speaks NAT-PMP only", self.queue.server());
                }
            }
            _ => log::debug!("pcp: ignoring a NAT-PMP datagram that is not an unsupported-version reply"),
        }
    }
}

impl Engine for Client {
    type Event = Event;

    /// Consumes datagrams from the server (valid or not); anything else is not ours.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        self.queue.set_now(now);
        if input.transport != Transport::Udp || input.source != self.queue.server() {
            return false;
        }
        self.handle_reply(now, input.source, data);
        true
    }

    /// ICMP port unreachable from the server: nothing listens there; the request in flight fails with
    /// [`PortmapError::Refused`].
    fn handle_unreachable(&mut self, now: Instant, _local: SocketAddr, dst: SocketAddr) -> bool {
        self.queue.unreachable(now, dst)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.queue.handle_timeout(now);
    }

    /// Next datagram to send, written into `buf` (at least 60 bytes).
    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let client_ip = self.client_ip;
        self.queue.poll_transmit(buf, |request, buf| request.encode(client_ip, buf))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.queue.poll_timeout()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.queue.poll_event()
    }
}

/// Does `reply` answer `request`? `Err` (with the reason) means "not ours, keep waiting".
fn check(request: &Request, reply: &Reply) -> Result<Result<Response, PortmapError>, &'static str> {
    if reply.result == ResultCode::UnsuppVersion {
        return Ok(Err(PortmapError::PcpUnsupportedVersion { server_version: reply.version }));
    }
    if reply.opcode != request.opcode() {
        return Err("opcode differs");
    }
    match request {
        Request::Announce => Ok(match reply.result {
            ResultCode::Success => Ok(Response::Announce { epoch: reply.epoch }),
            code => Err(PortmapError::Pcp { code, lifetime: reply.lifetime }),
        }),
        Request::Map(m) => {
            if let Some(d) = &reply.map {
                // §11.3: nonce, protocol and internal port must all match the request.
                if d.nonce != m.nonce {
                    return Err("nonce differs");
                }
                if d.protocol != protocol_number(m.protocol) || d.internal_port != m.internal_port {
                    return Err("protocol or internal port differs");
                }
            }
            Ok(match (reply.result, reply.map) {
                (ResultCode::Success, Some(d)) => Ok(Response::Map(Mapping {
                    nonce: d.nonce,
                    protocol: m.protocol,
                    internal_port: d.internal_port,
                    external: d.external,
                    lifetime: reply.lifetime,
                    epoch: reply.epoch,
                })),
                (ResultCode::Success, None) => return Err("success without MAP data"),
                (code, _) => Err(PortmapError::Pcp { code, lifetime: reply.lifetime }),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const NONCE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn gw() -> SocketAddr {
        "192.168.1.1:5351".parse().unwrap()
    }
    fn me() -> IpAddr {
        "192.168.1.20".parse().unwrap()
    }
    /// UDP 6666, no suggestion, 120 s, nonce [`NONCE`].
    fn map_request() -> MapRequest {
        MapRequest {
            nonce: NONCE,
            protocol: Protocol::Udp,
            internal_port: 6666,
            suggested_external: None,
            lifetime: 120,
        }
    }

    #[test]
    fn ipv4_mapped_wire_form() {
        let w = ip_to_wire(me());
        assert_eq!(w, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 20]);
        assert_eq!(ip_from_wire(w), me());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_from_wire(ip_to_wire(v6)), v6);
    }

    #[test]
    fn rfc6887_announce_request_bytes() {
        let mut b = [0xaau8; 64];
        assert_eq!(Request::Announce.encode(me(), &mut b).unwrap(), 24);
        let mut want = [0u8; 24];
        want[0] = 2;
        want[18..24].copy_from_slice(&[0xff, 0xff, 192, 168, 1, 20]);
        assert_eq!(&b[..24], &want);
    }

    #[test]
    fn rfc6887_map_request_bytes() {
        let mut b = [0xaau8; 64];
        let r = Request::Map(map_request());
        assert_eq!(r.encode(me(), &mut b).unwrap(), 60);
        #[rustfmt::skip]
        let want: [u8; 60] = [
            2, 1, 0, 0,             // version, R=0 opcode MAP, reserved
            0, 0, 0, 120,           // requested lifetime
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 20, // client IP
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, // nonce
            17, 0, 0, 0,            // protocol UDP, reserved
            0x1a, 0x0a, 0, 0,       // internal port 6666, suggested external port 0
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, // ::ffff:0.0.0.0
        ];
        assert_eq!(&b[..60], &want);
        let del = Mapping {
            nonce: NONCE,
            protocol: Protocol::Tcp,
            internal_port: 80,
            external: "203.0.113.5:8080".parse().unwrap(),
            lifetime: 120,
            epoch: 1,
        }
        .delete_request();
        del.encode(me(), &mut b).unwrap();
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert_eq!(b[36], 6);
        assert_eq!(&b[42..44], &[0x1f, 0x90]);
        assert_eq!(&b[56..60], &[203, 0, 113, 5]);
    }

    fn map_reply(result: u8, lifetime: u32, ext: [u8; 4], port: u16) -> Vec<u8> {
        let mut d = vec![2, 0x81, 0, result];
        d.extend_from_slice(&lifetime.to_be_bytes());
        d.extend_from_slice(&77u32.to_be_bytes());
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(&NONCE);
        d.extend_from_slice(&[17, 0, 0, 0]);
        d.extend_from_slice(&6666u16.to_be_bytes());
        d.extend_from_slice(&port.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        d.extend_from_slice(&ext);
        d
    }

    #[test]
    fn rfc6887_map_response() {
        let d = map_reply(0, 120, [203, 0, 113, 9], 6666);
        let r = parse_response(&d).unwrap();
        assert_eq!(
            (r.version, r.opcode, r.result, r.lifetime, r.epoch, r.options),
            (2, 1, ResultCode::Success, 120, 77, 0)
        );
        let m = r.map.unwrap();
        assert_eq!(m.nonce, NONCE);
        assert_eq!(m.external, "203.0.113.9:6666".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn rfc6887_announce_response_and_options() {
        let mut d = vec![2, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        d.extend_from_slice(&[0; 12]);
        let r = parse_response(&d).unwrap();
        assert_eq!((r.opcode, r.epoch, r.map), (0, 256, None));
        // One option with 5 data bytes, padded to 8.
        d.extend_from_slice(&[200, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(parse_response(&d).unwrap().options, 1);
        // Option length claiming more than is there.
        let n = d.len();
        d[n - 9] = 9;
        assert_eq!(parse_response(&d), Err(ParseError::OptionOverrun(24)));
    }

    #[test]
    fn unsupp_version_carries_server_version() {
        let mut d = vec![1, 0x81, 0, 1];
        d.extend_from_slice(&[0; 20]);
        let r = parse_response(&d).unwrap();
        assert_eq!((r.version, r.result), (1, ResultCode::UnsuppVersion));
        // Another version with success is not something we can read.
        d[3] = 0;
        assert_eq!(parse_response(&d), Err(ParseError::Version(1)));
    }

    #[test]
    fn malformed_responses() {
        assert_eq!(parse_response(&[]), Err(ParseError::BadLength(0)));
        assert_eq!(parse_response(&[2; 23]), Err(ParseError::BadLength(23)));
        assert_eq!(parse_response(&[2; 26]), Err(ParseError::BadLength(26)));
        assert_eq!(parse_response(&vec![2; 1104]), Err(ParseError::BadLength(1104)));
        let good = map_reply(0, 120, [203, 0, 113, 9], 6666);
        let mut d = good.clone();
        d[1] = 0x01;
        assert_eq!(parse_response(&d), Err(ParseError::NotAResponse));
        // Success truncated to the header.
        assert_eq!(parse_response(&good[..24]), Err(ParseError::MapTooShort(24)));
        assert_eq!(parse_response(&good[..56]), Err(ParseError::MapTooShort(56)));
        let mut d = good.clone();
        d[38] = 1;
        assert_eq!(parse_response(&d), Err(ParseError::Reserved));
        let mut d = good.clone();
        d[1] = 0x85;
        assert_eq!(parse_response(&d), Err(ParseError::UnknownOpcode(5)));
        // Error replies may be header only.
        let mut d = good[..24].to_vec();
        d[3] = 8;
        assert_eq!(parse_response(&d).unwrap().result, ResultCode::NoResources);
        // Every truncation and byte value at every position: no panic.
        for n in 0..good.len() {
            let _ = parse_response(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 0x7f, 0x80, 0xff] {
                let mut d = good.clone();
                d[i] = v;
                let _ = parse_response(&d);
            }
        }
        for code in 0..=255u8 {
            assert_eq!(ResultCode::from_u8(code).to_u8(), code);
        }
    }

    fn drive_one(c: &mut Client, now: Instant) -> Vec<u8> {
        let mut buf = [0u8; 128];
        let t = c.poll_transmit(&mut buf).expect("a transmit");
        assert_eq!((t.local, t.dst), (LOCAL, gw()));
        let _ = now;
        buf[..t.len].to_vec()
    }

    const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)), 40000);

    /// A client at `t0` with `request` queued and its first send drained.
    fn in_flight(t0: Instant, request: Request) -> (Client, RequestId, Vec<u8>) {
        let mut c = Client::new(LOCAL, gw(), me(), Retransmit::diagnostic(), [5; 32]);
        let id = c.request(t0, request);
        let sent = drive_one(&mut c, t0);
        (c, id, sent)
    }

    #[test]
    fn engine_map_matches_nonce() {
        let t0 = Instant::now();
        let (mut c, id, sent) = in_flight(t0, Request::Map(map_request()));
        assert_eq!(sent.len(), 60);
        let mut wrong = map_reply(0, 120, [203, 0, 113, 9], 6666);
        wrong[24] ^= 0xff;
        c.handle_input(t0, Received::udp(LOCAL, gw()), &wrong);
        assert!(c.poll_event().is_none());
        c.handle_input(t0, Received::udp(LOCAL, gw()), &map_reply(0, 120, [203, 0, 113, 9], 6666));
        match c.poll_event() {
            Some(Event::Completed { id: got, result: Ok(Response::Map(m)), .. }) => {
                assert_eq!(got, id);
                assert_eq!(m.external, "203.0.113.9:6666".parse::<SocketAddr>().unwrap());
                assert_eq!(m.lifetime, 120);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn engine_natpmp_only_server() {
        let t0 = Instant::now();
        let (mut c, _, _) = in_flight(t0, Request::Announce);
        // What miniupnpd (NAT-PMP side) sends back for version != 0: 8 bytes, opcode + 128, result 1.
        c.handle_input(t0 + Duration::from_millis(3), Received::udp(LOCAL, gw()), &[0, 128, 0, 1, 0, 0, 0, 9]);
        match c.poll_event() {
            Some(Event::Completed {
                result: Err(PortmapError::PcpUnsupportedVersion { server_version: 0 }), ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn engine_error_result_and_reset() {
        let t0 = Instant::now();
        let (mut c, _, _) = in_flight(t0, Request::Announce);
        let mut d = vec![2, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0];
        d.extend_from_slice(&[0; 12]);
        c.handle_input(t0, Received::udp(LOCAL, gw()), &d);
        assert!(matches!(
            c.poll_event(),
            Some(Event::Completed { result: Ok(Response::Announce { epoch: 4096 }), .. })
        ));
        // Unsolicited announce from a rebooted server (epoch back at 1).
        d[10] = 0;
        d[11] = 1;
        c.handle_input(t0 + Duration::from_secs(1), Received::udp(LOCAL, gw()), &d);
        assert_eq!(c.poll_event(), Some(Event::ServerReset { epoch: 1 }));
        // An error result completes the request with the code.
        c.request(t0 + Duration::from_secs(2), Request::Map(map_request()));
        drive_one(&mut c, t0);
        c.handle_input(t0 + Duration::from_secs(2), Received::udp(LOCAL, gw()), &map_reply(2, 0, [0; 4], 0));
        // Epoch 77 one second after epoch 1 is another jump the §8.5 check reports.
        assert_eq!(c.poll_event(), Some(Event::ServerReset { epoch: 77 }));
        assert!(matches!(
            c.poll_event(),
            Some(Event::Completed { result: Err(PortmapError::Pcp { code: ResultCode::NotAuthorized, .. }), .. })
        ));
    }

    #[test]
    fn map_nonces_come_from_the_seed() {
        let t0 = Instant::now();
        let new = |seed| Client::new(LOCAL, gw(), me(), Retransmit::diagnostic(), seed);
        let (mut a, mut b, mut c) = (new([1; 32]), new([1; 32]), new([2; 32]));
        let nonce = |client: &mut Client| {
            client.map(t0, Protocol::Udp, 6666, None, 60);
            let sent = drive_one(client, t0);
            <[u8; 12]>::try_from(&sent[24..36]).unwrap()
        };
        let first = nonce(&mut a);
        assert_eq!(first, nonce(&mut b), "same seed, same nonce");
        assert_ne!(first, nonce(&mut c));
        assert_ne!(first, [0; 12]);
        assert_ne!(a.nonce(), first, "each mapping gets its own");
    }

    #[test]
    fn strangers_are_not_consumed() {
        let t0 = Instant::now();
        let (mut c, _, _) = in_flight(t0, Request::Announce);
        let stranger: SocketAddr = "192.168.1.66:5351".parse().unwrap();
        assert!(!c.handle_input(t0, Received::udp(LOCAL, stranger), &[0; 24]));
        let tcp = Received { transport: crate::net::Transport::Tcp, ..Received::udp(LOCAL, gw()) };
        assert!(!c.handle_input(t0, tcp, &[0; 24]));
        assert!(c.handle_input(t0, Received::udp(LOCAL, gw()), &[0; 3]), "malformed, but from the server");
        assert!(c.poll_event().is_none());
    }
}

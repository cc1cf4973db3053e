//! NAT-PMP (RFC 6886): wire format (§3.2, §3.3, §3.5) and a sans-IO client engine (§3.1 retransmission,
//! §3.6 epoch checks).
//!
//! NAT-PMP has no transaction id: a response is matched to the request by its opcode (request + 128) and, for
//! mappings, the internal port. The engine therefore keeps one request on the wire at a time and queues the rest.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::epoch::{EpochRule, EpochTracker};
use super::queue::{Completion, RequestQueue};
use super::{PortmapError, Protocol, RequestId};
use crate::net::{Engine, Received, Retransmit, Transmit, Transport};

/// UDP port of the NAT-PMP (and PCP) server on the gateway (RFC 6886 §3.1).
pub const SERVER_PORT: u16 = 5351;
/// Port clients listen on for the gateway's multicast address announcements (RFC 6886 §3.2.1).
pub const CLIENT_PORT: u16 = 5350;
/// The only NAT-PMP version.
pub const VERSION: u8 = 0;
/// Opcodes (RFC 6886 §3.2, §3.3); responses carry `opcode + RESPONSE_BIT`.
pub const OP_EXTERNAL_ADDRESS: u8 = 0;
pub const OP_MAP_UDP: u8 = 1;
pub const OP_MAP_TCP: u8 = 2;
pub const RESPONSE_BIT: u8 = 128;
/// Largest request we build (a mapping request).
pub const MAX_REQUEST_LEN: usize = 12;
/// RFC 6886 §3.3 recommended mapping lifetime.
pub const RECOMMENDED_LIFETIME: u32 = 7200;

/// Result codes (RFC 6886 §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    Success,
    UnsupportedVersion,
    /// Not Authorized/Refused (e.g. box supports mapping, but user has turned feature off).
    NotAuthorized,
    /// Network Failure (e.g. NAT box itself has not obtained a DHCP lease).
    NetworkFailure,
    /// Out of resources (NAT box cannot create any more mappings at this time).
    OutOfResources,
    UnsupportedOpcode,
    Other(u16),
}

impl ResultCode {
    pub fn from_u16(v: u16) -> Self {
        match v {
            0 => ResultCode::Success,
            1 => ResultCode::UnsupportedVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::NetworkFailure,
            4 => ResultCode::OutOfResources,
            5 => ResultCode::UnsupportedOpcode,
            n => ResultCode::Other(n),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            ResultCode::Success => 0,
            ResultCode::UnsupportedVersion => 1,
            ResultCode::NotAuthorized => 2,
            ResultCode::NetworkFailure => 3,
            ResultCode::OutOfResources => 4,
            ResultCode::UnsupportedOpcode => 5,
            ResultCode::Other(n) => n,
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ResultCode::Success => "success",
            ResultCode::UnsupportedVersion => "unsupported version",
            ResultCode::NotAuthorized => "not authorized/refused",
            ResultCode::NetworkFailure => "network failure (gateway has no public address)",
            ResultCode::OutOfResources => "out of resources",
            ResultCode::UnsupportedOpcode => "unsupported opcode",
            ResultCode::Other(_) => "unknown result code",
        };
        write!(f, "{} ({})", text, self.to_u16())
    }
}

/// A client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// §3.2: ask for the gateway's external IPv4 address.
    ExternalAddress,
    /// §3.3: create, renew (lifetime > 0) or delete (lifetime 0) the mapping of `internal_port`.
    Map { protocol: Protocol, internal_port: u16, suggested_external_port: u16, lifetime: u32 },
}

impl Request {
    /// §3.4: deletion is a mapping request with lifetime 0 and suggested external port 0.
    pub fn delete(protocol: Protocol, internal_port: u16) -> Self {
        Request::Map { protocol, internal_port, suggested_external_port: 0, lifetime: 0 }
    }

    pub fn opcode(&self) -> u8 {
        match self {
            Request::ExternalAddress => OP_EXTERNAL_ADDRESS,
            Request::Map { protocol: Protocol::Udp, .. } => OP_MAP_UDP,
            Request::Map { protocol: Protocol::Tcp, .. } => OP_MAP_TCP,
        }
    }

    /// Write the request into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, PortmapError> {
        match *self {
            Request::ExternalAddress => {
                let out = buf.get_mut(..2).ok_or(PortmapError::InvalidRequest("buffer too small"))?;
                out.copy_from_slice(&[VERSION, OP_EXTERNAL_ADDRESS]);
                Ok(2)
            }
            Request::Map { internal_port, suggested_external_port, lifetime, .. } => {
                if internal_port == 0 {
                    // Port 0 with lifetime 0 deletes *all* the client's mappings (§3.4); never ask that by accident.
                    return Err(PortmapError::InvalidRequest("internal port 0"));
                }
                let out = buf.get_mut(..12).ok_or(PortmapError::InvalidRequest("buffer too small"))?;
                out[0] = VERSION;
                out[1] = self.opcode();
                out[2..4].copy_from_slice(&[0, 0]);
                out[4..6].copy_from_slice(&internal_port.to_be_bytes());
                out[6..8].copy_from_slice(&suggested_external_port.to_be_bytes());
                out[8..12].copy_from_slice(&lifetime.to_be_bytes());
                Ok(12)
            }
        }
    }
}

/// A successful response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    ExternalAddress {
        epoch: u32,
        address: Ipv4Addr,
    },
    /// For a deletion, `external_port` and `lifetime` are 0.
    Mapping {
        epoch: u32,
        protocol: Protocol,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
}

/// Any response datagram, successful or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The request opcode this answers (response opcode − 128).
    pub opcode: u8,
    pub result: ResultCode,
    pub epoch: u32,
    /// Internal port echoed by mapping responses, also error ones when long enough.
    pub internal_port: Option<u16>,
    /// Present exactly when `result` is success.
    pub response: Option<Response>,
}

/// Why a datagram is not a valid NAT-PMP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{len} bytes, need at least {need}")]
    TooShort { len: usize, need: usize },
    #[error("version {0}, expected 0")]
    Version(u8),
    #[error("opcode {0} is a request, not a response")]
    NotAResponse(u8),
    #[error("unknown response opcode {0}")]
    UnknownOpcode(u8),
    #[error("{len} bytes where a successful response has {expected}")]
    BadLength { len: usize, expected: usize },
    #[error("longer than 1100 bytes")]
    TooLong,
}

/// Largest datagram accepted (PCP's limit, RFC 6887 §7; error replies may echo a whole request).
const MAX_DATAGRAM: usize = 1100;

/// Parse a response datagram (RFC 6886 §3.2, §3.3, §3.5). Never panics.
pub fn parse_response(data: &[u8]) -> Result<Reply, ParseError> {
    if data.len() < 8 {
        return Err(ParseError::TooShort { len: data.len(), need: 8 });
    }
    if data.len() > MAX_DATAGRAM {
        return Err(ParseError::TooLong);
    }
    if data[0] != VERSION {
        return Err(ParseError::Version(data[0]));
    }
    if data[1] < RESPONSE_BIT {
        return Err(ParseError::NotAResponse(data[1]));
    }
    let opcode = data[1] - RESPONSE_BIT;
    let result = ResultCode::from_u16(u16::from_be_bytes([data[2], data[3]]));
    let epoch = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let protocol = match opcode {
        OP_EXTERNAL_ADDRESS => None,
        OP_MAP_UDP => Some(Protocol::Udp),
        OP_MAP_TCP => Some(Protocol::Tcp),
        // An unsupported-opcode reply to something we never send; still parse the header for errors.
        other if result != ResultCode::Success => {
            return Ok(Reply { opcode: other, result, epoch, internal_port: None, response: None });
        }
        other => return Err(ParseError::UnknownOpcode(other)),
    };
    let internal_port =
        if protocol.is_some() && data.len() >= 10 { Some(u16::from_be_bytes([data[8], data[9]])) } else { None };
    if result != ResultCode::Success {
        return Ok(Reply { opcode, result, epoch, internal_port, response: None });
    }
    let response = match protocol {
        None => {
            if data.len() != 12 {
                return Err(ParseError::BadLength { len: data.len(), expected: 12 });
            }
            Response::ExternalAddress { epoch, address: Ipv4Addr::new(data[8], data[9], data[10], data[11]) }
        }
        Some(protocol) => {
            if data.len() != 16 {
                return Err(ParseError::BadLength { len: data.len(), expected: 16 });
            }
            Response::Mapping {
                epoch,
                protocol,
                internal_port: u16::from_be_bytes([data[8], data[9]]),
                external_port: u16::from_be_bytes([data[10], data[11]]),
                lifetime: u32::from_be_bytes([data[12], data[13], data[14], data[15]]),
            }
        }
    };
    Ok(Reply { opcode, result, epoch, internal_port, response: Some(response) })
}

/// What the engine tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request finished: answered (success or a result code) or timed out.
    Completed { id: RequestId, request: Request, result: Result<Response, PortmapError> },
    /// The epoch shows the gateway lost its state (rebooted): mappings must be requested again (§3.6).
    ServerReset { epoch: u32 },
}

impl Completion for Event {
    type Request = Request;
    type Response = Response;
    fn completed(id: RequestId, request: Request, result: Result<Response, PortmapError>) -> Self {
        Event::Completed { id, request, result }
    }
}

/// Sans-IO NAT-PMP client for one gateway, a [`net::Engine`](Engine).
///
/// Queue requests with [`Client::request`], then drive it like any engine: feed datagrams and timeouts, drain
/// transmits and events. `poll_transmit` stamps sends with the latest time the engine was given (through
/// `request`, `handle_input`, `handle_unreachable` or `handle_timeout`). It consumes every datagram from the
/// gateway's port 5351, so a PCP client of the same gateway needs a socket of its own.
#[derive(Debug)]
pub struct Client {
    queue: RequestQueue<Event, ParseError>,
    epoch: EpochTracker,
}

impl Client {
    /// A client sending from the socket bound to `local` to `server`, the gateway's address and port
    /// [`SERVER_PORT`].
    pub fn new(local: SocketAddr, server: SocketAddr, retransmit: Retransmit) -> Self {
        Client { queue: RequestQueue::new(local, server, retransmit), epoch: EpochTracker::new(EpochRule::NatPmp) }
    }

    pub fn server(&self) -> SocketAddr {
        self.queue.server()
    }

    pub fn local(&self) -> SocketAddr {
        self.queue.local()
    }

    /// Last epoch (seconds since start of epoch) the server reported.
    pub fn epoch(&self) -> Option<u32> {
        self.epoch.last()
    }

    /// Queue a request; it goes out when it reaches the head of the queue.
    pub fn request(&mut self, now: Instant, request: Request) -> RequestId {
        self.queue.request(now, request)
    }

    /// Number of requests not yet completed.
    pub fn pending(&self) -> usize {
        self.queue.pending()
    }

    fn handle_reply(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let server = self.queue.server();
        let reply = match parse_response(data) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("natpmp: malformed reply from {from}: {e}");
                self.queue.malformed(e);
                return;
            }
        };
        if self.epoch.observe(reply.epoch, now) {
            log::info!("natpmp: gateway {server} lost its mapping state (epoch {})", reply.epoch);
            self.queue.push_event(Event::ServerReset { epoch: reply.epoch });
        }
        let Some(head) = self.queue.head() else {
            log::debug!("natpmp: unsolicited reply (opcode {}) from {from}", reply.opcode);
            return;
        };
        if !matches(head, &reply) {
            log::debug!("natpmp: reply (opcode {}) does not match the request in flight", reply.opcode);
            return;
        }
        let result = match reply.response {
            Some(r) => Ok(r),
            None => Err(PortmapError::NatPmp(reply.result)),
        };
        self.queue.answer(result);
    }
}

impl Engine for Client {
    type Event = Event;

    /// Consumes datagrams from the gateway (valid or not); anything else is not ours.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        self.queue.set_now(now);
        if input.transport != Transport::Udp || input.source != self.queue.server() {
            return false;
        }
        self.handle_reply(now, input.source, data);
        true
    }

    /// ICMP port unreachable from the gateway: nothing listens on 5351; the request in flight fails with
    /// [`PortmapError::Refused`].
    fn handle_unreachable(&mut self, now: Instant, _local: SocketAddr, dst: SocketAddr) -> bool {
        self.queue.unreachable(now, dst)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.queue.handle_timeout(now);
    }

    /// Next datagram to send, written into `buf` (at least [`MAX_REQUEST_LEN`] bytes).
    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.queue.poll_transmit(buf, |request, buf| request.encode(buf))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.queue.poll_timeout()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.queue.poll_event()
    }
}

fn matches(request: &Request, reply: &Reply) -> bool {
    if reply.opcode != request.opcode() {
        return false;
    }
    match (request, reply.internal_port) {
        (Request::Map { internal_port, .. }, Some(p)) => p == *internal_port,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Received;
    use std::time::Duration;

    const GW: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)), SERVER_PORT);
    const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)), 40000);

    #[test]
    fn rfc6886_external_address_request_bytes() {
        let mut b = [0u8; 16];
        assert_eq!(Request::ExternalAddress.encode(&mut b).unwrap(), 2);
        assert_eq!(&b[..2], &[0, 0]);
    }

    #[test]
    fn rfc6886_map_request_bytes() {
        let mut b = [0u8; 16];
        let r = Request::Map {
            protocol: Protocol::Udp,
            internal_port: 6666,
            suggested_external_port: 6667,
            lifetime: 7200,
        };
        assert_eq!(r.encode(&mut b).unwrap(), 12);
        assert_eq!(&b[..12], &[0, 1, 0, 0, 0x1a, 0x0a, 0x1a, 0x0b, 0, 0, 0x1c, 0x20]);
        let r = Request::Map { protocol: Protocol::Tcp, internal_port: 80, suggested_external_port: 0, lifetime: 1 };
        r.encode(&mut b).unwrap();
        assert_eq!(&b[..12], &[0, 2, 0, 0, 0, 80, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn rfc6886_delete_request_bytes() {
        let mut b = [0u8; 12];
        Request::delete(Protocol::Udp, 6666).encode(&mut b).unwrap();
        assert_eq!(b, [0, 1, 0, 0, 0x1a, 0x0a, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn refuses_port_zero_and_small_buffers() {
        let mut b = [0u8; 12];
        assert!(Request::delete(Protocol::Udp, 0).encode(&mut b).is_err());
        assert!(Request::ExternalAddress.encode(&mut b[..1]).is_err());
        assert!(Request::delete(Protocol::Udp, 1).encode(&mut b[..11]).is_err());
    }

    #[test]
    fn rfc6886_external_address_response() {
        let d = [0, 128, 0, 0, 0, 0, 0x0e, 0x10, 203, 0, 113, 7];
        let r = parse_response(&d).unwrap();
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.response, Some(Response::ExternalAddress { epoch: 3600, address: Ipv4Addr::new(203, 0, 113, 7) }));
    }

    #[test]
    fn rfc6886_map_response() {
        let d = [0, 129, 0, 0, 0, 0, 0, 5, 0x1a, 0x0a, 0x1a, 0x0b, 0, 0, 0x1c, 0x20];
        let r = parse_response(&d).unwrap();
        assert_eq!(
            r.response,
            Some(Response::Mapping {
                epoch: 5,
                protocol: Protocol::Udp,
                internal_port: 6666,
                external_port: 6667,
                lifetime: 7200
            })
        );
        let d = [0, 130, 0, 0, 0, 0, 0, 5, 0, 80, 0, 81, 0, 0, 0, 60];
        assert!(matches!(
            parse_response(&d).unwrap().response,
            Some(Response::Mapping { protocol: Protocol::Tcp, .. })
        ));
    }

    #[test]
    fn result_codes_and_short_error_replies() {
        // Unsupported opcode reply: 8-byte header (what miniupnpd sends).
        let r = parse_response(&[0, 133, 0, 5, 0, 0, 0, 1]).unwrap();
        assert_eq!((r.opcode, r.result, r.response), (5, ResultCode::UnsupportedOpcode, None));
        // Network failure for an address request still has 12 bytes.
        let r = parse_response(&[0, 128, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap();
        assert_eq!(r.result, ResultCode::NetworkFailure);
        let r = parse_response(&[0, 129, 0, 2, 0, 0, 0, 1, 0x1a, 0x0a, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((r.result, r.internal_port), (ResultCode::NotAuthorized, Some(6666)));
        assert_eq!(ResultCode::from_u16(77), ResultCode::Other(77));
        for c in 0..7u16 {
            assert_eq!(ResultCode::from_u16(c).to_u16(), c);
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert_eq!(parse_response(&[]), Err(ParseError::TooShort { len: 0, need: 8 }));
        assert_eq!(parse_response(&[0, 128, 0, 0, 0, 0, 0]), Err(ParseError::TooShort { len: 7, need: 8 }));
        assert_eq!(parse_response(&[2, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]), Err(ParseError::Version(2)));
        assert_eq!(parse_response(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]), Err(ParseError::NotAResponse(0)));
        assert_eq!(parse_response(&[0, 140, 0, 0, 0, 0, 0, 0]), Err(ParseError::UnknownOpcode(12)));
        // Truncated successful replies.
        assert_eq!(
            parse_response(&[0, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3]),
            Err(ParseError::BadLength { len: 11, expected: 12 })
        );
        assert_eq!(
            parse_response(&[0, 129, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0]),
            Err(ParseError::BadLength { len: 15, expected: 16 })
        );
        // Trailing garbage on a success is rejected too.
        assert!(parse_response(&[0, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0]).is_err());
        assert_eq!(parse_response(&[0u8; 1101]), Err(ParseError::TooLong));
    }

    #[test]
    fn every_truncation_and_byte_flip_is_handled() {
        let good = [0u8, 129, 0, 0, 0, 0, 0, 5, 0x1a, 0x0a, 0x1a, 0x0b, 0, 0, 0x1c, 0x20];
        for n in 0..good.len() {
            let _ = parse_response(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut d = good;
                d[i] = v;
                let _ = parse_response(&d);
            }
        }
    }

    #[test]
    fn engine_retransmits_then_times_out() {
        let t0 = Instant::now();
        let mut c = Client::new(LOCAL, GW, Retransmit::diagnostic());
        let id = c.request(t0, Request::ExternalAddress);
        let mut buf = [0u8; 64];
        let mut sends = vec![];
        let mut now = t0;
        for _ in 0..10 {
            while let Some(t) = c.poll_transmit(&mut buf) {
                assert_eq!((t.local, t.dst), (LOCAL, GW));
                sends.push(now.duration_since(t0).as_millis());
            }
            match c.poll_timeout() {
                Some(at) => {
                    now = at;
                    c.handle_timeout(now);
                }
                None => break,
            }
        }
        assert_eq!(sends, [0, 250, 750, 1750]);
        match c.poll_event() {
            Some(Event::Completed { id: got, result: Err(PortmapError::Timeout { sends: 4, waited, .. }), .. }) => {
                assert_eq!(got, id);
                assert_eq!(waited, Duration::from_millis(3750));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn engine_matches_and_ignores_strangers() {
        let t0 = Instant::now();
        let mut c = Client::new(LOCAL, GW, Retransmit::diagnostic());
        let id = c.request(
            t0,
            Request::Map { protocol: Protocol::Udp, internal_port: 6666, suggested_external_port: 0, lifetime: 60 },
        );
        let mut buf = [0u8; 64];
        assert_eq!(c.poll_transmit(&mut buf).map(|t| t.len), Some(12));
        assert!(c.poll_transmit(&mut buf).is_none());
        let reply = [0, 129, 0, 0, 0, 0, 0, 9, 0x1a, 0x0a, 0x1a, 0x0a, 0, 0, 0, 60];
        // From someone else: ignored.
        let stranger: SocketAddr = "192.168.1.66:5351".parse().unwrap();
        assert!(!c.handle_input(t0, Received::udp(LOCAL, stranger), &reply));
        // Wrong internal port: ignored.
        let mut other = reply;
        other[9] = 0x0b;
        assert!(c.handle_input(t0, Received::udp(LOCAL, GW), &other));
        // Malformed: ignored, kept for the timeout message.
        assert!(c.handle_input(t0, Received::udp(LOCAL, GW), &reply[..9]));
        assert!(c.poll_event().is_none());
        c.handle_input(t0 + Duration::from_millis(5), Received::udp(LOCAL, GW), &reply);
        match c.poll_event() {
            Some(Event::Completed {
                id: got,
                result: Ok(Response::Mapping { external_port: 6666, lifetime: 60, .. }),
                ..
            }) => {
                assert_eq!(got, id)
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(c.epoch(), Some(9));
        assert!(c.poll_timeout().is_none());
    }

    #[test]
    fn engine_fails_at_once_on_icmp_unreachable() {
        let t0 = Instant::now();
        let mut c = Client::new(LOCAL, GW, Retransmit::diagnostic());
        let id = c.request(t0, Request::ExternalAddress);
        assert!(!c.handle_unreachable(t0, LOCAL, GW), "nothing sent yet");
        let mut buf = [0u8; 64];
        assert!(c.poll_transmit(&mut buf).is_some());
        let other: SocketAddr = "192.168.1.66:5351".parse().unwrap();
        assert!(!c.handle_unreachable(t0, LOCAL, other));
        assert!(c.handle_unreachable(t0, LOCAL, GW));
        assert_eq!(
            c.poll_event(),
            Some(Event::Completed {
                id,
                request: Request::ExternalAddress,
                result: Err(PortmapError::Refused { server: GW })
            })
        );
        assert_eq!((c.pending(), c.poll_timeout()), (0, None));
    }
}

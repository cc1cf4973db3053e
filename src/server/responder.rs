//! The Binding responder: RFC 8489 §6.3 (receiving a request) and §12 (Binding), RFC 3489 §8–§9 for
//! requests without the magic cookie, RFC 5780 §6 (OTHER-ADDRESS, RESPONSE-ORIGIN, CHANGE-REQUEST,
//! RESPONSE-PORT, PADDING).
//!
//! Policy decisions (why, in short; docs/stund.md has the long form):
//! - Malformed datagrams (bad header, framing, FINGERPRINT) are dropped silently (RFC 8489 §6.3); so are
//!   indications, responses and methods other than Binding (§6.3: unsupported method ⇒ discard).
//! - Unknown comprehension-required attributes ⇒ 420 with UNKNOWN-ATTRIBUTES (§6.3.1). RESPONSE-ADDRESS is
//!   reported as unknown too: honouring it would let anyone aim our responses at a third party.
//! - A well-formed request whose known attribute carries a bad value ⇒ 400 (RFC 8489 §14.8 "malformed").
//!   RFC 5780 §6.1 asks for 400 when PADDING and RESPONSE-PORT come together.
//! - Without an alternate address, CHANGE-REQUEST ⇒ 420 (RFC 5780 §6: "MUST respond with a 420 (Unknown
//!   Attribute) to any Request with a CHANGE-REQUEST attribute"). RFC 3489-form requests are governed by RFC
//!   3489, where CHANGE-REQUEST is a basic attribute classic clients send on every request: there a request
//!   with both flags clear is answered, and only a flag we cannot honour gets the 420.
//! - Responses carry XOR-MAPPED-ADDRESS and, in RFC 5389 form, always FINGERPRINT: RFC 8489 leaves
//!   FINGERPRINT to the usage; it is comprehension-optional so costs nothing to clients that ignore it, and
//!   helps every client that multiplexes STUN with other traffic on one socket (ours does).
//! - In RFC 5780 mode (an alternate address exists) responses also carry OTHER-ADDRESS, and RESPONSE-ORIGIN
//!   and MAPPED-ADDRESS when they fit the amplification bound. A plain server sends neither OTHER-ADDRESS
//!   (§6 forbids it without a second address) nor MAPPED-ADDRESS (RFC 8489 clients read XOR-MAPPED-ADDRESS;
//!   classic clients are recognised by the missing cookie and answered in RFC 3489 form).
//! - RFC 3489-form answers carry MAPPED-ADDRESS, (with an alternate) CHANGED-ADDRESS and, when it fits,
//!   SOURCE-ADDRESS, nothing else: no FINGERPRINT (RFC 5389 §8: not backwards compatible with RFC 3489) and
//!   no SOFTWARE (RFC 3489 has none; classic parsers such as Vovida's read 0x8022 as a SERVER name of 4-byte
//!   units and complain about other lengths).
//! - Amplification bound: an answer is at most [`AMPLIFICATION_FACTOR`](super::AMPLIFICATION_FACTOR) × the
//!   request's length; what the client needs always fits, optional attributes are added in a fixed order
//!   while they fit (src/server/amplification.rs). A response with PADDING is also no longer than its request: the
//!   PADDING it carries is the request's PADDING length, cut to fit.

use super::amplification::{attribute_len, error_has_room_for, SuccessAttributes, SuccessShape};
use super::counters::Counters;
use super::ratelimit::{RateLimitConfig, RateLimitError, RateLimiter};
use crate::net::{Received, Transmit, Transport};
use crate::stun::{attr, Attribute, Class, ErrorCode, Message, MessageType, MessageWriter, Method};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Largest request handled; bigger datagrams or frames are dropped as malformed. Room for PADDING to a
/// 1500-byte MTU (RFC 5780 §7.6) with margin.
pub const MAX_REQUEST_LEN: usize = 2048;
/// SOFTWARE is capped at 128 bytes (RFC 8489 §14.14 asks for fewer than 128 characters).
pub const MAX_SOFTWARE_LEN: usize = 128;
/// At most this many attribute types are listed in UNKNOWN-ATTRIBUTES (more would only grow the answer).
pub const MAX_UNKNOWN_LISTED: usize = 16;
/// Largest response to a request without PADDING: header 20, four IPv6 address attributes 4 × 24, an empty
/// PADDING header 4, SOFTWARE 4 + 128, FINGERPRINT 8. Every error response and RFC 3489-form response is
/// smaller. A response with PADDING is at most `max(MAX_RESPONSE_LEN, request length)`.
pub const MAX_RESPONSE_LEN: usize = 20 + 4 * 24 + 4 + (4 + MAX_SOFTWARE_LEN) + 8;

/// One of the server's local transport addresses: primary or alternate IP × primary or alternate port
/// (RFC 5780 §6: A1/A2 × P1/P2). A plain server only has [`LocalSocket::PRIMARY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LocalSocket {
    pub alt_ip: bool,
    pub alt_port: bool,
}

impl LocalSocket {
    /// Primary IP, primary port.
    pub const PRIMARY: LocalSocket = LocalSocket { alt_ip: false, alt_port: false };
    /// All four, in [`index`](Self::index) order.
    pub const ALL: [LocalSocket; 4] = [
        LocalSocket { alt_ip: false, alt_port: false },
        LocalSocket { alt_ip: false, alt_port: true },
        LocalSocket { alt_ip: true, alt_port: false },
        LocalSocket { alt_ip: true, alt_port: true },
    ];

    /// 0..4: `alt_ip × 2 + alt_port`.
    pub fn index(self) -> usize {
        usize::from(self.alt_ip) * 2 + usize::from(self.alt_port)
    }

    /// The socket that differs in IP and/or port as asked.
    pub fn changed(self, change_ip: bool, change_port: bool) -> LocalSocket {
        LocalSocket { alt_ip: self.alt_ip ^ change_ip, alt_port: self.alt_port ^ change_port }
    }
}

/// Why a datagram got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not valid STUN: bad header or framing, wrong FINGERPRINT, too big, source port 0.
    Malformed,
    /// Valid STUN but not a Binding request (indication, response, other method).
    NotRequest,
    /// The source is over its rate limit.
    RateLimited,
    /// It arrived on an address that is none of the server's sockets (neither a bind nor an advertised
    /// address of [`ServerConfig`]): not for this server. Not counted.
    NotLocal,
}

/// Addresses and identity of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Primary IP the server is bound to.
    pub primary: IpAddr,
    /// Alternate IP; `Some` turns on RFC 5780 behaviour discovery (four sockets).
    pub alternate: Option<IpAddr>,
    /// Primary port (3478).
    pub port: u16,
    /// Alternate port (3479), used only with an alternate IP.
    pub alt_port: u16,
    /// Address clients see for the primary IP when it differs (1:1 NAT on cloud hosts).
    pub public_primary: Option<IpAddr>,
    /// Address clients see for the alternate IP when it differs.
    pub public_alternate: Option<IpAddr>,
    /// SOFTWARE attribute value; `None` leaves it out.
    pub software: Option<String>,
}

impl ServerConfig {
    /// A plain RFC 8489 server on `primary:port`.
    pub fn plain(primary: IpAddr, port: u16) -> Self {
        ServerConfig {
            primary,
            alternate: None,
            port,
            alt_port: port.wrapping_add(1),
            public_primary: None,
            public_alternate: None,
            software: None,
        }
    }

    /// Whether RFC 5780 behaviour discovery is on.
    pub fn behavior_discovery(&self) -> bool {
        self.alternate.is_some()
    }

    /// The local sockets in use: one, or all four.
    pub fn local_sockets(&self) -> &'static [LocalSocket] {
        if self.behavior_discovery() {
            &LocalSocket::ALL
        } else {
            &LocalSocket::ALL[..1]
        }
    }

    /// The address to bind for `s`.
    pub fn bind_addr(&self, s: LocalSocket) -> SocketAddr {
        let ip = if s.alt_ip { self.alternate.unwrap_or(self.primary) } else { self.primary };
        SocketAddr::new(ip, if s.alt_port { self.alt_port } else { self.port })
    }

    /// The address clients see for `s` (public address when configured).
    pub fn advertised_addr(&self, s: LocalSocket) -> SocketAddr {
        let ip = if s.alt_ip {
            self.public_alternate.or(self.alternate).unwrap_or(self.primary)
        } else {
            self.public_primary.unwrap_or(self.primary)
        };
        SocketAddr::new(ip, if s.alt_port { self.alt_port } else { self.port })
    }

    /// Which of the server's sockets `addr` is: its bind address or the address advertised for it (a driver
    /// behind a 1:1 NAT may report either). None when it is neither.
    pub fn local_socket(&self, addr: SocketAddr) -> Option<LocalSocket> {
        let same = |a: SocketAddr| a.ip() == addr.ip() && a.port() == addr.port();
        let sockets = self.local_sockets();
        sockets
            .iter()
            .copied()
            .find(|&s| same(self.bind_addr(s)))
            .or_else(|| sockets.iter().copied().find(|&s| same(self.advertised_addr(s))))
    }

    /// Check that the addresses make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.primary.is_unspecified() {
            return Err(ConfigError::Unspecified(self.primary));
        }
        if self.port == 0 {
            return Err(ConfigError::PortZero);
        }
        if let Some(sw) = &self.software {
            if sw.len() > MAX_SOFTWARE_LEN {
                return Err(ConfigError::SoftwareTooLong(sw.len()));
            }
        }
        if let Some(p) = self.public_primary {
            if p.is_ipv4() != self.primary.is_ipv4() {
                return Err(ConfigError::FamilyMismatch(Field::PublicPrimary, Field::Primary));
            }
        }
        match self.alternate {
            None => {
                if self.public_alternate.is_some() {
                    return Err(ConfigError::PublicAlternateWithoutAlternate);
                }
            }
            Some(alt) => {
                if alt.is_unspecified() {
                    return Err(ConfigError::Unspecified(alt));
                }
                if alt == self.primary {
                    return Err(ConfigError::SameAddress(alt));
                }
                if alt.is_ipv4() != self.primary.is_ipv4() {
                    return Err(ConfigError::FamilyMismatch(Field::Alternate, Field::Primary));
                }
                if self.alt_port == self.port || self.alt_port == 0 {
                    return Err(ConfigError::SamePort(self.alt_port));
                }
                if let Some(p) = self.public_alternate {
                    if p.is_ipv4() != alt.is_ipv4() {
                        return Err(ConfigError::FamilyMismatch(Field::PublicAlternate, Field::Alternate));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An address field of [`ServerConfig`], named for people (binaries map it to their own flag names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Primary,
    Alternate,
    PublicPrimary,
    PublicAlternate,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Primary => "the primary address",
            Field::Alternate => "the alternate address",
            Field::PublicPrimary => "the public primary address",
            Field::PublicAlternate => "the public alternate address",
        })
    }
}

/// What is wrong with a [`ServerConfig`] or the rate-limit settings: the values, not how they were given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is a wildcard address; give the host's own address so replies leave from the right one")]
    Unspecified(IpAddr),
    #[error("port 0 is not a valid server port")]
    PortZero,
    #[error("SOFTWARE is {0} bytes; at most {MAX_SOFTWARE_LEN} allowed")]
    SoftwareTooLong(usize),
    #[error("{0} and {1} must be the same address family")]
    FamilyMismatch(Field, Field),
    #[error("a public alternate address needs an alternate address")]
    PublicAlternateWithoutAlternate,
    #[error("the alternate address {0} is the primary address; RFC 5780 needs two different addresses")]
    SameAddress(IpAddr),
    #[error("the alternate port {0} must be non-zero and differ from the primary port")]
    SamePort(u16),
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
}

/// A MAPPED-ADDRESS-style attribute value (8 bytes for IPv4, 20 for IPv6), encoded once by the codec.
#[derive(Clone, Copy)]
struct AddressValue {
    bytes: [u8; 20],
    len: usize,
}

impl AddressValue {
    fn new(addr: SocketAddr) -> Self {
        let mut buf = [0u8; 64];
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let mut bytes = [0u8; 20];
        let mut len = 0;
        if let Ok(mut w) = MessageWriter::new(&mut buf, ty, &[0; 12]) {
            if w.add(&Attribute::MappedAddress(addr)).is_ok() {
                len = w.finish() - 24;
            }
        }
        // Header 20 bytes, attribute header 4: the value starts at 24. An address always fits.
        bytes[..len].copy_from_slice(&buf[24..24 + len]);
        AddressValue { bytes, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Error response chosen while checking a request.
#[derive(Clone, Copy)]
enum Refusal {
    /// 420 listing the attribute types collected in the scan.
    UnknownAttributes,
    /// 400 with this reason phrase.
    BadRequest(&'static str),
}

/// The attributes a Binding request may carry that the responder acts on, found in one pass.
#[derive(Default)]
struct Scan<'a> {
    change_request: Option<crate::stun::RawAttribute<'a>>,
    response_port: Option<crate::stun::RawAttribute<'a>>,
    padding: Option<crate::stun::RawAttribute<'a>>,
    fingerprint: bool,
    unknown: [u16; MAX_UNKNOWN_LISTED],
    unknown_len: usize,
}

impl Scan<'_> {
    fn add_unknown(&mut self, kind: u16) {
        if self.unknown_len < MAX_UNKNOWN_LISTED && !self.unknown[..self.unknown_len].contains(&kind) {
            self.unknown[self.unknown_len] = kind;
            self.unknown_len += 1;
        }
    }
}

/// Where a request came from and on which of the server's sockets, once the local address is resolved.
#[derive(Clone, Copy)]
struct Rx {
    transport: Transport,
    local: LocalSocket,
    from: SocketAddr,
}

/// Replies [`Engine::handle_input`](crate::net::Engine::handle_input) queues before the driver drains them;
/// past this many, further replies are dropped and counted as send errors (a driver that never drains must
/// not grow the queue without bound).
pub const MAX_QUEUED_REPLIES: usize = 64;

/// Stateless Binding responder plus the per-source rate limiter and counters of one worker thread.
///
/// Two ways to drive it: [`Responder::handle`] answers one request into the caller's buffer at once (the
/// hot path, like quinn-proto's `Endpoint::handle`); the [`Engine`](crate::net::Engine) implementation
/// (src/server/engine.rs) queues the same answers for drivers that run every engine alike, such as the
/// simulator.
pub struct Responder {
    config: ServerConfig,
    /// Advertised address of each local socket, by [`LocalSocket::index`], pre-encoded as MAPPED-ADDRESS-style
    /// values (RESPONSE-ORIGIN, OTHER-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS share that format), so the
    /// hot path copies instead of encoding.
    advertised_values: [AddressValue; 4],
    /// Bind and advertised address of each local socket, by index, to tell which socket a request came in on.
    bind: [SocketAddr; 4],
    advertised: [SocketAddr; 4],
    sockets: usize,
    limiter: Option<RateLimiter>,
    counters: Counters,
    /// Answers waiting for `poll_transmit`, and spare buffers for them.
    pub(super) queue: VecDeque<(Transmit, Vec<u8>)>,
    pub(super) spare: Vec<Vec<u8>>,
}

impl Responder {
    /// A responder for `config`; `rate_limit` `None` disables limiting. `seed` keys the limiter's hash (pass a
    /// random value); `now` starts its clock.
    pub fn new(
        config: ServerConfig,
        rate_limit: Option<RateLimitConfig>,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let limiter = rate_limit.map(|rl| RateLimiter::new(rl, seed, now)).transpose()?;
        let advertised_values = LocalSocket::ALL.map(|s| AddressValue::new(config.advertised_addr(s)));
        let bind = LocalSocket::ALL.map(|s| config.bind_addr(s));
        let advertised = LocalSocket::ALL.map(|s| config.advertised_addr(s));
        let sockets = config.local_sockets().len();
        Ok(Responder {
            config,
            advertised_values,
            bind,
            advertised,
            sockets,
            limiter,
            counters: Counters::default(),
            queue: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Totals since start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// For the I/O layer's own counts (send errors).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Memory held by the rate limiter's table (0 without a limiter).
    pub fn limiter_memory_bytes(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.memory_bytes())
    }

    /// Which socket `addr` is (see [`ServerConfig::local_socket`]); bind addresses first, as drivers report.
    fn local_of(&self, addr: SocketAddr) -> Option<LocalSocket> {
        let same = |a: &SocketAddr| a.port() == addr.port() && a.ip() == addr.ip();
        let i = self.bind[..self.sockets].iter().position(same);
        let i = i.or_else(|| self.advertised[..self.sockets].iter().position(same))?;
        Some(LocalSocket::ALL[i])
    }

    /// Handle one received message `req` and write any answer into `out`, which should hold at least
    /// `max(MAX_RESPONSE_LEN, req.len())` bytes (a smaller buffer only makes large answers drop). The answer
    /// is `out[..len]`, to be sent from the local socket `local` to `dst` (for TCP: on the connection the
    /// request came in on, whose ends `local` and `dst` then are).
    pub fn handle(&mut self, now: Instant, input: Received, req: &[u8], out: &mut [u8]) -> Result<Transmit, Dropped> {
        let Some(local) = self.local_of(input.local) else {
            return Err(Dropped::NotLocal);
        };
        let rx = Rx { transport: input.transport, local, from: input.source };
        match self.process(now, rx, req, out) {
            Ok((len, source, dst)) => {
                // Same socket: answer from the address the driver gave (it may carry an IPv6 scope).
                let local = if source == local { input.local } else { self.bind[source.index()] };
                Ok(Transmit { local, dst, len, ttl: None })
            }
            Err(dropped) => {
                match dropped {
                    Dropped::Malformed => self.counters.dropped_malformed += 1,
                    Dropped::NotRequest => self.counters.dropped_not_request += 1,
                    Dropped::RateLimited => self.counters.dropped_rate_limited += 1,
                    Dropped::NotLocal => {}
                }
                Err(dropped)
            }
        }
    }

    /// The answer's length, the socket it leaves from and its destination.
    fn process(
        &mut self,
        now: Instant,
        rx: Rx,
        req: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, LocalSocket, SocketAddr), Dropped> {
        if req.len() > MAX_REQUEST_LEN || rx.from.port() == 0 {
            return Err(Dropped::Malformed);
        }
        let Ok(msg) = Message::parse(req) else {
            return Err(Dropped::Malformed);
        };
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            return Err(Dropped::NotRequest);
        }
        let rfc3489 = msg.is_rfc3489();

        let mut scan = Scan::default();
        for a in msg.effective_attributes() {
            match a.kind {
                // RFC 5780 §6: a server without an alternate address answers 420 to a CHANGE-REQUEST, whatever
                // its value. RFC 3489 clients (Vovida's) send one with no flag on every request, so that form is
                // kept and judged by its flags below.
                attr::CHANGE_REQUEST if !rfc3489 && !self.config.behavior_discovery() => scan.add_unknown(a.kind),
                attr::CHANGE_REQUEST => {
                    scan.change_request.get_or_insert(a);
                }
                attr::RESPONSE_PORT => {
                    scan.response_port.get_or_insert(a);
                }
                attr::PADDING => {
                    scan.padding.get_or_insert(a);
                }
                attr::FINGERPRINT => scan.fingerprint = true,
                // Known to the codec, but a Binding server that honoured it would be a reflector.
                attr::RESPONSE_ADDRESS => scan.add_unknown(a.kind),
                k if attr::is_comprehension_required(k) && !attr::is_known(k) => scan.add_unknown(k),
                _ => {}
            }
        }
        // RFC 8489 §7.3: a FINGERPRINT that does not match means this is not a STUN message after all.
        if scan.fingerprint && msg.check_fingerprint() != Ok(true) {
            return Err(Dropped::Malformed);
        }

        if rfc3489 {
            self.counters.requests_rfc3489 += 1;
        } else {
            self.counters.requests_binding += 1;
        }
        if rx.transport == Transport::Tcp {
            self.counters.requests_tcp += 1;
        }
        if scan.response_port.is_some() {
            self.counters.requests_response_port += 1;
        }
        if scan.padding.is_some() {
            self.counters.requests_padding += 1;
        }

        if let Some(limiter) = &mut self.limiter {
            if !limiter.allow(now, rx.from.ip()) {
                return Err(Dropped::RateLimited);
            }
        }

        let checked = self.check(&msg, rx, &mut scan);
        let (len, from, to, ok) = match checked {
            Ok((source, to, padding)) => match self.write_success(&msg, rx, source, padding, out) {
                Some(len) => (len, source, to, true),
                None => return Err(Dropped::Malformed),
            },
            Err(refusal) => match self.write_error(&msg, refusal, &scan, out) {
                Some(len) => (len, rx.local, rx.from, false),
                None => return Err(Dropped::Malformed),
            },
        };
        if ok {
            self.counters.responses_success += 1;
        } else {
            self.counters.responses_error += 1;
        }
        Ok((len, from, to))
    }

    /// RFC 8489 §6.3.1 then RFC 5780 §6.1 checks. On success: the local socket to answer from, the
    /// destination, and the PADDING length asked for.
    fn check(
        &mut self,
        msg: &Message<'_>,
        rx: Rx,
        scan: &mut Scan<'_>,
    ) -> Result<(LocalSocket, SocketAddr, Option<usize>), Refusal> {
        let key = msg.raw_id();
        let change = match scan.change_request {
            None => None,
            Some(raw) => match Attribute::decode(raw, key) {
                Ok(Attribute::ChangeRequest(c)) => Some(c),
                _ => {
                    // Unknown-attribute errors take precedence (§6.3.1 runs before usage checks).
                    return Err(if scan.unknown_len > 0 {
                        Refusal::UnknownAttributes
                    } else {
                        Refusal::BadRequest("Bad Request: CHANGE-REQUEST")
                    });
                }
            },
        };
        let wants_change = change.is_some_and(|c| c.change_ip || c.change_port);
        if wants_change {
            self.counters.requests_change_request += 1;
        }
        if !self.config.behavior_discovery() && wants_change {
            scan.add_unknown(attr::CHANGE_REQUEST);
        }
        if scan.unknown_len > 0 {
            return Err(Refusal::UnknownAttributes);
        }

        let response_port = match scan.response_port {
            None => None,
            Some(raw) => match Attribute::decode(raw, key) {
                Ok(Attribute::ResponsePort(p)) if p != 0 => Some(p),
                _ => return Err(Refusal::BadRequest("Bad Request: RESPONSE-PORT")),
            },
        };
        if response_port.is_some() && scan.padding.is_some() {
            // RFC 5780 §6.1 / §7.5.
            return Err(Refusal::BadRequest("Bad Request: PADDING with RESPONSE-PORT"));
        }
        if rx.transport == Transport::Tcp && (wants_change || response_port.is_some()) {
            // A TCP response can only go back on its connection.
            return Err(Refusal::BadRequest("Bad Request: not possible over TCP"));
        }

        let source = match change {
            Some(c) => rx.local.changed(c.change_ip, c.change_port),
            None => rx.local,
        };
        let to = SocketAddr::new(rx.from.ip(), response_port.unwrap_or(rx.from.port()));
        Ok((source, to, scan.padding.map(|p| p.value.len())))
    }

    /// Mapped address as the client should read it: an IPv4-mapped IPv6 source is the IPv4 client.
    fn mapped(from: SocketAddr) -> SocketAddr {
        match from {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                None => from,
            },
            v4 => v4,
        }
    }

    fn write_success(
        &self,
        msg: &Message<'_>,
        rx: Rx,
        source: LocalSocket,
        padding: Option<usize>,
        out: &mut [u8],
    ) -> Option<usize> {
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let mapped = Self::mapped(rx.from);
        let rfc5780 = self.config.behavior_discovery();
        let origin = self.advertised_values[source.index()].bytes();
        let other = self.advertised_values[rx.local.changed(true, true).index()].bytes();
        let attrs = SuccessAttributes::choose(&SuccessShape {
            request_len: msg.as_bytes().len(),
            rfc3489: msg.is_rfc3489(),
            rfc5780,
            mapped_len: attribute_len(if mapped.is_ipv4() { 8 } else { 20 }),
            origin_len: attribute_len(origin.len()),
            other_len: attribute_len(other.len()),
            padding: padding.is_some(),
            software_len: self.config.software.as_deref().map(|s| attribute_len(s.len())),
        });
        let mut w;
        if msg.is_rfc3489() {
            // RFC 3489 §11.2: MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS.
            w = MessageWriter::new_rfc3489(out, ty, msg.raw_id()).ok()?;
            w.add(&Attribute::MappedAddress(mapped)).ok()?;
            if attrs.source_address {
                w.add_raw(attr::SOURCE_ADDRESS, origin).ok()?;
            }
            if rfc5780 {
                w.add_raw(attr::CHANGED_ADDRESS, other).ok()?;
            }
        } else {
            w = MessageWriter::new(out, ty, msg.transaction_id()).ok()?;
            w.add(&Attribute::XorMappedAddress(mapped)).ok()?;
            if attrs.mapped_address {
                w.add(&Attribute::MappedAddress(mapped)).ok()?;
            }
            if attrs.response_origin {
                w.add_raw(attr::RESPONSE_ORIGIN, origin).ok()?;
            }
            if rfc5780 {
                w.add_raw(attr::OTHER_ADDRESS, other).ok()?;
            }
        }
        let software = self.config.software.as_deref().filter(|_| attrs.software);
        if let Some(padding) = padding {
            // Cut so the whole response is no longer than the request (the PADDING bound).
            let tail = if msg.is_rfc3489() { 4 } else { 4 + software.map_or(0, |s| attribute_len(s.len())) + 8 };
            let room = msg.as_bytes().len().saturating_sub(w.len() + tail) & !3;
            let n = ((padding + 3) & !3).min(room);
            w.add(&Attribute::Padding(n as u16)).ok()?;
        }
        if !msg.is_rfc3489() {
            if let Some(s) = software {
                // Length checked once in ServerConfig::validate.
                w.add_raw(attr::SOFTWARE, s.as_bytes()).ok()?;
            }
            w.add_fingerprint().ok()?;
        }
        Some(w.finish())
    }

    fn write_error(&self, msg: &Message<'_>, refusal: Refusal, scan: &Scan<'_>, out: &mut [u8]) -> Option<usize> {
        let ty = MessageType::new(Method::BINDING, Class::Error);
        let mut w = if msg.is_rfc3489() {
            MessageWriter::new_rfc3489(out, ty, msg.raw_id()).ok()?
        } else {
            MessageWriter::new(out, ty, msg.transaction_id()).ok()?
        };
        match refusal {
            Refusal::UnknownAttributes => {
                let e = ErrorCode { code: ErrorCode::UNKNOWN_ATTRIBUTE, reason: "Unknown Attribute" };
                w.add(&Attribute::ErrorCode(e)).ok()?;
                w.add_unknown_attributes(&scan.unknown[..scan.unknown_len]).ok()?;
            }
            Refusal::BadRequest(reason) => {
                w.add(&Attribute::ErrorCode(ErrorCode { code: ErrorCode::BAD_REQUEST, reason })).ok()?;
            }
        }
        if !msg.is_rfc3489() {
            if let Some(s) = self.config.software.as_deref() {
                if error_has_room_for(msg.as_bytes().len(), w.len(), attribute_len(s.len())) {
                    w.add(&Attribute::Software(s)).ok()?;
                }
            }
            w.add_fingerprint().ok()?;
        }
        Some(w.finish())
    }
}

#[cfg(test)]
mod tests;

//! The TURN server engine (RFC 8656 §7 Allocate/Refresh, §9 CreatePermission, §10 Send and Data
//! indications, §11–§12 ChannelBind and ChannelData), sans-IO on the library's [`Engine`] contract.
//!
//! Inputs are datagrams (or TCP frames) from clients, received on the server's listening address, and
//! datagrams from peers, received on a relay socket: the engine tells them apart by the local address
//! (`Received::local` is a relayed address it handed out, or not). Transmits name the local socket to leave
//! from: the listening address towards clients, a relayed address towards peers. Relay sockets are the
//! driver's: the engine asks for one with [`Event::OpenRelay`] and the driver answers with
//! [`RelayServer::relay_opened`]; [`Event::CloseRelay`] says when to close it.
//!
//! Nothing is allocated per relayed packet: answers and relayed data wait in a bounded queue of buffers
//! recycled after each `poll_transmit`. State is bounded: no state for unauthenticated requests (nonces are
//! stateless), at most `max_allocations` allocations, each bounded by `Allocation::MAX_BYTES`.

mod data;
mod requests;

use super::allocation::{Allocation, Bucket, Channel, MAX_CHANNELS};
use super::auth::{Credentials, Key, NonceCheck, NonceMint, Rejected};
use super::policy::PeerPolicy;
use crate::net::{Engine, Received, Seed, Transmit, Transport};
use crate::server::{RateLimitConfig, RateLimitError, RateLimiter, AMPLIFICATION_FACTOR};
use crate::stun::attr::{self, Attribute, ErrorCode, Family};
use crate::stun::channel::{is_bindable_channel, ChannelData, CHANNEL_DATA_HEADER_LEN};
use crate::stun::{Class, Message, MessageType, MessageWriter, Method};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const LOG: &str = "holepunch::relay";

/// Largest datagram the engine takes or writes: a client's message, a peer's datagram plus the Data
/// indication around it. Bigger input is dropped (counted as malformed).
pub const MAX_DATAGRAM: usize = 2048;
/// Room a Data indication needs around the data: header, XOR-PEER-ADDRESS (IPv6), DATA header and padding.
const DATA_INDICATION_OVERHEAD: usize = 20 + 24 + 4 + 3;
/// Largest peer datagram relayed.
pub const MAX_PEER_DATA: usize = MAX_DATAGRAM - DATA_INDICATION_OVERHEAD;
/// Datagrams waiting for `poll_transmit`; past this, new ones are dropped and counted (a driver drains after
/// each input, so this only fills when the driver does not).
pub const MAX_QUEUED: usize = 256;
/// How often lifetimes are checked: expiry is exact to this.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 8656 §7.2 (EVEN-PORT): a reserved port is kept for about 30 seconds.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// The IP protocol number of UDP, the only REQUESTED-TRANSPORT relayed (RFC 8656 §7.2 step 3).
pub const UDP_PROTOCOL: u8 = 17;

/// Settings of the TURN server (docs/stund.md, "TURN relay").
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub realm: String,
    pub credentials: Credentials,
    /// RFC 8656 §7.2: 10 minutes unless the client asks for more.
    pub default_lifetime: Duration,
    /// The longest lifetime granted (RFC 8656 suggests 3600 s).
    pub max_lifetime: Duration,
    /// RFC 8656 §9: 300 s, fixed by the RFC.
    pub permission_lifetime: Duration,
    /// RFC 8656 §12: 600 s, fixed by the RFC.
    pub channel_lifetime: Duration,
    /// After this, a nonce earns 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    /// Allocations one user may hold at once (486 past it).
    pub user_quota: usize,
    /// Allocations in total (508 past it).
    pub max_allocations: usize,
    /// Bytes per second relayed per allocation, both directions together; 0: unlimited.
    pub bandwidth: u64,
    pub policy: PeerPolicy,
    /// Requests per second per source (IPv4 address or IPv6 /64); relayed data is not counted here.
    pub rate_limit: Option<RateLimitConfig>,
    /// The address clients see for the relay sockets' IP (a 1:1 NAT in front of the host).
    pub public_ip: Option<IpAddr>,
    /// The one address family relay sockets can have (the driver binds one relay IP); another family is
    /// answered with 440 Address Family not Supported. None: any.
    pub relay_family: Option<Family>,
}

impl RelayConfig {
    /// The RFC's defaults for `realm`, no credentials.
    pub fn new(realm: &str) -> RelayConfig {
        RelayConfig {
            realm: realm.to_string(),
            credentials: Credentials::default(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            user_quota: 10,
            max_allocations: 10_000,
            bandwidth: 0,
            policy: PeerPolicy::default(),
            rate_limit: Some(RateLimitConfig::default()),
            public_ip: None,
            relay_family: None,
        }
    }
}

/// What the driver must do or know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a UDP relay socket of `family` (in the relay port range, on an even port when `even`) and report
    /// it with [`RelayServer::relay_opened`]. With `reserve_next` (EVEN-PORT's R bit, RFC 8656 §7.2), also
    /// bind the next port and report both with [`RelayServer::relay_opened_with_reservation`].
    OpenRelay { id: u64, family: Family, even: bool, reserve_next: bool, client: SocketAddr },
    /// The allocation ended (or a reservation expired unused, then `id` is 0): close the relay socket bound
    /// to `relay`.
    CloseRelay { id: u64, relay: SocketAddr },
}

/// Counters (monotonic unless noted) for the metrics endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations now (a gauge).
    pub allocations: u64,
    pub allocations_created: u64,
    pub allocations_expired: u64,
    pub allocations_deleted: u64,
    pub requests: u64,
    /// 401 answers to requests without credentials (the usual first round trip).
    pub challenges: u64,
    /// 401/441 answers to wrong credentials.
    pub auth_failures: u64,
    pub stale_nonces: u64,
    /// 486 Allocation Quota Reached.
    pub quota_refused: u64,
    /// 508 Insufficient Capacity (allocation cap, tables full, no relay port).
    pub capacity_refused: u64,
    /// 403 Forbidden for a peer address, and relayed data dropped for the same reason.
    pub peer_denied: u64,
    pub rate_limited: u64,
    /// Other error answers (400, 420, 437, 442, 443).
    pub other_errors: u64,
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
    /// Relayed data dropped: no allocation, no channel, no permission.
    pub dropped_no_permission: u64,
    /// Relayed data dropped over the allocation's bandwidth limit.
    pub dropped_bandwidth: u64,
    pub dropped_malformed: u64,
    /// Dropped because the transmit queue was full.
    pub dropped_queue_full: u64,
    /// Unauthenticated answers not sent because they would exceed the amplification bound.
    pub dropped_amplification: u64,
}

/// The fields of a request an answer needs.
#[derive(Clone, Copy)]
struct Reply {
    local: SocketAddr,
    dst: SocketAddr,
    method: Method,
    transaction: [u8; 12],
    fingerprint: bool,
    /// The request's size, for the amplification bound of unauthenticated answers.
    request_len: usize,
}

impl Reply {
    fn to(rx: &Received, msg: &Message<'_>) -> Reply {
        Reply {
            local: rx.local,
            dst: rx.source,
            method: msg.method(),
            transaction: *msg.transaction_id(),
            fingerprint: msg.raw(attr::FINGERPRINT).is_some(),
            request_len: msg.as_bytes().len(),
        }
    }
}

/// A request that passed authentication.
struct Authed<'m> {
    key: Key,
    username: &'m str,
    quota_name: &'m str,
}

type FiveTuple = (Transport, SocketAddr, SocketAddr);

/// The TURN server engine.
pub struct RelayServer {
    config: RelayConfig,
    nonces: NonceMint,
    limiter: Option<RateLimiter>,
    slots: Vec<Option<Allocation>>,
    free: Vec<usize>,
    generation: u32,
    by_client: HashMap<FiveTuple, usize>,
    by_relay: HashMap<SocketAddr, usize>,
    quotas: HashMap<Box<str>, usize>,
    queue: VecDeque<(Transmit, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    events: VecDeque<Event>,
    next_sweep: Option<Instant>,
    /// A Unix time (seconds) and the instant it was read: REST usernames carry Unix expiry times.
    unix_anchor: (Instant, u64),
    stats: Stats,
    indications: u64,
    /// RESERVATION-TOKEN -> the reserved relay socket's address and when it lapses. At most one per
    /// allocation made, so bounded like them.
    reservations: HashMap<u64, (SocketAddr, Instant)>,
    /// Allocations whose OpenRelay asked for a reservation (by id).
    reserving: Vec<u64>,
    rng: crate::net::Rng,
}

impl RelayServer {
    /// `unix_now` is the wall-clock time (Unix seconds) at `now`.
    pub fn new(config: RelayConfig, seed: Seed, now: Instant, unix_now: u64) -> Result<RelayServer, RateLimitError> {
        let mut rng = crate::net::Rng::from_seed(seed);
        let limiter = match config.rate_limit {
            Some(rl) => Some(RateLimiter::new(rl, rng.next_u64(), now)?),
            None => None,
        };
        let nonces = NonceMint::new(rng.bytes(), now, config.nonce_lifetime);
        Ok(RelayServer {
            config,
            nonces,
            limiter,
            slots: Vec::new(),
            free: Vec::new(),
            generation: 0,
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            quotas: HashMap::new(),
            queue: VecDeque::new(),
            spare: Vec::new(),
            events: VecDeque::new(),
            next_sweep: None,
            unix_anchor: (now, unix_now),
            stats: Stats::default(),
            indications: 0,
            reservations: HashMap::new(),
            reserving: Vec::new(),
            rng,
        })
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        Stats { allocations: self.by_client.len() as u64, ..self.stats }
    }

    /// The TCP connection from `client` to `server` closed: its allocation ends with it (RFC 8656 §3.1, a
    /// TCP allocation lives as long as its connection). Returns true when there was one.
    pub fn connection_closed(&mut self, client: SocketAddr, server: SocketAddr) -> bool {
        match self.by_client.get(&(Transport::Tcp, client, server)) {
            Some(&slot) => {
                self.remove(slot, Some(false));
                true
            }
            None => false,
        }
    }

    /// Whether `local` is one of the relayed addresses this engine handed out.
    pub fn is_relay(&self, local: SocketAddr) -> bool {
        self.by_relay.contains_key(&local)
    }

    fn unix_now(&self, now: Instant) -> u64 {
        self.unix_anchor.1 + now.saturating_duration_since(self.unix_anchor.0).as_secs()
    }

    fn alloc(&self, slot: usize) -> Option<&Allocation> {
        self.slots.get(slot).and_then(|a| a.as_ref())
    }

    /// The driver's answer to [`Event::OpenRelay`]: the local address the relay socket is bound to, or None
    /// when no socket could be opened (then the client gets 508). Returns false when the allocation is gone
    /// or refused: the driver closes the socket again.
    pub fn relay_opened(&mut self, now: Instant, id: u64, bound: Option<SocketAddr>) -> bool {
        self.relay_opened_with_reservation(now, id, bound, None)
    }

    /// [`Self::relay_opened`] for an OpenRelay with `reserve_next`: `reserved` is the next port's socket,
    /// kept for a later Allocate with the RESERVATION-TOKEN this answer carries. Without it the client gets
    /// 508. Returns false when the driver must close every socket it passed.
    pub fn relay_opened_with_reservation(
        &mut self,
        now: Instant,
        id: u64,
        bound: Option<SocketAddr>,
        reserved: Option<SocketAddr>,
    ) -> bool {
        let slot = (id & 0xFFFF_FFFF) as usize;
        let wanted = match self.reserving.iter().position(|&r| r == id) {
            Some(i) => {
                self.reserving.swap_remove(i);
                true
            }
            None => false,
        };
        let Some(a) = self.slots.get_mut(slot).and_then(|a| a.as_mut()).filter(|a| a.id == id && a.relay.is_none())
        else {
            return false;
        };
        let reply = Reply {
            local: a.server,
            dst: a.client,
            method: Method::ALLOCATE,
            transaction: a.transaction,
            fingerprint: a.fingerprint,
            request_len: usize::MAX,
        };
        let key = a.key;
        match bound {
            Some(relay) if !wanted || reserved.is_some() => {
                a.relay = Some(relay);
                self.by_relay.insert(relay, slot);
                self.stats.allocations_created += 1;
                log::info!(target: LOG, "allocation for {} ({}): relay {relay}", a.client, a.username);
                let token = match reserved.filter(|_| wanted) {
                    Some(r) => {
                        let token = self.rng.next_u64();
                        self.reservations.insert(token, (r, now + RESERVATION_LIFETIME));
                        Some(token)
                    }
                    None => None,
                };
                self.allocate_success(now, slot, reply, token);
                true
            }
            _ => {
                self.remove(slot, None);
                self.stats.capacity_refused += 1;
                self.error(reply, ErrorCode::INSUFFICIENT_CAPACITY, "Insufficient Capacity", Some(&key), false, now);
                false
            }
        }
    }

    fn allocate_success(&mut self, now: Instant, slot: usize, reply: Reply, token: Option<u64>) {
        let Some(a) = self.alloc(slot) else { return };
        let Some(relay) = a.relay else { return };
        let advertised = SocketAddr::new(self.config.public_ip.unwrap_or(relay.ip()), relay.port());
        let lifetime = a.expires.saturating_duration_since(now).as_secs() as u32;
        let (client, key) = (a.client, a.key);
        self.answer(reply, Class::Success, Some(&key), |w| {
            w.add(&Attribute::XorRelayedAddress(advertised))?;
            w.add(&Attribute::Lifetime(lifetime))?;
            if let Some(t) = token {
                w.add(&Attribute::ReservationToken(t))?;
            }
            w.add(&Attribute::XorMappedAddress(client))
        });
    }

    /// Removes an allocation; `expired` says why (for the counters), None for a failed open.
    fn remove(&mut self, slot: usize, expired: Option<bool>) {
        let Some(a) = self.slots.get_mut(slot).and_then(|a| a.take()) else { return };
        self.free.push(slot);
        self.by_client.remove(&(a.transport, a.client, a.server));
        if let Some(q) = self.quotas.get_mut(&a.quota_name) {
            *q = q.saturating_sub(1);
            if *q == 0 {
                self.quotas.remove(&a.quota_name);
            }
        }
        match expired {
            Some(true) => self.stats.allocations_expired += 1,
            Some(false) => self.stats.allocations_deleted += 1,
            None => {}
        }
        if let Some(relay) = a.relay {
            self.by_relay.remove(&relay);
            self.events.push_back(Event::CloseRelay { id: a.id, relay });
            let why = if expired == Some(true) { "expired" } else { "deleted" };
            log::info!(target: LOG, "allocation for {} ({}) {why}: relay {relay} closed", a.client, a.username);
        }
    }

    // ---- writing ----

    fn buffer(&mut self) -> Option<Vec<u8>> {
        if self.queue.len() >= MAX_QUEUED {
            self.stats.dropped_queue_full += 1;
            return None;
        }
        let mut b = self.spare.pop().unwrap_or_default();
        b.resize(MAX_DATAGRAM, 0);
        Some(b)
    }

    fn push(&mut self, local: SocketAddr, dst: SocketAddr, mut buf: Vec<u8>, len: usize) {
        buf.truncate(len);
        self.queue.push_back((Transmit { local, dst, len, ttl: None }, buf));
    }

    fn answer(
        &mut self,
        reply: Reply,
        class: Class,
        key: Option<&Key>,
        fill: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), crate::stun::Error>,
    ) {
        let Some(mut buf) = self.buffer() else { return };
        let written = (|| {
            let mut w = MessageWriter::new(&mut buf, MessageType::new(reply.method, class), &reply.transaction)?;
            fill(&mut w)?;
            if let Some(k) = key {
                w.add_message_integrity(k)?;
            }
            if reply.fingerprint {
                w.add_fingerprint()?;
            }
            Ok::<usize, crate::stun::Error>(w.finish())
        })();
        match written {
            // An answer without MESSAGE-INTEGRITY goes to a source that has proved nothing, maybe a spoofed
            // one: it may not be more than AMPLIFICATION_FACTOR times the request (docs/stund.md,
            // "Amplification bound"). A real first Allocate (with REQUESTED-TRANSPORT) gets its 401 within
            // that unless the realm is long.
            Ok(n) if key.is_none() && n > AMPLIFICATION_FACTOR.saturating_mul(reply.request_len) => {
                self.stats.dropped_amplification += 1;
                self.spare.push(buf);
            }
            Ok(n) => self.push(reply.local, reply.dst, buf, n),
            Err(e) => {
                log::debug!(target: LOG, "cannot write an answer to {}: {e}", reply.dst);
                self.spare.push(buf);
            }
        }
    }

    /// An error answer; `challenge` adds REALM and a fresh NONCE (401, 438).
    fn error(&mut self, reply: Reply, code: u16, reason: &str, key: Option<&Key>, challenge: bool, now: Instant) {
        let nonce = challenge.then(|| self.nonces.issue(now, reply.dst));
        // Taken out and put back rather than cloned: an error answer allocates nothing.
        let realm = std::mem::take(&mut self.config.realm);
        self.answer(reply, Class::Error, key, |w| {
            w.add(&Attribute::ErrorCode(ErrorCode { code, reason }))?;
            if let Some(n) = &nonce {
                w.add(&Attribute::Realm(&realm))?;
                w.add(&Attribute::Nonce(std::str::from_utf8(n).unwrap_or_default()))?;
            }
            Ok(())
        });
        self.config.realm = realm;
    }

    fn other_error(&mut self, reply: Reply, code: u16, reason: &str, key: Option<&Key>, now: Instant) {
        self.stats.other_errors += 1;
        self.error(reply, code, reason, key, false, now);
    }

    /// A transaction id for a Data indication. An indication is never answered, so the id only has to
    /// differ between indications (RFC 8489 §6 asks randomness of requests' ids, against forged answers).
    fn indication_id(&mut self) -> [u8; 12] {
        self.indications = self.indications.wrapping_add(1);
        let mut id = [0x5a; 12];
        id[4..].copy_from_slice(&self.indications.to_be_bytes());
        id
    }

    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let expired = self.slots[slot].as_mut().is_some_and(|a| a.sweep(now));
            if expired {
                self.remove(slot, Some(true));
            }
        }
        let events = &mut self.events;
        self.reservations.retain(|_, &mut (relay, until)| {
            let keep = until > now;
            if !keep {
                events.push_back(Event::CloseRelay { id: 0, relay });
            }
            keep
        });
        let busy = !self.by_client.is_empty() || !self.reservations.is_empty();
        self.next_sweep = busy.then(|| now + SWEEP_INTERVAL);
    }
}

/// Whether a datagram is TURN's: ChannelData, or a STUN message of a TURN method (RFC 8656 §17). The
/// drivers use it to route datagrams before the Binding responder.
pub fn is_turn_message(data: &[u8]) -> bool {
    if crate::stun::looks_like_channel_data(data) {
        return true;
    }
    if !crate::stun::looks_like_stun(data) {
        return false;
    }
    let method = MessageType::from_u16(u16::from_be_bytes([data[0], data[1]])).method;
    matches!(
        method,
        Method::ALLOCATE | Method::REFRESH | Method::SEND | Method::CREATE_PERMISSION | Method::CHANNEL_BIND
    )
}

impl Engine for RelayServer {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, rx: Received, data: &[u8]) -> bool {
        if let Some(&slot) = self.by_relay.get(&rx.local) {
            self.relay_to_client(now, slot, rx.source, data);
            return true;
        }
        if !is_turn_message(data) {
            return false;
        }
        if data.len() > MAX_DATAGRAM {
            self.stats.dropped_malformed += 1;
            return true;
        }
        if crate::stun::looks_like_channel_data(data) {
            self.on_channel_data(now, rx, data);
            return true;
        }
        let Ok(msg) = Message::parse(data) else {
            self.stats.dropped_malformed += 1;
            return true;
        };
        if msg.is_rfc3489() || msg.check_fingerprint() == Ok(false) {
            self.stats.dropped_malformed += 1;
            return true;
        }
        if msg.class() == Class::Indication {
            if msg.method() == Method::SEND {
                self.on_send(now, rx, &msg);
            }
            return true;
        }
        if msg.class() != Class::Request {
            return true;
        }
        if let Some(l) = self.limiter.as_mut() {
            if !l.allow(now, rx.source.ip()) {
                self.stats.rate_limited += 1;
                return true;
            }
        }
        self.stats.requests += 1;
        let unknown: Vec<u16> = msg.unknown_comprehension_required().take(16).collect();
        if !unknown.is_empty() {
            self.stats.other_errors += 1;
            self.answer(Reply::to(&rx, &msg), Class::Error, None, |w| {
                w.add(&Attribute::ErrorCode(ErrorCode {
                    code: ErrorCode::UNKNOWN_ATTRIBUTE,
                    reason: "Unknown Attribute",
                }))?;
                w.add_unknown_attributes(&unknown)
            });
            return true;
        }
        match msg.method() {
            Method::ALLOCATE => self.on_allocate(now, rx, &msg),
            Method::REFRESH => self.on_refresh(now, rx, &msg),
            Method::CREATE_PERMISSION => self.on_create_permission(now, rx, &msg),
            Method::CHANNEL_BIND => self.on_channel_bind(now, rx, &msg),
            _ => {
                let reply = Reply::to(&rx, &msg);
                self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", None, now);
            }
        }
        true
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((t, data)) = self.queue.pop_front() {
            let fits = data.len() <= buf.len();
            if fits {
                buf[..data.len()].copy_from_slice(&data);
            } else {
                self.stats.dropped_queue_full += 1;
            }
            self.spare.push(data);
            if fits {
                return Some(t);
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

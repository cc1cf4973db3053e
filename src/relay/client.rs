//! TURN client (RFC 8656), sans-IO: one allocation on a TURN server, made from the caller's socket (punchd's
//! punching socket), kept alive, with permissions and channels for the peers it relays to, and the framing of
//! relayed data both ways (docs/relay.md, "Client").
//!
//! - Allocate (§7.1) with REQUESTED-TRANSPORT UDP; the first request goes without credentials, the 401
//!   answer's REALM and NONCE make the long-term key (RFC 8489 §9.2: MD5(username:realm:password)); a 438 Stale
//!   Nonce is answered with the new nonce (§9.2.4), a few times at most.
//! - Refresh (§7.2) before the lifetime ends (a minute early, or at half a short lifetime); Refresh with
//!   LIFETIME 0 on [`TurnClient::close`] (§7.2).
//! - CreatePermission (§9) per peer IP, renewed every 4 minutes (permissions last 5); ChannelBind (§12) per
//!   peer address, renewed every 9 minutes (channels last 10), which also renews the permission.
//! - Data: [`TurnClient::wrap`] frames a datagram for a peer as ChannelData (§12.4, 4 bytes of overhead)
//!   once its channel is bound, as a Send indication (§10) before; [`TurnClient::unwrap`] takes ChannelData
//!   and Data indications from the server apart, without copying.
//!
//! Answers are taken only when they match a transaction of ours, come from the server and, past the
//! challenge, carry a MESSAGE-INTEGRITY made with our key.

use crate::net::{Engine, Received, Retransmit, Seed, Transmit, DEFAULT_MIN_RTO};
use crate::stun::integrity::long_term_key_md5;
use crate::stun::{self, Attribute, ChannelData, Class, ErrorCode, Message, MessageType, MessageWriter, Method};
use crate::transaction::{FailReason, Spec, Transactions, TxKey};
use log::{debug, info, warn};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const LOG: &str = "holepunch::relay::client";

/// REQUESTED-TRANSPORT's value for UDP (RFC 8656 §14.7: an IANA protocol number).
const UDP: u8 = 17;
/// Challenges (401 with a nonce, 438) one request may meet before it counts as refused.
const MAX_CHALLENGES: u32 = 3;
/// Permissions last 300 s (§9); renewed this long before.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channels last 600 s (§12); renewed this long before.
const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// The first channel number handed out (§12: 0x4000–0x4FFF).
const FIRST_CHANNEL: u16 = 0x4000;
const LAST_CHANNEL: u16 = 0x4FFF;
/// Peers with a permission or channel at once (a bound on memory; punchd relays to its configured peers).
pub const MAX_RELAY_PEERS: usize = 256;

/// Who we are to the TURN server: a long-term user and password (RFC 8489 §9.2), static or made from a
/// shared secret by the TURN REST scheme ([`TurnCredentials::rest`]).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
}

impl TurnCredentials {
    pub fn new(username: &str, password: &str) -> TurnCredentials {
        TurnCredentials { username: username.to_string(), password: password.to_string() }
    }

    /// Time-limited credentials from a shared secret (the TURN REST scheme coturn's `--use-auth-secret`
    /// and stund's `--auth-secret` accept): username "EXPIRY:user" with EXPIRY in Unix seconds, password
    /// base64(HMAC-SHA1(secret, username)).
    pub fn rest(secret: &[u8], user: &str, expires_unix: u64) -> TurnCredentials {
        let username = if user.is_empty() { expires_unix.to_string() } else { format!("{expires_unix}:{user}") };
        let password = super::auth::rest_password(secret, &username);
        TurnCredentials { username, password }
    }
}

impl fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        write!(f, "TurnCredentials({:?}, password hidden)", self.username)
    }
}

/// The client's settings.
#[derive(Clone, Debug)]
pub struct TurnClientConfig {
    /// The socket the allocation is made from (and relayed data arrives on).
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub credentials: TurnCredentials,
    /// The lifetime asked for (the server may grant less or more).
    pub lifetime: Duration,
    pub retransmit: Retransmit,
}

impl TurnClientConfig {
    pub fn new(local: SocketAddr, server: SocketAddr, credentials: TurnCredentials) -> TurnClientConfig {
        TurnClientConfig {
            local,
            server,
            credentials,
            lifetime: Duration::from_secs(600),
            retransmit: Retransmit::rfc8489(),
        }
    }
}

/// Why there is no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocationError {
    /// 401 with our credentials (441 Wrong Credentials too): wrong user or password, or expired REST ones.
    Unauthorized,
    /// 486: the server's quota for our user is reached.
    QuotaReached,
    /// 508: the server has no room.
    Capacity,
    /// Any other error answer.
    Refused { code: Option<u16>, reason: String },
    /// No answer, or the server is unreachable.
    NoAnswer(String),
}

impl fmt::Display for AllocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocationError::Unauthorized => f.write_str("the TURN server refused our credentials (401)"),
            AllocationError::QuotaReached => {
                f.write_str("the TURN server's allocation quota for our user is full (486)")
            }
            AllocationError::Capacity => f.write_str("the TURN server has no room for another allocation (508)"),
            AllocationError::Refused { code: Some(c), reason } => write!(f, "the TURN server refused: {c} {reason}"),
            AllocationError::Refused { code: None, reason } => write!(f, "the TURN server refused: {reason}"),
            AllocationError::NoAnswer(why) => write!(f, "no answer from the TURN server: {why}"),
        }
    }
}

/// What the client tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation exists: peers reach us at `relayed`; the server sees us at `mapped`.
    Allocated { relayed: SocketAddr, mapped: Option<SocketAddr>, lifetime: Duration },
    /// No allocation could be made (or a refresh was refused: the allocation is gone).
    Failed(AllocationError),
    /// The channel to `peer` is bound: data to and from it travels as ChannelData.
    ChannelBound { peer: SocketAddr, channel: u16 },
}

/// What a transaction was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Allocate,
    Refresh { lifetime: u32 },
    Permission(IpAddr),
    Bind { peer: SocketAddr, channel: u16 },
}

/// A successful answer, decoded.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Allocated { relayed: SocketAddr, mapped: Option<SocketAddr>, lifetime: u32 },
    Refreshed { lifetime: u32 },
    Done,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    purpose: Purpose,
    challenges: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated { relayed: SocketAddr, expires: Instant, refresh_at: Instant },
    Closing,
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Option<Instant>,
    in_flight: bool,
}

#[derive(Clone, Copy, Debug)]
struct Permission {
    refresh_at: Option<Instant>,
    in_flight: bool,
}

/// The allocation (see the module docs).
pub struct TurnClient {
    config: TurnClientConfig,
    tx: Transactions<Answer>,
    pending: BTreeMap<TxKey, Pending>,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    state: State,
    mapped: Option<SocketAddr>,
    permissions: BTreeMap<IpAddr, Permission>,
    channels: BTreeMap<SocketAddr, Channel>,
    by_number: BTreeMap<u16, SocketAddr>,
    next_channel: u16,
    events: VecDeque<TurnEvent>,
}

impl TurnClient {
    /// A client whose Allocate request goes out at `now`.
    pub fn new(config: TurnClientConfig, seed: Seed, now: Instant) -> TurnClient {
        let tx = Transactions::new(config.retransmit, DEFAULT_MIN_RTO, seed);
        let mut c = TurnClient {
            config,
            tx,
            pending: BTreeMap::new(),
            realm: None,
            nonce: None,
            key: None,
            state: State::Allocating,
            mapped: None,
            permissions: BTreeMap::new(),
            channels: BTreeMap::new(),
            by_number: BTreeMap::new(),
            next_channel: FIRST_CHANNEL,
            events: VecDeque::new(),
        };
        c.request(now, Purpose::Allocate, 0);
        c
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Our address as the server sees it (XOR-MAPPED-ADDRESS of the Allocate answer).
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    pub fn local(&self) -> SocketAddr {
        self.config.local
    }

    /// Relay to and from `peer` from now on: a permission for its IP and a channel for its address (both
    /// kept alive). Refused past [`MAX_RELAY_PEERS`].
    pub fn add_peer(&mut self, now: Instant, peer: SocketAddr) -> bool {
        if self.channels.contains_key(&peer) {
            return true;
        }
        if self.channels.len() >= MAX_RELAY_PEERS || self.next_channel > LAST_CHANNEL {
            warn!(target: LOG, "no channel for {peer}: {} peers relayed already", self.channels.len());
            return false;
        }
        let number = self.next_channel;
        self.next_channel += 1;
        self.channels.insert(peer, Channel { number, bound: false, refresh_at: Some(now), in_flight: false });
        self.by_number.insert(number, peer);
        self.permit(now, peer.ip());
        self.maintain(now);
        true
    }

    /// A permission only (CreatePermission for `ip`): data from any port of it is relayed to us, and we may
    /// send to it with Send indications.
    pub fn permit(&mut self, now: Instant, ip: IpAddr) {
        if self.permissions.len() >= MAX_RELAY_PEERS && !self.permissions.contains_key(&ip) {
            return;
        }
        self.permissions.entry(ip).or_insert(Permission { refresh_at: Some(now), in_flight: false });
        self.maintain(now);
    }

    /// The channel bound to `peer`, if any.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels.get(&peer).filter(|c| c.bound).map(|c| c.number)
    }

    /// Frames `payload` for `peer` into `out`: ChannelData when its channel is bound, else a Send indication
    /// when it has a permission; `None` without either (or without an allocation, or when `out` is short).
    pub fn wrap(&self, peer: SocketAddr, payload: &[u8], out: &mut [u8]) -> Option<Transmit> {
        self.relayed()?;
        let t = |len| Transmit { local: self.config.local, dst: self.config.server, len, ttl: None };
        if let Some(ch) = self.channel(peer) {
            return ChannelData::write(ch, payload, false, out).ok().map(t);
        }
        if !self.permissions.contains_key(&peer.ip()) {
            return None;
        }
        let id = send_indication_id(payload);
        let mut w = MessageWriter::new(out, MessageType::new(Method::SEND, Class::Indication), &id).ok()?;
        w.add(&Attribute::XorPeerAddress(peer)).ok()?;
        w.add(&Attribute::Data(payload)).ok()?;
        Some(t(w.finish()))
    }

    /// The peer and payload of relayed data that arrived from the server (ChannelData on a bound channel,
    /// or a Data indication); `None` for anything else.
    pub fn unwrap<'a>(&self, input: Received, data: &'a [u8]) -> Option<(SocketAddr, &'a [u8])> {
        if input.source != self.config.server || input.local != self.config.local {
            return None;
        }
        if stun::looks_like_channel_data(data) {
            let cd = ChannelData::parse(data).ok()?;
            let peer = *self.by_number.get(&cd.channel)?;
            return Some((peer, cd.data));
        }
        let m = Message::parse(data).ok()?;
        if m.method() != Method::DATA || m.class() != Class::Indication {
            return None;
        }
        let Ok(Some(Attribute::XorPeerAddress(peer))) = m.get(stun::attr::XOR_PEER_ADDRESS) else { return None };
        let Ok(Some(Attribute::Data(payload))) = m.get(stun::attr::DATA) else { return None };
        // Only from peers we gave a permission (the server enforces it; a forged indication is not taken).
        self.permissions.contains_key(&peer.ip()).then_some((peer, payload))
    }

    /// Ends the allocation (Refresh with LIFETIME 0); the client is done after that.
    pub fn close(&mut self, now: Instant) {
        if matches!(self.state, State::Allocated { .. }) {
            self.state = State::Closing;
            self.request(now, Purpose::Refresh { lifetime: 0 }, 0);
        }
    }

    fn request(&mut self, now: Instant, purpose: Purpose, challenges: u32) {
        let method = match purpose {
            Purpose::Allocate => Method::ALLOCATE,
            Purpose::Refresh { .. } => Method::REFRESH,
            Purpose::Permission(_) => Method::CREATE_PERMISSION,
            Purpose::Bind { .. } => Method::CHANNEL_BIND,
        };
        let lifetime = self.config.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        let auth = match (&self.realm, &self.nonce, self.key) {
            (Some(r), Some(n), Some(k)) => Some((r.clone(), n.clone(), k)),
            _ => None,
        };
        let username = self.config.credentials.username.clone();
        let build = |w: &mut MessageWriter<'_>| -> Result<(), stun::Error> {
            match purpose {
                Purpose::Allocate => {
                    w.add(&Attribute::RequestedTransport(UDP))?;
                    w.add(&Attribute::Lifetime(lifetime))?;
                }
                Purpose::Refresh { lifetime } => w.add(&Attribute::Lifetime(lifetime))?,
                Purpose::Permission(ip) => w.add(&Attribute::XorPeerAddress(SocketAddr::new(ip, 0)))?,
                Purpose::Bind { peer, channel } => {
                    w.add(&Attribute::ChannelNumber(channel))?;
                    w.add(&Attribute::XorPeerAddress(peer))?;
                }
            }
            if let Some((realm, nonce, key)) = &auth {
                w.add(&Attribute::Username(&username))?;
                w.add(&Attribute::Realm(realm))?;
                w.add(&Attribute::Nonce(nonce))?;
                w.add_message_integrity(key)?;
            }
            w.add_fingerprint()
        };
        let spec = Spec::new(self.config.local, self.config.server);
        match self.tx.start(now, spec, method, build) {
            Ok(key) => {
                self.pending.insert(key, Pending { purpose, challenges });
                self.tx.handle_timeout(now);
            }
            Err(e) => warn!(target: LOG, "cannot encode a {method:?} request: {e}"),
        }
    }

    /// Starts the permission and channel requests that are due.
    fn maintain(&mut self, now: Instant) {
        if !matches!(self.state, State::Allocated { .. }) {
            return;
        }
        let due_perms: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| !p.in_flight && p.refresh_at.is_some_and(|t| t <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due_perms {
            if let Some(p) = self.permissions.get_mut(&ip) {
                p.in_flight = true;
            }
            self.request(now, Purpose::Permission(ip), 0);
        }
        let due_chans: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.in_flight && c.refresh_at.is_some_and(|t| t <= now))
            .map(|(p, c)| (*p, c.number))
            .collect();
        for (peer, channel) in due_chans {
            if let Some(c) = self.channels.get_mut(&peer) {
                c.in_flight = true;
            }
            self.request(now, Purpose::Bind { peer, channel }, 0);
        }
    }

    fn on_answer(&mut self, now: Instant, input: Received, m: &Message<'_>, data: &[u8]) {
        let Some(key) = self.tx.find(m.transaction_id()) else { return };
        let Some(pending) = self.pending.get(&key).copied() else { return };
        let code = m.error_code().map(|e| e.code);
        // A challenge (401, 438) is unsigned; every other answer past the first challenge must carry our MAC.
        let challenge =
            m.class() == Class::Error && matches!(code, Some(ErrorCode::UNAUTHORIZED | ErrorCode::STALE_NONCE));
        if !challenge {
            if let Some(k) = self.key {
                if m.check_integrity(&k).is_err() {
                    debug!(target: LOG, "dropped an answer from {} without our integrity", input.source);
                    return;
                }
            }
        }
        if challenge {
            let realm = m.get(stun::attr::REALM).ok().flatten();
            let nonce = m.get(stun::attr::NONCE).ok().flatten();
            if let (Some(Attribute::Realm(r)), Some(Attribute::Nonce(n))) = (realm, nonce) {
                let first = self.key.is_none() || self.realm.as_deref() != Some(r);
                let retry = pending.challenges < MAX_CHALLENGES && (first || code == Some(ErrorCode::STALE_NONCE));
                if retry && r.len() <= 256 && n.len() <= 256 {
                    self.realm = Some(r.to_string());
                    self.nonce = Some(n.to_string());
                    let c = &self.config.credentials;
                    self.key = Some(long_term_key_md5(&c.username, r, &c.password));
                    self.tx.cancel(key);
                    self.tx.remove(key);
                    self.pending.remove(&key);
                    self.request(now, pending.purpose, pending.challenges + 1);
                    return;
                }
            }
        }
        self.tx.handle_input(now, input, data, |m, _| decode(m));
        self.settle(now);
    }

    /// Turns ended transactions into state and events.
    fn settle(&mut self, now: Instant) {
        while let Some(key) = self.tx.poll_completed() {
            let Some(p) = self.pending.remove(&key) else {
                self.tx.remove(key);
                continue;
            };
            let Some(outcome) = self.tx.remove(key) else { continue };
            match (p.purpose, outcome) {
                (Purpose::Allocate, Ok(Answer::Allocated { relayed, mapped, lifetime })) => {
                    let granted = Duration::from_secs(lifetime.into());
                    info!(target: LOG, "allocated {relayed} on {} for {granted:?}", self.config.server);
                    self.mapped = mapped;
                    self.state =
                        State::Allocated { relayed, expires: now + granted, refresh_at: refresh_at(now, granted) };
                    self.events.push_back(TurnEvent::Allocated { relayed, mapped, lifetime: granted });
                    self.maintain(now);
                }
                (Purpose::Refresh { lifetime: 0 }, _) => {
                    self.state = State::Failed;
                }
                (Purpose::Refresh { .. }, Ok(Answer::Refreshed { lifetime })) => {
                    if let State::Allocated { relayed, .. } = self.state {
                        let granted = Duration::from_secs(lifetime.into());
                        self.state =
                            State::Allocated { relayed, expires: now + granted, refresh_at: refresh_at(now, granted) };
                    }
                }
                (Purpose::Permission(ip), r) => {
                    if let Some(perm) = self.permissions.get_mut(&ip) {
                        perm.in_flight = false;
                        // A refused permission is retried at the next renewal; the peer may be denied.
                        perm.refresh_at =
                            Some(now + if r.is_ok() { PERMISSION_REFRESH } else { Duration::from_secs(30) });
                    }
                    if let Err(e) = r {
                        warn!(target: LOG, "permission for {ip} refused: {e}");
                    }
                }
                (Purpose::Bind { peer, channel }, r) => {
                    let ok = r.is_ok();
                    if let Some(c) = self.channels.get_mut(&peer) {
                        c.in_flight = false;
                        c.refresh_at = Some(now + if ok { CHANNEL_REFRESH } else { Duration::from_secs(30) });
                        let first = ok && !c.bound;
                        c.bound |= ok;
                        if first {
                            self.events.push_back(TurnEvent::ChannelBound { peer, channel });
                        }
                    }
                    if let Err(e) = r {
                        warn!(target: LOG, "channel {channel:#x} for {peer} refused: {e}");
                    }
                }
                (purpose, Err(e)) => {
                    let was = matches!(self.state, State::Allocated { .. });
                    self.state = State::Failed;
                    let err = allocation_error(&e);
                    warn!(target: LOG, "{:?} failed: {err}", purpose);
                    if matches!(purpose, Purpose::Allocate) || was {
                        self.events.push_back(TurnEvent::Failed(err));
                    }
                }
                (_, Ok(_)) => {}
            }
        }
    }
}

/// Refresh a minute before the end, or at half a lifetime shorter than two minutes.
fn refresh_at(now: Instant, lifetime: Duration) -> Instant {
    let early = if lifetime > Duration::from_secs(120) { lifetime - Duration::from_secs(60) } else { lifetime / 2 };
    now + early
}

fn decode(m: &Message<'_>) -> Result<Answer, String> {
    let lifetime = match m.get(stun::attr::LIFETIME) {
        Ok(Some(Attribute::Lifetime(l))) => Some(l),
        _ => None,
    };
    match m.method() {
        Method::ALLOCATE => {
            let Ok(Some(Attribute::XorRelayedAddress(relayed))) = m.get(stun::attr::XOR_RELAYED_ADDRESS) else {
                return Err("no XOR-RELAYED-ADDRESS".into());
            };
            Ok(Answer::Allocated { relayed, mapped: m.xor_mapped_address(), lifetime: lifetime.unwrap_or(600) })
        }
        Method::REFRESH => Ok(Answer::Refreshed { lifetime: lifetime.unwrap_or(600) }),
        _ => Ok(Answer::Done),
    }
}

fn allocation_error(e: &FailReason) -> AllocationError {
    match e {
        FailReason::ErrorResponse { code: Some(401 | 441), .. } => AllocationError::Unauthorized,
        FailReason::ErrorResponse { code: Some(486), .. } => AllocationError::QuotaReached,
        FailReason::ErrorResponse { code: Some(508), .. } => AllocationError::Capacity,
        FailReason::ErrorResponse { code, reason, .. } => {
            AllocationError::Refused { code: *code, reason: reason.clone() }
        }
        other => AllocationError::NoAnswer(other.to_string()),
    }
}

/// A Send indication needs a transaction id but no answer comes: one derived from the payload's first bytes
/// is as good as random for the server and costs no generator.
fn send_indication_id(payload: &[u8]) -> [u8; 12] {
    let mut id = [0x5a; 12];
    for (d, s) in id.iter_mut().zip(payload.iter().rev()) {
        *d ^= *s;
    }
    id
}

impl Engine for TurnClient {
    type Event = TurnEvent;

    /// Answers from the server to our requests; relayed data is for [`TurnClient::unwrap`], not taken here.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if input.source != self.config.server || input.local != self.config.local || !stun::looks_like_stun(data) {
            return false;
        }
        let Ok(m) = Message::parse(data) else { return false };
        if !matches!(m.class(), Class::Success | Class::Error)
            || !matches!(
                m.method(),
                Method::ALLOCATE | Method::REFRESH | Method::CREATE_PERMISSION | Method::CHANNEL_BIND
            )
        {
            return false;
        }
        self.on_answer(now, input, &m, data);
        true
    }

    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        let hit = self.tx.handle_unreachable(local, dst);
        self.settle(now);
        hit
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.settle(now);
        if let State::Allocated { refresh_at, expires, .. } = self.state {
            if now >= expires {
                self.state = State::Failed;
                self.events.push_back(TurnEvent::Failed(AllocationError::NoAnswer("the allocation expired".into())));
            } else if now >= refresh_at && !self.pending.values().any(|p| matches!(p.purpose, Purpose::Refresh { .. }))
            {
                let lifetime = self.config.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
                self.request(now, Purpose::Refresh { lifetime }, 0);
            }
        }
        self.maintain(now);
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.tx.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.tx.poll_timeout();
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if let State::Allocated { refresh_at, expires, .. } = self.state {
            min(Some(refresh_at.min(expires)));
            for p in self.permissions.values().filter(|p| !p.in_flight) {
                min(p.refresh_at);
            }
            for c in self.channels.values().filter(|c| !c.in_flight) {
                min(c.refresh_at);
            }
        }
        t
    }

    fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }
}

impl fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.config.server)
            .field("state", &self.state)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

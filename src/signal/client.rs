//! The peer's rendezvous engine (docs/signal.md, "Client"): registers from the punching socket every
//! keepalive (the registration doubles as the Binding keepalive: its answer carries the reflexive address),
//! asks for introductions, and answers the server's PUSH requests.
//!
//! It shares the punching socket with the punch engine, so it consumes only rendezvous messages from the
//! server (PUSH requests and answers to its own transactions) and returns false for everything else.

use super::auth::{NetworkSecret, PeerAuthKey};
use super::codes;
use super::types::{Candidate, Introduction, NatProfile, PeerName, MAX_CANDIDATES};
use super::wire::{self, is_signal_message, WriteSignal, CONNECT, PUSH, REGISTER};
use crate::identity::PublicKey;
use crate::net::{Engine, Received, Retransmit, Seed, Transmit, DEFAULT_MIN_RTO};
use crate::stun::{self, Attribute, Class, ErrorCode, Message, MessageWriter};
use crate::transaction::{FailReason, Spec, Transactions, TxKey};
use log::{debug, info};
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LOG: &str = "holepunch::signal::client";

/// Consecutive 438 challenges a request may meet before it counts as failed (one is normal: the first
/// request after start or after the server's nonce bucket turned over).
const MAX_CHALLENGES: u32 = 3;
/// Sessions remembered to recognise a retransmitted PUSH.
const SEEN_SESSIONS: usize = 32;
/// Largest request the client writes.
const MAX_MESSAGE: usize = 1280;

/// Settings of the rendezvous client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The punching socket (registrations leave from it so the server records the endpoint to punch).
    pub local: SocketAddr,
    /// The rendezvous server (stund).
    pub server: SocketAddr,
    pub name: PeerName,
    /// This peer's public key (its identity).
    pub key: PublicKey,
    /// K(name), derived from the network secret ([`NetworkSecret::peer_key`]).
    pub auth: PeerAuthKey,
    /// How often the registration is refreshed (default 3 s).
    pub keepalive: Duration,
    /// Retransmission of each request (default RFC 8489 §6.2.1; a registration still waiting at the next
    /// keepalive is replaced by a fresh one).
    pub retransmit: Retransmit,
    /// No successful registration for this long: the server has forgotten us ([`Event::ServerLost`]). Match
    /// the server's registration lifetime (default 15 s).
    pub lifetime: Duration,
}

impl ClientConfig {
    pub fn new(local: SocketAddr, server: SocketAddr, name: PeerName, key: PublicKey, secret: &NetworkSecret) -> Self {
        let auth = secret.peer_key(&name);
        ClientConfig {
            local,
            server,
            name,
            key,
            auth,
            keepalive: Duration::from_secs(3),
            retransmit: Retransmit::rfc8489(),
            lifetime: Duration::from_secs(15),
        }
    }
}

/// Why the server refused our registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// 401: the server could not verify our integrity: our network secret differs from the server's.
    WrongSecret,
    /// 403: another peer holds our name with another key (until its registration expires).
    NameTaken,
    /// 508: the server's registry is full.
    ServerFull,
    /// Any other error answer.
    Other { code: Option<u16>, reason: String },
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::WrongSecret => f.write_str("the server refused our credentials: wrong network secret"),
            RefuseReason::NameTaken => f.write_str("the name is registered by a peer with another key"),
            RefuseReason::ServerFull => f.write_str("the server's registry is full"),
            RefuseReason::Other { code: Some(c), reason } => write!(f, "the server refused: {c} {reason}"),
            RefuseReason::Other { code: None, .. } => f.write_str("the server refused without an error code"),
        }
    }
}

/// Why a CONNECT failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// 404: the peer is not registered with the server.
    PeerNotRegistered,
    /// Another error answer.
    Refused { code: Option<u16>, reason: String },
    /// No usable answer (time-out, unreachable, ...).
    Transaction(FailReason),
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::PeerNotRegistered => f.write_str("not registered with the server"),
            ConnectFailure::Refused { code: Some(c), reason } => write!(f, "refused by the server: {c} {reason}"),
            ConnectFailure::Refused { code: None, .. } => f.write_str("refused by the server"),
            ConnectFailure::Transaction(r) => r.fmt(f),
        }
    }
}

/// What the client reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Registered (first time, or again after [`Event::ServerLost`]); `reflexive` is our endpoint as the server
    /// sees it.
    Registered {
        reflexive: SocketAddr,
    },
    /// The server sees us at a new endpoint (the NAT mapping changed): punched paths may be gone.
    ReflexiveChanged {
        old: SocketAddr,
        new: SocketAddr,
    },
    /// No answer from the server for a lifetime: it is down or unreachable (we keep trying).
    ServerLost,
    /// The server refused our registration (we keep trying every keepalive; reported once per cause).
    Refused(RefuseReason),
    /// The server introduced a peer: punch towards it now.
    Introduced(Introduction),
    /// The server relays too and granted us TURN credentials (new or renewed).
    TurnCredentials {
        username: String,
        password: String,
    },
    ConnectFailed {
        peer: PeerName,
        reason: ConnectFailure,
    },
}

#[derive(Clone, Debug)]
enum Request {
    Register { challenges: u32 },
    Connect { peer: PeerName, challenges: u32 },
}

/// The rendezvous client (see the module docs).
pub struct Client {
    config: ClientConfig,
    tx: Transactions<Option<SocketAddr>>,
    requests: Vec<(TxKey, Request)>,
    nonce: Option<Vec<u8>>,
    /// The TURN credentials the server last granted (username, password).
    turn: Option<(String, String)>,
    candidates: Vec<Candidate>,
    profile: NatProfile,
    reflexive: Option<SocketAddr>,
    /// When the last registration succeeded (or the client started).
    last_ok: Instant,
    /// When the server last answered anything of ours, even a refusal (or the client started).
    last_heard: Instant,
    registered: bool,
    lost: bool,
    refused: Option<RefuseReason>,
    next_register: Instant,
    pending_connects: Vec<PeerName>,
    seen_sessions: VecDeque<u64>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
}

impl Client {
    /// A client whose first registration is due at `now`.
    pub fn new(config: ClientConfig, seed: Seed, now: Instant) -> Client {
        Client {
            tx: Transactions::new(config.retransmit, DEFAULT_MIN_RTO, seed),
            config,
            requests: Vec::new(),
            nonce: None,
            turn: None,
            candidates: Vec::new(),
            profile: NatProfile::UNKNOWN,
            reflexive: None,
            last_ok: now,
            last_heard: now,
            registered: false,
            lost: false,
            refused: None,
            next_register: now,
            pending_connects: Vec::new(),
            seen_sessions: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Our endpoint as the server last saw it.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.reflexive
    }

    /// True while the last registration succeeded less than a lifetime ago.
    /// When the server last answered anything of ours, even a refusal (or when the client started).
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    pub fn is_registered(&self) -> bool {
        self.registered && !self.lost
    }

    /// Candidates to report (at most [`MAX_CANDIDATES`]; more are cut). A change is registered at once.
    pub fn set_candidates(&mut self, now: Instant, mut candidates: Vec<Candidate>) {
        candidates.truncate(MAX_CANDIDATES);
        if candidates != self.candidates {
            self.candidates = candidates;
            self.next_register = self.next_register.min(now);
        }
    }

    /// The NAT profile to report. A change is registered at once.
    pub fn set_profile(&mut self, now: Instant, profile: NatProfile) {
        if profile != self.profile {
            self.profile = profile;
            self.next_register = self.next_register.min(now);
        }
    }

    /// Ask the server to introduce `peer`. Sent at once when registered, else as soon as we are.
    pub fn connect(&mut self, now: Instant, peer: &PeerName) {
        if self.is_registered() {
            self.start_connect(now, peer.clone(), 0);
            self.pump(now);
        } else if !self.pending_connects.contains(peer) {
            self.pending_connects.push(peer.clone());
        }
    }

    fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    fn spec(&self) -> Spec {
        Spec::new(self.config.local, self.config.server)
    }

    fn start_register(&mut self, now: Instant, challenges: u32) {
        // One registration at a time: a fresh one replaces a waiting one (its retransmissions would only
        // repeat stale content).
        let waiting: Vec<TxKey> =
            self.requests.iter().filter(|(_, r)| matches!(r, Request::Register { .. })).map(|(k, _)| *k).collect();
        for k in waiting {
            self.tx.remove(k);
            self.requests.retain(|(key, _)| *key != k);
        }
        let (name, key) = (self.config.name.clone(), self.config.key);
        let candidates = self.candidates.clone();
        let profile = self.profile;
        let spec = self.spec();
        let (nonce, auth) = (self.nonce.clone(), self.config.auth.clone());
        let started = self.tx.start(now, spec, REGISTER, |w| {
            let raw_id = w.raw_id();
            w.add(&Attribute::Username(name.as_str()))?;
            w.add_peer_key(&key)?;
            for c in &candidates {
                w.add_candidate(c, &raw_id)?;
            }
            w.add_profile(&profile)?;
            finish_request(w, nonce.as_deref(), &auth)
        });
        match started {
            Ok(k) => self.requests.push((k, Request::Register { challenges })),
            Err(e) => debug!(target: LOG, "registration not built: {e}"),
        }
    }

    fn start_connect(&mut self, now: Instant, peer: PeerName, challenges: u32) {
        let name = self.config.name.clone();
        let spec = self.spec();
        let (nonce, auth) = (self.nonce.clone(), self.config.auth.clone());
        let started = self.tx.start(now, spec, CONNECT, |w| {
            w.add(&Attribute::Username(name.as_str()))?;
            w.add_peer_name(&peer)?;
            finish_request(w, nonce.as_deref(), &auth)
        });
        match started {
            Ok(k) => self.requests.push((k, Request::Connect { peer, challenges })),
            Err(e) => debug!(target: LOG, "connect not built: {e}"),
        }
    }

    /// Send what is due and act on what ended, until nothing new starts (bounded: each round only starts
    /// retries of requests that ended in the round before, and those are capped by MAX_CHALLENGES).
    fn pump(&mut self, now: Instant) {
        for _ in 0..=MAX_CHALLENGES + 1 {
            self.tx.handle_timeout(now);
            if !self.drain(now) {
                break;
            }
        }
    }

    /// Act on ended transactions; true when a new request was started.
    fn drain(&mut self, now: Instant) -> bool {
        let mut started = false;
        while let Some(key) = self.tx.poll_completed() {
            let Some(pos) = self.requests.iter().position(|(k, _)| *k == key) else { continue };
            let (_, request) = self.requests.swap_remove(pos);
            let Some(outcome) = self.tx.remove(key) else { continue };
            let challenge = matches!(&outcome, Err(FailReason::ErrorResponse { code: Some(codes::STALE_NONCE), .. }));
            match request {
                Request::Register { challenges } if challenge && challenges < MAX_CHALLENGES => {
                    self.start_register(now, challenges + 1);
                    started = true;
                }
                Request::Connect { peer, challenges } if challenge && challenges < MAX_CHALLENGES => {
                    self.start_connect(now, peer, challenges + 1);
                    started = true;
                }
                Request::Register { .. } => started |= self.registered_outcome(now, outcome),
                Request::Connect { peer, .. } => started |= self.connect_outcome(now, peer, outcome),
            }
        }
        started
    }

    fn registered_outcome(&mut self, now: Instant, outcome: Result<Option<SocketAddr>, FailReason>) -> bool {
        match outcome {
            Ok(Some(reflexive)) => {
                self.last_ok = now;
                self.refused = None;
                let was = self.reflexive.replace(reflexive);
                if !self.registered || self.lost {
                    self.registered = true;
                    self.lost = false;
                    info!(target: LOG, "registered with {} as {reflexive}", self.config.server);
                    self.event(Event::Registered { reflexive });
                } else if let Some(old) = was.filter(|old| *old != reflexive) {
                    info!(target: LOG, "reflexive address changed: {old} -> {reflexive}");
                    self.event(Event::ReflexiveChanged { old, new: reflexive });
                }
                let pending = std::mem::take(&mut self.pending_connects);
                let any = !pending.is_empty();
                for peer in pending {
                    self.start_connect(now, peer, 0);
                }
                any
            }
            Ok(None) => false,
            Err(FailReason::ErrorResponse { code, reason, .. }) => {
                let why = match code {
                    Some(codes::UNAUTHORIZED) => RefuseReason::WrongSecret,
                    Some(codes::FORBIDDEN) => RefuseReason::NameTaken,
                    Some(codes::INSUFFICIENT_CAPACITY) => RefuseReason::ServerFull,
                    _ => RefuseReason::Other { code, reason },
                };
                if self.refused.as_ref() != Some(&why) {
                    info!(target: LOG, "registration refused: {why}");
                    self.refused = Some(why.clone());
                    self.event(Event::Refused(why));
                }
                false
            }
            Err(FailReason::Cancelled) => false,
            Err(reason) => {
                debug!(target: LOG, "registration failed: {reason}");
                false
            }
        }
    }

    fn connect_outcome(
        &mut self,
        now: Instant,
        peer: PeerName,
        outcome: Result<Option<SocketAddr>, FailReason>,
    ) -> bool {
        let reason = match outcome {
            Ok(_) | Err(FailReason::Cancelled) => return false,
            Err(FailReason::ErrorResponse { code: Some(codes::NOT_REGISTERED), .. }) => {
                // The server forgot us (a restart): connect once registered again, which we do now.
                if !self.pending_connects.contains(&peer) {
                    self.pending_connects.push(peer);
                }
                self.registered = false;
                self.next_register = now;
                return false;
            }
            Err(FailReason::ErrorResponse { code: Some(codes::UNKNOWN_PEER), .. }) => ConnectFailure::PeerNotRegistered,
            Err(FailReason::ErrorResponse { code, reason, .. }) => ConnectFailure::Refused { code, reason },
            Err(other) => ConnectFailure::Transaction(other),
        };
        info!(target: LOG, "connect to {peer} failed: {reason}");
        self.event(Event::ConnectFailed { peer, reason });
        false
    }

    fn on_answer(&mut self, now: Instant, input: Received, m: &Message<'_>, data: &[u8]) {
        if self.tx.find(m.transaction_id()).is_none() {
            return;
        }
        let code = m.error_code().map(|e| e.code);
        // Challenges and 401 cannot be signed by a server that does not share our key (or has not checked
        // it); every other answer must be.
        let unsigned_ok = m.class() == Class::Error && matches!(code, Some(codes::STALE_NONCE | codes::UNAUTHORIZED));
        if !unsigned_ok && m.check_integrity_sha256(self.config.auth.as_bytes()).is_err() {
            debug!(target: LOG, "dropped an unauthenticated answer from {}", input.source);
            return;
        }
        self.last_heard = now;
        if m.method() == REGISTER && m.class() == Class::Success {
            if let Some((user, password)) = wire::turn_credentials(m) {
                if self.turn.as_ref().is_none_or(|(u, p)| u != user || p != password) {
                    self.turn = Some((user.to_string(), password.to_string()));
                    self.event(Event::TurnCredentials { username: user.to_string(), password: password.to_string() });
                }
            }
        }
        if code == Some(codes::STALE_NONCE) {
            if let Some(n) = wire::nonce(m).filter(|n| !n.is_empty() && n.len() <= 128) {
                self.nonce = Some(n.to_vec());
            }
        }
        self.tx.handle_input(now, input, data, |m, _| {
            if m.method() == REGISTER {
                m.xor_mapped_address().map(Some).ok_or_else(|| "no XOR-MAPPED-ADDRESS".to_string())
            } else {
                Ok(None)
            }
        });
        self.pump(now);
    }

    fn on_push(&mut self, m: &Message<'_>) {
        if m.check_fingerprint() != Ok(true)
            || wire::username(m).ok().as_ref() != Some(&self.config.name)
            || m.check_integrity_sha256(self.config.auth.as_bytes()).is_err()
        {
            debug!(target: LOG, "dropped an unauthenticated push");
            return;
        }
        let unknown: Vec<u16> = wire::unknown_required(m).take(8).collect();
        if !unknown.is_empty() {
            return self.answer(m, Class::Error, |w| {
                w.add(&Attribute::ErrorCode(ErrorCode {
                    code: codes::UNKNOWN_ATTRIBUTE,
                    reason: codes::reason(codes::UNKNOWN_ATTRIBUTE),
                }))?;
                w.add_unknown_attributes(&unknown)
            });
        }
        let decoded = (|| {
            let reflexive = m.get(stun::attr::XOR_PEER_ADDRESS).ok().flatten();
            let Some(Attribute::XorPeerAddress(reflexive)) = reflexive else {
                return Err(wire::WireError::Missing("XOR-PEER-ADDRESS"));
            };
            Ok(Introduction {
                peer: wire::peer_name(m)?,
                key: wire::peer_key(m)?,
                reflexive,
                candidates: wire::candidates(m, MAX_CANDIDATES)?,
                profile: wire::profile(m)?,
                session: wire::session(m)?,
            })
        })();
        let intro = match decoded {
            Ok(i) => i,
            Err(e) => {
                debug!(target: LOG, "malformed push: {e}");
                return self.answer(m, Class::Error, |w| {
                    w.add(&Attribute::ErrorCode(ErrorCode {
                        code: codes::BAD_REQUEST,
                        reason: codes::reason(codes::BAD_REQUEST),
                    }))
                });
            }
        };
        self.answer(m, Class::Success, |_| Ok(()));
        // A retransmitted push (our answer was lost) is answered again but reported once.
        if self.seen_sessions.contains(&intro.session) {
            return;
        }
        if self.seen_sessions.len() == SEEN_SESSIONS {
            self.seen_sessions.pop_front();
        }
        self.seen_sessions.push_back(intro.session);
        info!(target: LOG, "introduced to {} at {} ({} candidates)", intro.peer, intro.reflexive, intro.candidates.len());
        self.event(Event::Introduced(intro));
    }

    fn answer<F>(&mut self, m: &Message<'_>, class: Class, add: F)
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), stun::Error>,
    {
        let mut buf = [0u8; MAX_MESSAGE];
        let built = (|| {
            let mut w = wire::writer(&mut buf, PUSH, class, m.transaction_id())?;
            add(&mut w)?;
            w.add_message_integrity_sha256(self.config.auth.as_bytes())?;
            w.add_fingerprint()?;
            Ok::<usize, stun::Error>(w.finish())
        })();
        if let Ok(n) = built {
            // One answer per PUSH received, which the server sends at most a few times per introduction.
            if self.out.len() < SEEN_SESSIONS {
                self.out.push_back((self.config.server, buf[..n].to_vec()));
            }
        }
    }
}

/// NONCE (when the server gave one), MESSAGE-INTEGRITY-SHA256 with our key, FINGERPRINT: the end of every
/// request.
fn finish_request(w: &mut MessageWriter<'_>, nonce: Option<&[u8]>, auth: &PeerAuthKey) -> Result<(), stun::Error> {
    if let Some(n) = nonce {
        w.add_raw(stun::attr::NONCE, n)?;
    }
    w.add_message_integrity_sha256(auth.as_bytes())?;
    w.add_fingerprint()
}

impl Engine for Client {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if input.local != self.config.local || input.source != self.config.server || !is_signal_message(data) {
            return false;
        }
        let Ok(m) = Message::parse(data) else { return true };
        match (m.class(), m.method()) {
            (Class::Request, PUSH) => self.on_push(&m),
            (Class::Success | Class::Error, REGISTER | CONNECT) => self.on_answer(now, input, &m, data),
            _ => {}
        }
        true
    }

    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        let hit = self.tx.handle_unreachable(local, dst);
        self.pump(now);
        hit
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_register {
            self.start_register(now, 0);
            self.next_register = now + self.config.keepalive;
        }
        self.pump(now);
        if self.registered && now.saturating_duration_since(self.last_ok) >= self.config.lifetime {
            // The server has forgotten us by now; the next success is a new registration.
            self.registered = false;
        }
        if !self.lost && now.saturating_duration_since(self.last_heard) >= self.config.lifetime {
            self.lost = true;
            info!(target: LOG, "no answer from {} for {:?}", self.config.server, self.config.lifetime);
            self.event(Event::ServerLost);
        }
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((dst, bytes)) = self.out.pop_front() {
            let Some(out) = buf.get_mut(..bytes.len()) else { continue };
            out.copy_from_slice(&bytes);
            return Some(Transmit { local: self.config.local, dst, len: bytes.len(), ttl: None });
        }
        self.tx.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_register;
        if let Some(x) = self.tx.poll_timeout() {
            t = t.min(x);
        }
        if !self.lost {
            t = t.min(self.last_heard + self.config.lifetime);
        }
        if self.registered {
            t = t.min(self.last_ok + self.config.lifetime);
        }
        Some(t)
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

//! The rendezvous server engine (docs/signal.md, "Server"): authenticates REGISTER and CONNECT requests,
//! keeps registrations in a [`Registry`], and on CONNECT pushes both peers each other's introduction in the
//! same instant, retransmitting each PUSH (RFC 8489 §6.2.1) until its peer answers.
//!
//! It handles only the rendezvous methods ([`is_signal_message`]); Binding requests on the same socket belong
//! to `crate::server::Responder`, and stund's dispatcher offers each datagram to both.

use super::auth::{NetworkSecret, NonceMint, PeerAuthKey};
use super::cluster::ClusterMessage;
use super::codes;
use super::registry::{RegisterOutcome, Registration, Registry, RegistryError};
use super::types::{Candidate, InstanceId, PeerName, MAX_CANDIDATES};
use super::wire::{self, is_signal_message, WriteSignal, CONNECT, PUSH, REGISTER};
use crate::net::{Engine, Received, Retransmit, Rng, Seed, Transmit, Transport, DEFAULT_MIN_RTO};
use crate::server::{RateLimitConfig, RateLimitError, RateLimiter};
use crate::stun::{self, Attribute, Class, ErrorCode, Message, MessageWriter};
use crate::transaction::{FailReason, Spec, Transactions, TxKey};
use log::{debug, info};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LOG: &str = "holepunch::signal::server";

/// Largest message the server writes (a PUSH with every candidate is about 600 bytes).
const MAX_MESSAGE: usize = 1280;
/// Answers waiting for `poll_transmit`, and events waiting for `poll_event`: bounded, so a driver that stops
/// draining cannot make the server grow; beyond it the newest are dropped and counted.
const MAX_QUEUED: usize = 4096;

/// Settings of the rendezvous server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub secret: NetworkSecret,
    /// How long a registration lives without a refresh (default 15 s: five 3 s keepalives).
    pub lifetime: Duration,
    /// Most registered peers (the in-memory registry's capacity is the driver's choice; this bounds the
    /// introduction table at a tenth of it, at least 64).
    pub capacity: usize,
    /// Length of a nonce time bucket; a nonce lives one to two of them (default 60 s).
    pub nonce_bucket: Duration,
    /// Repeated CONNECTs for the same pair within this window reuse the introduction (default 10 s).
    pub connect_window: Duration,
    /// Retransmission of PUSH requests (default RFC 8489 §6.2.1 with 5 sends, given up 15.5 s after the
    /// first: about the lifetime of the registration the push goes to).
    pub push_retransmit: Retransmit,
    /// Per-source limit on rendezvous requests (keyed like stund's Binding limit: IPv4 address or IPv6 /64).
    pub rate_limit: RateLimitConfig,
    /// How often expired registrations and introductions are swept.
    pub sweep_interval: Duration,
    /// When this server also relays (TURN with a REST shared secret): registered peers get time-limited TURN
    /// credentials in every REGISTER answer (docs/relay.md, "Credentials from the rendezvous").
    pub turn_grant: Option<TurnGrant>,
    /// This server is one instance of a cluster sharing its registrations (docs/signal.md, "Cluster"): every
    /// accepted REGISTER and every push owed by another instance comes out of [`Server::poll_cluster`].
    pub cluster: bool,
}

/// Time-limited TURN credentials for registered peers (the TURN REST scheme), the user part the peer's name.
#[derive(Clone)]
pub struct TurnGrant {
    pub secret: Vec<u8>,
    /// How long a granted username stays valid.
    pub validity: Duration,
    /// Unix seconds at `epoch` (engines take no wall clock: the driver gives one reading at start).
    pub unix_at_epoch: u64,
    pub epoch: Instant,
}

impl std::fmt::Debug for TurnGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TurnGrant(validity {:?}, secret hidden)", self.validity)
    }
}

#[cfg(test)]
mod grant_tests {
    use super::*;

    #[test]
    fn granted_credentials_are_rest_credentials_the_relay_accepts() {
        let epoch = Instant::now();
        let g = TurnGrant {
            secret: b"turn".to_vec(),
            validity: Duration::from_secs(3600),
            unix_at_epoch: 1_800_000_100,
            epoch,
        };
        let (user, pass) = g.credentials(epoch, "alice");
        assert_eq!(user, "1800007200:alice", "expiry rounded up to the hour, the peer's name as the user");
        // Stable between keepalives, renewed as time goes on.
        assert_eq!(g.credentials(epoch + Duration::from_secs(3), "alice").0, user);
        assert_ne!(g.credentials(epoch + Duration::from_secs(7200), "alice").0, user);
        let mut creds = crate::relay::Credentials::default();
        creds.set_secret(b"turn".to_vec());
        let (key, name) = creds.key(&user, "realm", 1_800_000_100).unwrap();
        assert_eq!(name, "alice");
        assert_eq!(key, crate::stun::integrity::long_term_key_md5(&user, "realm", &pass));
        assert!(!format!("{g:?}").contains("turn\""), "the secret is not printed");
    }
}

impl TurnGrant {
    /// The username and password for `name` at `now`, valid for `validity`, rounded up to a whole hour so
    /// the credentials stay the same from one keepalive to the next.
    pub fn credentials(&self, now: Instant, name: &str) -> (String, String) {
        let unix = self.unix_at_epoch + now.saturating_duration_since(self.epoch).as_secs();
        let expiry = (unix + self.validity.as_secs()).div_ceil(3600) * 3600;
        let username = format!("{expiry}:{name}");
        let password = crate::relay::rest_password(&self.secret, &username);
        (username, password)
    }
}

impl ServerConfig {
    pub fn new(secret: NetworkSecret) -> ServerConfig {
        ServerConfig {
            secret,
            lifetime: Duration::from_secs(15),
            capacity: 100_000,
            nonce_bucket: Duration::from_secs(60),
            connect_window: Duration::from_secs(10),
            push_retransmit: Retransmit { rc: 5, rm: 16, ..Retransmit::rfc8489() },
            rate_limit: RateLimitConfig { rate_per_sec: 20, burst: 40, slots: 16384 },
            sweep_interval: Duration::from_secs(1),
            turn_grant: None,
            cluster: false,
        }
    }

    fn max_sessions(&self) -> usize {
        (self.capacity / 10).max(64)
    }
}

/// Why a request was refused (an [`Event::Refused`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// MESSAGE-INTEGRITY-SHA256 missing or wrong: not a holder of the network secret.
    BadIntegrity,
    /// A required attribute missing or malformed.
    Malformed,
    /// The name is registered with another key.
    NameTaken,
    /// The registry or the introduction table is full.
    Full,
    /// CONNECT to a peer that is not registered.
    UnknownPeer(PeerName),
    /// CONNECT from a peer that is not registered.
    NotRegistered,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadIntegrity => f.write_str("wrong network secret (integrity check failed)"),
            Refusal::Malformed => f.write_str("malformed request"),
            Refusal::NameTaken => f.write_str("name registered with another key"),
            Refusal::Full => f.write_str("no room"),
            Refusal::UnknownPeer(p) => write!(f, "{p} is not registered"),
            Refusal::NotRegistered => f.write_str("asked to connect without being registered"),
        }
    }
}

/// What the server reports for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer registered for the first time or from a new endpoint (refreshes are counted in [`Stats`]).
    Registered { name: PeerName, endpoint: SocketAddr, moved_from: Option<SocketAddr> },
    /// A registration's lifetime ran out.
    Expired { name: PeerName },
    /// `from` asked for `to`: both were pushed the other's introduction.
    Introduced { from: PeerName, to: PeerName, session: u64 },
    /// A request was refused; `name` is its USERNAME when it had a valid one.
    Refused { source: SocketAddr, name: Option<PeerName>, reason: Refusal },
    /// A PUSH went unanswered (or was refused) by its peer.
    PushFailed { to: PeerName, session: u64, reason: FailReason },
    /// Another instance of the cluster asked this one to push `to` (registered here) the introduction of
    /// `about` ([`Server::introduce_remote`]).
    IntroducedRemotely { to: PeerName, about: PeerName, session: u64 },
}

/// What a cluster instance owes the others ([`Server::poll_cluster`]); the driver carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOut {
    /// A peer registered or refreshed here (`owner` `None`): store it for `lifetime` and tell every instance.
    Registered { registration: Registration, lifetime: Duration },
    /// Ask `owner`, where `to` registered, to push it `about`'s introduction: the push must leave from the
    /// socket `to` registered on, and its owner retransmits it and receives the answer.
    Introduce { owner: InstanceId, to: PeerName, about: Registration, session: u64 },
}

impl ClusterOut {
    /// The message the owner (or every instance) receives.
    pub fn message(&self) -> ClusterMessage {
        match self {
            ClusterOut::Registered { registration, lifetime } => {
                ClusterMessage::Registration { registration: registration.clone(), lifetime: *lifetime }
            }
            ClusterOut::Introduce { to, about, session, .. } => {
                ClusterMessage::Introduction { to: to.clone(), about: about.clone(), session: *session }
            }
        }
    }
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rendezvous requests received.
    pub requests: u64,
    /// Dropped by the per-source limit.
    pub rate_limited: u64,
    /// Dropped without an answer: malformed framing, no FINGERPRINT, or an error answer that would have been
    /// larger than the request.
    pub dropped: u64,
    /// Answered 401 (integrity failed).
    pub unauthenticated: u64,
    /// Answered 438 with a fresh nonce.
    pub challenged: u64,
    pub registrations: u64,
    pub refreshes: u64,
    pub introductions: u64,
    pub pushes_acked: u64,
    pub pushes_failed: u64,
    /// Answers, events or cluster messages dropped because the driver did not drain them.
    pub overflow: u64,
    /// Registrations learned from other cluster instances.
    pub remote_registrations: u64,
    /// Pushes owed by this instance that were asked for by another one.
    pub remote_introductions: u64,
    /// Such requests dropped: the peer is not (or no longer) registered here.
    pub remote_introductions_lost: u64,
}

struct PushMeta {
    to: PeerName,
    session: u64,
}

struct Session {
    id: u64,
    created: Instant,
    /// Both peers' endpoints when introduced (in the pair's order): a CONNECT after either moved is not a
    /// repeat, the peers need each other's new endpoints.
    endpoints: (SocketAddr, SocketAddr),
    /// A digest of both peers' registered candidates when introduced: a CONNECT after either registered new
    /// ones (a router port mapping that came later) is not a repeat either.
    offers: u64,
}

/// The digest [`Session::offers`] keeps (a hash, so a session stays small; a collision only makes a CONNECT
/// count as a repeat within the window).
fn offers_digest(first: &[Candidate], second: &[Candidate]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    first.hash(&mut h);
    second.hash(&mut h);
    h.finish()
}

struct Queued {
    local: SocketAddr,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

/// The rendezvous server (see the module docs).
pub struct Server<R: Registry> {
    config: ServerConfig,
    registry: R,
    mint: NonceMint,
    limiter: RateLimiter,
    rng: Rng,
    pushes: Transactions<()>,
    push_meta: HashMap<TxKey, PushMeta>,
    sessions: HashMap<(PeerName, PeerName), Session>,
    out: VecDeque<Queued>,
    events: VecDeque<Event>,
    cluster_out: VecDeque<ClusterOut>,
    next_sweep: Instant,
    stats: Stats,
}

impl<R: Registry> Server<R> {
    /// A server starting at `now`; `seed` feeds push transaction ids, session ids, the nonce key and the rate
    /// limiter's hash key.
    pub fn new(config: ServerConfig, registry: R, seed: Seed, now: Instant) -> Result<Self, RateLimitError> {
        let mut rng = Rng::from_seed(seed);
        let limiter = RateLimiter::new(config.rate_limit, rng.next_u64(), now)?;
        let mint = NonceMint::new(rng.bytes(), now, config.nonce_bucket);
        let pushes = Transactions::new(config.push_retransmit, DEFAULT_MIN_RTO, rng.fork());
        Ok(Server {
            next_sweep: now + config.sweep_interval,
            config,
            registry,
            mint,
            limiter,
            rng,
            pushes,
            push_meta: HashMap::new(),
            sessions: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            cluster_out: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    pub fn registry(&self) -> &R {
        &self.registry
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Introductions remembered for the idempotency window, and pushes in flight.
    pub fn introductions(&self) -> (usize, usize) {
        (self.sessions.len(), self.push_meta.len())
    }

    /// The next message for the other cluster instances (only with [`ServerConfig::cluster`]). Drain it
    /// before `poll_transmit` after a CONNECT: the owner's push then starts as close as possible to this
    /// server's own.
    pub fn poll_cluster(&mut self) -> Option<ClusterOut> {
        self.cluster_out.pop_front()
    }

    fn cluster(&mut self, c: ClusterOut) {
        if !self.config.cluster {
            return;
        }
        if self.cluster_out.len() < MAX_QUEUED {
            self.cluster_out.push_back(c);
        } else {
            self.stats.overflow += 1;
        }
    }

    /// A registration another instance announced (`reg.owner` is that instance), alive for `lifetime` from
    /// `now`. It replaces whatever this replica held for the name, except:
    /// - a live registration with another key: the name stays pinned to its key across the cluster
    ///   ([`RegistryError::KeyMismatch`]);
    /// - a registration made here and refreshed within the last third of its lifetime: the peer is registered
    ///   at both instances (it still talks to this one), and pushing it from here is as good and needs no
    ///   hop. Kept (`Ok(Refreshed)`), so a peer registered everywhere does not flip between owners at every
    ///   keepalive; a peer that moved away stops refreshing here, and the next announcement takes over.
    pub fn apply_remote(
        &mut self,
        now: Instant,
        reg: &Registration,
        lifetime: Duration,
    ) -> Result<RegisterOutcome, RegistryError> {
        debug_assert!(reg.owner.is_some(), "a remote registration names its owner");
        let fresh_here = self.config.lifetime - self.config.lifetime / 3;
        if let Some(ours) = self.registry.lookup(now, &reg.name).filter(|r| r.owner.is_none() && r.key == reg.key) {
            if self.registry.remaining(now, &ours.name).is_some_and(|left| left > fresh_here) {
                return Ok(RegisterOutcome::Refreshed);
            }
        }
        let mut result = self.registry.register(now, lifetime, reg);
        if result == Err(RegistryError::Full) {
            self.sweep_registry(now);
            result = self.registry.register(now, lifetime, reg);
        }
        if result.is_ok() {
            self.stats.remote_registrations += 1;
        }
        result
    }

    /// Another instance asks this one to push `to` the introduction of `about` (its CONNECT went there).
    /// Starts the PUSH as a local CONNECT would, from the socket `to` registered on; false when `to` is not
    /// registered here. A repeat of a push still under way is ignored.
    pub fn introduce_remote(&mut self, now: Instant, to: &PeerName, about: &Registration, session: u64) -> bool {
        let Some(target) = self.registry.lookup(now, to).filter(|r| r.owner.is_none()) else {
            self.stats.remote_introductions_lost += 1;
            debug!(target: LOG, "asked to push {to} about {}, not registered here", about.name);
            return false;
        };
        if !self.push_meta.values().any(|p| p.session == session && p.to == *to) {
            self.push(now, &target, about, session);
            self.pushes.handle_timeout(now);
            self.drain_pushes();
        }
        self.stats.remote_introductions += 1;
        info!(target: LOG, "pushing {to} the introduction of {} (session {session:016x}, asked by {})",
            about.name, about.owner.as_ref().map_or("this instance", |o| o.as_str()));
        self.event(Event::IntroducedRemotely { to: to.clone(), about: about.name.clone(), session });
        true
    }

    /// Push `to` the introduction of `about`: from here when `to` registered here, else through its owner.
    fn deliver(&mut self, now: Instant, to: &Registration, about: &Registration, session: u64) {
        match &to.owner {
            None => self.push(now, to, about, session),
            Some(owner) => self.cluster(ClusterOut::Introduce {
                owner: owner.clone(),
                to: to.name.clone(),
                about: about.clone(),
                session,
            }),
        }
    }

    fn event(&mut self, e: Event) {
        if self.events.len() < MAX_QUEUED {
            self.events.push_back(e);
        } else {
            self.stats.overflow += 1;
        }
    }

    /// Queue an answer to `m`. `sign` adds MESSAGE-INTEGRITY-SHA256; `limit` drops the answer when it would
    /// be longer (the rule for answers to requests that did not prove their source).
    fn answer<F>(
        &mut self,
        input: Received,
        m: &Message<'_>,
        class: Class,
        sign: Option<&PeerAuthKey>,
        limit: Option<usize>,
        add: F,
    ) where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), stun::Error>,
    {
        let mut buf = [0u8; MAX_MESSAGE];
        let built = (|| {
            let mut w = wire::writer(&mut buf, m.method(), class, m.transaction_id())?;
            add(&mut w)?;
            if let Some(k) = sign {
                w.add_message_integrity_sha256(k.as_bytes())?;
            }
            w.add_fingerprint()?;
            Ok::<usize, stun::Error>(w.finish())
        })();
        let Ok(len) = built else {
            self.stats.dropped += 1;
            return;
        };
        if limit.is_some_and(|max| len > max) || self.out.len() >= MAX_QUEUED {
            if self.out.len() >= MAX_QUEUED {
                self.stats.overflow += 1;
            } else {
                self.stats.dropped += 1;
            }
            return;
        }
        self.out.push_back(Queued { local: input.local, dst: input.source, bytes: buf[..len].to_vec() });
    }

    fn error(&mut self, input: Received, m: &Message<'_>, code: u16, sign: Option<&PeerAuthKey>) {
        let limit = if sign.is_none() { Some(m.as_bytes().len()) } else { None };
        self.answer(input, m, Class::Error, sign, limit, |w| {
            w.add(&Attribute::ErrorCode(ErrorCode { code, reason: codes::reason(code) }))
        });
    }

    fn refuse(
        &mut self,
        input: Received,
        m: &Message<'_>,
        name: &PeerName,
        k: &PeerAuthKey,
        code: u16,
        reason: Refusal,
    ) {
        debug!(target: LOG, "{} ({name}): {code} {reason}", input.source);
        self.error(input, m, code, Some(k));
        self.event(Event::Refused { source: input.source, name: Some(name.clone()), reason });
    }

    fn on_request(&mut self, now: Instant, input: Received, m: &Message<'_>) {
        self.stats.requests += 1;
        if !self.limiter.allow(now, input.source.ip()) {
            self.stats.rate_limited += 1;
            return;
        }
        if m.check_fingerprint() != Ok(true) {
            self.stats.dropped += 1;
            return;
        }
        let Ok(name) = wire::username(m) else {
            self.error(input, m, codes::BAD_REQUEST, None);
            self.event(Event::Refused { source: input.source, name: None, reason: Refusal::Malformed });
            return;
        };
        let k = self.config.secret.peer_key(&name);
        if m.check_integrity_sha256(k.as_bytes()).is_err() {
            self.stats.unauthenticated += 1;
            self.error(input, m, codes::UNAUTHORIZED, None);
            self.event(Event::Refused { source: input.source, name: Some(name), reason: Refusal::BadIntegrity });
            return;
        }
        if !wire::nonce(m).is_some_and(|n| self.mint.check(now, input.source, n)) {
            // The challenge is unsigned on purpose: a replay from another source gets it too, and it must stay
            // no larger than the request whatever the source.
            self.stats.challenged += 1;
            let nonce = self.mint.issue(now, input.source);
            let limit = Some(m.as_bytes().len());
            self.answer(input, m, Class::Error, None, limit, |w| {
                w.add(&Attribute::ErrorCode(ErrorCode {
                    code: codes::STALE_NONCE,
                    reason: codes::reason(codes::STALE_NONCE),
                }))?;
                w.add_raw(stun::attr::NONCE, &nonce)
            });
            return;
        }
        let unknown: Vec<u16> = wire::unknown_required(m).take(8).collect();
        if !unknown.is_empty() {
            self.answer(input, m, Class::Error, Some(&k), None, |w| {
                w.add(&Attribute::ErrorCode(ErrorCode {
                    code: codes::UNKNOWN_ATTRIBUTE,
                    reason: codes::reason(codes::UNKNOWN_ATTRIBUTE),
                }))?;
                w.add_unknown_attributes(&unknown)
            });
            return;
        }
        match m.method() {
            REGISTER => self.on_register(now, input, m, name, k),
            CONNECT => self.on_connect(now, input, m, name, k),
            _ => self.stats.dropped += 1,
        }
    }

    fn on_register(&mut self, now: Instant, input: Received, m: &Message<'_>, name: PeerName, k: PeerAuthKey) {
        let parsed = (|| {
            Ok::<_, wire::WireError>((wire::peer_key(m)?, wire::candidates(m, MAX_CANDIDATES)?, wire::profile(m)?))
        })();
        let Ok((key, candidates, profile)) = parsed else {
            return self.refuse(input, m, &name, &k, codes::BAD_REQUEST, Refusal::Malformed);
        };
        let reg = Registration {
            name: name.clone(),
            key,
            endpoint: input.source,
            local: input.local,
            candidates,
            profile,
            owner: None,
        };
        let mut result = self.registry.register(now, self.config.lifetime, &reg);
        if result == Err(RegistryError::Full) {
            // Expired entries may still hold the room: sweep now rather than at the next tick.
            self.sweep_registry(now);
            result = self.registry.register(now, self.config.lifetime, &reg);
        }
        match result {
            Err(RegistryError::KeyMismatch) => self.refuse(input, m, &name, &k, codes::FORBIDDEN, Refusal::NameTaken),
            Err(RegistryError::Full) => self.refuse(input, m, &name, &k, codes::INSUFFICIENT_CAPACITY, Refusal::Full),
            Ok(outcome) => {
                let lifetime = self.config.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
                let turn = self.config.turn_grant.as_ref().map(|g| g.credentials(now, name.as_str()));
                self.cluster(ClusterOut::Registered { registration: reg, lifetime: self.config.lifetime });
                self.answer(input, m, Class::Success, Some(&k), None, |w| {
                    w.add(&Attribute::XorMappedAddress(input.source))?;
                    w.add(&Attribute::Lifetime(lifetime))?;
                    if let Some((user, password)) = &turn {
                        w.add_raw(wire::TURN_USERNAME, user.as_bytes())?;
                        w.add_raw(wire::TURN_PASSWORD, password.as_bytes())?;
                    }
                    Ok(())
                });
                let moved_from = match outcome {
                    RegisterOutcome::Refreshed => {
                        self.stats.refreshes += 1;
                        return;
                    }
                    RegisterOutcome::New => None,
                    RegisterOutcome::Moved { from } => Some(from),
                };
                self.stats.registrations += 1;
                info!(target: LOG, "{name} registered from {}{}", input.source,
                    moved_from.map(|f| format!(" (was {f})")).unwrap_or_default());
                self.event(Event::Registered { name, endpoint: input.source, moved_from });
            }
        }
    }

    fn on_connect(&mut self, now: Instant, input: Received, m: &Message<'_>, name: PeerName, k: PeerAuthKey) {
        let Ok(target) = wire::peer_name(m) else {
            return self.refuse(input, m, &name, &k, codes::BAD_REQUEST, Refusal::Malformed);
        };
        if target == name {
            return self.refuse(input, m, &name, &k, codes::BAD_REQUEST, Refusal::Malformed);
        }
        let Some(me) = self.registry.lookup(now, &name) else {
            return self.refuse(input, m, &name, &k, codes::NOT_REGISTERED, Refusal::NotRegistered);
        };
        let Some(other) = self.registry.lookup(now, &target) else {
            return self.refuse(input, m, &name, &k, codes::UNKNOWN_PEER, Refusal::UnknownPeer(target));
        };
        let pair = if name < target { (name.clone(), target.clone()) } else { (target.clone(), name.clone()) };
        let window = self.config.connect_window;
        let endpoints = if name < target { (me.endpoint, other.endpoint) } else { (other.endpoint, me.endpoint) };
        let offers = if name < target {
            offers_digest(&me.candidates, &other.candidates)
        } else {
            offers_digest(&other.candidates, &me.candidates)
        };
        let fresh = self.sessions.get(&pair).filter(|s| {
            now.saturating_duration_since(s.created) < window && s.endpoints == endpoints && s.offers == offers
        });
        if let Some(s) = fresh {
            let id = s.id;
            if self.push_meta.values().any(|p| p.session == id) {
                // A retransmitted or repeated CONNECT: the pushes of this introduction are still under way.
                debug!(target: LOG, "{name} -> {target}: session {id:016x} reused, pushes under way");
            } else {
                // The pushes ended (acked or given up). Push the same session again: a peer that saw it ignores
                // it (clients report a session once), a peer that restarted since learns it.
                debug!(target: LOG, "{name} -> {target}: session {id:016x} pushed again");
                self.deliver(now, &me, &other, id);
                self.deliver(now, &other, &me, id);
                self.pushes.handle_timeout(now);
                self.drain_pushes();
            }
        } else {
            if self.sessions.len() >= self.config.max_sessions() {
                self.sweep_sessions(now);
            }
            if self.sessions.len() >= self.config.max_sessions()
                || self.push_meta.len() + 2 > 2 * self.config.max_sessions()
            {
                return self.refuse(input, m, &name, &k, codes::INSUFFICIENT_CAPACITY, Refusal::Full);
            }
            let id = self.rng.next_u64();
            self.deliver(now, &me, &other, id);
            self.deliver(now, &other, &me, id);
            self.pushes.handle_timeout(now);
            self.drain_pushes();
            self.sessions.insert(pair, Session { id, created: now, endpoints, offers });
            self.stats.introductions += 1;
            info!(target: LOG, "introduced {name} and {target} (session {id:016x})");
            self.event(Event::Introduced { from: name, to: target, session: id });
        }
        self.answer(input, m, Class::Success, Some(&k), None, |_| Ok(()));
    }

    /// Start a PUSH to `to` carrying `about`'s introduction.
    fn push(&mut self, now: Instant, to: &Registration, about: &Registration, session: u64) {
        let k = self.config.secret.peer_key(&to.name);
        let started = self.pushes.start(now, Spec::new(to.local, to.endpoint), PUSH, |w| {
            let raw_id = w.raw_id();
            w.add(&Attribute::Username(to.name.as_str()))?;
            w.add_peer_name(&about.name)?;
            w.add_peer_key(&about.key)?;
            w.add(&Attribute::XorPeerAddress(about.endpoint))?;
            for c in &about.candidates {
                w.add_candidate(c, &raw_id)?;
            }
            w.add_profile(&about.profile)?;
            w.add_session(session)?;
            w.add_message_integrity_sha256(k.as_bytes())?;
            w.add_fingerprint()
        });
        match started {
            Ok(key) => {
                self.push_meta.insert(key, PushMeta { to: to.name.clone(), session });
            }
            Err(e) => debug!(target: LOG, "push to {} not built: {e}", to.name),
        }
    }

    fn on_push_answer(&mut self, now: Instant, input: Received, m: &Message<'_>, data: &[u8]) {
        let Some(key) = self.pushes.find(m.transaction_id()) else { return };
        let Some(meta) = self.push_meta.get(&key) else { return };
        let k = self.config.secret.peer_key(&meta.to);
        if m.check_integrity_sha256(k.as_bytes()).is_err() {
            debug!(target: LOG, "unauthenticated answer to a push from {}", input.source);
            return;
        }
        self.pushes.handle_input(now, input, data, |_, _| Ok(()));
        self.drain_pushes();
    }

    fn drain_pushes(&mut self) {
        while let Some(key) = self.pushes.poll_completed() {
            let outcome = self.pushes.remove(key);
            let Some(meta) = self.push_meta.remove(&key) else { continue };
            match outcome {
                Some(Ok(())) => self.stats.pushes_acked += 1,
                Some(Err(reason)) => {
                    self.stats.pushes_failed += 1;
                    info!(target: LOG, "push to {} (session {:016x}) failed: {reason}", meta.to, meta.session);
                    self.event(Event::PushFailed { to: meta.to, session: meta.session, reason });
                }
                None => {}
            }
        }
    }

    fn sweep_registry(&mut self, now: Instant) {
        let mut gone = Vec::new();
        // Other instances' registrations expire in this replica as they do at their owner, without an event.
        self.registry.expire(now, &mut |name, local| {
            if local {
                gone.push(name)
            }
        });
        for name in gone {
            debug!(target: LOG, "{name} expired");
            self.event(Event::Expired { name });
        }
    }

    fn sweep_sessions(&mut self, now: Instant) {
        let window = self.config.connect_window;
        self.sessions.retain(|_, s| now.saturating_duration_since(s.created) < window);
    }
}

impl<R: Registry> Engine for Server<R> {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if input.transport != Transport::Udp || !is_signal_message(data) {
            return false;
        }
        let Ok(m) = Message::parse(data) else {
            self.stats.dropped += 1;
            return true;
        };
        match (m.class(), m.method()) {
            (Class::Request, REGISTER | CONNECT) => self.on_request(now, input, &m),
            (Class::Success | Class::Error, PUSH) => self.on_push_answer(now, input, &m, data),
            _ => self.stats.dropped += 1,
        }
        true
    }

    fn handle_unreachable(&mut self, _now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        let hit = self.pushes.handle_unreachable(local, dst);
        self.drain_pushes();
        hit
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.pushes.handle_timeout(now);
        self.drain_pushes();
        if now >= self.next_sweep {
            self.sweep_registry(now);
            self.sweep_sessions(now);
            self.next_sweep = now + self.config.sweep_interval;
        }
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(q) = self.out.pop_front() {
            let Some(dst) = buf.get_mut(..q.bytes.len()) else { continue };
            dst.copy_from_slice(&q.bytes);
            return Some(Transmit { local: q.local, dst: q.dst, len: q.bytes.len(), ttl: None });
        }
        self.pushes.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.pushes.poll_timeout().map_or(self.next_sweep, |t| t.min(self.next_sweep)))
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

//! The punch agent: one per punchd, punching towards every configured peer the rendezvous introduces, on the
//! one engine contract ([`Engine`]); docs/punchd.md, "Punching", explains the choices.
//!
//! Per peer: candidate pairs checked in order (LAN, port-mapped, reflexive, predicted), one new check per
//! pacing interval, each retransmitted on a short RFC 8489 §6.2.1 schedule; checks that arrive are answered
//! and trigger a check back (RFC 8445 §7.3.1.4), from an unknown source they add a peer-reflexive pair; the
//! first verified round trip opens the path; better pairs keep being checked and win with hysteresis;
//! keepalive checks on the path every interval; a path silent for `dead_after` intervals dies and the same
//! candidates are punched again after a backoff; birthday probing for random symmetric NATs.

use super::auth;
use super::birthday::{Birthday, ANSWER_WAIT};
use super::event::{DeathReason, Event, RelayReason, SwitchReason};
use super::pair::{Pair, PairState, PathKind, RemoteKind, TxRef};
use super::peer::{remote_addresses, Peer, PeerStatus, Phase};
use super::predict::{birthday_role, predict_with, BirthdayParams, BirthdayRole, Prediction};
use crate::identity::{PublicKey, SecretKey};
use crate::net::{Engine, Received, Retransmit, Rng, RttEstimate, Seed, Transmit};
use crate::signal::{Candidate, CandidateKind, Introduction, NatProfile, PeerName};
use crate::stun::{self, Class, Message, MessageType, MessageWriter, Method};
use crate::transaction::{Handled, Spec, Transactions, TxKey};
use log::{debug, info, warn};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;

const LOG: &str = "holepunch::punch";

/// Answers waiting to be sent; more are dropped (each answers one verified check, so only a peer flooding
/// us could fill it).
const MAX_ANSWERS: usize = 256;
/// Peer-reflexive pairs per peer: a replayed check from spoofed sources cannot make us probe more places.
const MAX_PEER_REFLEXIVE: usize = 8;
/// A lower round trip must also be this much lower to move the path (with less than half the old one).
const RTT_MARGIN: Duration = Duration::from_millis(10);

/// What the agent needs to know.
#[derive(Debug)]
pub struct AgentConfig {
    /// The punching sockets (one per address family; the first is the main one). Every check leaves from
    /// one of these, so the NAT mappings are the ones the rendezvous saw.
    pub locals: Vec<SocketAddr>,
    pub name: PeerName,
    pub key: SecretKey,
    /// Keepalive checks on the path (docs/architecture.md, "Numbers": 3 s).
    pub keepalive: Duration,
    /// A path with no verified round trip for this many keepalive intervals is dead.
    pub dead_after: u32,
    /// One new pair check per peer per `pace`.
    pub pace: Duration,
    /// Retransmission of each check (short: both sides punch at once and a lost first check is the rule).
    pub check_retransmit: Retransmit,
    /// Floor of the RTO learned per peer address.
    pub min_rto: Duration,
    /// Most candidate pairs per peer (peer-reflexive ones come on top, at most 8).
    pub max_pairs: usize,
    /// Predicted ports tried after a sequential NAT's reflexive port.
    pub prediction_window: u16,
    pub birthday: BirthdayParams,
    /// Wait before the first re-punch after a failure or a dead path; doubles per failure up to
    /// `max_backoff`.
    pub repunch_backoff: Duration,
    pub max_backoff: Duration,
    /// Failed attempts in a row after which the agent stops until a new introduction or reflexive change.
    pub repunch_limit: u32,
    /// On a relay path, how often the direct pairs are checked again.
    pub relay_upgrade: Duration,
    /// How long a verified relay pair waits for a direct pair to answer before it carries traffic (unless
    /// the prediction says a relay is needed, or every direct check has ended).
    pub relay_deadline: Duration,
    /// The largest datagram the path must carry (the tunnel's MTU + 32), probed once per new path with a
    /// padded check; `None`: not probed (docs/tunnel.md, "MTU").
    pub mtu_probe: Option<u16>,
    /// The IP TTL of the primer each punch attempt sends first on every pair through the peer's NAT: it
    /// opens our NAT's mapping and dies before the peer's router, so a router that keeps state for an
    /// unsolicited check (a permissive one) finds our mapping in place when the peer's check arrives
    /// (docs/punchd.md, "Permissive routers"). `None`: no primers.
    pub primer_ttl: Option<u8>,
    /// How long the first real check waits after the primers (longer than the gap between the two peers'
    /// pushes from the rendezvous, so both primers are out before either side's first check arrives).
    pub primer_lead: Duration,
}

/// The primer's default TTL: past our home router (and the next hop), short of any router across the
/// internet.
pub const DEFAULT_PRIMER_TTL: u8 = 2;

/// The datagram of the smallest tunnel MTU (1280, RFC 8200 §5) plus WireGuard's 32 bytes: probed after a
/// failed full-size probe, to tell "lower the MTU" from "the path loses large datagrams anyway".
pub const MIN_MTU_PROBE: u16 = 1280 + 32;

impl AgentConfig {
    /// Defaults for punching socket `local`.
    pub fn new(local: SocketAddr, name: PeerName, key: SecretKey) -> AgentConfig {
        AgentConfig {
            locals: vec![local],
            name,
            key,
            keepalive: Duration::from_secs(3),
            dead_after: 3,
            pace: Duration::from_millis(20),
            // Sends at 0, 100, 300, 700, 1200, 1700, 2200 ms; gives up at 2.6 s, within one keepalive interval.
            check_retransmit: Retransmit {
                rto: Duration::from_millis(100),
                rc: 7,
                rm: 4,
                max_interval: Duration::from_millis(500),
            },
            min_rto: Duration::from_millis(50),
            max_pairs: 32,
            prediction_window: 8,
            birthday: BirthdayParams::DEFAULT,
            repunch_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
            repunch_limit: 8,
            mtu_probe: None,
            primer_ttl: Some(DEFAULT_PRIMER_TTL),
            primer_lead: Duration::from_millis(50),
            relay_deadline: Duration::from_secs(3),
            relay_upgrade: Duration::from_secs(10),
        }
    }
}

/// Why a peer or an introduction was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("peer {0} is not configured")]
    Unknown(PeerName),
    #[error("peer {0} is configured twice")]
    Duplicate(PeerName),
    #[error("the public key of peer {0} is a low-order point: no secret can be agreed with it")]
    WeakKey(PeerName),
    #[error("peer {0} has our own public key")]
    OwnKey(PeerName),
    #[error("the introduction of {peer} carries key {got}, but {want} is configured for it")]
    KeyMismatch { peer: PeerName, got: String, want: String },
}

/// What a transaction is for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    Check(u32),
    Keepalive(u32),
    /// An easy-side birthday probe (no pair until answered).
    Probe,
    /// A padded check of `size` bytes on the path's pair.
    Mtu {
        pair: u32,
        size: u16,
    },
}

#[derive(Clone, Copy, Debug)]
struct Owner {
    peer: usize,
    purpose: Purpose,
    local: SocketAddr,
    remote: SocketAddr,
    started: Instant,
}

/// A transaction table and who owns each transaction.
#[derive(Debug)]
struct Table {
    txs: Transactions<Option<SocketAddr>>,
    owners: BTreeMap<TxKey, Owner>,
}

impl Table {
    fn new(schedule: Retransmit, min_rto: Duration, seed: Seed) -> Table {
        Table { txs: Transactions::new(schedule, min_rto, seed), owners: BTreeMap::new() }
    }

    fn cancel_peer(&mut self, peer: usize, keep: Option<TxKey>) {
        let keys: Vec<TxKey> =
            self.owners.iter().filter(|(k, o)| o.peer == peer && Some(**k) != keep).map(|(k, _)| *k).collect();
        for k in keys {
            self.owners.remove(&k);
            self.txs.remove(k);
        }
    }
}

/// The engine (see the module docs).
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    my_id: String,
    local_candidates: Vec<Candidate>,
    local_profile: NatProfile,
    peers: Vec<Peer>,
    checks: Table,
    probes: Table,
    answers: VecDeque<(Transmit, Vec<u8>)>,
    events: VecDeque<Event>,
    rng: Rng,
    next_pair: u32,
}

impl Agent {
    pub fn new(config: AgentConfig, seed: Seed) -> Agent {
        let mut rng = Rng::from_seed(seed);
        let probe_schedule = Retransmit { rto: ANSWER_WAIT, rc: 1, rm: 1, max_interval: Duration::MAX };
        Agent {
            my_id: auth::key_id(&config.key.public()),
            checks: Table::new(config.check_retransmit, config.min_rto, rng.fork()),
            // One send, one wait; an RTO floor equal to the wait keeps the wait fixed.
            probes: Table::new(probe_schedule, ANSWER_WAIT, rng.fork()),
            config,
            local_candidates: Vec::new(),
            local_profile: NatProfile::UNKNOWN,
            peers: Vec::new(),
            answers: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            next_pair: 0,
        }
    }

    /// Accept `name` with key `key`: only configured peers' checks are answered and only their
    /// introductions are punched.
    pub fn add_peer(&mut self, name: PeerName, key: PublicKey) -> Result<(), PeerError> {
        if self.peers.iter().any(|p| p.name == name || p.key == key) {
            return Err(PeerError::Duplicate(name));
        }
        if key == self.config.key.public() {
            return Err(PeerError::OwnKey(name));
        }
        let Some(probe_key) = auth::probe_key(&self.config.key, &key) else { return Err(PeerError::WeakKey(name)) };
        self.peers.push(Peer::new(name, key, probe_key));
        Ok(())
    }

    /// What we report to the rendezvous (the node's business); the agent uses the reflexive one to tell a
    /// peer behind the same public address.
    pub fn set_local_candidates(&mut self, candidates: Vec<Candidate>) {
        self.local_candidates = candidates;
    }

    /// Our NAT's behaviour (from the diagnosis), for the prediction.
    pub fn set_local_profile(&mut self, profile: NatProfile) {
        self.local_profile = profile;
    }

    /// The server pushed `intro`: start punching now (the peer got ours in the same instant). A repeated
    /// push of the session in force changes nothing; a new session punches its candidates (an open path
    /// stays in use until a better pair answers or it dies).
    pub fn introduce(&mut self, now: Instant, intro: Introduction) -> Result<(), PeerError> {
        let idx = self.peer_index(&intro.peer).ok_or_else(|| PeerError::Unknown(intro.peer.clone()))?;
        let peer = &mut self.peers[idx];
        if intro.key != peer.key {
            // A rendezvous that swaps keys gets nowhere: checks are keyed by the configured key.
            warn!(target: LOG, "{}: introduction with key {} refused, {} is configured", peer.name, intro.key.short(), peer.key.short());
            return Err(PeerError::KeyMismatch {
                peer: peer.name.clone(),
                got: intro.key.to_base64(),
                want: peer.key.to_base64(),
            });
        }
        let same = peer.intro.as_ref().is_some_and(|i| *i == intro);
        if same && peer.phase != Phase::Idle {
            debug!(target: LOG, "{}: introduction {} again, ignored", peer.name, intro.session);
            return Ok(());
        }
        info!(target: LOG, "{}: introduced (session {}), {} candidates, public {}", peer.name, intro.session, intro.candidates.len(), intro.reflexive);
        // A path to an address the new introduction no longer lists is stale: the peer moved. Check it at
        // once, and let the first new pair that answers take over.
        let window = self.config.prediction_window;
        if let Some(path) = peer.path_pair() {
            if !remote_addresses(&intro, window).iter().any(|(a, _)| *a == path.remote) {
                peer.stale = true;
                peer.suspect = true;
                peer.next_keepalive = Some(now);
            }
        }
        peer.intro = Some(intro);
        peer.failures = 0;
        peer.prediction = None;
        self.start_punch(now, idx);
        self.tick(now, idx);
        self.settle(now);
        Ok(())
    }

    /// Our public endpoint moved (the keeper saw a new reflexive address): every peer's path may be broken
    /// and the peers only know the old endpoint, so punch again at once (the node also asks the rendezvous to
    /// introduce us again).
    pub fn local_reflexive_changed(&mut self, now: Instant, new: SocketAddr) {
        self.local_candidates.retain(|c| c.kind != CandidateKind::Reflexive);
        self.local_candidates.push(Candidate { kind: CandidateKind::Reflexive, addr: new });
        for idx in 0..self.peers.len() {
            if self.peers[idx].intro.is_some() {
                info!(target: LOG, "{}: our public endpoint moved to {new}: punching again", self.peers[idx].name);
                self.peers[idx].failures = 0;
                self.start_punch(now, idx);
                // Check the path at once, and let one unanswered keepalive end it: with our mapping gone, the
                // peer's filter most likely drops us already.
                self.peers[idx].next_keepalive = Some(now);
                self.peers[idx].suspect = self.peers[idx].path.is_some();
                self.tick(now, idx);
            }
        }
        self.settle(now);
    }

    /// Re-check every open path now (a keepalive at once; one unanswered keepalive ends the path): the node
    /// calls this after an idle period or a clock jump (a suspended host, a wall clock that moved), when NAT
    /// mappings may have expired while no timer ran.
    pub fn recheck(&mut self, now: Instant) {
        for idx in 0..self.peers.len() {
            if self.peers[idx].path.is_some() {
                self.peers[idx].next_keepalive = Some(now);
                self.peers[idx].suspect = true;
                // The silence was ours, not the peer's: do not count it against the path.
                self.peers[idx].last_ok = Some(now);
                self.tick(now, idx);
            }
        }
        self.settle(now);
    }

    /// Our relayed address on a TURN server (`None` when the allocation is gone): checks arriving on it and
    /// answers leaving from it are relayed (the node wraps and unwraps them), and pairs on it are relay
    /// paths.
    pub fn set_relayed(&mut self, relayed: Option<SocketAddr>) {
        for p in &mut self.peers {
            p.relayed = relayed;
        }
    }

    /// The extra sockets the driver opened after [`Event::OpenSockets`] (at most the count asked; the rest
    /// are ignored and should be closed by the driver).
    pub fn add_sockets(&mut self, now: Instant, peer: &PeerName, sockets: &[SocketAddr]) -> Result<(), PeerError> {
        let idx = self.peer_index(peer).ok_or_else(|| PeerError::Unknown(peer.clone()))?;
        if let Some(b) = self.peers[idx].birthday.as_mut().filter(|b| b.role == BirthdayRole::Hard) {
            let room = usize::from(b.params.sockets).saturating_sub(b.sockets.len());
            let new: Vec<SocketAddr> = sockets.iter().copied().take(room).collect();
            b.sockets.extend(&new);
            b.next = b.next.max(now);
            self.peers[idx].extra.extend(new);
        }
        Ok(())
    }

    /// Our public key (the identity peers configure for us).
    pub fn public_key(&self) -> PublicKey {
        self.config.key.public()
    }

    /// Every configured peer, as `punchd status` shows it.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.peers.iter().map(Peer::status).collect()
    }

    /// One peer's status.
    pub fn peer_status(&self, name: &PeerName) -> Option<PeerStatus> {
        self.peers.iter().find(|p| &p.name == name).map(Peer::status)
    }

    /// Where to send `name`'s traffic now: (our socket, its address).
    pub fn path(&self, name: &PeerName) -> Option<(SocketAddr, SocketAddr)> {
        let p = self.peers.iter().find(|p| &p.name == name)?.path_pair()?;
        Some((p.local, p.remote))
    }

    fn peer_index(&self, name: &PeerName) -> Option<usize> {
        self.peers.iter().position(|p| &p.name == name)
    }

    fn prediction_for(&self, intro: &Introduction) -> Prediction {
        // Behind the same public address the LAN candidates connect whatever the NAT does.
        let our_public = self.local_candidates.iter().find(|c| c.kind == CandidateKind::Reflexive).map(|c| c.addr.ip());
        let peer_has_lan = intro.candidates.iter().any(|c| c.kind == CandidateKind::Host);
        if our_public == Some(intro.reflexive.ip()) && peer_has_lan {
            return Prediction::Direct;
        }
        predict_with(&self.local_profile, &intro.profile, &self.config.birthday)
    }

    /// Build the pairs of the introduction in force and start checking them now. An open path is kept (it
    /// stays in use until it dies or a better pair wins).
    fn start_punch(&mut self, now: Instant, idx: usize) {
        let Some(intro) = self.peers[idx].intro.clone() else {
            self.peers[idx].phase = Phase::Idle;
            return;
        };
        let prediction = self.prediction_for(&intro);
        self.peers[idx].punch_started = Some(now);
        self.peers[idx].relay_ready = None;
        // Birthday probing runs once per introduction (or reflexive change): a repeat has the same odds, and
        // a hostile rendezvous must not be able to turn us into a port scanner of its choice more than once
        // per introduction (docs/punchd.md, "Symmetric NATs").
        let role =
            if self.peers[idx].failures == 0 { birthday_role(&self.local_profile, &intro.profile) } else { None };
        // End what the previous attempt left running (but not the path's keepalive).
        let keep_tx = self.peers[idx].path_pair().and_then(|p| p.tx).filter(|t| !t.oneshot);
        self.checks.cancel_peer(idx, keep_tx.map(|t| t.key));
        self.probes.cancel_peer(idx, None);
        if let Some(path) = self.peers[idx].path {
            if let Some(p) = self.peers[idx].pair_mut(path) {
                p.tx = keep_tx;
            }
        }
        let path_local = self.peers[idx].path_pair().map(|p| p.local);
        self.close_extras(idx, path_local);

        let mut pairs: Vec<Pair> = self.peers[idx].path_pair().cloned().into_iter().collect();
        for (remote, kind) in remote_addresses(&intro, self.config.prediction_window) {
            for &local in &self.config.locals {
                if local.is_ipv4() != remote.is_ipv4() || pairs.len() >= self.config.max_pairs {
                    continue;
                }
                if pairs.iter().any(|p| p.local == local && p.remote == remote) {
                    continue;
                }
                pairs.push(Pair::new(self.next_pair, local, remote, kind));
                self.next_pair += 1;
            }
        }
        let name = self.peers[idx].name.clone();
        self.peers[idx].pairs = pairs;
        let primed = self.send_primers(idx);
        let peer = &mut self.peers[idx];
        peer.phase = if peer.path.is_some() { Phase::Connected } else { Phase::Punching };
        peer.next_check = Some(if primed { now + self.config.primer_lead } else { now });
        peer.judged = peer.path.is_some();
        if peer.prediction != Some(prediction) {
            info!(target: LOG, "{name}: prediction: {prediction}");
            self.events.push_back(Event::Prediction { peer: name.clone(), prediction });
        }
        peer.prediction = Some(prediction);
        peer.birthday = None;
        if peer.path.is_none() {
            if let Some(role) = role {
                let target = intro.reflexive;
                let b = Birthday::new(role, self.config.birthday, target, now);
                if role == BirthdayRole::Hard {
                    self.events.push_back(Event::OpenSockets { peer: name.clone(), count: b.params.sockets });
                }
                debug!(target: LOG, "{name}: birthday probing as the {role:?} side until {:?}", b.deadline - now);
                peer.birthday = Some(b);
            }
        }
        debug!(target: LOG, "{name}: punching {} pairs", peer.pairs.len());
    }

    /// A primer (a check outside any transaction, with [`AgentConfig::primer_ttl`]) on every pair of a peer
    /// without a path whose remote sits behind the peer's NAT; returns whether any was queued. Host pairs need
    /// none (no NAT between), relayed ones must reach the TURN server.
    fn send_primers(&mut self, idx: usize) -> bool {
        let peer = &self.peers[idx];
        let Some(ttl) = self.config.primer_ttl.filter(|_| peer.path.is_none()) else { return false };
        // Behind our own public address (the same NAT): the LAN pairs come first, and a primer would hairpin
        // to the peer as an early check through the router instead.
        let ours = self.local_candidates.iter().find(|c| c.kind == CandidateKind::Reflexive).map(|c| c.addr.ip());
        if ours.is_some() && peer.intro.as_ref().map(|i| i.reflexive.ip()) == ours {
            return false;
        }
        let username = auth::username(&peer.kid, &self.my_id);
        let key = peer.probe_key;
        let targets: Vec<(SocketAddr, SocketAddr)> = peer
            .pairs
            .iter()
            .filter(|p| !matches!(p.kind, RemoteKind::Host | RemoteKind::Relayed) && Some(p.local) != peer.relayed)
            .map(|p| (p.local, p.remote))
            .collect();
        let mut queued = false;
        for (local, remote) in targets {
            if self.answers.len() >= MAX_ANSWERS {
                break;
            }
            let mut buf = [0u8; 128];
            let id = self.rng.transaction_id();
            let written = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &id)
                .and_then(|mut w| auth::write_check(&mut w, &username, &key).map(|()| w.finish()));
            match written {
                Ok(len) => {
                    self.answers.push_back((Transmit { local, dst: remote, len, ttl: Some(ttl) }, buf[..len].to_vec()));
                    queued = true;
                }
                Err(e) => warn!(target: LOG, "cannot encode a primer: {e}"),
            }
        }
        if queued {
            debug!(target: LOG, "{}: primers with TTL {ttl} on the pairs through its NAT", peer.name);
        }
        queued
    }

    /// Start a check (or keepalive) transaction on a pair now.
    fn start_check(&mut self, now: Instant, idx: usize, pair_id: u32, purpose: Purpose, oneshot: bool) {
        let peer = &self.peers[idx];
        let Some(pair) = peer.pair(pair_id) else { return };
        let (local, remote) = (pair.local, pair.remote);
        let username = auth::username(&peer.kid, &self.my_id);
        let key = peer.probe_key;
        let table = if oneshot { &mut self.probes } else { &mut self.checks };
        let spec = Spec::new(local, remote).ignore_unreachable();
        match table.txs.start(now, spec, Method::BINDING, |w| auth::write_check(w, &username, &key)) {
            Ok(tx) => {
                table.owners.insert(tx, Owner { peer: idx, purpose, local, remote, started: now });
                table.txs.handle_timeout(now);
                if let Some(pair) = self.peers[idx].pair_mut(pair_id) {
                    pair.tx = Some(TxRef { oneshot, key: tx });
                    if pair.state != PairState::Succeeded {
                        pair.state = PairState::InProgress;
                    }
                }
            }
            Err(e) => warn!(target: LOG, "cannot encode a check: {e}"),
        }
    }

    /// A padded check of `size` bytes on `pair_id` (see [`AgentConfig::mtu_probe`]).
    fn start_mtu_probe(&mut self, now: Instant, idx: usize, pair_id: u32, size: u16) {
        let peer = &self.peers[idx];
        let Some(pair) = peer.pair(pair_id) else { return };
        let (local, remote) = (pair.local, pair.remote);
        let username = auth::username(&peer.kid, &self.my_id);
        let key = peer.probe_key;
        let spec = Spec::new(local, remote).ignore_unreachable();
        let write = |w: &mut crate::stun::MessageWriter<'_>| auth::write_padded_check(w, &username, &key, size.into());
        match self.probes.txs.start(now, spec, Method::BINDING, write) {
            Ok(tx) => {
                let purpose = Purpose::Mtu { pair: pair_id, size };
                self.probes.owners.insert(tx, Owner { peer: idx, purpose, local, remote, started: now });
                self.probes.txs.handle_timeout(now);
            }
            Err(e) => warn!(target: LOG, "cannot encode an MTU probe of {size} bytes: {e}"),
        }
    }

    /// An MTU probe ended. A lost full-size probe on a path that still answers is tried once more at the
    /// minimum size, and then reported.
    fn mtu_probed(&mut self, now: Instant, idx: usize, pair_id: u32, size: u16, answered: bool) {
        let Some(full) = self.config.mtu_probe else { return };
        let peer = &self.peers[idx];
        let name = peer.name.clone();
        if answered {
            debug!(target: LOG, "{name}: the path carries {size}-byte datagrams");
            if size < full {
                self.events.push_back(Event::PathMtuTooSmall {
                    peer: name,
                    probed: full,
                    minimum: size,
                    minimum_ok: true,
                });
            }
            return;
        }
        // Only a path that is alive tells anything about size.
        if peer.path != Some(pair_id) || peer.suspect {
            return;
        }
        if size > MIN_MTU_PROBE {
            self.start_mtu_probe(now, idx, pair_id, MIN_MTU_PROBE);
        } else {
            self.events.push_back(Event::PathMtuTooSmall {
                peer: name,
                probed: full,
                minimum: size,
                minimum_ok: false,
            });
        }
    }

    /// An easy-side birthday probe to `remote` (no pair until it is answered).
    fn start_probe(&mut self, now: Instant, idx: usize, local: SocketAddr, remote: SocketAddr) {
        let peer = &self.peers[idx];
        let username = auth::username(&peer.kid, &self.my_id);
        let key = peer.probe_key;
        let spec = Spec::new(local, remote).ignore_unreachable();
        match self.probes.txs.start(now, spec, Method::BINDING, |w| auth::write_check(w, &username, &key)) {
            Ok(tx) => {
                self.probes
                    .owners
                    .insert(tx, Owner { peer: idx, purpose: Purpose::Probe, local, remote, started: now });
                self.probes.txs.handle_timeout(now);
            }
            Err(e) => warn!(target: LOG, "cannot encode a probe: {e}"),
        }
    }

    /// A check from a configured peer verified: answer it, and check back on the same pair (RFC 8445
    /// §7.3.1.4 triggered check), learning the source as a peer-reflexive candidate if it is new.
    fn on_check(&mut self, now: Instant, input: Received, msg: &Message<'_>, shape: auth::CheckShape<'_>) {
        if shape.to != self.my_id {
            debug!(target: LOG, "check for key {} from {}, not ours: dropped", shape.to, input.source);
            return;
        }
        let Some(idx) = self.peers.iter().position(|p| p.kid == shape.from && auth::verify(msg, &p.probe_key)) else {
            debug!(target: LOG, "check from {} by an unknown key or with a bad integrity: dropped", input.source);
            return;
        };
        if self.answers.len() < MAX_ANSWERS {
            let mut buf = [0u8; 128];
            match auth::write_answer(&mut buf, msg.transaction_id(), input.source, &self.peers[idx].probe_key) {
                Ok(len) => self.answers.push_back((
                    Transmit { local: input.local, dst: input.source, len, ttl: None },
                    buf[..len].to_vec(),
                )),
                Err(e) => warn!(target: LOG, "cannot encode an answer: {e}"),
            }
        }
        let peer = &mut self.peers[idx];
        let existing = peer.pairs.iter().find(|p| p.local == input.local && p.remote == input.source);
        let pair_id = match existing {
            Some(p) if matches!(p.state, PairState::Waiting | PairState::Failed) => p.id,
            Some(_) => return,
            None => {
                let reflexive = peer.pairs.iter().filter(|p| p.kind == RemoteKind::PeerReflexive).count();
                if reflexive >= MAX_PEER_REFLEXIVE {
                    return;
                }
                // During birthday probing a check from the peer's address at a new port is the hit.
                let kind = match &peer.birthday {
                    Some(b) if b.active(now) && b.target.ip() == input.source.ip() => RemoteKind::Birthday,
                    _ => RemoteKind::PeerReflexive,
                };
                debug!(target: LOG, "{}: {kind} candidate {} (on {})", peer.name, input.source, input.local);
                let id = self.next_pair;
                self.next_pair += 1;
                peer.pairs.push(Pair::new(id, input.local, input.source, kind));
                if matches!(peer.phase, Phase::Idle | Phase::Backoff { .. }) {
                    // The peer punches towards us (it was introduced, or our push is late): join in.
                    peer.phase = Phase::Punching;
                    peer.judged = peer.prediction.is_none();
                }
                id
            }
        };
        self.start_check(now, idx, pair_id, Purpose::Check(pair_id), false);
    }

    /// An answer: ours only if its transaction id is one of ours, and then only if it verifies.
    fn on_answer(&mut self, now: Instant, input: Received, data: &[u8], msg: &Message<'_>) -> bool {
        let id = msg.transaction_id();
        for probes in [false, true] {
            let table = if probes { &mut self.probes } else { &mut self.checks };
            let Some(key) = table.txs.find(id) else { continue };
            let Some(owner) = table.owners.get(&key) else { continue };
            if !auth::verify(msg, &self.peers[owner.peer].probe_key) {
                debug!(target: LOG, "answer from {} fails integrity: dropped", input.source);
                return true;
            }
            match table.txs.handle_input(now, input, data, |m, _| Ok(m.xor_mapped_address())) {
                Handled::NotOurs => {
                    debug!(target: LOG, "answer from {} on {}: not where expected", input.source, input.local)
                }
                Handled::Ignored => {}
                Handled::Completed(_) => self.settle(now),
            }
            return true;
        }
        false
    }

    /// Turn ended transactions into pair states, paths and events.
    fn settle(&mut self, now: Instant) {
        for probes in [false, true] {
            loop {
                let table = if probes { &mut self.probes } else { &mut self.checks };
                let Some(key) = table.txs.poll_completed() else { break };
                let sends = table.txs.sends(key);
                let outcome = table.txs.remove(key);
                let Some(owner) = table.owners.remove(&key) else { continue };
                let Some(outcome) = outcome else { continue };
                let rtt = (sends == 1).then(|| now.saturating_duration_since(owner.started));
                self.finished(now, owner, TxRef { oneshot: probes, key }, outcome.ok(), rtt);
            }
        }
    }

    fn finished(
        &mut self,
        now: Instant,
        owner: Owner,
        key: TxRef,
        answer: Option<Option<SocketAddr>>,
        rtt: Option<Duration>,
    ) {
        let idx = owner.peer;
        let pair_id = match owner.purpose {
            Purpose::Check(id) | Purpose::Keepalive(id) => id,
            Purpose::Mtu { pair, size } => {
                self.mtu_probed(now, idx, pair, size, answer.is_some());
                return;
            }
            Purpose::Probe => {
                let Some(mapped) = answer else { return };
                // A birthday hit: the pair exists from now on, verified.
                let peer = &mut self.peers[idx];
                let id = match peer.pairs.iter().find(|p| p.local == owner.local && p.remote == owner.remote) {
                    Some(p) => p.id,
                    None => {
                        let id = self.next_pair;
                        self.next_pair += 1;
                        peer.pairs.push(Pair::new(id, owner.local, owner.remote, RemoteKind::Birthday));
                        id
                    }
                };
                self.verified(now, idx, id, mapped, rtt);
                return;
            }
        };
        let Some(pair) = self.peers[idx].pair_mut(pair_id) else { return };
        if pair.tx == Some(key) {
            pair.tx = None;
        }
        match answer {
            Some(mapped) => self.verified(now, idx, pair_id, mapped, rtt),
            None => {
                if pair.state == PairState::InProgress {
                    pair.state = PairState::Failed;
                }
                debug!(target: LOG, "{}: no answer on {} -> {}", self.peers[idx].name, owner.local, owner.remote);
                let on_path = self.peers[idx].path == Some(pair_id);
                if on_path && self.peers[idx].suspect && matches!(owner.purpose, Purpose::Keepalive(_)) {
                    self.path_died(now, idx);
                }
            }
        }
    }

    /// A verified round trip on a pair.
    fn verified(&mut self, now: Instant, idx: usize, pair_id: u32, mapped: Option<SocketAddr>, rtt: Option<Duration>) {
        let peer = &mut self.peers[idx];
        let Some(pair) = peer.pair_mut(pair_id) else { return };
        pair.state = PairState::Succeeded;
        pair.last_ok = Some(now);
        pair.mapped = mapped.or(pair.mapped);
        if let Some(r) = rtt {
            match &mut pair.rtt {
                Some(e) => e.update(r),
                None => pair.rtt = Some(RttEstimate::first(r)),
            }
        }
        match peer.path {
            Some(cur) if cur == pair_id => {
                peer.last_ok = Some(now);
                peer.suspect = false;
                peer.stale = false;
            }
            Some(cur) if peer.stale => self.switch(idx, cur, pair_id, SwitchReason::PeerMoved),
            Some(cur) => self.maybe_switch(idx, cur, pair_id),
            None => {
                if self.hold_relay(now, idx, pair_id) {
                    self.peers[idx].relay_ready = Some(pair_id);
                } else {
                    self.open_path(now, idx, pair_id);
                }
            }
        }
    }

    /// A verified relay pair waits while direct pairs may still answer, up to the relay deadline, unless
    /// the prediction already says that only a relay will do.
    fn hold_relay(&self, now: Instant, idx: usize, pair_id: u32) -> bool {
        let peer = &self.peers[idx];
        let Some(pair) = peer.pair(pair_id) else { return false };
        if peer.path_kind_of(pair) != PathKind::Relay || peer.prediction == Some(Prediction::NeedsRelay) {
            return false;
        }
        let waited = peer.punch_started.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        peer.direct_pending(now) && waited < self.config.relay_deadline
    }

    /// The held relay pair carries traffic once nothing direct can answer any more, or at the deadline.
    fn release_relay(&mut self, now: Instant, idx: usize) {
        let peer = &self.peers[idx];
        let Some(pair_id) = peer.relay_ready else { return };
        if peer.path.is_some() {
            self.peers[idx].relay_ready = None;
            return;
        }
        if !self.hold_relay(now, idx, pair_id) {
            self.peers[idx].relay_ready = None;
            self.open_path(now, idx, pair_id);
        }
    }

    fn open_path(&mut self, now: Instant, idx: usize, pair_id: u32) {
        let keepalive = self.config.keepalive;
        let peer = &mut self.peers[idx];
        let Some(pair) = peer.pair(pair_id).cloned() else { return };
        let kind = peer.path_kind_of(&pair);
        let rtt = pair.rtt.map(|r| r.srtt);
        peer.path = Some(pair_id);
        peer.phase = Phase::Connected;
        peer.failures = 0;
        peer.last_ok = Some(now);
        peer.next_keepalive = Some(now + keepalive);
        info!(target: LOG, "{}: path open: {kind}, {} -> {} ({} candidate){}", peer.name, pair.local, pair.remote, pair.kind, rtt_text(rtt));
        let name = peer.name.clone();
        self.events.push_back(Event::PathOpened {
            peer: name.clone(),
            kind,
            local: pair.local,
            remote: pair.remote,
            rtt,
        });
        self.judge(idx, kind != PathKind::Relay);
        // Birthday probing is over: stop the probes, close every extra socket but the one the path uses.
        self.close_extras(idx, Some(pair.local));
        if let Some(b) = self.peers[idx].birthday.as_mut() {
            b.expired = true;
        }
        self.probes.cancel_peer(idx, None);
        for p in &mut self.peers[idx].pairs {
            if p.tx.is_some_and(|t| t.oneshot) {
                p.tx = None;
                if p.state == PairState::InProgress {
                    p.state = PairState::Failed;
                }
            }
        }
        if let Some(size) = self.config.mtu_probe {
            self.start_mtu_probe(now, idx, pair_id, size);
        }
    }

    /// Hysteresis (docs/punchd.md): a LAN pair beats a public one; otherwise only a clearly lower round trip
    /// (less than half, and at least 10 ms less) moves the path.
    fn maybe_switch(&mut self, idx: usize, cur: u32, new: u32) {
        let peer = &self.peers[idx];
        let (Some(a), Some(b)) = (peer.pair(cur), peer.pair(new)) else { return };
        let (ka, kb) = (peer.path_kind_of(a), peer.path_kind_of(b));
        let why = if ka != PathKind::Lan && kb == PathKind::Lan {
            SwitchReason::Lan
        } else if ka == PathKind::Relay && kb == PathKind::Direct {
            SwitchReason::Direct
        } else if ka == kb {
            match (a.rtt, b.rtt) {
                (Some(ra), Some(rb)) if rb.srtt * 2 < ra.srtt && ra.srtt - rb.srtt > RTT_MARGIN => {
                    SwitchReason::LowerRtt { old: ra.srtt, new: rb.srtt }
                }
                _ => return,
            }
        } else {
            return;
        };
        self.switch(idx, cur, new, why);
    }

    /// Move the path from pair `cur` to pair `new`.
    fn switch(&mut self, idx: usize, cur: u32, new: u32, why: SwitchReason) {
        let peer = &self.peers[idx];
        let (Some(a), Some(b)) = (peer.pair(cur), peer.pair(new)) else { return };
        let kb = peer.path_kind_of(b);
        let (old_local, local, remote, rtt) = (a.local, b.local, b.remote, b.rtt.map(|r| r.srtt));
        let name = peer.name.clone();
        info!(target: LOG, "{name}: path changed to {kb} {local} -> {remote}: {why}");
        let peer = &mut self.peers[idx];
        if let Some(tx) = peer.pair_mut(cur).and_then(|p| p.tx.take()) {
            let table = if tx.oneshot { &mut self.probes } else { &mut self.checks };
            table.txs.remove(tx.key);
            table.owners.remove(&tx.key);
        }
        let peer = &mut self.peers[idx];
        peer.path = Some(new);
        peer.last_ok = peer.pair(new).and_then(|p| p.last_ok);
        peer.suspect = false;
        peer.stale = false;
        self.events.push_back(Event::PathChanged { peer: name.clone(), kind: kb, local, remote, rtt, why });
        if old_local != local {
            self.close_extras(idx, Some(local));
        }
    }

    /// Ask the driver to close this peer's extra sockets, except `keep` (the one a path runs on).
    fn close_extras(&mut self, idx: usize, keep: Option<SocketAddr>) {
        let peer = &mut self.peers[idx];
        let close: Vec<SocketAddr> = peer.extra.iter().copied().filter(|s| Some(*s) != keep).collect();
        if close.is_empty() {
            return;
        }
        peer.extra.retain(|s| Some(*s) == keep);
        if let Some(b) = peer.birthday.as_mut() {
            b.sockets.retain(|s| Some(*s) == keep);
        }
        let name = peer.name.clone();
        debug!(target: LOG, "{name}: closing {} extra sockets", close.len());
        self.events.push_back(Event::CloseSockets { peer: name, sockets: close });
    }

    /// Compare this attempt's outcome with the prediction, once.
    fn judge(&mut self, idx: usize, direct: bool) {
        let peer = &mut self.peers[idx];
        if peer.judged {
            return;
        }
        peer.judged = true;
        if let Some(prediction) = peer.prediction {
            if !prediction.holds(direct) {
                let outcome = if direct { "a direct path opened" } else { "no direct path" };
                warn!(target: LOG, "{}: prediction was wrong: {prediction}, but {outcome}", peer.name);
                self.events.push_back(Event::PredictionWrong { peer: peer.name.clone(), prediction, direct });
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        self.config.repunch_backoff.saturating_mul(1 << shift).min(self.config.max_backoff)
    }

    /// Every pair failed and birthday probing (if any) is over.
    fn punch_failed(&mut self, now: Instant, idx: usize) {
        self.peers[idx].failures += 1;
        let failures = self.peers[idx].failures;
        self.judge(idx, false);
        let peer = &self.peers[idx];
        let name = peer.name.clone();
        if failures == 1 {
            let why = RelayReason::Exhausted { pairs: peer.pairs.len(), prediction: peer.prediction };
            info!(target: LOG, "{name}: needs relay: {why}");
            self.events.push_back(Event::NeedsRelay { peer: name.clone(), why });
        }
        self.close_extras(idx, None);
        self.peers[idx].birthday = None;
        if failures >= self.config.repunch_limit {
            let why = RelayReason::GaveUp { attempts: failures };
            info!(target: LOG, "{name}: {why}; waiting for a new introduction");
            self.events.push_back(Event::NeedsRelay { peer: name, why });
            self.peers[idx].phase = Phase::Idle;
        } else {
            let wait = self.backoff(failures);
            debug!(target: LOG, "{name}: punching again in {wait:?}");
            self.peers[idx].phase = Phase::Backoff { until: now + wait };
        }
    }

    fn path_died(&mut self, now: Instant, idx: usize) {
        // Another pair that answered recently takes over at once.
        let dead_span = self.config.keepalive.saturating_mul(self.config.dead_after.max(1));
        let peer = &self.peers[idx];
        if let Some(cur) = peer.path {
            let fresh = peer
                .pairs
                .iter()
                .filter(|p| p.id != cur && p.state == PairState::Succeeded)
                .filter(|p| p.last_ok.is_some_and(|t| now.saturating_duration_since(t) < dead_span))
                .min_by_key(|p| (peer.path_kind_of(p) != PathKind::Lan, p.kind, p.rtt.map(|r| r.srtt)))
                .map(|p| p.id);
            if let Some(new) = fresh {
                self.switch(idx, cur, new, SwitchReason::Failover);
                return;
            }
        }
        let keep = self.peers[idx].path_pair().map(|p| (p.remote, p.local));
        let silent = self.peers[idx].last_ok.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let why = DeathReason::Silent { silent };
        let peer = &mut self.peers[idx];
        let name = peer.name.clone();
        peer.path = None;
        peer.last_ok = None;
        peer.suspect = false;
        peer.stale = false;
        let wait = self.config.repunch_backoff;
        if let Some((remote, _)) = keep {
            info!(target: LOG, "{name}: path to {remote} died: {why}; punching again in {wait:?}");
            self.events.push_back(Event::PathDied { peer: name, remote, why });
        }
        self.checks.cancel_peer(idx, None);
        self.probes.cancel_peer(idx, None);
        self.close_extras(idx, None);
        let peer = &mut self.peers[idx];
        peer.birthday = None;
        peer.pairs.clear();
        peer.phase = Phase::Backoff { until: now + wait };
    }

    /// Per-peer timers: re-punch after backoff, pacing, birthday probes, end of an attempt, keepalive, death.
    fn tick(&mut self, now: Instant, idx: usize) {
        if let Phase::Backoff { until } = self.peers[idx].phase {
            if now >= until {
                self.start_punch(now, idx);
            }
        }
        self.release_relay(now, idx);
        let phase = self.peers[idx].phase;
        if !matches!(phase, Phase::Punching | Phase::Connected) {
            return;
        }
        if self.peers[idx].next_check.is_none_or(|t| now >= t) {
            if let Some(id) = self.peers[idx].next_waiting() {
                self.start_check(now, idx, id, Purpose::Check(id), false);
                self.peers[idx].next_check = Some(now + self.config.pace);
            }
        }
        self.tick_birthday(now, idx);
        if phase == Phase::Punching && !self.peers[idx].checks_pending(now) && !self.peer_has_txs(idx) {
            self.punch_failed(now, idx);
            return;
        }
        if phase == Phase::Connected {
            let dead_span = self.config.keepalive.saturating_mul(self.config.dead_after.max(1));
            let peer = &self.peers[idx];
            if peer.last_ok.is_some_and(|t| now.saturating_duration_since(t) >= dead_span) {
                self.path_died(now, idx);
                return;
            }
            if peer.next_keepalive.is_none_or(|t| now >= t) {
                self.peers[idx].next_keepalive = Some(now + self.config.keepalive);
                if let Some(p) = self.peers[idx].path_pair().filter(|p| p.tx.is_none()) {
                    let id = p.id;
                    self.start_check(now, idx, id, Purpose::Keepalive(id), false);
                }
            }
            self.try_upgrade(now, idx);
        }
    }

    /// On a relay path, the direct pairs are checked again every `relay_upgrade` (a NAT or firewall may
    /// have changed): one that answers takes the path over (direct beats relay).
    fn try_upgrade(&mut self, now: Instant, idx: usize) {
        let every = self.config.relay_upgrade;
        let peer = &mut self.peers[idx];
        let on_relay = peer.path_pair().is_some_and(|p| peer.path_kind_of(p) == PathKind::Relay);
        if !on_relay {
            peer.next_upgrade = None;
            return;
        }
        let due = *peer.next_upgrade.get_or_insert(now + every);
        if now < due {
            return;
        }
        peer.next_upgrade = Some(now + every);
        let mut again = 0;
        let relayed = peer.relayed;
        let intro = peer.intro.clone();
        for p in &mut peer.pairs {
            let direct = p.path_kind(intro.as_ref(), relayed) != PathKind::Relay;
            if direct && p.state == PairState::Failed && p.tx.is_none() {
                p.state = PairState::Waiting;
                again += 1;
            }
        }
        if again > 0 {
            debug!(target: LOG, "{}: checking {again} direct pairs again (on a relay path)", peer.name);
            peer.next_check = Some(now);
        }
    }

    fn tick_birthday(&mut self, now: Instant, idx: usize) {
        let main = self.config.locals[0];
        if let Some(b) = self.peers[idx].birthday.as_mut().filter(|b| now >= b.deadline) {
            b.expired = true;
        }
        // At most a burst's worth per wake-up; pacing spreads the rest.
        for _ in 0..16 {
            let Some(b) = self.peers[idx].birthday.as_mut() else { return };
            let Some((local, remote)) = b.next_probe(now, &mut self.rng, main) else { break };
            match b.role {
                BirthdayRole::Easy => self.start_probe(now, idx, local, remote),
                BirthdayRole::Hard => {
                    let peer = &mut self.peers[idx];
                    let id = match peer.pairs.iter().find(|p| p.local == local && p.remote == remote) {
                        Some(p) => p.id,
                        None => {
                            let id = self.next_pair;
                            self.next_pair += 1;
                            peer.pairs.push(Pair::new(id, local, remote, RemoteKind::Birthday));
                            id
                        }
                    };
                    self.start_check(now, idx, id, Purpose::Check(id), true);
                }
            }
        }
    }

    fn peer_has_txs(&self, idx: usize) -> bool {
        self.checks.owners.values().chain(self.probes.owners.values()).any(|o| o.peer == idx)
    }
}

fn rtt_text(rtt: Option<Duration>) -> String {
    match rtt {
        Some(r) => format!(", rtt {:.1} ms", r.as_secs_f64() * 1000.0),
        None => String::new(),
    }
}

impl Engine for Agent {
    type Event = Event;

    /// Checks and answers between peers (STUN Binding with a "to:from" USERNAME and
    /// MESSAGE-INTEGRITY-SHA256) are consumed, verified or not; everything else is not ours.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if !stun::looks_like_stun(data) {
            return false;
        }
        let Ok(msg) = Message::parse(data) else { return false };
        if msg.method() != Method::BINDING {
            return false;
        }
        let taken = match msg.class() {
            Class::Request => match auth::check_shape(&msg) {
                Some(shape) => {
                    self.on_check(now, input, &msg, shape);
                    true
                }
                None => false,
            },
            Class::Success | Class::Error => self.on_answer(now, input, data, &msg),
            Class::Indication => false,
        };
        if taken {
            self.settle(now);
            for idx in 0..self.peers.len() {
                self.tick(now, idx);
            }
            self.settle(now);
        }
        taken
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.checks.txs.handle_timeout(now);
        self.probes.txs.handle_timeout(now);
        self.settle(now);
        for idx in 0..self.peers.len() {
            self.tick(now, idx);
        }
        self.settle(now);
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((t, bytes)) = self.answers.pop_front() {
            if let Some(out) = buf.get_mut(..bytes.len()) {
                out.copy_from_slice(&bytes);
                return Some(t);
            }
        }
        self.checks.txs.poll_transmit(buf).or_else(|| self.probes.txs.poll_transmit(buf))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut next = [self.checks.txs.poll_timeout(), self.probes.txs.poll_timeout()].into_iter().flatten().min();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        let dead_span = self.config.keepalive.saturating_mul(self.config.dead_after.max(1));
        for p in &self.peers {
            match p.phase {
                Phase::Idle => continue,
                Phase::Backoff { until } => {
                    consider(Some(until));
                    continue;
                }
                Phase::Punching | Phase::Connected => {}
            }
            if p.next_waiting().is_some() {
                consider(p.next_check);
            }
            if let Some(b) = p.birthday.as_ref().filter(|b| !b.expired) {
                consider(b.next_due());
                consider(Some(b.deadline));
            }
            if p.phase == Phase::Connected {
                consider(p.next_keepalive);
                consider(p.last_ok.map(|t| t + dead_span));
            }
        }
        next
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

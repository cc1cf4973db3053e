//! The node: one punchd peer as one engine on one punching socket (docs/punchd.md, "The node"). It owns the
//! rendezvous client ([`Client`], docs/signal.md) and the punch [`Agent`], and joins them:
//!
//! - Demultiplexing (docs/architecture.md, "One socket, demultiplexed"): rendezvous messages from the server
//!   go to the client, peer checks and answers to the agent; anything else is dropped and counted, never
//!   answered.
//! - Key pinning: an introduction whose key is not the one configured for that name is refused (logged,
//!   counted, reported) before the agent sees it, so a hostile rendezvous cannot make us punch towards a
//!   key of its choice.
//! - Feeding the agent: our candidates (the driver's host addresses plus the reflexive one the server
//!   reports), our NAT profile, introductions, and a moved public endpoint (the peers only know the old
//!   one: punch again and ask the server for fresh introductions).
//! - Fresh introductions: a connect the server could not serve (peer not registered, no answer) is retried
//!   with a doubling backoff; a path that dies, or an attempt that needs a relay, asks for a fresh
//!   introduction after the agent's own backoff (the peer's endpoint may have moved).

use super::agent::{Agent, AgentConfig, PeerError};
use super::event::Event as AgentEvent;
use super::pair::RemoteKind;
use super::peer::{PeerStatus, Phase};
use crate::identity::{PublicKey, SecretKey};
use crate::net::{Engine, Received, Seed, Transmit};
use crate::relay::{AllocationError, TurnClient, TurnClientConfig, TurnEvent};
use crate::signal::{
    Candidate, CandidateKind, Client, ClientConfig, ClientEvent, ConnectFailure, Introduction, NatProfile,
    NetworkSecret, PeerName, RefuseReason, MAX_CANDIDATES,
};
use log::{debug, info, warn};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LOG: &str = "holepunch::punch::node";

/// First wait before a connect the server could not serve is asked again; doubles per failure.
const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest wait between connect retries.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Longest a connect waits for the TURN allocation to be made and registered.
const RELAY_SETTLE: Duration = Duration::from_secs(2);
/// Longest wait between attempts to allocate on the TURN server.
const RELAY_RETRY_MAX: Duration = Duration::from_secs(60);
/// Keepalive periods without an answer from the rendezvous server before the next one is tried.
const FAILOVER_KEEPALIVES: u32 = 3;
/// Client and agent events handled per call, a bound against two engines feeding each other forever.
const MAX_SETTLE_ROUNDS: usize = 64;

/// What a node needs: the settings of both engines (tune them before [`Node::new`]), the peers it accepts,
/// its host candidates and NAT profile.
#[derive(Debug)]
pub struct NodeConfig {
    pub client: ClientConfig,
    pub agent: AgentConfig,
    /// The configured peers, name and pinned key; nobody else is answered or punched towards.
    pub peers: Vec<(PeerName, PublicKey)>,
    /// Our LAN addresses with the punching socket's port (the driver lists the interfaces); reported to the
    /// rendezvous as host candidates (at most [`MAX_CANDIDATES`]).
    pub host_candidates: Vec<SocketAddr>,
    /// Our NAT's behaviour, reported to the rendezvous and used for the prediction.
    pub profile: NatProfile,
    /// A TURN server to hold an allocation on (docs/relay.md, "Client"): its relayed address becomes a
    /// candidate, and a pair through it carries traffic when nothing direct answers.
    pub relay: Option<TurnClientConfig>,
    /// Without `relay`: use the TURN credentials the rendezvous server grants (when it relays too) on that
    /// server (default on).
    pub relay_from_server: bool,
    /// More rendezvous servers after `client.server`, tried in turn when the current one falls silent
    /// (docs/punchd.md, "Several servers").
    pub fallback_servers: Vec<SocketAddr>,
    /// Silence from the current server after which the next one is tried (default three keepalives).
    pub failover_after: Duration,
}

impl NodeConfig {
    /// Defaults (keepalive 3 s both ways) for punching socket `local` and rendezvous `server`.
    pub fn new(
        local: SocketAddr,
        server: SocketAddr,
        name: PeerName,
        key: SecretKey,
        secret: &NetworkSecret,
        peers: Vec<(PeerName, PublicKey)>,
    ) -> NodeConfig {
        let client = ClientConfig::new(local, server, name.clone(), key.public(), secret);
        NodeConfig {
            client,
            agent: AgentConfig::new(local, name, key),
            peers,
            host_candidates: Vec::new(),
            profile: NatProfile::UNKNOWN,
            relay: None,
            relay_from_server: true,
            fallback_servers: Vec::new(),
            failover_after: FAILOVER_KEEPALIVES * Duration::from_secs(3),
        }
    }

    /// Keepalive interval of both the registration and the path checks (and the failover's wait).
    pub fn with_keepalive(mut self, keepalive: Duration) -> NodeConfig {
        self.client.keepalive = keepalive;
        self.agent.keepalive = keepalive;
        self.failover_after = keepalive * FAILOVER_KEEPALIVES;
        self
    }
}

/// What the node tells the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Registered with the rendezvous (first time, or again after [`Event::ServerLost`]); our public endpoint.
    Registered { reflexive: SocketAddr },
    /// The server sees us at a new public endpoint: every peer is punched again.
    ReflexiveChanged { old: SocketAddr, new: SocketAddr },
    /// The server has not answered for a registration lifetime (we keep trying).
    ServerLost,
    /// The rendezvous server `from` fell silent: registering at `to`, the next configured one. Paths and
    /// tunnels are not touched.
    ServerChanged { from: SocketAddr, to: SocketAddr },
    /// The server refused our registration; [`RefuseReason::WrongSecret`]'s Display is the one-line error.
    Refused(RefuseReason),
    /// The server does not know `peer` (yet): the connect is retried at `retry_in`.
    PeerNotRegistered { peer: PeerName, retry_in: Duration },
    /// A connect failed otherwise (retried likewise).
    ConnectFailed { peer: PeerName, reason: ConnectFailure, retry_in: Duration },
    /// The server introduced `peer` with a key that is not the configured one (or a peer we do not know):
    /// refused, nothing punched.
    IntroductionRefused { peer: PeerName, why: PeerError },
    /// A TURN allocation exists: peers reach us through `relayed` on `server`.
    RelayAllocated { server: SocketAddr, relayed: SocketAddr },
    /// The TURN allocation failed or was lost (retried after `retry_in`).
    RelayFailed { server: SocketAddr, why: AllocationError, retry_in: Duration },
    /// A channel on our relay to `peer` is bound: relayed data to and from it is ChannelData on `channel`.
    RelayChannel { peer: SocketAddr, channel: u16 },
    /// Punching: paths opened, changed, died (with why), needs relay, prediction and whether it held, and
    /// the extra sockets birthday probing asks the driver for. The second field is the kind of remote
    /// candidate the peer's path runs to when the event was emitted ("direct ... via reflexive").
    Punch(AgentEvent, Option<RemoteKind>),
}

/// What the node counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Datagrams neither engine took (not from the server, not a peer check or answer): dropped unanswered.
    pub dropped: u64,
    /// Introductions pushed by the server and accepted.
    pub introductions: u64,
    /// Introductions refused by key pinning.
    pub refused_introductions: u64,
    /// Connect requests sent (first tries and retries).
    pub connects: u64,
    /// Relayed datagrams that were neither a check nor an answer (tunnel data arrives on the data path).
    pub relayed_dropped: u64,
}

impl fmt::Display for NodeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dropped, {} introductions ({} refused), {} connects",
            self.dropped, self.introductions, self.refused_introductions, self.connects
        )
    }
}

/// A connect to retry.
#[derive(Clone, Copy, Debug)]
struct Retry {
    at: Instant,
    wait: Duration,
}

/// The engine (see the module docs).
pub struct Node {
    client: Client,
    agent: Agent,
    peers: Vec<(PeerName, PublicKey)>,
    host_candidates: Vec<Candidate>,
    /// The router port mapping of the punching socket (NAT-PMP, PCP or UPnP IGD), while the daemon holds one.
    port_mapped: Option<SocketAddr>,
    profile: NatProfile,
    reflexive: Option<SocketAddr>,
    relay: Option<TurnClient>,
    relay_config: Option<TurnClientConfig>,
    /// The rendezvous server's grant may start the relay (no `relay` configured).
    relay_from_server: bool,
    /// The punching socket and the current rendezvous server, for a relay on the server's grant.
    local: SocketAddr,
    server: SocketAddr,
    /// Every rendezvous server, the current one at `server_at`; and the client's settings, to start a
    /// client on the next one.
    servers: Vec<SocketAddr>,
    server_at: usize,
    client_config: ClientConfig,
    failover_after: Duration,
    /// Our relayed address while the allocation lives.
    relayed: Option<SocketAddr>,
    /// When to allocate again after a failure, and the wait that led there (doubles per failure).
    relay_retry: Option<(Instant, Duration)>,
    rng: crate::net::Rng,
    /// Peers we asked to connect to or were introduced to: a moved endpoint asks again for them.
    wanted: Vec<PeerName>,
    retries: BTreeMap<PeerName, Retry>,
    /// The last time we were called, to notice an idle period or clock jump.
    last_call: Option<Instant>,
    keepalive: Duration,
    stats: NodeStats,
    events: VecDeque<Event>,
}

impl Node {
    /// A node whose first registration is due at `now`. Fails when a configured peer is refused by the agent
    /// (duplicate, our own key, a weak key).
    pub fn new(config: NodeConfig, seed: Seed, now: Instant) -> Result<Node, PeerError> {
        let mut rng = crate::net::Rng::from_seed(seed);
        let keepalive = config.agent.keepalive;
        let mut agent = Agent::new(config.agent, rng.fork());
        for (name, key) in &config.peers {
            agent.add_peer(name.clone(), *key)?;
        }
        let (local, server) = (config.client.local, config.client.server);
        let mut servers = vec![server];
        for s in config.fallback_servers {
            if !servers.contains(&s) {
                servers.push(s);
            }
        }
        let client_config = config.client.clone();
        let mut client = Client::new(config.client, rng.fork(), now);
        let host_candidates: Vec<Candidate> = config
            .host_candidates
            .iter()
            .take(MAX_CANDIDATES - 3) // room for the reflexive, port-mapped and relayed candidates
            .map(|&addr| Candidate { kind: CandidateKind::Host, addr })
            .collect();
        client.set_candidates(now, host_candidates.clone());
        client.set_profile(now, config.profile);
        agent.set_local_candidates(host_candidates.clone());
        agent.set_local_profile(config.profile);
        let relay = config.relay.clone().map(|c| TurnClient::new(c, rng.fork(), now));
        Ok(Node {
            relay_from_server: config.relay_from_server && config.relay.is_none(),
            local,
            server,
            servers,
            server_at: 0,
            client_config,
            failover_after: config.failover_after,
            relay,
            relay_config: config.relay,
            relayed: None,
            relay_retry: None,
            rng,
            client,
            agent,
            peers: config.peers,
            host_candidates,
            port_mapped: None,
            profile: config.profile,
            reflexive: None,
            wanted: Vec::new(),
            retries: BTreeMap::new(),
            last_call: None,
            keepalive,
            stats: NodeStats::default(),
            events: VecDeque::new(),
        })
    }

    /// Ask the rendezvous to introduce us and `peer` (a configured peer); sent as soon as we are registered,
    /// retried while the server cannot serve it.
    pub fn connect(&mut self, now: Instant, peer: &PeerName) -> Result<(), PeerError> {
        if !self.peers.iter().any(|(n, _)| n == peer) {
            return Err(PeerError::Unknown(peer.clone()));
        }
        self.want(peer);
        self.retries.remove(peer);
        if self.relay.is_some() && self.relayed.is_none() && self.relay_retry.is_none() {
            // The allocation is on its way (a few round trips): ask once our relayed candidate is
            // registered, so the peer can fall back to it; at the latest after RELAY_SETTLE.
            self.schedule(now, peer, Some(now + RELAY_SETTLE));
        } else {
            self.send_connect(now, peer);
        }
        self.settle(now);
        Ok(())
    }

    /// Our NAT's behaviour changed (a diagnosis finished): reported at the next registration.
    pub fn set_profile(&mut self, now: Instant, profile: NatProfile) {
        self.profile = profile;
        self.push_profile(now);
    }

    /// The router mapped the punching socket's port to `external` (NAT-PMP, PCP or UPnP IGD; docs/punchd.md,
    /// "Port mapping"), or the mapping is gone (`None`): reported as a port-mapped candidate next to the
    /// others (never instead of them), and in the NAT profile. A new or changed mapping asks the server for
    /// fresh introductions of the peers we want without a path, so they learn the new candidate (a second
    /// later, once the registration carrying it is through).
    pub fn set_port_mapping(&mut self, now: Instant, external: Option<SocketAddr>) {
        if self.port_mapped == external {
            return;
        }
        self.port_mapped = external;
        self.client.set_candidates(now, self.reported_candidates());
        self.agent.set_local_candidates(self.agent_candidates());
        self.push_profile(now);
        if external.is_some() {
            // After the new registration has reached the server (the CONNECT must find the new candidates
            // there to count as a new introduction, docs/signal.md).
            for peer in self.wanted.clone() {
                if self.agent.path(&peer).is_none() {
                    self.retries.remove(&peer);
                    self.schedule(now, &peer, Some(now + RECONNECT_MIN));
                }
            }
        }
        self.settle(now);
    }

    /// The port mapping in use, if any.
    pub fn port_mapping(&self) -> Option<SocketAddr> {
        self.port_mapped
    }

    fn push_profile(&mut self, now: Instant) {
        let profile =
            NatProfile { port_mapping: self.profile.port_mapping || self.port_mapped.is_some(), ..self.profile };
        self.client.set_profile(now, profile);
        self.agent.set_local_profile(profile);
    }

    /// What the rendezvous gets: host candidates, the port mapping and the relayed address (it adds the
    /// reflexive address itself).
    fn reported_candidates(&self) -> Vec<Candidate> {
        let mut c = self.host_candidates.clone();
        c.extend(self.port_mapped.map(|addr| Candidate { kind: CandidateKind::PortMapped, addr }));
        c.extend(self.relayed.map(|addr| Candidate { kind: CandidateKind::Relayed, addr }));
        c
    }

    /// Our relayed address on the TURN server, while the allocation lives.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// Deletes the TURN allocation (at exit); the Refresh goes out with the next transmits.
    pub fn close_relay(&mut self, now: Instant) {
        if let Some(r) = &mut self.relay {
            r.close(now);
        }
    }

    /// Candidates changed (a port mapping, a relay): registered again, and peers without a path are
    /// introduced again a second later so they learn them.
    fn candidates_changed(&mut self, now: Instant) {
        self.client.set_candidates(now, self.reported_candidates());
        self.agent.set_local_candidates(self.agent_candidates());
        for peer in self.wanted.clone() {
            if self.agent.path(&peer).is_none() {
                self.retries.remove(&peer);
                self.schedule(now, &peer, Some(now + RECONNECT_MIN));
            }
        }
    }

    fn on_relay(&mut self, now: Instant, e: TurnEvent) {
        let Some(server) = self.relay.as_ref().map(|r| r.server()) else { return };
        match e {
            TurnEvent::Allocated { relayed, .. } => {
                info!(target: LOG, "relayed address {relayed} on TURN server {server}");
                self.relayed = Some(relayed);
                self.relay_retry = None;
                self.agent.set_relayed(Some(relayed));
                self.permit_known_peers(now);
                self.candidates_changed(now);
                self.events.push_back(Event::RelayAllocated { server, relayed });
            }
            TurnEvent::Failed(why) => {
                let wait = self.relay_retry.map_or(RECONNECT_MIN * 5, |(_, w)| (w * 2).min(RELAY_RETRY_MAX));
                warn!(target: LOG, "TURN server {server}: {why}; allocating again in {wait:?}");
                self.relay_retry = Some((now + wait, wait));
                let had = self.relayed.take().is_some();
                self.agent.set_relayed(None);
                if had {
                    self.candidates_changed(now);
                }
                self.events.push_back(Event::RelayFailed { server, why, retry_in: wait });
            }
            TurnEvent::ChannelBound { peer, channel } => self.events.push_back(Event::RelayChannel { peer, channel }),
        }
    }

    /// Our relay accepts data from the peers' public addresses (permissions per IP, RFC 8656 §9).
    fn permit_known_peers(&mut self, now: Instant) {
        let Some(relay) = &mut self.relay else { return };
        for s in self.agent.status() {
            for p in &s.pairs {
                // Host addresses are private and relayed ones are other relays: neither is a peer's source.
                if !matches!(p.kind, RemoteKind::Host | RemoteKind::Relayed) {
                    relay.permit(now, p.remote.ip());
                }
            }
        }
    }

    /// The relay's retry and its events.
    fn relay_timeout(&mut self, now: Instant) {
        if let Some((at, _)) = self.relay_retry {
            if now >= at && self.relayed.is_none() {
                if let Some(c) = self.relay_config.clone() {
                    self.relay = Some(TurnClient::new(c, self.rng.fork(), now));
                    self.relay_retry =
                        Some((now + RELAY_RETRY_MAX * 4, self.relay_retry.map_or(RELAY_RETRY_MAX, |r| r.1)));
                }
            }
        }
        if let Some(r) = &mut self.relay {
            r.handle_timeout(now);
        }
    }

    /// The extra sockets the driver opened after [`AgentEvent::OpenSockets`].
    pub fn add_sockets(&mut self, now: Instant, peer: &PeerName, sockets: &[SocketAddr]) -> Result<(), PeerError> {
        let r = self.agent.add_sockets(now, peer, sockets);
        self.settle(now);
        r
    }

    /// Every configured peer's punching state.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.agent.status()
    }

    /// Where to send `peer`'s traffic now: (our socket, its address).
    pub fn path(&self, peer: &PeerName) -> Option<(SocketAddr, SocketAddr)> {
        self.agent.path(peer)
    }

    /// Our public endpoint as the server last saw it.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.reflexive
    }

    pub fn is_registered(&self) -> bool {
        self.client.is_registered()
    }

    /// The rendezvous server in use now.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The current server has not answered for `failover_after`: register at the next one. The agent, its
    /// paths and the relay stay as they are; peers still without a path are asked for again there.
    fn fail_over(&mut self, now: Instant) {
        if self.servers.len() < 2 || now.saturating_duration_since(self.client.last_heard()) < self.failover_after {
            return;
        }
        let from = self.server;
        self.server_at = (self.server_at + 1) % self.servers.len();
        let to = self.servers[self.server_at];
        warn!(target: LOG, "rendezvous server {from} silent for {:?}: registering at {to}", self.failover_after);
        let config = ClientConfig { server: to, ..self.client_config.clone() };
        self.client = Client::new(config, self.rng.fork(), now);
        self.client.set_candidates(now, self.reported_candidates());
        self.push_profile(now);
        self.server = to;
        // Another server may see another public endpoint (a symmetric NAT maps each server apart): that is
        // no move of ours, and the paths in use keep their own checks.
        self.reflexive = None;
        for peer in self.wanted.clone() {
            if self.agent.path(&peer).is_none() {
                self.retries.remove(&peer);
                self.send_connect(now, &peer);
            }
        }
        self.events.push_back(Event::ServerChanged { from, to });
    }

    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    pub fn public_key(&self) -> PublicKey {
        self.agent.public_key()
    }

    fn want(&mut self, peer: &PeerName) {
        if !self.wanted.contains(peer) {
            self.wanted.push(peer.clone());
        }
    }

    fn send_connect(&mut self, now: Instant, peer: &PeerName) {
        self.stats.connects += 1;
        self.client.connect(now, peer);
    }

    /// Ask again at `at` (unless an earlier retry is already set); returns the wait.
    fn schedule(&mut self, now: Instant, peer: &PeerName, at: Option<Instant>) -> Duration {
        let wait = match (at, self.retries.get(peer)) {
            (Some(at), _) => at.saturating_duration_since(now),
            (None, Some(r)) => (r.wait * 2).min(RECONNECT_MAX),
            (None, None) => RECONNECT_MIN,
        };
        let at = now + wait;
        let r = self.retries.entry(peer.clone()).or_insert(Retry { at, wait });
        r.at = r.at.min(at).max(now);
        r.wait = wait;
        wait
    }

    fn agent_candidates(&self) -> Vec<Candidate> {
        let mut c = self.reported_candidates();
        if let Some(r) = self.reflexive {
            c.push(Candidate { kind: CandidateKind::Reflexive, addr: r });
        }
        c
    }

    fn on_introduced(&mut self, now: Instant, intro: Introduction) {
        let pinned = self.peers.iter().find(|(n, _)| *n == intro.peer).map(|(_, k)| *k);
        let why = match pinned {
            None => Some(PeerError::Unknown(intro.peer.clone())),
            Some(k) if k != intro.key => Some(PeerError::KeyMismatch {
                peer: intro.peer.clone(),
                got: intro.key.to_base64(),
                want: k.to_base64(),
            }),
            Some(_) => None,
        };
        if let Some(why) = why {
            self.stats.refused_introductions += 1;
            warn!(target: LOG, "introduction of {} refused: {why}", intro.peer);
            self.events.push_back(Event::IntroductionRefused { peer: intro.peer, why });
            return;
        }
        self.stats.introductions += 1;
        let peer = intro.peer.clone();
        self.want(&peer);
        self.retries.remove(&peer);
        if let Err(why) = self.agent.introduce(now, intro) {
            self.stats.refused_introductions += 1;
            self.events.push_back(Event::IntroductionRefused { peer, why });
        }
        self.permit_known_peers(now);
    }

    fn on_client(&mut self, now: Instant, e: ClientEvent) {
        match e {
            ClientEvent::Registered { reflexive } => {
                let old = self.reflexive.replace(reflexive);
                match old {
                    Some(old) if old != reflexive => self.moved(now, old, reflexive),
                    _ => self.agent.set_local_candidates(self.agent_candidates()),
                }
                self.events.push_back(Event::Registered { reflexive });
            }
            ClientEvent::ReflexiveChanged { old, new } => {
                self.reflexive = Some(new);
                self.moved(now, old, new);
                self.events.push_back(Event::ReflexiveChanged { old, new });
            }
            ClientEvent::ServerLost => self.events.push_back(Event::ServerLost),
            ClientEvent::Refused(r) => self.events.push_back(Event::Refused(r)),
            ClientEvent::Introduced(i) => self.on_introduced(now, i),
            ClientEvent::TurnCredentials { username, password } => {
                if !self.relay_from_server {
                    return;
                }
                let credentials = crate::relay::TurnCredentials { username, password };
                let config = TurnClientConfig::new(self.local, self.server, credentials);
                // A running allocation keeps the credentials it was made with (a TURN server refuses another
                // username for it); renewed ones serve the next allocation.
                if self.relay.is_none() {
                    info!(target: LOG, "the rendezvous server relays too: allocating with its TURN credentials");
                    self.relay = Some(TurnClient::new(config.clone(), self.rng.fork(), now));
                }
                self.relay_config = Some(config);
            }
            ClientEvent::ConnectFailed { peer, reason } => {
                let retry_in = self.schedule(now, &peer, None);
                self.events.push_back(match reason {
                    ConnectFailure::PeerNotRegistered => Event::PeerNotRegistered { peer, retry_in },
                    reason => Event::ConnectFailed { peer, reason, retry_in },
                });
            }
        }
    }

    /// Our public endpoint moved: the agent punches again, and the peers (who only know the old endpoint) get
    /// fresh introductions.
    fn moved(&mut self, now: Instant, old: SocketAddr, new: SocketAddr) {
        info!(target: LOG, "our public endpoint moved from {old} to {new}: punching again");
        self.agent.set_local_candidates(self.agent_candidates());
        self.agent.local_reflexive_changed(now, new);
        for peer in self.wanted.clone() {
            self.retries.remove(&peer);
            self.send_connect(now, &peer);
        }
    }

    fn on_agent(&mut self, now: Instant, e: AgentEvent) {
        match &e {
            AgentEvent::PathDied { peer, .. } => {
                // Ask for a fresh introduction when the agent punches again (after its backoff).
                let at = match self.agent.peer_status(peer).map(|s| s.phase) {
                    Some(Phase::Backoff { until }) => Some(until),
                    _ => None,
                };
                let peer = peer.clone();
                self.want(&peer);
                self.schedule(now, &peer, at);
            }
            AgentEvent::NeedsRelay { peer, .. } => {
                // Nothing answered: the endpoints may have moved meanwhile; ask again, but rarely.
                let peer = peer.clone();
                self.schedule(now, &peer, Some(now + RECONNECT_MAX));
            }
            AgentEvent::PathOpened { peer, .. } => {
                self.retries.remove(peer);
            }
            _ => {}
        }
        // A path from our relayed address: a channel to the peer makes its data 4 bytes of overhead.
        if let AgentEvent::PathOpened { local, remote, .. } | AgentEvent::PathChanged { local, remote, .. } = &e {
            if Some(*local) == self.relayed {
                if let Some(r) = &mut self.relay {
                    r.add_peer(now, *remote);
                }
            }
        }
        let via = match &e {
            AgentEvent::PathOpened { peer, .. } | AgentEvent::PathChanged { peer, .. } => {
                self.agent.peer_status(peer).and_then(|s| s.remote_kind)
            }
            _ => None,
        };
        self.events.push_back(Event::Punch(e, via));
    }

    /// Route each engine's events to the other and to the daemon until both are quiet (bounded).
    fn settle(&mut self, now: Instant) {
        for _ in 0..MAX_SETTLE_ROUNDS {
            let mut any = false;
            while let Some(e) = self.client.poll_event() {
                any = true;
                self.on_client(now, e);
            }
            while let Some(e) = self.agent.poll_event() {
                any = true;
                self.on_agent(now, e);
            }
            while let Some(e) = self.relay.as_mut().and_then(|r| r.poll_event()) {
                any = true;
                self.on_relay(now, e);
            }
            if !any {
                return;
            }
        }
    }

    fn fire_retries(&mut self, now: Instant) {
        let due: Vec<PeerName> = self.retries.iter().filter(|(_, r)| r.at <= now).map(|(p, _)| p.clone()).collect();
        for peer in due {
            if let Some(r) = self.retries.get_mut(&peer) {
                // Kept (pushed far out) so a failure doubles the wait; an introduction or a path clears it.
                r.at = now + RECONNECT_MAX.max(r.wait);
            }
            info!(target: LOG, "asking the server to introduce {peer} again");
            self.send_connect(now, &peer);
        }
    }
}

impl Engine for Node {
    type Event = Event;

    /// The client takes rendezvous messages from the server, the agent peer checks and answers; anything
    /// else is counted and left (false), never answered.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if let Some(r) = &mut self.relay {
            if r.handle_input(now, input, data) {
                self.settle(now);
                return true;
            }
            // Relayed to us: a check or answer on our relayed address, from the peer's address.
            if let (Some((peer, payload)), Some(relayed)) = (r.unwrap(input, data), self.relayed) {
                let inner = Received { local: relayed, source: peer, transport: input.transport };
                if self.agent.handle_input(now, inner, payload) {
                    // The peer reaches us through our relay from `peer`: a channel makes its tunnel data
                    // ChannelData, which the data path takes without the node.
                    if let Some(r) = &mut self.relay {
                        r.add_peer(now, peer);
                    }
                    self.settle(now);
                } else {
                    self.stats.relayed_dropped += 1;
                }
                return true;
            }
        }
        let taken = self.client.handle_input(now, input, data) || self.agent.handle_input(now, input, data);
        if taken {
            self.settle(now);
        } else {
            self.stats.dropped += 1;
        }
        taken
    }

    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        let relay_hit = self.relay.as_mut().is_some_and(|r| r.handle_unreachable(now, local, dst));
        let hit = relay_hit
            || self.client.handle_unreachable(now, local, dst)
            || self.agent.handle_unreachable(now, local, dst);
        self.settle(now);
        hit
    }

    fn handle_timeout(&mut self, now: Instant) {
        // Silence far beyond our own timers (a suspended host, a stalled process): NAT mappings may be gone.
        if let Some(last) = self.last_call {
            if now.saturating_duration_since(last) > self.keepalive * 3 {
                info!(target: LOG, "{:?} without a wake-up: re-checking every path", now - last);
                self.agent.recheck(now);
            }
        }
        self.last_call = Some(now);
        self.fire_retries(now);
        self.fail_over(now);
        self.client.handle_timeout(now);
        self.agent.handle_timeout(now);
        self.relay_timeout(now);
        self.settle(now);
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(t) = self.client.poll_transmit(buf) {
            return Some(t);
        }
        if let Some(t) = self.relay.as_mut().and_then(|r| r.poll_transmit(buf)) {
            return Some(t);
        }
        // Checks and answers from our relayed address leave through the relay (bounded by the agent's queue).
        while let Some(t) = self.agent.poll_transmit(buf) {
            if Some(t.local) != self.relayed {
                return Some(t);
            }
            let payload = buf[..t.len.min(buf.len())].to_vec();
            match self.relay.as_ref().and_then(|r| r.wrap(t.dst, &payload, buf)) {
                Some(wrapped) => return Some(wrapped),
                None => debug!(target: LOG, "no permission on our relay for {}: check dropped", t.dst),
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.retries.values().map(|r| r.at).min();
        let relay = self.relay.as_ref().and_then(|r| r.poll_timeout());
        let relay_retry = self.relay_retry.map(|(at, _)| at);
        let failover = (self.servers.len() > 1).then(|| self.client.last_heard() + self.failover_after);
        [self.client.poll_timeout(), self.agent.poll_timeout(), retry, relay, relay_retry, failover]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

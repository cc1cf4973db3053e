//! One configured peer's punching state: its key material, the introduction in force, the candidate pairs,
//! the path in use, keepalive and re-punch timing, and birthday probing (docs/punchd.md, "Punching").

use super::birthday::Birthday;
use super::pair::{Pair, PairState, PairStatus, PathKind, RemoteKind};
use super::predict::Prediction;
use crate::identity::PublicKey;
use crate::nat::{Allocation, Mapping};
use crate::signal::{Introduction, PeerName, MAX_CANDIDATES};
use crate::transaction::check_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Where a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No introduction yet, or the re-punch budget is spent.
    Idle,
    /// Checks are running and no path is open yet.
    Punching,
    /// A path is open (better pairs may still be checked).
    Connected,
    /// Waiting before punching the same candidates again (after a failed attempt or a dead path).
    Backoff { until: Instant },
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Punching => "punching",
            Phase::Connected => "connected",
            Phase::Backoff { .. } => "backoff",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub name: PeerName,
    pub key: PublicKey,
    /// The peer's key id in check USERNAMEs.
    pub kid: String,
    pub probe_key: [u8; 32],
    pub intro: Option<Introduction>,
    pub prediction: Option<Prediction>,
    /// Whether this attempt's outcome was already compared with the prediction.
    pub judged: bool,
    pub pairs: Vec<Pair>,
    pub path: Option<u32>,
    pub phase: Phase,
    /// When the next waiting pair may be checked (pacing); None: at once.
    pub next_check: Option<Instant>,
    /// When the next keepalive goes out on the path; None: at once.
    pub next_keepalive: Option<Instant>,
    /// The last verified round trip on the path.
    pub last_ok: Option<Instant>,
    /// Failed punch attempts in a row (sets the backoff).
    pub failures: u32,
    /// Our public endpoint moved while the path was open: one unanswered keepalive ends the path.
    pub suspect: bool,
    /// A new introduction no longer lists the path's address: the first other pair that answers takes over.
    pub stale: bool,
    pub birthday: Option<Birthday>,
    /// Extra sockets the driver opened for this peer and not yet asked to close (at most one outlives
    /// birthday probing: the one a path runs on).
    pub extra: Vec<SocketAddr>,
    /// Our relayed address (a TURN allocation), when we hold one: pairs from it are relay paths.
    pub relayed: Option<SocketAddr>,
    /// A verified relay pair held back while direct pairs may still answer (direct beats relay).
    pub relay_ready: Option<u32>,
    /// When the current attempt started.
    pub punch_started: Option<Instant>,
    /// On a relay path: when the direct pairs are checked again.
    pub next_upgrade: Option<Instant>,
}

impl Peer {
    pub fn new(name: PeerName, key: PublicKey, probe_key: [u8; 32]) -> Peer {
        Peer {
            kid: super::auth::key_id(&key),
            name,
            key,
            probe_key,
            intro: None,
            prediction: None,
            judged: false,
            pairs: Vec::new(),
            path: None,
            phase: Phase::Idle,
            next_check: None,
            next_keepalive: None,
            last_ok: None,
            failures: 0,
            suspect: false,
            stale: false,
            birthday: None,
            extra: Vec::new(),
            relayed: None,
            relay_ready: None,
            punch_started: None,
            next_upgrade: None,
        }
    }

    pub fn pair(&self, id: u32) -> Option<&Pair> {
        self.pairs.iter().find(|p| p.id == id)
    }

    pub fn pair_mut(&mut self, id: u32) -> Option<&mut Pair> {
        self.pairs.iter_mut().find(|p| p.id == id)
    }

    pub fn path_pair(&self) -> Option<&Pair> {
        self.path.and_then(|id| self.pair(id))
    }

    pub fn path_kind_of(&self, pair: &Pair) -> PathKind {
        pair.path_kind(self.intro.as_ref(), self.relayed)
    }

    /// The next pair to check: the best waiting one (pairs are kept in check order).
    pub fn next_waiting(&self) -> Option<u32> {
        self.pairs.iter().find(|p| p.state == PairState::Waiting).map(|p| p.id)
    }

    /// True while a direct (not relayed) pair of this attempt may still answer.
    pub fn direct_pending(&self, now: Instant) -> bool {
        self.pairs.iter().any(|p| {
            matches!(p.state, PairState::Waiting | PairState::InProgress) && self.path_kind_of(p) != PathKind::Relay
        }) || self.birthday.as_ref().is_some_and(|b| b.active(now))
    }

    /// True while some check of this attempt may still answer.
    pub fn checks_pending(&self, now: Instant) -> bool {
        self.pairs.iter().any(|p| matches!(p.state, PairState::Waiting | PairState::InProgress))
            || self.birthday.as_ref().is_some_and(|b| b.active(now))
    }

    pub fn status(&self) -> PeerStatus {
        let path = self.path_pair();
        PeerStatus {
            name: self.name.clone(),
            key: self.key,
            phase: self.phase,
            path: path.map_or(PathKind::None, |p| self.path_kind_of(p)),
            local: path.map(|p| p.local),
            remote: path.map(|p| p.remote),
            remote_kind: path.map(|p| p.kind),
            rtt: path.and_then(|p| p.rtt).map(|r| r.srtt),
            last_keepalive: self.last_ok,
            prediction: self.prediction,
            pairs: self.pairs.iter().map(PairStatus::from).collect(),
            session: self.intro.as_ref().map(|i| i.session),
            failures: self.failures,
            birthday_probes: self.birthday.as_ref().map(|b| b.sent),
        }
    }
}

/// A peer as `punchd status` shows it. Plain values: the binary serializes them (docs/punchd.md gives the
/// JSON schema) and turns instants into ages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub name: PeerName,
    pub key: PublicKey,
    pub phase: Phase,
    pub path: PathKind,
    /// Our socket the path runs on (the punching socket, or an extra socket birthday probing kept).
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub remote_kind: Option<RemoteKind>,
    /// Smoothed round-trip time of the path (RFC 6298).
    pub rtt: Option<Duration>,
    /// The last verified round trip on the path (a keepalive or a check answered).
    pub last_keepalive: Option<Instant>,
    pub prediction: Option<Prediction>,
    pub pairs: Vec<PairStatus>,
    /// The introduction in force.
    pub session: Option<u64>,
    /// Failed punch attempts in a row.
    pub failures: u32,
    /// Birthday probes sent (easy side) or sockets probed from (hard side) in this attempt.
    pub birthday_probes: Option<u32>,
}

/// The remote addresses to check for an introduction, best first: the peer's own candidates (relayed ones
/// are not punched), its reflexive endpoint, and, when its NAT maps per destination with a predictable
/// allocation, the next `window` ports after the reflexive one (RFC 5128 §3.4: each new destination takes the
/// next port; our own checks to its other candidates may take some first, hence a window).
pub(crate) fn remote_addresses(intro: &Introduction, window: u16) -> Vec<(SocketAddr, RemoteKind)> {
    let mut out: Vec<(SocketAddr, RemoteKind)> = Vec::new();
    let mut push = |addr: SocketAddr, kind: RemoteKind| {
        // The rendezvous names these addresses, so the rule for addresses a server names applies
        // (docs/transactions.md): never unspecified, broadcast, multicast, reserved or port 0. Private and
        // loopback addresses are legitimate host candidates, so the address is judged in its own scope.
        if check_target(addr, addr).is_err() {
            return;
        }
        match out.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, k)) => *k = (*k).min(kind),
            None => out.push((addr, kind)),
        }
    };
    for c in intro.candidates.iter().take(MAX_CANDIDATES) {
        if let Some(kind) = RemoteKind::of(c.kind) {
            push(c.addr, kind);
        }
    }
    push(intro.reflexive, RemoteKind::Reflexive);
    let p = intro.profile;
    let delta = match p.allocation {
        _ if !p.mapping.is_dependent() && p.mapping != Mapping::Unknown => None,
        Allocation::Sequential { delta } => Some(delta),
        Allocation::Preserved => Some(1),
        _ => None,
    };
    if let Some(delta) = delta.filter(|d| *d != 0) {
        for k in 1..=i32::from(window) {
            let port = i32::from(intro.reflexive.port()) + delta * k;
            if let Ok(port) = u16::try_from(port) {
                push(SocketAddr::new(intro.reflexive.ip(), port), RemoteKind::Predicted);
            }
        }
    }
    out.sort_by_key(|(_, k)| *k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::Filtering;
    use crate::signal::{Candidate, CandidateKind, NatProfile};

    fn intro(profile: NatProfile) -> Introduction {
        Introduction {
            peer: PeerName::new("bob").unwrap(),
            key: PublicKey([1; 32]),
            reflexive: "198.51.100.2:5000".parse().unwrap(),
            candidates: vec![
                Candidate { kind: CandidateKind::Reflexive, addr: "198.51.100.2:5000".parse().unwrap() },
                Candidate { kind: CandidateKind::Host, addr: "192.168.1.2:6666".parse().unwrap() },
                Candidate { kind: CandidateKind::Relayed, addr: "203.0.113.1:9".parse().unwrap() },
                Candidate { kind: CandidateKind::Predicted, addr: "198.51.100.2:5002".parse().unwrap() },
                Candidate { kind: CandidateKind::Host, addr: "255.255.255.255:6666".parse().unwrap() },
                Candidate { kind: CandidateKind::Host, addr: "224.0.0.1:6666".parse().unwrap() },
                Candidate { kind: CandidateKind::Host, addr: "192.168.1.3:0".parse().unwrap() },
            ],
            profile,
            session: 1,
        }
    }

    #[test]
    fn addresses_in_check_order_deduplicated_with_predictions() {
        let seq = NatProfile {
            mapping: Mapping::AddressAndPortDependent,
            filtering: Filtering::AddressAndPortDependent,
            allocation: Allocation::Sequential { delta: 2 },
            ..NatProfile::UNKNOWN
        };
        let got = remote_addresses(&intro(seq), 3);
        let want: Vec<(SocketAddr, RemoteKind)> = vec![
            ("192.168.1.2:6666".parse().unwrap(), RemoteKind::Host),
            ("198.51.100.2:5000".parse().unwrap(), RemoteKind::Reflexive),
            ("198.51.100.2:5002".parse().unwrap(), RemoteKind::Predicted),
            ("198.51.100.2:5004".parse().unwrap(), RemoteKind::Predicted),
            ("198.51.100.2:5006".parse().unwrap(), RemoteKind::Predicted),
            // The peer's relay comes last: checked only after everything direct.
            ("203.0.113.1:9".parse().unwrap(), RemoteKind::Relayed),
        ];
        assert_eq!(got, want);
        let cone = NatProfile { mapping: Mapping::EndpointIndependent, allocation: Allocation::Preserved, ..seq };
        assert_eq!(remote_addresses(&intro(cone), 3).len(), 4, "no predictions for a cone, reported ones kept");
        let down = NatProfile { allocation: Allocation::Sequential { delta: -1 }, ..seq };
        let got: Vec<u16> = remote_addresses(&intro(down), 2)
            .into_iter()
            .filter(|(_, k)| *k == RemoteKind::Predicted)
            .map(|(a, _)| a.port())
            .collect();
        assert_eq!(got, vec![5002, 4999, 4998], "a downward step predicts downwards (5002 was reported)");
    }
}

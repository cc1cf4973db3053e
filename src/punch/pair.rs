//! Candidate pairs (RFC 8445 §6.1.2 in spirit, without ICE's priorities or roles): one of our sockets and one
//! address of the peer, checked in order of the remote candidate's kind, with the state of its check and the
//! round-trip time it measured (RFC 6298 smoothing).

use crate::net::RttEstimate;
use crate::signal::{CandidateKind, Introduction};
use crate::transaction::TxKey;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// Where a pair's remote address came from, in the order pairs are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RemoteKind {
    /// One of the peer's LAN addresses.
    Host,
    /// A port mapping the peer's router made on request.
    PortMapped,
    /// The peer's public endpoint as the rendezvous saw it.
    Reflexive,
    /// A port predicted from the peer's sequential allocation.
    Predicted,
    /// A source address the peer's verified check came from (RFC 8445 §7.3.1.3).
    PeerReflexive,
    /// A port met by birthday probing.
    Birthday,
    /// An address on the peer's TURN relay (the last resort: checked after every other kind).
    Relayed,
}

impl RemoteKind {
    /// The kind of a candidate the peer reported.
    pub fn of(kind: CandidateKind) -> Option<RemoteKind> {
        Some(match kind {
            CandidateKind::Host => RemoteKind::Host,
            CandidateKind::PortMapped => RemoteKind::PortMapped,
            CandidateKind::Reflexive => RemoteKind::Reflexive,
            CandidateKind::Predicted => RemoteKind::Predicted,
            CandidateKind::Relayed => RemoteKind::Relayed,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::Host => "host",
            RemoteKind::PortMapped => "port-mapped",
            RemoteKind::Reflexive => "reflexive",
            RemoteKind::Predicted => "predicted",
            RemoteKind::PeerReflexive => "peer-reflexive",
            RemoteKind::Birthday => "birthday",
            RemoteKind::Relayed => "relayed",
        }
    }
}

impl fmt::Display for RemoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a pair's check (RFC 8445 §6.1.2.6 names, without Frozen: pairs are paced instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairState {
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

impl PairState {
    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Waiting => "waiting",
            PairState::InProgress => "in-progress",
            PairState::Succeeded => "succeeded",
            PairState::Failed => "failed",
        }
    }
}

/// What kind of path a pair is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// To one of the peer's LAN addresses.
    Lan,
    /// Through the NATs, over the public internet.
    Direct,
    /// Through a TURN relay: ours (the pair's local address is our relayed address) or the peer's (a
    /// relayed candidate).
    Relay,
    /// No path.
    None,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Lan => "lan",
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
            PathKind::None => "none",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pair's running transaction: in the one-shot table (birthday probes) or the check table, and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxRef {
    pub oneshot: bool,
    pub key: TxKey,
}

/// One candidate pair.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    pub id: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub kind: RemoteKind,
    pub state: PairState,
    /// The running check or keepalive transaction.
    pub tx: Option<TxRef>,
    pub rtt: Option<RttEstimate>,
    /// The last verified round trip.
    pub last_ok: Option<Instant>,
    /// Our address as the peer saw it in the last answer (XOR-MAPPED-ADDRESS).
    pub mapped: Option<SocketAddr>,
}

impl Pair {
    pub fn new(id: u32, local: SocketAddr, remote: SocketAddr, kind: RemoteKind) -> Pair {
        Pair { id, local, remote, kind, state: PairState::Waiting, tx: None, rtt: None, last_ok: None, mapped: None }
    }

    /// A LAN path: to a host candidate that is not also the peer's public address (a peer without NAT
    /// reports its public address as a host candidate).
    pub fn path_kind(&self, intro: Option<&Introduction>, relayed: Option<SocketAddr>) -> PathKind {
        let public = intro.map(|i| i.reflexive.ip());
        if self.kind == RemoteKind::Relayed || relayed == Some(self.local) {
            PathKind::Relay
        } else if self.kind == RemoteKind::Host && public != Some(self.remote.ip()) {
            PathKind::Lan
        } else {
            PathKind::Direct
        }
    }
}

/// Plain view of a pair for the status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairStatus {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub kind: RemoteKind,
    pub state: PairState,
    pub rtt: Option<std::time::Duration>,
}

impl From<&Pair> for PairStatus {
    fn from(p: &Pair) -> PairStatus {
        PairStatus { local: p.local, remote: p.remote, kind: p.kind, state: p.state, rtt: p.rtt.map(|r| r.srtt) }
    }
}

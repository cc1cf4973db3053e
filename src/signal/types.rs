//! Values the rendezvous carries and the punch engine consumes (docs/architecture.md, "Candidates and path
//! choice").

use crate::identity::PublicKey;
use crate::nat::{Allocation, Filtering, Mapping};
use std::fmt;
use std::net::SocketAddr;
use thiserror::Error;

/// Most candidates a peer reports: every LAN address, a port mapping, the reflexive address and a few
/// predicted ports fit; more would only let a registration grow the server's memory.
pub const MAX_CANDIDATES: usize = 16;

/// The human name a peer registers under (`--peer-id`): 1–32 bytes of ASCII letters, digits, `.`, `_`, `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(String);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("a peer name is 1 to {max} bytes, this one is {0}", max = PeerName::MAX_LEN)]
    Length(usize),
    #[error("a peer name may hold ASCII letters, digits, '.', '_' and '-' only")]
    Character,
}

impl PeerName {
    pub const MAX_LEN: usize = 32;

    pub fn new(name: &str) -> Result<PeerName, NameError> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(NameError::Length(name.len()));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(NameError::Character);
        }
        Ok(PeerName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerName({})", self.0)
    }
}

impl std::str::FromStr for PeerName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        PeerName::new(s)
    }
}

/// The name of one rendezvous server of a cluster sharing its registrations (stund `--instance-id`,
/// docs/signal.md "Cluster"): the same alphabet and length as a [`PeerName`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn new(id: &str) -> Result<InstanceId, NameError> {
        PeerName::new(id).map(|p| InstanceId(p.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a candidate address comes from, in the order paths are preferred (docs/architecture.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// An address of the punching socket on a local interface (LAN path).
    Host,
    /// A mapping the router made on request (NAT-PMP, PCP, UPnP IGD).
    PortMapped,
    /// The public endpoint the rendezvous server saw (server-reflexive).
    Reflexive,
    /// A port predicted from a sequential allocation.
    Predicted,
    /// An address on a TURN relay.
    Relayed,
}

impl CandidateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::PortMapped => "port-mapped",
            CandidateKind::Reflexive => "reflexive",
            CandidateKind::Predicted => "predicted",
            CandidateKind::Relayed => "relayed",
        }
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One address a peer may be reached at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub kind: CandidateKind,
    pub addr: SocketAddr,
}

/// What a peer knows of its own NAT (from the diagnosis engine), sent with its registration so both sides can
/// predict whether a direct path will open and how (docs/punchd.md, "Prediction").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatProfile {
    pub mapping: Mapping,
    pub filtering: Filtering,
    pub allocation: Allocation,
    /// The router hairpins (RFC 5780 §4.5); `None` when not tested.
    pub hairpin: Option<bool>,
    /// The router offered a port mapping (NAT-PMP, PCP or UPnP).
    pub port_mapping: bool,
    /// No NAT between the peer and the server (the local address is public).
    pub no_nat: bool,
}

impl NatProfile {
    /// Nothing known: predictions assume the worst that still allows trying.
    pub const UNKNOWN: NatProfile = NatProfile {
        mapping: Mapping::Unknown,
        filtering: Filtering::Unknown,
        allocation: Allocation::Unknown,
        hairpin: None,
        port_mapping: false,
        no_nat: false,
    };
}

/// The server's push: "punch towards this peer now".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introduction {
    pub peer: PeerName,
    pub key: PublicKey,
    /// The peer's endpoint as the server sees it (its registration's source).
    pub reflexive: SocketAddr,
    /// Every candidate the peer reported, at most [`MAX_CANDIDATES`].
    pub candidates: Vec<Candidate>,
    pub profile: NatProfile,
    /// Identifies one introduction; repeated pushes of the same one carry the same id (idempotent).
    pub session: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names() {
        assert_eq!(PeerName::new("alice").unwrap().as_str(), "alice");
        assert!(PeerName::new("bob-2.lab_x").is_ok());
        assert_eq!(PeerName::new(""), Err(NameError::Length(0)));
        assert_eq!(PeerName::new(&"a".repeat(33)), Err(NameError::Length(33)));
        assert_eq!(PeerName::new("al ice"), Err(NameError::Character));
        assert_eq!(PeerName::new("ålice"), Err(NameError::Character));
        assert_eq!(PeerName::new("a\u{1b}[2J"), Err(NameError::Character));
    }

    #[test]
    fn candidate_kinds_order_as_preferred() {
        use CandidateKind::*;
        let mut kinds = [Relayed, Predicted, Host, Reflexive, PortMapped];
        kinds.sort();
        assert_eq!(kinds, [Host, PortMapped, Reflexive, Predicted, Relayed]);
    }
}

//! The result of a diagnosis: every measured behaviour with the reason behind it, what could not be tested,
//! and the plain-words verdict.

use super::behaviour::{Allocation, Filtering, Mapping, Observation, Verdict};
use crate::transaction::FailReason;
use std::net::SocketAddr;
use std::time::Duration;

/// What one server said to the primary socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReport {
    /// The address the requests went to.
    pub addr: SocketAddr,
    /// Public endpoint it reported for the primary socket (`None`: no usable answer).
    pub mapped: Option<SocketAddr>,
    /// OTHER-ADDRESS (RFC 5780 §7.4) or, from an RFC 3489 server, CHANGED-ADDRESS.
    pub alternate: Option<SocketAddr>,
    /// True when the answer looked like RFC 3489 (no XOR-MAPPED-ADDRESS, or CHANGED-ADDRESS instead of
    /// OTHER-ADDRESS).
    pub legacy: bool,
    /// SOFTWARE attribute, if sent.
    pub software: Option<String>,
    /// Why there is no answer, if there is none.
    pub error: Option<FailReason>,
    /// Smoothed round-trip time to this address (RFC 6298 SRTT), if a request to it was answered at once.
    pub srtt: Option<Duration>,
    /// The RTO the next transaction to this address would start with (RFC 8489 §6.2.1 cache).
    pub rto: Duration,
}

/// Lifetime bracket from RFC 5780 §4.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimeRange {
    /// Longest idle time after which the mapping still worked.
    pub alive: Duration,
    /// Shortest idle time after which it was gone (`None`: never seen gone within `--max-wait`).
    pub expired: Option<Duration>,
}

/// The classic (RFC 3489-style) name of the combination, handy for people and scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    OpenInternet,
    FirewallWithoutNat,
    NoNat,
    FullCone,
    RestrictedCone,
    PortRestrictedCone,
    Cone,
    Symmetric,
    Unknown,
}

impl NatKind {
    /// Stable name used in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            NatKind::OpenInternet => "open-internet",
            NatKind::FirewallWithoutNat => "firewall-without-nat",
            NatKind::NoNat => "no-nat",
            NatKind::FullCone => "full-cone",
            NatKind::RestrictedCone => "restricted-cone",
            NatKind::PortRestrictedCone => "port-restricted-cone",
            NatKind::Cone => "cone",
            NatKind::Symmetric => "symmetric",
            NatKind::Unknown => "unknown",
        }
    }
}

/// Everything the diagnosis found.
#[derive(Clone, Debug)]
pub struct Report {
    /// Local address of the primary socket (the one bound to `--local-port`).
    pub local: SocketAddr,
    /// Its public endpoint as the reference server saw it.
    pub public: Option<SocketAddr>,
    /// The server the RFC 5780 tests ran against.
    pub reference: Option<SocketAddr>,
    /// Whether an address translation happens at all (`None`: no answer).
    pub nat: Option<bool>,
    pub nat_reason: String,
    pub kind: NatKind,
    pub mapping: Mapping,
    pub mapping_reason: String,
    pub filtering: Filtering,
    pub filtering_reason: String,
    /// Public port == local port on the primary socket.
    pub port_preserved: Option<bool>,
    pub allocation: Allocation,
    pub allocation_reason: String,
    /// (local, public) of the fresh sockets used for the allocation test, in order.
    pub allocation_samples: Vec<(SocketAddr, SocketAddr)>,
    pub hairpin: Option<bool>,
    pub hairpin_reason: String,
    /// MAPPED-ADDRESS rewritten on the way (an ALG at work).
    pub alg: Option<bool>,
    pub alg_reason: String,
    /// `None` when the lifetime test was not asked for.
    pub lifetime: Option<Result<LifetimeRange, String>>,
    /// True when RFC 5780 tests ran (a server sent OTHER-ADDRESS or CHANGED-ADDRESS).
    pub rfc5780: bool,
    /// True when the tests ran against an RFC 3489 server.
    pub legacy: bool,
    /// The primary socket's mappings towards every destination that answered.
    pub observations: Vec<Observation>,
    pub servers: Vec<ServerReport>,
    pub verdict: Verdict,
    pub verdict_reason: String,
    /// One line per test that could not run or gave no answer.
    pub not_tested: Vec<String>,
    /// Other remarks (legacy server, several public addresses, ...).
    pub notes: Vec<String>,
}

impl Report {
    /// True when no server answered at all.
    pub fn no_answer(&self) -> bool {
        self.public.is_none()
    }

    /// The report when no server answered test I: every result unknown, for the same reason.
    pub fn unanswered(
        local: SocketAddr,
        reference: Option<SocketAddr>,
        servers: Vec<ServerReport>,
        lifetime_asked: bool,
        notes: Vec<String>,
    ) -> Report {
        let reason = "no STUN server answered: UDP may be blocked, or the servers are down or wrong".to_string();
        Report {
            local,
            public: None,
            reference,
            nat: None,
            nat_reason: reason.clone(),
            kind: NatKind::Unknown,
            mapping: Mapping::Unknown,
            mapping_reason: reason.clone(),
            filtering: Filtering::Unknown,
            filtering_reason: reason.clone(),
            port_preserved: None,
            allocation: Allocation::Unknown,
            allocation_reason: reason.clone(),
            allocation_samples: Vec::new(),
            hairpin: None,
            hairpin_reason: reason.clone(),
            alg: None,
            alg_reason: reason.clone(),
            lifetime: lifetime_asked.then(|| Err(reason.clone())),
            rfc5780: false,
            legacy: false,
            observations: Vec::new(),
            servers,
            verdict: Verdict::Unknown,
            verdict_reason: reason.clone(),
            not_tested: vec![format!("everything: {reason}")],
            notes,
        }
    }
}

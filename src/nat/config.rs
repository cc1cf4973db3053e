//! What a diagnosis is asked to do ([`Config`]), which local socket plays which role ([`SocketPlan`]), and
//! why a configuration is refused ([`ConfigError`], in terms of values: the binaries map them to their flags).

use super::diagnosis::lifetime::LIFETIME_SOCKETS;
use crate::net::{Retransmit, Seed, DEFAULT_MIN_RTO};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Diagnosis settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// STUN servers, already resolved; all of one address family. The first one that advertises an
    /// alternate address carries the RFC 5780 tests.
    pub servers: Vec<SocketAddr>,
    /// Request retransmission (RFC 8489 §6.2.1). `retransmit.rto` is the RTO of the first transaction to each
    /// address and the ceiling of every learned one.
    pub retransmit: Retransmit,
    /// Floor of an RTO learned from measured round trips ([`DEFAULT_MIN_RTO`]); `retransmit.rto` or more
    /// turns learning off (every transaction uses `retransmit.rto`).
    pub min_rto: Duration,
    /// Fresh sockets used to classify port allocation (0 skips the test).
    pub allocation_samples: usize,
    /// Run the hairpinning test (RFC 5780 §4.5).
    pub hairpin: bool,
    /// Run the lifetime test (RFC 5780 §4.6) bounded by this wait.
    pub lifetime: Option<Duration>,
    /// Seed for transaction ids; the caller supplies randomness so the engine stays deterministic.
    pub seed: Seed,
}

impl Config {
    /// Defaults for `servers`: RFC 8489 retransmission, 4 allocation samples, hairpin on, no lifetime.
    pub fn new(servers: Vec<SocketAddr>, seed: Seed) -> Self {
        Config {
            servers,
            retransmit: Retransmit::default(),
            min_rto: DEFAULT_MIN_RTO,
            allocation_samples: 4,
            hairpin: true,
            lifetime: None,
            seed,
        }
    }

    /// Which socket index plays which role.
    pub fn plan(&self) -> SocketPlan {
        let alloc_start = 3;
        let lifetime_start = alloc_start + self.allocation_samples;
        let lifetime_len = if self.lifetime.is_some() { LIFETIME_SOCKETS } else { 0 };
        SocketPlan {
            primary: 0,
            filtering: 1,
            hairpin: 2,
            allocation: alloc_start..lifetime_start,
            lifetime: lifetime_start..lifetime_start + lifetime_len,
        }
    }
}

/// Socket indices by role: the caller opens [`SocketPlan::count`] sockets and passes their local addresses in
/// this order. Index 0 is the only one that should be bound to a chosen port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketPlan {
    pub primary: usize,
    pub filtering: usize,
    pub hairpin: usize,
    pub allocation: std::ops::Range<usize>,
    /// First index is the prober, the rest are the idle sockets.
    pub lifetime: std::ops::Range<usize>,
}

impl SocketPlan {
    /// How many sockets the caller must open.
    pub fn count(&self) -> usize {
        self.lifetime.end.max(self.allocation.end).max(3)
    }
}

/// Why a [`Diagnosis`](super::Diagnosis) could not be set up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no STUN server given")]
    NoServer,
    #[error("{got} local sockets given, the plan needs {want}")]
    SocketCount { got: usize, want: usize },
    #[error("server {0} and the local sockets are of different address families")]
    MixedFamilies(SocketAddr),
    /// Local addresses identify the sockets, so each must be distinct.
    #[error("local socket address {0} given twice")]
    DuplicateSocket(SocketAddr),
    #[error("lifetime wait is zero")]
    ZeroLifetime,
}

//! RFC 5780 NAT behaviour discovery (client side), as a sans-IO engine.
//!
//! - [`behaviour`]: the RFC 4787 behaviour names and the pure inference from test outcomes (RFC 5780 §4.3,
//!   §4.4), the port allocation classifier and the verdict names.
//! - [`config`]: what to test ([`Config`]) and which socket plays which role ([`SocketPlan`]).
//! - [`diagnosis`]: the engine ([`Diagnosis`], a [`crate::net::Engine`]) that runs every test over several
//!   local sockets, each request a [`crate::transaction`] transaction.
//! - [`report`]: what it found ([`Report`]); [`verdict`]: the plain-words verdict from the behaviours.

pub mod behaviour;
pub mod config;
pub mod diagnosis;
pub mod report;
pub mod verdict;

pub use crate::net::{Retransmit, RtoCache, RttEstimate, DEFAULT_MIN_RTO};
pub use crate::transaction::FailReason;
pub use behaviour::{Allocation, Filtering, Mapping, Observation, Verdict};
pub use config::{Config, ConfigError, SocketPlan};
pub use diagnosis::{Diagnosis, Event};
pub use report::{LifetimeRange, NatKind, Report, ServerReport};

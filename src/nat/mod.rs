//! RFC 5780 NAT behaviour discovery (client side), as a sans-IO engine.
//!
//! - [`behaviour`]: the RFC 4787 behaviour names and the pure inference from test outcomes (RFC 5780 §4.3,
//!   §4.4), the port allocation classifier and the verdict names.
//! - [`diagnosis`]: the engine ([`Diagnosis`]) that runs every test over several local sockets.
//! - [`report`]: what it found ([`Report`]).

pub mod behaviour;
pub mod diagnosis;
pub mod report;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use crate::net::{Retransmit, RtoCache, RttEstimate, DEFAULT_MIN_RTO};
pub use behaviour::{Allocation, Filtering, Mapping, Observation, Verdict};
pub use diagnosis::{Config, ConfigError, Diagnosis, Event, SocketPlan, Transmit};
pub use report::{LifetimeRange, NatKind, Report, ServerReport};

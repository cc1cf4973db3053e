//! Peer-side punching (docs/punchd.md, "Punching"):
//!
//! - [`ReflexiveKeeper`] learns the peer's public (server-reflexive) endpoint from a STUN server over the one
//!   punching socket, keeps the NAT mapping alive with periodic Binding requests, and reports when the
//!   endpoint changes (the trigger for a re-punch).
//! - [`Agent`] punches towards every configured peer the rendezvous introduces: authenticated checks on
//!   candidate pairs, the path and its keepalives, re-punching, prediction and birthday probing.
//! - [`Node`]: the rendezvous client and the agent on one socket, as punchd runs them.
//! - [`predict`]: the expected outcome from both peers' NAT behaviour, a pure function.

mod agent;
pub mod auth;
mod birthday;
mod event;
mod node;
mod pair;
mod peer;
mod predict;
mod reflexive;

#[cfg(test)]
mod tests;

pub use agent::{Agent, AgentConfig, PeerError, DEFAULT_PRIMER_TTL};
pub use event::{DeathReason, Event as AgentEvent, RelayReason, SwitchReason};
pub use node::{Event as NodeEvent, Node, NodeConfig, NodeStats};
pub use pair::{PairState, PairStatus, PathKind, RemoteKind};
pub use peer::{PeerStatus, Phase};
pub use predict::{birthday_role, predict, predict_with, BirthdayParams, BirthdayRole, Prediction};
pub use reflexive::{Event, KeeperConfig, ReflexiveKeeper};

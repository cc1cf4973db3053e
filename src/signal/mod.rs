//! Rendezvous (docs/signal.md): peers register with the server from their punching socket, and the server
//! introduces two peers to each other by pushing each one the other's candidates in the same instant.
//!
//! - [`types`]: what crosses between the rendezvous and the punch engines: peer names, candidates, the NAT
//!   profile a peer reports, and the introduction the server pushes.
//! - [`wire`]: methods, attributes and their typed encoders over the STUN codec; [`is_signal_message`].
//! - [`auth`]: per-peer keys from the network secret, stateless nonces.
//! - [`registry`]: the [`Registry`] trait and the in-memory backend.
//! - [`server`]: the server engine; [`client`]: the peer's engine.
//! - [`cluster`]: what the servers of a cluster sharing registrations tell each other.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod codes;
pub mod registry;
pub mod server;
pub mod types;
pub mod wire;

#[cfg(test)]
mod tests;

pub use auth::{NetworkSecret, NonceMint, PeerAuthKey};
pub use client::{Client, ClientConfig, ConnectFailure, Event as ClientEvent, RefuseReason};
pub use cluster::{ClusterMessage, ClusterWireError};
pub use registry::{MemoryRegistry, RegisterOutcome, Registration, Registry, RegistryError};
pub use server::{ClusterOut, Event as ServerEvent, Refusal, Server, ServerConfig, Stats, TurnGrant};
pub use types::{Candidate, CandidateKind, InstanceId, Introduction, NameError, NatProfile, PeerName, MAX_CANDIDATES};
pub use wire::is_signal_message;

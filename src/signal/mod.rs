//! Rendezvous (docs/signal.md): peers register with the server from their punching socket, and the server
//! introduces two peers to each other by pushing each one the other's candidates in the same instant.
//!
//! - [`types`]: what crosses between the rendezvous and the punch engines: peer names, candidates, the NAT
//!   profile a peer reports, and the introduction the server pushes.

pub mod types;

pub use types::{Candidate, CandidateKind, Introduction, NameError, NatProfile, PeerName, MAX_CANDIDATES};

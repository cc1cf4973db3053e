//! TURN relay (RFC 8656), server and client: a sans-IO engine on the library's engine contract (docs/architecture.md,
//! "Relay"), over the STUN codec's TURN methods and attributes and its ChannelData framing.
//!
//! - [`server`]: the engine — allocations, permissions, channels, relayed data, lifetimes (its request
//!   handlers in `server/requests.rs`, the data path in `server/data.rs`).
//! - [`client`]: the client side — one allocation from the caller's socket, permissions, channels, framing.
//! - [`allocation`]: one allocation's state and its memory bound.
//! - [`auth`]: long-term credentials (static users and TURN REST shared-secret credentials), nonces.
//! - [`policy`]: which peer addresses may be relayed to.

pub mod allocation;
pub mod auth;
pub mod client;
pub mod policy;
pub mod server;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod tests;

pub use allocation::{Allocation, MAX_CHANNELS, MAX_PERMISSIONS};
pub use auth::{rest_password, Credentials};
pub use client::{AllocationError, TurnClient, TurnClientConfig, TurnCredentials, TurnEvent, MAX_RELAY_PEERS};
pub use policy::{Denied, IpRange, PeerPolicy, RangeError};
pub use server::{is_turn_message, Event, RelayConfig, RelayServer, Stats, MAX_DATAGRAM, MAX_PEER_DATA};

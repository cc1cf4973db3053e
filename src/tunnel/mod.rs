//! The encrypted tunnel (docs/tunnel.md): WireGuard (boringtun's `noise::Tunn`) over whatever path the node
//! verified, with cryptokey routing between peers, overlay addressing and the MTU arithmetic. Sans-IO: the
//! binaries own the TUN device and the sockets.

pub mod address;
pub mod mtu;
pub mod packet;
pub mod routes;
mod wireguard;

pub use address::{derived_address, DEFAULT_OVERLAY};
pub use wireguard::{
    Decapsulated, Drop, Encapsulated, Endpoint, EndpointSource, PeerId, Rejection, Tunnel, TunnelConfig, TunnelError,
    TunnelPeerConfig, TunnelPeerStatus, MAX_PEERS, MIN_BUFFER, TIMER_TICK,
};

#[cfg(test)]
mod tests;

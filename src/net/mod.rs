//! The one engine contract of the library (docs/architecture.md, "Engines").
//!
//! Every protocol piece — NAT diagnosis, the reflexive keeper, the port-mapping clients, the STUN responder,
//! and the rendezvous, punching, tunnel and relay engines built on them — is a sans-IO state machine with the
//! same shape, the way quinn-proto, str0m and Firezone's snownet each have exactly one: the caller feeds it
//! received datagrams ([`Engine::handle_input`]) and the passing of time ([`Engine::handle_timeout`]), and
//! drains what it wants sent ([`Engine::poll_transmit`]), when it wants to be woken ([`Engine::poll_timeout`])
//! and what it has to say ([`Engine::poll_event`]). Engines never touch a socket, a clock, a file or a thread;
//! drivers (the `io` module, the binaries, the simulator) do.
//!
//! Engines compose on one socket: a datagram is offered to each engine in turn until one consumes it
//! (`handle_input` returns true); timeouts are the earliest of all; transmits are drained from all.

mod prefix;
mod retransmit;
mod rng;

pub use prefix::{IpPrefix, PrefixError};
pub use retransmit::{Retransmit, RtoCache, RttEstimate, CLOCK_GRANULARITY, DEFAULT_MIN_RTO};
pub use rng::{Rng, Seed};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// The IANA port of STUN and TURN over UDP and TCP (RFC 8489 §18.6, RFC 8656 §18.7).
pub const DEFAULT_STUN_PORT: u16 = 3478;

/// Transport a datagram or frame arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Where an input came from: the local socket address it arrived on, the remote source, the transport.
/// For TCP, `local` and `source` are the connection's two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Received {
    pub local: SocketAddr,
    pub source: SocketAddr,
    pub transport: Transport,
}

impl Received {
    /// A UDP datagram from `source` received on `local`.
    pub fn udp(local: SocketAddr, source: SocketAddr) -> Received {
        Received { local, source, transport: Transport::Udp }
    }
}

/// A datagram an engine wants sent: `buf[..len]` of the buffer given to [`Engine::poll_transmit`], from the
/// local socket bound to `local`, to `dst`. The engine writes into the caller's buffer, so nothing is
/// allocated per datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transmit {
    pub local: SocketAddr,
    pub dst: SocketAddr,
    pub len: usize,
    /// An IP TTL (hop limit) for this datagram only, where it must die on the way (a punching primer,
    /// docs/punchd.md "Permissive routers"); None: the socket's default.
    pub ttl: Option<u8>,
}

/// The sans-IO engine contract (see the module docs).
pub trait Engine {
    /// What the application must know: a path chosen, a peer lost, a verdict ready, a request completed.
    type Event;

    /// A datagram arrived. Returns false when it is not this engine's, so the caller offers it to the next
    /// engine on the same socket; true when the engine consumed it (even if it then discarded it as invalid).
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool;

    /// The network reported that `dst` is unreachable from `local` (an ICMP port or host unreachable error
    /// surfaced by the socket). Returns true when the engine had something in flight there. Engines that
    /// cannot use the hint keep the default, which ignores it.
    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        let _ = (now, local, dst);
        false
    }

    /// Time has passed: fire whatever timers are due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The next datagram to send, written into `buf`; None when nothing is due.
    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit>;

    /// When [`handle_timeout`](Engine::handle_timeout) must be called next; None when no timer runs.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
}

/// The wildcard ("any") address of `ip`'s family: what a socket binds to reach the same family's peers.
pub fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// `unspecified_like(addr.ip())` with port 0: an ephemeral socket of `addr`'s family.
pub fn ephemeral_like(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(unspecified_like(addr.ip()), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_of_each_family() {
        let v4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        assert_eq!(ephemeral_like(v4), "0.0.0.0:0".parse().unwrap());
        assert_eq!(ephemeral_like(v6), "[::]:0".parse().unwrap());
        assert_eq!(unspecified_like(v6.ip()), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
}

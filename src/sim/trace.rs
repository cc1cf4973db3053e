//! What happened to every datagram of a run, in order: the record tests assert on, and the proof that the
//! same seed gives the same run.

use super::{HostId, NatId};
use std::net::SocketAddr;
use std::time::Duration;

/// One step in the life of one datagram or ICMP error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Simulated time since the simulator was built.
    pub at: Duration,
    /// Which datagram: numbered in the order engines sent them; an ICMP error gets a number of its own.
    pub packet: u64,
    pub event: TraceEvent,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// An engine on `host` sent `len` bytes (CRC-32 `digest`) from `src` to `dst`.
    Sent { host: HostId, src: SocketAddr, dst: SocketAddr, len: usize, digest: u32 },
    /// A NAT rewrote the datagram's addresses (outbound: the source; inbound: the destination).
    Translated { nat: NatId, src: SocketAddr, dst: SocketAddr },
    /// The datagram reached `host` on its socket `local`; `consumed` says whether an engine took it.
    Delivered { host: HostId, local: SocketAddr, source: SocketAddr, consumed: bool },
    /// A host answered a datagram (packet `cause`) with an ICMP port unreachable: nothing listened, or the
    /// fault rule said so ([`Fate::Unreachable`](super::Fate::Unreachable)).
    IcmpSent { cause: u64, src: SocketAddr, dst: SocketAddr },
    /// An ICMP error reached the engines of `host` bound to `local`, about their datagrams to `dst`.
    Unreachable { host: HostId, local: SocketAddr, dst: SocketAddr, consumed: bool },
    /// The datagram was lost.
    Dropped(DropReason),
}

/// Why a datagram was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss on a link.
    Loss,
    /// The test's fault rule dropped it (or had its destination refuse it).
    Fault,
    /// No host, NAT or gateway for the destination.
    NoRoute,
    /// It arrived at a NAT's public address with no mapping for it (or was an ICMP error without one).
    NoMapping(NatId),
    /// The NAT's filter refused it (RFC 4787 §5).
    Filtered(NatId),
    /// It was addressed to the NAT's own public address from inside, and the NAT does not hairpin.
    HairpinOff(NatId),
    /// The NAT had no free port for a new mapping.
    PortsExhausted(NatId),
    /// Nothing on the host listens on the destination port and the host sends no ICMP errors.
    Unbound(HostId),
    /// The engine sent from a local address it is not bound to, or on a host without that address.
    BadSource(HostId),
    /// The datagram was bigger than the simulator's buffer (65535 bytes).
    TooBig(HostId),
    /// Its TTL ran out at this NAT, before it was translated (a punching primer, `Transmit::ttl`).
    TtlExpired(NatId),
}

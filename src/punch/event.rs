//! What the punch agent tells its node: paths opening, changing and dying (each with why), the prediction and
//! whether it held, a relay being needed, and the extra sockets birthday probing needs the driver to open and
//! close (an engine cannot bind sockets itself).

use super::pair::PathKind;
use super::predict::Prediction;
use crate::signal::PeerName;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Why the agent moved a peer's traffic to another pair (docs/punchd.md, "Punching": hysteresis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// A LAN pair answered; LAN beats a public path.
    Lan,
    /// A pair of the same kind with a clearly lower round trip (less than half, and 10 ms less).
    LowerRtt { old: Duration, new: Duration },
    /// A new introduction no longer lists the path's address (the peer's endpoint moved) and a new pair
    /// answered.
    PeerMoved,
    /// The path went silent and another pair that answered recently took over.
    Failover,
    /// A direct pair answered while traffic went through a relay; direct beats relay.
    Direct,
}

impl fmt::Display for SwitchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchReason::Lan => f.write_str("a LAN path answered"),
            SwitchReason::LowerRtt { old, new } => {
                write!(f, "lower round trip ({:.1} ms instead of {:.1} ms)", ms(*new), ms(*old))
            }
            SwitchReason::PeerMoved => f.write_str("the peer's endpoint moved"),
            SwitchReason::Failover => f.write_str("the path went silent; another pair answered recently"),
            SwitchReason::Direct => f.write_str("a direct path answered; direct beats relay"),
        }
    }
}

/// Why a path was declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathReason {
    /// No keepalive was answered for `silent` (the configured number of keepalive intervals).
    Silent { silent: Duration },
}

impl fmt::Display for DeathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeathReason::Silent { silent } => {
                write!(f, "no keepalive answered for {:.1} s (NAT mapping lost or peer gone)", silent.as_secs_f64())
            }
        }
    }
}

/// Why no direct path could be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayReason {
    /// Every candidate pair (and birthday probing, when it ran) went unanswered.
    Exhausted { pairs: usize, prediction: Option<Prediction> },
    /// The re-punch budget after failures is spent; a fresh introduction starts over.
    GaveUp { attempts: u32 },
}

impl fmt::Display for RelayReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayReason::Exhausted { pairs, prediction: Some(p) } => {
                write!(f, "none of {pairs} candidate pairs answered (prediction: {p})")
            }
            RelayReason::Exhausted { pairs, prediction: None } => {
                write!(f, "none of {pairs} candidate pairs answered")
            }
            RelayReason::GaveUp { attempts } => write!(f, "gave up after {attempts} punch attempts"),
        }
    }
}

/// The agent's events ([`crate::net::Engine::poll_event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first verified round trip to `peer`: send its traffic from `local` to `remote` from now on.
    PathOpened { peer: PeerName, kind: PathKind, local: SocketAddr, remote: SocketAddr, rtt: Option<Duration> },
    /// The path moved to another pair.
    PathChanged {
        peer: PeerName,
        kind: PathKind,
        local: SocketAddr,
        remote: SocketAddr,
        rtt: Option<Duration>,
        why: SwitchReason,
    },
    /// The path stopped answering. The agent re-punches the same candidates after a short backoff; the node
    /// should also ask the rendezvous for a fresh introduction (the peer's endpoint may have moved).
    PathDied { peer: PeerName, remote: SocketAddr, why: DeathReason },
    /// No direct path: use a relay (and keep the direct attempts going; they upgrade when one answers).
    NeedsRelay { peer: PeerName, why: RelayReason },
    /// What the agent expects before punching (logged next to the outcome).
    Prediction { peer: PeerName, prediction: Prediction },
    /// The outcome contradicted the prediction (`direct`: a path opened).
    PredictionWrong { peer: PeerName, prediction: Prediction, direct: bool },
    /// Birthday probing: open `count` extra UDP sockets (ephemeral ports, same family as the punching
    /// socket) and hand their local addresses to [`super::Agent::add_sockets`]; deliver what arrives on them.
    OpenSockets { peer: PeerName, count: u16 },
    /// Close these extra sockets (the one a path runs on is never in the list).
    CloseSockets { peer: PeerName, sockets: Vec<SocketAddr> },
    /// The path to `peer` lost a full-size check of `probed` bytes (the tunnel's largest datagram) while
    /// smaller checks got through: tunnel packets that large will be lost. `minimum_ok` says whether a check
    /// of `minimum` bytes (the smallest tunnel MTU's datagram) got through.
    PathMtuTooSmall { peer: PeerName, probed: u16, minimum: u16, minimum_ok: bool },
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

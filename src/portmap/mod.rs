//! Router port-mapping clients: NAT-PMP (RFC 6886), PCP (RFC 6887), UPnP IGD (WANIPConnection:1/2).
//!
//! # Public API
//!
//! **One call for diagnostics** (what `stunclient` uses):
//! ```no_run
//! use holepunch::portmap::{probe, default_gateway, ProbeOptions};
//! let gw = default_gateway()?;                      // IPv4 default route, Linux /proc/net/route
//! let report = probe(gw.gateway.into(), 6666, &ProbeOptions::default());
//! println!("{report}");                              // human summary, one line per protocol
//! for (name, svc) in [("NAT-PMP", &report.natpmp), ("PCP", &report.pcp), ("UPnP", &report.upnp)] {
//!     // svc.status: NotTried | NoAnswer | Answered; svc.external_address: Option<IpAddr>
//!     // svc.error / svc.mapping_error: Option<PortmapError> (values, never panics)
//!     // svc.test_mapping: Option<TestMapping { external_port, lifetime, deleted, delete_error, .. }>
//!     let _ = (name, svc.answered());
//! }
//! assert!(report.mappings_left_behind().is_empty());
//! # Ok::<(), holepunch::portmap::PortmapError>(())
//! ```
//! [`probe`] runs NAT-PMP external-address, PCP ANNOUNCE and SSDP discovery in parallel; a silent gateway costs
//! `max(retransmit.total(), upnp_wait)` (3.75 s by default), one that answers far less (about 0.4 s against
//! miniupnpd in the lab), a slow HTTP server up to `http_timeout` per exchange. Then, with `test_mapping`, it
//! maps UDP `local_port` with each service that answered, one after the other, and deletes every mapping
//! before returning, on error paths too (`local_port` 0 skips this). `ProbeOptions { natpmp, pcp, upnp, test_mapping, retransmit, upnp_wait,
//! http_timeout, mapping_lifetime, description }`; the PCP external address is learnt from the test mapping.
//! [`probe_default_gateway`] does both steps.
//!
//! **Blocking clients** (for punchd and tests), each call bounded by its retransmission schedule or timeout:
//! - [`NatPmpSession::new(gw, Retransmit)`](NatPmpSession): `external_address() -> (Ipv4Addr, epoch)`,
//!   `map(proto, internal_port, suggested_external_port, lifetime) -> NatPmpMapping`, `delete(proto, port)`.
//! - [`PcpSession::new(server_ip, Retransmit)`](PcpSession): `announce() -> epoch`,
//!   `map(proto, internal_port, suggested_external, lifetime) -> pcp::Mapping` (fresh random nonce; keep the
//!   mapping: renewal via `map_request` with its nonce, `delete(&mapping)`).
//! - [`Igd::discover(&DiscoverOptions)`](Igd) (SSDP + description) or `Igd::from_location(url, timeout)`:
//!   `external_ip()`, `add_port_mapping(&PortMapping)`, `get_port_mapping(proto, ext_port)`,
//!   `delete_port_mapping(proto, ext_port)`.
//!
//! **Sans-IO engines** (docs/architecture.md, "Engines": `request`, `handle_datagram`, `handle_timeout`,
//! `poll_transmit`, `poll_timeout`, `poll_event`): [`natpmp::Client`], [`pcp::Client`], [`ssdp::Search`]. Wire codecs:
//! `natpmp::{Request::encode, parse_response}`, `pcp::{Request::encode, parse_response}`,
//! `ssdp::{build_msearch, parse_response}`; pure UPnP helpers `upnp::{find_wan_services, soap_envelope,
//! parse_soap_response}`.
//!
//! **Retransmission**: [`Retransmit`] `{ initial, max_interval, max_sends }`; presets `diagnostic()` (default,
//! 250 ms doubling, 4 sends, 3.75 s), `natpmp_rfc6886()` (RFC 6886 §3.1: 9 sends, 128 s), `pcp_rfc6887(n)`
//! (IRT 3 s, MRT 1024 s). **Epochs**: [`EpochTracker`] implements RFC 6886 §3.6 and RFC 6887 §8.5; the engines
//! emit `Event::ServerReset` when the gateway lost its mappings.
//!
//! **Errors**: [`PortmapError`] (`Clone`, one line each): `Timeout`, `Refused` (ICMP unreachable),
//! `NatPmp(ResultCode)`, `Pcp { code, lifetime }`, `PcpUnsupportedVersion { server_version }` (0 = NAT-PMP-only
//! server, RFC 6887 §9), `UpnpNotFound`, `UpnpFault { action, code, description }`, `UpnpProtocol`, `Http`,
//! `Gateway`, `Unsupported`, `Io`, `BadReply`, `InvalidRequest`, `Internal`.
//!
//! UPnP trust rule: the description must come from the host that answered the search, the control URL must
//! be on that host, and with a gateway given only its answers count; URL host names are refused, not resolved.

mod blocking;
pub mod epoch;
mod error;
pub mod gateway;
pub mod http;
pub mod natpmp;
pub mod pcp;
mod probe;
mod queue;
mod retransmit;
pub mod ssdp;
pub mod upnp;
pub mod xml;

use std::net::SocketAddr;

pub use blocking::{local_address_toward, random_bytes, NatPmpMapping, NatPmpSession, PcpSession};
pub use epoch::{EpochRule, EpochTracker};
pub use error::PortmapError;
pub use gateway::{default_gateway, parse_proc_net_route, DefaultRoute};
pub use probe::{probe, probe_default_gateway, PortmapReport, ProbeOptions, ServiceReport, ServiceStatus, TestMapping};
pub use retransmit::Retransmit;
pub use upnp::{DiscoverOptions, Igd, PortMapping, PortMappingEntry};

/// Transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Udp,
    Tcp,
}

/// Identifies a request queued in an engine; its `Event::Completed` carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A datagram an engine wants sent: `len` bytes at the start of the caller's buffer, to `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub len: usize,
}

//! Router port-mapping clients, sans-IO: NAT-PMP (RFC 6886), PCP (RFC 6887), UPnP IGD (WANIPConnection:1/2,
//! SSDP per UPnP Device Architecture 1.1). The blocking drivers and the probe live in the I/O layer,
//! `io::portmap` (see docs/portmap.md).
//!
//! # Public API
//!
//! **Engines** ([`net::Engine`](crate::net::Engine): `handle_input`, `handle_unreachable`, `handle_timeout`,
//! `poll_transmit`, `poll_timeout`, `poll_event`), with request submission as inherent methods:
//! - [`natpmp::Client::new(local, server, Retransmit)`](natpmp::Client): `request(now, natpmp::Request) ->
//!   RequestId`; events `Completed { id, request, result }` and `ServerReset { epoch }`.
//! - [`pcp::Client::new(local, server, client_ip, Retransmit, Seed)`](pcp::Client): `request(now,
//!   pcp::Request)`, `map(now, protocol, internal_port, suggested_external, lifetime)` (a fresh nonce from the
//!   seeded [`net::Rng`](crate::net::Rng)); same events. Keep a granted `pcp::Mapping`: renewal reuses its
//!   nonce, `Mapping::delete_request()` deletes it.
//! - [`ssdp::Search::new(now, local, SearchConfig)`](ssdp::Search): events `Found { from, response }`,
//!   `Finished { found, malformed }`.
//!
//! NAT-PMP and PCP keep one request on the wire at a time (NAT-PMP has no transaction id) and retransmit on
//! [`net::Retransmit`](crate::net::Retransmit): `diagnostic()` (250 ms doubling, 4 sends, 3.75 s),
//! `natpmp_rfc6886()` (RFC 6886 §3.1: 9 sends, 127.75 s), `pcp_rfc6887(n)` (IRT 3 s, MRT 1024 s, `n` sends).
//! ICMP port unreachable (`handle_unreachable`) fails the request in flight with `PortmapError::Refused`.
//! [`EpochTracker`] implements RFC 6886 §3.6 and RFC 6887 §8.5.
//!
//! **Wire codecs**: `natpmp::{Request::encode, parse_response}`, `pcp::{Request::encode, parse_response,
//! ip_to_wire, ip_from_wire}`, `ssdp::{build_msearch, parse_response}`.
//!
//! **UPnP, sans-IO**: [`upnp::Candidates`] decides which SSDP answers to follow; [`Igd::description_request`]
//! and [`Igd::from_description`] build and read the description fetch; [`Igd::request(&Action)`](Igd::request)
//! and [`upnp::Action::parse_reply`] build and read each SOAP call (`GetExternalIpAddress`,
//! `AddPortMapping(PortMapping)`, `GetSpecificPortMappingEntry`, `DeletePortMapping`). UPnP trust rule: the
//! description must come from the host that answered the search, the control URL must be on that host, and
//! with a gateway given only its answers count; URL host names are refused, not resolved.
//!
//! **Probe findings** (filled in by `io::portmap::probe`): [`ProbeOptions`] `{ natpmp, pcp, upnp,
//! test_mapping, retransmit, upnp_wait, http_timeout, mapping_lifetime, description }`, [`PortmapReport`]
//! (`Display`: one line per protocol; `mappings_left_behind()`), [`ServiceReport`] `{ status: ServiceStatus,
//! external_address, epoch, error, test_mapping: Option<TestMapping>, mapping_error, detail, elapsed }`.
//!
//! **Gateway**: [`parse_proc_net_route`] reads the text of `/proc/net/route` into a [`DefaultRoute`]
//! (`io::default_gateway` reads the file).
//!
//! **Errors**: [`PortmapError`] (`Clone`, one line each): `Timeout`, `Refused` (ICMP unreachable),
//! `NatPmp(ResultCode)`, `Pcp { code, lifetime }`, `PcpUnsupportedVersion { server_version }` (0 = NAT-PMP-only
//! server, RFC 6887 §9), `UpnpNotFound`, `UpnpFault { action, code, description }`, `UpnpProtocol`, `Http`,
//! `Gateway`, `Unsupported`, `Io`, `BadReply`, `InvalidRequest`, `Internal`.

pub mod epoch;
mod error;
pub mod gateway;
// The HTTP reader and the probe's decisions serve the I/O layer's drivers; without it they are unused.
#[cfg_attr(not(feature = "io"), allow(dead_code))]
mod http;
pub mod natpmp;
pub mod pcp;
#[cfg_attr(not(feature = "io"), allow(dead_code))]
mod probe;
#[cfg(test)]
mod proptests;
mod queue;
pub mod ssdp;
mod timer;
pub mod upnp;
mod xml;

pub use epoch::{EpochRule, EpochTracker};
pub use error::PortmapError;
pub use gateway::{parse_proc_net_route, DefaultRoute};
pub use probe::{PortmapReport, ProbeOptions, ServiceReport, ServiceStatus, TestMapping};
pub use upnp::{DiscoverOptions, Igd, PortMapping, PortMappingEntry};

#[cfg(feature = "io")]
pub(crate) use http::ResponseReader;
#[cfg(feature = "io")]
pub(crate) use probe::{
    discovery_report, lifetime_secs, pcp_suggestion, upnp_deleted, upnp_detail, upnp_verified, UpnpRetry,
};

/// Transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Udp,
    Tcp,
}

/// Identifies a request queued in an engine; its `Event::Completed` carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// The parsers that take bytes from the network, for the fuzz targets in `fuzz/` (cargo feature `fuzzing`);
/// not a stable API.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// HTTP/1.1 responses and `http://` URLs as an IGD sends them.
    pub mod http {
        pub use crate::portmap::http::{
            build_request, parse_response, Parsed, Response, ResponseReader, Url, MAX_RESPONSE,
        };
    }
    /// The UPnP XML reader.
    pub mod xml {
        pub use crate::portmap::xml::{decode_text, escape, parse, Element, XmlError};
    }
    /// Device descriptions and SOAP replies.
    pub mod upnp {
        use crate::portmap::upnp::{self, IgdService, Url};
        use crate::portmap::PortmapError;

        pub fn find_wan_services(description: &str, location: &Url) -> Result<Vec<IgdService>, PortmapError> {
            upnp::find_wan_services(description, location)
        }

        pub fn parse_soap_response(
            action: &'static str,
            status: u16,
            body: &str,
        ) -> Result<Vec<(String, String)>, PortmapError> {
            upnp::parse_soap_response(action, status, body)
        }

        pub fn soap_envelope(service_type: &str, action: &str, args: &[(&str, String)]) -> String {
            upnp::soap_envelope(service_type, action, args)
        }
    }
}

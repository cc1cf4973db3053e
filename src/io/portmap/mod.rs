//! Blocking drivers of the port-mapping engines (`portmap`): NAT-PMP and PCP sessions on a connected UDP
//! socket, the UPnP IGD client (SSDP over UDP, SOAP over HTTP/TCP), and the probe that runs all three against
//! a gateway. See docs/portmap.md.

mod probe;
mod session;
mod upnp;

pub use probe::{probe, probe_default_gateway};
pub use session::{NatPmpMapping, NatPmpSession, PcpSession};
pub use upnp::IgdClient;

//! The I/O layer: everything the sans-IO protocol modules must not do themselves — sockets and the drivers
//! that run engines over them, name resolution, OS randomness, route and gateway lookups, batched UDP.
//! The binaries and tests use it; `src/stun`, `nat`, `punch`, `server`, `portmap` never do (a CI check greps
//! for it, see docs/architecture.md).
//!
//! What each piece does and why: docs/io.md.
//!
//! - [`resolve`](mod@resolve): `HOST[:PORT]` parsing and resolution with a time limit ([`parse_host_port`], [`resolve()`]).
//! - [`blocking`] and [`tokio`](mod@tokio) (feature `io-tokio`): drivers that run any `net::Engine` over UDP
//!   sockets, sharing [`Notice`] and [`Exit`].
//! - [`icmp`]: ICMP errors of unconnected UDP sockets (Linux IP_RECVERR).
//! - `batch` (Linux): recvmmsg/sendmmsg batches without allocation per datagram.
//! - [`send_with_ttl`]: one datagram with its own IP TTL (a punching primer).
//! - [`coalesce`]: one buffer of several equal-size datagrams per system call (Windows USO/URO), with the
//!   fallback to one datagram per call where the system refuses it.
//! - [`os_seed`]: the OS randomness engines are seeded from.
//! - [`host_candidates`]: the interface addresses a punching socket reports as host candidates.
//! - [`keyfile`]: reading a peer's secret key and the network secret, refusing files others can access.

#[cfg(target_os = "linux")]
pub mod batch;
pub mod blocking;
pub mod coalesce;
mod driver;
pub mod icmp;
mod interfaces;
pub mod keyfile;
pub mod portmap;
mod random;
pub mod resolve;
mod route;
#[cfg(target_os = "linux")]
mod sockaddr;
mod ttl;
pub use ttl::send_with_ttl;
#[cfg(feature = "io-tokio")]
pub mod tokio;

pub use driver::{Exit, Notice, DEFAULT_WAKE, RECV_BUF, SEND_BUF};
pub use interfaces::{host_candidates, interface_addresses};
pub use keyfile::{read_network_secret, read_secret_key, KeyFileError};
pub use random::os_seed;
pub use resolve::{
    parse_host_port, parse_host_port_or, resolve, resolve_host_port, Family, HostPortError, ParseError, ResolveError,
};
pub use route::{default_gateway, local_address_toward, RouteError};

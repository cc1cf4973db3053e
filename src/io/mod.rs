//! The I/O layer: everything the sans-IO protocol modules must not do themselves — sockets and the drivers
//! that run engines over them, name resolution, OS randomness, route and gateway lookups, batched UDP.
//! The binaries and tests use it; `src/stun`, `nat`, `punch`, `server`, `portmap` never do (a CI check greps
//! for it, see docs/architecture.md).

pub mod portmap;
mod random;
mod route;

pub use random::os_seed;
pub use route::{default_gateway, local_address_toward, RouteError};

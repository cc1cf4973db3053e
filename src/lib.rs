//! holepunch: NAT traversal toolkit.
//!
//! Protocol logic is sans-IO: the modules here take datagrams and time and return datagrams to send; the
//! binaries (`stund`, `stunclient`, `punchd`) own sockets, clocks and flags.

pub mod identity;
#[cfg(feature = "io")]
pub mod io;
pub mod nat;
pub mod net;
pub mod portmap;
pub mod punch;
pub mod relay;
pub mod server;
pub mod signal;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod stun;
pub mod text;
pub mod transaction;
pub mod tunnel;

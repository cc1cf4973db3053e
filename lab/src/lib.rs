//! The holepunch NAT lab: real nftables NATs in network namespaces, for integration tests and the demo.
//!
//! ```no_run
//! use holepunch_lab::{Lab, Preset};
//! let lab = Lab::builder().server().site("a", Preset::FullCone).build()?;
//! let (primary, alternate) = lab.server_ips();
//! let out = lab.host("a1").run(&["ip", "-brief", "addr"])?;
//! # Ok::<(), holepunch_lab::Error>(())
//! ```
//! Everything the lab created (namespaces, veths, bridges, processes, delay lines) is removed when the
//! [`Lab`] is dropped, also while a failing test unwinds. See docs/lab.md.

pub mod check;
pub mod cmd;
pub mod cputime;
pub mod delayline;
mod env;
mod error;
pub mod iperf;
pub mod peers;
pub mod ping;
pub mod portmap;
pub mod preset;
pub mod probe;
mod sweep;
mod topology;
pub mod wireguard;

pub use cmd::{run, run_args, Process};
pub use env::{check_available, in_ci, skip_unless_available, REQUIRED_TOOLS};
pub use error::{Error, Result};
pub use preset::{Behaviour, Filtering, Mapping, Preset};
pub use sweep::{list_namespaces, named_prefix, namespaces_with_prefix, sweep_prefix, sweep_stale};
pub use topology::{Delay, Lab, LabBuilder, Node, NodeKind, Site, SiteSpec, GATEWAY_198, GATEWAY_203, SERVER_IPS};

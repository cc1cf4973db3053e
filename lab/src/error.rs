//! Errors of the lab library.

use std::io;

/// Something went wrong while building, changing or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A helper program (`ip`, `nft`, `conntrack`, ...) could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    /// A helper program ran but failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    /// The lab description itself is wrong (bad name, unknown node, ...).
    #[error("invalid lab configuration: {0}")]
    Config(String),
    /// A node, site or preset name the caller used does not exist in this lab.
    #[error("no such {kind} in this lab: {name}")]
    Unknown { kind: &'static str, name: String },
    /// The operation does not apply to this kind of site.
    #[error("{0}")]
    Unsupported(String),
    /// The lab cannot run here (not root, a tool is missing).
    #[error("lab unavailable: {0}")]
    Unavailable(String),
    /// Waiting for a process to print something took too long.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout { what: String, ms: u128 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

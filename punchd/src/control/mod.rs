//! The control socket: how `punchd status` (and later other local tools) talk to a running daemon
//! (docs/punchd.md, "Control socket and status").
//!
//! A Unix domain socket (or on Windows a named pipe) only the daemon's user can use, one request per line and
//! one JSON object per answer line:
//!
//! ```text
//! -> {"cmd":"status"}
//! <- {"ok":true,"status":{...}}
//! -> {"cmd":"connect","peer":"bob"}
//! <- {"ok":true}                       or  {"ok":false,"error":"..."}
//! ```
//!
//! - [`path`]: the default socket path (Unix) or pipe name (Windows) per peer id.
//! - `serve`: the listener thread's loop, shared by both platforms; it answers `status` from the shared
//!   snapshot and hands `connect` to the daemon loop through a channel ([`Command`]).
//! - `client`: one request, one answer (`punchd status`), shared by both platforms.
//! - `unix`: the Unix domain socket (mode 0600, peer credentials); `pipe`: the Windows named pipe (a DACL
//!   for the daemon's user only, first-instance creation, docs/windows.md).
//!
//! Only connecting and accepting differ per platform; the line protocol and its bounds are one code.

mod client;
pub mod path;
#[cfg(windows)]
mod pipe;
mod serve;
#[cfg(unix)]
mod unix;

pub use client::request;
#[cfg(windows)]
pub use pipe::ControlServer;
#[cfg(unix)]
pub use unix::ControlServer;

use crate::status::Status;
use holepunch::signal::PeerName;
use serde::{Deserialize, Serialize};
use std::sync::mpsc;

/// Longest request line, newline included; a longer one is answered with an error and the connection closed.
pub const MAX_LINE: usize = 4096;

/// A request line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// The daemon's [`Status`].
    Status,
    /// Ask the rendezvous to introduce this peer and `peer` (a configured peer) now.
    Connect { peer: String },
}

/// An answer line: `ok`, and either `status` (to a status request) or `error`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Response {
    pub fn ok() -> Response {
        Response { ok: true, ..Response::default() }
    }

    pub fn error(text: impl Into<String>) -> Response {
        Response { ok: false, error: Some(text.into()), status: None }
    }

    pub fn status(status: Status) -> Response {
        Response { ok: true, error: None, status: Some(status) }
    }
}

/// What the control thread asks of the daemon loop. Each carries where the loop answers; the control thread
/// waits a bounded time for it.
#[derive(Debug)]
pub enum Command {
    /// Connect to `peer` now (`--connect` on demand). The answer is `Err(text)` when the loop refuses, e.g. an
    /// unknown peer.
    Connect { peer: PeerName, reply: mpsc::SyncSender<Result<(), String>> },
    /// Not from the control socket: the port-mapping thread (crate::portmap) reports the router's mapping of
    /// the punching port, made or moved (`Some`) or gone (`None`).
    PortMapping(Option<std::net::SocketAddr>),
    /// Not from the control socket: the daemon opened these extra sockets for `peer`'s birthday probing.
    SocketsOpened { peer: PeerName, sockets: Vec<std::net::SocketAddr> },
}

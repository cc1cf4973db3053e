//! One error type for every port-mapping protocol, cloneable so a report can carry it as a value.

use std::net::SocketAddr;
use std::time::Duration;

use super::{natpmp, pcp};

/// What went wrong talking to a router's port-mapping service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortmapError {
    /// A socket call failed (the OS message is kept as text so the error stays `Clone`).
    #[error("{op}: {message}")]
    Io { op: &'static str, kind: std::io::ErrorKind, message: String },
    /// The server never gave a valid answer.
    #[error("no answer from {server} after {sends} send(s) over {} ms{}", waited.as_millis(),
            malformed.as_ref().map(|m| format!(" (last reply was malformed: {m})")).unwrap_or_default())]
    Timeout { server: SocketAddr, sends: u32, waited: Duration, malformed: Option<String> },
    /// ICMP port unreachable came back: nothing listens there.
    #[error("{server} refused (ICMP port unreachable): no service listening")]
    Refused { server: SocketAddr },
    /// NAT-PMP answered with a non-zero result code.
    #[error("NAT-PMP server says: {0}")]
    NatPmp(natpmp::ResultCode),
    /// PCP answered with a non-zero result code.
    #[error("PCP server says: {code} (error lifetime {lifetime} s)")]
    Pcp { code: pcp::ResultCode, lifetime: u32 },
    /// The server does not speak our PCP version; 0 means it speaks NAT-PMP only (RFC 6887 §9).
    #[error("PCP version 2 unsupported by the server (it speaks {})",
            if *server_version == 0 { "NAT-PMP only".to_string() } else { format!("PCP version {server_version}") })]
    PcpUnsupportedVersion { server_version: u8 },
    /// The protocol cannot be used with this address family (NAT-PMP and SSDP are IPv4 only).
    #[error("{0}")]
    Unsupported(&'static str),
    /// No UPnP Internet Gateway Device answered the SSDP search.
    #[error("no UPnP IGD answered the SSDP search within {} ms{}", waited.as_millis(),
            if *others > 0 { format!(" ({others} answer(s) from other hosts or services ignored)") } else { String::new() })]
    UpnpNotFound { waited: Duration, others: usize },
    /// The device description or a SOAP reply could not be used.
    #[error("UPnP: {0}")]
    UpnpProtocol(String),
    /// The IGD answered an action with a SOAP fault (UPnP error code and description).
    #[error("UPnP {action} failed: error {code} {description}")]
    UpnpFault { action: &'static str, code: u16, description: String },
    /// An HTTP exchange with the IGD failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The default gateway could not be found.
    #[error("default gateway: {0}")]
    Gateway(String),
    /// A reply that parsed but does not fit the request.
    #[error("unexpected reply: {0}")]
    BadReply(String),
    /// A bug on our side (a worker thread panicked, an engine stalled); reported, never a panic.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The engine was handed a request it cannot encode.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
}

impl PortmapError {
    #[cfg_attr(not(feature = "io"), allow(dead_code))]
    pub(crate) fn io(op: &'static str, e: &std::io::Error) -> Self {
        PortmapError::Io { op, kind: e.kind(), message: e.to_string() }
    }
}

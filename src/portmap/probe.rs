//! The port-mapping probe's options, findings and decisions: which port-mapping services does the gateway
//! run, what external address does each report, can a test mapping be made. The probe itself (threads,
//! sockets) is the I/O layer's `io::portmap::probe`, which fills these reports in.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::upnp::{self, Igd, PortMapping, PortMappingEntry};
use super::{PortmapError, Protocol};
use crate::net::{unspecified_like, Retransmit, Rng};

/// What `probe` does.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub natpmp: bool,
    pub pcp: bool,
    pub upnp: bool,
    /// Create (and delete) a test mapping with each service that answers.
    pub test_mapping: bool,
    /// NAT-PMP and PCP retransmission (default `Retransmit::diagnostic()`: 250 ms doubling, 4 sends).
    pub retransmit: Retransmit,
    /// SSDP search window.
    pub upnp_wait: Duration,
    /// Bound on each UPnP HTTP exchange.
    pub http_timeout: Duration,
    /// Lifetime asked for the test mapping, so one that cannot be deleted still expires soon.
    pub mapping_lifetime: Duration,
    /// UPnP mapping description.
    pub description: String,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            natpmp: true,
            pcp: true,
            upnp: true,
            test_mapping: true,
            retransmit: Retransmit::diagnostic(),
            upnp_wait: Duration::from_secs(2),
            http_timeout: Duration::from_secs(3),
            mapping_lifetime: Duration::from_secs(120),
            description: "holepunch portmap probe".to_string(),
        }
    }
}

/// Did a service answer?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    /// Disabled in the options or impossible for the address family.
    NotTried,
    /// No answer in the protocol (timeout, refused, or the server does not speak it).
    NoAnswer,
    /// The service answered (possibly with an error result).
    Answered,
}

/// The test mapping made with one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestMapping {
    pub protocol: Protocol,
    pub internal_port: u16,
    /// External address and port the service reported for the mapping (address unknown for NAT-PMP/UPnP
    /// mappings themselves: use the service's `external_address`).
    pub external_port: u16,
    /// Lifetime granted, seconds (0 = permanent, for UPnP IGD:1 devices that allow nothing else).
    pub lifetime: u32,
    /// UPnP only: GetSpecificPortMappingEntry showed the mapping to this host.
    pub verified: Option<bool>,
    /// The mapping is gone again.
    pub deleted: bool,
    pub delete_error: Option<PortmapError>,
}

/// What one service did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReport {
    pub status: ServiceStatus,
    pub external_address: Option<IpAddr>,
    /// NAT-PMP/PCP server epoch (seconds since its mapping table started).
    pub epoch: Option<u32>,
    /// Why discovery or the external address query failed.
    pub error: Option<PortmapError>,
    pub test_mapping: Option<TestMapping>,
    /// Why the test mapping could not be made.
    pub mapping_error: Option<PortmapError>,
    /// Free text: UPnP service type, control URL and server string.
    pub detail: Option<String>,
    pub elapsed: Duration,
}

impl ServiceReport {
    pub(crate) fn new(status: ServiceStatus) -> Self {
        ServiceReport {
            status,
            external_address: None,
            epoch: None,
            error: None,
            test_mapping: None,
            mapping_error: None,
            detail: None,
            elapsed: Duration::ZERO,
        }
    }

    pub(crate) fn failed(e: PortmapError) -> Self {
        let mut r = ServiceReport::new(if answered(&e) { ServiceStatus::Answered } else { ServiceStatus::NoAnswer });
        r.error = Some(e);
        r
    }

    pub fn answered(&self) -> bool {
        self.status == ServiceStatus::Answered
    }
}

/// The probe's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortmapReport {
    pub gateway: IpAddr,
    /// This host's address toward the gateway.
    pub local_address: Option<IpAddr>,
    pub local_port: u16,
    pub natpmp: ServiceReport,
    pub pcp: ServiceReport,
    pub upnp: ServiceReport,
}

impl PortmapReport {
    pub fn any_answered(&self) -> bool {
        self.natpmp.answered() || self.pcp.answered() || self.upnp.answered()
    }

    /// Test mappings that could not be deleted (they expire after the requested lifetime).
    pub fn mappings_left_behind(&self) -> Vec<&'static str> {
        [("NAT-PMP", &self.natpmp), ("PCP", &self.pcp), ("UPnP", &self.upnp)]
            .into_iter()
            .filter(|(_, r)| r.test_mapping.as_ref().is_some_and(|m| !m.deleted))
            .map(|(n, _)| n)
            .collect()
    }
}

/// A result code or SOAP fault means the service is there.
fn answered(e: &PortmapError) -> bool {
    matches!(e, PortmapError::NatPmp(_) | PortmapError::Pcp { .. } | PortmapError::UpnpFault { .. })
}

/// Report of a NAT-PMP or PCP discovery exchange that took `elapsed`: `found` is the external address (when
/// the exchange tells it) and epoch, `epoch_after` the session's epoch once it ended. True when the server
/// answered, even with an error, so the session is worth keeping for the test mapping.
pub(crate) fn discovery_report(
    found: Result<(Option<IpAddr>, u32), PortmapError>,
    epoch_after: Option<u32>,
    elapsed: Duration,
) -> (ServiceReport, bool) {
    let (mut report, keep) = match found {
        Ok((external_address, epoch)) => {
            let mut r = ServiceReport::new(ServiceStatus::Answered);
            r.external_address = external_address;
            r.epoch = Some(epoch);
            (r, true)
        }
        Err(e) => {
            let keep = answered(&e);
            let mut r = ServiceReport::failed(e);
            r.epoch = epoch_after;
            (r, keep)
        }
    };
    report.elapsed = elapsed;
    (report, keep)
}

/// A lifetime in whole seconds for a mapping request: at least 1 (0 would delete), at most `u32::MAX`.
pub(crate) fn lifetime_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// The external endpoint the PCP test mapping suggests: the same port, any external address of the
/// gateway's family.
pub(crate) fn pcp_suggestion(gateway: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(unspecified_like(gateway), port)
}

/// The probe's retry policy for its UPnP test mapping, after AddPortMapping failed.
#[derive(Debug, Default)]
pub(crate) struct UpnpRetry {
    attempts: u32,
    conflicts: u32,
}

impl UpnpRetry {
    /// Change `m` into the next attempt after `error` and return true, or return false to give up. IGD:1
    /// devices may refuse any lease but 0 (error 725, asked once, right after the first attempt; the mapping
    /// is deleted right after anyway); when someone else holds the external port (718), a random port of the
    /// dynamic range, twice at most.
    pub(crate) fn next(&mut self, m: &mut PortMapping, error: &PortmapError, rng: Option<&mut Rng>) -> bool {
        self.attempts += 1;
        if self.attempts == 1 && upnp::is_fault(error, upnp::ERR_ONLY_PERMANENT_LEASES_SUPPORTED) {
            m.lease_duration = 0;
            return true;
        }
        if self.conflicts < 2 && upnp::is_fault(error, upnp::ERR_CONFLICT_IN_MAPPING_ENTRY) {
            let Some(rng) = rng else { return false };
            self.conflicts += 1;
            m.external_port = 49152 + u16::try_from(rng.below(16384)).unwrap_or(0);
            return true;
        }
        false
    }
}

/// Did DeletePortMapping leave nothing behind? "No such entry" (714) counts: the mapping is gone either way.
pub(crate) fn upnp_deleted(delete: &Result<(), PortmapError>) -> bool {
    match delete {
        Ok(()) => true,
        Err(e) => upnp::is_fault(e, upnp::ERR_NO_SUCH_ENTRY_IN_ARRAY),
    }
}

/// Does GetSpecificPortMappingEntry show the test mapping pointing at this host?
pub(crate) fn upnp_verified(entry: &PortMappingEntry, local: IpAddr, port: u16) -> bool {
    entry.internal_port == port && entry.internal_client == local.to_string()
}

/// The report line of the UPnP device found.
pub(crate) fn upnp_detail(igd: &Igd) -> String {
    format!(
        "{} at http://{}{}{}",
        igd.service.service_type,
        igd.service.control_url.authority(),
        igd.service.control_url.path,
        igd.server.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
    )
}

impl fmt::Display for ServiceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            ServiceStatus::NotTried => write!(f, "not tried")?,
            ServiceStatus::NoAnswer => write!(f, "no answer")?,
            ServiceStatus::Answered => write!(f, "answered")?,
        }
        if let Some(a) = self.external_address {
            write!(f, ", external address {a}")?;
        }
        if let Some(e) = &self.error {
            write!(f, " ({e})")?;
        }
        match (&self.test_mapping, &self.mapping_error) {
            (Some(m), _) => {
                write!(f, "; test mapping UDP {} -> external port {}", m.internal_port, m.external_port)?;
                if m.verified == Some(false) {
                    write!(f, " (not confirmed by GetSpecificPortMappingEntry)")?;
                }
                if m.deleted {
                    write!(f, ", deleted")?;
                } else {
                    write!(f, ", NOT deleted")?;
                }
                if let Some(e) = &m.delete_error {
                    write!(f, " ({e})")?;
                }
            }
            (None, Some(e)) => write!(f, "; test mapping failed: {e}")?,
            (None, None) => {}
        }
        Ok(())
    }
}

impl fmt::Display for PortmapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gateway {}", self.gateway)?;
        writeln!(f, "  NAT-PMP: {}", self.natpmp)?;
        writeln!(f, "  PCP:     {}", self.pcp)?;
        write!(f, "  UPnP:    {}", self.upnp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(code: u16) -> PortmapError {
        PortmapError::UpnpFault { action: "AddPortMapping", code, description: String::new() }
    }

    fn mapping() -> PortMapping {
        PortMapping {
            protocol: Protocol::Udp,
            external_port: 6666,
            internal_client: "192.168.1.10".parse().unwrap(),
            internal_port: 6666,
            description: String::new(),
            lease_duration: 120,
        }
    }

    #[test]
    fn upnp_retry_permanent_lease_once_then_two_conflicts() {
        let mut rng = Rng::from_seed([9; 32]);
        let mut m = mapping();
        let mut r = UpnpRetry::default();
        assert!(r.next(&mut m, &fault(725), Some(&mut rng)));
        assert_eq!((m.lease_duration, m.external_port), (0, 6666));
        assert!(!UpnpRetry { attempts: 1, conflicts: 0 }.next(&mut mapping(), &fault(725), Some(&mut rng)));
        for _ in 0..2 {
            assert!(r.next(&mut m, &fault(718), Some(&mut rng)));
            assert!((49152..=65535).contains(&m.external_port), "{}", m.external_port);
        }
        assert!(!r.next(&mut m, &fault(718), Some(&mut rng)));
        assert!(!UpnpRetry::default().next(&mut mapping(), &fault(718), None), "no randomness, no retry");
        assert!(!UpnpRetry::default().next(&mut mapping(), &fault(501), Some(&mut rng)));
    }

    #[test]
    fn small_decisions() {
        assert_eq!(lifetime_secs(Duration::ZERO), 1);
        assert_eq!(lifetime_secs(Duration::from_secs(u64::MAX)), u32::MAX);
        assert_eq!(pcp_suggestion("192.168.1.1".parse().unwrap(), 7), "0.0.0.0:7".parse().unwrap());
        assert_eq!(pcp_suggestion("fe80::1".parse().unwrap(), 7), "[::]:7".parse().unwrap());
        assert!(upnp_deleted(&Ok(())));
        assert!(upnp_deleted(&Err(fault(714))));
        assert!(!upnp_deleted(&Err(fault(501))));
    }
}

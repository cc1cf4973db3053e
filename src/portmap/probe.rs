//! `probe`: which port-mapping services does the gateway run, what external address does each report, can a
//! test mapping be made. Discovery of the three runs in parallel (bounded by the slowest timeout); the test
//! mappings run one protocol at a time, each deleted before the next starts, because routers such as miniupnpd
//! keep one table for all three and an overlapping mapping of the same port would make the results depend on
//! each other.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::blocking::{local_address_toward, NatPmpSession, PcpSession};
use super::retransmit::Retransmit;
use super::ssdp::SearchConfig;
use super::upnp::{self, DiscoverOptions, Igd, PortMapping};
use super::{gateway, PortmapError, Protocol};

/// What `probe` does.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub natpmp: bool,
    pub pcp: bool,
    pub upnp: bool,
    /// Create (and delete) a test mapping with each service that answers.
    pub test_mapping: bool,
    /// NAT-PMP and PCP retransmission (default: 250 ms doubling, 4 sends).
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
    fn new(status: ServiceStatus) -> Self {
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

    fn failed(e: PortmapError) -> Self {
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

/// Report of a NAT-PMP or PCP discovery exchange started at `start`: `found` is the external address (when the
/// exchange tells it) and epoch, `epoch_after` the session's epoch once it ended. True when the server
/// answered, even with an error, so the session is worth keeping for the test mapping.
fn discovery_report(
    found: Result<(Option<IpAddr>, u32), PortmapError>,
    epoch_after: Option<u32>,
    start: Instant,
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
    report.elapsed = start.elapsed();
    (report, keep)
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// Probe the port-mapping services of `gateway` for UDP `local_port`. Never panics; every failure is a value in
/// the report. Any test mapping made is deleted before this returns. `local_port` 0 skips the test mappings.
pub fn probe(gateway: IpAddr, local_port: u16, opts: &ProbeOptions) -> PortmapReport {
    let local_address = local_address_toward(gateway).ok();
    let (mut natpmp, mut pcp, mut upnp) = std::thread::scope(|s| {
        let n = s.spawn(|| natpmp_discover(gateway, opts));
        let p = s.spawn(|| pcp_discover(gateway, opts));
        let u = s.spawn(|| upnp_discover(gateway, local_address, opts));
        let lost = || ServiceReport::failed(PortmapError::Internal("probe thread panicked"));
        (
            n.join().unwrap_or_else(|_| (lost(), None)),
            p.join().unwrap_or_else(|_| (lost(), None)),
            u.join().unwrap_or_else(|_| (lost(), None)),
        )
    });
    if opts.test_mapping && local_port != 0 {
        if let Some(session) = natpmp.1.as_mut() {
            let t = Instant::now();
            natpmp_test_mapping(session, &mut natpmp.0, local_port, opts);
            natpmp.0.elapsed += t.elapsed();
        }
        if let Some(session) = pcp.1.as_mut() {
            let t = Instant::now();
            pcp_test_mapping(session, &mut pcp.0, gateway, local_port, opts);
            pcp.0.elapsed += t.elapsed();
        }
        match (upnp.1.as_ref(), local_address) {
            (Some(igd), Some(local)) => {
                let t = Instant::now();
                upnp_test_mapping(igd, &mut upnp.0, local, local_port, opts);
                upnp.0.elapsed += t.elapsed();
            }
            (Some(_), None) => {
                upnp.0.mapping_error =
                    Some(PortmapError::Unsupported("this host's address toward the gateway is unknown"))
            }
            (None, _) => {}
        }
    }
    let report = PortmapReport { gateway, local_address, local_port, natpmp: natpmp.0, pcp: pcp.0, upnp: upnp.0 };
    log::info!(
        "portmap: gateway {gateway}: NAT-PMP {:?}, PCP {:?}, UPnP {:?}",
        report.natpmp.status,
        report.pcp.status,
        report.upnp.status
    );
    report
}

/// [`probe`] the default gateway ([`gateway::default_gateway`]).
pub fn probe_default_gateway(local_port: u16, opts: &ProbeOptions) -> Result<PortmapReport, PortmapError> {
    let route = gateway::default_gateway()?;
    Ok(probe(IpAddr::V4(route.gateway), local_port, opts))
}

fn natpmp_discover(gateway: IpAddr, opts: &ProbeOptions) -> (ServiceReport, Option<NatPmpSession>) {
    if !opts.natpmp {
        return (ServiceReport::new(ServiceStatus::NotTried), None);
    }
    let IpAddr::V4(gw) = gateway else {
        let mut r = ServiceReport::new(ServiceStatus::NotTried);
        r.error = Some(PortmapError::Unsupported("NAT-PMP is IPv4 only"));
        return (r, None);
    };
    let start = Instant::now();
    let mut session = match NatPmpSession::new(gw, opts.retransmit) {
        Ok(s) => s,
        Err(e) => return (ServiceReport::failed(e), None),
    };
    let found = session.external_address().map(|(addr, epoch)| (Some(IpAddr::V4(addr)), epoch));
    let (report, keep) = discovery_report(found, session.epoch(), start);
    (report, keep.then_some(session))
}

fn natpmp_test_mapping(session: &mut NatPmpSession, report: &mut ServiceReport, port: u16, opts: &ProbeOptions) {
    match session.map(Protocol::Udp, port, port, secs(opts.mapping_lifetime)) {
        Ok(m) => {
            log::info!("portmap: NAT-PMP mapped UDP {port} -> external port {} for {} s", m.external_port, m.lifetime);
            let delete = session.delete(Protocol::Udp, port);
            report.test_mapping = Some(TestMapping {
                protocol: Protocol::Udp,
                internal_port: port,
                external_port: m.external_port,
                lifetime: m.lifetime,
                verified: None,
                deleted: delete.is_ok(),
                delete_error: delete.err(),
            });
        }
        Err(e) => report.mapping_error = Some(e),
    }
}

fn pcp_discover(gateway: IpAddr, opts: &ProbeOptions) -> (ServiceReport, Option<PcpSession>) {
    if !opts.pcp {
        return (ServiceReport::new(ServiceStatus::NotTried), None);
    }
    let start = Instant::now();
    let mut session = match PcpSession::new(gateway, opts.retransmit) {
        Ok(s) => s,
        Err(e) => return (ServiceReport::failed(e), None),
    };
    // A server without ANNOUNCE still speaks PCP (an error answer keeps the session); MAP may work.
    let (report, keep) = discovery_report(session.announce().map(|epoch| (None, epoch)), session.epoch(), start);
    (report, keep.then_some(session))
}

fn pcp_test_mapping(
    session: &mut PcpSession,
    report: &mut ServiceReport,
    gateway: IpAddr,
    port: u16,
    opts: &ProbeOptions,
) {
    // Suggest the same external port, any external address of the gateway's family.
    let any: IpAddr =
        if gateway.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    match session.map(Protocol::Udp, port, Some(SocketAddr::new(any, port)), secs(opts.mapping_lifetime)) {
        Ok(m) => {
            log::info!("portmap: PCP mapped UDP {port} -> {} for {} s", m.external, m.lifetime);
            report.external_address = Some(m.external.ip());
            report.epoch = Some(m.epoch);
            let delete = session.delete(&m);
            report.test_mapping = Some(TestMapping {
                protocol: Protocol::Udp,
                internal_port: port,
                external_port: m.external.port(),
                lifetime: m.lifetime,
                verified: None,
                deleted: delete.is_ok(),
                delete_error: delete.err(),
            });
        }
        Err(e) => report.mapping_error = Some(e),
    }
}

fn upnp_discover(gateway: IpAddr, local: Option<IpAddr>, opts: &ProbeOptions) -> (ServiceReport, Option<Igd>) {
    if !opts.upnp {
        return (ServiceReport::new(ServiceStatus::NotTried), None);
    }
    if gateway.is_ipv6() {
        let mut r = ServiceReport::new(ServiceStatus::NotTried);
        r.error = Some(PortmapError::Unsupported("UPnP discovery is implemented over IPv4 SSDP only"));
        return (r, None);
    }
    let start = Instant::now();
    let discover = DiscoverOptions {
        gateway: Some(gateway),
        local_ip: match local {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        },
        search: SearchConfig { wait: opts.upnp_wait, ..SearchConfig::default() },
        http_timeout: opts.http_timeout,
    };
    let igd = match Igd::discover(&discover) {
        Ok(igd) => igd,
        Err(e) => {
            let mut r = ServiceReport::failed(e);
            r.elapsed = start.elapsed();
            return (r, None);
        }
    };
    let mut report = ServiceReport::new(ServiceStatus::Answered);
    report.detail = Some(format!(
        "{} at http://{}{}{}",
        igd.service.service_type,
        igd.service.control_url.authority(),
        igd.service.control_url.path,
        igd.server.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
    ));
    match igd.external_ip() {
        Ok(ip) => report.external_address = Some(ip),
        Err(e) => report.error = Some(e),
    }
    report.elapsed = start.elapsed();
    (report, Some(igd))
}

fn upnp_test_mapping(igd: &Igd, report: &mut ServiceReport, local: IpAddr, port: u16, opts: &ProbeOptions) {
    let mut m = PortMapping {
        protocol: Protocol::Udp,
        external_port: port,
        internal_client: local,
        internal_port: port,
        description: opts.description.clone(),
        lease_duration: secs(opts.mapping_lifetime),
    };
    let mut result = igd.add_port_mapping(&m);
    if result.as_ref().is_err_and(|e| upnp::is_fault(e, upnp::ERR_ONLY_PERMANENT_LEASES_SUPPORTED)) {
        // IGD:1 devices may refuse any lease but 0; the mapping is deleted right after anyway.
        m.lease_duration = 0;
        result = igd.add_port_mapping(&m);
    }
    for _ in 0..2 {
        if !result.as_ref().is_err_and(|e| upnp::is_fault(e, upnp::ERR_CONFLICT_IN_MAPPING_ENTRY)) {
            break;
        }
        // Someone else holds that external port: try a random one in the dynamic range.
        let r = super::blocking::random_bytes::<2>();
        m.external_port = 49152 + u16::from_be_bytes(r) % 16384;
        result = igd.add_port_mapping(&m);
    }
    if let Err(e) = result {
        report.mapping_error = Some(e);
        return;
    }
    log::info!("portmap: UPnP mapped UDP external {} -> {local}:{port}", m.external_port);
    // From here on the mapping exists: whatever the check says, the delete below always runs.
    let verified = match igd.get_port_mapping(Protocol::Udp, m.external_port) {
        Ok(entry) => entry.internal_port == port && entry.internal_client == local.to_string(),
        Err(e) => {
            log::debug!("portmap: UPnP GetSpecificPortMappingEntry failed: {e}");
            false
        }
    };
    let delete = igd.delete_port_mapping(Protocol::Udp, m.external_port);
    // "No such entry" means nothing is left behind either.
    let deleted = match &delete {
        Ok(()) => true,
        Err(e) => upnp::is_fault(e, upnp::ERR_NO_SUCH_ENTRY_IN_ARRAY),
    };
    report.test_mapping = Some(TestMapping {
        protocol: Protocol::Udp,
        internal_port: port,
        external_port: m.external_port,
        lifetime: m.lease_duration,
        verified: Some(verified),
        deleted,
        delete_error: delete.err(),
    });
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

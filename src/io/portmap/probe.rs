//! `probe`: which port-mapping services does the gateway run, what external address does each report, can a
//! test mapping be made. Discovery of the three runs in parallel, one thread each (bounded by the slowest
//! timeout); the test mappings run one protocol at a time, each deleted before the next starts, because
//! routers such as miniupnpd keep one table for all three and an overlapping mapping of the same port would
//! make the results depend on each other. The reports and the decisions are `portmap`'s (`portmap::probe`).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::session::{NatPmpSession, PcpSession};
use super::upnp::IgdClient;
use crate::net::{Rng, Seed};
use crate::portmap::ssdp::SearchConfig;
use crate::portmap::{
    discovery_report, lifetime_secs, natpmp, pcp_suggestion, upnp_deleted, upnp_detail, upnp_verified, DiscoverOptions,
    PortMapping, PortmapError, PortmapReport, ProbeOptions, Protocol, ServiceReport, ServiceStatus, TestMapping,
    UpnpRetry,
};

/// Probe the port-mapping services of `gateway` for UDP `local_port`. Never panics; every failure is a value in
/// the report. Any test mapping made is deleted before this returns. `local_port` 0 skips the test mappings.
pub fn probe(gateway: IpAddr, local_port: u16, opts: &ProbeOptions) -> PortmapReport {
    let local_address = crate::io::local_address_toward(SocketAddr::new(gateway, natpmp::SERVER_PORT)).ok();
    // One OS seed for the probe: the PCP nonces and the UPnP retry ports come from it.
    let mut rng = match crate::io::os_seed() {
        Ok(seed) => Some(Rng::from_seed(seed)),
        Err(e) => {
            log::warn!("portmap: {e}; a UPnP port conflict is not retried");
            None
        }
    };
    let pcp_seed = rng.as_mut().map(Rng::fork);
    let (mut natpmp, mut pcp, mut upnp) = std::thread::scope(|s| {
        let n = s.spawn(|| natpmp_discover(gateway, opts));
        let p = s.spawn(|| pcp_discover(gateway, opts, pcp_seed));
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
                upnp_test_mapping(igd, &mut upnp.0, local, local_port, opts, rng.as_mut());
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

/// [`probe`] the default gateway ([`default_gateway`](crate::io::default_gateway)).
pub fn probe_default_gateway(local_port: u16, opts: &ProbeOptions) -> Result<PortmapReport, PortmapError> {
    let route = crate::io::default_gateway()?;
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
    let (report, keep) = discovery_report(found, session.epoch(), start.elapsed());
    (report, keep.then_some(session))
}

fn natpmp_test_mapping(session: &mut NatPmpSession, report: &mut ServiceReport, port: u16, opts: &ProbeOptions) {
    match session.map(Protocol::Udp, port, port, lifetime_secs(opts.mapping_lifetime)) {
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

fn pcp_discover(gateway: IpAddr, opts: &ProbeOptions, seed: Option<Seed>) -> (ServiceReport, Option<PcpSession>) {
    if !opts.pcp {
        return (ServiceReport::new(ServiceStatus::NotTried), None);
    }
    let start = Instant::now();
    let server = SocketAddr::new(gateway, crate::portmap::pcp::SERVER_PORT);
    let session = match seed {
        Some(seed) => PcpSession::with_seed(server, opts.retransmit, seed),
        None => PcpSession::connect(server, opts.retransmit),
    };
    let mut session = match session {
        Ok(s) => s,
        Err(e) => return (ServiceReport::failed(e), None),
    };
    // A server without ANNOUNCE still speaks PCP (an error answer keeps the session); MAP may work.
    let found = session.announce().map(|epoch| (None, epoch));
    let (report, keep) = discovery_report(found, session.epoch(), start.elapsed());
    (report, keep.then_some(session))
}

fn pcp_test_mapping(
    session: &mut PcpSession,
    report: &mut ServiceReport,
    gateway: IpAddr,
    port: u16,
    opts: &ProbeOptions,
) {
    match session.map(Protocol::Udp, port, Some(pcp_suggestion(gateway, port)), lifetime_secs(opts.mapping_lifetime)) {
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

fn upnp_discover(gateway: IpAddr, local: Option<IpAddr>, opts: &ProbeOptions) -> (ServiceReport, Option<IgdClient>) {
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
    let client = match IgdClient::discover(&discover) {
        Ok(client) => client,
        Err(e) => {
            let mut r = ServiceReport::failed(e);
            r.elapsed = start.elapsed();
            return (r, None);
        }
    };
    let mut report = ServiceReport::new(ServiceStatus::Answered);
    report.detail = Some(upnp_detail(&client.igd));
    match client.external_ip() {
        Ok(ip) => report.external_address = Some(ip),
        Err(e) => report.error = Some(e),
    }
    report.elapsed = start.elapsed();
    (report, Some(client))
}

fn upnp_test_mapping(
    client: &IgdClient,
    report: &mut ServiceReport,
    local: IpAddr,
    port: u16,
    opts: &ProbeOptions,
    mut rng: Option<&mut Rng>,
) {
    let mut m = PortMapping {
        protocol: Protocol::Udp,
        external_port: port,
        internal_client: local,
        internal_port: port,
        description: opts.description.clone(),
        lease_duration: lifetime_secs(opts.mapping_lifetime),
    };
    let mut retry = UpnpRetry::default();
    let mut result = client.add_port_mapping(&m);
    while let Err(e) = &result {
        if !retry.next(&mut m, e, rng.as_deref_mut()) {
            break;
        }
        result = client.add_port_mapping(&m);
    }
    if let Err(e) = result {
        report.mapping_error = Some(e);
        return;
    }
    log::info!("portmap: UPnP mapped UDP external {} -> {local}:{port}", m.external_port);
    // From here on the mapping exists: whatever the check says, the delete below always runs.
    let verified = match client.get_port_mapping(Protocol::Udp, m.external_port) {
        Ok(entry) => upnp_verified(&entry, local, port),
        Err(e) => {
            log::debug!("portmap: UPnP GetSpecificPortMappingEntry failed: {e}");
            false
        }
    };
    let delete = client.delete_port_mapping(Protocol::Udp, m.external_port);
    report.test_mapping = Some(TestMapping {
        protocol: Protocol::Udp,
        internal_port: port,
        external_port: m.external_port,
        lifetime: m.lease_duration,
        verified: Some(verified),
        deleted: upnp_deleted(&delete),
        delete_error: delete.err(),
    });
}

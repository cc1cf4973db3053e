//! Peer mode's router port mapping (docs/punchd.md, "Port mapping"): a thread that maps the punching port
//! (UDP, internal port = the punching socket's port) on the default gateway with NAT-PMP (RFC 6886), else PCP
//! (RFC 6887), else UPnP IGD, and tells the daemon loop the external address whenever it appears, changes or
//! goes. The requests leave from sockets of their own: NAT-PMP and PCP name the internal port, UPnP names the
//! internal client and port, so nothing needs the punching socket.
//!
//! - Renewed at half the granted lifetime (RFC 6886 §3.3, RFC 6887 §11.2.1); UPnP leases likewise.
//! - A router reboot is noticed by the epoch check (RFC 6886 §3.6, RFC 6887 §8.5) on every answer and on a
//!   periodic check, and for UPnP by a failed renewal or a mapping that is no longer listed: the mapping is
//!   created again.
//! - Deleted when the daemon stops (the shutdown flag), within one check interval.
//! - Without a router that maps, retried every few minutes; the other candidates never depend on it.

use holepunch::io::{self, portmap::IgdClient, portmap::NatPmpSession, portmap::PcpSession};
use holepunch::net::Retransmit;
use holepunch::portmap::{pcp, DiscoverOptions, EpochRule, EpochTracker, PortMapping, PortmapError, Protocol};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const LOG: &str = "punchd::portmap";

/// Lifetime asked for (RFC 6886 §3.3 recommends 7200 s); renewed at half of what the router grants.
const LIFETIME: u32 = 7200;
/// UPnP lease asked for.
const UPNP_LEASE: u32 = 3600;
/// Shortest wait between renewals, against a router granting a few seconds.
const MIN_RENEW: Duration = Duration::from_secs(5);
/// How often the epoch (NAT-PMP, PCP) or the mapping's listing (UPnP) is checked between renewals: a rebooted
/// router is noticed within this.
const CHECK: Duration = Duration::from_secs(60);
/// Wait before asking again when no protocol answered or the mapping was lost.
const RETRY: Duration = Duration::from_secs(300);
/// How often a sleeping thread looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);

/// A mapping held, with what renewing, checking and deleting it needs.
enum Held {
    NatPmp { session: Box<NatPmpSession>, epoch: EpochTracker, ip: Ipv4Addr },
    Pcp { session: Box<PcpSession>, epoch: EpochTracker, mapping: pcp::Mapping },
    Upnp { igd: IgdClient, internal: IpAddr },
}

struct Mapping {
    held: Held,
    external: SocketAddr,
    lifetime: Duration,
}

/// What the thread maps and how often it looks.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The punching socket's port (an IPv4 socket): the internal port, and the external port asked for.
    pub port: u16,
    /// The NAT-PMP and PCP server; `None`: the default gateway, port 5351, then UPnP IGD on it (tests name
    /// a server of their own, and UPnP is not tried then).
    pub server: Option<SocketAddr>,
    pub check: Duration,
    pub retry: Duration,
    pub min_renew: Duration,
}

impl Config {
    pub fn new(port: u16) -> Config {
        Config { port, server: None, check: CHECK, retry: RETRY, min_renew: MIN_RENEW }
    }
}

/// Starts the thread. `report` hears each change: `Some(external)` when a mapping is made or moved, `None`
/// when it is lost or deleted. Ends soon after `stop` is set, after deleting the mapping.
pub fn start(
    config: Config,
    report: impl Fn(Option<SocketAddr>) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new().name("portmap".into()).spawn(move || run(&config, &report, &stop))
}

fn run(config: &Config, report: &dyn Fn(Option<SocketAddr>), stop: &AtomicBool) {
    let port = config.port;
    let mut current: Option<SocketAddr> = None;
    let mut set = |now: Option<SocketAddr>| {
        if now != current {
            current = now;
            report(now);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let Some(mut m) = establish(config) else {
            set(None);
            sleep(config.retry, stop);
            continue;
        };
        log::info!(target: LOG, "router mapped UDP port {port} to {} for {:?}", m.external, m.lifetime);
        set(Some(m.external));
        let mut renew_at = Instant::now() + (m.lifetime / 2).max(config.min_renew);
        let lost = loop {
            let check_at = Instant::now() + config.check;
            if sleep_until(renew_at.min(check_at), stop) {
                delete(&mut m, port);
                set(None);
                return;
            }
            let now = Instant::now();
            if now >= renew_at {
                match renew(&mut m, port) {
                    Ok(()) => {
                        set(Some(m.external));
                        renew_at = Instant::now() + (m.lifetime / 2).max(config.min_renew);
                    }
                    Err(e) => break format!("renewal failed: {e}"),
                }
            } else {
                match check(&mut m, port) {
                    Ok(()) => set(Some(m.external)),
                    Err(why) => break why,
                }
            }
        };
        log::info!(target: LOG, "port mapping {} lost ({lost}): mapping again", m.external);
        set(None);
    }
}

/// Sleeps `d` unless `stop` is set first; true when it was.
fn sleep(d: Duration, stop: &AtomicBool) -> bool {
    sleep_until(Instant::now() + d, stop)
}

fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= at {
            return false;
        }
        thread::sleep((at - now).min(POLL));
    }
}

/// NAT-PMP, then PCP, then UPnP IGD on the default gateway; `None` when none maps.
fn establish(config: &Config) -> Option<Mapping> {
    let port = config.port;
    let server = match config.server {
        Some(s) => s,
        None => match io::default_gateway() {
            Ok(r) => SocketAddr::new(IpAddr::V4(r.gateway), pcp::SERVER_PORT),
            Err(e) => {
                log::info!(target: LOG, "no port mapping: {e}");
                return None;
            }
        },
    };
    let retransmit = Retransmit::diagnostic();
    let natpmp = NatPmpSession::connect(server, retransmit).and_then(|mut session| {
        let (ip, epoch0) = session.external_address()?;
        let granted = session.map(Protocol::Udp, port, port, LIFETIME)?;
        let mut epoch = EpochTracker::new(EpochRule::NatPmp);
        epoch.observe(epoch0, Instant::now());
        epoch.observe(granted.epoch, Instant::now());
        Ok(Mapping {
            external: SocketAddr::new(IpAddr::V4(ip), granted.external_port),
            lifetime: Duration::from_secs(granted.lifetime.into()),
            held: Held::NatPmp { session: Box::new(session), epoch, ip },
        })
    });
    let natpmp_err = match natpmp {
        Ok(m) => return Some(m),
        Err(e) => e,
    };
    let pcp = PcpSession::connect(server, retransmit).and_then(|mut session| {
        let mapping = session.map(Protocol::Udp, port, None, LIFETIME)?;
        let mut epoch = EpochTracker::new(EpochRule::Pcp);
        epoch.observe(mapping.epoch, Instant::now());
        Ok(Mapping {
            external: mapping.external,
            lifetime: Duration::from_secs(mapping.lifetime.into()),
            held: Held::Pcp { session: Box::new(session), epoch, mapping },
        })
    });
    let pcp_err = match pcp {
        Ok(m) => return Some(m),
        Err(e) => e,
    };
    let upnp = match (config.server, server.ip()) {
        (None, IpAddr::V4(gateway)) => upnp(gateway, port),
        _ => Err(PortmapError::Unsupported("UPnP IGD is looked for on the default gateway only")),
    };
    match upnp {
        Ok(m) => Some(m),
        Err(upnp_err) => {
            log::info!(
                target: LOG,
                "no port mapping from {}: NAT-PMP: {natpmp_err}; PCP: {pcp_err}; UPnP IGD: {upnp_err}",
                server.ip()
            );
            None
        }
    }
}

fn upnp(gateway: Ipv4Addr, port: u16) -> Result<Mapping, PortmapError> {
    let internal = io::local_address_toward(SocketAddr::new(IpAddr::V4(gateway), 5351))
        .map_err(|e| PortmapError::Gateway(e.to_string()))?;
    let opts = DiscoverOptions { gateway: Some(IpAddr::V4(gateway)), ..DiscoverOptions::default() };
    let igd = IgdClient::discover(&opts)?;
    let ip = igd.external_ip()?;
    igd.add_port_mapping(&upnp_mapping(internal, port))?;
    Ok(Mapping {
        external: SocketAddr::new(ip, port),
        lifetime: Duration::from_secs(UPNP_LEASE.into()),
        held: Held::Upnp { igd, internal },
    })
}

fn upnp_mapping(internal: IpAddr, port: u16) -> PortMapping {
    PortMapping {
        protocol: Protocol::Udp,
        external_port: port,
        internal_client: internal,
        internal_port: port,
        description: "punchd".into(),
        lease_duration: UPNP_LEASE,
    }
}

/// Renews the mapping in place (a rebooted NAT-PMP or PCP router simply maps again: same request).
fn renew(m: &mut Mapping, port: u16) -> Result<(), PortmapError> {
    match &mut m.held {
        Held::NatPmp { session, epoch, ip } => {
            let granted = session.map(Protocol::Udp, port, m.external.port(), LIFETIME)?;
            if epoch.observe(granted.epoch, Instant::now()) {
                log::info!(target: LOG, "NAT-PMP router restarted (epoch {}): mapping renewed", granted.epoch);
            }
            m.external = SocketAddr::new(IpAddr::V4(*ip), granted.external_port);
            m.lifetime = Duration::from_secs(granted.lifetime.into());
        }
        Held::Pcp { session, epoch, mapping } => {
            let renewed = session.map_request(pcp::MapRequest {
                nonce: mapping.nonce,
                protocol: Protocol::Udp,
                internal_port: port,
                suggested_external: Some(mapping.external),
                lifetime: LIFETIME,
            })?;
            if epoch.observe(renewed.epoch, Instant::now()) {
                log::info!(target: LOG, "PCP server restarted (epoch {}): mapping renewed", renewed.epoch);
            }
            *mapping = renewed;
            m.external = renewed.external;
            m.lifetime = Duration::from_secs(renewed.lifetime.into());
        }
        Held::Upnp { igd, internal } => igd.add_port_mapping(&upnp_mapping(*internal, port))?,
    }
    Ok(())
}

/// Between renewals: has the router lost its state? NAT-PMP and PCP: the epoch went back (then the mapping is
/// made again at once, and a moved external address is reported); UPnP: the mapping is no longer listed.
fn check(m: &mut Mapping, port: u16) -> Result<(), String> {
    let reset = match &mut m.held {
        Held::NatPmp { session, epoch, ip } => match session.external_address() {
            Ok((addr, e)) => {
                *ip = addr;
                epoch.observe(e, Instant::now()) || SocketAddr::new(IpAddr::V4(addr), m.external.port()) != m.external
            }
            Err(e) => return Err(format!("NAT-PMP check failed: {e}")),
        },
        Held::Pcp { session, epoch, .. } => match session.announce() {
            Ok(e) => epoch.observe(e, Instant::now()),
            Err(e) => return Err(format!("PCP check failed: {e}")),
        },
        Held::Upnp { igd, .. } => match igd.get_port_mapping(Protocol::Udp, m.external.port()) {
            Ok(entry) if entry.internal_port == port => false,
            Ok(_) => return Err("UPnP mapping now points elsewhere".into()),
            Err(e) => return Err(format!("UPnP mapping no longer listed: {e}")),
        },
    };
    if reset {
        log::info!(target: LOG, "router lost its mapping state (epoch reset or new address): mapping again");
        renew(m, port).map_err(|e| format!("re-mapping failed: {e}"))?;
    }
    Ok(())
}

fn delete(m: &mut Mapping, port: u16) {
    let result = match &mut m.held {
        Held::NatPmp { session, .. } => session.delete(Protocol::Udp, port),
        Held::Pcp { session, mapping, .. } => session.delete(mapping),
        Held::Upnp { igd, .. } => igd.delete_port_mapping(Protocol::Udp, m.external.port()),
    };
    match result {
        Ok(()) => log::info!(target: LOG, "port mapping {} deleted", m.external),
        Err(e) => log::warn!(target: LOG, "deleting port mapping {} failed: {e}", m.external),
    }
}

#[cfg(test)]
mod tests {
    //! The thread against a NAT-PMP server of the test's own on loopback (RFC 6886 §3.2-3.4 wire format):
    //! mapped, renewed at half the lifetime, made again after the server "reboots" (its epoch starts over and
    //! its mappings are gone), deleted on stop.
    use super::*;
    use std::net::UdpSocket;
    use std::sync::{mpsc, Mutex};

    const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

    #[derive(Default)]
    struct State {
        /// Seconds since the epoch started, at `since`.
        base: u32,
        since: Option<Instant>,
        /// Every MAP request: (internal port, lifetime asked).
        maps: Vec<(u16, u32)>,
        mapped: Vec<u16>,
    }

    impl State {
        fn epoch(&self) -> u32 {
            self.base + self.since.map_or(0, |s| s.elapsed().as_secs() as u32)
        }
    }

    /// Answers NAT-PMP on a loopback socket until `stop`.
    fn fake_server(stop: Arc<AtomicBool>) -> (SocketAddr, Arc<Mutex<State>>, JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = sock.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { base: 1000, since: Some(Instant::now()), ..State::default() }));
        let shared = Arc::clone(&state);
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let mut st = shared.lock().unwrap();
                let epoch = st.epoch().to_be_bytes();
                let reply: Vec<u8> = match &buf[..n] {
                    [0, 0] => [&[0, 128, 0, 0][..], &epoch, &PUBLIC.octets()].concat(),
                    [0, 1, 0, 0, i0, i1, _, _, l0, l1, l2, l3] => {
                        let internal = u16::from_be_bytes([*i0, *i1]);
                        let asked = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
                        st.maps.push((internal, asked));
                        let (external, granted) = if asked == 0 {
                            st.mapped.retain(|p| *p != internal);
                            (0, 0)
                        } else {
                            st.mapped.push(internal);
                            // 2 s the first time (renewed after 1 s), then a minute: a mapping made again
                            // within the test's time is the epoch check's doing.
                            (internal, asked.min(if st.maps.len() == 1 { 2 } else { 60 }))
                        };
                        [&[0, 129, 0, 0][..], &epoch, &[*i0, *i1], &external.to_be_bytes(), &granted.to_be_bytes()]
                            .concat()
                    }
                    _ => continue,
                };
                let _ = sock.send_to(&reply, from);
            }
        });
        (addr, state, handle)
    }

    fn wait(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn mapped_renewed_remade_after_a_reboot_and_deleted_on_stop() {
        let server_stop = Arc::new(AtomicBool::new(false));
        let (server, state, fake) = fake_server(Arc::clone(&server_stop));
        let config = Config {
            port: 6666,
            server: Some(server),
            check: Duration::from_millis(200),
            retry: Duration::from_millis(200),
            min_renew: Duration::from_millis(100),
        };
        let (tx, reports) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mapper = start(config, move |m| tx.send(m).unwrap(), Arc::clone(&stop)).unwrap();
        let want = SocketAddr::new(IpAddr::V4(PUBLIC), 6666);
        assert_eq!(reports.recv_timeout(Duration::from_secs(5)).unwrap(), Some(want));

        // Renewed at half the granted 2 s.
        assert!(wait(Duration::from_secs(3), || state.lock().unwrap().maps.len() >= 2), "not renewed");

        // The server reboots: epoch from 0, no mappings. The next check (200 ms) notices and maps again, long
        // before the next renewal (30 s).
        let before = {
            let mut st = state.lock().unwrap();
            st.base = 0;
            st.since = Some(Instant::now());
            st.mapped.clear();
            st.maps.len()
        };
        assert!(
            wait(Duration::from_secs(2), || state.lock().unwrap().mapped.contains(&6666)),
            "not mapped again after the reboot"
        );
        assert!(state.lock().unwrap().maps.len() > before);

        // Stop: the mapping is deleted (lifetime 0) and reported gone.
        stop.store(true, Ordering::Relaxed);
        mapper.join().unwrap();
        let st = state.lock().unwrap();
        assert_eq!(st.maps.last(), Some(&(6666, 0)), "{:?}", st.maps);
        assert!(st.mapped.is_empty());
        drop(st);
        assert_eq!(reports.try_iter().last(), Some(None));
        server_stop.store(true, Ordering::Relaxed);
        fake.join().unwrap();
    }
}

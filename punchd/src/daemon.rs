//! The daemon: binds the one punching socket and serves the control socket from a shared status snapshot.
//! Keeper mode (no `--peer-id`) keeps the public endpoint known and the NAT mapping alive
//! (holepunch::punch::ReflexiveKeeper); peer mode runs the node (holepunch::punch::Node: rendezvous and
//! punching on the same socket, crate::node) and connects to the `--connect` peers at start.

use crate::birthday::Birthday;
use crate::config::Settings;
use crate::control::{self, Command};
use crate::controlled::{Controllable, Controlled};
use crate::diagnose;
use crate::exit::{EXIT_NO_ANSWER, EXIT_OK, EXIT_REFUSED};
use crate::portmap;
use crate::status::{PeerStatus, Snapshot, Status, TunnelStatus};
use crate::tunnel::{DataPath, Sockets};
use anyhow::{anyhow, bail, Context, Result};
use holepunch::identity::SecretKey;
use holepunch::io::{self, blocking, Exit, Family, Notice, ResolveError};
use holepunch::net::unspecified_like;
use holepunch::punch::{AgentEvent, Event, KeeperConfig, Node, NodeConfig, NodeEvent, ReflexiveKeeper};
use holepunch::relay::{TurnClientConfig, TurnCredentials};
use holepunch::signal::{NatProfile, RefuseReason};
use holepunch::text::escape_controls;
use holepunch::tunnel::{Tunnel, TunnelConfig, TunnelPeerConfig};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest the `--diagnose` run at start may take; a server that does not answer leaves the profile unknown.
const DIAGNOSE_LIMIT: Duration = Duration::from_secs(10);

/// Longest a single blocking read waits, so a shutdown signal is noticed promptly.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// The server's address: of `--bind`'s family when given, else IPv4 first (as stunclient prefers), so the
/// endpoint punchd keeps is the one stunclient diagnosed. The resolver gets as long as one request would.
pub fn resolve(server: &str, family_of: Option<IpAddr>, limit: Duration) -> Result<SocketAddr> {
    let (host, port) = io::parse_host_port(server).map_err(|e| anyhow!("--server: {e}"))?;
    let family = family_of.map_or(Family::Any, Family::of);
    let addrs = io::resolve(&host, port, family, limit).map_err(|e| match (e, family_of) {
        (ResolveError::NoAddressOfFamily { .. }, Some(ip)) => {
            anyhow!("--server {server:?} has no address of the family of --bind {ip}")
        }
        (e, _) => anyhow!("--server: {e}"),
    })?;
    addrs.first().copied().with_context(|| format!("--server {server:?} resolved to no address"))
}

/// Every rendezvous server of `--server` (repeated, or a name with several addresses), in order: the first
/// as [`resolve`] picks it, then every address of each name of that family. A later name that does not
/// resolve is left out with a warning (it may come back; the first one is needed to start).
pub fn resolve_servers(servers: &[String], family_of: Option<IpAddr>, limit: Duration) -> Result<Vec<SocketAddr>> {
    let Some(first) = servers.first() else { bail!("no --server") };
    let primary = resolve(first, family_of, limit)?;
    let family = Family::of(primary.ip());
    let mut all = vec![primary];
    for (i, server) in servers.iter().enumerate() {
        let addrs = match io::parse_host_port(server) {
            Ok((host, port)) => io::resolve(&host, port, family, limit).map_err(|e| anyhow!("{e}")),
            Err(e) => Err(anyhow!("{e}")),
        };
        match addrs {
            Ok(addrs) => all.extend(addrs.into_iter().filter(|a| !all.contains(a)).collect::<Vec<_>>()),
            // The first resolved above (a second lookup may fail on its own: a flaky resolver).
            Err(_) if i == 0 => {}
            Err(e) => log::warn!("--server {server:?}: {e}; left out"),
        }
    }
    Ok(all)
}

/// The TURN server of `--relay`, of the punching socket's family (the allocation is made from it).
fn resolve_relay(server: &str, local: SocketAddr, limit: Duration) -> Result<SocketAddr> {
    let (host, port) = io::parse_host_port(server).map_err(|e| anyhow!("--relay: {e}"))?;
    let family = Family::of(local.ip());
    let addrs = io::resolve(&host, port, family, limit).map_err(|e| anyhow!("--relay: {e}"))?;
    addrs.first().copied().with_context(|| format!("--relay {server:?} resolved to no address"))
}

/// TURN credentials: the long-term user and password, or REST ones valid for 30 days from the start (a
/// daemon running longer needs a restart to allocate again: docs/relay.md, "Client").
fn turn_credentials(c: &crate::config::RelayCredentials) -> TurnCredentials {
    match c {
        crate::config::RelayCredentials::Password { user, password } => TurnCredentials::new(user, password),
        crate::config::RelayCredentials::Rest { user, secret } => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            TurnCredentials::rest(secret.as_bytes(), user, now + 30 * 24 * 3600)
        }
    }
}

fn bind(settings: &Settings, server: SocketAddr) -> Result<UdpSocket> {
    let ip = settings.bind.unwrap_or(unspecified_like(server.ip()));
    if ip.is_ipv4() != server.is_ipv4() {
        bail!("--bind {ip} and server {server} are of different address families");
    }
    let local = SocketAddr::new(ip, settings.port);
    UdpSocket::bind(local).map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => anyhow!("UDP {local} is in use (another punchd? choose --port)"),
        // Windows has no privileged ports; there, WSAEACCES is a port in a range Hyper-V, WSL or Docker reserved,
        // or one another program holds exclusively (docs/windows.md).
        ErrorKind::PermissionDenied if cfg!(windows) => anyhow!(
            "not allowed to bind UDP {local} (a reserved port range? `netsh int ipv4 show excludedportrange \
             protocol=udp`; choose --port)"
        ),
        ErrorKind::PermissionDenied => anyhow!("not allowed to bind UDP {local} (ports below 1024 need privileges)"),
        _ => anyhow!("cannot bind UDP {local}: {e}"),
    })
}

fn report(json: bool, event: &Event, local: SocketAddr) {
    let line = match (json, event) {
        (true, Event::Refused(r)) => serde_json::json!({"event": "refused", "reason": r.to_string()}).to_string(),
        // The reason carries the server's text: escaped, so it cannot drive the terminal or forge lines.
        (false, Event::Refused(r)) => {
            format!("server answered without a usable public endpoint: {}", escape_controls(&r.to_string()))
        }
        (true, Event::Discovered(p)) => {
            serde_json::json!({"event": "discovered", "public": p.to_string(), "local": local.to_string()}).to_string()
        }
        (true, Event::Changed { old, new }) => {
            serde_json::json!({"event": "changed", "old": old.to_string(), "public": new.to_string(), "local": local.to_string()})
                .to_string()
        }
        (true, Event::ServerLost) => serde_json::json!({"event": "server-lost"}).to_string(),
        (false, Event::Discovered(p)) => format!("public endpoint {p} (local {local})"),
        (false, Event::Changed { old, new }) => format!("public endpoint changed: {old} -> {new} (local {local})"),
        (false, Event::ServerLost) => "server does not answer: public endpoint unknown".to_string(),
    };
    println!("{line}");
}

/// The status before anything is known: identity and configured peers.
fn initial_status(settings: &Settings) -> Status {
    let mut s = Status::default();
    if let Some(id) = &settings.identity {
        s.name = Some(id.name.to_string());
        s.key = Some(id.key.public().to_base64());
        s.peers = id.peers.iter().map(|p| PeerStatus::configured(p.name.to_string(), p.key.to_base64())).collect();
    }
    s
}

/// The control socket's path: `--control`, else the default of the peer id, else none (keeper mode).
fn control_path(settings: &Settings) -> Option<PathBuf> {
    settings.control.clone().or_else(|| settings.identity.as_ref().map(|id| control::path::default_path(&id.name)))
}

type Control = control::ControlServer;

fn open_control(settings: &Settings, snapshot: &Snapshot) -> Result<Option<(Control, mpsc::Receiver<Command>)>> {
    let (tx, rx) = mpsc::channel();
    Ok(open_control_with(settings, snapshot, tx)?.map(|server| (server, rx)))
}

/// The control socket (Windows: named pipe) feeding `tx` (peer mode: the channel also carries the daemon's
/// own commands).
fn open_control_with(settings: &Settings, snapshot: &Snapshot, tx: mpsc::Sender<Command>) -> Result<Option<Control>> {
    let Some(path) = control_path(settings) else { return Ok(None) };
    Ok(Some(control::ControlServer::start(&path, Arc::clone(snapshot), tx)?))
}

/// The keeper under the control socket: it knows the public endpoint; it cannot connect to peers (the
/// rendezvous engine is not part of it).
impl Controllable for ReflexiveKeeper {
    fn command(&mut self, _now: Instant, command: Command) {
        match command {
            Command::Connect { peer, reply } => {
                let _ = reply.send(Err(format!(
                    "cannot connect to {peer}: this punchd keeps the public endpoint only (no rendezvous engine)"
                )));
            }
            // Peer mode only: the keeper neither maps ports nor probes.
            Command::PortMapping(_) | Command::SocketsOpened { .. } => {}
        }
    }

    fn fill_status(&self, _now: Instant, status: &mut Status) {
        status.reflexive = self.public();
    }
}

pub fn run(settings: Settings) -> Result<i32> {
    if settings.identity.is_some() && !settings.once {
        return run_peer(settings);
    }
    let retransmit = settings.retransmit;
    let snapshot: Snapshot = Arc::new(Mutex::new(initial_status(&settings)));
    // Before any other thread starts (the control socket is bound under a process-wide umask).
    let control = if settings.once { None } else { open_control(&settings, &snapshot)? };
    // The public endpoint only: the first server is enough.
    let server = resolve(&settings.servers[0], settings.bind, retransmit.give_up_after())?;
    let socket = bind(&settings, server)?;
    let local = socket.local_addr().context("local address of the socket")?;
    log::info!("punching socket bound on {local}; tracking public endpoint via {server}");
    if let Some(id) = &settings.identity {
        log::info!("peer {} (key {}), {} peer(s) configured", id.name, id.key.public().short(), id.peers.len());
        for peer in &id.connect {
            log::warn!("--connect {peer}: not with --once (the public endpoint only)");
        }
    }
    {
        let mut s = snapshot.lock().unwrap_or_else(|p| p.into_inner());
        s.local = Some(local);
        s.server = Some(server);
    }
    let (_control, commands) = match control {
        Some((server, commands)) => (Some(server), Some(commands)),
        None => (None, None),
    };

    let shutdown = shutdown_flag()?;
    let seed = io::os_seed()?;
    let mut config = KeeperConfig::new(local, server);
    config.keepalive = settings.keepalive;
    config.retransmit = retransmit;
    let started = Instant::now();
    // --once is bounded by the first transaction: an answer, an ICMP error or the schedule's end finishes it.
    // The margin covers the loop's own wake-ups; the deadline is a guard, the keeper's events come first.
    let once_deadline = started + retransmit.give_up_after() + Duration::from_secs(1);
    let keeper = ReflexiveKeeper::new(config, started, seed);
    let mut engine = Controlled::new(keeper, commands, Arc::clone(&snapshot));

    let mut driver = blocking::Driver::new(vec![socket])
        .context("setting up the punching socket")?
        .stop_flag(shutdown)
        .wake_every(SHUTDOWN_POLL);
    if settings.once {
        driver = driver.deadline(once_deadline);
    }
    let (once, json) = (settings.once, settings.json);
    let exit = driver.run(&mut engine, |notice| match notice {
        Notice::Event(ev) => {
            report(json, &ev, local);
            if once {
                ControlFlow::Break(match ev {
                    Event::ServerLost => EXIT_NO_ANSWER,
                    Event::Refused(_) => EXIT_REFUSED,
                    Event::Discovered(_) | Event::Changed { .. } => EXIT_OK,
                })
            } else {
                ControlFlow::Continue(())
            }
        }
        Notice::SendFailed { transmit, error } => {
            // A transient route error must not end the daemon: the retransmission schedule retries.
            log::warn!("send to {} failed: {error}", transmit.dst);
            ControlFlow::Continue(())
        }
    })?;
    match exit {
        Exit::Done(code) => return Ok(code),
        Exit::Deadline => {
            report(json, &Event::ServerLost, local);
            return Ok(EXIT_NO_ANSWER);
        }
        Exit::Stopped => {}
    }
    log::info!("shutting down");
    // The control socket is removed here, before the process exits.
    drop(_control);
    Ok(EXIT_OK)
}

/// Windows: Ctrl-C, Ctrl-Break and the console's close, logoff and shutdown events set the returned flag
/// (crate::console).
#[cfg(windows)]
fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    crate::console::shutdown_flag().context("installing the console control handler")
}

/// SIGINT and SIGTERM set the returned flag.
#[cfg(unix)]
fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown)).context("installing signal handler")?;
    }
    Ok(shutdown)
}

/// Peer mode: the node on the punching socket, `--connect` peers asked for at start, one line per event; the
/// router port mapping (crate::portmap) and birthday probing's extra sockets feed it through the command
/// channel the control socket uses.
fn run_peer(settings: Settings) -> Result<i32> {
    let Some(id) = settings.identity.as_ref() else { bail!("peer mode needs --peer-id") };
    let snapshot: Snapshot = Arc::new(Mutex::new(initial_status(&settings)));
    // Commands (control socket, port mapping, birthday sockets) go through a relay that wakes the loop for
    // each (started below, with the driver): otherwise a `connect` would wait for the loop's next turn, up to
    // the wake interval (docs/performance.md measures the time to a path from the request).
    let (commands_tx, relay) = mpsc::channel();
    let (engine_tx, commands) = mpsc::channel();
    // Before any other thread starts (the control socket is bound under a process-wide umask).
    let control = open_control_with(&settings, &snapshot, commands_tx.clone())?;
    let servers = resolve_servers(&settings.servers, settings.bind, settings.retransmit.give_up_after())?;
    let server = servers[0];
    let socket = bind(&settings, server)?;
    let local = socket.local_addr().context("local address of the socket")?;
    // Before anything is sent: a tunnel that cannot be created is a one-line error at start.
    let device = match &settings.tun {
        Some(tun) => {
            crate::tunnel::check_overlay_clash(tun)?;
            Some(crate::tunnel::open_device(tun)?)
        }
        None => None,
    };
    let shutdown = shutdown_flag()?;
    let (socket, profile) = if settings.diagnose {
        diagnose::profile(socket, server, settings.retransmit, DIAGNOSE_LIMIT, Arc::clone(&shutdown))?
    } else {
        // No diagnosis: the prediction assumes the worst that still allows trying.
        (socket, NatProfile::UNKNOWN)
    };
    let mut hosts = io::host_candidates(local, server);
    if let Some(tun) = &settings.tun {
        // Our own tunnel address is no LAN: a check to it would travel through the tunnel itself.
        hosts.retain(|h| !tun.overlay.contains(h.ip()));
    }
    log::info!(
        "peer {} (key {}), {} peer(s) configured; punching socket {local}, rendezvous {}, host candidates {}",
        id.name,
        id.key.public().short(),
        id.peers.len(),
        servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(" then "),
        hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
    );
    {
        let mut s = snapshot.lock().unwrap_or_else(|p| p.into_inner());
        s.local = Some(local);
        s.server = Some(server);
    }
    let _control = control;
    // A server on loopback has no router in between: nothing to map (and nothing is sent to the gateway).
    let mapper = if settings.portmap && local.is_ipv4() && !server.ip().is_loopback() {
        let tx = commands_tx.clone();
        // Not waited for: the node starts at once, and reports the mapping when it comes (a new registration,
        // and fresh introductions of the peers without a path).
        let report = move |m| {
            let _ = tx.send(Command::PortMapping(m));
        };
        let handle = portmap::start(portmap::Config::new(local.port()), report, Arc::clone(&shutdown))
            .context("port-mapping thread")?;
        Some(handle)
    } else {
        if settings.portmap && !server.ip().is_loopback() {
            log::info!("no router port mapping: NAT-PMP, PCP and UPnP IGD are used for IPv4 only here");
        }
        None
    };
    let peers = id.peers.iter().map(|p| (p.name.clone(), p.key)).collect();
    let key = SecretKey::from_seed(id.key.to_bytes());
    let mut config =
        NodeConfig::new(local, server, id.name.clone(), key, &id.secret, peers).with_keepalive(settings.keepalive);
    config.client.retransmit = settings.retransmit;
    // With the tunnel, each new path is probed with a check as large as a full tunnel datagram.
    config.agent.mtu_probe = settings.tun.as_ref().map(|t| t.mtu + holepunch::tunnel::packet::DATA_OVERHEAD as u16);
    config.host_candidates = hosts;
    config.profile = profile;
    config.agent.primer_ttl = settings.primer_ttl;
    config.relay_from_server = settings.relay_from_server;
    config.fallback_servers = servers[1..].to_vec();
    if let Some(relay) = &settings.relay {
        let server = resolve_relay(&relay.server, local, settings.retransmit.give_up_after())?;
        log::info!("TURN relay {server} (used when no direct path opens)");
        snapshot.lock().unwrap_or_else(|p| p.into_inner()).relay_server = Some(server);
        config.relay = Some(TurnClientConfig::new(local, server, turn_credentials(&relay.credentials)));
    }
    let started = Instant::now();
    let mut node = Node::new(config, io::os_seed()?, started).map_err(|e| anyhow!("--peer: {e}"))?;
    for peer in &id.connect {
        node.connect(started, peer).map_err(|e| anyhow!("--connect {peer}: {e}"))?;
    }
    if settings.tun.is_some() {
        crate::tunnel::grow_socket_buffers(&socket);
    }
    let sockets = Sockets::new(&socket)?;
    let data_path = match (device, &settings.tun) {
        (Some(device), Some(tun)) => {
            let mut peers = Vec::with_capacity(id.peers.len());
            for (p, ip) in id.peers.iter().zip(&tun.peer_addresses) {
                peers.push(TunnelPeerConfig {
                    name: p.name.to_string(),
                    key: p.key,
                    allowed_ips: crate::tunnel::allowed(*ip),
                    endpoint: p.endpoint,
                });
            }
            let config =
                TunnelConfig { key: SecretKey::from_seed(id.key.to_bytes()), local, peers, persistent_keepalive: None };
            let tunnel = Arc::new(Tunnel::new(config).map_err(|e| anyhow!("tunnel: {e}"))?);
            let names: Vec<(String, IpAddr)> =
                id.peers.iter().zip(&tun.peer_addresses).map(|(p, ip)| (p.name.to_string(), *ip)).collect();
            log::info!("{}", crate::tunnel::describe(tun, &names));
            snapshot.lock().unwrap_or_else(|p| p.into_inner()).tunnel = Some(TunnelStatus {
                device: tun.name.clone(),
                address: tun.address.to_string(),
                mtu: tun.mtu,
                coalesced_sends: 0,
                coalesced_receives: 0,
            });
            Some(DataPath::new(tunnel, device, Arc::clone(&sockets)))
        }
        _ => None,
    };
    let peer_keys: Vec<_> = id.peers.iter().map(|p| (p.name.clone(), p.key)).collect();
    let relay_route = data_path.as_ref().map(|_| Arc::clone(&sockets.relay));
    let tunnel = data_path.as_ref().map(|d| Arc::clone(&d.tunnel));
    let engine = crate::node::PeerEngine::new(node, tunnel, relay_route, &peer_keys);
    let mut engine = Controlled::new(engine, Some(commands), Arc::clone(&snapshot));
    let mut driver = blocking::Driver::new(vec![socket])
        .context("setting up the punching socket")?
        .stop_flag(Arc::clone(&shutdown))
        .wake_every(SHUTDOWN_POLL);
    if let Some(d) = &data_path {
        driver = driver.intercept(Arc::clone(d) as Arc<dyn blocking::Intercept>);
        for (name, job) in [("tun-read", 0), ("tun-timers", 1)] {
            let (d, stop) = (Arc::clone(d), Arc::clone(&shutdown));
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || if job == 0 { d.read_device(&stop) } else { d.run_timers(&stop) })
                .with_context(|| format!("starting the {name} thread"))?;
        }
    }
    let waker = driver.socket_control();
    // Ends when every sender is gone (at exit) or the loop's channel is.
    std::thread::Builder::new()
        .name("commands".into())
        .spawn(move || {
            for command in relay {
                if engine_tx.send(command).is_err() {
                    break;
                }
                waker.wake();
            }
        })
        .context("starting the command relay")?;
    let mut birthday = Birthday::new(local, driver.socket_control(), commands_tx, Arc::clone(&sockets));
    let json = settings.json;
    let exit = driver.run(&mut engine, |notice| match notice {
        Notice::Event(ev) => {
            println!("{}", crate::node::line(&ev, local, json));
            match ev {
                // A configuration error no retry mends: stop with the one line.
                NodeEvent::Refused(RefuseReason::WrongSecret) => return ControlFlow::Break(RefuseReason::WrongSecret),
                NodeEvent::Punch(AgentEvent::OpenSockets { peer, count }, _) => birthday.open(peer, count),
                NodeEvent::Punch(AgentEvent::CloseSockets { peer, sockets }, _) => birthday.close(&peer, &sockets),
                _ => {}
            }
            ControlFlow::Continue(())
        }
        Notice::SendFailed { transmit, error } => {
            log::warn!("send to {} failed: {error}", transmit.dst);
            ControlFlow::Continue(())
        }
    })?;
    log::info!("shutting down");
    // The mapping is deleted before the process exits (the thread saw the shutdown flag, or is told now).
    shutdown.store(true, Ordering::Relaxed);
    if let Some(m) = mapper {
        let _ = m.join();
    }
    drop(_control);
    match exit {
        Exit::Done(refusal) => bail!("{refusal}"),
        Exit::Deadline | Exit::Stopped => Ok(EXIT_OK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn server_forms_and_family() {
        assert_eq!(resolve("127.0.0.1", None, LIMIT).unwrap(), "127.0.0.1:3478".parse().unwrap());
        assert_eq!(resolve("[::1]:7", None, LIMIT).unwrap(), "[::1]:7".parse().unwrap());
        assert_eq!(resolve("::1", None, LIMIT).unwrap(), "[::1]:3478".parse().unwrap());
        let v4 = resolve("localhost:9", Some("0.0.0.0".parse().unwrap()), LIMIT).unwrap();
        assert_eq!(v4, "127.0.0.1:9".parse().unwrap());
        let e = resolve("::1", Some("127.0.0.1".parse().unwrap()), LIMIT).unwrap_err();
        assert_eq!(e.to_string(), "--server \"::1\" has no address of the family of --bind 127.0.0.1");
    }

    #[test]
    fn several_servers_in_order_of_the_first_ones_family() {
        let list = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = resolve_servers(&list(&["127.0.0.1", "127.0.0.2:7", "127.0.0.1", "::1"]), None, LIMIT);
        // The IPv6 server is of another family than the punching socket: it cannot be registered at.
        let want: Vec<SocketAddr> = vec!["127.0.0.1:3478".parse().unwrap(), "127.0.0.2:7".parse().unwrap()];
        assert_eq!(all.unwrap(), want);
        let all = resolve_servers(&list(&["127.0.0.1", "localhost:9"]), None, LIMIT).unwrap();
        assert_eq!(all[1], "127.0.0.1:9".parse().unwrap(), "a name gives every address of the family");
        let e = resolve_servers(&list(&["127.0.0.1:0", "127.0.0.1"]), None, LIMIT).unwrap_err();
        assert!(e.to_string().starts_with("--server: port 0"), "the first server is needed: {e}");
    }

    #[test]
    fn port_zero_is_refused() {
        let e = resolve("127.0.0.1:0", None, LIMIT).unwrap_err();
        assert!(e.to_string().starts_with("--server: port 0"), "{e}");
    }
}

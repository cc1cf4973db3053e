//! The I/O edge: name resolution, socket setup, and the loop that feeds the engine.

use crate::icmp::{self, IcmpError};
use crate::{Failure, DEFAULT_LOCAL_PORT, DEFAULT_PORT, EXIT_RESOLVE, EXIT_RUNTIME, EXIT_USAGE};
use anyhow::{anyhow, Context};
use holepunch::io::RouteError;
use holepunch::nat::{Config, ConfigError, Diagnosis, Event, Report};
use holepunch::net::{Engine, Received};
use log::{debug, warn};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// A `--server` value and the address it resolved to.
#[derive(Clone, Debug)]
pub struct Server {
    pub given: String,
    pub addr: SocketAddr,
}

/// Split HOST[:PORT] (IPv6 literals with or without brackets).
pub fn split_host_port(s: &str) -> Result<(String, u16), Failure> {
    let usage = |m: String| Failure::new(EXIT_USAGE, anyhow!(m));
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return Ok((inner.to_string(), DEFAULT_PORT));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| usage(format!("bad port {p:?} in --server {s:?}")))?;
            (h.trim_start_matches('[').trim_end_matches(']'), port)
        }
        None => (s, DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err(usage(format!("empty host in --server {s:?}")));
    }
    Ok((host.to_string(), port))
}

/// Resolve every `--server`; all results share one address family (-4, -6, or the first server's).
pub fn resolve_all(given: &[String], v4: bool, v6: bool, limit: Duration) -> Result<Vec<Server>, Failure> {
    let mut resolved = Vec::new();
    for s in given {
        let (host, port) = split_host_port(s)?;
        let addrs = lookup(&host, port, limit)?;
        if addrs.is_empty() {
            return Err(Failure::new(EXIT_RESOLVE, anyhow!("{host:?} has no address")));
        }
        resolved.push((s.clone(), host, addrs));
    }
    // Without -4/-6, IPv4 when the first server has it: NAT questions are mostly IPv4 questions.
    let want_v4 = if v4 {
        true
    } else if v6 {
        false
    } else {
        resolved[0].2.iter().any(SocketAddr::is_ipv4)
    };
    let family = if want_v4 { "IPv4" } else { "IPv6" };
    let mut out: Vec<Server> = Vec::new();
    for (given, host, addrs) in resolved {
        let addr = addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == want_v4)
            .ok_or_else(|| Failure::new(EXIT_RESOLVE, anyhow!("{host:?} has no {family} address")))?;
        if !out.iter().any(|s| s.addr == addr) {
            out.push(Server { given, addr });
        }
    }
    Ok(out)
}

/// Resolve with the system resolver, bounded by `limit` (getaddrinfo has no timeout of its own, so it runs in
/// a thread that is abandoned if it takes too long).
fn lookup(host: &str, port: u16, limit: Duration) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    thread::spawn(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(Failure::new(EXIT_RESOLVE, anyhow!("cannot resolve {host:?}: {e}"))),
        Err(_) => Err(Failure::new(
            EXIT_RESOLVE,
            anyhow!("cannot resolve {host:?}: no answer from the resolver within {:.1} s", limit.as_secs_f64()),
        )),
    }
}

/// The sockets of a diagnosis, index = engine socket id.
pub struct Sockets {
    pub sockets: Vec<Arc<UdpSocket>>,
    pub locals: Vec<SocketAddr>,
    /// Set when the default port was busy and a random one was used instead.
    pub fallback_note: Option<String>,
}

/// The local address the kernel would use towards `server` (no packet is sent).
fn route_source(server: SocketAddr) -> Result<IpAddr, Failure> {
    holepunch::io::local_address_toward(server).map_err(|e| {
        let code = match e {
            RouteError::NoRoute { .. } => crate::EXIT_NO_ANSWER,
            RouteError::Socket(_) | RouteError::LocalAddress(_) => EXIT_RUNTIME,
        };
        Failure::new(code, anyhow!("{e}"))
    })
}

/// Bind every socket the plan needs on the address that routes to the first server. Binding the specific
/// address (not the wildcard) makes the local endpoint exact, which the NAT-present test compares against.
pub fn open_sockets(cfg: &Config, first_server: SocketAddr, local_port: Option<u16>) -> Result<Sockets, Failure> {
    let ip = route_source(first_server)?;
    let n = cfg.plan().count();
    let mut sockets = Vec::with_capacity(n);
    let mut fallback_note = None;
    let wanted = local_port.unwrap_or(DEFAULT_LOCAL_PORT);
    let primary = match UdpSocket::bind(SocketAddr::new(ip, wanted)) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::AddrInUse && local_port.is_none() => {
            let note = format!(
                "local port {wanted} is in use (punchd running?); using a random port instead (set --local-port)"
            );
            warn!("{note}");
            fallback_note = Some(note);
            UdpSocket::bind(SocketAddr::new(ip, 0))
                .map_err(|e| Failure::new(EXIT_RUNTIME, anyhow!("cannot bind a UDP socket on {ip}: {e}")))?
        }
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            return Err(Failure::new(
                EXIT_USAGE,
                anyhow!("local port {wanted} on {ip} is in use; pick another --local-port (0 = random)"),
            ))
        }
        Err(e) => {
            return Err(Failure::new(EXIT_RUNTIME, anyhow!("cannot bind UDP {}: {e}", SocketAddr::new(ip, wanted))))
        }
    };
    sockets.push(primary);
    for _ in 1..n {
        let s = UdpSocket::bind(SocketAddr::new(ip, 0))
            .map_err(|e| Failure::new(EXIT_RUNTIME, anyhow!("cannot bind a UDP socket on {ip}: {e}")))?;
        sockets.push(s);
    }
    // Every socket gets ICMP errors: the engine decides which transactions one concerns (same socket, same
    // destination, not a hairpin request), so enabling it everywhere cannot blur a filtering result.
    for s in &sockets {
        if let Err(e) = icmp::enable(s) {
            debug!("IP_RECVERR not available ({e}): an unreachable server is found by timeout only");
        }
    }
    let locals = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .context("cannot read a socket's local address")
        .map_err(|e| Failure::new(EXIT_RUNTIME, e))?;
    Ok(Sockets { sockets: sockets.into_iter().map(Arc::new).collect(), locals, fallback_note })
}

/// Upper bound on the whole run, a guard against an engine bug turning into a hang.
fn hard_limit(cfg: &Config) -> Duration {
    let tx = cfg.retransmit.give_up_after();
    let chain = 4 + cfg.allocation_samples as u32;
    let life = cfg.lifetime.map(|w| w + tx * 2).unwrap_or_default();
    tx * chain + life + Duration::from_secs(5)
}

/// The library describes values; say which flag set them.
fn config_failure(e: ConfigError) -> Failure {
    let msg = match e {
        ConfigError::ZeroLifetime => "--max-wait must be longer than zero".to_string(),
        ConfigError::NoServer => "no --server given".to_string(),
        ConfigError::MixedFamilies(s) => {
            format!("--server {s} and the local sockets are of different address families")
        }
        other => format!("internal: {other}"),
    };
    Failure::new(EXIT_USAGE, anyhow!(msg))
}

/// What the receiver threads hand to the loop.
enum Input {
    Datagram(usize, SocketAddr, Vec<u8>),
    /// ICMP port unreachable for a datagram socket `.0` sent to `.1`.
    Unreachable(usize, SocketAddr),
}

/// Run the engine over the real sockets until it reports.
pub fn run_diagnosis(cfg: Config, sockets: &Sockets, verbose: bool) -> Result<Report, Failure> {
    let limit = hard_limit(&cfg);
    let start = Instant::now();
    let mut diag = Diagnosis::new(cfg, sockets.locals.clone(), start).map_err(config_failure)?;

    // One receiver thread per socket feeding a channel: portable, and the main loop stays a plain
    // "wait for a datagram or the next timeout".
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Input>();
    let mut threads = Vec::new();
    for (i, sock) in sockets.sockets.iter().enumerate() {
        let sock = Arc::clone(sock);
        let stop = Arc::clone(&stop);
        let tx = tx.clone();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| Failure::new(EXIT_RUNTIME, anyhow!("socket setup: {e}")))?;
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if tx.send(Input::Datagram(i, from, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    // With IP_RECVERR a queued ICMP error surfaces as a receive error; the details are in the
                    // error queue. Elsewhere (or for other errors) the engine's timers handle the silence.
                    Err(e) => {
                        debug!("socket {i}: receive error: {e}");
                        for err in icmp::drain(&sock) {
                            match err {
                                IcmpError::PortUnreachable { dest, offender } => {
                                    debug!("socket {i}: ICMP port unreachable for {dest} (from {offender:?})");
                                    if tx.send(Input::Unreachable(i, dest)).is_err() {
                                        return;
                                    }
                                }
                                other => debug!("socket {i}: ignoring {other:?}"),
                            }
                        }
                    }
                }
            }
        }));
    }
    drop(tx);

    let result = (|| {
        let mut buf = [0u8; 1500];
        let mut send_errors: Vec<String> = Vec::new();
        let mut unreachable: Vec<(usize, SocketAddr)> = Vec::new();
        loop {
            for (i, dest) in unreachable.drain(..) {
                diag.handle_unreachable(Instant::now(), sockets.locals[i], dest);
            }
            while let Some(t) = diag.poll_transmit(&mut buf) {
                let Some(i) = sockets.locals.iter().position(|l| *l == t.local) else {
                    return Err(Failure::new(EXIT_RUNTIME, anyhow!("internal: a transmit from unknown {}", t.local)));
                };
                let sock = &sockets.sockets[i];
                let mut sent = sock.send_to(&buf[..t.len], t.dst);
                if sent.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused) {
                    // With IP_RECVERR a queued ICMP error (for an earlier datagram, maybe to another address)
                    // fails the next send and that datagram is not sent. Take the errors out of the queue,
                    // which clears the pending error, and send again.
                    for err in icmp::drain(sock) {
                        if let IcmpError::PortUnreachable { dest, .. } = err {
                            debug!("socket {i}: ICMP port unreachable for {dest}");
                            unreachable.push((i, dest));
                        }
                    }
                    sent = sock.send_to(&buf[..t.len], t.dst);
                }
                if let Err(e) = sent {
                    let line = format!("sending to {} failed: {e}", t.dst);
                    debug!("{line}");
                    if !send_errors.contains(&line) {
                        send_errors.push(line);
                    }
                }
            }
            if !unreachable.is_empty() {
                continue; // feed them now: they may end transactions and start others
            }
            while let Some(ev) = diag.poll_event() {
                match ev {
                    Event::Finished => {
                        let mut report = diag.report().cloned().ok_or_else(|| {
                            Failure::new(EXIT_RUNTIME, anyhow!("internal: finished without a report"))
                        })?;
                        report.notes.extend(sockets.fallback_note.clone());
                        report.notes.extend(send_errors.iter().cloned());
                        return Ok(report);
                    }
                    Event::ServerResult { server, mapped } if verbose => match mapped {
                        Some(m) => eprintln!("  {server} answered: public endpoint {m}"),
                        None => eprintln!("  {server} did not answer"),
                    },
                    Event::Progress(p) if verbose => eprintln!("  {p}"),
                    _ => {}
                }
            }
            let now = Instant::now();
            if now.duration_since(start) > limit {
                return Err(Failure::new(
                    EXIT_RUNTIME,
                    anyhow!("internal: the diagnosis did not finish within {limit:?}"),
                ));
            }
            let wait =
                diag.poll_timeout().map(|t| t.saturating_duration_since(now)).unwrap_or(Duration::from_millis(100));
            match rx.recv_timeout(wait) {
                Ok(Input::Datagram(i, from, data)) => {
                    diag.handle_input(Instant::now(), Received::udp(sockets.locals[i], from), &data);
                }
                Ok(Input::Unreachable(i, dest)) => {
                    diag.handle_unreachable(Instant::now(), sockets.locals[i], dest);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Failure::new(EXIT_RUNTIME, anyhow!("internal: receiver threads ended")))
                }
            }
            diag.handle_timeout(Instant::now());
        }
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let hp = |s: &str| split_host_port(s).map_err(|f| f.error.to_string());
        assert_eq!(hp("stun.l.google.com:19302").unwrap(), ("stun.l.google.com".into(), 19302));
        assert_eq!(hp("example.org").unwrap(), ("example.org".into(), 3478));
        assert_eq!(hp("127.0.0.1").unwrap(), ("127.0.0.1".into(), 3478));
        assert_eq!(hp("[::1]:5000").unwrap(), ("::1".into(), 5000));
        assert_eq!(hp("::1").unwrap(), ("::1".into(), 3478));
        assert_eq!(hp("[::1]").unwrap(), ("::1".into(), 3478));
        assert!(hp("host:notaport").is_err());
        assert!(hp("host:0").is_err());
        assert!(hp(":3478").is_err());
    }

    #[test]
    fn family_selection() {
        let s = resolve_all(&["127.0.0.1:1".into(), "[::1]:2".into()], true, false, Duration::from_secs(1));
        assert_eq!(s.err().map(|f| f.code), Some(EXIT_RESOLVE));
        let s =
            resolve_all(&["127.0.0.1:1".into(), "127.0.0.1:1".into()], false, false, Duration::from_secs(1)).unwrap();
        assert_eq!(s.len(), 1, "duplicates removed");
    }
}

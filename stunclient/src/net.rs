//! The I/O edge: name resolution, socket setup, and the loop that feeds the engine (all three from
//! `holepunch::io`; this file adds the flag names and exit codes).

use crate::{Failure, DEFAULT_LOCAL_PORT, EXIT_RESOLVE, EXIT_RUNTIME, EXIT_USAGE};
use anyhow::{anyhow, Context};
use holepunch::io::{self, blocking, Exit, Family, Notice, RouteError};
use holepunch::nat::{Config, ConfigError, Diagnosis, Event, Report};
use log::warn;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// A `--server` value and the address it resolved to.
#[derive(Clone, Debug)]
pub struct Server {
    pub given: String,
    pub addr: SocketAddr,
}

/// Resolve every `--server`; all results share one address family (-4, -6, or the first server's).
pub fn resolve_all(given: &[String], v4: bool, v6: bool, limit: Duration) -> Result<Vec<Server>, Failure> {
    let mut resolved = Vec::new();
    for s in given {
        let (host, port) = io::parse_host_port(s).map_err(|e| Failure::new(EXIT_USAGE, anyhow!("--server: {e}")))?;
        let addrs = io::resolve(&host, port, Family::Any, limit).map_err(|e| Failure::new(EXIT_RESOLVE, e.into()))?;
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
    let family = if want_v4 { Family::V4 } else { Family::V6 };
    let mut out: Vec<Server> = Vec::new();
    for (given, host, addrs) in resolved {
        let addr = addrs.iter().copied().find(|a| a.is_ipv4() == want_v4).ok_or_else(|| {
            Failure::new(EXIT_RESOLVE, io::ResolveError::NoAddressOfFamily { host: host.clone(), family }.into())
        })?;
        if !out.iter().any(|s| s.addr == addr) {
            out.push(Server { given, addr });
        }
    }
    Ok(out)
}

/// The sockets of a diagnosis in the driver that runs it, index = engine socket id.
pub struct Sockets {
    pub driver: blocking::Driver,
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
    // The driver asks every socket for ICMP errors: the engine decides which transactions one concerns
    // (same socket, same destination, not a hairpin request), so enabling it everywhere cannot blur a
    // filtering result.
    let driver = blocking::Driver::new(sockets)
        .context("cannot set up the sockets")
        .map_err(|e| Failure::new(EXIT_RUNTIME, e))?;
    let locals = driver.locals().to_vec();
    Ok(Sockets { driver, locals, fallback_note })
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

/// Run the engine over the real sockets until it reports.
pub fn run_diagnosis(cfg: Config, sockets: Sockets, verbose: bool) -> Result<Report, Failure> {
    let limit = hard_limit(&cfg);
    let start = Instant::now();
    let mut diag = Diagnosis::new(cfg, sockets.locals.clone(), start).map_err(config_failure)?;
    let driver = sockets.driver.deadline(start + limit);
    let mut send_errors: Vec<String> = Vec::new();
    let exit = driver
        .run(&mut diag, |notice| {
            match notice {
                Notice::Event(Event::Finished) => return ControlFlow::Break(()),
                Notice::Event(Event::ServerResult { server, mapped }) if verbose => match mapped {
                    Some(m) => eprintln!("  {server} answered: public endpoint {m}"),
                    None => eprintln!("  {server} did not answer"),
                },
                Notice::Event(Event::Progress(p)) if verbose => eprintln!("  {p}"),
                Notice::Event(_) => {}
                Notice::SendFailed { transmit, error } => {
                    let line = format!("sending to {} failed: {error}", transmit.dst);
                    if !send_errors.contains(&line) {
                        send_errors.push(line);
                    }
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| Failure::new(EXIT_RUNTIME, anyhow!("internal: {e}")))?;
    match exit {
        Exit::Done(()) => {
            let mut report = diag
                .report()
                .cloned()
                .ok_or_else(|| Failure::new(EXIT_RUNTIME, anyhow!("internal: finished without a report")))?;
            report.notes.extend(sockets.fallback_note);
            report.notes.extend(send_errors);
            Ok(report)
        }
        Exit::Deadline | Exit::Stopped => {
            Err(Failure::new(EXIT_RUNTIME, anyhow!("internal: the diagnosis did not finish within {limit:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forms themselves are `holepunch::io::parse_host_port`'s (tested there); here: a bad value is a
    /// usage error that names the flag.
    #[test]
    fn bad_server_values_are_usage_errors() {
        for bad in ["host:notaport", "host:0", ":3478", "127.0.0.1:0"] {
            let f = resolve_all(&[bad.into()], false, false, Duration::from_secs(1)).unwrap_err();
            assert_eq!(f.code, EXIT_USAGE, "{bad}");
            assert!(f.error.to_string().starts_with("--server: "), "{bad}: {}", f.error);
        }
        let ok = resolve_all(&["[::1]".into()], false, false, Duration::from_secs(1)).unwrap();
        assert_eq!(ok[0].addr, "[::1]:3478".parse().unwrap());
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

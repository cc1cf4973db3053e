//! punchd: the peer daemon. This release owns the one punching socket (fixed port, never closed while it
//! runs), learns its public endpoint from stund, keeps the NAT mapping alive and reports when it moves.
//! Rendezvous, punching and the tunnel build on this loop in later releases.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use holepunch::io::{self, blocking, Exit, Family, Notice, ResolveError};
use holepunch::net::{unspecified_like, Retransmit};
use holepunch::punch::{Event, KeeperConfig, ReflexiveKeeper};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a single blocking read waits, so a shutdown signal is noticed promptly.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
#[command(
    version,
    about = "holepunch peer daemon: keeps one UDP socket's public endpoint known and its NAT mapping alive",
    after_help = "Examples:\n  punchd --server stun.example.net:3478\n  punchd --server 203.0.113.10 --port 7000 --keepalive 5s --json\n  punchd --server 203.0.113.10 --once        # print the public endpoint and exit"
)]
struct Args {
    /// STUN server (our stund or any RFC 5389 server), HOST[:PORT], default port 3478 (port 0 is refused).
    #[arg(long)]
    server: String,
    /// Local UDP port of the punching socket.
    #[arg(long, default_value_t = 6666)]
    port: u16,
    /// Local address to bind (default: all addresses of the server's family).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Interval between keepalives (humantime: 3s, 500ms, 1m).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    keepalive: Duration,
    /// Initial retransmission timeout of each request (RFC 8489 RTO).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    rto: Duration,
    /// Requests sent per transaction before the server counts as lost (RFC 8489 Rc).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=Retransmit::MAX_RC as i64))]
    retries: u32,
    /// Print the public endpoint once and exit (exit 0), or exit 2 when the server does not answer.
    #[arg(long)]
    once: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

/// The server's address: of `--bind`'s family when given, else IPv4 first (as stunclient prefers), so the
/// endpoint punchd keeps is the one stunclient diagnosed. The resolver gets as long as one request would.
fn resolve(server: &str, family_of: Option<IpAddr>, limit: Duration) -> Result<SocketAddr> {
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

fn bind(args: &Args, server: SocketAddr) -> Result<UdpSocket> {
    let ip = args.bind.unwrap_or(unspecified_like(server.ip()));
    if ip.is_ipv4() != server.is_ipv4() {
        bail!("--bind {ip} and server {server} are of different address families");
    }
    let local = SocketAddr::new(ip, args.port);
    UdpSocket::bind(local).map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => anyhow::anyhow!("UDP {local} is in use (another punchd? choose --port)"),
        ErrorKind::PermissionDenied => {
            anyhow::anyhow!("not allowed to bind UDP {local} (ports below 1024 need privileges)")
        }
        _ => anyhow::anyhow!("cannot bind UDP {local}: {e}"),
    })
}

fn report(json: bool, event: &Event, local: SocketAddr) {
    let line = match (json, event) {
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

fn run(args: Args) -> Result<i32> {
    let retransmit = Retransmit { rto: args.rto, rc: args.retries, ..Retransmit::default() };
    let server = resolve(&args.server, args.bind, retransmit.give_up_after())?;
    let socket = bind(&args, server)?;
    let local = socket.local_addr().context("local address of the socket")?;
    log::info!("punching socket bound on {local}; tracking public endpoint via {server}");

    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown)).context("installing signal handler")?;
    }
    let seed = holepunch::io::os_seed()?;
    let mut config = KeeperConfig::new(local, server);
    config.keepalive = args.keepalive;
    config.retransmit = retransmit;
    let mut keeper = ReflexiveKeeper::new(config, Instant::now(), seed);

    let driver = blocking::Driver::new(vec![socket])
        .context("setting up the punching socket")?
        .stop_flag(shutdown)
        .wake_every(SHUTDOWN_POLL);
    let exit = driver.run(&mut keeper, |notice| match notice {
        Notice::Event(ev) => {
            report(args.json, &ev, local);
            if args.once {
                ControlFlow::Break(if matches!(ev, Event::ServerLost) { 2 } else { 0 })
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
    if let Exit::Done(code) = exit {
        return Ok(code);
    }
    log::info!("shutting down");
    Ok(0)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("punchd: {e:#}");
            std::process::exit(1);
        }
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
    fn port_zero_is_refused() {
        let e = resolve("127.0.0.1:0", None, LIMIT).unwrap_err();
        assert!(e.to_string().starts_with("--server: port 0"), "{e}");
    }
}

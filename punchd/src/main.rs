//! punchd: the peer daemon. This release owns the one punching socket (fixed port, never closed while it
//! runs), learns its public endpoint from stund, keeps the NAT mapping alive and reports when it moves.
//! Rendezvous, punching and the tunnel build on this loop in later releases. Flags, output and exit codes:
//! docs/punchd.md and `--help`.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use holepunch::io::{self, blocking, Exit, Family, Notice, ResolveError};
use holepunch::net::{unspecified_like, Retransmit};
use holepunch::punch::{Event, KeeperConfig, ReflexiveKeeper};
use holepunch::text::escape_controls;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a single blocking read waits, so a shutdown signal is noticed promptly.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Exit codes (docs/punchd.md).
const EXIT_OK: i32 = 0;
const EXIT_RUNTIME: i32 = 1;
const EXIT_NO_ANSWER: i32 = 2;
const EXIT_REFUSED: i32 = 3;
const EXIT_USAGE: i32 = 4;

const AFTER_HELP: &str = "\
Examples:
  punchd --server stun.example.net:3478
  punchd --server 203.0.113.10 --port 7000 --keepalive 5s --json
  punchd --server 203.0.113.10 --once        # print the public endpoint and exit

Exit codes:
  0  --once: the public endpoint was learned and printed; without --once: stopped by SIGINT/SIGTERM
  1  runtime error (cannot resolve the server, cannot bind the port, socket failure)
  2  --once: the server did not answer (silence for the whole retransmission schedule, or ICMP port
     unreachable)
  3  --once: the server answered, but without a usable public endpoint (an error response, no mapped address,
     an unusable one such as 0.0.0.0:0 or a broadcast address, or unknown comprehension-required attributes)
  4  usage error (bad flag or value, e.g. --rto 0s)

--once ends within one transaction's give-up time, --rto x (2^(retries-1) - 1 + 16): 39.5 s with the defaults.
See docs/punchd.md for the output lines and the JSON events.";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "holepunch peer daemon: keeps one UDP socket's public endpoint known and its NAT mapping alive",
    after_help = AFTER_HELP
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
    /// Interval between keepalives (humantime: 3s, 500ms, 1m); at least 100ms.
    #[arg(long, default_value = "3s", value_parser = parse_keepalive)]
    keepalive: Duration,
    /// Initial retransmission timeout of each request (RFC 8489 RTO); at least 1ms.
    #[arg(long, default_value = "500ms", value_parser = parse_rto)]
    rto: Duration,
    /// Requests sent per transaction before the server counts as lost (RFC 8489 Rc).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=Retransmit::MAX_RC as i64))]
    retries: u32,
    /// Print the public endpoint once and exit 0; exit 2 when the server does not answer, 3 when its answer
    /// is unusable (see Exit codes below).
    #[arg(long)]
    once: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

/// A duration flag of at least `min`: zero would turn the schedule into a busy loop of requests.
fn at_least(s: &str, min: Duration, label: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min {
        return Err(format!("must be at least {label}"));
    }
    Ok(d)
}

fn parse_rto(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_millis(1), "1ms")
}

fn parse_keepalive(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_millis(100), "100ms")
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
    let started = Instant::now();
    // --once is bounded by the first transaction: an answer, an ICMP error or the schedule's end finishes it.
    // The margin covers the loop's own wake-ups; the deadline is a guard, the keeper's events come first.
    let once_deadline = started + retransmit.give_up_after() + Duration::from_secs(1);
    let mut keeper = ReflexiveKeeper::new(config, started, seed);

    let mut driver = blocking::Driver::new(vec![socket])
        .context("setting up the punching socket")?
        .stop_flag(shutdown)
        .wake_every(SHUTDOWN_POLL);
    if args.once {
        driver = driver.deadline(once_deadline);
    }
    let exit = driver.run(&mut keeper, |notice| match notice {
        Notice::Event(ev) => {
            report(args.json, &ev, local);
            if args.once {
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
            report(args.json, &Event::ServerLost, local);
            return Ok(EXIT_NO_ANSWER);
        }
        Exit::Stopped => {}
    }
    log::info!("shutting down");
    Ok(EXIT_OK)
}

/// Parse the flags; a usage error is one line on stderr and exit 4 (clap's own exit code 2 would read as
/// "no answer" to a script using --once).
fn parse_args() -> Args {
    match Args::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // clap's message up to its first blank line (what is wrong, and e.g. which flags are missing),
            // without the usage block and the "try --help" tail.
            let text = e.to_string();
            let what: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let what = what.join(" ");
            eprintln!("punchd: {}", what.strip_prefix("error: ").unwrap_or(&what));
            std::process::exit(EXIT_USAGE);
        }
    }
}

fn main() {
    // Log lines can quote what the server sent: escaped like every other human line.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            use std::io::Write as _;
            let msg = record.args().to_string();
            let ts = buf.timestamp();
            writeln!(buf, "[{ts} {:<5} {}] {}", record.level(), record.target(), escape_controls(&msg))
        })
        .init();
    let args = parse_args();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("punchd: {e:#}");
            std::process::exit(EXIT_RUNTIME);
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

//! Flags (clap) and the TOML config file, merged into one [`Settings`]: flag > config file > default.

use anyhow::{bail, Context, Result};
use clap::Parser;
use holepunch::net::DEFAULT_STUN_PORT;
use holepunch::server::{RateLimitConfig, ServerConfig};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_ALT_PORT: u16 = 3479;
pub const DEFAULT_STATS_SECS: u64 = 60;
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_TCP_IDLE_SECS: u64 = 60;

const EXAMPLES: &str = "\
Examples:
  stund --primary 192.0.2.10
      plain RFC 5389/8489 STUN server on UDP and TCP 192.0.2.10:3478
  stund --primary 192.0.2.10 --alternate 192.0.2.11
      RFC 5780 NAT behaviour discovery: UDP and TCP on both addresses x ports 3478 and 3479
  stund --primary 10.0.0.4 --alternate 10.0.0.5 --public-primary 203.0.113.4 --public-alternate 203.0.113.5
      cloud host behind 1:1 NAT: bind the private addresses, advertise the public ones
  stund --primary ::1 --port 13478 --threads 1 --rate-limit 0
      IPv6 loopback, one worker thread, no rate limit (benchmarks)
  stund --config /etc/stund/stund.toml
      everything from a TOML file (see docs/stund.example.toml); flags override it

Logging: RUST_LOG=debug (or --log-level). Metrics: --metrics 127.0.0.1:9478 then GET /metrics.";

/// STUN server: RFC 8489/5389 Binding (and RFC 3489 classic clients), RFC 5780 NAT behaviour discovery when
/// given two addresses, over UDP and TCP, IPv4 or IPv6.
#[derive(Parser, Debug, Default)]
#[command(name = "stund", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Primary IP address to serve on (required, here or in the config file).
    #[arg(long, value_name = "IP")]
    pub primary: Option<IpAddr>,
    /// Alternate IP address: turns on RFC 5780 (four sockets: both IPs x both ports).
    #[arg(long, value_name = "IP")]
    pub alternate: Option<IpAddr>,
    /// Primary port [default: 3478].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Alternate port, used with --alternate [default: 3479].
    #[arg(long, value_name = "PORT")]
    pub alt_port: Option<u16>,
    /// Public address clients see for --primary (1:1 NAT); used in RESPONSE-ORIGIN/SOURCE-ADDRESS.
    #[arg(long, value_name = "IP")]
    pub public_primary: Option<IpAddr>,
    /// Public address clients see for --alternate (1:1 NAT); used in OTHER-ADDRESS/CHANGED-ADDRESS.
    #[arg(long, value_name = "IP")]
    pub public_alternate: Option<IpAddr>,
    /// UDP worker threads per socket, 0 = one per core [default: 0].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Requests per second allowed per source IP (IPv6: per /64) per worker; 0 disables [default: 100].
    #[arg(long, value_name = "N", env = "STUND_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Burst allowed per source above --rate-limit [default: 200].
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
    /// Rate-limiter table slots per worker (16 bytes each; bounds memory under spoofed floods) [default: 65536].
    #[arg(long, value_name = "N")]
    pub rate_limit_slots: Option<usize>,
    /// Serve Prometheus text metrics over HTTP on this address (off by default).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Seconds between counter summaries in the log, 0 = never [default: 60].
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<u64>,
    /// SOFTWARE attribute text [default: "holepunch stund <version>"].
    #[arg(long, value_name = "TEXT")]
    pub software: Option<String>,
    /// Send no SOFTWARE attribute.
    #[arg(long, conflicts_with = "software")]
    pub no_software: bool,
    /// Do not listen on TCP.
    #[arg(long)]
    pub no_tcp: bool,
    /// Most simultaneous TCP connections [default: 1024].
    #[arg(long, value_name = "N")]
    pub tcp_max_connections: Option<usize>,
    /// Close a TCP connection idle for this many seconds [default: 60].
    #[arg(long, value_name = "SECS")]
    pub tcp_idle_timeout: Option<u64>,
    /// Log level (error, warn, info, debug, trace, or an env_logger filter); RUST_LOG works too.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// TOML config file with the same options (snake_case keys); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The config file: every flag, with the same names in snake_case.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub primary: Option<IpAddr>,
    pub alternate: Option<IpAddr>,
    pub port: Option<u16>,
    pub alt_port: Option<u16>,
    pub public_primary: Option<IpAddr>,
    pub public_alternate: Option<IpAddr>,
    pub threads: Option<usize>,
    pub rate_limit: Option<u32>,
    pub rate_burst: Option<u32>,
    pub rate_limit_slots: Option<usize>,
    pub metrics: Option<SocketAddr>,
    pub stats_interval: Option<u64>,
    /// An empty string sends no SOFTWARE.
    pub software: Option<String>,
    pub tcp: Option<bool>,
    pub tcp_max_connections: Option<usize>,
    pub tcp_idle_timeout: Option<u64>,
    pub log_level: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            anyhow::anyhow!("{}: {}", path.display(), msg.trim())
        })
    }
}

/// Everything the binary needs, merged and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    pub threads: usize,
    pub rate_limit: Option<RateLimitConfig>,
    pub metrics: Option<SocketAddr>,
    pub stats_interval: Option<Duration>,
    pub tcp: bool,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout: Duration,
    pub log_level: Option<String>,
}

impl Settings {
    pub fn from_cli(cli: Cli) -> Result<Self> {
        let file = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Self::merge(cli, file)
    }

    pub fn merge(cli: Cli, file: FileConfig) -> Result<Self> {
        let Some(primary) = cli.primary.or(file.primary) else {
            bail!("--primary IP is required (the address to serve on; see --help)");
        };
        let software = if cli.no_software {
            None
        } else {
            match cli.software.or(file.software) {
                Some(s) if s.is_empty() => None,
                Some(s) => Some(s),
                None => Some(format!("holepunch stund {}", env!("CARGO_PKG_VERSION"))),
            }
        };
        let server = ServerConfig {
            primary,
            alternate: cli.alternate.or(file.alternate),
            port: cli.port.or(file.port).unwrap_or(DEFAULT_STUN_PORT),
            alt_port: cli.alt_port.or(file.alt_port).unwrap_or(DEFAULT_ALT_PORT),
            public_primary: cli.public_primary.or(file.public_primary),
            public_alternate: cli.public_alternate.or(file.public_alternate),
            software,
        };
        server.validate()?;

        let threads = match cli.threads.or(file.threads).unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > 1024 => bail!("--threads {n} is more than 1024"),
            n => n,
        };
        let defaults = RateLimitConfig::default();
        let rate = cli.rate_limit.or(file.rate_limit).unwrap_or(defaults.rate_per_sec);
        let rate_limit = (rate > 0).then(|| RateLimitConfig {
            rate_per_sec: rate,
            burst: cli.rate_burst.or(file.rate_burst).unwrap_or(defaults.burst.max(rate)),
            slots: cli.rate_limit_slots.or(file.rate_limit_slots).unwrap_or(defaults.slots),
        });
        if let Some(rl) = &rate_limit {
            // Reported before any socket is opened.
            rl.validate()?;
        }
        let stats = cli.stats_interval.or(file.stats_interval).unwrap_or(DEFAULT_STATS_SECS);
        let tcp_max_connections =
            cli.tcp_max_connections.or(file.tcp_max_connections).unwrap_or(DEFAULT_TCP_MAX_CONNECTIONS);
        if tcp_max_connections == 0 {
            bail!("--tcp-max-connections must be at least 1 (use --no-tcp to turn TCP off)");
        }
        let idle = cli.tcp_idle_timeout.or(file.tcp_idle_timeout).unwrap_or(DEFAULT_TCP_IDLE_SECS);
        if idle == 0 {
            bail!("--tcp-idle-timeout must be at least 1 second");
        }
        Ok(Settings {
            server,
            threads,
            rate_limit,
            metrics: cli.metrics.or(file.metrics),
            stats_interval: (stats > 0).then(|| Duration::from_secs(stats)),
            tcp: !cli.no_tcp && file.tcp.unwrap_or(true),
            tcp_max_connections,
            tcp_idle_timeout: Duration::from_secs(idle),
            log_level: cli.log_level.or(file.log_level),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("stund").chain(args.iter().copied()))?;
        Settings::merge(cli, FileConfig::default())
    }

    #[test]
    fn contractual_forms() {
        let s = parse(&["--primary", "127.0.0.1"]).unwrap();
        assert!(!s.server.behavior_discovery());
        assert_eq!(s.server.port, 3478);
        let s = parse(&["--primary", "127.0.0.1", "--alternate", "127.0.0.2", "--port", "5000", "--alt-port", "5001"])
            .unwrap();
        assert!(s.server.behavior_discovery());
        assert_eq!((s.server.port, s.server.alt_port), (5000, 5001));
        assert!(parse(&["--primary", "::1"]).is_ok());
    }

    #[test]
    fn errors_are_one_line() {
        for args in [
            &["--port", "1"][..],
            &["--primary", "127.0.0.1", "--alternate", "127.0.0.1"],
            &["--primary", "0.0.0.0"],
            &["--primary", "127.0.0.1", "--rate-burst", "0"],
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn file_and_flags_merge() {
        let file: FileConfig = toml::from_str(
            r#"
            primary = "127.0.0.1"
            alternate = "127.0.0.2"
            rate_limit = 0
            software = ""
            tcp = false
            log_level = "debug"
            metrics = "127.0.0.1:9478"
            "#,
        )
        .unwrap();
        let cli = Cli::try_parse_from(["stund", "--port", "4000"]).unwrap();
        let s = Settings::merge(cli, file).unwrap();
        assert_eq!(s.server.port, 4000);
        assert!(s.server.behavior_discovery());
        assert!(s.rate_limit.is_none());
        assert!(s.server.software.is_none());
        assert!(!s.tcp);
        assert_eq!(s.log_level.as_deref(), Some("debug"));
        assert!(toml::from_str::<FileConfig>("primari = \"1.2.3.4\"").is_err());
    }
}

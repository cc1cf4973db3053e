//! Flags (clap) and the TOML config file, merged into one [`Settings`]: flag > config file > default.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use holepunch::net::DEFAULT_STUN_PORT;
use holepunch::relay::IpRange;
use holepunch::server::{
    ConfigError, Field, RateLimitConfig, RateLimitError, ServerConfig, MAX_BURST, MAX_RATE, MAX_SLOTS, MAX_SOFTWARE_LEN,
};
use holepunch::signal::InstanceId;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_ALT_PORT: u16 = 3479;
pub const DEFAULT_STATS_SECS: u64 = 60;
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1024;
/// Per source IP (IPv6: per /64): one client behind one address needs one or two; a carrier-grade NAT a few.
pub const DEFAULT_TCP_MAX_CONNECTIONS_PER_IP: usize = 16;
pub const DEFAULT_TCP_IDLE_SECS: u64 = 60;
/// A registration lives five 3 s keepalives (docs/signal.md, "Limits").
pub const DEFAULT_RENDEZVOUS_LIFETIME_SECS: u64 = 15;
pub const DEFAULT_RENDEZVOUS_CAPACITY: usize = 100_000;
/// Rendezvous requests per second per source IP (IPv6: per /64): a peer sends one REGISTER per keepalive, so
/// this leaves room for many peers behind one NAT.
pub const DEFAULT_RENDEZVOUS_RATE: u32 = 20;
/// Rate-limiter table of the rendezvous (16 bytes each: 256 KiB).
pub const RENDEZVOUS_RATE_SLOTS: usize = 16384;

/// TURN relay defaults (docs/stund.md, "TURN relay").
pub const DEFAULT_REALM: &str = "holepunch";
/// The IANA dynamic port range, as coturn uses by default.
pub const DEFAULT_RELAY_PORTS: (u16, u16) = (49152, 65535);
pub const DEFAULT_USER_QUOTA: usize = 10;
pub const DEFAULT_MAX_ALLOCATIONS: usize = 10_000;
/// Most allocations: 1 M, a few GiB at the per-allocation bound (the memory check refuses what the host cannot
/// hold).
pub const MAX_ALLOCATIONS: usize = 1 << 20;
/// Bytes per second per allocation, both directions: 10 Mbit/s, room for a video call.
pub const DEFAULT_RELAY_BANDWIDTH: u64 = 1_250_000;

/// Upper bounds of the numeric settings, checked before anything starts (a typo must be a usage error, not a
/// panic or a host out of memory later).
pub const MAX_THREADS: usize = 1024;
pub const MAX_TCP_CONNECTIONS: usize = 1 << 20;
/// A day: longer intervals and timeouts are typos.
pub const MAX_SECS: u64 = 86_400;
/// Most registered peers: 16 M, a few GiB of registry (the memory check refuses what the host cannot hold).
pub const MAX_RENDEZVOUS_CAPACITY: usize = 1 << 24;

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
  stund --primary 192.0.2.10 --secret-file /etc/stund/rendezvous.secret
      also the punchd rendezvous on the UDP socket(s) (file: the network secret, mode 0600, >= 16 bytes)
  stund --config /etc/stund/stund.toml
      everything from a TOML file (see docs/stund.example.toml); flags override it

Logging: RUST_LOG=debug (or --log-level). Metrics: --metrics 127.0.0.1:9478 then GET /metrics.
Memory: the total the settings imply is logged at start; settings needing more than half of this host's
memory are refused. Answers are at most 4x the request (amplification bound, docs/stund.md).";

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
    /// UDP worker threads per socket, 0 = one per core, at most 1024 [default: 0].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Requests per second allowed per source IP (IPv6: per /64) per worker, at most 4000000; 0 disables
    /// [default: 100].
    #[arg(long, value_name = "N", env = "STUND_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Burst allowed per source above --rate-limit, 1 to 4000000 [default: 200, at least the rate].
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
    /// Rate-limiter table slots per worker (16 bytes each; bounds memory under spoofed floods), at most
    /// 16777216 [default: 65536].
    #[arg(long, value_name = "N")]
    pub rate_limit_slots: Option<usize>,
    /// Serve Prometheus text metrics over HTTP on this address, at most 8 connections at a time (off by
    /// default).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Seconds between counter summaries in the log, 0 = never, at most 86400 [default: 60].
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<u64>,
    /// Send a SOFTWARE attribute with this text (at most 128 bytes), in answers where it fits the
    /// amplification bound (4x the request) [default: none].
    #[arg(long, value_name = "TEXT")]
    pub software: Option<String>,
    /// Send no SOFTWARE attribute (the default; overrides `software` in the config file).
    #[arg(long, conflicts_with = "software")]
    pub no_software: bool,
    /// Do not listen on TCP.
    #[arg(long)]
    pub no_tcp: bool,
    /// TCP port of the primary address (STUN and TURN over TCP), e.g. 443 to pass firewalls that only let
    /// web traffic out [default: --port].
    #[arg(long, value_name = "PORT")]
    pub tcp_port: Option<u16>,
    /// Most simultaneous TCP connections, at most 1048576 [default: 1024].
    #[arg(long, value_name = "N")]
    pub tcp_max_connections: Option<usize>,
    /// Most simultaneous TCP connections from one source IP (IPv6: one /64) [default: 16].
    #[arg(long, value_name = "N")]
    pub tcp_max_connections_per_ip: Option<usize>,
    /// Close a TCP connection idle for this many seconds, at most 86400 [default: 60].
    #[arg(long, value_name = "SECS")]
    pub tcp_idle_timeout: Option<u64>,
    /// Log level (error, warn, info, debug, trace, or an env_logger filter); RUST_LOG works too.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve the punchd rendezvous (docs/signal.md) on the UDP socket(s), authenticated with the network
    /// secret in FILE (only its owner may access it; at least 16 bytes). Without it, rendezvous messages are
    /// dropped.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Seconds a rendezvous registration lives without a refresh, 1 to 86400 [default: 15].
    #[arg(long, value_name = "SECS")]
    pub rendezvous_lifetime: Option<u64>,
    /// Most peers registered at once, 1 to 16777216 [default: 100000].
    #[arg(long, value_name = "N")]
    pub rendezvous_capacity: Option<usize>,
    /// Rendezvous requests per second allowed per source IP (IPv6: per /64), at most 4000000; 0 disables
    /// [default: 20].
    #[arg(long, value_name = "N")]
    pub rendezvous_rate_limit: Option<u32>,
    /// Share the rendezvous registrations with other stund instances through the Redis at URL
    /// (redis://HOST:PORT/, rediss:// for TLS, redis://:PASSWORD@HOST/ or redis://USER:PASSWORD@HOST/ for
    /// AUTH; docs/deploy.md). Without it the registrations stay in this process.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// This instance's name in a cluster sharing a --registry (logs, Redis channel): letters, digits, '.',
    /// '_', '-', at most 32 [default: the host name and the process id].
    #[arg(long, value_name = "NAME")]
    pub instance_id: Option<String>,
    /// TURN relay (RFC 8656): a long-term credential user NAME:PASS (repeat for more users). TURN is on when
    /// a user or a shared secret is given, off otherwise.
    #[arg(long, value_name = "NAME:PASS")]
    pub user: Vec<String>,
    /// TURN: the shared secret of TURN REST (coturn use-auth-secret) time-limited credentials. Visible to
    /// other local users in the process list: prefer --auth-secret-file.
    #[arg(long, value_name = "SECRET", conflicts_with = "auth_secret_file")]
    pub auth_secret: Option<String>,
    /// TURN: read the REST shared secret from FILE (surrounding whitespace trimmed).
    #[arg(long, value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// TURN: the realm of the long-term credentials [default: holepunch].
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// TURN: UDP port range of the relay sockets, one per allocation [default: 49152-65535].
    #[arg(long, value_name = "A-B")]
    pub relay_ports: Option<String>,
    /// TURN: the IP the relay sockets bind to [default: --primary].
    #[arg(long, value_name = "IP")]
    pub relay_ip: Option<IpAddr>,
    /// TURN: relay to this range even though it is reserved (loopback, private, link-local); CIDR or one
    /// address; repeatable.
    #[arg(long, value_name = "RANGE")]
    pub allowed_peer_ip: Vec<String>,
    /// TURN: never relay to this range (wins over --allowed-peer-ip); CIDR or one address; repeatable.
    #[arg(long, value_name = "RANGE")]
    pub denied_peer_ip: Vec<String>,
    /// TURN: allocations one user may hold at once [default: 10].
    #[arg(long, value_name = "N")]
    pub user_quota: Option<usize>,
    /// TURN: allocations in total, at most 1048576 [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_allocations: Option<usize>,
    /// TURN: bytes per second relayed per allocation (both directions), 0 = unlimited [default: 1250000].
    #[arg(long, value_name = "BYTES")]
    pub relay_bandwidth: Option<u64>,
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
    pub tcp_port: Option<u16>,
    pub tcp_max_connections: Option<usize>,
    pub tcp_max_connections_per_ip: Option<usize>,
    pub tcp_idle_timeout: Option<u64>,
    pub log_level: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub rendezvous_lifetime: Option<u64>,
    pub rendezvous_capacity: Option<usize>,
    pub rendezvous_rate_limit: Option<u32>,
    pub registry: Option<String>,
    pub instance_id: Option<String>,
    pub user: Option<Vec<String>>,
    pub auth_secret: Option<String>,
    pub auth_secret_file: Option<PathBuf>,
    pub realm: Option<String>,
    pub relay_ports: Option<String>,
    pub relay_ip: Option<IpAddr>,
    pub allowed_peer_ip: Option<Vec<String>>,
    pub denied_peer_ip: Option<Vec<String>>,
    pub user_quota: Option<usize>,
    pub max_allocations: Option<usize>,
    pub relay_bandwidth: Option<u64>,
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
    /// TCP port of the primary address (`--tcp-port`, default the UDP port).
    pub tcp_port: u16,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_ip: usize,
    pub tcp_idle_timeout: Duration,
    pub log_level: Option<String>,
    /// The rendezvous (`--secret-file`); `None`: off.
    pub rendezvous: Option<Rendezvous>,
    /// The TURN relay (`--user`, `--auth-secret[-file]`); `None`: off.
    pub turn: Option<Turn>,
}

/// TURN relay settings (docs/stund.md, "TURN relay"). A secret file is read at start, not here.
#[derive(Debug, Clone)]
pub struct Turn {
    pub realm: String,
    /// Static users (name, password).
    pub users: Vec<(String, String)>,
    pub auth_secret: Option<String>,
    pub auth_secret_file: Option<PathBuf>,
    pub relay_ports: (u16, u16),
    pub relay_ip: IpAddr,
    pub allowed: Vec<IpRange>,
    pub denied: Vec<IpRange>,
    pub user_quota: usize,
    pub max_allocations: usize,
    pub bandwidth: u64,
}

/// Rendezvous settings (docs/signal.md). The secret file is read at start, not here.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    pub secret_file: PathBuf,
    pub lifetime: Duration,
    pub capacity: usize,
    pub rate_limit: RateLimitConfig,
    /// Registrations shared through Redis (`--registry`); `None`: in memory only.
    pub registry: Option<SharedRegistry>,
}

/// `--registry` and `--instance-id`.
#[derive(Debug, Clone)]
pub struct SharedRegistry {
    /// The Redis URL; it may hold a password: never log it (`cluster::redacted`).
    pub url: String,
    pub instance_id: InstanceId,
}

impl Settings {
    /// Flags and config file merged and every value checked, the memory the settings imply included: an
    /// error here is a usage error, reported before anything starts.
    pub fn from_cli(cli: Cli) -> Result<Self> {
        let file = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let s = Self::merge(cli, file)?;
        crate::memory::Plan::of(&s).check(crate::memory::host_limit())?;
        Ok(s)
    }

    pub fn merge(cli: Cli, file: FileConfig) -> Result<Self> {
        let Some(primary) = cli.primary.or(file.primary) else {
            bail!("--primary IP is required (the address to serve on; see --help)");
        };
        // First: the other settings move out of `cli` and `file`.
        let rendezvous = rendezvous_settings(&cli, &file)?;
        let turn = turn_settings(&cli, &file, primary)?;
        let software = if cli.no_software {
            None
        } else {
            // Off by default: it helps no client's logic and costs bytes in every answer (amplification).
            cli.software.or(file.software).filter(|s| !s.is_empty())
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
        server.validate().map_err(server_config_error)?;

        let threads = match cli.threads.or(file.threads).unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS),
            n if n > MAX_THREADS => bail!("--threads {n} is more than {MAX_THREADS}"),
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
            // Reported before any socket is opened, naming the setting that is wrong.
            rl.validate().map_err(rate_limit_error)?;
        }
        let stats = cli.stats_interval.or(file.stats_interval).unwrap_or(DEFAULT_STATS_SECS);
        if stats > MAX_SECS {
            bail!("--stats-interval {stats} is more than {MAX_SECS} seconds (0 turns the summaries off)");
        }
        let tcp_max_connections =
            cli.tcp_max_connections.or(file.tcp_max_connections).unwrap_or(DEFAULT_TCP_MAX_CONNECTIONS);
        match tcp_max_connections {
            0 => bail!("--tcp-max-connections must be at least 1 (use --no-tcp to turn TCP off)"),
            n if n > MAX_TCP_CONNECTIONS => bail!("--tcp-max-connections {n} is more than {MAX_TCP_CONNECTIONS}"),
            _ => {}
        }
        let per_ip = cli
            .tcp_max_connections_per_ip
            .or(file.tcp_max_connections_per_ip)
            .unwrap_or(DEFAULT_TCP_MAX_CONNECTIONS_PER_IP);
        if per_ip == 0 {
            bail!("--tcp-max-connections-per-ip must be at least 1 (use --no-tcp to turn TCP off)");
        }
        let tcp_port = cli.tcp_port.or(file.tcp_port).unwrap_or(server.port);
        if tcp_port == 0 || (server.behavior_discovery() && tcp_port == server.alt_port) {
            bail!("--tcp-port {tcp_port} must be non-zero and not the alternate port");
        }
        let idle = cli.tcp_idle_timeout.or(file.tcp_idle_timeout).unwrap_or(DEFAULT_TCP_IDLE_SECS);
        if idle == 0 || idle > MAX_SECS {
            bail!("--tcp-idle-timeout {idle} must be between 1 and {MAX_SECS} seconds");
        }
        Ok(Settings {
            server,
            threads,
            rate_limit,
            metrics: cli.metrics.or(file.metrics),
            stats_interval: (stats > 0).then(|| Duration::from_secs(stats)),
            tcp: !cli.no_tcp && file.tcp.unwrap_or(true),
            tcp_port,
            tcp_max_connections,
            // More per source than in total would only mean "no per-source cap".
            tcp_max_connections_per_ip: per_ip.min(tcp_max_connections),
            tcp_idle_timeout: Duration::from_secs(idle),
            log_level: cli.log_level.or(file.log_level),
            rendezvous,
            turn,
        })
    }
}

fn rendezvous_settings(cli: &Cli, file: &FileConfig) -> Result<Option<Rendezvous>> {
    let Some(secret_file) = cli.secret_file.clone().or_else(|| file.secret_file.clone()) else {
        // Rendezvous flags without a secret would silently do nothing.
        for (given, flag) in [
            (cli.rendezvous_lifetime.is_some(), "--rendezvous-lifetime"),
            (cli.rendezvous_capacity.is_some(), "--rendezvous-capacity"),
            (cli.rendezvous_rate_limit.is_some(), "--rendezvous-rate-limit"),
            (cli.registry.is_some() || file.registry.is_some(), "--registry"),
            (cli.instance_id.is_some() || file.instance_id.is_some(), "--instance-id"),
        ] {
            if given {
                bail!("{flag} needs --secret-file (the rendezvous is off without a network secret)");
            }
        }
        return Ok(None);
    };
    let lifetime = cli.rendezvous_lifetime.or(file.rendezvous_lifetime).unwrap_or(DEFAULT_RENDEZVOUS_LIFETIME_SECS);
    if lifetime == 0 || lifetime > MAX_SECS {
        bail!("--rendezvous-lifetime {lifetime} must be between 1 and {MAX_SECS} seconds");
    }
    let capacity = cli.rendezvous_capacity.or(file.rendezvous_capacity).unwrap_or(DEFAULT_RENDEZVOUS_CAPACITY);
    if capacity == 0 || capacity > MAX_RENDEZVOUS_CAPACITY {
        bail!("--rendezvous-capacity {capacity} must be between 1 and {MAX_RENDEZVOUS_CAPACITY}");
    }
    let rate = cli.rendezvous_rate_limit.or(file.rendezvous_rate_limit).unwrap_or(DEFAULT_RENDEZVOUS_RATE);
    if rate > MAX_RATE {
        bail!("--rendezvous-rate-limit {rate} is more than {MAX_RATE} requests per second (0 turns the limiter off)");
    }
    // The rendezvous server always has a limiter; "off" is one nobody reaches.
    let rate_limit = if rate == 0 {
        RateLimitConfig { rate_per_sec: MAX_RATE, burst: MAX_BURST, slots: RENDEZVOUS_RATE_SLOTS }
    } else {
        RateLimitConfig {
            rate_per_sec: rate,
            burst: rate.saturating_mul(2).min(MAX_BURST),
            slots: RENDEZVOUS_RATE_SLOTS,
        }
    };
    let registry = registry_settings(cli, file)?;
    Ok(Some(Rendezvous { secret_file, lifetime: Duration::from_secs(lifetime), capacity, rate_limit, registry }))
}

fn registry_settings(cli: &Cli, file: &FileConfig) -> Result<Option<SharedRegistry>> {
    let instance = cli.instance_id.clone().or_else(|| file.instance_id.clone());
    let Some(url) = cli.registry.clone().or_else(|| file.registry.clone()) else {
        if instance.is_some() {
            bail!("--instance-id needs --registry (a single stund is not a cluster)");
        }
        return Ok(None);
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        bail!("--registry {}: expected redis://HOST:PORT/ or rediss://HOST:PORT/", crate::cluster::redacted(&url));
    }
    // Parsed only (no connection): a malformed URL is a usage error before anything starts.
    if let Err(e) = redis::Client::open(url.as_str()) {
        bail!("--registry {}: {e}", crate::cluster::redacted(&url));
    }
    let instance_id = match instance {
        Some(id) => InstanceId::new(&id).map_err(|e| anyhow!("--instance-id {id:?}: {e}"))?,
        None => default_instance_id(),
    };
    Ok(Some(SharedRegistry { url, instance_id }))
}

/// The host name (its valid characters, at most 20) and the process id: unique on one host, and a restarted
/// stund is a new instance (its predecessor's entries in Redis are not its own).
fn default_instance_id() -> InstanceId {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a valid local buffer.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        buf[..end]
            .iter()
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            .take(20)
            .map(|&b| char::from(b))
            .collect::<String>()
    } else {
        String::new()
    };
    let host = if host.is_empty() { "stund".to_string() } else { host };
    InstanceId::new(&format!("{host}-{}", std::process::id())).expect("built from valid characters, <= 32 bytes")
}

fn turn_settings(cli: &Cli, file: &FileConfig, primary: IpAddr) -> Result<Option<Turn>> {
    let users = if cli.user.is_empty() { file.user.clone().unwrap_or_default() } else { cli.user.clone() };
    let auth_secret = cli.auth_secret.clone().or_else(|| file.auth_secret.clone());
    let auth_secret_file = cli.auth_secret_file.clone().or_else(|| file.auth_secret_file.clone());
    if users.is_empty() && auth_secret.is_none() && auth_secret_file.is_none() {
        // TURN flags without a credential would silently do nothing.
        for (given, flag) in [
            (cli.realm.is_some(), "--realm"),
            (cli.relay_ports.is_some(), "--relay-ports"),
            (cli.relay_ip.is_some(), "--relay-ip"),
            (!cli.allowed_peer_ip.is_empty(), "--allowed-peer-ip"),
            (!cli.denied_peer_ip.is_empty(), "--denied-peer-ip"),
            (cli.user_quota.is_some(), "--user-quota"),
            (cli.max_allocations.is_some(), "--max-allocations"),
            (cli.relay_bandwidth.is_some(), "--relay-bandwidth"),
        ] {
            if given {
                bail!("{flag} needs --user or --auth-secret(-file) (the TURN relay is off without credentials)");
            }
        }
        return Ok(None);
    }
    if auth_secret.is_some() && auth_secret_file.is_some() {
        bail!("give the TURN shared secret once: --auth-secret or --auth-secret-file");
    }
    if auth_secret.as_deref().is_some_and(str::is_empty) {
        bail!("--auth-secret must not be empty");
    }
    let users = users
        .iter()
        .map(|u| match u.split_once(':') {
            Some((name, pass)) if !name.is_empty() && !pass.is_empty() => Ok((name.to_string(), pass.to_string())),
            _ => Err(anyhow!("--user {u:?} must be NAME:PASS with both parts non-empty")),
        })
        .collect::<Result<Vec<_>>>()?;
    let realm = cli.realm.clone().or_else(|| file.realm.clone()).unwrap_or_else(|| DEFAULT_REALM.to_string());
    if realm.is_empty() || realm.len() > 128 {
        bail!("--realm must be 1 to 128 bytes");
    }
    let relay_ports = match cli.relay_ports.as_deref().or(file.relay_ports.as_deref()) {
        None => DEFAULT_RELAY_PORTS,
        Some(text) => {
            let parsed = text
                .split_once('-')
                .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
            match parsed {
                Some((a, b)) if a > 0 && a <= b => (a, b),
                _ => bail!("--relay-ports {text:?} must be A-B with 1 <= A <= B <= 65535"),
            }
        }
    };
    let relay_ip = cli.relay_ip.or(file.relay_ip).unwrap_or(primary);
    if relay_ip.is_unspecified() {
        bail!("--relay-ip {relay_ip} must be a specific address (it is the relayed address clients are given)");
    }
    let ranges = |flag: &str, given: &[String], from_file: &Option<Vec<String>>| -> Result<Vec<IpRange>> {
        let list = if given.is_empty() { from_file.clone().unwrap_or_default() } else { given.to_vec() };
        list.iter().map(|r| r.parse::<IpRange>().map_err(|e| anyhow!("{flag} {r}: {e}"))).collect()
    };
    let allowed = ranges("--allowed-peer-ip", &cli.allowed_peer_ip, &file.allowed_peer_ip)?;
    let denied = ranges("--denied-peer-ip", &cli.denied_peer_ip, &file.denied_peer_ip)?;
    let user_quota = cli.user_quota.or(file.user_quota).unwrap_or(DEFAULT_USER_QUOTA);
    if user_quota == 0 {
        bail!("--user-quota must be at least 1");
    }
    let max_allocations = cli.max_allocations.or(file.max_allocations).unwrap_or(DEFAULT_MAX_ALLOCATIONS);
    if max_allocations == 0 || max_allocations > MAX_ALLOCATIONS {
        bail!("--max-allocations {max_allocations} must be between 1 and {MAX_ALLOCATIONS}");
    }
    let bandwidth = cli.relay_bandwidth.or(file.relay_bandwidth).unwrap_or(DEFAULT_RELAY_BANDWIDTH);
    Ok(Some(Turn {
        realm,
        users,
        auth_secret,
        auth_secret_file,
        relay_ports,
        relay_ip,
        allowed,
        denied,
        user_quota,
        max_allocations,
        bandwidth,
    }))
}

/// The limiter's complaint in terms of the setting the user gave.
/// The library describes the values; the user set them through these flags (or the same TOML keys).
fn flag(field: Field) -> &'static str {
    match field {
        Field::Primary => "--primary",
        Field::Alternate => "--alternate",
        Field::PublicPrimary => "--public-primary",
        Field::PublicAlternate => "--public-alternate",
    }
}

fn server_config_error(e: ConfigError) -> anyhow::Error {
    match e {
        ConfigError::FamilyMismatch(a, b) => anyhow!("{} and {} must be the same address family", flag(a), flag(b)),
        ConfigError::PublicAlternateWithoutAlternate => anyhow!("--public-alternate needs --alternate"),
        ConfigError::SameAddress(ip) => {
            anyhow!("--alternate {ip} is the same as --primary; RFC 5780 needs two different addresses")
        }
        ConfigError::SamePort(p) => anyhow!("--alt-port {p} must be non-zero and differ from --port"),
        ConfigError::PortZero => anyhow!("--port 0 is not a valid server port"),
        ConfigError::SoftwareTooLong(n) => anyhow!("--software is {n} bytes; at most {MAX_SOFTWARE_LEN} allowed"),
        ConfigError::RateLimit(e) => rate_limit_error(e),
        e @ ConfigError::Unspecified(_) => anyhow!("{e}"),
    }
}

fn rate_limit_error(e: RateLimitError) -> anyhow::Error {
    match e {
        RateLimitError::ZeroRate => anyhow!("--rate-limit 0 turns the limiter off; it has no other meaning"),
        RateLimitError::RateTooHigh(r) => {
            anyhow!("--rate-limit {r} is more than {MAX_RATE} requests per second (0 turns the limiter off)")
        }
        RateLimitError::BadBurst(b) => anyhow!("--rate-burst {b} must be between 1 and {MAX_BURST}"),
        RateLimitError::TooManySlots(n) => anyhow!("--rate-limit-slots {n} is more than {MAX_SLOTS}"),
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

    /// Every numeric setting has a range, and the message names the setting the user gave.
    #[test]
    fn numeric_settings_are_bounded_and_named() {
        let huge = u64::MAX.to_string();
        for (args, want) in [
            (&["--rate-limit", "4294967295"][..], "--rate-limit 4294967295"),
            (&["--rate-burst", "4000001"], "--rate-burst 4000001"),
            (&["--rate-limit-slots", "16777217"], "--rate-limit-slots 16777217"),
            (&["--threads", "1025"], "--threads 1025"),
            (&["--tcp-max-connections", &huge], "--tcp-max-connections 18446744073709551615"),
            (&["--tcp-max-connections", "0"], "--tcp-max-connections"),
            (&["--tcp-max-connections-per-ip", "0"], "--tcp-max-connections-per-ip"),
            (&["--tcp-idle-timeout", &huge], "--tcp-idle-timeout 18446744073709551615"),
            (&["--stats-interval", "86401"], "--stats-interval 86401"),
            (&["--secret-file", "s", "--rendezvous-lifetime", "0"], "--rendezvous-lifetime 0"),
            (&["--secret-file", "s", "--rendezvous-capacity", "16777217"], "--rendezvous-capacity 16777217"),
            (&["--secret-file", "s", "--rendezvous-rate-limit", "4000001"], "--rendezvous-rate-limit 4000001"),
            (&["--rendezvous-capacity", "10"], "--rendezvous-capacity needs --secret-file"),
            (&["--registry", "redis://127.0.0.1/"], "--registry needs --secret-file"),
            (&["--secret-file", "s", "--registry", "http://:pw@x/"], "--registry http://***@x/: expected redis://"),
            (&["--secret-file", "s", "--instance-id", "a"], "--instance-id needs --registry"),
            (&["--secret-file", "s", "--registry", "redis://:pw@h:port/"], "--registry redis://***@h:port/: "),
            (&["--secret-file", "s", "--registry", "redis://h/", "--instance-id", "a b"], "--instance-id \"a b\""),
        ] {
            let args: Vec<&str> = ["--primary", "127.0.0.1"].into_iter().chain(args.iter().copied()).collect();
            let e = parse(&args).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{args:?}: {e}");
            if want.starts_with("--rate-limit ") {
                assert!(!e.contains("burst"), "the user set no burst: {e}");
            }
        }
        let s = parse(&["--primary", "127.0.0.1", "--rate-limit", "4000000"]).unwrap();
        assert_eq!(s.rate_limit.unwrap().burst, 4_000_000);
        let s = parse(&["--primary", "127.0.0.1", "--tcp-max-connections", "4"]).unwrap();
        assert_eq!((s.tcp_max_connections, s.tcp_max_connections_per_ip), (4, 4));
        assert_eq!(parse(&["--primary", "127.0.0.1"]).unwrap().tcp_max_connections_per_ip, 16);
        assert_eq!(parse(&["--primary", "127.0.0.1"]).unwrap().server.software, None, "SOFTWARE is opt-in");
        assert!(parse(&["--primary", "127.0.0.1"]).unwrap().rendezvous.is_none(), "rendezvous is opt-in");
        let r = parse(&["--primary", "127.0.0.1", "--secret-file", "s"]).unwrap().rendezvous.unwrap();
        assert_eq!((r.lifetime, r.capacity, r.rate_limit.rate_per_sec), (Duration::from_secs(15), 100_000, 20));
        assert!(r.registry.is_none(), "registrations in memory by default");
        let args = ["--primary", "127.0.0.1", "--secret-file", "s", "--registry", "rediss://:pw@h:6380/"];
        let shared = parse(&args).unwrap().rendezvous.unwrap().registry.unwrap();
        assert_eq!(shared.url, "rediss://:pw@h:6380/");
        assert!(shared.instance_id.as_str().ends_with(&format!("-{}", std::process::id())));
    }

    /// The example config parses, also with every commented-out setting switched on (catches stale keys).
    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../docs/stund.example.toml");
        let all: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                // A setting is `key = value` with a one-word key; prose comments stay comments.
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        for t in [text, all.as_str()] {
            let file: FileConfig = toml::from_str(t).unwrap_or_else(|e| panic!("{e}\n{t}"));
            Settings::merge(Cli::try_parse_from(["stund"]).unwrap(), file).unwrap();
        }
        assert!(all.contains("\ntcp_max_connections_per_ip = 16\n"), "{all}");
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
            tcp_max_connections_per_ip = 3
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
        assert_eq!(s.tcp_max_connections_per_ip, 3);
        assert_eq!(s.log_level.as_deref(), Some("debug"));
        assert!(toml::from_str::<FileConfig>("primari = \"1.2.3.4\"").is_err());
    }
}

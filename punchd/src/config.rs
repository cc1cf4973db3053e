//! The daemon's flags (clap) and its TOML config file, merged into one [`Settings`]: flag > config file >
//! default, as stund does. Every value is checked here, before a file or socket is opened, and a bad one is
//! one line naming the flag (or the config key) it came from.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use holepunch::identity::{PublicKey, SecretKey};
use holepunch::io::{read_network_secret, read_secret_key};
use holepunch::net::{IpPrefix, Retransmit};
use holepunch::signal::NetworkSecret;
use holepunch::signal::PeerName;
use holepunch::tunnel::mtu::{DEFAULT_MTU, MIN_MTU};
use holepunch::tunnel::{derived_address, DEFAULT_OVERLAY};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 6666;
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(3);
pub const DEFAULT_RTO: Duration = Duration::from_millis(500);
pub const DEFAULT_RETRIES: u32 = 7;
/// Most configured peers: each costs a line of status and a slot in the punch engine.
pub const MAX_PEERS: usize = 256;
/// Largest tunnel MTU: an outer datagram of MTU + 32 must fit the receive buffer, and beyond Ethernet's 1500
/// every path fragments.
pub const MAX_MTU: u16 = 1500;
/// The tunnel device's default name.
pub const DEFAULT_TUN_NAME: &str = "punchd0";
/// Longest config file read (a bound against `--config /dev/zero`).
const MAX_CONFIG_LEN: u64 = 1 << 20;

/// The daemon's flags (`punchd [FLAGS]`, no subcommand).
#[derive(Args, Debug, Default, Clone)]
pub struct DaemonArgs {
    /// STUN / rendezvous server (our stund or any RFC 5389 server), HOST[:PORT], default port 3478 (port 0 is
    /// refused). Required, here or in the config file. Repeat it (or give a name with several addresses) for
    /// a cluster: a peer registers at the first and moves to the next when it stops answering.
    #[arg(long)]
    pub server: Vec<String>,
    /// Local UDP port of the punching socket [default: 6666].
    #[arg(long)]
    pub port: Option<u16>,
    /// Local address to bind (default: all addresses of the server's family).
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// Interval between keepalives (humantime: 3s, 500ms, 1m); at least 100ms [default: 3s].
    #[arg(long, value_parser = parse_keepalive)]
    pub keepalive: Option<Duration>,
    /// Initial retransmission timeout of each request (RFC 8489 RTO); at least 1ms [default: 500ms].
    #[arg(long, value_parser = parse_rto)]
    pub rto: Option<Duration>,
    /// Requests sent per transaction before the server counts as lost (RFC 8489 Rc), 1-64 [default: 7].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=Retransmit::MAX_RC as i64))]
    pub retries: Option<u32>,
    /// Print the public endpoint once and exit 0; exit 2 when the server does not answer, 3 when its answer
    /// is unusable (see Exit codes below).
    #[arg(long)]
    pub once: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Peer mode: diagnose the NAT at start (a few seconds; RFC 5780 tests need a server with an alternate
    /// address, as `stund --alternate`) and report its behaviour to the rendezvous for the prediction.
    #[arg(long)]
    pub diagnose: bool,
    /// Peer mode: do not ask the router for a port mapping (NAT-PMP, PCP, UPnP IGD) of the punching port.
    #[arg(long)]
    pub no_portmap: bool,
    /// Peer mode: IP TTL of the primer sent first on each pair through the peer's NAT, which opens our NAT's
    /// mapping and dies before the peer's router; 0 sends none [default: 2] (docs/punchd.md, "Permissive
    /// routers").
    #[arg(long, value_name = "HOPS")]
    pub primer_ttl: Option<u8>,
    /// This peer's name at the rendezvous (1-32 of A-Z a-z 0-9 . _ -). Turns on peer mode: needs --key and
    /// --secret-file.
    #[arg(long, value_name = "NAME")]
    pub peer_id: Option<String>,
    /// This peer's secret key file (`punchd genkey > alice.key`), mode 0600.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The rendezvous network secret shared with the server and the other peers (at least 16 bytes), mode 0600.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// A peer this one accepts, NAME=PUBKEY (base64, `punchd pubkey`); repeatable, added to the config file's.
    #[arg(long = "peer", value_name = "NAME=PUBKEY")]
    pub peers: Vec<String>,
    /// Connect to this configured peer at start; repeatable, added to the config file's.
    #[arg(long = "connect", value_name = "NAME")]
    pub connect: Vec<String>,
    /// The control socket `punchd status` talks to [default: per peer id, see docs/punchd.md].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Peer mode: no tunnel device, punching only (needs no privileges; the tunnel needs CAP_NET_ADMIN).
    #[arg(long)]
    pub no_tun: bool,
    /// Peer mode: this peer's tunnel address with the overlay's prefix length, e.g. 100.64.1.1/10 [default:
    /// derived from the public key inside --overlay].
    #[arg(long, value_name = "IP/LEN")]
    pub tun_ip: Option<IpPrefix>,
    /// Peer mode: the overlay range tunnel addresses come from [default: 100.64.0.0/10, or --tun-ip's network].
    #[arg(long, value_name = "PREFIX")]
    pub overlay: Option<IpPrefix>,
    /// Peer mode: the tunnel device's MTU, 1280-1500 [default: 1400].
    #[arg(long, value_parser = clap::value_parser!(u16).range(MIN_MTU as i64..=MAX_MTU as i64))]
    pub mtu: Option<u16>,
    /// Peer mode: the tunnel device's name [default: punchd0].
    #[arg(long, value_name = "NAME")]
    pub tun_name: Option<String>,
    /// Peer mode: a TURN server (RFC 8656: stund with TURN on, coturn, ...) to relay through when no direct
    /// path opens, turn:HOST[:PORT] (default port 3478).
    #[arg(long, value_name = "turn:HOST[:PORT]")]
    pub relay: Option<String>,
    /// Peer mode: do not use the TURN credentials the rendezvous server grants when it relays too.
    #[arg(long)]
    pub no_relay: bool,
    /// Peer mode: the TURN user of long-term credentials (with --relay-password-file), or of the REST
    /// scheme (with --relay-secret-file; default: the peer id).
    #[arg(long, value_name = "NAME")]
    pub relay_user: Option<String>,
    /// Peer mode: the TURN password file (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub relay_password_file: Option<PathBuf>,
    /// Peer mode: the TURN REST shared secret file (mode 0600): time-limited credentials, as coturn's
    /// use-auth-secret and stund's --auth-secret accept.
    #[arg(long, value_name = "FILE")]
    pub relay_secret_file: Option<PathBuf>,
    /// TOML config file with the same settings (snake_case keys, `[[peer]]` tables); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The config file: the daemon's flags in snake_case, peers as `[[peer]] name = "bob"  key = "..."`. Relative
/// paths are relative to the config file's directory.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// One server, or a list (`server = ["a.example", "b.example"]`).
    pub server: Option<OneOrMany>,
    pub port: Option<u16>,
    pub bind: Option<IpAddr>,
    pub keepalive: Option<String>,
    pub rto: Option<String>,
    pub retries: Option<u32>,
    pub json: Option<bool>,
    pub diagnose: Option<bool>,
    pub portmap: Option<bool>,
    pub primer_ttl: Option<u8>,
    pub peer_id: Option<String>,
    pub key: Option<PathBuf>,
    pub secret_file: Option<PathBuf>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<FilePeer>,
    #[serde(default)]
    pub connect: Vec<String>,
    pub control: Option<PathBuf>,
    pub tun: Option<bool>,
    pub tun_ip: Option<String>,
    pub overlay: Option<String>,
    pub mtu: Option<u16>,
    pub tun_name: Option<String>,
    pub relay: Option<String>,
    pub relay_user: Option<String>,
    pub relay_password_file: Option<PathBuf>,
    pub relay_secret_file: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FilePeer {
    pub name: String,
    pub key: String,
    /// Its tunnel address (default: derived from its key).
    pub tunnel_ip: Option<IpAddr>,
    /// A fixed endpoint, for a plain WireGuard peer that does not punch.
    pub endpoint: Option<SocketAddr>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_LEN + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_LEN {
            bail!("{} is longer than {MAX_CONFIG_LEN} bytes", path.display());
        }
        let mut cfg: FileConfig = toml::from_str(&text).map_err(|e| {
            let msg = e.message().trim().replace('\n', " ");
            anyhow!("{}: {msg}", path.display())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        // On Windows `control` is a pipe name, not a file: it stays as written.
        let control = cfg.control.as_mut().filter(|_| !cfg!(windows));
        let paths = [
            cfg.key.as_mut(),
            cfg.secret_file.as_mut(),
            control,
            cfg.relay_password_file.as_mut(),
            cfg.relay_secret_file.as_mut(),
        ];
        for p in paths.into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}

/// A peer this one accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: PeerName,
    pub key: PublicKey,
    /// Its tunnel address when configured (else derived from its key).
    pub tunnel_ip: Option<IpAddr>,
    /// A fixed WireGuard endpoint (a peer that does not punch).
    pub endpoint: Option<SocketAddr>,
}

/// Peer mode: who this peer is and whom it accepts.
#[derive(Debug)]
pub struct Identity {
    pub name: PeerName,
    pub key: SecretKey,
    /// Named in errors about the key (e.g. a configured peer with our own key).
    #[allow(dead_code)]
    pub key_file: PathBuf,
    /// The rendezvous engine's key material (read here so a bad file is refused at start).
    #[allow(dead_code)]
    pub secret: NetworkSecret,
    pub peers: Vec<Peer>,
    /// Peers to connect to at start, each one of `peers`.
    pub connect: Vec<PeerName>,
}

/// A config-file value that may be one string or a list of them.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Everything the daemon needs, merged and checked.
#[derive(Debug)]
pub struct Settings {
    /// The rendezvous servers, in the order tried (never empty; keeper mode uses the first).
    pub servers: Vec<String>,
    pub port: u16,
    pub bind: Option<IpAddr>,
    pub keepalive: Duration,
    pub retransmit: Retransmit,
    pub once: bool,
    pub json: bool,
    /// Peer mode: diagnose the NAT at start (`--diagnose`).
    pub diagnose: bool,
    /// Peer mode: map the punching port on the router when it offers port mapping (`--no-portmap` clears it).
    pub portmap: bool,
    /// Peer mode: the primer's TTL (`--primer-ttl`; None: no primers).
    pub primer_ttl: Option<u8>,
    /// Peer mode; `None` is keeper mode (the public endpoint only).
    pub identity: Option<Identity>,
    /// The control socket's path given by `--control` (peer mode picks a default when absent).
    pub control: Option<PathBuf>,
    /// Peer mode's tunnel, unless `--no-tun`.
    pub tun: Option<TunSettings>,
    /// Peer mode's TURN relay, with `--relay`.
    pub relay: Option<RelaySettings>,
    /// Without `--relay`: use the relay the rendezvous server offers (`--no-relay` clears it).
    pub relay_from_server: bool,
}

/// The TURN server and our credentials on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// HOST[:PORT], resolved at start.
    pub server: String,
    pub credentials: RelayCredentials,
}

/// Long-term credentials, or the REST scheme's shared secret.
#[derive(Clone, PartialEq, Eq)]
pub enum RelayCredentials {
    Password { user: String, password: String },
    Rest { user: String, secret: String },
}

impl std::fmt::Debug for RelayCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password or secret in a log.
        match self {
            RelayCredentials::Password { user, .. } => write!(f, "Password({user:?})"),
            RelayCredentials::Rest { user, .. } => write!(f, "Rest({user:?})"),
        }
    }
}

/// The relay settings before the files are read.
#[derive(Debug)]
struct RelayPlan {
    server: String,
    user: Option<String>,
    password_file: Option<PathBuf>,
    secret_file: Option<PathBuf>,
}

/// The tunnel device and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSettings {
    pub name: String,
    /// Our tunnel address with the overlay's prefix length (the device's address and its route).
    pub address: IpPrefix,
    pub overlay: IpPrefix,
    pub mtu: u16,
    /// Each configured peer's tunnel address, in the order of [`Identity::peers`].
    pub peer_addresses: Vec<IpAddr>,
}

/// The tunnel settings before the key is read.
#[derive(Debug)]
struct TunPlan {
    name: String,
    address: Option<IpPrefix>,
    overlay: IpPrefix,
    mtu: u16,
}

/// The values without their files read: checked by [`Settings::merge`], read by [`Settings::load`].
struct Plan {
    settings: Settings,
    peer: Option<PeerPlan>,
    tun: Option<TunPlan>,
    relay: Option<RelayPlan>,
}

/// Peer mode before its files are read.
struct PeerPlan {
    name: PeerName,
    key_file: PathBuf,
    secret_file: PathBuf,
    peers: Vec<Peer>,
    connect: Vec<PeerName>,
}

impl Settings {
    /// Flags and config file merged, every value checked, then the key and secret files read.
    pub fn from_args(args: DaemonArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Self::load(args, file)
    }

    pub fn load(args: DaemonArgs, file: FileConfig) -> Result<Settings> {
        let Plan { mut settings, peer, tun, relay } = Self::merge(args, file)?;
        if let (Some(plan), Some(p)) = (relay, &peer) {
            let credentials = match (plan.password_file, plan.secret_file) {
                (Some(f), None) => RelayCredentials::Password {
                    user: plan.user.unwrap_or_else(|| p.name.to_string()),
                    password: holepunch::io::keyfile::read_private_text(&f)?,
                },
                (None, Some(f)) => RelayCredentials::Rest {
                    user: plan.user.unwrap_or_else(|| p.name.to_string()),
                    secret: holepunch::io::keyfile::read_private_text(&f)?,
                },
                _ => bail!("--relay needs --relay-password-file FILE or --relay-secret-file FILE"),
            };
            settings.relay = Some(RelaySettings { server: plan.server, credentials });
        }
        if let Some(PeerPlan { name, key_file, secret_file, peers, connect }) = peer {
            let key = read_secret_key(&key_file)?;
            let own = key.public();
            if let Some(p) = peers.iter().find(|p| p.key == own) {
                bail!("--peer {}: that is this peer's own public key ({})", p.name, key_file.display());
            }
            if let Some(plan) = tun {
                settings.tun = Some(tun_settings(plan, &name, &own, &peers)?);
            }
            let secret = read_network_secret(&secret_file)?;
            settings.identity = Some(Identity { name, key, key_file, secret, peers, connect });
        }
        Ok(settings)
    }

    fn merge(args: DaemonArgs, file: FileConfig) -> Result<Plan> {
        let tun = tun_plan(&args.tun_ip, &args.overlay, args.mtu, &args.tun_name, args.no_tun, &file)?;
        let relay = relay_plan(&args, &file)?;
        let servers = if args.server.is_empty() { file.server.map(OneOrMany::into_vec) } else { Some(args.server) };
        let Some(servers) = servers.filter(|s| !s.is_empty()) else {
            // clap's wording, from when the flag was required on the command line (scripts may match it).
            bail!("the following required arguments were not provided: --server <SERVER>");
        };
        let keepalive = match (args.keepalive, file.keepalive) {
            (Some(d), _) => d,
            (None, Some(s)) => parse_keepalive(&s).map_err(|e| anyhow!("keepalive {s:?} in the config file: {e}"))?,
            (None, None) => DEFAULT_KEEPALIVE,
        };
        let rto = match (args.rto, file.rto) {
            (Some(d), _) => d,
            (None, Some(s)) => parse_rto(&s).map_err(|e| anyhow!("rto {s:?} in the config file: {e}"))?,
            (None, None) => DEFAULT_RTO,
        };
        let retries = args.retries.or(file.retries).unwrap_or(DEFAULT_RETRIES);
        if !(1..=Retransmit::MAX_RC).contains(&retries) {
            bail!("retries {retries} in the config file is not in 1..={}", Retransmit::MAX_RC);
        }
        let settings = Settings {
            servers,
            port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
            bind: args.bind.or(file.bind),
            keepalive,
            retransmit: Retransmit { rto, rc: retries, ..Retransmit::default() },
            once: args.once,
            json: args.json || file.json.unwrap_or(false),
            diagnose: args.diagnose || file.diagnose.unwrap_or(false),
            portmap: !args.no_portmap && file.portmap.unwrap_or(true),
            primer_ttl: match args.primer_ttl.or(file.primer_ttl).unwrap_or(holepunch::punch::DEFAULT_PRIMER_TTL) {
                0 => None,
                hops => Some(hops),
            },
            identity: None,
            control: args.control.or(file.control),
            tun: None,
            relay: None,
            relay_from_server: !args.no_relay,
        };

        let mut peers = Vec::new();
        for text in &args.peers {
            peers.push(parse_peer_flag(text)?);
        }
        for p in &file.peers {
            let name =
                PeerName::new(&p.name).map_err(|e| anyhow!("[[peer]] name {:?} in the config file: {e}", p.name))?;
            let key = PublicKey::from_base64(&p.key)
                .map_err(|e| anyhow!("[[peer]] {name} in the config file: bad public key: {e}"))?;
            peers.push(Peer { name, key, tunnel_ip: p.tunnel_ip, endpoint: p.endpoint });
        }
        let connect_texts: Vec<&String> = args.connect.iter().chain(&file.connect).collect();

        let Some(id_text) = args.peer_id.or(file.peer_id) else {
            for (given, flag) in [
                (args.key.is_some() || file.key.is_some(), "--key"),
                (args.secret_file.is_some() || file.secret_file.is_some(), "--secret-file"),
                (!peers.is_empty(), "--peer"),
                (!connect_texts.is_empty(), "--connect"),
            ] {
                if given {
                    bail!("{flag} needs --peer-id NAME");
                }
            }
            if settings.once && settings.control.is_some() {
                bail!("--control does not go with --once (a one-shot check serves no status)");
            }
            if relay.is_some() {
                bail!("--relay needs --peer-id NAME");
            }
            return Ok(Plan { settings, peer: None, tun: None, relay: None });
        };
        if settings.once {
            bail!("--once is the public-endpoint check; it does not go with --peer-id");
        }
        let name = PeerName::new(&id_text).map_err(|e| anyhow!("--peer-id {id_text:?}: {e}"))?;
        let Some(key_file) = args.key.or(file.key) else {
            bail!("--peer-id needs --key FILE (create one: punchd genkey > {name}.key)");
        };
        let Some(secret_file) = args.secret_file.or(file.secret_file) else {
            bail!("--peer-id needs --secret-file FILE (the network secret shared with the server)");
        };
        check_peers(&name, &peers)?;
        let mut connect: Vec<PeerName> = Vec::new();
        for text in connect_texts {
            let Some(p) = peers.iter().find(|p| p.name.as_str() == text.as_str()) else {
                bail!("--connect {text}: not a configured peer (add --peer {text}=PUBKEY)");
            };
            if !connect.contains(&p.name) {
                connect.push(p.name.clone());
            }
        }
        Ok(Plan { settings, peer: Some(PeerPlan { name, key_file, secret_file, peers, connect }), tun, relay })
    }
}

/// `--relay turn:HOST[:PORT]` and its credential flags merged with the file's, checked; the files are read
/// later.
fn relay_plan(args: &DaemonArgs, file: &FileConfig) -> Result<Option<RelayPlan>> {
    let password_file = args.relay_password_file.clone().or_else(|| file.relay_password_file.clone());
    let secret_file = args.relay_secret_file.clone().or_else(|| file.relay_secret_file.clone());
    let user = args.relay_user.clone().or_else(|| file.relay_user.clone());
    let Some(text) = args.relay.clone().or_else(|| file.relay.clone()) else {
        if password_file.is_some() || secret_file.is_some() || user.is_some() {
            bail!("--relay-user, --relay-password-file and --relay-secret-file need --relay turn:HOST[:PORT]");
        }
        return Ok(None);
    };
    let Some(server) = text.strip_prefix("turn:") else {
        bail!("--relay {text:?}: expected turn:HOST[:PORT] (TURN over UDP)");
    };
    if server.is_empty() {
        bail!("--relay {text:?}: no host");
    }
    if password_file.is_some() && secret_file.is_some() {
        bail!("--relay-password-file and --relay-secret-file: give one of them");
    }
    if password_file.is_some() && user.is_none() {
        bail!("--relay-password-file needs --relay-user NAME");
    }
    Ok(Some(RelayPlan { server: server.to_string(), user, password_file, secret_file }))
}

/// The tunnel flags merged with the file's, checked; `None` with `--no-tun` (or `tun = false`).
fn tun_plan(
    tun_ip: &Option<IpPrefix>,
    overlay: &Option<IpPrefix>,
    mtu: Option<u16>,
    tun_name: &Option<String>,
    no_tun: bool,
    file: &FileConfig,
) -> Result<Option<TunPlan>> {
    let address = match (tun_ip, &file.tun_ip) {
        (Some(p), _) => Some(*p),
        (None, Some(t)) => Some(t.parse::<IpPrefix>().map_err(|e| anyhow!("tun_ip {t:?} in the config file: {e}"))?),
        (None, None) => None,
    };
    let overlay = match (overlay, &file.overlay) {
        (Some(p), _) => *p,
        (None, Some(t)) => t.parse::<IpPrefix>().map_err(|e| anyhow!("overlay {t:?} in the config file: {e}"))?,
        (None, None) => address.map_or(DEFAULT_OVERLAY, |a| IpPrefix::new(a.network(), a.len()).unwrap_or(a)),
    };
    let overlay = IpPrefix::new(overlay.network(), overlay.len()).unwrap_or(overlay);
    let mtu = mtu.or(file.mtu).unwrap_or(DEFAULT_MTU);
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        bail!("mtu {mtu} in the config file is not in {MIN_MTU}..={MAX_MTU}");
    }
    let name = tun_name.clone().or_else(|| file.tun_name.clone()).unwrap_or_else(|| DEFAULT_TUN_NAME.to_string());
    if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        bail!("--tun-name {name:?}: 1-15 of A-Z a-z 0-9 . _ -");
    }
    if let Some(a) = address {
        if !overlay.contains(a.addr()) {
            bail!("--tun-ip {a} is not inside the overlay {overlay}");
        }
        if a.len() != overlay.len() {
            bail!("--tun-ip {a}: its prefix length must be the overlay's (/{})", overlay.len());
        }
    }
    if no_tun || file.tun == Some(false) {
        return Ok(None);
    }
    Ok(Some(TunPlan { name, address, overlay, mtu }))
}

/// The tunnel addresses: ours and each peer's (configured, else derived from the key), all inside the
/// overlay and all different.
fn tun_settings(plan: TunPlan, own_name: &PeerName, own_key: &PublicKey, peers: &[Peer]) -> Result<TunSettings> {
    let derive = |key: &PublicKey, who: &str| {
        derived_address(key, plan.overlay).ok_or_else(|| anyhow!("overlay {} has no room for {who}", plan.overlay))
    };
    let address = match plan.address {
        Some(a) => a,
        None => IpPrefix::new(derive(own_key, own_name.as_str())?, plan.overlay.len())?,
    };
    let mut peer_addresses = Vec::with_capacity(peers.len());
    for p in peers {
        let ip = match p.tunnel_ip {
            Some(ip) if !plan.overlay.contains(ip) => {
                bail!("--peer {}: tunnel address {ip} is not inside the overlay {}", p.name, plan.overlay)
            }
            Some(ip) => ip,
            None => derive(&p.key, p.name.as_str())?,
        };
        peer_addresses.push(ip);
    }
    let all = std::iter::once((own_name.as_str(), address.addr()))
        .chain(peers.iter().zip(&peer_addresses).map(|(p, ip)| (p.name.as_str(), *ip)));
    if let Err((a, b, ip)) = holepunch::tunnel::address::check_unique(all) {
        bail!("{a} and {b} both have tunnel address {ip}: configure one (--tun-ip, or ip= in --peer)");
    }
    Ok(TunSettings { name: plan.name, address, overlay: plan.overlay, mtu: plan.mtu, peer_addresses })
}

/// `NAME=PUBKEY[,ip=ADDR][,endpoint=IP:PORT]`.
fn parse_peer_flag(text: &str) -> Result<Peer> {
    let Some((name, rest)) = text.split_once('=') else {
        bail!("--peer {text:?}: expected NAME=PUBKEY");
    };
    let name = PeerName::new(name.trim()).map_err(|e| anyhow!("--peer {text:?}: {e}"))?;
    // base64 ends with '=' padding: split at the first '=' only, so the key keeps its own; base64 has no ','.
    let mut parts = rest.split(',');
    let key = parts.next().unwrap_or_default();
    let key = PublicKey::from_base64(key).map_err(|e| anyhow!("--peer {name}: bad public key: {e}"))?;
    let mut peer = Peer { name, key, tunnel_ip: None, endpoint: None };
    for option in parts {
        match option.split_once('=') {
            Some(("ip", v)) => {
                peer.tunnel_ip =
                    Some(v.parse().map_err(|_| anyhow!("--peer {}: ip={v:?} is not an IP address", peer.name))?)
            }
            Some(("endpoint", v)) => {
                peer.endpoint =
                    Some(v.parse().map_err(|_| anyhow!("--peer {}: endpoint={v:?} is not IP:PORT", peer.name))?)
            }
            _ => bail!("--peer {}: unknown option {option:?} (ip=ADDR, endpoint=IP:PORT)", peer.name),
        }
    }
    Ok(peer)
}

/// No name or key twice, not ourselves, not too many.
fn check_peers(own: &PeerName, peers: &[Peer]) -> Result<()> {
    if peers.len() > MAX_PEERS {
        bail!("{} peers configured; at most {MAX_PEERS}", peers.len());
    }
    let mut by_key: HashMap<PublicKey, &PeerName> = HashMap::new();
    for (i, p) in peers.iter().enumerate() {
        if &p.name == own {
            bail!("--peer {own}: that is this peer's own name (--peer-id)");
        }
        if peers[..i].iter().any(|q| q.name == p.name) {
            bail!("--peer {}: configured twice", p.name);
        }
        if let Some(other) = by_key.insert(p.key, &p.name) {
            bail!("--peer {}: same key as peer {other}", p.name);
        }
    }
    Ok(())
}

/// A duration flag of at least `min`: zero would turn the schedule into a busy loop of requests.
fn at_least(s: &str, min: Duration, label: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min {
        return Err(format!("must be at least {label}"));
    }
    Ok(d)
}

pub fn parse_rto(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_millis(1), "1ms")
}

pub fn parse_keepalive(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_millis(100), "100ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: DaemonArgs,
    }

    fn args(list: &[&str]) -> DaemonArgs {
        T::try_parse_from(std::iter::once("punchd").chain(list.iter().copied())).unwrap().a
    }

    fn key(seed: u8) -> String {
        SecretKey::from_seed([seed; 32]).public().to_base64()
    }

    fn merge_err(list: &[&str], file: &str) -> String {
        let file: FileConfig = toml::from_str(file).unwrap();
        match Settings::merge(args(list), file) {
            Ok(_) => panic!("{list:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn keeper_mode_defaults() {
        let p = Settings::merge(args(&["--server", "127.0.0.1"]), FileConfig::default()).unwrap();
        assert!(p.peer.is_none());
        let s = p.settings;
        assert_eq!((s.port, s.keepalive, s.retransmit.rto, s.retransmit.rc), (6666, DEFAULT_KEEPALIVE, DEFAULT_RTO, 7));
    }

    #[test]
    fn several_servers_from_flags_or_the_file() {
        let p = Settings::merge(args(&["--server", "a.example", "--server", "b.example:7000"]), FileConfig::default());
        assert_eq!(p.unwrap().settings.servers, ["a.example", "b.example:7000"]);
        let file: FileConfig = toml::from_str("server = [\"c.example\", \"d.example\"]").unwrap();
        assert_eq!(Settings::merge(args(&[]), file).unwrap().settings.servers, ["c.example", "d.example"]);
        let file: FileConfig = toml::from_str("server = \"c.example\"").unwrap();
        let p = Settings::merge(args(&["--server", "x.example"]), file).unwrap();
        assert_eq!(p.settings.servers, ["x.example"], "the flags replace the file's list");
        assert!(merge_err(&[], "server = []").contains("--server <SERVER>"));
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file: FileConfig = toml::from_str(&format!(
            "server = \"a.example\"\nport = 7000\nkeepalive = \"5s\"\npeer_id = \"alice\"\nkey = \"k\"\n\
             secret_file = \"s\"\nconnect = [\"bob\"]\n[[peer]]\nname = \"bob\"\nkey = \"{}\"\n",
            key(2)
        ))
        .unwrap();
        let p =
            Settings::merge(args(&["--server", "b.example", "--peer", &format!("carol={}", key(3))]), file).unwrap();
        assert_eq!(p.settings.servers, ["b.example"]);
        assert_eq!(p.settings.port, 7000);
        assert_eq!(p.settings.keepalive, Duration::from_secs(5));
        let PeerPlan { name, peers, connect, .. } = p.peer.unwrap();
        assert_eq!(name.as_str(), "alice");
        assert_eq!(peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["carol", "bob"]);
        assert_eq!(connect[0].as_str(), "bob");
    }

    #[test]
    fn validation_errors_are_one_line() {
        let b = key(2);
        let peer_mode = ["--server", "x", "--peer-id", "alice", "--key", "k", "--secret-file", "s"];
        let with = |extra: &[&str]| -> Vec<String> { peer_mode.iter().chain(extra).map(|s| s.to_string()).collect() };
        let cases: Vec<(Vec<String>, &str)> = vec![
            (with(&["--connect", "carol"]), "--connect carol: not a configured peer (add --peer carol=PUBKEY)"),
            (
                with(&["--peer", &format!("bob={b}"), "--peer", &format!("bob={}", key(3))]),
                "--peer bob: configured twice",
            ),
            (
                with(&["--peer", &format!("bob={b}"), "--peer", &format!("carol={b}")]),
                "--peer carol: same key as peer bob",
            ),
            (with(&["--peer", &format!("alice={b}")]), "--peer alice: that is this peer's own name (--peer-id)"),
            (with(&["--peer", "bob=nokey"]), "--peer bob: bad public key: not base64"),
            (with(&["--peer", "bob"]), "--peer \"bob\": expected NAME=PUBKEY"),
            (with(&["--peer", "b b=x"]), "may hold ASCII letters"),
            (with(&["--once"]), "--once is the public-endpoint check"),
            (vec!["--server".into(), "x".into(), "--peer-id".into(), "alice".into()], "--peer-id needs --key FILE"),
            (vec!["--server".into(), "x".into(), "--connect".into(), "bob".into()], "--connect needs --peer-id NAME"),
            (vec!["--peer-id".into(), "alice".into()], "required arguments were not provided: --server <SERVER>"),
        ];
        for (list, want) in cases {
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            let e = merge_err(&list, "");
            assert!(e.starts_with(want) || e.contains(want), "{list:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(merge_err(&["--server", "x"], "keepalive = \"0s\"").contains("must be at least 100ms"));
        assert!(merge_err(&["--server", "x"], "retries = 0").contains("retries 0"));
    }

    #[test]
    fn tunnel_settings() {
        let peer_mode = ["--server", "x", "--peer-id", "alice", "--key", "k", "--secret-file", "s"];
        let with = |extra: &[&str]| -> Vec<String> { peer_mode.iter().chain(extra).map(|s| s.to_string()).collect() };
        let plan = |list: Vec<String>| {
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            Settings::merge(args(&list), FileConfig::default()).unwrap()
        };
        // On by default, off with --no-tun.
        let t = plan(with(&[])).tun.unwrap();
        assert_eq!((t.overlay, t.mtu, t.name.as_str(), t.address), (DEFAULT_OVERLAY, 1400, "punchd0", None));
        assert!(plan(with(&["--no-tun"])).tun.is_none());
        // The overlay follows --tun-ip's network.
        let t = plan(with(&["--tun-ip", "10.9.8.7/16", "--mtu", "1280"])).tun.unwrap();
        assert_eq!((t.overlay.to_string(), t.mtu), ("10.9.0.0/16".to_string(), 1280));
        // Addresses: derived for whoever has none, configured ones kept, all distinct.
        let (own, bob) = (SecretKey::from_seed([1; 32]).public(), SecretKey::from_seed([2; 32]).public());
        let peers = vec![
            parse_peer_flag(&format!("bob={bob}")).unwrap(),
            parse_peer_flag(&format!("carol={},ip=100.64.0.9,endpoint=192.0.2.1:51820", key(3))).unwrap(),
        ];
        assert_eq!(peers[1].endpoint, Some("192.0.2.1:51820".parse().unwrap()));
        let name = PeerName::new("alice").unwrap();
        let s = tun_settings(plan(with(&[])).tun.unwrap(), &name, &own, &peers).unwrap();
        assert_eq!(s.address.addr(), derived_address(&own, DEFAULT_OVERLAY).unwrap());
        assert_eq!(s.address.len(), 10);
        assert_eq!(
            s.peer_addresses,
            vec![derived_address(&bob, DEFAULT_OVERLAY).unwrap(), "100.64.0.9".parse().unwrap()]
        );
        let clash = vec![parse_peer_flag(&format!("bob={bob},ip={}", s.address.addr())).unwrap()];
        let e = tun_settings(plan(with(&[])).tun.unwrap(), &name, &own, &clash).unwrap_err().to_string();
        assert!(e.starts_with("alice and bob both have tunnel address"), "{e}");
        let outside = vec![parse_peer_flag(&format!("bob={bob},ip=10.0.0.1")).unwrap()];
        let e = tun_settings(plan(with(&[])).tun.unwrap(), &name, &own, &outside).unwrap_err().to_string();
        assert_eq!(e, "--peer bob: tunnel address 10.0.0.1 is not inside the overlay 100.64.0.0/10");
    }

    #[test]
    fn tunnel_errors_are_one_line() {
        let b = key(2);
        let peer_mode = ["--server", "x", "--peer-id", "alice", "--key", "k", "--secret-file", "s"];
        let with = |extra: &[&str]| -> Vec<String> { peer_mode.iter().chain(extra).map(|s| s.to_string()).collect() };
        let cases: Vec<(Vec<String>, &str)> = vec![
            (
                with(&["--tun-ip", "10.0.0.1/8", "--overlay", "100.64.0.0/10"]),
                "--tun-ip 10.0.0.1/8 is not inside the overlay",
            ),
            (with(&["--tun-ip", "100.64.0.1/24"]), ""),
            (
                with(&["--tun-ip", "100.64.0.1/24", "--overlay", "100.64.0.0/10"]),
                "its prefix length must be the overlay's (/10)",
            ),
            (with(&["--tun-name", "a-very-long-device-name"]), "--tun-name \"a-very-long-device-name\": 1-15 of"),
            (with(&["--tun-name", "bad/name"]), "1-15 of A-Z"),
            (with(&["--peer", &format!("bob={b},colour=red")]), "--peer bob: unknown option \"colour=red\""),
            (with(&["--peer", &format!("bob={b},ip=nope")]), "--peer bob: ip=\"nope\" is not an IP address"),
            (with(&["--peer", &format!("bob={b},endpoint=host:1")]), "--peer bob: endpoint=\"host:1\" is not IP:PORT"),
        ];
        for (list, want) in cases {
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            let r = Settings::merge(args(&list), FileConfig::default());
            match (want, r) {
                ("", Ok(_)) => {}
                ("", Err(e)) => panic!("{list:?}: {e}"),
                (want, Ok(_)) => panic!("{list:?} accepted, wanted {want}"),
                (want, Err(e)) => {
                    let e = e.to_string();
                    assert!(e.contains(want), "{list:?}: {e}");
                    assert!(!e.contains('\n'), "{e}");
                }
            }
        }
        assert!(
            merge_err(&["--server", "x"], "mtu = 9000").contains("mtu 9000 in the config file is not in 1280..=1500")
        );
        let e = T::try_parse_from(["punchd", "--mtu", "1000"]).err().unwrap().to_string();
        assert!(e.contains("1280"), "{e}");
    }

    #[test]
    fn own_key_as_a_peer_is_refused() {
        let dir = std::env::temp_dir().join(format!("punchd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = SecretKey::from_seed([7; 32]);
        let (kf, sf) = (dir.join("a.key"), dir.join("net.secret"));
        std::fs::write(&kf, k.to_base64()).unwrap();
        std::fs::write(&sf, "0123456789abcdef0123").unwrap();
        #[cfg(unix)]
        for f in [&kf, &sf] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let own = format!("bob={}", k.public().to_base64());
        let list = [
            "--server",
            "x",
            "--peer-id",
            "alice",
            "--key",
            kf.to_str().unwrap(),
            "--secret-file",
            sf.to_str().unwrap(),
        ];
        let mut bad: Vec<&str> = list.to_vec();
        bad.extend(["--peer", own.as_str()]);
        let e = Settings::load(args(&bad), FileConfig::default()).unwrap_err().to_string();
        assert!(e.starts_with("--peer bob: that is this peer's own public key"), "{e}");
        let s = Settings::load(args(&list), FileConfig::default()).unwrap();
        assert_eq!(s.identity.unwrap().key.public(), k.public());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

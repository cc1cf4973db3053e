//! A third-party WireGuard peer for the lab: Debian's userspace `wireguard-go`, configured with `wg` from
//! wireguard-tools, inside a lab namespace (docs/lab.md, "A WireGuard reference peer"). It is what punchd's
//! tunnel is checked and measured against: the same protocol (the WireGuard paper, as the Noise IK handshake
//! and transport messages of wireguard.com/protocol), written by someone else.
//!
//! This kernel has no WireGuard module, so the userspace implementation is the reference; it refuses to start
//! unless `WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1` is set, which [`WireguardGo::start`] does.
//!
//! wireguard-go's control socket lives in `/var/run/wireguard/<interface>.sock`, a path every namespace
//! shares (the mount namespace is the host's), so interface names are unique per process and call
//! (`hl<pid>w<n>`) and two labs never talk to each other's daemon.
//!
//! Keys are plain WireGuard keys: 32-byte X25519 keys in base64, the same form as punchd's (`punchd genkey`,
//! `punchd pubkey`), so a key made by one works with the other.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cmd::{describe, run, Process};
use crate::error::{Error, Result};
use crate::topology::Node;

/// wireguard-go's own name for the switch that lets it run where a kernel module could.
const USERSPACE_ENV: &str = "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD";
/// Where wireguard-go puts its control (UAPI) sockets; shared by every namespace.
const SOCKET_DIR: &str = "/var/run/wireguard";
/// The MTU punchd's TUN uses by default (docs/architecture.md, "Numbers"); the reference gets the same.
pub const DEFAULT_MTU: u32 = 1400;
/// Longest wait for wireguard-go's control socket after the start.
const START_LIMIT: Duration = Duration::from_secs(5);

/// For tests: true (after one line on stderr) when wireguard-go or wg is missing and the test should skip;
/// with CI=true a missing tool is a failure instead (scripts/install-deps.sh installs them).
pub fn skip_unless_available(test: &str) -> bool {
    match check_available() {
        Ok(()) => false,
        Err(e) if crate::in_ci() => panic!("{test}: CI=true but {e}"),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP {test}: {e}");
            true
        }
    }
}

/// Ok when `wireguard-go` and `wg` can be run here.
pub fn check_available() -> Result<()> {
    for (tool, arg) in [("wireguard-go", "--version"), ("wg", "--version")] {
        let ok = Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !ok {
            return Err(Error::Unavailable(format!(
                "`{tool}` not found (apt-get install wireguard-go wireguard-tools; scripts/install-deps.sh)"
            )));
        }
    }
    Ok(())
}

/// `wg genkey > path`, the file created mode 0600 before the key is written into it.
pub fn genkey(path: &Path) -> Result<PathBuf> {
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let mut cmd = Command::new("wg");
    cmd.arg("genkey").stdout(file);
    let line = describe(&cmd);
    let st = cmd.status().map_err(|source| Error::Spawn { cmd: line.clone(), source })?;
    if !st.success() {
        return Err(Error::Command { cmd: line, status: st.to_string(), stderr: String::new() });
    }
    Ok(path.to_owned())
}

/// `wg pubkey < path`: the public key of a private key file (also of one made by `punchd genkey`).
pub fn pubkey(path: &Path) -> Result<String> {
    // Not `cmd::run`: it gives the command an empty stdin.
    let mut cmd = Command::new("wg");
    cmd.arg("pubkey").stdin(File::open(path)?);
    let line = describe(&cmd);
    let out = cmd.output().map_err(|source| Error::Spawn { cmd: line.clone(), source })?;
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || key.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(Error::Command {
            cmd: format!("{line} < {}", path.display()),
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(key)
}

/// One peer of a [`WgConfig`] (`wg set … peer …`).
#[derive(Clone, Debug)]
pub struct WgPeer {
    /// Its public key, base64.
    pub public_key: String,
    /// A static endpoint; `None` waits for the peer to come (a responder).
    pub endpoint: Option<SocketAddr>,
    /// Tunnel addresses routed to this peer, e.g. `100.64.1.2/32`.
    pub allowed_ips: Vec<String>,
    /// Seconds between keepalives when idle (`persistent-keepalive`); `None` is off.
    pub keepalive: Option<u16>,
}

impl WgPeer {
    /// A peer with one tunnel address (`/32`) and nothing else set.
    pub fn new(public_key: &str, tunnel_ip: Ipv4Addr) -> WgPeer {
        WgPeer {
            public_key: public_key.to_owned(),
            endpoint: None,
            allowed_ips: vec![format!("{tunnel_ip}/32")],
            keepalive: None,
        }
    }
    pub fn endpoint(mut self, ep: SocketAddr) -> WgPeer {
        self.endpoint = Some(ep);
        self
    }
    pub fn keepalive(mut self, secs: u16) -> WgPeer {
        self.keepalive = Some(secs);
        self
    }

    /// The `wg set` arguments for this peer.
    fn args(&self) -> Vec<String> {
        let mut a = vec!["peer".to_owned(), self.public_key.clone()];
        if let Some(ep) = self.endpoint {
            a.extend(["endpoint".to_owned(), ep.to_string()]);
        }
        a.extend(["allowed-ips".to_owned(), self.allowed_ips.join(",")]);
        if let Some(k) = self.keepalive {
            a.extend(["persistent-keepalive".to_owned(), k.to_string()]);
        }
        a
    }
}

/// What one wireguard-go interface is given.
#[derive(Clone, Debug)]
pub struct WgConfig {
    /// The private key file (`wg genkey` or `punchd genkey`).
    pub private_key: PathBuf,
    /// UDP port it listens on.
    pub listen_port: u16,
    /// Its own tunnel address with the prefix length of the tunnel network, e.g. `100.64.1.1/10`.
    pub address: String,
    pub mtu: u32,
    pub peers: Vec<WgPeer>,
}

impl WgConfig {
    pub fn new(private_key: &Path, listen_port: u16, address: &str) -> WgConfig {
        WgConfig {
            private_key: private_key.to_owned(),
            listen_port,
            address: address.to_owned(),
            mtu: DEFAULT_MTU,
            peers: Vec::new(),
        }
    }
    pub fn mtu(mut self, mtu: u32) -> WgConfig {
        self.mtu = mtu;
        self
    }
    pub fn peer(mut self, peer: WgPeer) -> WgConfig {
        self.peers.push(peer);
        self
    }
}

/// A running wireguard-go with its TUN interface in a lab namespace. Dropping it stops the daemon (SIGTERM,
/// then SIGKILL), deletes the interface and removes the control socket, also when the start failed halfway.
pub struct WireguardGo {
    ns: String,
    ifname: String,
    process: Option<Process>,
}

impl WireguardGo {
    /// Starts wireguard-go in `node`'s namespace and configures it: the private key, port and peers through
    /// `wg set`, then the address and MTU, and the interface up.
    pub fn start(node: &Node, cfg: &WgConfig) -> Result<WireguardGo> {
        static N: AtomicU32 = AtomicU32::new(0);
        let ifname = format!("hl{}w{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        // `-f`: stay in the foreground, so the pid is the daemon's (`exec` keeps it) and the handle can stop it.
        // stderr joins stdout, which the handle captures: its banner stays out of the caller's output, and
        // its errors go into ours when it fails to start.
        let mut cmd = node.command("sh");
        cmd.env(USERSPACE_ENV, "1")
            .env("LOG_LEVEL", "error")
            .arg("-c")
            .arg(format!("exec wireguard-go -f {ifname} 2>&1"));
        let process = Process::spawn(cmd, true)?;
        let mut wg = WireguardGo { ns: node.netns().to_owned(), ifname, process: Some(process) };
        wg.wait_for_socket()?;
        wg.configure(cfg)?;
        log::info!(target: "lab::wireguard", "wireguard-go {} up in {} as {}", wg.ifname, wg.ns, cfg.address);
        Ok(wg)
    }

    fn wait_for_socket(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_LIMIT;
        let sock = self.socket_path();
        while !sock.exists() {
            let Some(p) = self.process.as_mut() else { break };
            if !p.is_running() {
                let said = p.lines_until_eof(Duration::from_millis(500)).join("\n");
                return Err(Error::Command {
                    cmd: format!("wireguard-go -f {}", self.ifname),
                    status: "exited before its control socket appeared".into(),
                    stderr: said,
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout { what: format!("{}", sock.display()), ms: START_LIMIT.as_millis() });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn configure(&self, cfg: &WgConfig) -> Result<()> {
        let port = cfg.listen_port.to_string();
        let key = cfg.private_key.to_string_lossy().into_owned();
        let mut args =
            vec!["set".to_owned(), self.ifname.clone(), "private-key".into(), key, "listen-port".into(), port];
        for p in &cfg.peers {
            args.extend(p.args());
        }
        self.wg(&args)?;
        self.ip(&["addr", "add", &cfg.address, "dev", &self.ifname])?;
        self.ip(&["link", "set", "dev", &self.ifname, "mtu", &cfg.mtu.to_string(), "up"])?;
        Ok(())
    }

    /// Adds or changes a peer at run time.
    pub fn set_peer(&self, peer: &WgPeer) -> Result<()> {
        let mut args = vec!["set".to_owned(), self.ifname.clone()];
        args.extend(peer.args());
        self.wg(&args)?;
        Ok(())
    }

    /// The interface name (also the name `wg` knows it by).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The daemon's pid (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    /// `wg show <if> dump`: one line for the interface, then one per peer (tab-separated).
    pub fn dump(&self) -> Result<String> {
        self.wg(&["show".to_owned(), self.ifname.clone(), "dump".to_owned()])
    }

    /// When the last handshake with `public_key` completed (seconds since the epoch), 0 for never.
    pub fn latest_handshake(&self, public_key: &str) -> Result<u64> {
        let dump = self.dump()?;
        let line = dump.lines().skip(1).find(|l| l.split('\t').next() == Some(public_key));
        // peer lines: public-key preshared-key endpoint allowed-ips latest-handshake rx tx keepalive
        Ok(line.and_then(|l| l.split('\t').nth(4)).and_then(|t| t.parse().ok()).unwrap_or(0))
    }

    fn wg(&self, args: &[String]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "wg"]).args(args);
        let out = run(&mut c)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        let mut c = Command::new("ip");
        c.args(["-n", &self.ns]).args(args);
        run(&mut c)?;
        Ok(())
    }

    fn socket_path(&self) -> PathBuf {
        Path::new(SOCKET_DIR).join(format!("{}.sock", self.ifname))
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            // SIGTERM lets it close the TUN and remove its socket itself; the handle's SIGKILL is the fallback.
            p.terminate(Duration::from_secs(2));
        }
        // Both are gone already after a clean stop; after a SIGKILL (or a namespace deleted first) not.
        let _ = Command::new("ip")
            .args(["-n", &self.ns, "link", "del", "dev", &self.ifname])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(self.socket_path());
    }
}

impl std::fmt::Debug for WireguardGo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireguardGo").field("ns", &self.ns).field("ifname", &self.ifname).finish()
    }
}

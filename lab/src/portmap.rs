//! Port-mapping router preset: Debian's `miniupnpd-nftables` (2.3.1) in a router namespace, serving NAT-PMP
//! (RFC 6886) and PCP (RFC 6887) on port 5351 and, optionally, UPnP IGD on the LAN side.
//!
//! # Using it from the lab (for the core helper)
//!
//! ```no_run
//! use holepunch_lab::portmap::{PortMapConfig, PortMapper};
//! use std::net::Ipv4Addr;
//! let cfg = PortMapConfig::new(
//!     "router-a",                          // ip netns name of the NAT router
//!     "pub", Ipv4Addr::new(203, 0, 113, 10), // WAN interface and its (public) address
//!     "lan", Ipv4Addr::new(192, 168, 1, 1), 24, // LAN interface, the router's LAN address and prefix
//! );
//! let mapper = PortMapper::start(&cfg)?;   // returns once miniupnpd listens on 5351
//! assert_eq!(mapper.natpmp_addr().port(), 5351);
//! drop(mapper);                            // kills miniupnpd, deletes its nft tables and temp dir
//! # Ok::<(), holepunch_lab::portmap::Error>(())
//! ```
//!
//! What the router namespace must allow, besides its own NAT preset:
//! - **Forwarding of mapped flows.** miniupnpd only adds `dnat` rules (table [`NAT_TABLE`], chain
//!   `prerouting_miniupnpd`, priority dstnat−10 so they win over the preset's own inbound dnat) and accept
//!   rules (table [`FILTER_TABLE`], hook forward). An accept in one nftables table cannot override a drop in
//!   another, so a preset whose forward chain drops new inbound packets must accept `ct status dnat` first.
//! - **Its masquerade must match the LAN subnet only** (`ip saddr 192.168.1.0/24 oifname "pub" masquerade`),
//!   never the router's own traffic: see the STUN note below.
//!
//! # Why STUN, and which server
//! miniupnpd refuses a documentation-range WAN address (203.0.113.0/24, 198.51.100.0/24) as "not public"
//! unless it learns it by STUN, and it then runs a small RFC 3489 test: four Binding requests (plain, change
//! port, change IP, change both) from four local ports; unless all four answers arrive with the mapped address
//! equal to the first one and the mapped ports equal to its local ports, it decides it is behind a restrictive
//! NAT and disables port forwarding. Answers to "change IP" come from an address the router never sent to, so a
//! router that drops unsolicited inbound packets (as the lab's presets do) would fail the test against the
//! public server. By default ([`StunSource::Builtin`]) this module therefore runs a tiny STUN responder inside
//! the router namespace, on the router's own addresses (primary `WAN:478`, alternates `WAN:479`, `LAN:478`,
//! `LAN:479`; ports below 1024 so they never meet a host's mapped or masqueraded port). It answers only the
//! router itself. miniupnpd's requests to its own address never pass the NAT, so the answers carry the WAN
//! address and the real local ports, whatever NAT preset the router runs. [`StunSource::External`] points
//! miniupnpd at another server instead (which then must answer CHANGE-REQUEST from a second address, and the
//! router must let those answers in).
//!
//! nftables: the package's `nft_init.sh` helpers are incomplete, so this module creates miniupnpd's tables and
//! chains itself ([`FILTER_TABLE`], [`NAT_TABLE`], both `inet`, the family miniupnpd 2.3 uses) and deletes them
//! on drop.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::delayline::run_in_netns;

/// NAT-PMP and PCP server port (RFC 6886 §1.1, RFC 6887 §19.1).
pub const NATPMP_PORT: u16 = 5351;
/// The `inet` table holding miniupnpd's forward (filter) chain.
pub const FILTER_TABLE: &str = "upnp_filter";
/// The `inet` table holding miniupnpd's prerouting (dnat) and postrouting (snat) chains.
pub const NAT_TABLE: &str = "upnp_nat";
/// Ports of the built-in STUN responder: primary and alternate.
pub const BUILTIN_STUN_PORTS: (u16, u16) = (478, 479);
const MINIUPNPD: &str = "/usr/sbin/miniupnpd";
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong starting the port mapper.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid port-mapper configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("miniupnpd exited before listening ({status}); its last log lines:\n{log}")]
    Exited { status: String, log: String },
    #[error("miniupnpd did not listen on port {NATPMP_PORT} within {READY_TIMEOUT:?}; its last log lines:\n{log}")]
    NotReady { log: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where miniupnpd learns its public address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StunSource {
    /// A responder of this module inside the router namespace (see the module documentation).
    Builtin,
    /// Another RFC 3489/5780 server with a second address, e.g. the lab's public stund.
    External(SocketAddrV4),
}

/// Where and how to run miniupnpd.
#[derive(Clone, Debug)]
pub struct PortMapConfig {
    /// `ip netns` name of the router namespace.
    pub netns: String,
    pub wan_if: String,
    /// The router's public address on `wan_if`; NAT-PMP reports it.
    pub wan_addr: Ipv4Addr,
    pub lan_if: String,
    /// The router's address on `lan_if`, where NAT-PMP/PCP listen (the hosts' default gateway).
    pub lan_addr: Ipv4Addr,
    /// Prefix length of the LAN; hosts in it may map external ports 1024–65535 to their own address.
    pub lan_prefix: u8,
    pub stun: StunSource,
    /// Also serve UPnP IGD (SSDP + HTTP/SOAP) on the LAN.
    pub upnp: bool,
    /// Longest lease granted, in seconds (miniupnpd `max_lifetime`).
    pub max_lifetime: u32,
    /// The miniupnpd binary.
    pub program: PathBuf,
}

impl PortMapConfig {
    pub fn new(
        netns: &str,
        wan_if: &str,
        wan_addr: Ipv4Addr,
        lan_if: &str,
        lan_addr: Ipv4Addr,
        lan_prefix: u8,
    ) -> Self {
        PortMapConfig {
            netns: netns.to_string(),
            wan_if: wan_if.to_string(),
            wan_addr,
            lan_if: lan_if.to_string(),
            lan_addr,
            lan_prefix,
            stun: StunSource::Builtin,
            upnp: true,
            max_lifetime: 86_400,
            program: PathBuf::from(MINIUPNPD),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let name_ok = |s: &str| {
            !s.is_empty() && s.len() <= 15 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        };
        if self.netns.is_empty() || self.netns.contains('/') {
            return Err(Error::Config(format!("bad namespace name {:?}", self.netns)));
        }
        for ifname in [&self.wan_if, &self.lan_if] {
            if !name_ok(ifname) {
                return Err(Error::Config(format!("bad interface name {ifname:?}")));
            }
        }
        if self.wan_if == self.lan_if {
            return Err(Error::Config("WAN and LAN interface are the same".into()));
        }
        if !(8..=30).contains(&self.lan_prefix) {
            return Err(Error::Config(format!("LAN prefix /{} is not within /8-/30", self.lan_prefix)));
        }
        if self.max_lifetime < 120 {
            return Err(Error::Config("max_lifetime below 120 s".into()));
        }
        Ok(())
    }

    fn lan_network(&self) -> Ipv4Addr {
        let mask = u32::MAX << (32 - u32::from(self.lan_prefix));
        Ipv4Addr::from(u32::from(self.lan_addr) & mask)
    }

    /// miniupnpd's configuration file for this router.
    fn miniupnpd_conf(&self, stun: SocketAddrV4, dir: &Path, uuid: &str) -> String {
        let net = self.lan_network();
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "# written by holepunch-lab (lab/src/portmap.rs)\n\
             ext_ifname={wan}\n\
             listening_ip={lan}\n\
             http_port=0\n\
             ipv6_disable=yes\n\
             enable_natpmp=yes\n\
             enable_upnp={upnp}\n\
             ext_perform_stun=yes\n\
             ext_stun_host={stun_ip}\n\
             ext_stun_port={stun_port}\n\
             upnp_table_name={FILTER_TABLE}\n\
             upnp_nat_table_name={NAT_TABLE}\n\
             upnp_forward_chain=miniupnpd\n\
             upnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             lease_file={lease}\n\
             min_lifetime=120\n\
             max_lifetime={max}\n\
             secure_mode=yes\n\
             system_uptime=no\n\
             notify_interval=60\n\
             clean_ruleset_interval=600\n\
             uuid={uuid}\n\
             allow 1024-65535 {net}/{prefix} 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            wan = self.wan_if,
            lan = self.lan_if,
            upnp = yes_no(self.upnp),
            stun_ip = stun.ip(),
            stun_port = stun.port(),
            lease = dir.join("upnp.leases").display(),
            max = self.max_lifetime,
            prefix = self.lan_prefix,
        )
    }
}

/// The nftables tables and chains miniupnpd fills, recreated empty (a stale set from a crashed run is replaced).
fn nft_ruleset() -> String {
    format!(
        "table inet {FILTER_TABLE} {{}}\n\
         delete table inet {FILTER_TABLE}\n\
         table inet {NAT_TABLE} {{}}\n\
         delete table inet {NAT_TABLE}\n\
         table inet {FILTER_TABLE} {{\n\
         \x20 chain forward {{ type filter hook forward priority filter - 10; policy accept; jump miniupnpd; }}\n\
         \x20 chain miniupnpd {{ }}\n\
         }}\n\
         table inet {NAT_TABLE} {{\n\
         \x20 chain prerouting {{ type nat hook prerouting priority dstnat - 10; policy accept; jump prerouting_miniupnpd; }}\n\
         \x20 chain postrouting {{ type nat hook postrouting priority srcnat - 10; policy accept; jump postrouting_miniupnpd; }}\n\
         \x20 chain prerouting_miniupnpd {{ }}\n\
         \x20 chain postrouting_miniupnpd {{ }}\n\
         }}\n"
    )
}

fn nft(netns: &str, script: &str) -> Result<(), Error> {
    let command = format!("ip netns exec {netns} nft -f -");
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("cannot run `{command}`")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(io_err(format!("cannot feed `{command}`")))?;
    }
    let out = child.wait_with_output().map_err(io_err(format!("cannot wait for `{command}`")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// A running miniupnpd; dropping it stops miniupnpd and removes everything it and this module set up.
pub struct PortMapper {
    child: Option<Child>,
    netns: String,
    dir: PathBuf,
    natpmp: SocketAddrV4,
    wan_addr: Ipv4Addr,
    http_port: Option<u16>,
    stun: Option<StunResponder>,
}

impl PortMapper {
    /// Prepares nftables, starts miniupnpd in the foreground (`-d`) inside `cfg.netns` and waits until it
    /// listens for NAT-PMP/PCP.
    pub fn start(cfg: &PortMapConfig) -> Result<PortMapper, Error> {
        cfg.validate()?;
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("holepunch-lab-upnp-{tag}"));
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        // From here on, dropping `mapper` undoes whatever was done so far.
        let mut mapper = PortMapper {
            child: None,
            netns: cfg.netns.clone(),
            dir: dir.clone(),
            natpmp: SocketAddrV4::new(cfg.lan_addr, NATPMP_PORT),
            wan_addr: cfg.wan_addr,
            http_port: None,
            stun: None,
        };
        let stun = match &cfg.stun {
            StunSource::External(addr) => *addr,
            StunSource::Builtin => {
                let responder = StunResponder::start(&cfg.netns, cfg.wan_addr, cfg.lan_addr)?;
                let addr = responder.primary;
                mapper.stun = Some(responder);
                addr
            }
        };
        nft(&cfg.netns, &nft_ruleset())?;

        let conf = dir.join("miniupnpd.conf");
        // A UUID unique per instance, so UPnP clients on one machine never confuse two lab routers.
        let uuid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), u64::from(n));
        fs::write(&conf, cfg.miniupnpd_conf(stun, &dir, &uuid))
            .map_err(io_err(format!("cannot write {}", conf.display())))?;
        let log_path = dir.join("miniupnpd.log");
        let log = fs::File::create(&log_path).map_err(io_err(format!("cannot create {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(io_err("cannot duplicate the log file"))?;
        // `ip netns exec` execs the program, so the child's pid is miniupnpd's.
        let mut command = Command::new("ip");
        // SAFETY: the closure only makes an async-signal-safe syscall between fork and exec.
        unsafe {
            // If this process dies without dropping the mapper (SIGKILL, a CI timeout), miniupnpd follows
            // instead of lingering in the router namespace. The signal is tied to the thread that started it,
            // so start the mapper from a thread that outlives it (a test's own thread does).
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let child = command
            .args(["netns", "exec", &cfg.netns])
            .arg(&cfg.program)
            .arg("-d")
            .arg("-f")
            .arg(&conf)
            .arg("-P")
            .arg(dir.join("miniupnpd.pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err(format!("cannot start {}", cfg.program.display())))?;
        log::info!(target: "lab::portmap", "miniupnpd started in {} (pid {})", cfg.netns, child.id());
        mapper.child = Some(child);
        mapper.wait_ready()?;
        Ok(mapper)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pid = self.child.as_ref().map_or(0, Child::id);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(Error::Exited { status: status.to_string(), log: self.log_tail(20) });
                }
            }
            // The child's own view of its namespace's sockets.
            if udp_port_bound(pid, NATPMP_PORT) {
                let log = self.log();
                self.http_port = log
                    .lines()
                    .find_map(|l| l.split("HTTP listening on port ").nth(1))
                    .and_then(|p| p.trim().parse().ok());
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady { log: self.log_tail(20) });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where hosts on the LAN send NAT-PMP and PCP requests.
    pub fn natpmp_addr(&self) -> SocketAddrV4 {
        self.natpmp
    }

    /// The public address miniupnpd reports.
    pub fn wan_addr(&self) -> Ipv4Addr {
        self.wan_addr
    }

    /// Port of the UPnP IGD HTTP server on the LAN address, when UPnP is on.
    pub fn http_port(&self) -> Option<u16> {
        self.http_port
    }

    /// miniupnpd's process id (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything miniupnpd logged so far (it logs at debug level in the foreground).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.join("miniupnpd.log")) {
            // A log that cannot be read is reported as empty; it is diagnostics only.
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for PortMapper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first: miniupnpd then removes its own rules and lease file.
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        // The namespace may already be gone with the whole lab; then so are the tables.
        let _ = nft(&self.netns, &format!("delete table inet {FILTER_TABLE}\ndelete table inet {NAT_TABLE}\n"));
        self.stun.take();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process's network namespace has a UDP socket bound to `port` (from `/proc/PID/net/udp`).
fn udp_port_bound(pid: u32, port: u16) -> bool {
    let Ok(table) = fs::read_to_string(format!("/proc/{pid}/net/udp")) else {
        return false;
    };
    let wanted = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        line.split_whitespace().nth(1).and_then(|local| local.split(':').nth(1)).is_some_and(|p| p == wanted)
    })
}

/// A minimal RFC 5389/3489 Binding responder on the router's own addresses, for miniupnpd's NAT test only.
struct StunResponder {
    primary: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StunResponder {
    fn start(netns: &str, wan: Ipv4Addr, lan: Ipv4Addr) -> Result<StunResponder, Error> {
        let (p, a) = BUILTIN_STUN_PORTS;
        // Index = CHANGE-REQUEST flags: bit 0 change port, bit 1 change IP.
        let addrs = [
            SocketAddrV4::new(wan, p),
            SocketAddrV4::new(wan, a),
            SocketAddrV4::new(lan, p),
            SocketAddrV4::new(lan, a),
        ];
        let sockets =
            run_in_netns(netns, || addrs.iter().map(|&addr| UdpSocket::bind(addr)).collect::<io::Result<Vec<_>>>())
                .map_err(io_err(format!("cannot enter namespace {netns}")))?
                .map_err(io_err(format!("cannot open the STUN responder in {netns}")))?;
        sockets[0].set_read_timeout(Some(Duration::from_millis(50))).map_err(io_err("SO_RCVTIMEO"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("lab stun".into())
                .spawn(move || serve_stun(&sockets, &addrs, wan, &stop))
                .map_err(io_err("cannot start the STUN responder thread"))?
        };
        Ok(StunResponder { primary: addrs[0], stop, thread: Some(thread) })
    }
}

impl Drop for StunResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_stun(sockets: &[UdpSocket], addrs: &[SocketAddrV4; 4], router: Ipv4Addr, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    let mut out = [0u8; 128];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sockets[0].recv_from(&mut buf) else {
            continue;
        };
        // Only the router itself (miniupnpd) is served; anything else is ignored.
        let SocketAddr::V4(from) = from else { continue };
        if *from.ip() != router {
            continue;
        }
        let Some((len, flags)) = binding_response(&buf[..n], from, addrs, &mut out) else {
            continue;
        };
        let via = &sockets[flags as usize];
        if let Err(e) = via.send_to(&out[..len], from) {
            log::debug!(target: "lab::portmap", "STUN answer to {from}: {e}");
        }
    }
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Builds the Binding success response to `req` from `from` into `out`; returns its length and the
/// CHANGE-REQUEST flags (bit 0 change port, bit 1 change IP), which pick the socket to answer from.
fn binding_response(
    req: &[u8],
    from: SocketAddrV4,
    addrs: &[SocketAddrV4; 4],
    out: &mut [u8; 128],
) -> Option<(usize, u8)> {
    if req.len() < 20 || req[0] != 0x00 || req[1] != 0x01 {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([req[2], req[3]]));
    if body_len % 4 != 0 || 20 + body_len > req.len() {
        return None;
    }
    let mut flags = 0u8;
    let mut at = 20;
    while at + 4 <= 20 + body_len {
        let kind = u16::from_be_bytes([req[at], req[at + 1]]);
        let len = usize::from(u16::from_be_bytes([req[at + 2], req[at + 3]]));
        let value = req.get(at + 4..at + 4 + len)?;
        if kind == 0x0003 && len == 4 {
            // CHANGE-REQUEST (RFC 3489 §11.2.4, RFC 5780 §7.2): 0x04 change IP, 0x02 change port.
            let change_port = value[3] & 0x02 != 0;
            let change_ip = value[3] & 0x04 != 0;
            flags = u8::from(change_port) | u8::from(change_ip) << 1;
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    let rfc5389 = req[4..8] == MAGIC_COOKIE;
    out[0] = 0x01;
    out[1] = 0x01;
    out[4..20].copy_from_slice(&req[4..20]);
    let mut w = 20;
    let mut put = |out: &mut [u8; 128], kind: u16, addr: SocketAddrV4, xor: bool| {
        let (mut port, mut ip) = (addr.port().to_be_bytes(), addr.ip().octets());
        if xor {
            for i in 0..2 {
                port[i] ^= MAGIC_COOKIE[i];
            }
            for i in 0..4 {
                ip[i] ^= MAGIC_COOKIE[i];
            }
        }
        out[w..w + 2].copy_from_slice(&kind.to_be_bytes());
        out[w + 2..w + 4].copy_from_slice(&8u16.to_be_bytes());
        out[w + 4] = 0;
        out[w + 5] = 0x01; // IPv4
        out[w + 6..w + 8].copy_from_slice(&port);
        out[w + 8..w + 12].copy_from_slice(&ip);
        w += 12;
    };
    put(out, 0x0001, from, false); // MAPPED-ADDRESS
    if rfc5389 {
        put(out, 0x0020, from, true); // XOR-MAPPED-ADDRESS
        put(out, 0x802b, addrs[flags as usize], false); // RESPONSE-ORIGIN
        put(out, 0x802c, addrs[3], false); // OTHER-ADDRESS
    } else {
        put(out, 0x0004, addrs[flags as usize], false); // SOURCE-ADDRESS
        put(out, 0x0005, addrs[3], false); // CHANGED-ADDRESS
    }
    out[2..4].copy_from_slice(&((w - 20) as u16).to_be_bytes());
    Some((w, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cookie: bool, change: Option<u8>) -> Vec<u8> {
        let mut r = vec![0x00, 0x01, 0, 0];
        r.extend_from_slice(if cookie { &MAGIC_COOKIE } else { &[1, 2, 3, 4] });
        r.extend_from_slice(&[7; 12]);
        if let Some(f) = change {
            r.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, f]);
        }
        let len = (r.len() - 20) as u16;
        r[2..4].copy_from_slice(&len.to_be_bytes());
        r
    }

    fn addrs() -> [SocketAddrV4; 4] {
        let (w, l) = (Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(192, 168, 1, 1));
        [SocketAddrV4::new(w, 478), SocketAddrV4::new(w, 479), SocketAddrV4::new(l, 478), SocketAddrV4::new(l, 479)]
    }

    #[test]
    fn change_request_picks_the_socket() {
        let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40000);
        let mut out = [0u8; 128];
        for (flags, want) in [(None, 0), (Some(0x02), 1), (Some(0x04), 2), (Some(0x06), 3)] {
            let (_, got) = binding_response(&request(true, flags), from, &addrs(), &mut out).unwrap();
            assert_eq!(got, want, "flags {flags:?}");
        }
    }

    #[test]
    fn response_carries_mapped_and_xor_mapped_address() {
        let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40000);
        let mut out = [0u8; 128];
        let req = request(true, None);
        let (len, _) = binding_response(&req, from, &addrs(), &mut out).unwrap();
        let r = &out[..len];
        assert_eq!(&r[0..2], &[0x01, 0x01]);
        assert_eq!(usize::from(u16::from_be_bytes([r[2], r[3]])), len - 20);
        assert_eq!(&r[4..20], &req[4..20]);
        // MAPPED-ADDRESS
        assert_eq!(&r[20..24], &[0x00, 0x01, 0x00, 0x08]);
        assert_eq!(u16::from_be_bytes([r[26], r[27]]), 40000);
        assert_eq!(&r[28..32], &[203, 0, 113, 10]);
        // XOR-MAPPED-ADDRESS
        assert_eq!(&r[32..36], &[0x00, 0x20, 0x00, 0x08]);
        assert_eq!(u16::from_be_bytes([r[38], r[39]]) ^ 0x2112, 40000);
        assert_eq!(r[40] ^ 0x21, 203);
    }

    #[test]
    fn rfc3489_request_gets_rfc3489_attributes() {
        let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40000);
        let mut out = [0u8; 128];
        let (len, _) = binding_response(&request(false, None), from, &addrs(), &mut out).unwrap();
        let kinds: Vec<u16> = out[20..len].chunks(12).map(|a| u16::from_be_bytes([a[0], a[1]])).collect();
        assert_eq!(kinds, vec![0x0001, 0x0004, 0x0005]);
    }

    #[test]
    fn malformed_requests_are_ignored() {
        let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 1);
        let mut out = [0u8; 128];
        assert!(binding_response(&[0; 19], from, &addrs(), &mut out).is_none());
        let mut r = request(true, Some(0x06));
        r[3] += 4; // claims more than it carries
        assert!(binding_response(&r, from, &addrs(), &mut out).is_none());
        let mut r = request(true, Some(0x06));
        r[22..24].copy_from_slice(&[0x00, 0x40]); // attribute longer than the message
        assert!(binding_response(&r, from, &addrs(), &mut out).is_none());
        let mut r = request(true, None);
        r[1] = 0x11; // a Binding indication, not a request
        assert!(binding_response(&r, from, &addrs(), &mut out).is_none());
    }

    #[test]
    fn config_mentions_tables_stun_and_lan() {
        let cfg =
            PortMapConfig::new("r", "pub", Ipv4Addr::new(203, 0, 113, 10), "lan", Ipv4Addr::new(192, 168, 1, 1), 24);
        cfg.validate().unwrap();
        let conf = cfg.miniupnpd_conf(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 478), Path::new("/tmp/x"), "u");
        for want in [
            "ext_ifname=pub\n",
            "listening_ip=lan\n",
            "ext_stun_host=203.0.113.10\n",
            "ext_stun_port=478\n",
            "upnp_table_name=upnp_filter\n",
            "upnp_nat_table_name=upnp_nat\n",
            "allow 1024-65535 192.168.1.0/24 1024-65535\n",
        ] {
            assert!(conf.contains(want), "missing {want:?} in\n{conf}");
        }
        let mut bad = cfg.clone();
        bad.lan_if = "pub".into();
        assert!(bad.validate().is_err());
        let mut bad = cfg;
        bad.wan_if = "a b".into();
        assert!(bad.validate().is_err());
    }
}

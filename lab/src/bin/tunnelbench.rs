//! `tunnelbench`: TCP throughput, CPU per gigabyte and latency under load of punchd's WireGuard tunnel against
//! Debian's wireguard-go and against the bare path, on one lab path in one run (docs/performance.md, "Tunnel
//! throughput"). A benchmark, not a test: it prints numbers and checks nothing but that each tunnel carries
//! traffic. Run it through `scripts/bench-tunnel.sh` (root).
//!
//! One lab: the server (stund, for punchd's rendezvous) and two public hosts `left` (203.0.113.20) and `right`
//! (203.0.113.21) on the internet bridge: one veth–bridge–veth path, no NAT. Per round and tunnel, in turn:
//! - raw: no tunnel, the hosts' own addresses;
//! - wireguard-go: one daemon per host (lab/src/wireguard.rs), static endpoints, tunnel addresses
//!   100.64.1.1 and 100.64.1.2, MTU `--mtu`;
//! - punchd: stund's rendezvous on the server, one punchd per host with the other as its peer, the same tunnel
//!   addresses as the wireguard-go pair (`--tun-ip 100.64.1.1/10`, `--peer right=PUBKEY,ip=100.64.1.2`), `--mtu`;
//!   right waits, left connects. Skipped with "punchd: tunnel not available in this build" when `punchd --help` has no
//!   `--tun-ip`.
//!
//! and for each: 100 pings idle (10 ms apart), then iperf3 TCP left → right for `--duration` while left pings
//! right every `--ping-interval-ms`; CPU time of the tunnel's daemons from /proc/PID/stat before and after.
//! The binaries are run, not linked: the lab stays independent of the library it measures.

use std::any::Any;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use holepunch_lab::cputime::cpu_seconds;
use holepunch_lab::iperf::{self, ClientOpts, IperfResult};
use holepunch_lab::peers::{self, network_secret, Scratch};
use holepunch_lab::ping::{self, PingStats};
use holepunch_lab::wireguard::{self, WgConfig, WgPeer, WireguardGo};
use holepunch_lab::{Lab, Node, Process, SERVER_IPS};

#[derive(Parser, Debug)]
#[command(about = "Tunnel throughput: punchd's WireGuard tunnel against wireguard-go and the bare path, in the lab")]
struct Args {
    /// Where punchd and stund are built.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds (each measures every tunnel once, in turn); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MTU of both tunnels.
    #[arg(long, default_value_t = wireguard::DEFAULT_MTU)]
    mtu: u32,
    /// Parallel TCP streams (iperf3 -P).
    #[arg(long, default_value_t = 1)]
    streams: u32,
    /// Milliseconds between pings during the load.
    #[arg(long, default_value_t = 10)]
    ping_interval_ms: u64,
    /// Which to measure, comma-separated: raw, wireguard-go, punchd.
    #[arg(long, default_value = "raw,wireguard-go,punchd")]
    only: String,
}

/// The three kinds of path measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Raw,
    WireguardGo,
    Punchd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw path",
            Kind::WireguardGo => "wireguard-go",
            Kind::Punchd => "punchd",
        }
    }
    fn parse(s: &str) -> Result<Kind> {
        match s.trim() {
            "raw" => Ok(Kind::Raw),
            "wireguard-go" | "wg" => Ok(Kind::WireguardGo),
            "punchd" => Ok(Kind::Punchd),
            other => bail!("unknown tunnel `{other}` (raw, wireguard-go, punchd)"),
        }
    }
}

/// The tunnel addresses of both tunnels, and wireguard-go's port.
const WG_LEFT: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 1);
const WG_RIGHT: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
const WG_PORT: u16 = 51820;
const IPERF_PORT: u16 = 5201;
/// Longest wait for a tunnel to carry its first ping (handshake included).
const REACH_LIMIT: Duration = Duration::from_secs(15);
/// Longest wait for the punchd peers to register and open their path.
const PUNCHD_LIMIT: Duration = Duration::from_secs(30);
/// Pings of the idle latency figure, 10 ms apart.
const IDLE_PINGS: u32 = 100;

/// A tunnel set up for one measurement: where to send, whose CPU to count, what to keep alive until done.
struct Setup {
    /// Right's address as left reaches it through this tunnel.
    dst: Ipv4Addr,
    /// Left's address in the same tunnel (for the reverse ping check).
    src: Ipv4Addr,
    /// Processes whose CPU time is the tunnel's.
    pids: Vec<u32>,
    /// MTU of the tunnel interface, when there is one.
    mtu: Option<u32>,
    /// Daemons and files, in drop order.
    _keep: Vec<Box<dyn Any>>,
}

/// The figures of one measurement.
#[derive(Clone, Debug)]
struct Sample {
    iperf: IperfResult,
    tunnel_cpu: f64,
    idle: PingStats,
    loaded: PingStats,
}

impl Sample {
    fn gb(&self) -> f64 {
        self.iperf.bytes as f64 / 1e9
    }
    fn tunnel_cpu_per_gb(&self) -> f64 {
        self.tunnel_cpu / self.gb()
    }
    fn iperf_cpu_per_gb(&self) -> f64 {
        self.iperf.cpu_seconds() / self.gb()
    }
}

/// Why a tunnel has no row.
enum Outcome {
    Measured(Vec<Sample>),
    Unavailable(String),
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    holepunch_lab::check_available()?;
    let kinds: Vec<Kind> = args.only.split(',').map(Kind::parse).collect::<Result<_>>()?;
    let punchd = args.bin_dir.join("punchd");
    let stund = args.bin_dir.join("stund");
    // Whether each tunnel can run here, decided once, before any lab exists.
    let mut outcomes: Vec<(Kind, Outcome)> = Vec::new();
    for &k in &kinds {
        let why = match k {
            Kind::Raw => None,
            Kind::WireguardGo => wireguard::check_available().err().map(|e| e.to_string()),
            Kind::Punchd => punchd_unavailable(&punchd, &stund),
        };
        let o = match why {
            Some(w) => Outcome::Unavailable(w),
            None => Outcome::Measured(Vec::new()),
        };
        outcomes.push((k, o));
    }
    for (k, o) in &outcomes {
        if let Outcome::Unavailable(why) = o {
            println!("{}: {why}", k.name());
        }
    }

    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "tunnelbench: {} round(s) x {} s iperf3 TCP left -> right ({} stream(s)), ping every {} ms during it; MTU {}; \
         load average before: {}",
        args.rounds,
        args.duration,
        args.streams,
        args.ping_interval_ms,
        args.mtu,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let scratch = Scratch::new("tunnelbench")?;
    let lab = Lab::builder().name("tbench").server().public_host("left").public_host("right").build()?;
    for round in 1..=args.rounds {
        for (kind, outcome) in outcomes.iter_mut() {
            let Outcome::Measured(samples) = outcome else { continue };
            let setup = match kind {
                Kind::Raw => raw(&lab),
                Kind::WireguardGo => wireguard_go(&lab, &scratch, args.mtu, round),
                Kind::Punchd => punchd_pair(&lab, &punchd, &stund, args.mtu, round),
            }
            .with_context(|| format!("setting up {}", kind.name()))?;
            let s = measure(&lab, &setup, &args).with_context(|| format!("measuring {}", kind.name()))?;
            println!("   round {round} {:<13} {}", kind.name(), line(&s, setup.mtu));
            samples.push(s);
            drop(setup);
        }
    }
    drop(lab);
    report(&outcomes, &args);
    Ok(())
}

/// Why punchd's tunnel cannot be measured with the binaries in `--bin-dir`, if it cannot.
fn punchd_unavailable(punchd: &Path, stund: &Path) -> Option<String> {
    for b in [punchd, stund] {
        if !b.exists() {
            return Some(format!("{} is not built", b.display()));
        }
    }
    let help = Command::new(punchd).arg("--help").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    match help {
        Ok(h) if h.contains("--tun-ip") => None,
        Ok(_) => Some("tunnel not available in this build".into()),
        Err(e) => Some(format!("cannot run {}: {e}", punchd.display())),
    }
}

fn raw(lab: &Lab) -> Result<Setup> {
    let (left, right) = (lab.host("left"), lab.host("right"));
    Ok(Setup { dst: right.ip(), src: left.ip(), pids: Vec::new(), mtu: None, _keep: Vec::new() })
}

fn wireguard_go(lab: &Lab, scratch: &Scratch, mtu: u32, round: usize) -> Result<Setup> {
    let (left, right) = (lab.host("left"), lab.host("right"));
    let lk = wireguard::genkey(&scratch.path(&format!("wg-left-{round}.key")))?;
    let rk = wireguard::genkey(&scratch.path(&format!("wg-right-{round}.key")))?;
    let (lp, rp) = (wireguard::pubkey(&lk)?, wireguard::pubkey(&rk)?);
    let ep = |n: &Node| SocketAddr::new(n.ip().into(), WG_PORT);
    // Right first and without keepalive: nothing is sent before both have their keys.
    let r = WireguardGo::start(
        right,
        &WgConfig::new(&rk, WG_PORT, &format!("{WG_RIGHT}/10"))
            .mtu(mtu)
            .peer(WgPeer::new(&lp, WG_LEFT).endpoint(ep(left))),
    )?;
    let l = WireguardGo::start(
        left,
        &WgConfig::new(&lk, WG_PORT, &format!("{WG_LEFT}/10"))
            .mtu(mtu)
            .peer(WgPeer::new(&rp, WG_RIGHT).endpoint(ep(right)).keepalive(25)),
    )?;
    let pids = [l.pid(), r.pid()].into_iter().flatten().collect();
    let ifmtu = link_mtu(left, l.ifname());
    Ok(Setup { dst: WG_RIGHT, src: WG_LEFT, pids, mtu: ifmtu, _keep: vec![Box::new(l), Box::new(r)] })
}

/// Two punchd peers with their tunnels on, introduced by stund's rendezvous on the lab's server.
fn punchd_pair(lab: &Lab, punchd: &Path, stund: &Path, mtu: u32, round: usize) -> Result<Setup> {
    let (left, right) = (lab.host("left"), lab.host("right"));
    let dir = Scratch::new(&format!("tunnelbench-punchd-{round}"))?;
    let secret = network_secret(&dir.path("net.secret"))?;
    let keys = [peers::genkey(punchd, &dir.path("left.key"))?, peers::genkey(punchd, &dir.path("right.key"))?];
    let publics = [peers::pubkey(punchd, &keys[0])?, peers::pubkey(punchd, &keys[1])?];
    let (primary, alternate) = SERVER_IPS;
    let log = dir.path("stund.log");
    let mut cmd = lab.server().command(stund);
    cmd.args(["--primary", &primary.to_string(), "--alternate", &alternate.to_string(), "--secret-file"])
        .arg(&secret)
        .args(["--no-tcp", "--log-level", "info"])
        .stderr(File::create(&log)?);
    let stund_p = lab.server().spawn_command(cmd)?;
    holepunch_lab::cmd::wait_for_log(&log, "ready", Duration::from_secs(10))
        .map_err(|e| anyhow!(e))
        .context("stund did not start")?;
    let server = format!("{primary}:3478");
    let names = ["left", "right"];
    // The same tunnel addresses as the wireguard-go pair, configured on both sides (docs/tunnel.md, "Addresses").
    let tun = [WG_LEFT, WG_RIGHT];
    let start = |me: usize, node: &Node, connect: bool| -> Result<Process> {
        let other = 1 - me;
        let mut cmd = node.command(punchd);
        cmd.env("RUST_LOG", "info")
            .args(["--peer-id", names[me], "--server", &server, "--secret-file"])
            .arg(&secret)
            .arg("--key")
            .arg(&keys[me])
            .args(["--peer", &format!("{}={},ip={}", names[other], publics[other], tun[other])])
            .args(["--tun-ip", &format!("{}/10", tun[me]), "--mtu", &mtu.to_string()])
            .arg("--control")
            .arg(dir.path(&format!("{}.sock", names[me])))
            .args(["--rto", "200ms", "--retries", "3"])
            .stderr(File::create(dir.path(&format!("{}.log", names[me])))?);
        if connect {
            cmd.args(["--connect", names[other]]);
        }
        Ok(node.spawn_command(cmd)?)
    };
    let mut r = start(1, right, false)?;
    r.wait_for_line(PUNCHD_LIMIT, |l| l.starts_with("registered with the server")).with_context(|| {
        format!("right did not register; its log:\n{}", holepunch_lab::cmd::tail(&dir.path("right.log")))
    })?;
    let mut l = start(0, left, true)?;
    l.wait_for_line(PUNCHD_LIMIT, |l| l.starts_with("path to right opened")).with_context(|| {
        format!("left opened no path; its log:\n{}", holepunch_lab::cmd::tail(&dir.path("left.log")))
    })?;
    // punchd's default device name (docs/tunnel.md, "Flags and config"); each peer is in its own namespace.
    let ifmtu = link_mtu(left, "punchd0");
    let pids = vec![l.id(), r.id()];
    let keep: Vec<Box<dyn Any>> = vec![Box::new(l), Box::new(r), Box::new(stund_p), Box::new(dir)];
    Ok(Setup { dst: WG_RIGHT, src: WG_LEFT, pids, mtu: ifmtu, _keep: keep })
}

fn link_mtu(node: &Node, ifname: &str) -> Option<u32> {
    let out = node.run(&["ip", "-o", "link", "show", "dev", ifname]).ok()?;
    let w: Vec<&str> = out.split_whitespace().collect();
    w.iter().position(|x| *x == "mtu").and_then(|i| w.get(i + 1)).and_then(|m| m.parse().ok())
}

/// One measurement over a set-up tunnel.
fn measure(lab: &Lab, setup: &Setup, args: &Args) -> Result<Sample> {
    let (left, right) = (lab.host("left"), lab.host("right"));
    ping::wait_reachable(left, setup.dst, REACH_LIMIT).context("left cannot reach right")?;
    ping::wait_reachable(right, setup.src, REACH_LIMIT).context("right cannot reach left")?;
    let idle = ping::run(left, setup.dst, IDLE_PINGS, Duration::from_millis(10))?;

    let interval = Duration::from_millis(args.ping_interval_ms.max(1));
    let duration = Duration::from_secs(args.duration.max(1));
    let count = (duration.as_millis() / interval.as_millis()).max(1) as u32;
    let _server = iperf::server(right, setup.dst, IPERF_PORT)?;
    let cpu = |pids: &[u32]| -> Result<f64> { pids.iter().map(|&p| Ok(cpu_seconds(p)?)).sum() };
    let before = cpu(&setup.pids)?;
    let pinger = ping::spawn(left, setup.dst, count, interval)?;
    let opts = ClientOpts { duration, streams: args.streams, reverse: false };
    let result = iperf::client(left, setup.dst, IPERF_PORT, opts);
    let after = cpu(&setup.pids)?;
    let loaded = pinger.finish();
    let iperf = result?;
    if iperf.bytes == 0 {
        bail!("iperf3 moved no bytes");
    }
    Ok(Sample { iperf, tunnel_cpu: after - before, idle, loaded })
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn line(s: &Sample, mtu: Option<u32>) -> String {
    format!(
        "{:.2} Gbit/s, {:.2} GB, tunnel CPU {:.2} s ({:.2} s/GB), iperf3 CPU {:.2} s/GB, retransmits {}, ping idle \
         p50 {} ms, under load p50 {} p99 {} ms ({}/{} answered){}",
        s.iperf.bits_per_second / 1e9,
        s.gb(),
        s.tunnel_cpu,
        s.tunnel_cpu_per_gb(),
        s.iperf_cpu_per_gb(),
        s.iperf.retransmits,
        ms(s.idle.p50()),
        ms(s.loaded.p50()),
        ms(s.loaded.p99()),
        s.loaded.received,
        s.loaded.sent,
        mtu.map(|m| format!(", interface MTU {m}")).unwrap_or_default()
    )
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Medians over the rounds of one tunnel: Gbit/s, tunnel CPU s/GB, iperf3 CPU s/GB, idle p50, loaded p50,
/// loaded p99, loaded loss %.
struct Row {
    gbps: f64,
    tunnel_cpu: f64,
    iperf_cpu: f64,
    idle_p50: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    loss: f64,
}

fn row(samples: &[Sample]) -> Option<Row> {
    let m = |f: &dyn Fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(f).collect());
    Some(Row {
        gbps: m(&|s| Some(s.iperf.bits_per_second / 1e9))?,
        tunnel_cpu: m(&|s| Some(s.tunnel_cpu_per_gb()))?,
        iperf_cpu: m(&|s| Some(s.iperf_cpu_per_gb()))?,
        idle_p50: m(&|s| s.idle.p50()),
        p50: m(&|s| s.loaded.p50()),
        p99: m(&|s| s.loaded.p99()),
        loss: m(&|s| Some(s.loaded.loss_percent())).unwrap_or(0.0),
    })
}

/// The markdown table of docs/performance.md and the punchd / wireguard-go ratios.
fn report(outcomes: &[(Kind, Outcome)], args: &Args) {
    println!(
        "\n(medians over {} round(s); CPU s/GB: CPU seconds per gigabyte received; tunnel = the tunnel daemons of \
         both hosts, iperf3 = client + server as iperf3 reports them)",
        args.rounds
    );
    println!(
        "\n| path | TCP Gbit/s | tunnel CPU s/GB | iperf3 CPU s/GB | total CPU s/GB | ping p50 idle (ms) | ping p50 \
         under load (ms) | ping p99 under load (ms) | ping loss under load |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (k, o) in outcomes {
        match o {
            Outcome::Measured(s) => match row(s) {
                Some(r) => {
                    println!(
                        "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.1} % |",
                        k.name(),
                        r.gbps,
                        r.tunnel_cpu,
                        r.iperf_cpu,
                        r.tunnel_cpu + r.iperf_cpu,
                        ms(r.idle_p50),
                        ms(r.p50),
                        ms(r.p99),
                        r.loss
                    );
                    rows.push((*k, r));
                }
                None => println!("| {} | no samples | | | | | | | |", k.name()),
            },
            Outcome::Unavailable(why) => println!("| {} | pending: {why} | | | | | | | |", k.name()),
        }
    }
    let get = |k: Kind| rows.iter().find(|(x, _)| *x == k).map(|(_, r)| r);
    match (get(Kind::Punchd), get(Kind::WireguardGo)) {
        (Some(p), Some(w)) => {
            let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "-".into() };
            let oratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => "-".into(),
            };
            println!(
                "\npunchd / wireguard-go: throughput {}x, tunnel CPU per GB {}x, total CPU per GB {}x, ping p50 under \
                 load {}x, p99 {}x",
                ratio(p.gbps, w.gbps),
                ratio(p.tunnel_cpu, w.tunnel_cpu),
                ratio(p.tunnel_cpu + p.iperf_cpu, w.tunnel_cpu + w.iperf_cpu),
                oratio(p.p50, w.p50),
                oratio(p.p99, w.p99)
            );
        }
        _ => println!("\npunchd / wireguard-go: pending (both rows are needed)"),
    }
    if let (Some(w), Some(r)) = (get(Kind::WireguardGo), get(Kind::Raw)) {
        println!("wireguard-go / raw path: throughput {:.2}x", w.gbps / r.gbps);
    }
    if let (Some(p), Some(r)) = (get(Kind::Punchd), get(Kind::Raw)) {
        println!("punchd / raw path: throughput {:.2}x", p.gbps / r.gbps);
    }
}

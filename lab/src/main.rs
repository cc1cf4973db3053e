//! `holepunch-lab`: build and use the NAT lab from a shell, run the demo, and the independent UDP
//! probe the lab's self-tests use. See docs/lab.md.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod punch_demo;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use holepunch_lab::{check, probe, sweep_prefix, sweep_stale, Lab, Preset, SiteSpec, SERVER_IPS};

#[derive(Parser)]
#[command(name = "holepunch-lab", about = "NAT lab in network namespaces (run as root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a lab: the server plus one site per preset (sites a, b, c, …).
    Up {
        /// Presets by number or name (1-8, full-cone, …); append `+portmap` for a port-mapping
        /// service. Default: all of 1-8.
        presets: Vec<String>,
        /// Lab name; other commands find it by this name.
        #[arg(long, default_value = "demo")]
        name: String,
        /// Loss on every site's access link, percent each way.
        #[arg(long, default_value_t = 0)]
        loss: u8,
        /// One-way delay on every site's access link, milliseconds (needs --hold: the delay line
        /// runs in this process).
        #[arg(long)]
        delay_ms: Option<u64>,
        /// Jitter ± milliseconds on top of --delay-ms.
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Stay in the foreground and remove the lab on Ctrl-C (otherwise it stays until `down`).
        #[arg(long)]
        hold: bool,
        /// Use an automatic per-process name (hl<pid>-<n>) instead of --name; with --hold only.
        /// For tests of the stale-lab sweeper.
        #[arg(long, hide = true, requires = "hold")]
        unnamed: bool,
    },
    /// Run a command inside a node of a lab (`exec a1 -- ping 203.0.113.10`).
    Exec {
        #[arg(long, default_value = "demo")]
        name: String,
        /// Node: server, net, a1, a-nat, b-isp, …
        node: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Remove a named lab.
    Down {
        #[arg(long, default_value = "demo")]
        name: String,
    },
    /// Remove leftovers: labs whose process died (default), or everything with a prefix.
    Sweep {
        /// Remove every namespace `<prefix>-*` instead (e.g. `hl-demo`).
        #[arg(long)]
        prefix: Option<String>,
    },
    /// List lab namespaces on this machine.
    List,
    /// Build every preset, run stund and stunclient through them, print a report; then two pairs of punchd
    /// peers behind different NATs punch (or say "needs relay"); clean up.
    Demo {
        /// Where stund and stunclient are (default: next to this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Seconds to wait for each stunclient.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// The independent UDP probe (used inside lab namespaces).
    #[command(subcommand)]
    Probe(ProbeCmd),
}

#[derive(Subcommand)]
enum ProbeCmd {
    /// Answer probe requests on these sockets; prints `ready` once bound.
    Serve {
        #[arg(long, required = true)]
        bind: Vec<SocketAddr>,
        #[arg(long, default_value_t = 600)]
        secs: u64,
    },
    /// From one socket, send queries `DEST` or `DEST@REPLYFROM`; prints per query
    /// `ok mapped=<addr> from=<addr>` or `timeout`.
    Query {
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        #[arg(long = "q", required = true)]
        queries: Vec<String>,
        #[arg(long, default_value_t = 600)]
        timeout_ms: u64,
    },
    /// Print every datagram received (`got <from> <word>`) and answer queries; with --hello first
    /// query that responder and print `mapped <addr>`.
    Listen {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        hello: Option<SocketAddr>,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Send N unsolicited datagrams.
    Send {
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// Send N counted datagrams to a responder; prints `sent N counted M`.
    Count {
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        n: u32,
    },
    /// N sequential queries; prints `rtt_us` followed by each round-trip time in microseconds.
    Rtt {
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 20)]
        n: u32,
    },
    /// Ask a NAT-PMP gateway for a UDP mapping; prints `natpmp external=<port> lifetime=<s>`.
    Natpmp {
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        #[arg(long)]
        gateway: SocketAddr,
        #[arg(long)]
        internal: u16,
        #[arg(long)]
        external: u16,
        #[arg(long, default_value_t = 3600)]
        lifetime: u32,
    },
    /// Ask a responder for N datagrams; prints `requested N received M`.
    Burst {
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        n: u32,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM only set a flag, so the lab is dropped (and removed) on the normal path.
fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("holepunch-lab: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Up { presets, name, loss, delay_ms, jitter_ms, hold, unnamed } => {
            holepunch_lab::check_available()?;
            if delay_ms.is_some() && !hold {
                bail!("--delay-ms needs --hold (the delay line runs inside this process)");
            }
            if presets.iter().any(|p| p.ends_with("+portmap")) && !hold {
                bail!("+portmap needs --hold (miniupnpd ends with the process that started it)");
            }
            let presets = if presets.is_empty() { (1..=8).map(|n| n.to_string()).collect() } else { presets };
            let mut b = Lab::builder().server();
            if !unnamed {
                b = b.name(&name);
            }
            for (i, p) in presets.iter().enumerate() {
                let mut spec = parse_site(p)?.loss(loss);
                if let Some(d) = delay_ms {
                    spec = spec.delay(Duration::from_millis(d), Duration::from_millis(jitter_ms));
                }
                b = b.site(&site_name(i), spec);
            }
            // Caught before building, so Ctrl-C during the build still removes what was built.
            catch_signals();
            let lab = b.build()?;
            if STOP.load(Ordering::SeqCst) {
                drop(lab);
                bail!("interrupted; the lab was removed");
            }
            println!("lab {} is up:\n{}", lab.prefix(), lab.describe());
            if hold {
                println!("holding; Ctrl-C removes it");
                while !STOP.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                drop(lab);
                println!("removed");
            } else {
                let prefix = lab.persist();
                println!("remove it with: holepunch-lab down --name {name}   (namespaces {prefix}-*)");
            }
            Ok(())
        }
        Cmd::Exec { name, node, cmd } => {
            let ns = format!("{}-{node}", holepunch_lab::named_prefix(&name));
            if !holepunch_lab::list_namespaces()?.contains(&ns) {
                bail!("no node {node} in lab {name} (namespace {ns} does not exist)");
            }
            use std::os::unix::process::CommandExt;
            let err = Command::new("ip").args(["netns", "exec", &ns]).args(&cmd).exec();
            Err(anyhow!("cannot run ip netns exec: {err}"))
        }
        Cmd::Down { name } => {
            let removed = sweep_prefix(&holepunch_lab::named_prefix(&name))?;
            println!("removed {} namespaces of lab {name}", removed.len());
            Ok(())
        }
        Cmd::Sweep { prefix } => {
            let removed = match prefix {
                Some(p) => sweep_prefix(&p)?,
                None => sweep_stale()?,
            };
            for ns in &removed {
                println!("removed {ns}");
            }
            println!("{} namespaces removed", removed.len());
            Ok(())
        }
        Cmd::List => {
            for ns in holepunch_lab::list_namespaces()? {
                if ns.starts_with("hl") {
                    println!("{ns}");
                }
            }
            Ok(())
        }
        Cmd::Demo { bin_dir, timeout } => demo(bin_dir, Duration::from_secs(timeout)),
        Cmd::Probe(p) => run_probe(p),
    }
}

fn site_name(i: usize) -> String {
    let letters = b"abcdefghijklmnop";
    (letters[i % letters.len()] as char).to_string()
}

/// `3`, `full-cone`, `3+portmap`.
fn parse_site(s: &str) -> Result<SiteSpec> {
    let (p, portmap) = match s.strip_suffix("+portmap") {
        Some(p) => (p, true),
        None => (s, false),
    };
    let spec = SiteSpec::new(p.parse::<Preset>()?);
    Ok(if portmap { spec.port_mapping() } else { spec })
}

fn run_probe(p: ProbeCmd) -> Result<()> {
    match p {
        ProbeCmd::Serve { bind, secs } => {
            catch_signals();
            // Bind check first so `ready` means ready.
            let stop = &STOP;
            std::thread::scope(|s| {
                let h = s.spawn(|| probe::serve(&bind, Some(Duration::from_secs(secs)), stop));
                std::thread::sleep(Duration::from_millis(20));
                if !h.is_finished() {
                    println!("ready");
                }
                h.join().map_err(|_| anyhow!("responder panicked"))?.context("probe serve")
            })
        }
        ProbeCmd::Query { bind, queries, timeout_ms } => {
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            for q in queries {
                let (to, reply_from) = match q.split_once('@') {
                    Some((a, b)) => (a.parse()?, Some(b.parse()?)),
                    None => (q.parse()?, None),
                };
                match probe::query(&sock, to, reply_from, Duration::from_millis(timeout_ms))? {
                    Some(r) => println!("ok mapped={} from={}", r.mapped, r.from),
                    None => println!("timeout"),
                }
            }
            Ok(())
        }
        ProbeCmd::Listen { bind, hello, secs } => {
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            probe::listen(&sock, hello, Duration::from_secs(secs), &mut std::io::stdout())?;
            Ok(())
        }
        ProbeCmd::Send { bind, to, count } => {
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            probe::send(&sock, to, count)?;
            Ok(())
        }
        ProbeCmd::Count { bind, to, n } => {
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            match probe::count(&sock, to, n)? {
                Some(c) => println!("sent {n} counted {c}"),
                None => bail!("the responder at {to} never reported its count"),
            }
            Ok(())
        }
        ProbeCmd::Rtt { bind, to, n } => {
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            let rtts: Vec<String> = probe::rtt(&sock, to, n)?.iter().map(|d| d.as_micros().to_string()).collect();
            println!("rtt_us {}", rtts.join(" "));
            Ok(())
        }
        ProbeCmd::Natpmp { bind, gateway, internal, external, lifetime } => {
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            match probe::natpmp_map_udp(&sock, gateway, internal, external, lifetime)? {
                Some((ext, life)) => println!("natpmp external={ext} lifetime={life}"),
                None => bail!("no NAT-PMP answer from {gateway}"),
            }
            Ok(())
        }
        ProbeCmd::Burst { bind, to, n } => {
            let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
            println!("requested {n} received {}", probe::burst(&sock, to, n)?);
            Ok(())
        }
    }
}

/// One row of the demo report.
struct Row {
    site: String,
    preset: Preset,
    portmap: bool,
    expected: String,
    probe: String,
    stunclient: String,
}

fn fmt_behaviour(translated: bool, m: holepunch_lab::Mapping, f: holepunch_lab::Filtering) -> String {
    use holepunch_lab::{Filtering as F, Mapping as M};
    let m = match m {
        _ if !translated => "no NAT",
        M::EndpointIndependent => "EIM",
        M::AddressDependent => "ADM",
        M::AddressAndPortDependent => "APDM",
        M::EndpointDependent => "EDM",
        M::Unknown => "?M",
    };
    let f = match f {
        F::EndpointIndependent => "EIF",
        F::AddressDependent => "ADF",
        F::AddressAndPortDependent => "APDF",
        F::Unknown => "?F",
    };
    format!("{m}/{f}")
}

fn demo(bin_dir: Option<PathBuf>, timeout: Duration) -> Result<()> {
    holepunch_lab::check_available()?;
    catch_signals();
    let me = std::env::current_exe().context("locating holepunch-lab")?;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => me.parent().map(Path::to_path_buf).ok_or_else(|| anyhow!("no directory for {}", me.display()))?,
    };
    // Every preset once; hairpin off needs no site of its own: no other preset's router hairpins.
    let presets: Vec<Preset> = Preset::ALL.into_iter().filter(|p| *p != Preset::NoHairpin).collect();
    println!("== building the lab: server {} + {} and a site per NAT preset", SERVER_IPS.0, SERVER_IPS.1);
    let mut b = Lab::builder().name("demo").server();
    for (i, p) in presets.iter().enumerate() {
        b = b.site(&site_name(i), *p);
    }
    // Preset 9: a port-restricted router with miniupnpd (NAT-PMP, PCP, UPnP IGD), if installed.
    let portmap = Path::new("/usr/sbin/miniupnpd").exists();
    if portmap {
        b = b.site(&site_name(presets.len()), SiteSpec::new(Preset::PortRestricted).port_mapping());
    } else {
        println!("   (miniupnpd not installed: no port-mapping site; apt-get install miniupnpd-nftables)");
    }
    let started = Instant::now();
    let lab = b.build()?;
    println!("   built in {} ms", started.elapsed().as_millis());
    print!("{}", lab.describe());
    let interrupted = || STOP.load(Ordering::SeqCst);

    println!("== checking every preset with the lab's own UDP probe (independent of holepunch)");
    let _responder = check::start_responder(&lab, &me)?;
    let mut rows = Vec::new();
    for (i, site) in lab.sites().iter().enumerate() {
        if interrupted() {
            bail!("interrupted");
        }
        let b = site.behaviour();
        let probe = match check::observe(&lab, &me, &site.hosts()[0], 41000 + 2 * i as u16) {
            Ok(o) => {
                let mut s = fmt_behaviour(o.translated, o.mapping, o.filtering);
                s.push_str(if o.port_preserved { ", port kept" } else { ", port changed" });
                s
            }
            Err(e) => format!("error: {e}"),
        };
        rows.push(Row {
            site: site.name().to_owned(),
            preset: site.preset(),
            portmap: site.natpmp_addr().is_some(),
            expected: fmt_behaviour(b.translated, b.mapping, b.filtering),
            probe,
            stunclient: String::new(),
        });
    }

    let stund = bin_dir.join("stund");
    let stunclient = bin_dir.join("stunclient");
    let mut _stund_proc = None;
    if !stund.exists() {
        println!(
            "== stund: {} is not built (cargo build --release -p stund): skipping the STUN steps",
            stund.display()
        );
    } else {
        println!(
            "== starting stund on the server: {} --primary {} --alternate {}",
            stund.display(),
            SERVER_IPS.0,
            SERVER_IPS.1
        );
        let mut cmd = lab.server().command(&stund);
        cmd.env("RUST_LOG", "warn").args([
            "--primary",
            &SERVER_IPS.0.to_string(),
            "--alternate",
            &SERVER_IPS.1.to_string(),
        ]);
        let mut p = lab.server().spawn_command(cmd)?;
        std::thread::sleep(Duration::from_millis(500));
        if p.is_running() {
            _stund_proc = Some(p);
        } else {
            println!("   stund exited at once: skipping the STUN steps");
        }
    }
    if _stund_proc.is_some() {
        if !stunclient.exists() {
            println!(
                "== stunclient: {} is not built (cargo build --release -p stunclient): skipping",
                stunclient.display()
            );
        } else {
            println!(
                "== running stunclient --server {}:3478 --json --timeout 200ms --retries 3 behind every NAT (in parallel)",
                SERVER_IPS.0
            );
            let mut procs = Vec::new();
            for site in lab.sites() {
                let node = lab.node(&site.hosts()[0])?;
                let mut cmd = node.command(&stunclient);
                // Short retransmissions: the lab has no loss, and a filtered test then costs ~4 s, not ~40.
                cmd.args([
                    "--server",
                    &format!("{}:3478", SERVER_IPS.0),
                    "--json",
                    "--timeout",
                    "200ms",
                    "--retries",
                    "3",
                ]);
                procs.push(node.spawn_command(cmd)?);
            }
            let deadline = Instant::now() + timeout;
            for (row, p) in rows.iter_mut().zip(procs.iter_mut()) {
                while p.is_running() && Instant::now() < deadline && !interrupted() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                row.stunclient = if p.is_running() {
                    "no answer in time".into()
                } else {
                    summarize_stunclient(&p.lines_until_eof(Duration::from_secs(2)).join("\n"))
                };
            }
        }
    }
    if interrupted() {
        bail!("interrupted");
    }

    println!("\n== report");
    println!("{:<5} {:<26} {:<11} {:<24} stunclient", "site", "preset", "expected", "lab probe");
    for r in &rows {
        let preset = match r.portmap {
            true => format!("9 {}+portmap", r.preset),
            false => format!("{} {}", r.preset.number(), r.preset),
        };
        // Flag a verdict that is not the preset's (the lab probe checks the lab, stunclient itself).
        let mark = |got: &str| if got.is_empty() || got.starts_with(&format!("{},", r.expected)) { "" } else { " (!)" };
        let probe = format!("{}{}", r.probe, mark(&r.probe));
        let sc =
            if r.stunclient.is_empty() { "-".to_owned() } else { format!("{}{}", r.stunclient, mark(&r.stunclient)) };
        println!("{:<5} {:<26} {:<11} {:<24} {}", r.site, preset, r.expected, probe, sc);
    }
    println!("(!) marks a verdict that differs from the preset's expected behaviour.");
    // The punching half builds its own sites (two per pair) under the same lab name.
    drop(lab);
    punch_demo::run(&bin_dir, &interrupted)?;
    println!("\nlab removed");
    Ok(())
}

/// The short form of stunclient's `--json` report (schema in docs/stunclient.md) that the report compares with
/// the lab's expectation, then hairpinning, port mapping services and the plain-words verdict.
fn summarize_stunclient(out: &str) -> String {
    let Some(v) = out.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) else {
        let first = out.lines().next().unwrap_or("no output");
        return format!("unparsed: {first}");
    };
    let abbrev = |key: &str, suffix: &str| {
        let s = match v.get(key).and_then(|x| x.as_str()) {
            Some("endpoint-independent") => "EI",
            Some("address-dependent") => "AD",
            Some("address-and-port-dependent") => "APD",
            Some(other) => other,
            None => "?",
        };
        format!("{s}{suffix}")
    };
    let mut s = match v.get("nat").and_then(|x| x.as_bool()) {
        Some(false) => format!("no NAT/{}", abbrev("filtering", "F")),
        _ => format!("{}/{}", abbrev("mapping", "M"), abbrev("filtering", "F")),
    };
    match v.get("port_preserved").and_then(|x| x.as_bool()) {
        Some(true) => s.push_str(", port kept"),
        Some(false) => s.push_str(", port changed"),
        None => {}
    }
    match v.get("hairpin").and_then(|x| x.as_bool()) {
        Some(true) => s.push_str(", hairpin"),
        Some(false) => s.push_str(", no hairpin"),
        None => {}
    }
    let answered: Vec<&str> = ["natpmp", "pcp", "upnp"]
        .into_iter()
        .filter(|k| v.pointer(&format!("/portmap/{k}/answered")).and_then(|x| x.as_bool()) == Some(true))
        .collect();
    if !answered.is_empty() {
        s.push_str(&format!(", portmap: {}", answered.join("+")));
    }
    if let Some(verdict) = v.get("verdict").and_then(|x| x.as_str()) {
        s.push_str(&format!(" => {verdict}"));
    }
    s
}

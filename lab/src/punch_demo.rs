//! The demo's second half: hole punching. Two pairs of sites behind different NATs, stund with the rendezvous
//! (`--secret-file`, docs/signal.md) and the TURN relay (`--auth-secret-file`, docs/relay.md) on the lab's
//! server, one punchd peer per site (docs/punchd.md), and a report of what each pair got: prediction, path
//! (direct, or through the relay for the pair no punch can connect), remote endpoint, RTT and time from start;
//! then a ping through the WireGuard tunnel of each pair (docs/tunnel.md).
//!
//! Keys and the network secret are made the way a user makes them (`punchd genkey`, `punchd pubkey`, a
//! mode-0600 secret file) in a private scratch directory that is removed at the end. The binaries are run,
//! not linked: the lab stays independent of the library it checks.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use holepunch_lab::peers::{genkey, network_secret, pubkey, Scratch};
use holepunch_lab::{Lab, Preset, Process, SERVER_IPS};

/// One pair: the site that connects (its peer is the first name) and the site that waits.
struct PairSpec {
    connects: (&'static str, Preset),
    waits: (&'static str, Preset),
}

/// A pair the NATs let through, and one no direct path can cross (RFC 4787 §4.1: both mappings depend on
/// the destination, so neither side can learn the port the other will use).
const PAIRS: [PairSpec; 2] = [
    PairSpec { connects: ("alice", Preset::PortRestricted), waits: ("bob", Preset::AddressRestricted) },
    PairSpec { connects: ("carol", Preset::Symmetric), waits: ("dave", Preset::Symmetric) },
];

/// Longest wait for every pair to reach an outcome (a path, or "needs relay"): the start-up diagnosis is
/// bounded by 10 s in punchd, a symmetric pair gives up within a few seconds after that.
const OUTCOME_LIMIT: Duration = Duration::from_secs(30);

/// Longest wait for the waiting peers to diagnose their NAT (bounded by 10 s in punchd) and register.
const REGISTER_LIMIT: Duration = Duration::from_secs(15);

/// What one pair reached.
struct Outcome {
    prediction: String,
    path: String,
    remote: String,
    rtt: String,
    /// From starting the connecting peer.
    took: Option<Duration>,
    /// From its registration.
    punch: Option<Duration>,
    note: String,
}

/// A pair while it runs.
struct Running<'a> {
    spec: &'static PairSpec,
    waits: Process,
    start_connecting: Box<dyn Fn() -> Result<Process> + 'a>,
    connects: Option<Process>,
    started: Option<Instant>,
    registered: Option<Instant>,
    /// When the connecting peer said its path opened or it needs a relay (true).
    ended: Option<(Instant, bool)>,
    /// The connecting peer's lab host.
    host: String,
    outcome: Option<Outcome>,
}

/// Runs the punching half of the demo; `interrupted` says when Ctrl-C came.
pub fn run(bin_dir: &Path, interrupted: &dyn Fn() -> bool) -> Result<()> {
    let punchd = bin_dir.join("punchd");
    let stund = bin_dir.join("stund");
    if !punchd.exists() || !stund.exists() {
        println!("== punchd or stund is not built in {}: skipping the hole punching steps", bin_dir.display());
        return Ok(());
    }
    let scratch = Scratch::new("demo")?;
    println!("\n== hole punching: two pairs of sites, stund's rendezvous, one punchd per site");
    let mut b = Lab::builder().name("demo").server();
    let mut site = 'a';
    let mut sites = Vec::new();
    for p in &PAIRS {
        for (_, preset) in [p.connects, p.waits] {
            b = b.site(&site.to_string(), preset);
            sites.push(site);
            site = (site as u8 + 1) as char;
        }
    }
    let lab = b.build()?;
    for (p, s) in PAIRS.iter().zip(sites.chunks(2)) {
        println!(
            "   {} on site {} ({} {}), {} on site {} ({} {})",
            p.connects.0,
            s[0],
            p.connects.1.number(),
            p.connects.1,
            p.waits.0,
            s[1],
            p.waits.1.number(),
            p.waits.1
        );
    }

    println!(
        "== keys: punchd genkey > NAME.key; punchd pubkey < NAME.key   (in {}, mode 0700)",
        scratch.dir().display()
    );
    let mut keys = Vec::new();
    for p in &PAIRS {
        for (name, _) in [p.connects, p.waits] {
            let key = genkey(&punchd, &scratch.path(&format!("{name}.key")))?;
            let public = pubkey(&punchd, &key)?;
            println!("   {name:<6} {public}");
            keys.push((name, key, public));
        }
    }
    let public_of = |name: &str| keys.iter().find(|k| k.0 == name).map(|k| k.2.clone()).unwrap_or_default();
    let key_of = |name: &str| keys.iter().find(|k| k.0 == name).map(|k| k.1.clone()).unwrap_or_default();
    let secret = network_secret(&scratch.path("net.secret"))?;
    let turn_secret = network_secret(&scratch.path("turn.secret"))?;
    println!("== network secret and TURN secret: 32 random bytes each, hex, in net.secret and turn.secret (mode 0600)");

    let (primary, alternate) = SERVER_IPS;
    println!(
        "== starting stund --primary {primary} --alternate {alternate} --secret-file net.secret \
         --auth-secret-file turn.secret on the server (STUN, rendezvous and TURN relay)"
    );
    let log = scratch.path("stund.log");
    let mut cmd = lab.server().command(&stund);
    cmd.args(["--primary", &primary.to_string(), "--alternate", &alternate.to_string(), "--secret-file"])
        .arg(&secret)
        .arg("--auth-secret-file")
        .arg(&turn_secret)
        // The lab's public addresses are a documentation range, which a relay refuses unless told.
        .args(["--allowed-peer-ip", "198.51.100.0/24", "--relay-bandwidth", "0"])
        .args(["--no-tcp", "--log-level", "info"])
        .stderr(File::create(&log)?);
    let stund_proc = lab.server().spawn_command(cmd)?;
    wait_for_log(&log, "ready", Duration::from_secs(10), interrupted).context("stund did not start")?;
    lab.adopt(stund_proc);

    let server = format!("{primary}:3478");
    println!(
        "== starting punchd behind each NAT: punchd --peer-id NAME --server {server} --secret-file net.secret \
         --key NAME.key --peer OTHER=PUBKEY --relay turn:{server} --relay-secret-file turn.secret --diagnose \
         (+ --connect OTHER on the first of each pair)"
    );
    let mut running = Vec::new();
    for (p, s) in PAIRS.iter().zip(sites.chunks(2)) {
        let peer = |me: &str, other: &str, host: String, connect: bool| -> Result<Process> {
            let node = lab.node(&host)?;
            let mut cmd = node.command(&punchd);
            cmd.env("RUST_LOG", "info")
                .args(["--peer-id", me, "--server", &server, "--secret-file"])
                .arg(&secret)
                .arg("--key")
                .arg(key_of(me))
                .args(["--peer", &format!("{other}={}", public_of(other))])
                .args(["--relay", &format!("turn:{server}"), "--relay-secret-file"])
                .arg(&turn_secret)
                .arg("--control")
                .arg(scratch.path(&format!("{me}.sock")))
                // The lab loses nothing: short retransmissions keep the start-up diagnosis's silent tests
                // (a filtering NAT answers nothing to them) short.
                .args(["--diagnose", "--rto", "200ms", "--retries", "3"])
                .stderr(File::create(scratch.path(&format!("{me}.log")))?);
            if connect {
                cmd.args(["--connect", other]);
            }
            Ok(node.spawn_command(cmd)?)
        };
        let (a, b) = (p.connects.0, p.waits.0);
        let hosts = (format!("{}1", s[0]), format!("{}1", s[1]));
        running.push(Running {
            host: hosts.0.clone(),
            spec: p,
            waits: peer(b, a, hosts.1, false)?,
            start_connecting: Box::new(move || peer(a, b, hosts.0.clone(), true)),
            connects: None,
            started: None,
            registered: None,
            ended: None,
            outcome: None,
        });
    }
    let t0 = Instant::now();
    let show = |name: &str, line: &str| println!("   {:>5.1} s  {name}: {line}", t0.elapsed().as_secs_f64());

    // The waiting peers first, each until it is registered (after its diagnosis), so that the time measured
    // below is the connecting peer's own: its diagnosis, registration, introduction and punching.
    let deadline = Instant::now() + REGISTER_LIMIT;
    let mut ready = vec![false; running.len()];
    while ready.iter().any(|r| !r) && Instant::now() < deadline {
        if interrupted() {
            bail!("interrupted");
        }
        for (r, ready) in running.iter_mut().zip(ready.iter_mut()) {
            for line in r.waits.drain_lines() {
                show(r.spec.waits.0, &line);
                *ready |= line.starts_with("registered with the server");
            }
            if !*ready && !r.waits.is_running() {
                print_logs(&scratch, &[r.spec.waits.0]);
                bail!("{}'s punchd exited", r.spec.waits.0);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in running.iter_mut() {
        r.connects = Some((r.start_connecting)()?);
        r.started = Some(Instant::now());
    }

    let deadline = Instant::now() + OUTCOME_LIMIT;
    while running.iter().any(|r| r.outcome.is_none()) && Instant::now() < deadline {
        if interrupted() {
            bail!("interrupted");
        }
        for r in running.iter_mut() {
            poll(r, &punchd, &scratch, &show);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in running.iter_mut().filter(|r| r.outcome.is_none()) {
        let (me, other) = (r.spec.connects.0, r.spec.waits.0);
        let (took, punch) = r.ended.map(|(at, _)| r.times(at)).unwrap_or_default();
        let mut o = outcome(status(&punchd, &scratch.path(&format!("{me}.sock"))).as_ref(), took, punch);
        if r.ended.is_none() {
            o.note = format!("  no outcome within {} s", OUTCOME_LIMIT.as_secs());
        }
        print_logs(&scratch, &[me, other]);
        r.outcome = Some(o);
    }
    // The waiting peers' side of the path: their lines of the next moment.
    std::thread::sleep(Duration::from_millis(300));
    for r in running.iter_mut() {
        poll(r, &punchd, &scratch, &show);
    }

    println!("\n== punching report (the connecting peer's `punchd status --json`)");
    println!(
        "{:<14} {:<42} {:<16} {:<6} {:<20} {:>8} {:>6} {:>6}",
        "pair", "NATs", "prediction", "path", "remote", "rtt", "start", "punch"
    );
    // Seen by polling every 50 ms: shorter is below what the demo can tell.
    let secs = |d: Option<Duration>| match d {
        Some(d) if d < Duration::from_millis(50) => "<0.05s".into(),
        Some(d) => format!("{:.2}s", d.as_secs_f64()),
        None => "-".into(),
    };
    for r in &running {
        let (Some(o), p) = (&r.outcome, r.spec) else { continue };
        let nats = format!("{} {} / {} {}", p.connects.1.number(), p.connects.1, p.waits.1.number(), p.waits.1);
        let pair = format!("{} -> {}", p.connects.0, p.waits.0);
        println!(
            "{pair:<14} {nats:<42} {:<16} {:<6} {:<20} {:>8} {:>6} {:>6}{}",
            o.prediction,
            o.path,
            o.remote,
            o.rtt,
            secs(o.took),
            secs(o.punch),
            o.note
        );
    }
    println!(
        "start: from starting the connecting punchd (its NAT diagnosis included) to its line \"path to .. opened\" or\n\
         \"needs relay\"; punch: from its registration with the rendezvous to the same (lines seen every 50 ms)."
    );
    ping_through_tunnels(&lab, &punchd, &scratch, &running);
    // The peers end before their namespaces go.
    drop(running);
    drop(lab);
    Ok(())
}

/// Each pair with a path pings the waiting peer's tunnel address from the connecting peer's host: the packets
/// travel encrypted over the punched path.
fn ping_through_tunnels(lab: &Lab, punchd: &Path, scratch: &Scratch, running: &[Running]) {
    for r in running {
        let (me, other) = (r.spec.connects.0, r.spec.waits.0);
        let Some(v) = status(punchd, &scratch.path(&format!("{me}.sock"))) else { continue };
        let path = v["peers"][0]["path"].as_str().unwrap_or("none");
        let Some(address) = v["peers"][0]["tunnel"]["address"].as_str() else { continue };
        if path == "none" {
            println!("\n== {me} -> {other}: no path, so no tunnel");
            continue;
        }
        let own = v["tunnel"]["address"].as_str().unwrap_or("-");
        println!("\n== through the tunnel: {me} ({own}) pings {other} ({address}), WireGuard over the {path} path");
        let Ok(node) = lab.node(&r.host) else { continue };
        match node.output(&["ping", "-n", "-c", "3", "-i", "0.3", "-W", "2", address]) {
            Ok(out) => {
                for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
                    println!("   {line}");
                }
            }
            Err(e) => println!("   ping failed: {e}"),
        }
    }
}

/// One look at a running pair: its peers' new lines (printed as they come), then, while it has no outcome,
/// the path in the connecting peer's status, or its "needs relay" line.
fn poll(r: &mut Running, punchd: &Path, scratch: &Scratch, show: &dyn Fn(&str, &str)) {
    let (me, other) = (r.spec.connects.0, r.spec.waits.0);
    let Some(connects) = r.connects.as_mut() else { return };
    for line in connects.drain_lines() {
        show(me, &line);
        if r.registered.is_none() && line.starts_with("registered with the server") {
            r.registered = Some(Instant::now());
        }
        let relay = line.starts_with(&format!("{other}: needs relay"));
        if r.ended.is_none() && (relay || line.starts_with(&format!("path to {other} opened"))) {
            r.ended = Some((Instant::now(), relay));
        }
    }
    for line in r.waits.drain_lines() {
        show(other, &line);
    }
    if r.outcome.is_some() {
        return;
    }
    if !connects.is_running() {
        let mut o = outcome(None, None, None);
        o.note = format!("  {me}'s punchd exited");
        print_logs(scratch, &[me]);
        r.outcome = Some(o);
        return;
    }
    let Some((at, relay)) = r.ended else { return };
    let v = status(punchd, &scratch.path(&format!("{me}.sock")));
    // The RTT is known once a keepalive on the path was answered (the first round trip may be the peer's).
    if relay || v.as_ref().is_some_and(|v| v["peers"][0]["rtt_ms"].is_number()) {
        r.outcome = Some(outcome(v.as_ref(), r.times(at).0, r.times(at).1));
    }
}

impl Running<'_> {
    /// From starting the connecting peer to `at`, and from its registration to `at`.
    fn times(&self, at: Instant) -> (Option<Duration>, Option<Duration>) {
        let since = |t: Option<Instant>| t.map(|t| at.saturating_duration_since(t));
        (since(self.started), since(self.registered))
    }
}

/// The report's cells from a STATUS object (docs/punchd.md, "STATUS schema").
fn outcome(v: Option<&serde_json::Value>, took: Option<Duration>, punch: Option<Duration>) -> Outcome {
    let p = v.map(|v| &v["peers"][0]);
    let text = |k: &str| p.and_then(|p| p[k].as_str()).unwrap_or("-").to_owned();
    let prediction = text("prediction");
    let path = text("path");
    let rtt = p.and_then(|p| p["rtt_ms"].as_f64()).map(|ms| format!("{ms:.2} ms")).unwrap_or_else(|| "-".into());
    // A wrong prediction is said as such (punchd logs it too).
    let note = match (prediction.as_str(), path.as_str()) {
        ("direct expected", "none") => "  (!) predicted direct".into(),
        ("needs relay", "direct" | "lan") => "  (!) predicted relay".into(),
        ("needs relay", "none") => "  => needs relay".into(),
        ("needs relay", "relay") => "  => through the relay".into(),
        _ => String::new(),
    };
    Outcome { prediction, path, remote: text("remote"), rtt, took, punch, note }
}

/// `punchd status --json --control PATH` (the socket is a file: reachable from outside the namespace).
fn status(punchd: &Path, control: &Path) -> Option<serde_json::Value> {
    let out = Command::new(punchd).args(["status", "--json", "--control"]).arg(control).output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits (bounded) until `log` holds a line containing `word`.
fn wait_for_log(log: &Path, word: &str, limit: Duration, interrupted: &dyn Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !interrupted() {
        if fs::read_to_string(log).is_ok_and(|s| s.contains(word)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = fs::read_to_string(log).unwrap_or_default();
    Err(anyhow!("no `{word}` within {limit:?}; its log:\n{tail}"))
}

/// The last lines of each peer's log (stderr), when a pair did not reach an outcome.
fn print_logs(scratch: &Scratch, names: &[&str]) {
    for name in names {
        let log = fs::read_to_string(scratch.path(&format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        println!("   -- {name}'s log (last lines)");
        for l in &lines[lines.len().saturating_sub(15)..] {
            println!("   {l}");
        }
    }
}

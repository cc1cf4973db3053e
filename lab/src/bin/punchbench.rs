//! `punchbench`: time from a connect request to the first verified round trip, punchd against a standard ICE
//! agent, in the NAT lab with a delay on every access link (docs/performance.md, "punchd: time to a direct
//! path, against an ICE agent"). A benchmark, not a test: it prints numbers and checks nothing but its own
//! bounds. Run it through `scripts/bench-punch.sh` (root; it makes the aioice venv).
//!
//! Per preset pair one lab (server + sites `a` and `b`, each with the delay on its access link), stund with
//! the rendezvous on the server, then `--runs` times, from fresh NAT state (conntrack flushed) each time:
//! - punchd: both peers started (`--diagnose`), both registered, then `{"cmd":"connect","peer":"bob"}` on
//!   alice's control socket (docs/punchd.md, "Control socket"); the time is from writing that request to
//!   alice's line `path to bob opened` (printed at the first verified round trip) or `bob: needs relay`.
//! - ICE (`--python`, scripts/ice_peer.py with aioice): both sides gather host and server-reflexive
//!   candidates from the same stund, the harness hands each side the other's candidates in the same instant,
//!   the time is from then to the end of the controlling side's `connect()` (a nominated pair).
//!
//! The binaries are run, not linked: the lab stays independent of the library it measures.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use holepunch_lab::peers::{genkey, network_secret, pubkey, Scratch};
use holepunch_lab::{Lab, Node, Preset, Process, SiteSpec, SERVER_IPS};

#[derive(Parser, Debug)]
#[command(about = "Time to a direct path: punchd against an ICE agent (aioice) in the NAT lab")]
struct Args {
    /// Where punchd and stund are built.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Runs per pair and agent (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// One-way delay on each access link, in ms (both directions; the server's link has none).
    #[arg(long, default_value_t = 25)]
    delay_ms: u64,
    /// A Python with aioice installed; without it only punchd is measured.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The ICE side program.
    #[arg(long, default_value = "scripts/ice_peer.py")]
    ice_script: PathBuf,
    /// Preset pairs, alice's first: e.g. `1/1,3/3` (numbers or names as in docs/lab.md).
    #[arg(long, default_value = "1/1,3/3,3/2,4/3,4/4")]
    pairs: String,
    /// Print alice's punchd lines of every run with their time from the request.
    #[arg(long)]
    verbose: bool,
}

/// Longest wait for both peers to diagnose their NATs (bounded by 10 s in punchd) and register.
const REGISTER_LIMIT: Duration = Duration::from_secs(20);
/// Longest wait for an outcome after the request: birthday probing is bounded by about 10 s in punchd.
const OUTCOME_LIMIT: Duration = Duration::from_secs(30);
/// Bound on every step of an ICE run (gathering, then connecting), passed on to the side program.
const ICE_LIMIT: Duration = Duration::from_secs(20);

/// One measured attempt: the time, and whether it ended on a path.
#[derive(Clone, Copy)]
struct Attempt {
    took: Duration,
    connected: bool,
    /// punchd only: from the introduction (alice's `bob: prediction` line, printed when the rendezvous push
    /// arrives) to the outcome: the part comparable with the ICE agent's, whose candidates come through the
    /// harness at once.
    punch: Option<Duration>,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    holepunch_lab::check_available()?;
    let punchd = args.bin_dir.join("punchd");
    let stund = args.bin_dir.join("stund");
    for b in [&punchd, &stund] {
        if !b.exists() {
            bail!("{} is not built", b.display());
        }
    }
    let pairs = parse_pairs(&args.pairs)?;
    let delay = Duration::from_millis(args.delay_ms);
    println!(
        "punchbench: {} runs per pair, {} ms one-way delay on each access link, binaries from {}, ICE: {}",
        args.runs,
        args.delay_ms,
        args.bin_dir.display(),
        if args.python.is_some() { "aioice" } else { "off" }
    );
    let mut rows = Vec::new();
    for (a, b) in pairs {
        println!("\n== {} {} (alice) / {} {} (bob)", a.number(), a, b.number(), b);
        let row = bench_pair(&args, &punchd, &stund, a, b, delay)?;
        rows.push(row);
    }
    report(&rows);
    Ok(())
}

fn parse_pairs(s: &str) -> Result<Vec<(Preset, Preset)>> {
    s.split(',')
        .map(|p| {
            let (a, b) = p.split_once('/').ok_or_else(|| anyhow!("pair `{p}`: expected A/B"))?;
            Ok((a.trim().parse::<Preset>()?, b.trim().parse::<Preset>()?))
        })
        .collect()
}

/// The figures of one pair.
struct Row {
    pair: (Preset, Preset),
    /// Peer-to-peer RTT from pings to the server (each site's RTT to it, summed), ms.
    rtt_ms: Option<f64>,
    punchd: Vec<Attempt>,
    ice: Vec<Attempt>,
    /// The first `path to bob opened` line, for the reader.
    path_line: Option<String>,
}

fn bench_pair(args: &Args, punchd: &Path, stund: &Path, a: Preset, b: Preset, delay: Duration) -> Result<Row> {
    let scratch = Scratch::new("punchbench")?;
    let lab = Lab::builder()
        .name("pbench")
        .server()
        .site("a", SiteSpec::new(a).delay(delay, Duration::ZERO))
        .site("b", SiteSpec::new(b).delay(delay, Duration::ZERO))
        .build()?;
    let primary = SERVER_IPS.0;
    let secret = network_secret(&scratch.path("net.secret"))?;
    let server = format!("{primary}:3478");

    let rtt_ms = match (ping_ms(lab.host("a1"), &primary.to_string()), ping_ms(lab.host("b1"), &primary.to_string())) {
        (Some(x), Some(y)) => Some(x + y),
        _ => None,
    };
    println!("   peer-to-peer RTT (a1->server + b1->server, least of 5 pings each): {}", fmt_ms(rtt_ms));

    let keys =
        [("alice", genkey(punchd, &scratch.path("alice.key"))?), ("bob", genkey(punchd, &scratch.path("bob.key"))?)];
    let publics = [pubkey(punchd, &keys[0].1)?, pubkey(punchd, &keys[1].1)?];
    // Name, key file and public key of each.
    let peers = [0, 1].map(|i| (keys[i].0, keys[i].1.clone(), publics[i].clone()));
    let mut row = Row { pair: (a, b), rtt_ms, punchd: Vec::new(), ice: Vec::new(), path_line: None };
    for run in 1..=args.runs {
        fresh(&lab)?;
        // A fresh stund too: its connect window would take a second CONNECT of the same pair from the same
        // endpoints within 10 s for a repetition of the first and push nothing (docs/signal.md).
        let stund_proc = start_stund(&lab, stund, &scratch, &secret)?;
        let (attempt, line) = punchd_run(&lab, punchd, &scratch, &server, &secret, &peers, args.verbose)?;
        println!("   run {run} punchd: {}", fmt_attempt(attempt));
        if row.path_line.is_none() && attempt.connected {
            row.path_line = line;
        }
        row.punchd.push(attempt);
        if let Some(python) = &args.python {
            fresh(&lab)?;
            let attempt = ice_run(&lab, python, &args.ice_script, &server, &scratch)?;
            println!("   run {run} ICE:    {}", fmt_attempt(attempt));
            row.ice.push(attempt);
        }
        drop(stund_proc);
    }
    Ok(row)
}

/// stund with the rendezvous on the lab's server, ready.
fn start_stund(lab: &Lab, stund: &Path, scratch: &Scratch, secret: &Path) -> Result<Process> {
    let (primary, alternate) = SERVER_IPS;
    let log = scratch.path("stund.log");
    let mut cmd = lab.server().command(stund);
    cmd.args(["--primary", &primary.to_string(), "--alternate", &alternate.to_string(), "--secret-file"])
        .arg(secret)
        .args(["--no-tcp", "--log-level", "info"])
        .stderr(File::create(&log)?);
    let p = lab.server().spawn_command(cmd)?;
    holepunch_lab::cmd::wait_for_log(&log, "ready", Duration::from_secs(10))
        .map_err(|e| anyhow!(e))
        .context("stund did not start")?;
    Ok(p)
}

/// Fresh NAT state for the next run: no mapping of the last one helps or hinders it.
fn fresh(lab: &Lab) -> Result<()> {
    lab.flush_conntrack("a")?;
    lab.flush_conntrack("b")?;
    // Let the last run's stragglers drain through the delay lines.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// One punchd run: both peers up and registered, then the connect request on alice's control socket.
fn punchd_run(
    lab: &Lab,
    punchd: &Path,
    scratch: &Scratch,
    server: &str,
    secret: &Path,
    peers: &[(&str, PathBuf, String); 2],
    verbose: bool,
) -> Result<(Attempt, Option<String>)> {
    let start = |me: usize, host: &str| -> Result<Process> {
        let other = 1 - me;
        let node = lab.node(host)?;
        let mut cmd = node.command(punchd);
        cmd.env("RUST_LOG", "info")
            .args(["--peer-id", peers[me].0, "--no-tun", "--server", server, "--secret-file"])
            .arg(secret)
            .arg("--key")
            .arg(&peers[me].1)
            .args(["--peer", &format!("{}={}", peers[other].0, peers[other].2), "--control"])
            .arg(scratch.path(&format!("{}.sock", peers[me].0)))
            // The lab loses nothing: short retransmissions keep the start-up diagnosis short (as the demo).
            .args(["--diagnose", "--rto", "200ms", "--retries", "3"])
            .stderr(File::create(scratch.path(&format!("{}.log", peers[me].0)))?);
        Ok(node.spawn_command(cmd)?)
    };
    let mut bob = start(1, "b1")?;
    let mut alice = start(0, "a1")?;
    for (name, p) in [("bob", &mut bob), ("alice", &mut alice)] {
        p.wait_for_line(REGISTER_LIMIT, |l| l.starts_with("registered with the server")).with_context(|| {
            format!(
                "{name} did not register; its log:\n{}",
                holepunch_lab::cmd::tail(&scratch.path(&format!("{name}.log")))
            )
        })?;
    }
    let control = scratch.path("alice.sock");
    let mut sock = UnixStream::connect(&control).with_context(|| format!("connecting to {}", control.display()))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let t0 = Instant::now();
    sock.write_all(b"{\"cmd\":\"connect\",\"peer\":\"bob\"}\n")?;
    let mut answer = String::new();
    BufReader::new(&sock).read_line(&mut answer)?;
    if !answer.contains("\"ok\":true") {
        bail!("connect request refused: {}", answer.trim());
    }
    // Every line of alice's until the outcome, each with its time from the request (for --verbose).
    let deadline = t0 + OUTCOME_LIMIT;
    let mut outcome = None;
    let mut intro = None;
    while outcome.is_none() {
        let Ok(l) = alice.wait_for_line(deadline.saturating_duration_since(Instant::now()), |_| true) else { break };
        let took = t0.elapsed();
        if verbose {
            println!("      {:>6.0} ms  alice: {l}", took.as_secs_f64() * 1000.0);
        }
        if intro.is_none() && l.starts_with("bob: prediction") {
            intro = Some(took);
        }
        if l.starts_with("path to bob opened") || l.starts_with("bob: needs relay") {
            let punch = intro.map(|i| took.saturating_sub(i));
            outcome = Some((Attempt { took, connected: l.starts_with("path to"), punch }, Some(l)));
        }
    }
    Ok(outcome.unwrap_or((Attempt { took: t0.elapsed(), connected: false, punch: None }, None)))
    // Both peers are killed here (Process drops), before the next run flushes the NATs.
}

/// One side of the ICE agent: the program in a namespace, its stdin, its stdout lines.
struct IceSide {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl IceSide {
    fn start(node: &Node, python: &Path, script: &Path, server: &str, controlling: bool, log: File) -> Result<IceSide> {
        let mut cmd = node.command(python);
        cmd.arg(script).args(["--stun", server, "--timeout", &ICE_LIMIT.as_secs().to_string()]);
        if controlling {
            cmd.arg("--controlling");
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", python.display()))?;
        let stdin = child.stdin.take();
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(IceSide { child, stdin, lines })
    }

    fn line(&self, limit: Duration) -> Result<String> {
        self.lines.recv_timeout(limit).map_err(|e| anyhow!("no line from the ICE side program ({e})"))
    }
}

impl Drop for IceSide {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One ICE run: both sides gather, the harness swaps their candidates in one instant, both connect.
fn ice_run(lab: &Lab, python: &Path, script: &Path, server: &str, scratch: &Scratch) -> Result<Attempt> {
    let log = |n: &str| File::create(scratch.path(&format!("ice-{n}.log")));
    let mut alice = IceSide::start(lab.host("a1"), python, script, server, true, log("alice")?)?;
    let mut bob = IceSide::start(lab.host("b1"), python, script, server, false, log("bob")?)?;
    let limit = ICE_LIMIT + Duration::from_secs(5);
    let offer = alice
        .line(limit)
        .with_context(|| format!("alice: {}", holepunch_lab::cmd::tail(&scratch.path("ice-alice.log"))))?;
    let answer =
        bob.line(limit).with_context(|| format!("bob: {}", holepunch_lab::cmd::tail(&scratch.path("ice-bob.log"))))?;
    for (side, text) in [(&mut alice, &answer), (&mut bob, &offer)] {
        let stdin = side.stdin.as_mut().ok_or_else(|| anyhow!("no stdin"))?;
        stdin.write_all(format!("{text}\n").as_bytes())?;
        stdin.flush()?;
    }
    let result = alice
        .line(limit)
        .with_context(|| format!("alice: {}", holepunch_lab::cmd::tail(&scratch.path("ice-alice.log"))))?;
    // Bob's end is not timed, but waited for so that it does not outlive the run.
    let _ = bob.line(limit);
    let v: serde_json::Value = serde_json::from_str(&result).with_context(|| format!("ICE result `{result}`"))?;
    let ms = v["ms"].as_f64().ok_or_else(|| anyhow!("ICE result without ms: {result}"))?;
    let connected = v["connected"].as_bool() == Some(true);
    Ok(Attempt { took: Duration::from_secs_f64(ms / 1000.0), connected, punch: None })
}

/// Smallest RTT of 5 pings from `node` to `dst`, ms: the first ping also waits for ARP through the delay line
/// (an average would count that).
fn ping_ms(node: &Node, dst: &str) -> Option<f64> {
    let out = node.output(&["ping", "-c", "5", "-i", "0.2", "-q", dst]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rtt min/avg/max/mdev = 50.1/50.3/50.6/0.2 ms"
    let stats = text.lines().find(|l| l.contains("min/avg/max"))?;
    stats.split('=').nth(1)?.trim().split('/').next()?.parse().ok()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Median, min and max of `ms` over the connected attempts; and "k/n".
fn summary(attempts: &[Attempt], ms: impl Fn(&Attempt) -> Option<Duration>) -> (Option<f64>, String) {
    let v: Vec<f64> =
        attempts.iter().filter(|a| a.connected).filter_map(&ms).map(|d| d.as_secs_f64() * 1000.0).collect();
    let min = v.iter().copied().reduce(f64::min);
    let max = v.iter().copied().reduce(f64::max);
    let m = median(v.clone());
    let text = match m {
        Some(_) => format!("{} ({}–{})", fmt_ms(m), fmt_ms(min).trim_end_matches(" ms"), fmt_ms(max)),
        None => "-".into(),
    };
    (m, text)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "-".into())
}

fn fmt_attempt(a: Attempt) -> String {
    let what = if a.connected { "connected" } else { "no path" };
    let punch = a.punch.map(|p| format!(" ({:.0} ms after the introduction)", p.as_secs_f64() * 1000.0));
    format!("{what} after {:.0} ms{}", a.took.as_secs_f64() * 1000.0, punch.unwrap_or_default())
}

/// A cone NAT (endpoint-independent mapping): a pair of two is punchable from the reflexive addresses alone.
fn cone(p: Preset) -> bool {
    matches!(p, Preset::FullCone | Preset::AddressRestricted | Preset::PortRestricted)
}

/// The markdown table and the goals of docs/performance.md.
fn report(rows: &[Row]) {
    println!(
        "\n| pair (alice / bob) | RTT | punchd: request → path, median (min–max) | punchd: introduction → path | \
         punchd connected | ICE: candidates → connected | ICE connected | ICE / punchd (introduction → path) | \
         punchd request → path in RTTs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut goals = Vec::new();
    for r in rows {
        let (pm, ptext) = summary(&r.punchd, |a| Some(a.took));
        let (pi, itext) = summary(&r.punchd, |a| a.punch);
        let (im, icetext) = summary(&r.ice, |a| Some(a.took));
        let count = |v: &[Attempt]| format!("{}/{}", v.iter().filter(|a| a.connected).count(), v.len());
        // Like for like: both from the moment each side has the other's candidates.
        let ratio = match (pi, im) {
            (Some(p), Some(i)) if p > 0.0 => format!("{:.2}", i / p),
            _ => "-".into(),
        };
        let rtts = match (pm, r.rtt_ms) {
            (Some(p), Some(rtt)) if rtt > 0.0 => format!("{:.1}", p / rtt),
            _ => "-".into(),
        };
        let (a, b) = r.pair;
        let name = format!("{} {} / {} {}", a.number(), a, b.number(), b);
        println!(
            "| {name} | {} | {ptext} | {itext} | {} | {icetext} | {} | {ratio} | {rtts} |",
            fmt_ms(r.rtt_ms),
            count(&r.punchd),
            if r.ice.is_empty() { "-".into() } else { count(&r.ice) }
        );
        let ice_any = r.ice.iter().any(|a| a.connected);
        let punch_all = !r.punchd.is_empty() && r.punchd.iter().all(|a| a.connected);
        if ice_any && !punch_all {
            goals.push(format!("{name}: the ICE agent connected but punchd did not in every run"));
        }
        if let (Some(p), Some(i)) = (pi, im) {
            if p > i {
                goals
                    .push(format!("{name}: punchd slower than the ICE agent from the candidates ({p:.0} > {i:.0} ms)"));
            }
        }
        if let (Some(p), Some(rtt)) = (pm, r.rtt_ms) {
            if cone(a) && cone(b) && p > 3.0 * rtt {
                goals.push(format!("{name}: {p:.0} ms is more than 3 RTT ({:.0} ms)", 3.0 * rtt));
            }
        }
    }
    for r in rows {
        if let Some(l) = &r.path_line {
            println!("{} {} / {} {}: {l}", r.pair.0.number(), r.pair.0, r.pair.1.number(), r.pair.1);
        }
    }
    if goals.is_empty() {
        println!(
            "\ngoals: met (every pair the ICE agent connects, punchd connects in every run and no slower from the \
             candidates; cone pairs within 3 RTT of the request)"
        );
    } else {
        println!("\ngoals: NOT met:");
        for g in goals {
            println!("  - {g}");
        }
    }
}

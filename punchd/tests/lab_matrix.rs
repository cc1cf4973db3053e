//! The NAT lab matrix (docs/punchd.md, "NAT lab matrix"): punchd peers through every pair of the presets full
//! cone, address-restricted, port-restricted, symmetric, firewall and double NAT (docs/lab.md, "Presets"), on
//! strict routers (they drop unsolicited packets to themselves) and on permissive ones.
//!
//! One lab per router kind holds two sites of each preset, stund `--secret-file` runs on its server, and each
//! pair is two punchd processes (with `--diagnose`, so both predict) on their own port and control socket: the
//! first on the pair's "a" site, the second on its "b" site, all pairs at once. Each pair's expected
//! prediction and outcome come from [`expected`], RFC 4787 reasoning that the test checks against
//! `holepunch::punch::predict`; the daemon's prediction and outcome must match it. On strict routers every
//! pair also runs the tunnel (its own device and overlay): each direct pair pings both ways between the
//! tunnel addresses and moves a second of iperf3 TCP through it.
//!
//! Needs root, ip, nft and conntrack; without them the tests skip with one line, and under CI=true they fail.
#![cfg(unix)]

mod common;
use common::lab::{path, Peer, World};
use holepunch::identity::SecretKey;
use holepunch::nat::{Allocation, Filtering, Mapping};
use holepunch::net::IpPrefix;
use holepunch::punch::{predict, Prediction};
use holepunch::signal::NatProfile;
use holepunch::tunnel::derived_address;
use holepunch_lab::{Lab, Preset, SiteSpec};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The presets of the matrix, in table order, with the site-name stem of each.
const PRESETS: [(Preset, &str); 6] = [
    (Preset::FullCone, "fc"),
    (Preset::AddressRestricted, "ar"),
    (Preset::PortRestricted, "pr"),
    (Preset::Symmetric, "sym"),
    (Preset::Firewall, "fw"),
    (Preset::DoubleNat, "dn"),
];

/// Outcome of one pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Both peers show a `direct` path.
    Direct,
    /// The connecting peer printed `needs relay`.
    NeedsRelay,
    /// Neither within the test's bound.
    Nothing,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Direct => "direct",
            Outcome::NeedsRelay => "needs relay",
            Outcome::Nothing => "nothing",
        }
    }
}

/// What the diagnosis of a preset's NAT should find (docs/lab.md, "Presets"): the profile the peer reports.
fn profile(p: Preset) -> NatProfile {
    let b = p.behaviour();
    let allocation = if b.port_preserving {
        Allocation::Preserved
    } else if p == Preset::Symmetric {
        Allocation::Random // `masquerade fully-random`
    } else {
        Allocation::Unknown
    };
    NatProfile {
        mapping: b.mapping,
        filtering: b.filtering,
        allocation,
        hairpin: None,
        port_mapping: false,
        no_nat: !b.translated,
    }
}

/// The expected prediction and outcome of `a` against `b`, by RFC 4787 reasoning:
/// - Both mappings endpoint-independent (or no NAT, the firewall): each side's endpoint is the same towards
///   the server and the peer, so checks sent at the same instant each open their own filter for the other's
///   (RFC 4787 §4.1, RFC 5128 §3.3): direct.
/// - Symmetric (address-and-port-dependent mapping, random ports, §4.1) against a NAT whose filtering ignores
///   the source port (endpoint-independent or address-dependent, §5): the symmetric side's check from its new
///   port gets in (the other side's own check to the symmetric side's address opened an address-dependent
///   filter), the answer goes back through that new mapping, and the check teaches the other side the
///   peer-reflexive port: direct.
/// - Symmetric against an address-and-port-dependent filter (port-restricted, firewall, double NAT): the new
///   port is unknown and the filter wants it: birthday probing finds it (docs/punchd.md, "Symmetric NATs";
///   predicted "direct via birthday probing").
/// - Symmetric against symmetric: both ports move with every destination (RFC 5128 §3.5): needs relay.
fn expected(a: Preset, b: Preset) -> (Prediction, Outcome) {
    let sym = |p: Preset| p == Preset::Symmetric;
    let port_filter = |p: Preset| p.behaviour().filtering == Filtering::AddressAndPortDependent;
    if sym(a) && sym(b) {
        return (Prediction::NeedsRelay, Outcome::NeedsRelay);
    }
    if sym(a) || sym(b) {
        let easy = if sym(a) { b } else { a };
        if port_filter(easy) {
            let expected = holepunch::punch::BirthdayParams::DEFAULT.expected_time();
            return (Prediction::DirectViaBirthday { expected }, Outcome::Direct);
        }
        return (Prediction::Direct, Outcome::Direct);
    }
    (Prediction::Direct, Outcome::Direct)
}

/// Whether the outcome of a pair the strict table calls direct is a race on permissive routers.
///
/// A permissive router takes an unsolicited packet to its own public address into its `input` hook and keeps
/// a confirmed conntrack entry for it (docs/lab.md, "Facts the lab relies on"). When one peer's first check
/// reaches the other's router before that router's own mapping towards the peer exists, the entry is
/// absorbed there: the router's later mapping for the same pair clashes with it and gets a new port, and the
/// first peer's retransmissions keep matching the absorbed entry. punchd's primers (TTL 2, sent before the
/// first check; docs/punchd.md, "Permissive routers") make both routers' mappings before either side's check
/// arrives, which settles every pair whose NATs sit one hop from their peer. Two kinds still race, on a lab
/// without delay where both sides' checks leave within a millisecond: a double NAT, whose outer router is two
/// hops away (a TTL-2 primer dies at it before its translation), and birthday probing, whose probes and the
/// checks that meet them are not primed. A full cone (its `@mapped` entry, learnt from the registration,
/// lets the new port in) and two firewalls (no mapping to clash) never race; for the racing pairs the test
/// asserts only the prediction.
fn races_when_permissive(a: Preset, b: Preset) -> bool {
    let cone = a == Preset::FullCone || b == Preset::FullCone;
    let no_nat = a == Preset::Firewall && b == Preset::Firewall;
    let (prediction, outcome) = expected(a, b);
    let double = a == Preset::DoubleNat || b == Preset::DoubleNat;
    let birthday = matches!(prediction, Prediction::DirectViaBirthday { .. });
    outcome == Outcome::Direct && !cone && !no_nat && (double || birthday)
}

/// One pair under test.
struct Pair {
    a: Preset,
    b: Preset,
    first: Peer,
    second: Peer,
    outcome: Option<(Outcome, Duration)>,
    prediction: Option<String>,
    /// The lab hosts of the first and second peer.
    hosts: (String, String),
    /// The tunnel addresses of the first and second peer, when the tunnel is on.
    tunnel_ips: Option<(IpAddr, IpAddr)>,
}

/// Row of the results table.
struct Row {
    a: Preset,
    b: Preset,
    expected: (Prediction, Outcome),
    race: bool,
    prediction: String,
    outcome: Outcome,
    took: Duration,
}

/// Every peer diagnoses its NAT at start (`--diagnose`, so both predict). The diagnosis waits out a whole
/// retransmission schedule for each test the NAT leaves unanswered (RFC 5780 §4.4: that silence is the
/// filtering verdict); with the default RTO (500 ms) that is about 8 s, close to punchd's 10 s bound on a
/// loaded machine, and the lab's RTT is a millisecond, so the peers use a 100 ms RTO and 4 retries.
const DIAGNOSE: &str = "--diagnose --rto 100ms --retries 4";

/// How long a pair may take from the connect request to its outcome. A direct path opens within a few RTTs;
/// birthday probing within its bound (2048 probes at 200/s, at most 11.2 s: docs/punchd.md, "Symmetric
/// NATs"); a needs-relay verdict after the agent's checks give up (about 2.6 s, src/punch/agent.rs), or after
/// the birthday budget where birthday probing was tried.
const PAIR_BOUND: Duration = Duration::from_secs(20);

/// Each pair's tunnel (strict routers): device `hp<k>` and an overlay of its own (several pairs share a host,
/// so each needs its own device name and route).
fn tunnel_flags(k: usize) -> (String, IpPrefix) {
    let overlay: IpPrefix = format!("10.{}.0.0/16", 100 + k).parse().unwrap();
    (format!("--tun-name hp{k} --overlay {overlay}"), overlay)
}

fn run_matrix(kind: &str, pairs: &[(Preset, Preset)], permissive: bool) {
    // The tunnel rides on every path of the strict matrix: ping and a short iperf3 run per direct pair.
    let tunnel = !permissive;
    // Every pair's first peer runs on the "a" site of its preset, the second on the "b" site.
    let mut builder = Lab::builder().server();
    for (p, stem) in PRESETS {
        for side in ["a", "b"] {
            let spec = SiteSpec::new(p);
            builder = builder.site(&format!("{stem}{side}"), if permissive { spec.permissive() } else { spec });
        }
    }
    let started = Instant::now();
    let lab = builder.build().expect("build lab");
    eprintln!("{kind}: lab with {} sites up in {:?}", lab.sites().len(), started.elapsed());
    // Many peers share a public address here; the per-source limit is not what this test is about.
    let w = World::new(lab, &format!("matrix-{kind}"), "--rendezvous-rate-limit 0");
    let stem = |p: Preset| PRESETS.iter().find(|(q, _)| *q == p).map(|(_, s)| *s).unwrap();

    let mut running = Vec::new();
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let port = 7000 + k as u16;
        let (ka, kb) = (SecretKey::from_seed([2 * k as u8 + 1; 32]), SecretKey::from_seed([2 * k as u8 + 2; 32]));
        let (na, nb) = (format!("p{k}a"), format!("p{k}b"));
        let (tun, overlay) = tunnel_flags(k);
        let extra = if tunnel { format!("{DIAGNOSE} {tun}") } else { DIAGNOSE.to_string() };
        let hosts = (format!("{}a1", stem(a)), format!("{}b1", stem(b)));
        let second = w.punchd(&hosts.1, &nb, &kb, port, (&na, &ka.public()), &extra);
        let first = w.punchd(&hosts.0, &na, &ka, port, (&nb, &kb.public()), &extra);
        let tunnel_ips = tunnel.then(|| {
            let ip = |k: &SecretKey| derived_address(&k.public(), overlay).unwrap();
            (ip(&ka), ip(&kb))
        });
        running.push(Pair { a, b, first, second, outcome: None, prediction: None, hosts, tunnel_ips });
    }

    // Every peer diagnoses its NAT (at most 10 s) and registers; then each pair's first peer asks to connect.
    let registered = |v: &serde_json::Value| v["registered"] == true;
    for p in &mut running {
        for peer in [&mut p.first, &mut p.second] {
            peer.wait_status(Duration::from_secs(30), registered).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }
    eprintln!("{kind}: {} peers registered {:?} after the lab was up", 2 * running.len(), started.elapsed());
    let mut diagnoses = Vec::new();
    for p in &mut running {
        for peer in [&mut p.first, &mut p.second] {
            peer.pump();
            let line = peer.log.iter().find(|l| l.contains("NAT diagnosis")).cloned().unwrap_or_default();
            diagnoses.push(format!("{}: {}", peer.name, line.split("] ").last().unwrap_or("")));
        }
    }
    eprintln!("{kind}: diagnoses:\n  {}", diagnoses.join("\n  "));
    // All pairs at once, each watched by its own thread (a pair's time to path must not include the polling of
    // the others): the first peer asks to connect over its control socket (the daemon takes the request from
    // its loop, up to 200 ms later), then both statuses are read every 20 ms until both show a direct path or
    // the first peer says it needs a relay.
    let asking = Instant::now();
    std::thread::scope(|s| {
        for p in running.iter_mut() {
            s.spawn(move || watch(p));
        }
    });
    eprintln!("{kind}: every pair done {:?} after the connects", asking.elapsed());

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for p in &mut running {
        let (outcome, took) = p.outcome.unwrap_or((Outcome::Nothing, PAIR_BOUND));
        let prediction = p.prediction.clone().unwrap_or_else(|| "(none)".into());
        let want = expected(p.a, p.b);
        let race = permissive && races_when_permissive(p.a, p.b);
        let row = Row { a: p.a, b: p.b, expected: want, race, prediction, outcome, took };
        let outcome_ok = if race {
            matches!(outcome, Outcome::Direct | Outcome::NeedsRelay)
        } else {
            outcome == want.1 && want.0.holds(outcome == Outcome::Direct)
        };
        // The daemon judges its own prediction: a "prediction was wrong" line exactly when the outcome
        // does not bear it out.
        p.first.pump();
        let judged_wrong = p.first.line(&format!("{}: prediction was wrong", p.second.name)).is_some();
        let judged_ok = outcome == Outcome::Nothing || judged_wrong != want.0.holds(outcome == Outcome::Direct);
        let ok = row.prediction == want.0.to_string() && outcome_ok && judged_ok;
        if !ok {
            failures.push(format!(
                "{} vs {}: expected {} / {}, got {} / {} (daemon said its prediction was wrong: {judged_wrong})\n{}\n{}",
                p.a,
                p.b,
                want.0,
                want.1.name(),
                row.prediction,
                outcome.name(),
                p.first.logs(),
                p.second.logs()
            ));
        }
        rows.push(row);
    }
    print_table(kind, &rows);
    if tunnel {
        for p in &mut running {
            if p.outcome.is_some_and(|(o, _)| o == Outcome::Direct) {
                if let Err(e) = through_the_tunnel(&w, p) {
                    failures.push(format!("{} vs {}: tunnel: {e}\n{}\n{}", p.a, p.b, p.first.logs(), p.second.logs()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{kind}: {} of {} pairs differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

/// Ping both ways between the pair's tunnel addresses, then one second of iperf3 TCP from the first to the
/// second; the throughput is printed.
fn through_the_tunnel(w: &World, p: &Pair) -> Result<(), String> {
    let Some((ia, ib)) = p.tunnel_ips else { return Ok(()) };
    for (host, to) in [(&p.hosts.0, ib), (&p.hosts.1, ia)] {
        let mut answered = false;
        for _ in 0..10 {
            let out = w.lab.host(host).output(&["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", &to.to_string()]);
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                answered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        if !answered {
            return Err(format!("ping {to} from {host}: no answer"));
        }
    }
    let mut server =
        w.lab.host(&p.hosts.1).spawn(&["iperf3", "-s", "-1", "-B", &ib.to_string()]).map_err(|e| e.to_string())?;
    let _ = server.wait_for_line(Duration::from_secs(5), |l| l.contains("Server listening"));
    let out = w
        .lab
        .host(&p.hosts.0)
        .output(&["iperf3", "-c", &ib.to_string(), "-t", "1", "-J", "--connect-timeout", "3000"])
        .map_err(|e| e.to_string())?;
    server.kill();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3: {e}"))?;
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    eprintln!("{} vs {}: ping both ways, iperf3 {:.0} Mbit/s through the tunnel", p.a, p.b, bps / 1e6);
    if bps <= 0.0 {
        return Err(format!("iperf3 moved nothing: {v}"));
    }
    Ok(())
}

/// Asks `p`'s first peer to connect and waits for the pair's outcome, at most [`PAIR_BOUND`].
fn watch(p: &mut Pair) {
    let asked = Instant::now();
    let answer = p.first.connect(&p.second.name);
    assert_eq!(answer["ok"], true, "{answer}");
    let needs_relay = format!("{}: needs relay", p.second.name);
    let direct = |s: &Option<serde_json::Value>| s.as_ref().is_some_and(|v| path(v) == "direct");
    while p.outcome.is_none() && asked.elapsed() < PAIR_BOUND {
        p.first.pump();
        let (sa, sb) = (p.first.status(), p.second.status());
        let took = asked.elapsed();
        if let Some(pred) = sa.as_ref().and_then(|v| v["peers"][0]["prediction"].as_str()) {
            p.prediction = Some(pred.to_string());
        }
        if direct(&sa) && direct(&sb) {
            p.outcome = Some((Outcome::Direct, took));
        } else if p.first.line(&needs_relay).is_some() {
            p.outcome = Some((Outcome::NeedsRelay, took));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The results as the markdown table of docs/punchd.md, "NAT lab matrix".
fn print_table(kind: &str, rows: &[Row]) {
    let mut out = String::from(
        "| pair | routers | expected | prediction | outcome | time to path |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let time = match r.outcome {
            Outcome::Direct => format!("{} ms", r.took.as_millis()),
            Outcome::NeedsRelay => format!("- (verdict after {:.1} s)", r.took.as_secs_f64()),
            Outcome::Nothing => "-".into(),
        };
        let outcome = if r.race { "direct or needs relay (race)" } else { r.expected.1.name() };
        out.push_str(&format!(
            "| {} vs {} | {kind} | {outcome} ({}) | {} | {} | {time} |\n",
            r.a,
            r.b,
            r.expected.0,
            r.prediction,
            r.outcome.name(),
        ));
    }
    eprintln!("{out}");
}

/// Every unordered pair of the matrix presets (a preset against itself included).
fn all_pairs() -> Vec<(Preset, Preset)> {
    let mut v = Vec::new();
    for (i, (a, _)) in PRESETS.iter().enumerate() {
        for (b, _) in &PRESETS[i..] {
            v.push((*a, *b));
        }
    }
    v
}

#[test]
fn the_table_follows_the_library_prediction() {
    for (a, b) in all_pairs() {
        let (want, _) = expected(a, b);
        assert_eq!(predict(&profile(a), &profile(b)), want, "{a} vs {b}");
        assert_eq!(predict(&profile(b), &profile(a)), want, "{b} vs {a}");
    }
    // The profile the table assumes for the symmetric preset is the one the lab builds.
    assert_eq!(profile(Preset::Symmetric).mapping, Mapping::AddressAndPortDependent);
}

#[test]
fn matrix_on_strict_routers() {
    holepunch_lab::require_lab!();
    run_matrix("strict", &all_pairs(), false);
}

#[test]
fn matrix_on_permissive_routers() {
    holepunch_lab::require_lab!();
    run_matrix("permissive", &all_pairs(), true);
}

/// Four port-restricted pairs on permissive routers, all connecting at once: with primers every pair opens
/// (docs/punchd.md, "Permissive routers"). Returns when each is direct or after `limit`: the time to each
/// pair's path.
fn permissive_pairs(tag: &str, extra: &str, limit: Duration) -> Vec<Option<Duration>> {
    let mut builder = Lab::builder().server();
    for side in ["a", "b"] {
        builder = builder.site(&format!("pr{side}"), SiteSpec::new(Preset::PortRestricted).permissive());
    }
    let w = World::new(builder.build().expect("lab"), tag, "--rendezvous-rate-limit 0");
    let mut running = Vec::new();
    for k in 0..4 {
        let port = 7100 + k as u16;
        let (ka, kb) = (SecretKey::from_seed([2 * k as u8 + 1; 32]), SecretKey::from_seed([2 * k as u8 + 2; 32]));
        let (na, nb) = (format!("r{k}a"), format!("r{k}b"));
        let second = w.punchd("prb1", &nb, &kb, port, (&na, &ka.public()), extra);
        let first = w.punchd("pra1", &na, &ka, port, (&nb, &kb.public()), extra);
        running.push((first, second));
    }
    for (a, b) in &mut running {
        for p in [a, b] {
            p.wait_status(Duration::from_secs(10), |v| v["registered"] == true).unwrap();
        }
    }
    let t0 = Instant::now();
    for (a, b) in &running {
        assert_eq!(a.connect(&b.name)["ok"], true);
    }
    let mut first_direct = vec![None; running.len()];
    while t0.elapsed() < limit && first_direct.iter().any(Option::is_none) {
        for (k, (a, b)) in running.iter().enumerate() {
            let d = |p: &Peer| p.status().is_some_and(|v| path(&v) == "direct");
            if first_direct[k].is_none() && d(a) && d(b) {
                first_direct[k] = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("first direct per pair ({extra:?}): {first_direct:?}");
    for (k, (a, b)) in running.iter_mut().enumerate() {
        if first_direct[k].is_none() {
            let lines = |p: &mut Peer| {
                p.pump();
                p.log.iter().filter(|l| !l.starts_with('[')).cloned().collect::<Vec<_>>().join("\n  ")
            };
            eprintln!("pair {k}:\n  {}\n  --\n  {}", lines(a), lines(b));
        }
    }
    first_direct
}

#[test]
fn primers_open_every_port_restricted_pair_on_permissive_routers() {
    holepunch_lab::require_lab!();
    let took = permissive_pairs("primed", "", Duration::from_secs(10));
    assert!(took.iter().all(Option::is_some), "{took:?}");
}

/// Experiment (not CI): the same four pairs without primers, each followed for up to 75 s: does a pair that
/// lost the race at the first attempt connect when it asks again (30 s after "needs relay")? Seen: no. Before
/// primers existed, three runs gave `[Some(873ms), None, None, None]` and twice `[None, None, None, None]`; with
/// `--primer-ttl 0` once more `[None, None, None, None]`; every pair that lost the first race punched again
/// about 30 s and 60 s later and lost each time (docs/punchd.md, "NAT lab matrix").
#[test]
#[ignore = "experiment: takes minutes"]
fn permissive_race_retries() {
    holepunch_lab::require_lab!();
    permissive_pairs("race", "--primer-ttl 0", Duration::from_secs(75));
}

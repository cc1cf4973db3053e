//! Two punchd peers behind real nftables NATs in the NAT lab (docs/lab.md), with stund's rendezvous
//! (`--secret-file`) in the lab's server namespace: behind a full cone and a port-restricted cone both open
//! a direct path; two hosts behind one router (no hairpinning) connect over the LAN; behind two symmetric NATs punchd (with `--diagnose`) predicts and says that it needs a relay. Needs root, ip, nft and conntrack;
//! without them the tests skip with one line, and under CI=true they fail.
#![cfg(unix)]

mod common;
use common::lab::{Peer, World};
use holepunch::identity::SecretKey;
use holepunch_lab::{Lab, Preset, Process, SiteSpec};
use std::process::Command;
use std::time::{Duration, Instant};

/// Sites a and b behind `a` and `b`, stund with the rendezvous on the lab's server.
fn world(tag: &str, a: Preset, b: Preset) -> World {
    let lab = Lab::builder().server().site("a", a).site("b", b).build().expect("build lab");
    World::new(lab, tag, "")
}

/// punchd `name` on lab host `host` (port 6666), accepting `peer`; its stdout and stderr as lines.
fn punchd(w: &World, host: &str, name: &str, me: &SecretKey, peer: (&str, &SecretKey), extra: &str) -> Process {
    w.punchd(host, name, me, 6666, (peer.0, &peer.1.public()), extra).proc
}

/// `punchd status --json` of peer `name`.
fn status(w: &World, name: &str) -> Option<serde_json::Value> {
    Peer::status_cli_at(&w.control(name))
}

fn wait_path(w: &World, name: &str, limit: Duration) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(v) = status(w, name) {
            let p = &v["peers"][0];
            if p["path"] == "direct" && p["rtt_ms"].is_number() {
                return Ok(v);
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{name}: no direct path within {limit:?}; last status {last:?}"))
}

#[test]
fn full_cone_and_port_restricted_connect_directly() {
    holepunch_lab::require_lab!();
    let w = world("cone", Preset::FullCone, Preset::PortRestricted);
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut bob = punchd(&w, "b1", "bob", &b, ("alice", &a), "");
    let mut alice = punchd(&w, "a1", "alice", &a, ("bob", &b), "--connect bob");
    let started = Instant::now();
    let opened = alice.wait_for_line(Duration::from_secs(15), |l| l.starts_with("path to bob opened"));
    let took = started.elapsed();
    let logs = |p: &mut Process| p.drain_lines().join("\n");
    let line = opened.unwrap_or_else(|e| panic!("{e}\nalice:\n{}\nbob:\n{}", logs(&mut alice), logs(&mut bob)));
    eprintln!("{line} ({took:?} after start)");
    // The peer's public endpoint on b's router, not a LAN address.
    assert!(line.contains(&format!("direct {}:", w.lab.public_ip("b"))), "{line}");
    let v = wait_path(&w, "alice", Duration::from_secs(5)).unwrap();
    assert_eq!(v["registered"], true);
    let v = wait_path(&w, "bob", Duration::from_secs(5)).unwrap();
    assert_eq!(v["peers"][0]["remote"].as_str().map(|r| r.starts_with(&w.lab.public_ip("a").to_string())), Some(true));
}

#[test]
fn symmetric_against_symmetric_needs_relay() {
    holepunch_lab::require_lab!();
    let w = world("sym", Preset::Symmetric, Preset::Symmetric);
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    // Both diagnose their NAT at start (stund runs in RFC 5780 mode): the prediction says it before trying.
    let _bob = punchd(&w, "b1", "bob", &b, ("alice", &a), "--diagnose");
    let mut alice = punchd(&w, "a1", "alice", &a, ("bob", &b), "--diagnose --connect bob");
    let predicted = alice
        .wait_for_line(Duration::from_secs(20), |l| l.starts_with("bob: prediction"))
        .unwrap_or_else(|e| panic!("{e}\n{}", alice.drain_lines().join("\n")));
    assert_eq!(predicted, "bob: prediction: needs relay");
    let line = alice
        .wait_for_line(Duration::from_secs(20), |l| l.starts_with("bob: needs relay"))
        .unwrap_or_else(|e| panic!("{e}\n{}", alice.drain_lines().join("\n")));
    eprintln!("{line}");
    let v = status(&w, "alice").expect("status");
    assert_eq!(v["peers"][0]["path"], "none", "{v}");
    assert_eq!(v["peers"][0]["prediction"], "needs relay", "{v}");
}

/// Polls both statuses until each shows a direct path verified after `since` (and `alice_remote` holds on
/// alice's remote); how long after `since` that was first seen.
fn back_after(
    w: &World,
    since: Instant,
    limit: Duration,
    alice_remote: impl Fn(&str) -> bool,
) -> Result<Duration, String> {
    let fresh = |v: &serde_json::Value| {
        let p = &v["peers"][0];
        let age = p["last_keepalive_ms_ago"].as_u64().map(Duration::from_millis);
        p["path"] == "direct" && age.is_some_and(|a| a < since.elapsed())
    };
    let mut last = (None, None);
    while since.elapsed() < limit {
        let (a, b) = (status(w, "alice"), status(w, "bob"));
        let seen = since.elapsed();
        if let (Some(a), Some(b)) = (&a, &b) {
            if fresh(a) && fresh(b) && a["peers"][0]["remote"].as_str().is_some_and(&alice_remote) {
                return Ok(seen);
            }
        }
        last = (a, b);
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("no fresh direct path within {limit:?}: {last:?}"))
}

/// Two keepalive periods (1 s each here) plus one RTT, plus this test's polling (a status process per peer
/// every 50 ms).
const BACK_BOUND: Duration = Duration::from_millis(2000 + 10 + 300);

#[test]
fn after_a_conntrack_flush_or_a_new_public_ip_the_path_comes_back() {
    holepunch_lab::require_lab!();
    let mut w = world("flush", Preset::FullCone, Preset::PortRestricted);
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut bob = punchd(&w, "b1", "bob", &b, ("alice", &a), "");
    let mut alice = punchd(&w, "a1", "alice", &a, ("bob", &b), "--connect bob");
    alice.wait_for_line(Duration::from_secs(15), |l| l.starts_with("path to bob opened")).expect("path");
    wait_path(&w, "bob", Duration::from_secs(5)).unwrap();
    let logs = |a: &mut Process, b: &mut Process| {
        format!("alice:\n{}\nbob:\n{}", a.drain_lines().join("\n"), b.drain_lines().join("\n"))
    };

    // Site b's router forgets every mapping.
    w.lab.flush_conntrack("b").unwrap();
    let flushed = Instant::now();
    let took = back_after(&w, flushed, Duration::from_secs(10), |_| true).unwrap();
    eprintln!("conntrack flush: fresh path on both ends {took:?} later");
    assert!(took <= BACK_BOUND, "{took:?}\n{}", logs(&mut alice, &mut bob));

    // Site b gets a new public address: bob's endpoint moves, alice must learn it from a new introduction.
    let new = w.lab.change_public_ip("b").unwrap();
    let moved = Instant::now();
    let prefix = format!("{new}:");
    let took = back_after(&w, moved, Duration::from_secs(10), |r| r.starts_with(&prefix)).unwrap();
    eprintln!("new public IP {new}: path back on both ends {took:?} later");
    assert!(took <= BACK_BOUND, "{took:?}\n{}\nstund:\n{}", logs(&mut alice, &mut bob), w.stund_logs());
}

#[test]
fn two_hosts_behind_one_nat_connect_over_the_lan() {
    holepunch_lab::require_lab!();
    // One port-restricted router without hairpinning, alice and bob on its LAN; site b stays empty.
    let lab = Lab::builder()
        .server()
        .site("a", SiteSpec::new(Preset::PortRestricted).hosts(2).hairpin(false))
        .site("b", Preset::FullCone)
        .build()
        .expect("build lab");
    let w = World::new(lab, "lan", "");
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut bob = punchd(&w, "a2", "bob", &b, ("alice", &a), "");
    let mut alice = punchd(&w, "a1", "alice", &a, ("bob", &b), "--connect bob");
    let line = alice
        .wait_for_line(Duration::from_secs(15), |l| l.starts_with("path to bob opened"))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", alice.drain_lines().join("\n"), bob.drain_lines().join("\n")));
    eprintln!("{line}");
    assert!(line.starts_with("path to bob opened: lan "), "{line}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = status(&w, "bob");
        if v.as_ref().is_some_and(|v| v["peers"][0]["path"] == "lan") {
            break;
        }
        assert!(Instant::now() < deadline, "bob: {v:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The peers of the rendezvous tests: a 100 ms RTO and 4 retries (the lab's RTT is a millisecond), so a
/// registration sent while stund is down is retried within a second of its return.
const QUICK: &str = "--rto 100ms --retries 4";

/// A fresh keepalive on the direct path: the peer answered one within the last two keepalive periods.
fn direct_and_fresh(v: &serde_json::Value) -> bool {
    let p = common::lab::first_peer(v);
    p["path"] == "direct" && p["last_keepalive_ms_ago"].as_u64().is_some_and(|ms| ms < 2000)
}

#[test]
fn a_restarted_stund_keeps_the_path_and_the_peers_register_again() {
    holepunch_lab::require_lab!();
    let mut w = world("restart", Preset::FullCone, Preset::PortRestricted);
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut bob = w.punchd("b1", "bob", &b, 6666, ("alice", &a.public()), QUICK);
    let mut alice = w.punchd("a1", "alice", &a, 6666, ("bob", &b.public()), &format!("{QUICK} --connect bob"));
    for p in [&mut alice, &mut bob] {
        p.wait_status(Duration::from_secs(15), |v| direct_and_fresh(v) && v["registered"] == true).unwrap();
    }

    // stund goes away for longer than a registration lives (15 s): both peers count as unregistered, while
    // the path, which never needed the server, keeps its keepalives answered all along.
    w.stop_stund();
    let stopped = Instant::now();
    let mut unregistered = [None, None];
    while unregistered.iter().any(Option::is_none) {
        assert!(stopped.elapsed() < Duration::from_secs(20), "still registered 20 s after stund stopped");
        for (k, p) in [&mut alice, &mut bob].into_iter().enumerate() {
            let Some(v) = p.status() else { panic!("no status\n{}", p.logs()) };
            if !direct_and_fresh(&v) {
                panic!("the path must not need the server: {v}\n{}", p.logs());
            }
            if v["registered"] == false && unregistered[k].is_none() {
                unregistered[k] = Some(stopped.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("stund stopped: unregistered after {unregistered:?}, path direct and answered throughout");

    // stund is back with an empty registry: both register again within a keepalive or two, and a connect is
    // a new introduction through it (the server introduces registered peers only).
    w.start_stund();
    let back = Instant::now();
    for p in [&mut alice, &mut bob] {
        p.wait_status(Duration::from_secs(5), |v| v["registered"] == true && direct_and_fresh(v)).unwrap();
    }
    eprintln!("stund restarted: both registered again {:?} later", back.elapsed());
    alice.pump();
    let introductions = |p: &Peer| p.log.iter().filter(|l| l.starts_with("bob: prediction")).count();
    assert_eq!(introductions(&alice), 1);
    assert_eq!(alice.connect("bob")["ok"], true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while introductions(&alice) < 2 {
        assert!(Instant::now() < deadline, "no new introduction\n{}\n{}", alice.logs(), bob.logs());
        std::thread::sleep(Duration::from_millis(50));
        alice.pump();
    }
    alice.wait_status(Duration::from_secs(5), direct_and_fresh).unwrap();
}

#[test]
fn a_wrong_secret_is_refused_and_a_wrong_peer_key_opens_no_path() {
    holepunch_lab::require_lab!();
    let w = world("refusals", Preset::FullCone, Preset::PortRestricted);

    // A peer with another network secret: refused by the rendezvous, one line, exit 1.
    let (m, a) = (SecretKey::from_seed([7; 32]), SecretKey::from_seed([1; 32]));
    let wrong = w.dir.private("wrong.secret", b"not the lab's network secret\n");
    let mut mallory = w.punchd_with("a1", "mallory", &m, 6667, ("alice", &a.public()), &wrong, QUICK);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = mallory.proc.child_mut().try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "mallory still runs\n{}", mallory.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = mallory.proc.lines_until_eof(Duration::from_secs(2));
    let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("punchd: ")).collect();
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(errors, ["punchd: the server refused our credentials: wrong network secret"], "{lines:?}");

    // carol pins a key for dave that is not dave's: dave's introduction is refused and neither side gets a
    // path, however long dave punches towards carol with his real key.
    let (c, d, other) = (SecretKey::from_seed([3; 32]), SecretKey::from_seed([4; 32]), SecretKey::from_seed([5; 32]));
    let mut dave = w.punchd("b1", "dave", &d, 6668, ("carol", &c.public()), QUICK);
    let mut carol = w.punchd("a1", "carol", &c, 6668, ("dave", &other.public()), &format!("{QUICK} --connect dave"));
    carol
        .proc
        .wait_for_line(Duration::from_secs(10), |l| l.starts_with("introduction of dave refused"))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", carol.logs(), dave.logs()));
    // Longer than a whole check schedule (about 2.6 s): dave's checks all go unanswered.
    let refused = Instant::now();
    while refused.elapsed() < Duration::from_secs(4) {
        for p in [&carol, &dave] {
            let v = p.status().expect("status");
            assert_eq!(common::lab::path(&v), "none", "{}: {v}", p.name);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    dave.pump();
    eprintln!("{}", dave.log.iter().filter(|l| !l.starts_with('[')).cloned().collect::<Vec<_>>().join("\n"));
}

/// miniupnpd is there (the port-mapping tests need it); without it one line and a skip, or a failure under
/// CI=true.
fn miniupnpd_ready(test: &str) -> bool {
    if std::path::Path::new("/usr/sbin/miniupnpd").exists() {
        return true;
    }
    assert!(!holepunch_lab::in_ci(), "{test}: CI=true but miniupnpd is missing (apt-get install miniupnpd-nftables)");
    eprintln!("SKIP {test}: miniupnpd is missing (apt-get install miniupnpd-nftables)");
    false
}

/// miniupnpd's nftables rules on `site`'s router (its dnat table).
fn upnp_rules(w: &World, site: &str) -> String {
    w.lab.router(site).run(&["nft", "list", "table", "inet", holepunch_lab::portmap::NAT_TABLE]).unwrap_or_default()
}

#[test]
fn symmetric_against_symmetric_connects_through_a_port_mapping() {
    holepunch_lab::require_lab!();
    if miniupnpd_ready("symmetric_against_symmetric_connects_through_a_port_mapping") {
        through_a_port_mapping("pmap", true);
    }
}

/// As above, but the peer behind the mapping waits and the other connects: the mapping reaches the peer
/// through the server all the same.
#[test]
fn symmetric_against_symmetric_connects_through_the_waiting_peers_port_mapping() {
    holepunch_lab::require_lab!();
    if miniupnpd_ready("symmetric_against_symmetric_connects_through_the_waiting_peers_port_mapping") {
        through_a_port_mapping("pmapw", false);
    }
}

/// alice behind a random symmetric NAT whose router maps ports, bob behind one that does not; alice connects
/// (`alice_connects`) or bob does.
fn through_a_port_mapping(tag: &str, alice_connects: bool) {
    // Two random symmetric NATs; only a's router maps ports (miniupnpd: NAT-PMP, PCP, UPnP IGD).
    let lab = Lab::builder()
        .server()
        .site("a", SiteSpec::new(Preset::Symmetric).port_mapping())
        .site("b", Preset::Symmetric)
        .build()
        .expect("build lab");
    let w = World::new(lab, tag, "");
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let (alice_extra, bob_extra) = if alice_connects { ("--connect bob", "") } else { ("", "--connect alice") };
    let mut bob = punchd(&w, "b1", "bob", &b, ("alice", &a), bob_extra);
    let mut alice = punchd(&w, "a1", "alice", &a, ("bob", &b), alice_extra);
    let logs = |p: &mut Process| p.drain_lines().join("\n");

    // alice's status shows the mapping: a's public address, and miniupnpd holds the rule.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mapped = loop {
        if let Some(m) = status(&w, "alice").and_then(|v| v["port_mapped"].as_str().map(String::from)) {
            break m;
        }
        assert!(Instant::now() < deadline, "no port mapping in alice's status\n{}", logs(&mut alice));
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("alice's port-mapped candidate: {mapped}");
    assert!(mapped.starts_with(&format!("{}:", w.lab.public_ip("a"))), "{mapped}");
    let port = mapped.rsplit(':').next().unwrap().to_string();
    assert!(upnp_rules(&w, "a").contains(&format!("dport {port}")), "{}", upnp_rules(&w, "a"));

    // bob reaches alice through her mapping; the path runs to the port-mapped candidate.
    let line = bob
        .wait_for_line(Duration::from_secs(20), |l| l.starts_with("path to alice opened"))
        .unwrap_or_else(|e| panic!("{e}\nbob:\n{}\nalice:\n{}", logs(&mut bob), logs(&mut alice)));
    eprintln!("{line}");
    assert!(line.contains(&format!("direct {mapped} via port-mapped")), "{line}");
    wait_path(&w, "alice", Duration::from_secs(10)).unwrap();

    // SIGTERM: alice deletes the mapping before she exits.
    let killed = Command::new("kill").args(["-TERM", &alice.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let lines = alice.lines_until_eof(Duration::from_secs(10));
    assert!(lines.iter().any(|l| l.contains(&format!("port mapping {mapped} deleted"))), "{}", lines.join("\n"));
    assert!(!upnp_rules(&w, "a").contains(&format!("dport {port}")), "{}", upnp_rules(&w, "a"));
}

/// The documented bound of birthday probing (docs/punchd.md, "Birthday probing"): 2048 probes at 200 per
/// second, 10.24 s at most, plus the diagnosis at start (10 s at most) and the rendezvous.
const BIRTHDAY_BOUND: Duration = Duration::from_secs(35);

#[test]
fn random_symmetric_against_a_cone_connects_by_birthday_probing() {
    holepunch_lab::require_lab!();
    // The cone filters by address and port, so only a met birthday port opens (a full cone would be direct).
    let w = world("bday", Preset::Symmetric, Preset::PortRestricted);
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut bob = punchd(&w, "b1", "bob", &b, ("alice", &a), "--diagnose --no-portmap");
    let mut alice = punchd(&w, "a1", "alice", &a, ("bob", &b), "--diagnose --no-portmap --connect bob");
    let started = Instant::now();
    let logs = |p: &mut Process| p.drain_lines().join("\n");
    let predicted = alice
        .wait_for_line(Duration::from_secs(20), |l| l.starts_with("bob: prediction"))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&mut alice)));
    assert!(predicted.starts_with("bob: prediction: direct via birthday probing"), "{predicted}");
    let probing = Instant::now();
    let line = alice
        .wait_for_line(BIRTHDAY_BOUND, |l| l.starts_with("path to bob opened"))
        .unwrap_or_else(|e| panic!("{e}\nalice:\n{}\nbob:\n{}", logs(&mut alice), logs(&mut bob)));
    let took = started.elapsed();
    eprintln!("{line} ({took:?} after start, {:?} after the prediction)", probing.elapsed());
    assert!(line.contains(&format!("direct {}:", w.lab.public_ip("b"))), "{line}");
    assert!(took <= BIRTHDAY_BOUND, "{took:?}");
    wait_path(&w, "bob", Duration::from_secs(5)).unwrap();
}

//! Two punchd peers and stund's rendezvous as real processes on loopback (docs/punchd.md, "Two peers"): alice
//! connects to bob and both report a verified direct path with an RTT in `punchd status --json`; a wrong
//! pinned key opens no path; a wrong network secret ends punchd with the one-line refusal.
#![cfg(unix)]

use holepunch::identity::SecretKey;
use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{stund_bin, Scratch, PUNCHD as BIN};

const SECRET: &[u8] = b"the loopback network secret\n";

/// A process killed and reaped on drop; its stdout and stderr go to files.
struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, tag: &str, bin: &Path, args: &[String]) -> Proc {
        let (out, err) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Proc { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

struct Net {
    dir: Scratch,
    server: String,
    stund: Proc,
    stund_args: Vec<String>,
}

fn stund(tag: &str) -> Net {
    let dir = Scratch::new(tag);
    let secret = dir.private("net.secret", SECRET);
    let port = free_udp_port();
    let args: Vec<String> = [
        "--primary",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--no-tcp",
        "--rate-limit",
        "0",
        "--threads",
        "1",
        "--stats-interval",
        "0",
        "--secret-file",
        secret.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stund = Proc::spawn(&dir.0, "stund", &stund_bin(), &args);
    Net { dir, server: format!("127.0.0.1:{port}"), stund, stund_args: args }
}

/// punchd `name` with key `me`, accepting `peer` with `peer_key`, secret file `secret`, extra flags.
fn punchd(net: &Net, name: &str, me: &SecretKey, peer: (&str, &SecretKey), secret: &[u8], extra: &[&str]) -> Proc {
    let key = net.dir.private(&format!("{name}.key"), format!("{}\n", me.to_base64()).as_bytes());
    let secret = net.dir.private(&format!("{name}.secret"), secret);
    let control = net.dir.0.join(format!("{name}.sock"));
    let mut args: Vec<String> = [
        "--peer-id",
        name,
        "--server",
        &net.server,
        "--bind",
        "127.0.0.1",
        "--port",
        &free_udp_port().to_string(),
        "--key",
        key.to_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
        "--peer",
        &format!("{}={}", peer.0, peer.1.public().to_base64()),
        "--control",
        control.to_str().unwrap(),
        "--keepalive",
        "1s",
        "--no-tun",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&net.dir.0, name, Path::new(BIN), &args)
}

/// `punchd status --json` of `name` (None while its control socket is not up yet).
fn status(net: &Net, name: &str) -> Option<serde_json::Value> {
    let control = net.dir.0.join(format!("{name}.sock"));
    let out = Command::new(BIN).args(["status", "--json", "--control", control.to_str().unwrap()]).output().unwrap();
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `done` on `name`'s status until it holds or `limit` passes; the last status either way.
fn wait_status(net: &Net, name: &str, limit: Duration, done: impl Fn(&serde_json::Value) -> bool) -> (bool, String) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(v) = status(net, name) {
            last = v.to_string();
            if done(&v) {
                return (true, last);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    (false, last)
}

fn has_path(v: &serde_json::Value) -> bool {
    let p = &v["peers"][0];
    (p["path"] == "direct" || p["path"] == "lan") && p["rtt_ms"].is_number()
}

#[test]
fn alice_connects_to_bob_and_both_see_a_direct_path() {
    let net = stund("ok");
    let (a, b) = (key(1), key(2));
    let bob = punchd(&net, "bob", &b, ("alice", &a), SECRET, &[]);
    let alice = punchd(&net, "alice", &a, ("bob", &b), SECRET, &["--connect", "bob"]);
    let started = Instant::now();
    let (ok, last) = wait_status(&net, "alice", Duration::from_secs(10), has_path);
    assert!(ok, "alice: {last}\n{}\nbob: {}", alice.logs(), bob.logs());
    let took = started.elapsed();
    let (ok, last) = wait_status(&net, "bob", Duration::from_secs(5), has_path);
    assert!(ok, "bob: {last}\n{}", bob.logs());
    eprintln!("path on loopback after {took:?} (both daemons started at once): {last}");
    let v = status(&net, "alice").unwrap();
    assert_eq!(v["registered"], true);
    assert_eq!(v["peers"][0]["prediction"], "direct expected");
    let out = alice.stdout();
    assert!(out.lines().any(|l| l.starts_with("path to bob opened: direct 127.0.0.1:")), "{out}");
    assert!(out.lines().any(|l| l.contains(", rtt ")), "{out}");
}

#[test]
fn a_wrong_pinned_key_opens_no_path() {
    let net = stund("pin");
    let (a, b, mallory) = (key(1), key(2), key(3));
    let _bob = punchd(&net, "bob", &b, ("alice", &a), SECRET, &[]);
    let alice = punchd(&net, "alice", &a, ("bob", &mallory), SECRET, &["--connect", "bob"]);
    let (refused, _) = wait_status(&net, "alice", Duration::from_secs(10), |_| {
        alice.stdout().lines().any(|l| l.starts_with("introduction of bob refused"))
    });
    assert!(refused, "{}", alice.logs());
    thread::sleep(Duration::from_secs(3));
    for name in ["alice", "bob"] {
        let v = status(&net, name).unwrap();
        assert_eq!(v["peers"][0]["path"], "none", "{name}: {v}");
    }
}

#[test]
fn a_wrong_secret_ends_punchd_with_one_line() {
    let net = stund("secret");
    let (a, b) = (key(1), key(2));
    let mut alice = punchd(&net, "alice", &a, ("bob", &b), b"not the network secret at all\n", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = alice.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "still running: {}", alice.logs());
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1), "{}", alice.logs());
    let err = alice.stderr();
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(last, "punchd: the server refused our credentials: wrong network secret", "{err}");
}

/// One request line on `name`'s control socket, one answer line back.
fn control(net: &Net, name: &str, line: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(net.dir.0.join(format!("{name}.sock"))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn a_restarted_stund_keeps_the_path_and_introduces_again() {
    let mut net = stund("restart");
    let (a, b) = (key(1), key(2));
    let bob = punchd(&net, "bob", &b, ("alice", &a), SECRET, &[]);
    let alice = punchd(&net, "alice", &a, ("bob", &b), SECRET, &["--connect", "bob"]);
    let (ok, last) = wait_status(&net, "alice", Duration::from_secs(10), has_path);
    assert!(ok, "{last}\n{}", alice.logs());
    let introduced = |p: &Proc| p.stdout().lines().filter(|l| l.starts_with("bob: prediction")).count();
    assert_eq!(introduced(&alice), 1);

    // stund stops (its registry is gone) and comes back on the same port.
    net.stund.child.kill().unwrap();
    net.stund.child.wait().unwrap();
    net.stund = Proc::spawn(&net.dir.0, "stund-2", &stund_bin(), &net.stund_args);
    thread::sleep(Duration::from_secs(3));
    for name in ["alice", "bob"] {
        let v = status(&net, name).unwrap();
        assert!(has_path(&v), "{name}: the path does not need the server: {v}");
    }
    // Both re-registered with the new server (keepalive 1 s): a connect now is a new introduction.
    assert_eq!(control(&net, "alice", r#"{"cmd":"connect","peer":"bob"}"#)["ok"], true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while introduced(&alice) < 2 {
        assert!(Instant::now() < deadline, "no second introduction:\n{}\n{}", alice.logs(), bob.logs());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(has_path(&status(&net, "alice").unwrap()));
}

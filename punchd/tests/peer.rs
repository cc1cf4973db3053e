//! punchd's peer side on loopback: `genkey` / `pubkey` (and their agreement with WireGuard's `wg`), key and
//! secret file checks, flag and config validation, and the control socket (mode, status, stale socket, a
//! second daemon). Unix only: the control socket and file modes are.
#![cfg(unix)]

use holepunch::io::blocking;
use holepunch::signal::{MemoryRegistry, NetworkSecret, Server, ServerConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_punchd");
const SECRET: &[u8] = b"a network secret of some length\n";

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    wait_output(child, Duration::from_secs(10))
}

/// The child's output, killing it if it runs longer than `limit`.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("punchd did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("punchd-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_mode(path: &Path, content: &[u8], mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn genkey() -> String {
    let out = run(&["genkey"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn pubkey(secret: &str) -> String {
    let out = run(&["pubkey"], secret.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn genkey_and_pubkey_round_trip_like_wg() {
    let k = genkey();
    assert_eq!(k.len(), 44, "{k}");
    let p = pubkey(&format!("{k}\n"));
    assert_eq!(p.len(), 44);
    assert_ne!(p, k);
    assert_eq!(pubkey(&k), p, "with or without the newline");
    assert_ne!(genkey(), k, "fresh randomness each time");
}

#[test]
fn genkey_into_a_file_makes_it_private() {
    let d = scratch("genkey");
    let path = d.join("alice.key");
    // A file the shell created with a lax umask, as `punchd genkey > alice.key` under umask 022 does.
    write_mode(&path, b"", 0o644);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let out = Command::new(BIN).arg("genkey").stdout(file).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode_of(&path), 0o600);
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(key.ends_with('\n') && key.trim().len() == 44, "{key:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn pubkey_of_a_malformed_key_is_one_line_exit_1() {
    for bad in [&b"hello\n"[..], b"", b"AAAA\n", &[0xff, 0xfe, 0x00]] {
        let out = run(&["pubkey"], bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("punchd: standard input is not a key"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// WireGuard's tools and ours read each other's keys. `wg` comes from wireguard-tools
/// (scripts/install-deps.sh); without it the test is skipped, except in CI.
#[test]
fn keys_agree_with_wireguard_tools() {
    let Ok(wg) = Command::new("wg").arg("genkey").output() else {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "wg (wireguard-tools) is required in CI");
        eprintln!("skipped: wg not installed (apt-get install wireguard-tools)");
        return;
    };
    let theirs = text(&wg.stdout);
    let mut child = Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let ours = genkey();
    child.stdin.take().unwrap().write_all(format!("{ours}\n").as_bytes()).unwrap();
    let wg_pub_of_ours = text(&child.wait_with_output().unwrap().stdout).trim().to_string();
    assert_eq!(wg_pub_of_ours, pubkey(&ours), "wg pubkey of punchd genkey");
    let mut child = Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(theirs.as_bytes()).unwrap();
    let wg_pub_of_theirs = text(&child.wait_with_output().unwrap().stdout).trim().to_string();
    assert_eq!(pubkey(&theirs), wg_pub_of_theirs, "punchd pubkey of wg genkey");
}

/// A peer's files in `dir`: its key (mode `key_mode`), the network secret, and another peer's public key.
struct Files {
    dir: PathBuf,
    key: PathBuf,
    secret: PathBuf,
    public: String,
    bob: String,
}

fn files(tag: &str, key_mode: u32) -> Files {
    let dir = scratch(tag);
    let (key, secret) = (dir.join("alice.key"), dir.join("net.secret"));
    let k = genkey();
    write_mode(&key, format!("{k}\n").as_bytes(), key_mode);
    write_mode(&secret, SECRET, 0o600);
    Files { public: pubkey(&k), bob: pubkey(&genkey()), dir, key, secret }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The daemon's peer-mode flags for `f`, against `server`, on UDP `port`, with control socket `control`.
fn peer_args(f: &Files, server: SocketAddr, port: u16, control: &Path) -> Vec<String> {
    [
        "--peer-id",
        "alice",
        "--server",
        &server.to_string(),
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--key",
        f.key.to_str().unwrap(),
        "--secret-file",
        f.secret.to_str().unwrap(),
        "--peer",
        &format!("bob={}", f.bob),
        "--control",
        control.to_str().unwrap(),
        "--no-tun",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Exit code and stderr of a daemon expected to refuse to start.
fn refused(args: &[String]) -> (Option<i32>, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, b"");
    (out.status.code(), text(&out.stderr))
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let f = files("mode", 0o644);
    let (code, err) = refused(&peer_args(&f, "127.0.0.1:9".parse().unwrap(), free_udp_port(), &f.dir.join("c.sock")));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let k = f.key.display();
    assert_eq!(err.trim_end(), format!("punchd: {k} is readable by others (mode 0644); chmod 600 {k}"));

    std::fs::set_permissions(&f.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&f.secret, std::fs::Permissions::from_mode(0o660)).unwrap();
    let (code, err) = refused(&peer_args(&f, "127.0.0.1:9".parse().unwrap(), free_udp_port(), &f.dir.join("c.sock")));
    assert_eq!(code, Some(1));
    assert!(err.contains("net.secret is readable and writable by others (mode 0660); chmod 600"), "{err}");

    std::fs::remove_file(&f.key).unwrap();
    let (code, err) = refused(&peer_args(&f, "127.0.0.1:9".parse().unwrap(), free_udp_port(), &f.dir.join("c.sock")));
    assert_eq!(code, Some(1));
    assert!(err.trim_end().ends_with("alice.key does not exist"), "{err}");
}

#[test]
fn bad_peer_configuration_is_one_line_exit_4() {
    let f = files("config", 0o600);
    let base = peer_args(&f, "127.0.0.1:9".parse().unwrap(), free_udp_port(), &f.dir.join("c.sock"));
    let with =
        |extra: &[&str]| -> Vec<String> { base.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect() };
    let mut cases: Vec<(Vec<String>, String)> = vec![
        (with(&["--connect", "carol"]), "--connect carol: not a configured peer".into()),
        (with(&["--peer", &format!("carol={}", f.bob)]), "--peer carol: same key as peer bob".into()),
        (with(&["--peer", "bob=AAAA"]), "--peer bob: bad public key".into()),
        (with(&["--peer", &format!("me={}", f.public)]), "--peer me: that is this peer's own public key".into()),
    ];
    let mut renamed = base.clone();
    renamed[1] = "no spaces".into();
    cases.push((renamed, "--peer-id \"no spaces\": a peer name may hold".into()));
    for (args, want) in cases {
        let (code, err) = refused(&args);
        assert_eq!(code, Some(4), "{want}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("punchd: {want}")), "{want}: {err}");
    }

    // The same from a TOML file, whose relative paths are the file's directory's.
    let cfg = f.dir.join("alice.toml");
    std::fs::write(
        &cfg,
        format!(
            "peer_id = \"alice\"\nserver = \"127.0.0.1:9\"\nkey = \"alice.key\"\nsecret_file = \"net.secret\"\n\
             [[peer]]\nname = \"bob\"\nkey = \"{b}\"\n[[peer]]\nname = \"bob\"\nkey = \"{p}\"\n",
            b = f.bob,
            p = pubkey(&genkey())
        ),
    )
    .unwrap();
    let (code, err) = refused(&["--config".into(), cfg.to_str().unwrap().into()]);
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(err.trim_end(), "punchd: --peer bob: configured twice");
    std::fs::write(&cfg, "peer_id = \"alice\"\nsurprise = 1\n").unwrap();
    let (code, err) = refused(&["--config".into(), cfg.to_str().unwrap().into()]);
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown field `surprise`"), "{err}");
}

/// The rendezvous (the library's `signal::Server`, as stund runs it with `--secret-file`) on loopback, with
/// the secret `files` writes, for up to 60 s.
struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn responder() -> Responder {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let now = Instant::now();
    let secret = NetworkSecret::from_file_bytes(SECRET);
    let server = Server::new(ServerConfig::new(secret), MemoryRegistry::new(16, now), [7; 32], now).unwrap();
    let driver = blocking::Driver::new(vec![sock])
        .unwrap()
        .stop_flag(Arc::clone(&stop))
        .wake_every(Duration::from_millis(50))
        .deadline(now + Duration::from_secs(60));
    thread::spawn(move || {
        let mut server = server;
        let _ = driver.run(&mut server, |_| ControlFlow::<()>::Continue(()));
    });
    Responder { addr, stop }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// The daemon under umask 000, so the socket's 0600 is the daemon's doing, not the test's umask.
    fn start(args: &[String]) -> Daemon {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("umask 000; exec \"$0\" \"$@\"").arg(BIN).args(args);
        Daemon(cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "punchd did not stop on SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_for_socket(path: &Path, d: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if let Some(st) = d.0.try_wait().unwrap() {
            let mut err = String::new();
            d.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("punchd exited ({st}) before its control socket appeared: {err}");
        }
        assert!(Instant::now() < deadline, "no control socket at {}", path.display());
        thread::sleep(Duration::from_millis(20));
    }
}

/// `punchd status --json` until the reflexive endpoint is known (bounded).
fn status_json(control: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(&["status", "--json", "--control", control.to_str().unwrap()], b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if !v["reflexive"].is_null() || Instant::now() > deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One raw request line on the control socket, one answer line back.
fn raw(control: &Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(control).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn control_socket_serves_status_and_is_private() {
    let f = files("control", 0o600);
    let r = responder();
    let control = f.dir.join("alice.sock");
    let port = free_udp_port();
    let mut d = Daemon::start(&peer_args(&f, r.addr, port, &control));
    wait_for_socket(&control, &mut d);
    assert_eq!(mode_of(&control), 0o600, "only the daemon's user may use it");

    let v = status_json(&control);
    let local = format!("127.0.0.1:{port}");
    assert_eq!(v["name"], "alice");
    assert_eq!(v["key"], f.public.as_str());
    assert_eq!(v["local"], local.as_str());
    assert_eq!(v["reflexive"], local.as_str(), "loopback has no NAT");
    assert_eq!(v["server"], r.addr.to_string());
    assert_eq!(v["registered"], true);
    let bob = &v["peers"][0];
    assert_eq!(bob["name"], "bob");
    assert_eq!(bob["key"], f.bob.as_str());
    assert_eq!(bob["path"], "none");
    for field in ["remote", "rtt_ms", "last_keepalive_ms_ago", "prediction"] {
        assert!(bob.get(field).is_some_and(|x| x.is_null()), "{field} present and null: {bob}");
    }
    assert_eq!(bob["pairs"], serde_json::json!([]));

    let human = run(&["status", "--control", control.to_str().unwrap()], b"");
    let human = text(&human.stdout);
    assert!(human.starts_with("alice ") && human.contains(&local), "{human}");
    assert!(human.lines().any(|l| l.starts_with("bob ") && l.contains("none")), "{human}");

    // The line protocol itself: connect needs a configured peer; nonsense is an error line, not a hang.
    let a = raw(&control, r#"{"cmd":"connect","peer":"carol"}"#);
    assert_eq!((a["ok"].as_bool(), a["error"].as_str()), (Some(false), Some("carol is not a configured peer")));
    // Bob is configured (not registered: the node asks the server again later).
    let a = raw(&control, r#"{"cmd":"connect","peer":"bob"}"#);
    assert_eq!(a["ok"], true, "{a}");
    let a = raw(&control, "hello");
    assert!(a["error"].as_str().unwrap().starts_with("bad request"), "{a}");
    let a = raw(&control, &"x".repeat(10_000));
    assert!(a["error"].as_str().unwrap().contains("longer than 4096"), "{a}");

    // A second daemon on the same control socket (another UDP port) is refused; the first keeps it.
    let (code, err) = refused(&peer_args(&f, r.addr, free_udp_port(), &control));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim_end(), format!("punchd: another punchd is running on control socket {}", control.display()));
    assert!(status_json(&control)["name"] == "alice");

    assert!(d.stop().success());
    assert!(std::fs::symlink_metadata(&control).is_err(), "the socket is removed on exit");
    let out = run(&["status", "--control", control.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no punchd is running with control socket"), "{err}");
}

#[test]
fn a_stale_control_socket_is_replaced() {
    let f = files("stale", 0o600);
    let r = responder();
    let control = f.dir.join("alice.sock");
    drop(UnixListener::bind(&control).unwrap());
    assert!(std::fs::symlink_metadata(&control).unwrap().file_type().is_socket(), "left behind");
    let out = run(&["status", "--control", control.to_str().unwrap()], b"");
    assert!(text(&out.stderr).contains("(stale socket)"), "{}", text(&out.stderr));

    let mut d = Daemon::start(&peer_args(&f, r.addr, free_udp_port(), &control));
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&control).is_err() {
        assert!(d.0.try_wait().unwrap().is_none(), "punchd exited instead of replacing the stale socket");
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status_json(&control)["name"], "alice");
    assert_eq!(mode_of(&control), 0o600);

    // A path that is not a socket is never removed.
    let plain = f.dir.join("plain");
    write_mode(&plain, b"keep me", 0o600);
    let (code, err) = refused(&peer_args(&f, r.addr, free_udp_port(), &plain));
    assert_eq!(code, Some(1));
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
}

#[test]
fn status_needs_a_peer_id_or_a_path() {
    let out = run(&["status"], b"");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stderr).trim_end(), "punchd: status needs --peer-id NAME or --control PATH");
}

/// Without CAP_NET_ADMIN the tunnel device cannot be made: one line that says so, before anything is sent.
/// As root the capability is taken away with setpriv (util-linux); as a user the process never had it.
#[test]
fn the_tunnel_without_cap_net_admin_is_one_line() {
    let f = files("nocap", 0o600);
    let mut args = peer_args(&f, "127.0.0.1:9".parse().unwrap(), free_udp_port(), &f.dir.join("c.sock"));
    args.retain(|a| a != "--no-tun");
    args.extend(["--tun-name".to_string(), "hpnocap0".to_string()]);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set", "-net_admin", "--inh-caps", "-net_admin", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let child = cmd.args(&args).env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let Ok(child) = child else {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "setpriv is missing (util-linux)");
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    };
    let out = wait_output(child, Duration::from_secs(10));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("punchd: creating the tunnel device hpnocap0 needs CAP_NET_ADMIN"), "{err}");
    assert!(err.contains("--no-tun"), "{err}");
}

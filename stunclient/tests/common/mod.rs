//! Helpers for the stunclient integration tests: free ports, server processes killed on drop, tool lookup
//! (CI=true turns a missing tool into a failure), and running stunclient for its JSON.
#![allow(dead_code)]

use holepunch::stun::{Class, Message, MessageType, MessageWriter, Method};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `Some(path)` if the tool exists; otherwise skip (one line) or, under CI, fail.
pub fn tool(path: &str, package: &str) -> Option<PathBuf> {
    let p = if path.contains('/') {
        PathBuf::from(path)
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(path)).find(|p| p.exists()))
            .unwrap_or_else(|| PathBuf::from(path))
    };
    if p.exists() {
        return Some(p);
    }
    assert!(!ci(), "{path} is missing (Debian package {package}); CI must install it");
    eprintln!("SKIP: {path} not installed (apt-get install {package})");
    None
}

/// A child process killed (and reaped) when dropped, also when the test fails.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name: name.into(), child }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port free on every address in `ips` (bound then released; collisions are unlikely at random).
pub fn free_port(ips: &[&str]) -> u16 {
    for _ in 0..200 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        drop(s);
        if ips.iter().all(|ip| UdpSocket::bind((*ip, port)).is_ok()) {
            return port;
        }
    }
    panic!("no free UDP port");
}

/// Wait until a STUN server answers a Binding request at `addr` (bounded: 5 s).
pub fn wait_ready(addr: SocketAddr) {
    let s = UdpSocket::bind(if addr.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut req = [0u8; 64];
    let w = MessageWriter::new(&mut req, MessageType::new(Method::BINDING, Class::Request), &[9; 12]).unwrap();
    let n = w.finish();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = s.send_to(&req[..n], addr);
        if let Ok((len, _)) = s.recv_from(&mut buf) {
            if Message::parse(&buf[..len]).is_ok_and(|m| m.class() == Class::Success) {
                return;
            }
        }
    }
    panic!("STUN server at {addr} never answered");
}

pub fn stunclient_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stunclient"))
}

/// Our stund: next to the stunclient binary; built on demand.
pub fn stund_bin() -> PathBuf {
    let dir = stunclient_bin().parent().unwrap().to_path_buf();
    let p = dir.join("stund");
    if !p.exists() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "stund", "--manifest-path"]).arg(manifest);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build -p stund");
        assert!(st.success(), "cargo build -p stund failed");
    }
    assert!(p.exists(), "{} missing after build", p.display());
    p
}

/// Start our stund. `alternate`: Some((ip, port)) for RFC 5780 mode.
pub fn start_stund(primary: &str, port: u16, alternate: Option<(&str, u16)>) -> Proc {
    let mut cmd = Command::new(stund_bin());
    cmd.args(["--primary", primary, "--port", &port.to_string(), "--no-tcp", "--rate-limit", "0"]);
    cmd.args(["--threads", "1", "--stats-interval", "0"]);
    if let Some((ip, p)) = alternate {
        cmd.args(["--alternate", ip, "--alt-port", &p.to_string()]);
    }
    let proc = Proc::spawn("stund", &mut cmd);
    wait_ready(SocketAddr::new(primary.parse().unwrap(), port));
    proc
}

/// Start coturn as a STUN-only server. Two listening IPs turn on its RFC 5780 mode.
pub fn start_coturn(bin: &Path, ips: &[&str], port: u16, alt_port: u16) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.args(["-n", "-S", "--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout"]);
    for ip in ips {
        cmd.args(["-L", ip]);
    }
    cmd.args(["-p", &port.to_string(), "--alt-listening-port", &alt_port.to_string()]);
    let proc = Proc::spawn("turnserver", &mut cmd);
    wait_ready(SocketAddr::new(ips[0].parse().unwrap(), port));
    proc
}

/// Start Vovida's RFC 3489 stund (always by absolute path: ours has the same name).
pub fn start_vovida(bin: &Path, ip: &str, alt_ip: &str, port: u16, alt_port: u16) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.args(["-h", ip, "-a", alt_ip, "-p", &port.to_string(), "-o", &alt_port.to_string()]);
    let proc = Proc::spawn("vovida stund", &mut cmd);
    wait_ready(SocketAddr::new(ip.parse().unwrap(), port));
    proc
}

/// Fast schedule for tests: RTO 50 ms, 4 sends -> a silent test gives up after 1.15 s.
pub const FAST: [&str; 4] = ["--timeout", "50ms", "--retries", "4"];

pub fn run_stunclient(args: &[&str]) -> Output {
    let out = Command::new(stunclient_bin()).args(args).output().expect("run stunclient");
    out
}

/// Run with `--json --no-portmap` plus `args`; returns the parsed JSON (exit code must be 0).
pub fn diagnose(args: &[&str]) -> Value {
    let mut all = vec!["--json", "--no-portmap"];
    all.extend_from_slice(args);
    let out = run_stunclient(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stunclient {all:?} failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

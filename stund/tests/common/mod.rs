//! Shared helpers for the stund integration tests: start the built binary on loopback, talk STUN to it, and
//! always kill it at the end (Drop), also when a test fails.
#![allow(dead_code)]

use holepunch::stun::{Attribute, ChangeRequest, Class, Message, MessageType, MessageWriter, Method};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stund");
pub const SOFTWARE: &str = "stund-test";

/// A running stund; killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub alt_port: u16,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

/// Ports per test process spread out by pid so parallel test binaries rarely collide; a collision is
/// retried with the next pair.
fn next_port_pair() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 400) as u16 * 100;
    base + NEXT.fetch_add(2, Ordering::Relaxed) % 100
}

impl Server {
    /// Starts stund with `args` plus `--port`/`--alt-port` it picks, `--stats-interval 0`, a fixed SOFTWARE,
    /// and waits for its "ready" line. Retries on a port clash.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(&[], args)
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut last = String::new();
        for _ in 0..8 {
            let port = next_port_pair();
            let alt = port + 1;
            match Self::try_start(env, args, port, alt) {
                Ok(s) => return s,
                Err(log) if log.contains("already in use") => last = log,
                Err(log) => panic!("stund did not start with {args:?}:\n{log}"),
            }
        }
        panic!("no free port pair for stund: {last}");
    }

    fn try_start(env: &[(&str, &str)], args: &[&str], port: u16, alt_port: u16) -> Result<Server, String> {
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied())
            .args(args)
            .args(["--port", &port.to_string(), "--alt-port", &alt_port.to_string()])
            .args(["--stats-interval", "0", "--software", SOFTWARE])
            .env("RUST_LOG", "info")
            .env_remove("STUND_RATE_LIMIT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Self::spawn_and_wait(cmd, port, alt_port)
    }

    /// Spawns `cmd` (stderr piped) and waits up to 10 s for "ready".
    pub fn spawn_and_wait(mut cmd: Command, port: u16, alt_port: u16) -> Result<Server, String> {
        let mut child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let ready = line.contains("ready");
                    log.lock().unwrap().push_str(&(line + "\n"));
                    if ready {
                        let _ = tx.send(());
                    }
                }
            });
        }
        let mut server = Server { child: Some(child), port, alt_port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                std::thread::sleep(Duration::from_millis(100));
                server.child = None;
                return Err(format!("exited with {status}: {}", server.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("no 'ready' line within 10 s: {}", server.log()));
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("server running")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends `signal` and waits up to `limit` for the exit.
    pub fn signal_and_wait(&mut self, signal: i32, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Binding request with a fixed transaction id derived from `n`, optional CHANGE-REQUEST, optional
/// RESPONSE-PORT, and FINGERPRINT.
pub fn binding_request(n: u8, change: Option<(bool, bool)>, response_port: Option<u16>) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let tid = [n; 12];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &tid).unwrap();
    if let Some((change_ip, change_port)) = change {
        w.add(&Attribute::ChangeRequest(ChangeRequest { change_ip, change_port })).unwrap();
    }
    if let Some(p) = response_port {
        w.add(&Attribute::ResponsePort(p)).unwrap();
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

/// A UDP socket on 127.0.0.1 (or ::1) with a receive timeout.
pub fn client(v6: bool) -> UdpSocket {
    let s = UdpSocket::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s
}

/// Sends `req` to `to` (retrying up to 5 times on silence, as a STUN client would) and returns the answer
/// and where it came from.
pub fn transact(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        sock.send_to(req, to).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}

/// Checks a success response to `req` and returns it parsed.
pub fn expect_success<'a>(resp: &'a [u8], req: &[u8]) -> Message<'a> {
    let m = Message::parse(resp).expect("response parses");
    assert_eq!(m.message_type(), MessageType::new(Method::BINDING, Class::Success));
    assert_eq!(m.raw_id(), &req[4..20], "transaction id echoed");
    assert_eq!(m.check_fingerprint(), Ok(true));
    assert_eq!(m.software(), Some(SOFTWARE));
    m
}

/// One STUN transaction over a TCP stream.
pub fn tcp_transact(stream: &mut TcpStream, req: &[u8]) -> Vec<u8> {
    stream.write_all(req).unwrap();
    let mut head = [0u8; 20];
    stream.read_exact(&mut head).unwrap();
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).unwrap();
    let mut all = head.to_vec();
    all.extend_from_slice(&rest);
    all
}

/// `GET path` on `addr`, returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of a Prometheus sample line `name` (with labels) in `text`.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A free loopback TCP port for the metrics listener.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls the metrics endpoint (up to 2 s) until sample `name` satisfies `ok`; returns the last value.
/// Workers publish their counters after each batch, a moment after the answer left.
pub fn wait_metric(addr: SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let v = metric(&http_get(addr, "/metrics"), name);
        if ok(v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tool's path, or None (skip) — or a panic when CI=true.
pub fn tool(name: &str, package: &str) -> Option<String> {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return Some(p);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} not found and CI=true: install the Debian package {package}");
    }
    eprintln!("skipped: {name} not found (Debian package {package})");
    None
}

/// Runs a command with a time limit (killed after it), returning exit code and stdout+stderr.
pub fn run(path: &str, args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let out_file = tempfile_path("out");
    let f = std::fs::File::create(&out_file).unwrap();
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {path}: {e}"));
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    (code, text)
}

pub fn tempfile_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "stund-interop-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

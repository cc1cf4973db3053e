//! Rendezvous speed through the real stund over loopback UDP (docs/signal.md, "Speed"), with the registry in
//! memory, shared through Redis, and across two instances on one Redis (docs/signal.md, "Cluster").
//!
//! Each mode starts its own stund(s) with `--secret-file`, both rate limiters off and one worker thread (and,
//! for Redis, its own `redis-server` on a free loopback port, no persistence), then:
//! - **registrations**: loads stund from [`SOCKETS`] client sockets on two threads, each socket with one
//!   request in flight: first [`NEW`] registrations of distinct names (each one a new registry entry), then
//!   [`REFRESH_FOR`] of refreshes of the names already registered (the steady state: every peer refreshes every
//!   3 s). With two instances each thread loads its own instance. Prints requests per second and answers lost.
//! - **connects**: [`PAIRS`] requesters registered at the first instance each CONNECT to their own target,
//!   registered at the first instance (memory, redis) or the second (cluster), over and over (every peer answers
//!   its PUSHes, so each CONNECT pushes both again); prints pushes to targets per second and the latency from
//!   CONNECT sent to the target's PUSH received (p50, p99).
//! - **Redis memory**: bytes per registered peer in Redis (`INFO memory` before and after, and `MEMORY USAGE` of
//!   one key).
//!
//! Client and server share the machine's cores, so the figures are floors for the server alone.
//!
//! Run: `cargo bench -p stund --bench rendezvous [-- memory|redis|cluster] [-- --short]` (all modes by
//! default; `--short` is a quick check that it works, not a measurement).

use holepunch::identity::PublicKey;
use holepunch::signal::wire::{self, WriteSignal};
use holepunch::signal::{NetworkSecret, PeerName};
use holepunch::stun::{attr, Attribute, Class, Message};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_stund");
const SECRET: &[u8] = b"rendezvous bench network secret";
/// Client sockets (each a distinct source, so each has its own nonce), split over two threads.
const SOCKETS: usize = 64;
/// New registrations in the first phase (the default capacity is 100 000).
const NEW: usize = 90_000;
const REFRESH_FOR: Duration = Duration::from_secs(3);
/// Requester/target pairs of the connect phase, and how long it runs.
const PAIRS: usize = 32;
const CONNECT_FOR: Duration = Duration::from_secs(5);
/// A phase ends after this long whatever happens.
const PHASE_LIMIT: Duration = Duration::from_secs(30);

fn register(name: &PeerName, secret: &NetworkSecret, id: [u8; 12], nonce: Option<&[u8]>) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let mut w = wire::writer(&mut buf, wire::REGISTER, Class::Request, &id).expect("buffer fits a REGISTER");
    w.add(&Attribute::Username(name.as_str())).expect("fits");
    w.add_peer_key(&PublicKey([7; 32])).expect("fits");
    if let Some(n) = nonce {
        w.add_raw(attr::NONCE, n).expect("fits");
    }
    w.add_message_integrity_sha256(secret.peer_key(name).as_bytes()).expect("fits");
    w.add_fingerprint().expect("fits");
    let n = w.finish();
    buf[..n].to_vec()
}

struct Peer {
    sock: UdpSocket,
    nonce: Vec<u8>,
}

/// One client thread's sockets, each with its nonce.
fn peers(server: SocketAddr, secret: &NetworkSecret, first: usize, count: usize) -> Vec<Peer> {
    let mut buf = [0u8; 1500];
    (first..first + count)
        .map(|i| {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
            sock.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
            let name = PeerName::new(&format!("nonce{i}")).expect("valid name");
            sock.send_to(&register(&name, secret, [1; 12], None), server).expect("send");
            let n = sock.recv(&mut buf).expect("stund answers the first REGISTER with a nonce");
            let m = Message::parse(&buf[..n]).expect("STUN");
            let nonce = m.raw(attr::NONCE).expect("438 carries a NONCE").value.to_vec();
            Peer { sock, nonce }
        })
        .collect()
}

/// Sends one REGISTER per socket per round (`name_of(socket, round)`) and waits for every answer, until
/// `done(answered, elapsed)`. Returns (successes, lost, elapsed).
fn load(
    peers: &[Peer],
    server: SocketAddr,
    secret: &NetworkSecret,
    name_of: impl Fn(usize, usize) -> String,
    done: impl Fn(usize, Duration) -> bool,
) -> (usize, usize, Duration) {
    let start = Instant::now();
    let (mut ok, mut lost) = (0, 0);
    let mut buf = [0u8; 1500];
    let mut round = 0usize;
    while !done(ok, start.elapsed()) && start.elapsed() < PHASE_LIMIT {
        for (i, p) in peers.iter().enumerate() {
            let name = PeerName::new(&name_of(i, round)).expect("valid name");
            let mut id = [0u8; 12];
            id[..8].copy_from_slice(&(round as u64).to_be_bytes());
            id[8..].copy_from_slice(&(i as u32).to_be_bytes());
            let _ = p.sock.send_to(&register(&name, secret, id, Some(&p.nonce)), server);
        }
        for p in peers {
            match p.sock.recv(&mut buf) {
                Ok(n) if Message::parse(&buf[..n]).is_ok_and(|m| m.class() == Class::Success) => ok += 1,
                _ => lost += 1,
            }
        }
        round += 1;
    }
    (ok, lost, start.elapsed())
}

/// The sizes of one run (`--short` scales them down to check that the bench works).
#[derive(Clone, Copy)]
struct Sizes {
    new: usize,
    refresh_for: Duration,
    connect_for: Duration,
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A stund on a free port; returns it with its UDP address and metrics address.
fn start_stund(secret_path: &std::path::Path, extra: &[String]) -> (Proc, SocketAddr, SocketAddr) {
    for _ in 0..8 {
        let port = free_port();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let mut child = Command::new(BIN)
            .args(["--primary", "127.0.0.1", "--port", &port.to_string(), "--threads", "1", "--no-tcp"])
            .args(["--rate-limit", "0", "--rendezvous-rate-limit", "0", "--stats-interval", "0"])
            .args(["--log-level", "warn,stund=info", "--metrics", &metrics.to_string(), "--secret-file"])
            .arg(secret_path)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stund");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready") {
                    let _ = tx.send(());
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("{line}");
                }
            }
        });
        let proc = Proc(child);
        if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
            return (proc, format!("127.0.0.1:{port}").parse().expect("address"), metrics);
        }
    }
    panic!("stund did not start");
}

/// A `redis-server` on a free loopback port, without persistence; returns it with its URL.
fn start_redis() -> Option<(Proc, String)> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        println!("redis-server not found (Debian package redis-server): Redis modes skipped");
        return None;
    };
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((proc, format!("redis://127.0.0.1:{port}/")))
}

/// A metric's value from stund's /metrics.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Waits (at most 30 s) until `ok` holds for the metric.
fn wait_metric(addr: SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric(addr, name);
        if ok(v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The registration phases, thread `t` loading `servers[t]`.
fn registrations(servers: [SocketAddr; 2], secret: &NetworkSecret, sizes: Sizes) {
    let half = SOCKETS / 2;
    let per_thread = sizes.new / 2;
    let run = |phase: &'static str| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let secret = secret.clone();
                let server = servers[t];
                std::thread::spawn(move || {
                    let peers = peers(server, &secret, t * half, half);
                    let name_new = |i: usize, round: usize| format!("t{t}s{i}r{round}");
                    let name_old = |i: usize, round: usize| format!("t{t}s{i}r{}", round % (per_thread / half));
                    match phase {
                        "new" => load(&peers, server, &secret, name_new, |ok, _| ok >= per_thread),
                        _ => load(&peers, server, &secret, name_old, |_, e| e >= sizes.refresh_for),
                    }
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
        let ok: usize = results.iter().map(|r| r.0).sum();
        let lost: usize = results.iter().map(|r| r.1).sum();
        let secs = results.iter().map(|r| r.2).max().unwrap_or_default().as_secs_f64();
        println!(
            "  registrations {phase:>7}: {ok} in {secs:.2} s = {:.0}/s ({SOCKETS} in flight, {lost} lost)",
            ok as f64 / secs.max(1e-9)
        );
    };
    run("new");
    run("refresh");
}

/// A CONNECT from `name` to `to`, with the socket's nonce.
fn connect(name: &PeerName, to: &PeerName, secret: &NetworkSecret, id: [u8; 12], nonce: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let mut w = wire::writer(&mut buf, wire::CONNECT, Class::Request, &id).expect("buffer fits a CONNECT");
    w.add(&Attribute::Username(name.as_str())).expect("fits");
    w.add_peer_name(to).expect("fits");
    w.add_raw(attr::NONCE, nonce).expect("fits");
    w.add_message_integrity_sha256(secret.peer_key(name).as_bytes()).expect("fits");
    w.add_fingerprint().expect("fits");
    let n = w.finish();
    buf[..n].to_vec()
}

/// The answer a peer gives to a PUSH (signed with its own key), or None when `data` is not a PUSH.
fn push_answer(data: &[u8], name: &PeerName, secret: &NetworkSecret) -> Option<Vec<u8>> {
    let m = Message::parse(data).ok()?;
    if m.method() != wire::PUSH || m.class() != Class::Request {
        return None;
    }
    let mut buf = [0u8; 256];
    let mut w = wire::writer(&mut buf, wire::PUSH, Class::Success, m.transaction_id()).ok()?;
    w.add_message_integrity_sha256(secret.peer_key(name).as_bytes()).ok()?;
    w.add_fingerprint().ok()?;
    let n = w.finish();
    Some(buf[..n].to_vec())
}

/// One peer of the connect phase: registered (its REGISTER answered), with its nonce.
struct Registered {
    peer: Peer,
    name: PeerName,
}

fn register_peer(server: SocketAddr, secret: &NetworkSecret, name: &str) -> Registered {
    let name = PeerName::new(name).expect("valid name");
    let peer = peers(server, secret, 0, 1).pop().expect("one socket");
    let mut buf = [0u8; 1500];
    peer.sock.send_to(&register(&name, secret, [2; 12], Some(&peer.nonce)), server).expect("send");
    let n = peer.sock.recv(&mut buf).expect("REGISTER answered");
    assert!(Message::parse(&buf[..n]).is_ok_and(|m| m.class() == Class::Success), "registered");
    Registered { peer, name }
}

/// The connect phase: requesters at `a` (metrics at `a_metrics`), targets at `b`.
fn connects(a: SocketAddr, a_metrics: SocketAddr, b: SocketAddr, secret: &NetworkSecret, sizes: Sizes) {
    const REMOTE: &str = "stund_rendezvous_remote_registrations_total";
    let before = if a != b { metric(a_metrics, REMOTE) } else { 0 };
    let requesters: Vec<Registered> = (0..PAIRS).map(|i| register_peer(a, secret, &format!("rq{i}"))).collect();
    let targets: Vec<Registered> = (0..PAIRS).map(|i| register_peer(b, secret, &format!("tg{i}"))).collect();
    if a != b {
        // The first instance must know the targets (other announcements may still be arriving: a margin).
        wait_metric(a_metrics, REMOTE, |v| v >= before + PAIRS as u64);
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut buf = [0u8; 1500];
    // Warm-up, not measured: every pair introduced once (the first CONNECTs may race the announcements).
    for (i, (r, t)) in requesters.iter().zip(&targets).enumerate() {
        for attempt in 0..20u8 {
            let id = [attempt, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8];
            let _ = r.peer.sock.send_to(&connect(&r.name, &t.name, secret, id, &r.peer.nonce), a);
            let pushed = t.peer.sock.recv_from(&mut buf).ok().and_then(|(n, from)| {
                push_answer(&buf[..n], &t.name, secret).map(|answer| t.peer.sock.send_to(&answer, from))
            });
            if pushed.is_some() {
                break;
            }
        }
    }
    for p in requesters.iter().chain(&targets) {
        p.peer.sock.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        while let Ok((n, from)) = p.peer.sock.recv_from(&mut buf) {
            if let Some(answer) = push_answer(&buf[..n], &p.name, secret) {
                let _ = p.peer.sock.send_to(&answer, from);
            }
        }
        p.peer.sock.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    }
    let mut latencies = Vec::new();
    let mut lost = 0usize;
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < sizes.connect_for {
        let mut sent = Vec::with_capacity(PAIRS);
        for (i, (r, t)) in requesters.iter().zip(&targets).enumerate() {
            let mut id = [0u8; 12];
            id[..8].copy_from_slice(&round.to_be_bytes());
            id[8..].copy_from_slice(&(i as u32).to_be_bytes());
            sent.push(Instant::now());
            let _ = r.peer.sock.send_to(&connect(&r.name, &t.name, secret, id, &r.peer.nonce), a);
        }
        for (i, t) in targets.iter().enumerate() {
            match t.peer.sock.recv_from(&mut buf) {
                Ok((n, from)) => match push_answer(&buf[..n], &t.name, secret) {
                    Some(answer) => {
                        latencies.push(sent[i].elapsed());
                        let _ = t.peer.sock.send_to(&answer, from);
                    }
                    None => lost += 1,
                },
                Err(_) => lost += 1,
            }
        }
        // Each requester gets its PUSH and the CONNECT answer, in either order.
        for r in &requesters {
            for _ in 0..2 {
                if let Ok((n, from)) = r.peer.sock.recv_from(&mut buf) {
                    if let Some(answer) = push_answer(&buf[..n], &r.name, secret) {
                        let _ = r.peer.sock.send_to(&answer, from);
                    }
                }
            }
        }
        round += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    println!(
        "  connects: {} target pushes in {secs:.2} s = {:.0}/s ({PAIRS} in flight, {lost} lost); CONNECT to \
         target's PUSH p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies.len() as f64 / secs.max(1e-9),
        pct(0.50).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default(),
    );
}

/// Redis's `used_memory` now.
fn redis_used(url: &str) -> u64 {
    let client = redis::Client::open(url).expect("redis URL");
    let mut con = client.get_connection().expect("redis connection");
    let info: String = redis::cmd("INFO").arg("memory").query(&mut con).expect("INFO");
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Bytes per registered peer in Redis, `baseline` its `used_memory` before the registrations.
fn redis_memory(url: &str, metrics: SocketAddr, baseline: u64) {
    wait_metric(metrics, "stund_rendezvous_redis_queued_writes", |v| v == 0);
    let client = redis::Client::open(url).expect("redis URL");
    let mut con = client.get_connection().expect("redis connection");
    let keys: u64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    let used = redis_used(url).saturating_sub(baseline);
    let one: Option<String> = redis::cmd("RANDOMKEY").query(&mut con).expect("RANDOMKEY");
    let usage: u64 = match &one {
        Some(k) => redis::cmd("MEMORY").arg("USAGE").arg(k).query(&mut con).unwrap_or(0),
        None => 0,
    };
    let value_len: u64 = match &one {
        Some(k) => redis::cmd("STRLEN").arg(k).query(&mut con).unwrap_or(0),
        None => 0,
    };
    println!(
        "  redis: {keys} keys, used_memory grew {used} bytes ({:.0} per key); MEMORY USAGE of one \
         key {usage} bytes (value {value_len} bytes)",
        used as f64 / keys.max(1) as f64
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches once as a check: nothing to do then.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let sizes = if args.iter().any(|a| a == "--short") {
        Sizes { new: 4_000, refresh_for: Duration::from_millis(500), connect_for: Duration::from_millis(500) }
    } else {
        Sizes { new: NEW, refresh_for: REFRESH_FOR, connect_for: CONNECT_FOR }
    };
    let modes: Vec<&str> = ["memory", "redis", "cluster"].into_iter().filter(|m| args.iter().any(|a| a == m)).collect();
    let modes = if modes.is_empty() { vec!["memory", "redis", "cluster"] } else { modes };

    let dir = std::env::temp_dir().join(format!("stund-rendezvous-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret_path = dir.join("net.secret");
    std::fs::write(&secret_path, SECRET).expect("write secret");
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let secret = NetworkSecret::new(SECRET);

    for mode in modes {
        println!("{mode}:");
        match mode {
            "memory" => {
                let (_stund, a, am) = start_stund(&secret_path, &[]);
                registrations([a, a], &secret, sizes);
                connects(a, am, a, &secret, sizes);
            }
            _ => {
                let Some((_redis, url)) = start_redis() else { continue };
                let registry = |id: &str| vec!["--registry".into(), url.clone(), "--instance-id".into(), id.into()];
                let (_a, a, am) = start_stund(&secret_path, &registry("bench-a"));
                wait_metric(am, "stund_rendezvous_degraded", |v| v == 0);
                let baseline = redis_used(&url);
                if mode == "redis" {
                    registrations([a, a], &secret, sizes);
                    redis_memory(&url, am, baseline);
                    connects(a, am, a, &secret, sizes);
                } else {
                    let (_b, b, bm) = start_stund(&secret_path, &registry("bench-b"));
                    wait_metric(bm, "stund_rendezvous_degraded", |v| v == 0);
                    registrations([a, b], &secret, sizes);
                    redis_memory(&url, am, baseline);
                    connects(a, am, b, &secret, sizes);
                    println!(
                        "  (Redis writes dropped: A {}, B {})",
                        metric(am, "stund_rendezvous_redis_dropped_total"),
                        metric(bm, "stund_rendezvous_redis_dropped_total")
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Rendezvous registrations per second through the real stund over loopback UDP (docs/signal.md, "Speed").
//!
//! Starts the built stund with `--secret-file`, both rate limiters off and one worker thread, then loads it
//! from [`SOCKETS`] client sockets on two threads, each socket with one request in flight: first
//! [`NEW`] registrations of distinct names (each one a new registry entry), then [`REFRESH_FOR`] of refreshes
//! of the names already registered (the steady state: every peer refreshes every 3 s). Prints requests per
//! second and answers lost. Client and server share the machine's cores, so the figure is a floor for the
//! server alone.
//!
//! Run: `cargo bench -p stund --bench rendezvous`

use holepunch::identity::PublicKey;
use holepunch::signal::wire::{self, WriteSignal};
use holepunch::signal::{NetworkSecret, PeerName};
use holepunch::stun::{attr, Attribute, Class, Message};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_stund");
const SECRET: &[u8] = b"rendezvous bench network secret";
/// Client sockets (each a distinct source, so each has its own nonce), split over two threads.
const SOCKETS: usize = 64;
/// New registrations in the first phase (the default capacity is 100 000).
const NEW: usize = 90_000;
const REFRESH_FOR: Duration = Duration::from_secs(3);
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

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches once as a check: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stund-rendezvous-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret_path = dir.join("net.secret");
    std::fs::write(&secret_path, SECRET).expect("write secret");
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let port = 30000 + (std::process::id() % 1000) as u16 * 2;
    let mut child = Command::new(BIN)
        .args(["--primary", "127.0.0.1", "--port", &port.to_string(), "--threads", "1", "--no-tcp"])
        .args(["--rate-limit", "0", "--rendezvous-rate-limit", "0", "--stats-interval", "0"])
        .args(["--log-level", "warn,stund=info", "--secret-file"])
        .arg(&secret_path)
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
        }
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let _ = child.kill();
        panic!("stund did not start on port {port}");
    }
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let secret = NetworkSecret::new(SECRET);

    let half = SOCKETS / 2;
    let per_thread = NEW / 2;
    let run = |phase: &'static str| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let secret = secret.clone();
                std::thread::spawn(move || {
                    let peers = peers(server, &secret, t * half, half);
                    let name_new = |i: usize, round: usize| format!("t{t}s{i}r{round}");
                    let name_old = |i: usize, round: usize| format!("t{t}s{i}r{}", round % (per_thread / half));
                    match phase {
                        "new" => load(&peers, server, &secret, name_new, |ok, _| ok >= per_thread),
                        _ => load(&peers, server, &secret, name_old, |_, e| e >= REFRESH_FOR),
                    }
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
        let ok: usize = results.iter().map(|r| r.0).sum();
        let lost: usize = results.iter().map(|r| r.1).sum();
        let secs = results.iter().map(|r| r.2).max().unwrap_or_default().as_secs_f64();
        println!(
            "rendezvous {phase:>7}: {ok} registrations in {secs:.2} s = {:.0}/s ({SOCKETS} in flight, {lost} lost)",
            ok as f64 / secs.max(1e-9)
        );
    };
    run("new");
    run("refresh");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Two stund instances sharing their rendezvous through a real Redis (`--registry`, docs/signal.md
//! "Cluster", docs/deploy.md): peers registered at different instances meet, each pushed by its own
//! instance; a name is pinned to its key across instances; Redis going away degrades the rendezvous without
//! touching Binding, and its return heals it; AUTH works and a wrong password says so.
//!
//! Each test starts its own `redis-server` on 127.0.0.1 on a free port (no persistence) and kills it at the
//! end, also on failure. Without redis-server the tests skip with one line, unless CI=true (then they fail).

mod common;

use common::{free_tcp_port, http_get, metric, Server};
use holepunch::io::blocking::Driver;
use holepunch::io::{Exit, Notice};
use holepunch::signal::{Client, ClientConfig, ClientEvent, Introduction, NetworkSecret, PeerName, RefuseReason};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"cluster test network secret\n";

/// Longest any wait below lasts (every loop is bounded by it).
const STEP: Duration = Duration::from_secs(20);

/// A `redis-server` of this test; killed when dropped.
struct Redis {
    path: String,
    port: u16,
    password: Option<&'static str>,
    /// TLS only, with the certificate and key in this directory (`srv.pem`, `srv.key`).
    tls: Option<PathBuf>,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server on a free loopback port, or None (skip) when it is not installed.
    fn start(password: Option<&'static str>) -> Option<Redis> {
        Self::start_with(password, None)
    }

    fn start_with(password: Option<&'static str>, tls: Option<PathBuf>) -> Option<Redis> {
        let path = common::tool("redis-server", "redis-server")?;
        let mut r = Redis { path, port: free_tcp_port(), password, tls, child: None };
        r.restart();
        Some(r)
    }

    /// (Re)starts it on the same port and waits until it accepts connections.
    fn restart(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<String> =
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from).into();
        match &self.tls {
            None => args.extend(["--port".into(), port]),
            Some(dir) => {
                let file = |f: &str| dir.join(f).to_str().unwrap().to_string();
                args.extend(["--port".into(), "0".into(), "--tls-port".into(), port]);
                args.extend(["--tls-cert-file".into(), file("srv.pem"), "--tls-key-file".into(), file("srv.key")]);
                args.extend(["--tls-ca-cert-file".into(), file("ca.pem"), "--tls-auth-clients".into(), "no".into()]);
            }
        }
        if let Some(p) = self.password {
            args.extend(["--requirepass".into(), p.into()]);
        }
        let child = Command::new(&self.path)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match self.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn secret_file(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stund-cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("net.secret");
    std::fs::write(&p, SECRET).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// One stund instance of the cluster, with its metrics endpoint.
struct Instance {
    server: Server,
    addr: SocketAddr,
    metrics: SocketAddr,
}

fn instance(secret: &std::path::Path, registry: &str, id: &str) -> Instance {
    instance_with(secret, registry, id, &[])
}

/// An instance with extra environment variables.
fn instance_with(secret: &std::path::Path, registry: &str, id: &str, env: &[(&str, &str)]) -> Instance {
    let mport = free_tcp_port();
    let metrics = format!("127.0.0.1:{mport}");
    let server = Server::start_with_env(
        env,
        &[
            "--primary",
            "127.0.0.1",
            "--threads",
            "2",
            "--no-tcp",
            "--secret-file",
            secret.to_str().unwrap(),
            "--registry",
            registry,
            "--instance-id",
            id,
            "--metrics",
            &metrics,
        ],
    );
    let addr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    Instance { server, addr, metrics: metrics.parse().unwrap() }
}

impl Instance {
    fn metric(&self, name: &str) -> u64 {
        metric(&http_get(self.metrics, "/metrics"), name)
    }

    /// Polls metric `name` until `ok` (at most [`STEP`]); panics with the log otherwise.
    fn wait(&self, name: &str, ok: impl Fn(u64) -> bool) {
        let deadline = Instant::now() + STEP;
        loop {
            let v = self.metric(name);
            if ok(v) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stayed {v}; log:\n{}", self.server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What a peer's thread ends with.
type Outcome = Result<Introduction, String>;

/// A peer named `name` registering at `server` in a thread of its own: it reports its registration on the
/// first channel, connects to the name it is sent, and ends with its first introduction (or refusal).
fn spawn_peer(name: &str, seed: u8, server: SocketAddr) -> (Receiver<()>, Sender<PeerName>, JoinHandle<Outcome>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<PeerName>();
    let name = PeerName::new(name).unwrap();
    let handle = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut driver = Driver::new(vec![sock]).unwrap();
        let local = driver.locals()[0];
        let secret = NetworkSecret::new(std::str::from_utf8(SECRET).unwrap().trim().as_bytes());
        let key = holepunch::identity::SecretKey::from_seed([seed; 32]).public();
        let mut client = Client::new(ClientConfig::new(local, server, name, key, &secret), [seed; 32], Instant::now());
        let end = Instant::now() + 3 * STEP;
        while Instant::now() < end {
            // Short runs, so the test can ask for a CONNECT while the peer keeps its registration fresh.
            driver = driver.deadline(Instant::now() + Duration::from_millis(100));
            let exit = driver
                .run(&mut client, |n| match n {
                    Notice::Event(ClientEvent::Registered { .. }) => {
                        let _ = ready_tx.send(());
                        ControlFlow::Continue(())
                    }
                    Notice::Event(ClientEvent::Introduced(i)) => ControlFlow::Break(Ok(i)),
                    Notice::Event(ClientEvent::Refused(r)) => ControlFlow::Break(Err(format!("refused: {r:?}"))),
                    Notice::Event(ClientEvent::ConnectFailed { reason, .. }) => {
                        ControlFlow::Break(Err(format!("connect failed: {reason:?}")))
                    }
                    _ => ControlFlow::Continue(()),
                })
                .unwrap();
            if let Exit::Done(outcome) = exit {
                return outcome;
            }
            if let Ok(to) = go_rx.try_recv() {
                client.connect(Instant::now(), &to);
            }
        }
        Err("nothing happened".into())
    });
    (ready_rx, go_tx, handle)
}

fn registered(ready: &Receiver<()>) {
    ready.recv_timeout(STEP).expect("registered");
}

#[test]
fn peers_registered_at_two_instances_are_introduced_each_by_its_own() {
    let Some(redis) = Redis::start(None) else { return };
    let secret = secret_file("meet");
    let a = instance(&secret, &redis.url(), "stund-a");
    let b = instance(&secret, &redis.url(), "stund-b");
    a.wait("stund_rendezvous_degraded", |v| v == 0);
    b.wait("stund_rendezvous_degraded", |v| v == 0);

    let (bob_ready, _, bob) = spawn_peer("bob", 2, b.addr);
    let (alice_ready, alice_go, alice) = spawn_peer("alice", 1, a.addr);
    registered(&bob_ready);
    registered(&alice_ready);
    // Each instance's replica knows both peers.
    a.wait("stund_rendezvous_peers", |v| v == 2);
    b.wait("stund_rendezvous_peers", |v| v == 2);

    alice_go.send(PeerName::new("bob").unwrap()).unwrap();
    let to_alice = alice.join().unwrap().expect("alice introduced");
    let to_bob = bob.join().unwrap().expect("bob introduced");
    assert_eq!(to_alice.peer.as_str(), "bob");
    assert_eq!(to_bob.peer.as_str(), "alice");
    assert_eq!(to_alice.session, to_bob.session, "one introduction, both sides");
    // Each push left its peer's own instance (a client takes pushes only from its server), and each instance
    // received its peer's answer.
    a.wait("stund_rendezvous_pushes_total{outcome=\"acked\"}", |v| v == 1);
    b.wait("stund_rendezvous_pushes_total{outcome=\"acked\"}", |v| v == 1);
    assert_eq!(a.metric("stund_rendezvous_introductions_total"), 1);
    assert_eq!(a.metric("stund_rendezvous_remote_introductions_total{direction=\"sent\"}"), 1);
    assert_eq!(b.metric("stund_rendezvous_remote_introductions_total{direction=\"served\"}"), 1);
    assert_eq!(b.metric("stund_rendezvous_introductions_total"), 0, "B pushed for A, it introduced nobody");
    assert!(b.server.log().contains("pushing bob the introduction of alice"), "{}", b.server.log());
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn an_instance_started_later_loads_the_registrations_from_redis() {
    let Some(redis) = Redis::start(None) else { return };
    let secret = secret_file("load");
    let a = instance(&secret, &redis.url(), "stund-a");
    let (alice_ready, _alice_go, _alice) = spawn_peer("alice", 1, a.addr);
    registered(&alice_ready);
    a.wait("stund_rendezvous_redis_queued_writes", |v| v == 0);
    let b = instance(&secret, &redis.url(), "stund-b");
    b.wait("stund_rendezvous_redis_loaded_total", |v| v == 1);
    b.wait("stund_rendezvous_peers", |v| v == 1);
    // A loads nothing of its own back.
    assert_eq!(a.metric("stund_rendezvous_redis_loaded_total"), 0);
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn a_name_is_pinned_to_its_key_across_instances() {
    let Some(redis) = Redis::start(None) else { return };
    let secret = secret_file("pin");
    let a = instance(&secret, &redis.url(), "stund-a");
    let b = instance(&secret, &redis.url(), "stund-b");
    let (alice_ready, _alice_go, _alice) = spawn_peer("alice", 1, a.addr);
    registered(&alice_ready);
    b.wait("stund_rendezvous_peers", |v| v == 1);
    let (_, _, thief) = spawn_peer("alice", 9, b.addr);
    let outcome = thief.join().unwrap();
    assert_eq!(outcome.unwrap_err(), format!("refused: {:?}", RefuseReason::NameTaken));
    assert_eq!(b.metric("stund_rendezvous_refused_total{reason=\"name_taken\"}"), 1);
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn redis_down_degrades_the_rendezvous_and_its_return_heals_it() {
    let Some(mut redis) = Redis::start(None) else { return };
    let secret = secret_file("down");
    let a = instance(&secret, &redis.url(), "stund-a");
    let b = instance(&secret, &redis.url(), "stund-b");
    a.wait("stund_rendezvous_degraded", |v| v == 0);
    b.wait("stund_rendezvous_degraded", |v| v == 0);

    redis.stop();
    a.wait("stund_rendezvous_degraded", |v| v == 1);
    // Binding does not notice.
    let sock = common::client(false);
    let req = common::binding_request(7, None, None);
    let (resp, _) = common::transact(&sock, a.addr, &req).expect("Binding answered while Redis is down");
    common::expect_success(&resp, &req);
    // The local rendezvous goes on: alice registers at A meanwhile, and her write waits in A's queue.
    let (alice_ready, alice_go, alice) = spawn_peer("alice", 1, a.addr);
    registered(&alice_ready);
    a.wait("stund_rendezvous_redis_queued_writes", |v| v >= 1);
    assert!(a.metric("stund_rendezvous_redis_errors_total") >= 1);
    // Several failed reconnects by now; the log says it once.
    std::thread::sleep(Duration::from_secs(1));
    let log = a.server.log();
    assert_eq!(log.matches("rendezvous degraded").count(), 1, "{log}");

    redis.restart();
    a.wait("stund_rendezvous_degraded", |v| v == 0);
    b.wait("stund_rendezvous_degraded", |v| v == 0);
    a.wait("stund_rendezvous_redis_queued_writes", |v| v == 0);
    assert_eq!(a.server.log().matches("connected to Redis").count(), 2, "{}", a.server.log());
    // The restarted Redis is empty: alice's queued write (or her next refresh) brings her back to B.
    b.wait("stund_rendezvous_peers", |v| v == 1);
    let (bob_ready, _, bob) = spawn_peer("bob", 2, b.addr);
    registered(&bob_ready);
    a.wait("stund_rendezvous_peers", |v| v == 2);
    alice_go.send(PeerName::new("bob").unwrap()).unwrap();
    let to_alice = alice.join().unwrap().expect("alice introduced after Redis came back");
    let to_bob = bob.join().unwrap().expect("bob introduced after Redis came back");
    assert_eq!(to_alice.session, to_bob.session);
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn a_stalled_redis_degrades_the_rendezvous_without_slowing_binding() {
    let Some(redis) = Redis::start(None) else { return };
    let secret = secret_file("stall");
    let a = instance(&secret, &redis.url(), "stund-a");
    a.wait("stund_rendezvous_degraded", |v| v == 0);
    let pid = redis.child.as_ref().expect("running").id() as i32;
    // SAFETY: kill(2) on our own child's pid. Redis stops answering but keeps its connections open.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let (alice_ready, _go, _alice) = spawn_peer("alice", 1, a.addr);
    registered(&alice_ready);
    let sock = common::client(false);
    let req = common::binding_request(9, None, None);
    let (resp, _) = common::transact(&sock, a.addr, &req).expect("Binding answered while Redis is stalled");
    common::expect_success(&resp, &req);
    a.wait("stund_rendezvous_degraded", |v| v == 1);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    a.wait("stund_rendezvous_degraded", |v| v == 0);
    a.wait("stund_rendezvous_redis_queued_writes", |v| v == 0);
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn unreachable_redis_at_start_is_degraded_not_fatal() {
    let Some(_tool) = common::tool("redis-server", "redis-server") else { return };
    let secret = secret_file("absent");
    // A port nobody listens on.
    let url = format!("redis://127.0.0.1:{}/", free_tcp_port());
    let a = instance(&secret, &url, "stund-a");
    a.wait("stund_rendezvous_degraded", |v| v == 1);
    let (alice_ready, _, _alice) = spawn_peer("alice", 1, a.addr);
    registered(&alice_ready);
    let log = a.server.log();
    assert_eq!(log.matches("rendezvous degraded").count(), 1, "{log}");
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn auth_with_the_right_password_works_and_a_wrong_one_says_so() {
    let Some(redis) = Redis::start(Some("s3cret-pass")) else { return };
    let secret = secret_file("auth");
    let good = instance(&secret, &redis.url(), "stund-a");
    good.wait("stund_rendezvous_degraded", |v| v == 0);
    assert!(!good.server.log().contains("s3cret-pass"), "the password is never logged");

    let wrong = format!("redis://:not-the-password@127.0.0.1:{}/", redis.port);
    let bad = instance(&secret, &wrong, "stund-b");
    bad.wait("stund_rendezvous_redis_errors_total", |v| v >= 1);
    assert_eq!(bad.metric("stund_rendezvous_degraded"), 1);
    let log = bad.server.log();
    let line = log.lines().find(|l| l.contains("rendezvous degraded")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("authentication refused") && line.contains("--registry"), "{line}");
    assert!(!log.contains("not-the-password"), "the password is never logged: {log}");

    let no_password = format!("redis://127.0.0.1:{}/", redis.port);
    let none = instance(&secret, &no_password, "stund-c");
    none.wait("stund_rendezvous_redis_errors_total", |v| v >= 1);
    let log = none.server.log();
    assert!(log.contains("authentication refused"), "{log}");
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl in a fresh directory; None (skip)
/// when openssl is missing.
fn certificates(tag: &str) -> Option<PathBuf> {
    let openssl = common::tool("openssl", "openssl")?;
    let dir = std::env::temp_dir().join(format!("stund-cluster-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<&str>; 3] = [
        [&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA"]]
            .concat(),
        [&["req"][..], &ec, &["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"]].concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    ];
    for args in steps {
        let out = Command::new(&openssl).args(&args).current_dir(&dir).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some(dir)
}

#[test]
fn tls_to_a_trusted_redis_works_and_an_unknown_issuer_says_so() {
    let Some(certs) = certificates("tls") else { return };
    let Some(redis) = Redis::start_with(Some("tls-pass"), Some(certs.clone())) else { return };
    let secret = secret_file("tls");
    // The CA is trusted through SSL_CERT_FILE (read with the system's roots).
    let ca = certs.join("ca.pem");
    let a = instance_with(&secret, &redis.url(), "stund-a", &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let b = instance_with(&secret, &redis.url(), "stund-b", &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    a.wait("stund_rendezvous_degraded", |v| v == 0);
    b.wait("stund_rendezvous_degraded", |v| v == 0);
    let (ready, _go, _alice) = spawn_peer("alice", 1, a.addr);
    registered(&ready);
    b.wait("stund_rendezvous_peers", |v| v == 1);

    // With the system's roots only, the certificate is refused, and the log says why.
    let untrusted = instance(&secret, &redis.url(), "stund-c");
    untrusted.wait("stund_rendezvous_redis_errors_total", |v| v >= 1);
    let log = untrusted.server.log();
    assert!(log.contains("rendezvous degraded") && log.contains("certificate"), "{log}");
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
    let _ = std::fs::remove_dir_all(&certs);
}

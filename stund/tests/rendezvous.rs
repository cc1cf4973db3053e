//! The rendezvous through the real stund binary over loopback UDP: two `signal::Client`s, each on its own
//! socket run by the blocking driver, register and are introduced to each other (docs/signal.md,
//! docs/stund.md "Rendezvous").

mod common;

use common::{free_tcp_port, http_get, metric, wait_metric, Server, BIN};
use holepunch::identity::SecretKey;
use holepunch::io::blocking::Driver;
use holepunch::io::Exit;
use holepunch::signal::RefuseReason;
use holepunch::signal::{Client, ClientConfig, ClientEvent, ConnectFailure, Introduction, NetworkSecret, PeerName};
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"loopback test network secret\n";

/// Longest any step of a test waits (every loop below is bounded by it).
const STEP: Duration = Duration::from_secs(10);

fn secret_file(tag: &str, content: &[u8], mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stund-rendezvous-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("net.secret");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn start(secret: &std::path::Path, metrics: u16) -> Server {
    let metrics = format!("127.0.0.1:{metrics}");
    let secret = secret.to_str().unwrap();
    Server::start(&[
        "--primary",
        "127.0.0.1",
        "--threads",
        "2",
        "--no-tcp",
        "--secret-file",
        secret,
        "--metrics",
        &metrics,
    ])
}

/// A client named `name` on its own loopback socket, with the secret as the peers read it (trimmed text).
fn peer(name: &str, seed: u8, server: SocketAddr, secret: &[u8]) -> (Client, Driver, SecretKey) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let driver = Driver::new(vec![sock]).unwrap();
    let local = driver.locals()[0];
    let key = SecretKey::from_seed([seed; 32]);
    let secret = NetworkSecret::new(std::str::from_utf8(secret).unwrap().trim().as_bytes());
    let config = ClientConfig::new(local, server, PeerName::new(name).unwrap(), key.public(), &secret);
    (Client::new(config, [seed.wrapping_add(100); 32], Instant::now()), driver, key)
}

/// Runs `client` until `want` picks an event (or [`STEP`] passes); returns what it picked.
fn run_until<T>(driver: &Driver, client: &mut Client, mut want: impl FnMut(&ClientEvent) -> Option<T>) -> Option<T> {
    let exit = driver
        .run(client, |n| match n {
            holepunch::io::Notice::Event(e) => match want(&e) {
                Some(v) => ControlFlow::Break(v),
                None => ControlFlow::Continue(()),
            },
            holepunch::io::Notice::SendFailed { .. } => ControlFlow::Continue(()),
        })
        .unwrap();
    match exit {
        Exit::Done(v) => Some(v),
        _ => None,
    }
}

fn registered(driver: Driver, client: &mut Client) -> (Driver, Option<SocketAddr>) {
    let driver = driver.deadline(Instant::now() + STEP);
    let r = run_until(&driver, client, |e| match e {
        ClientEvent::Registered { reflexive } => Some(*reflexive),
        _ => None,
    });
    (driver, r)
}

#[test]
fn two_peers_register_and_are_introduced_in_the_same_instant() {
    let secret = secret_file("ok", SECRET, 0o600);
    let mport = free_tcp_port();
    let server = start(&secret, mport);
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    assert!(server.log().contains("rendezvous on"), "{}", server.log());

    let (mut bob, bob_driver, bob_key) = peer("bob", 2, addr, SECRET);
    let bob_local = bob_driver.locals()[0];
    let (ready_tx, ready_rx) = mpsc::channel();
    let bob_thread = std::thread::spawn(move || {
        let (driver, reflexive) = registered(bob_driver, &mut bob);
        ready_tx.send(reflexive).unwrap();
        let driver = driver.deadline(Instant::now() + STEP);
        run_until(&driver, &mut bob, |e| match e {
            ClientEvent::Introduced(i) => Some((i.clone(), Instant::now())),
            _ => None,
        })
    });
    let (mut alice, alice_driver, alice_key) = peer("alice", 1, addr, SECRET);
    let alice_local = alice_driver.locals()[0];
    let (alice_driver, reflexive) = registered(alice_driver, &mut alice);
    assert_eq!(reflexive, Some(alice_local), "loopback: no NAT between alice and stund");
    let bob_reflexive = ready_rx.recv_timeout(STEP).unwrap();
    assert_eq!(bob_reflexive, Some(bob_local));
    assert_eq!(wait_metric(maddr, "stund_rendezvous_peers", |v| v == 2), 2);

    alice.connect(Instant::now(), &PeerName::new("bob").unwrap());
    let alice_driver = alice_driver.deadline(Instant::now() + STEP);
    let got = run_until(&alice_driver, &mut alice, |e| match e {
        ClientEvent::Introduced(i) => Some(Ok((i.clone(), Instant::now()))),
        ClientEvent::ConnectFailed { reason, .. } => Some(Err(reason.clone())),
        _ => None,
    });
    let (to_alice, at_alice): (Introduction, Instant) = got.expect("alice introduced").expect("connect succeeded");
    let (to_bob, at_bob) = bob_thread.join().unwrap().expect("bob introduced");

    assert_eq!(to_alice.peer.as_str(), "bob");
    assert_eq!(to_alice.key, bob_key.public());
    assert_eq!(to_alice.reflexive, bob_local);
    assert_eq!(to_bob.peer.as_str(), "alice");
    assert_eq!(to_bob.key, alice_key.public());
    assert_eq!(to_bob.reflexive, alice_local);
    assert_eq!(to_alice.session, to_bob.session, "one introduction, both sides");
    let apart = if at_alice > at_bob { at_alice - at_bob } else { at_bob - at_alice };
    assert!(apart < Duration::from_millis(500), "pushes {apart:?} apart");

    let text = http_get(maddr, "/metrics");
    assert_eq!(metric(&text, "stund_rendezvous_enabled"), 1);
    assert_eq!(metric(&text, "stund_rendezvous_introductions_total"), 1);
    assert_eq!(metric(&text, "stund_rendezvous_registrations_total{kind=\"new\"}"), 2);
    assert!(metric(&text, "stund_rendezvous_registry_bytes") > 0);
    assert_eq!(wait_metric(maddr, "stund_rendezvous_pushes_total{outcome=\"acked\"}", |v| v == 2), 2);
    let log = server.log();
    for line in ["alice registered from", "bob registered from", "introduced alice and bob"] {
        assert!(log.contains(line), "{line:?} not in:\n{log}");
    }
    // Binding still works next to it.
    let sock = common::client(false);
    let req = common::binding_request(7, None, None);
    let (resp, _) = common::transact(&sock, addr, &req).expect("Binding answered");
    common::expect_success(&resp, &req);
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn wrong_secret_is_refused_and_unknown_peer_fails() {
    let secret = secret_file("wrong", SECRET, 0o600);
    let mport = free_tcp_port();
    let server = start(&secret, mport);
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();

    let (mut mallory, driver, _) = peer("mallory", 3, addr, b"some other network secret");
    let driver = driver.deadline(Instant::now() + STEP);
    let refused = run_until(&driver, &mut mallory, |e| match e {
        ClientEvent::Refused(r) => Some(r.clone()),
        ClientEvent::Registered { .. } => panic!("registered with the wrong secret"),
        _ => None,
    });
    assert_eq!(refused, Some(RefuseReason::WrongSecret));
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    assert!(wait_metric(maddr, "stund_rendezvous_refused_total{reason=\"bad_integrity\"}", |v| v >= 1) >= 1);
    assert_eq!(metric(&http_get(maddr, "/metrics"), "stund_rendezvous_peers"), 0);

    let (mut alice, driver, _) = peer("alice", 1, addr, SECRET);
    let (driver, reflexive) = registered(driver, &mut alice);
    assert!(reflexive.is_some());
    alice.connect(Instant::now(), &PeerName::new("nobody").unwrap());
    let driver = driver.deadline(Instant::now() + STEP);
    let failed = run_until(&driver, &mut alice, |e| match e {
        ClientEvent::ConnectFailed { peer, reason } => Some((peer.clone(), reason.clone())),
        _ => None,
    });
    assert_eq!(failed, Some((PeerName::new("nobody").unwrap(), ConnectFailure::PeerNotRegistered)));
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

#[test]
fn a_secret_file_others_can_read_is_refused_in_one_line() {
    let secret = secret_file("loose", SECRET, 0o644);
    let out = Command::new(BIN)
        .args(["--primary", "127.0.0.1", "--port", "9", "--secret-file", secret.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.starts_with("stund:")).unwrap_or_else(|| panic!("{err}"));
    let shown = secret.display();
    assert_eq!(line, format!("stund: --secret-file: {shown} is readable by others (mode 0644); chmod 600 {shown}"));

    let short = secret_file("short", b"short\n", 0o600);
    let out = Command::new(BIN)
        .args(["--primary", "127.0.0.1", "--secret-file", short.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds 5 bytes; a network secret is at least 16"), "{err}");
    for p in [secret, short] {
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

#[test]
fn without_secret_file_rendezvous_is_ignored_and_counted() {
    let mport = free_tcp_port();
    let metrics = format!("127.0.0.1:{mport}");
    let server = Server::start(&["--primary", "127.0.0.1", "--threads", "1", "--no-tcp", "--metrics", &metrics]);
    assert!(server.log().contains("rendezvous off"), "{}", server.log());
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let (mut alice, driver, _) = peer("alice", 1, addr, SECRET);
    // Three registration attempts (0, 0.5, 1.5 s): nothing comes back.
    let driver = driver.deadline(Instant::now() + Duration::from_secs(2));
    let heard = run_until(&driver, &mut alice, |e| Some(format!("{e:?}")));
    assert_eq!(heard, None, "stund without --secret-file answered the rendezvous");
    let maddr: SocketAddr = metrics.parse().unwrap();
    assert!(wait_metric(maddr, "stund_rendezvous_ignored_total", |v| v >= 3) >= 3);
    let text = http_get(maddr, "/metrics");
    assert_eq!(metric(&text, "stund_rendezvous_enabled"), 0);
    assert_eq!(metric(&text, "stund_dropped_total{reason=\"not_request\"}"), 0, "the responder never saw them");
}

/// In RFC 5780 mode the answers leave from the socket the request arrived on, whichever of the four it is
/// (the client accepts answers only from the address it registered with).
#[test]
fn rfc5780_mode_answers_from_the_socket_registered_on() {
    let secret = secret_file("rfc5780", SECRET, 0o600);
    let secret_arg = secret.to_str().unwrap();
    let server = Server::start(&[
        "--primary",
        "127.0.0.1",
        "--alternate",
        "127.0.0.2",
        "--threads",
        "2",
        "--no-tcp",
        "--secret-file",
        secret_arg,
    ]);
    for target in [format!("127.0.0.2:{}", server.alt_port), format!("127.0.0.1:{}", server.alt_port)] {
        let addr: SocketAddr = target.parse().unwrap();
        let (mut alice, driver, _) = peer("alice", 1, addr, SECRET);
        let local = driver.locals()[0];
        let (_, reflexive) = registered(driver, &mut alice);
        assert_eq!(reflexive, Some(local), "registered through {addr}");
    }
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
}

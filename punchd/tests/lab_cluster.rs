//! stund as a cluster in the NAT lab (docs/deploy.md, docs/punchd.md "Several servers"): two stund instances on
//! the public segment share their rendezvous through one real `redis-server`; peers registered at different
//! instances meet and ping through the tunnel; killing the instance a peer uses moves her to the other while
//! the tunnel keeps passing a ping every 100 ms; Redis stopped and started again: Binding never stops, and the
//! rendezvous comes back without restarting stund. Needs root, ip, nft, ping and redis-server; without them the
//! tests skip with one line, and under CI=true they fail.
#![cfg(unix)]

mod common;
use common::lab::{Peer, World};
use common::{stund_bin, PUNCHD};
use holepunch::identity::SecretKey;
use holepunch::tunnel::{derived_address, DEFAULT_OVERLAY};
use holepunch_lab::{ping, Lab, Preset, Process};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const TUN: &str = "--tun-name hp0";
const REDIS_PORT: u16 = 6379;

/// Skips (or under CI=true fails) without the lab or redis-server.
macro_rules! require_cluster_lab {
    () => {
        holepunch_lab::require_lab!();
        if std::process::Command::new("redis-server").arg("--version").output().is_err() {
            assert!(!holepunch_lab::in_ci(), "CI=true but redis-server is not installed");
            eprintln!("SKIP: redis-server not found (apt-get install redis-server)");
            return;
        }
    };
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn tunnel_v4(key: &SecretKey) -> Ipv4Addr {
    match derived_address(&key.public(), DEFAULT_OVERLAY).unwrap() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the default overlay is IPv4"),
    }
}

fn logs(ps: &mut [&mut Peer], c: &mut Cluster) -> String {
    let mut out: Vec<String> = ps
        .iter_mut()
        .map(|p| {
            let lines = p.logs();
            format!("[{}]\n{lines}", p.name)
        })
        .collect();
    out.push(format!("[stund a]\n{}", c.w.stund_logs()));
    out.push(format!("[stund b]\n{}", c.second.as_mut().map(|p| p.drain_lines().join("\n")).unwrap_or_default()));
    out.join("\n----\n")
}

/// The cluster: Redis on public host `redis`, the world's stund (instance a, on the lab server) and a second
/// stund (instance b, on public host `stund2`), both with `--registry` on that Redis; sites a, b and c.
struct Cluster {
    w: World,
    redis: Option<Process>,
    second: Option<Process>,
    /// The rendezvous addresses of instances a and b.
    a: String,
    b: String,
}

impl Cluster {
    fn new(tag: &str) -> Cluster {
        let lab = Lab::builder()
            .server()
            .public_host("redis")
            .public_host("stund2")
            .site("a", Preset::FullCone)
            .site("b", Preset::PortRestricted)
            .site("c", Preset::AddressRestricted)
            .build()
            .expect("build lab");
        let redis = Some(start_redis(&lab));
        let registry = registry_flag(&lab);
        let w = World::new(lab, tag, &format!("{registry} --instance-id a"));
        let b = format!("{}:3478", w.lab.host("stund2").ip());
        let mut c = Cluster { a: w.server.clone(), b, w, redis, second: None };
        c.start_second();
        c
    }

    fn start_second(&mut self) {
        let host = self.w.lab.host("stund2");
        let mut cmd = host.command("sh");
        cmd.arg("-c").arg(format!(
            "exec {} --primary {} --no-tcp --rate-limit 0 --threads 1 --stats-interval 0 --log-level info \
             --secret-file {} {} --instance-id b 2>&1",
            stund_bin().display(),
            host.ip(),
            self.w.secret_file().display(),
            registry_flag(&self.w.lab),
        ));
        let mut p = host.spawn_command(cmd).expect("start the second stund");
        p.wait_for_line(Duration::from_secs(10), |l| l.contains("ready")).expect("second stund ready");
        self.second = Some(p);
    }

    /// punchd `name` on `host` with the tunnel on, registering at `servers.0` first and `servers.1` after
    /// it, accepting `peers` (the first as the world's helper takes it, the rest as flags).
    fn peer(
        &mut self,
        host: &str,
        name: &str,
        me: &SecretKey,
        peers: &[(&str, &SecretKey)],
        servers: (&str, &str),
        extra: &str,
    ) -> Peer {
        let more: String = peers[1..].iter().map(|(n, k)| format!(" --peer {n}={}", k.public().to_base64())).collect();
        let saved = std::mem::replace(&mut self.w.server, servers.0.to_string());
        let p = self.w.punchd(
            host,
            name,
            me,
            6666,
            (peers[0].0, &peers[0].1.public()),
            &format!("{TUN} --server {}{more} {extra}", servers.1),
        );
        self.w.server = saved;
        p
    }
}

fn registry_flag(lab: &Lab) -> String {
    format!("--registry redis://{}:{REDIS_PORT}/", lab.host("redis").ip())
}

fn start_redis(lab: &Lab) -> Process {
    let host = lab.host("redis");
    let ip = host.ip().to_string();
    let port = REDIS_PORT.to_string();
    let argv =
        ["redis-server", "--bind", &ip, "--port", &port, "--save", "", "--appendonly", "no", "--protected-mode", "no"];
    let mut p = host.spawn(&argv).expect("start redis-server");
    p.wait_for_line(Duration::from_secs(10), |l| l.contains("Ready to accept connections")).expect("redis ready");
    p
}

/// Waits until `peer`'s path to `to` is open (its status line), at most `limit`.
fn wait_path(peer: &mut Peer, to: &str, limit: Duration) -> Result<(), String> {
    peer.proc
        .wait_for_line(limit, |l| l.starts_with(&format!("path to {to} opened")))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The rendezvous server `peer` uses now, from its status.
fn server_of(peer: &Peer) -> String {
    peer.status().and_then(|s| s["server"].as_str().map(str::to_string)).unwrap_or_default()
}

#[test]
fn peers_at_two_instances_meet_and_a_dead_instance_moves_its_peers_without_breaking_the_tunnel() {
    require_cluster_lab!();
    let mut c = Cluster::new("cluster");
    let (ka, kb, kc) = (key(1), key(2), key(3));
    let (a, b) = (c.a.clone(), c.b.clone());
    // Bob registers at instance b, alice at instance a; alice asks for bob.
    let mut bob = c.peer("b1", "bob", &kb, &[("alice", &ka), ("carol", &kc)], (&b, &a), "");
    bob.wait_status(Duration::from_secs(10), |s| s["registered"] == true).expect("bob registered");
    let mut alice = c.peer("a1", "alice", &ka, &[("bob", &kb)], (&a, &b), "--connect bob");
    if let Err(e) = wait_path(&mut alice, "bob", Duration::from_secs(20)) {
        panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob], &mut c));
    }
    assert_eq!(server_of(&alice), a);
    assert_eq!(server_of(&bob), b);
    let to_bob = tunnel_v4(&kb);
    if let Err(e) = ping::wait_reachable(c.w.lab.host("a1"), to_bob, Duration::from_secs(10)) {
        panic!("no ping through the tunnel: {e}\n{}", logs(&mut [&mut alice, &mut bob], &mut c));
    }

    // A ping every 100 ms through the tunnel while instance a dies under alice.
    let run = ping::spawn(c.w.lab.host("a1"), to_bob, 150, Duration::from_millis(100)).expect("ping");
    std::thread::sleep(Duration::from_secs(2));
    c.w.stop_stund();
    let killed = Instant::now();
    let moved = alice.wait_status(Duration::from_secs(15), |s| s["server"] == b.as_str() && s["registered"] == true);
    let took = killed.elapsed();
    let stats = run.finish();
    if let Err(e) = moved {
        panic!("alice did not move to instance b: {e}\n{}", logs(&mut [&mut alice, &mut bob], &mut c));
    }
    eprintln!("alice re-registered at b {took:?} after a died; ping: {}/{} answered", stats.received, stats.sent);
    // Three 1 s keepalives of silence, then a registration round trip.
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(stats.sent >= 140, "{stats:?}");
    assert!(
        stats.sent - stats.received <= 3,
        "the tunnel lost {} of {} pings while the rendezvous moved",
        stats.sent - stats.received,
        stats.sent
    );

    // A new connection after the failover: carol, whose first server is the dead one, reaches bob.
    let mut carol = c.peer("c1", "carol", &kc, &[("bob", &kb)], (&a, &b), "--connect bob");
    if let Err(e) = wait_path(&mut carol, "bob", Duration::from_secs(30)) {
        panic!("{e}\n{}", logs(&mut [&mut carol, &mut bob, &mut alice], &mut c));
    }
    assert_eq!(server_of(&carol), b);
    ping::wait_reachable(c.w.lab.host("c1"), to_bob, Duration::from_secs(10)).expect("carol pings bob");
}

#[test]
fn redis_down_keeps_binding_and_the_rendezvous_recovers_by_itself() {
    require_cluster_lab!();
    let mut c = Cluster::new("cluster-redis");
    let (ka, kb) = (key(1), key(2));
    let (a, b) = (c.a.clone(), c.b.clone());
    drop(c.redis.take()); // SIGKILL: Redis is gone without a word
                          // Binding from both instances while Redis is down.
    for server in [&a, &b] {
        let out =
            c.w.lab
                .host("a1")
                .output(&[PUNCHD, "--server", server, "--once", "--port", "7000"])
                .expect("punchd --once");
        assert!(
            out.status.success(),
            "no Binding answer from {server} with Redis down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Back up: bob registered at b and alice at a meet, with neither stund restarted.
    c.redis = Some(start_redis(&c.w.lab));
    let mut bob = c.peer("b1", "bob", &kb, &[("alice", &ka)], (&b, &a), "");
    bob.wait_status(Duration::from_secs(10), |s| s["registered"] == true).expect("bob registered");
    let mut alice = c.peer("a1", "alice", &ka, &[("bob", &kb)], (&a, &b), "--connect bob");
    // The instances reconnect to Redis with a backoff: the connect is retried until bob is known at a.
    if let Err(e) = wait_path(&mut alice, "bob", Duration::from_secs(40)) {
        panic!("{e}\n{}", logs(&mut [&mut alice, &mut bob], &mut c));
    }
    assert_eq!(server_of(&alice), a, "alice stayed at instance a");
    ping::wait_reachable(c.w.lab.host("a1"), tunnel_v4(&kb), Duration::from_secs(10)).expect("ping through the tunnel");
}

//! `stund`: the STUN server binary. Flags, logging, sockets and threads live here; every protocol decision
//! is in `holepunch::server` (see docs/stund.md).

mod cluster;
mod config;
mod memory;
mod metrics;
mod net;
mod rendezvous;
mod tcp;
mod turn;
mod udp;

use anyhow::{Context, Result};
use clap::Parser;
use config::{Cli, Settings};
use holepunch::server::{ConnectionLimit, LocalSocket, Responder, SharedCounters};
use metrics::Stats;
use net::Proto;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// After a stop signal, how long workers get to finish before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn main() {
    let cli = Cli::parse();
    let settings = match Settings::from_cli(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stund: {e:#}");
            std::process::exit(2);
        }
    };
    init_logging(settings.log_level.as_deref());
    if let Err(e) = run(settings) {
        eprintln!("stund: {e:#}");
        std::process::exit(1);
    }
}

/// `--log-level` (or the config file's `log_level`) wins; else RUST_LOG; else info.
fn init_logging(level: Option<&str>) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(l) = level {
        b.parse_filters(l);
    }
    b.format_timestamp_millis().init();
}

/// File descriptors the settings may need: every TCP connection, the metrics endpoint's, the sockets, one
/// relay socket per TURN allocation (and one reserved next to it, EVEN-PORT), and a margin for the process.
fn fds_needed(s: &Settings) -> u64 {
    let sockets = s.server.local_sockets().len() as u64;
    let tcp = if s.tcp { s.tcp_max_connections as u64 + sockets } else { 0 };
    let relay = s.turn.as_ref().map_or(0, |t| 2 * t.max_allocations as u64 + 2);
    tcp + relay + metrics::MAX_CONNECTIONS as u64 + 1 + sockets * s.threads as u64 + 64
}

/// Raises the soft open-files limit to the hard one (the usual soft limit of 1024 is below the default TCP
/// cap), and warns when even that is too low for the settings: accept() then fails before the cap is reached.
fn raise_fd_limit(s: &Settings) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let need = fds_needed(s);
    if lim.rlim_cur < need {
        log::warn!(
            "open-files limit {} is below the {} the settings may need (--tcp-max-connections {}, and \
             --max-allocations with TURN); raise it (LimitNOFILE= in systemd) or lower them",
            lim.rlim_cur,
            need,
            s.tcp_max_connections
        );
    }
}

fn run(s: Settings) -> Result<()> {
    let cfg = &s.server;
    let locals = cfg.local_sockets();
    // Each responder's rate limiter gets its own hash key, drawn from one OS seed, so outsiders cannot
    // aim a flood at one table slot.
    let mut keys = holepunch::net::Rng::from_seed(holepunch::io::os_seed().context("reading OS randomness")?);
    if cfg.behavior_discovery() {
        log::info!(
            "RFC 5780 NAT behaviour discovery on: {} / {} / {} / {} (advertised OTHER-ADDRESS of primary: {})",
            cfg.bind_addr(LocalSocket::ALL[0]),
            cfg.bind_addr(LocalSocket::ALL[1]),
            cfg.bind_addr(LocalSocket::ALL[2]),
            cfg.bind_addr(LocalSocket::ALL[3]),
            cfg.advertised_addr(LocalSocket::ALL[3]),
        );
    } else {
        log::info!(
            "plain RFC 5389/8489 STUN server on {} (no --alternate: RFC 5780 behaviour discovery off, \
             CHANGE-REQUEST answered with 420)",
            cfg.bind_addr(LocalSocket::PRIMARY)
        );
    }
    if let Some(p) = cfg.public_primary {
        log::info!("advertising public primary address {p}");
    }
    match &s.rate_limit {
        Some(rl) => log::info!(
            "rate limit {} req/s, burst {} per source IP (IPv6 /64) per worker; table {} slots ({} KiB) per worker",
            rl.rate_per_sec,
            rl.burst,
            rl.table_slots(),
            rl.memory_bytes() / 1024
        ),
        None => log::warn!("rate limit off (--rate-limit 0)"),
    }
    // Read before any socket is opened: a secret file others can read is a one-line refusal to start.
    let secret = match &s.rendezvous {
        Some(r) => {
            let file = holepunch::io::read_network_secret(&r.secret_file).context("--secret-file")?;
            log::info!(
                "rendezvous on (docs/signal.md), UDP only: registrations live {}s, at most {} peers, {} requests/s \
                 per source IP (IPv6 /64)",
                r.lifetime.as_secs(),
                r.capacity,
                r.rate_limit.rate_per_sec
            );
            match &r.registry {
                Some(shared) => log::info!(
                    "rendezvous registrations shared through Redis at {} as instance {} (docs/deploy.md)",
                    cluster::redacted(&shared.url),
                    shared.instance_id
                ),
                None => log::info!("rendezvous registrations in memory (no --registry)"),
            }
            Some(file)
        }
        None => {
            log::info!("rendezvous off (no --secret-file): rendezvous messages are dropped and counted");
            None
        }
    };
    let plan = memory::Plan::of(&s);
    log::info!("memory: {} for these settings ({})", memory::human(plan.total()), plan.describe());
    raise_fd_limit(&s);

    // Fail fast with one clear line if any address is unusable, before starting anything.
    for &l in locals {
        net::probe_free(Proto::Udp, cfg.bind_addr(l))?;
        if s.tcp {
            net::probe_free(Proto::Tcp, tcp_addr(&s, l))?;
        }
    }
    let metrics_listener = match s.metrics {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| net::bind_error(Proto::Tcp, addr, &e))?),
        None => None,
    };
    if let Some(l) = &metrics_listener {
        l.set_nonblocking(true).context("metrics listener")?;
    }

    // UDP: for each worker, one SO_REUSEPORT socket per local address, one thread per socket.
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut blocks = Vec::new();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    let mut sets = Vec::with_capacity(s.threads);
    for _ in 0..s.threads {
        let mut set: [Option<UdpSocket>; 4] = [None, None, None, None];
        for &l in locals {
            set[l.index()] = Some(net::udp_worker_socket(cfg.bind_addr(l), s.threads > 1)?);
        }
        sets.push(Arc::new(set));
    }
    // The TURN REST secret: the relay checks credentials with it, and the rendezvous grants registered peers
    // credentials from it (docs/relay.md, "Credentials from the rendezvous").
    let turn_secret = match &s.turn {
        Some(t) => match (&t.auth_secret, &t.auth_secret_file) {
            (Some(text), _) => Some(text.as_bytes().to_vec()),
            (None, Some(path)) => Some(turn::read_secret(path)?),
            (None, None) => None,
        },
        None => None,
    };
    let rendezvous_counters = Arc::new(rendezvous::Counters::default());
    let rendezvous = match (&s.rendezvous, secret) {
        (Some(r), Some(secret)) => {
            let link = match &r.registry {
                Some(shared) => Some(Arc::new(cluster::Link::new(&shared.url, shared.instance_id.clone())?)),
                None => None,
            };
            // The first worker group's sockets send what the timers produce: with SO_REUSEPORT every socket on
            // an address sends from that address.
            let rv = rendezvous::Rendezvous::new(
                r,
                secret,
                cfg.clone(),
                sets[0].clone(),
                rendezvous_counters.clone(),
                keys.bytes(),
                start,
                turn_secret.clone(),
                link.clone(),
            )?;
            let rv = Arc::new(rv);
            if let Some(link) = link {
                // Redis unreachable at start is not fatal: stund serves its own peers, degraded, and says so.
                handles
                    .extend(cluster::spawn(link, rv.clone(), stop.clone()).context("cannot start the Redis threads")?);
            }
            let (timer, stop) = (rv.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name("stund-rendezvous".into())
                .spawn(move || timer.run_timers(&stop))
                .context("cannot start the rendezvous timer thread")?;
            handles.push(h);
            Some(rv)
        }
        _ => None,
    };
    // Started after the workers: it runs the first worker itself (`RelayThread::adopt`).
    let mut relay_thread = None;
    let turn = match &s.turn {
        Some(t) => {
            let relay = turn::relay_config(t, turn_secret.clone(), cfg, s.rate_limit);
            let (thread, shared) = turn::RelayThread::new(t, relay, cfg.clone(), sets[0].clone(), keys.bytes(), start)?;
            relay_thread = Some(thread);
            log::info!(
                "TURN relay on (RFC 8656, UDP): realm {:?}, {} user(s){}, relay sockets on {} ports {}-{}, \
                 at most {} allocations, {} per user, {} bytes/s each{}",
                t.realm,
                t.users.len(),
                if t.auth_secret.is_some() || t.auth_secret_file.is_some() { " + REST shared secret" } else { "" },
                t.relay_ip,
                t.relay_ports.0,
                t.relay_ports.1,
                t.max_allocations,
                t.user_quota,
                if t.bandwidth == 0 { "unlimited".to_string() } else { t.bandwidth.to_string() },
                if t.allowed.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", also relaying to {}",
                        t.allowed.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" ")
                    )
                },
            );
            Some(shared)
        }
        None => {
            log::info!("TURN relay off (no --user or --auth-secret)");
            None
        }
    };
    for (t, set) in sets.into_iter().enumerate() {
        for &l in locals {
            let responder = Responder::new(cfg.clone(), s.rate_limit, keys.next_u64(), start)?;
            let shared = Arc::new(SharedCounters::new());
            blocks.push(shared.clone());
            let worker = udp::Worker {
                responder,
                local: l,
                local_addr: cfg.bind_addr(l),
                sockets: set.clone(),
                shared,
                stop: stop.clone(),
                rendezvous: rendezvous.clone(),
                rendezvous_counters: rendezvous_counters.clone(),
                turn: turn.clone(),
            };
            // The relay thread serves the first socket of the first group itself: TURN traffic there reaches
            // its engine without a queue or a thread switch (docs/architecture.md, "Relay").
            if let Some(thread) = relay_thread.as_mut().filter(|_| t == 0 && l == locals[0]) {
                thread.adopt(worker).context("cannot watch the listening socket from the TURN relay thread")?;
                continue;
            }
            let h = std::thread::Builder::new()
                .name(format!("stund-udp-{t}-{}", l.index()))
                .spawn(move || worker.run())
                .context("cannot start a worker thread")?;
            handles.push(h);
        }
    }
    if let Some(thread) = relay_thread {
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name("stund-turn".into())
            .spawn(move || thread.run(&stop))
            .context("cannot start the TURN relay thread")?;
        handles.push(h);
    }
    log::info!(
        "UDP: {} worker thread(s) x {} socket(s), recvmmsg/sendmmsg batches of {}",
        s.threads,
        locals.len(),
        udp::BATCH
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let tcp_key = keys.next_u64();
    let workers = s.threads * locals.len();
    let udp = UdpSide {
        blocks,
        workers,
        rendezvous: metrics::RendezvousStats { server: rendezvous, counters: rendezvous_counters },
        turn,
    };
    let result = rt.block_on(async_main(&s, metrics_listener, udp, start, tcp_key, &handles));

    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while handles.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if handles.iter().any(|h| !h.is_finished()) {
        log::warn!("some workers did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
    } else {
        for h in handles {
            let _ = h.join();
        }
    }
    drop(rt);
    result
}

/// Where the TCP listener of local socket `l` binds: its UDP address, except the primary's port with
/// `--tcp-port`.
fn tcp_addr(s: &Settings, l: LocalSocket) -> std::net::SocketAddr {
    let addr = s.server.bind_addr(l);
    if l == LocalSocket::PRIMARY {
        std::net::SocketAddr::new(addr.ip(), s.tcp_port)
    } else {
        addr
    }
}

/// What the UDP side hands to the reports.
struct UdpSide {
    /// Each UDP worker's counters.
    blocks: Vec<Arc<SharedCounters>>,
    /// UDP worker threads (threads x local sockets).
    workers: usize,
    rendezvous: metrics::RendezvousStats,
    turn: Option<Arc<turn::TurnShared>>,
}

async fn async_main(
    s: &Settings,
    metrics_listener: Option<std::net::TcpListener>,
    udp: UdpSide,
    start: Instant,
    tcp_key: u64,
    handles: &[JoinHandle<()>],
) -> Result<()> {
    let cfg = &s.server;
    let UdpSide { mut blocks, workers, rendezvous, turn } = udp;
    let tcp = if s.tcp {
        let counters = Arc::new(SharedCounters::new());
        blocks.push(counters.clone());
        let shared = Arc::new(tcp::TcpShared {
            responder: Mutex::new(Responder::new(cfg.clone(), s.rate_limit, tcp_key, start)?),
            counters,
            limit: Mutex::new(ConnectionLimit::new(s.tcp_max_connections, s.tcp_max_connections_per_ip)),
            idle: s.tcp_idle_timeout,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            turn: turn.clone(),
        });
        for &l in cfg.local_sockets() {
            let addr = cfg.bind_addr(l);
            // With --tcp-port the primary listens elsewhere; requests still name the primary socket (its
            // logical address), so answers and TURN 5-tuples are the same as on the UDP port.
            let std_listener = net::tcp_listener(tcp_addr(s, l))?;
            let listener = tokio::net::TcpListener::from_std(std_listener).context("TCP listener")?;
            tokio::spawn(tcp::serve(listener, addr, shared.clone()));
        }
        log::info!(
            "TCP: listening on the same address(es) (primary port {}), at most {} connections, {} per source IP \
             (IPv6 /64){}",
            s.tcp_port,
            s.tcp_max_connections,
            s.tcp_max_connections_per_ip,
            if turn.is_some() { ", TURN over TCP on" } else { "" }
        );
        Some(shared)
    } else {
        None
    };

    let stats = Arc::new(Stats {
        blocks,
        tcp,
        start,
        mode: if cfg.behavior_discovery() { "rfc5780" } else { "rfc5389" },
        workers,
        rendezvous,
        turn,
        metrics_refused: AtomicU64::new(0),
    });
    if let Some(l) = metrics_listener {
        let addr = l.local_addr().context("metrics listener")?;
        let listener = tokio::net::TcpListener::from_std(l).context("metrics listener")?;
        tokio::spawn(metrics::serve(listener, stats.clone()));
        log::info!("metrics: http://{addr}/metrics");
    }
    // Handlers first, so a signal right after "ready" is never lost.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot install the SIGINT handler")?;
    log::info!("stund {} ready", env!("CARGO_PKG_VERSION"));
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut last_summary = Instant::now();
    let mut prev = stats.totals();
    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = check.tick() => {
                if handles.iter().any(|h| h.is_finished()) {
                    break Err(anyhow::anyhow!("a UDP worker or the rendezvous timer stopped unexpectedly"));
                }
                if let Some(every) = s.stats_interval {
                    let elapsed = last_summary.elapsed();
                    if elapsed >= every {
                        let (line, now) = stats.summary(&prev, elapsed);
                        log::info!("{line}");
                        prev = now;
                        last_summary = Instant::now();
                    }
                }
            }
        }
    };
    let (line, _) = stats.summary(&prev, last_summary.elapsed());
    match &outcome {
        Ok(sig) => log::info!("{sig}: shutting down; totals: {line}"),
        Err(_) => log::error!("totals: {line}"),
    }
    outcome.map(|_| ())
}

//! The punchd rendezvous (docs/signal.md) on stund's UDP socket(s), next to Binding.
//!
//! One `signal::Server` for the whole process, behind a mutex: rendezvous traffic is a few requests per peer
//! per keepalive, far below Binding's rate, and one registry must see every peer whichever worker its
//! datagrams reach (SO_REUSEPORT spreads flows over the workers). The UDP workers test each datagram's
//! 20-byte header with `signal::is_signal_message` first, so Binding never takes this lock. A worker that
//! receives a rendezvous message feeds it to the server and sends the answers at once; a timer thread runs
//! the server's timers (PUSH retransmissions, expiry) and sends what they produce. Answers leave from the
//! socket whose address the server names in `Transmit::local`: the one the request arrived on, so the peer's
//! NAT lets them in (with SO_REUSEPORT every worker's socket on that address is the same to the peer).
//!
//! UDP only: the punching socket that registers is a UDP socket; TCP connections get no rendezvous.

use crate::cluster::Link;
use holepunch::net::{Engine, Received, Seed};
use holepunch::server::{LocalSocket, ServerConfig};
use holepunch::signal::{
    MemoryRegistry, NetworkSecret, PeerName, Refusal, Registration, Registry, Server, ServerConfig as SignalConfig,
    ServerEvent, Stats, TurnGrant,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const LOG: &str = "stund::rendezvous";

/// How long the TURN credentials granted to a registered peer stay valid (renewed in every answer; an
/// allocation made with them is refused once they expire, and the peer allocates again with fresh ones).
const TURN_GRANT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Longest the timer thread sleeps before it looks at the stop flag.
const TIMER_WAKE: Duration = Duration::from_millis(200);

/// Largest datagram the server writes (docs/signal.md: everything stays below 1280 bytes).
const SEND_BUF: usize = 1500;

/// Refusal reasons, in the order of [`Counters::refused`] and their metric labels.
pub const REFUSAL_LABELS: [&str; 6] =
    ["bad_integrity", "malformed", "name_taken", "full", "unknown_peer", "not_registered"];

fn refusal_index(r: &Refusal) -> usize {
    match r {
        Refusal::BadIntegrity => 0,
        Refusal::Malformed => 1,
        Refusal::NameTaken => 2,
        Refusal::Full => 3,
        Refusal::UnknownPeer(_) => 4,
        Refusal::NotRegistered => 5,
    }
}

/// What stund counts itself (the server keeps the rest in `signal::Stats`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Rendezvous messages dropped because the rendezvous is off (no `--secret-file`).
    pub ignored: AtomicU64,
    /// Requests refused, by [`REFUSAL_LABELS`].
    pub refused: [AtomicU64; 6],
    /// Registrations whose lifetime ran out.
    pub expired: AtomicU64,
    /// Rendezvous datagrams the kernel refused to send, or with no socket for their local address.
    pub send_errors: AtomicU64,
}

/// A snapshot for metrics and the log summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub stats: Stats,
    /// Peers registered now.
    pub peers: usize,
    /// The registry's memory now (`Registry::memory_bytes`).
    pub registry_bytes: usize,
    /// PUSH transactions in flight.
    pub pushes_in_flight: usize,
}

/// The shared rendezvous server and the sockets it sends from.
pub struct Rendezvous {
    server: Mutex<Server<MemoryRegistry>>,
    /// Wakes the timer thread when a request may have started new timers (a PUSH's retransmission).
    wake: Condvar,
    /// One socket per local address, for sends (any of the SO_REUSEPORT sockets of that address will do).
    sockets: Arc<[Option<UdpSocket>; 4]>,
    config: ServerConfig,
    pub counters: Arc<Counters>,
    /// The Redis link when the registrations are shared (`--registry`).
    pub cluster: Option<Arc<Link>>,
}

impl Rendezvous {
    #[allow(clippy::too_many_arguments)] // the settings, the sockets, the clock and the secrets it is built from
    pub fn new(
        r: &crate::config::Rendezvous,
        secret: NetworkSecret,
        config: ServerConfig,
        sockets: Arc<[Option<UdpSocket>; 4]>,
        counters: Arc<Counters>,
        seed: Seed,
        now: Instant,
        turn_secret: Option<Vec<u8>>,
        cluster: Option<Arc<Link>>,
    ) -> anyhow::Result<Rendezvous> {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let turn_grant = turn_secret.map(|secret| TurnGrant {
            secret,
            validity: TURN_GRANT_VALIDITY,
            unix_at_epoch: unix,
            epoch: now,
        });
        let sc = SignalConfig {
            lifetime: r.lifetime,
            capacity: r.capacity,
            rate_limit: r.rate_limit,
            turn_grant,
            cluster: cluster.is_some(),
            ..SignalConfig::new(secret)
        };
        let registry = MemoryRegistry::new(r.capacity, now);
        let server =
            Server::new(sc, registry, seed, now).map_err(|e| anyhow::anyhow!("--rendezvous-rate-limit: {e}"))?;
        Ok(Rendezvous { server: Mutex::new(server), wake: Condvar::new(), sockets, config, counters, cluster })
    }

    fn lock(&self) -> MutexGuard<'_, Server<MemoryRegistry>> {
        // A panic while holding the lock leaves a server whose state is still consistent enough to serve.
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One rendezvous datagram `data` from `source`, received on the socket bound to `local`.
    pub fn handle(&self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let mut server = self.lock();
        server.handle_input(now, Received::udp(local, source), data);
        self.flush(&mut server);
        drop(server);
        self.wake.notify_one();
    }

    /// A registration another instance announced (or Redis held at a resync); true when applied.
    pub fn apply_remote(&self, reg: &Registration, lifetime: Duration) -> bool {
        let mut server = self.lock();
        let applied = server.apply_remote(Instant::now(), reg, lifetime).is_ok();
        self.flush(&mut server);
        applied
    }

    /// Another instance asks for a push to `to`, registered here.
    pub fn introduce_remote(&self, to: &PeerName, about: &Registration, session: u64) {
        let mut server = self.lock();
        server.introduce_remote(Instant::now(), to, about, session);
        self.flush(&mut server);
        drop(server);
        self.wake.notify_one();
    }

    /// Sends what the server has and logs and counts its events. What other instances owe goes to the Redis
    /// link first (a queue, never a wait), so their pushes start as close as possible to ours.
    fn flush(&self, server: &mut Server<MemoryRegistry>) {
        if let Some(link) = &self.cluster {
            let now = Instant::now();
            while let Some(out) = server.poll_cluster() {
                link.enqueue(now, out);
            }
        }
        let mut buf = [0u8; SEND_BUF];
        while let Some(t) = server.poll_transmit(&mut buf) {
            let sock = self.config.local_socket(t.local).and_then(|l: LocalSocket| self.sockets[l.index()].as_ref());
            let sent = sock.is_some_and(|s| s.send_to(&buf[..t.len.min(buf.len())], t.dst).is_ok());
            if !sent {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Some(e) = server.poll_event() {
            self.on_event(e);
        }
    }

    /// The library logs registrations, introductions and failed pushes at info, and refusals with a known
    /// name at debug; stund adds what it does not log and counts.
    fn on_event(&self, e: ServerEvent) {
        match e {
            ServerEvent::Expired { name } => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                log::info!(target: LOG, "{name} expired (no refresh)");
            }
            ServerEvent::Refused { source, name, reason } => {
                self.counters.refused[refusal_index(&reason)].fetch_add(1, Ordering::Relaxed);
                if name.is_none() || reason == Refusal::BadIntegrity {
                    let who = name.map(|n| format!(" ({n})")).unwrap_or_default();
                    log::debug!(target: LOG, "{source}{who}: refused: {reason}");
                }
            }
            ServerEvent::Registered { .. }
            | ServerEvent::Introduced { .. }
            | ServerEvent::IntroducedRemotely { .. }
            | ServerEvent::PushFailed { .. } => {}
        }
    }

    /// Runs the server's timers until `stop` is set (noticed within [`TIMER_WAKE`]).
    pub fn run_timers(&self, stop: &AtomicBool) {
        let mut server = self.lock();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if server.poll_timeout().is_some_and(|t| t <= now) {
                server.handle_timeout(now);
                self.flush(&mut server);
            }
            let wait = server.poll_timeout().map_or(TIMER_WAKE, |t| t.saturating_duration_since(now));
            // Never a busy loop, never a sleep past the stop flag's check.
            let wait = wait.clamp(Duration::from_millis(1), TIMER_WAKE);
            server = match self.wake.wait_timeout(server, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let server = self.lock();
        let (_, pushes_in_flight) = server.introductions();
        Snapshot {
            stats: server.stats(),
            peers: server.registry().len(),
            registry_bytes: server.registry().memory_bytes(),
            pushes_in_flight,
        }
    }
}

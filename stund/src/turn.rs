//! The TURN relay's driver (docs/architecture.md, "Relay"): one thread owns the `holepunch::relay` engine and
//! every relay socket, and waits on them all with epoll.
//!
//! Threading. The UDP workers receive on the listening socket(s) as before; a datagram that
//! `relay::is_turn_message` says is TURN's (ChannelData, or a STUN message of a TURN method) is copied into
//! a bounded queue (`std::sync::mpsc::sync_channel`, whose slots are allocated once when it is made) and the
//! relay thread is woken through an eventfd, once per receive batch. The relay thread is the only one that
//! touches the engine, so it needs no lock: it feeds the engine the queued client datagrams and what its relay
//! sockets receive from peers (one `recvmmsg` per socket and wake), opens and closes relay sockets when the
//! engine asks (`Event::OpenRelay`, `Event::CloseRelay`), and sends the engine's transmits — towards peers
//! from the relay socket the transmit names, towards clients from the listening socket of the transmit's
//! local address (with SO_REUSEPORT any worker's socket on that address is the same to the client). Transmits
//! are gathered per sending socket ([`Outbox`]) and leave in one `sendmmsg` per socket at the end of each
//! turn of the loop (or when a batch fills): under load one system call carries many datagrams. Nothing on
//! this path allocates per packet: the queue's slots, the batches and the engine's recycled transmit buffers
//! are reused. A full
//! queue drops the datagram and counts it (`stund_turn_queue_full_total`): TURN traffic can never stall
//! Binding.
//!
//! One thread bounds the relay at one core; that is the design's limit (docs/performance.md).

use crate::config::Turn;
use holepunch::io::batch::{RecvBatch, SendBatch, Wait};
use holepunch::net::{Engine, Received, Seed, Transport};
use holepunch::relay::{Credentials, Event, PeerPolicy, RelayConfig, RelayServer, Stats, MAX_DATAGRAM};
use holepunch::server::{LocalSocket, RateLimitConfig, ServerConfig};
use holepunch::stun::Family;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LOG: &str = "stund::turn";

/// Client datagrams queued between the UDP workers and the relay thread (slots of about 2 KiB each).
pub const QUEUE: usize = 1024;
/// Bytes the queue takes.
pub const QUEUE_BYTES: usize = QUEUE * std::mem::size_of::<Inbound>();
/// Datagrams read from one relay socket in one `recvmmsg` (the others get their turn after it).
const RECV_BURST: usize = 32;
/// Datagrams gathered for one sending socket before they leave in one `sendmmsg`.
const SEND_BURST: usize = 32;
/// Sending sockets with a batch open at once (relay sockets and listening sockets); a transmit from a
/// further one sends every open batch first.
const SEND_LANES: usize = 8;
/// Longest the relay thread sleeps before it looks at the stop flag.
const WAKE: Duration = Duration::from_millis(200);
/// How often the engine's counters are copied out for the metrics endpoint.
const PUBLISH: Duration = Duration::from_millis(250);
/// Ports tried for one relay socket before the allocation is refused (508).
const BIND_TRIES: usize = 256;
/// The epoll token of the eventfd; relay sockets use their slot index.
const WAKE_TOKEN: u64 = u64::MAX;
/// The epoll token of the listening socket whose worker the relay thread runs itself ([`RelayThread::adopt`]).
const LISTEN_TOKEN: u64 = u64::MAX - 1;
/// Receive batches the adopted worker serves per wake before the relay sockets get their turn.
const LISTEN_BURST: usize = 4;

/// One client datagram (or TCP frame) on its way to the relay thread.
pub struct Inbound {
    local: SocketAddr,
    source: SocketAddr,
    transport: Transport,
    len: u16,
    data: [u8; MAX_DATAGRAM],
}

/// Frames towards one TCP client, written by its connection's writer task.
pub type TcpFrames = tokio::sync::mpsc::Sender<Vec<u8>>;

/// TCP connections come and go through this channel, so the relay thread keeps its map without a lock.
pub enum TcpControl {
    /// A connection sent its first TURN frame: what the relay sends to (`local`, `peer`) goes to `frames`.
    Open { local: SocketAddr, peer: SocketAddr, frames: TcpFrames },
    /// The connection closed: its allocation ends (RFC 8656 §3.1).
    Close { local: SocketAddr, peer: SocketAddr },
}

/// What the workers, the metrics endpoint and the relay thread share.
pub struct TurnShared {
    queue: SyncSender<Inbound>,
    control: Sender<TcpControl>,
    wake: OwnedFd,
    /// The engine's counters, copied out every [`PUBLISH`].
    pub stats: Mutex<Stats>,
    /// Relay sockets open now.
    pub relay_sockets: AtomicU64,
    /// Client datagrams dropped because the queue was full.
    pub queue_full: AtomicU64,
    /// Relay sockets that could not be bound (no free port in the range, or another error).
    pub open_failures: AtomicU64,
    pub send_errors: AtomicU64,
}

impl TurnShared {
    /// Queues one client datagram (a UDP worker calls this; [`Self::wake`] after its batch).
    pub fn submit(&self, local: SocketAddr, source: SocketAddr, data: &[u8]) -> bool {
        self.submit_on(Transport::Udp, local, source, data)
    }

    /// Queues one client datagram or TCP frame.
    pub fn submit_on(&self, transport: Transport, local: SocketAddr, source: SocketAddr, data: &[u8]) -> bool {
        if data.len() > MAX_DATAGRAM {
            return false;
        }
        let mut slot = Inbound { local, source, transport, len: data.len() as u16, data: [0; MAX_DATAGRAM] };
        slot.data[..data.len()].copy_from_slice(data);
        match self.queue.try_send(slot) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// A TCP connection's open or close, then a wake.
    pub fn tcp(&self, c: TcpControl) {
        let _ = self.control.send(c);
        self.wake();
    }

    /// Wakes the relay thread.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a local to an eventfd we own.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// The engine's configuration from the settings; the shared secret is read by the caller.
pub fn relay_config(
    t: &Turn,
    secret: Option<Vec<u8>>,
    server: &ServerConfig,
    rate: Option<RateLimitConfig>,
) -> RelayConfig {
    let mut credentials = Credentials::default();
    for (name, pass) in &t.users {
        credentials.add_user(name, pass, &t.realm);
    }
    if let Some(s) = secret {
        credentials.set_secret(s);
    }
    let mut own: Vec<IpAddr> = vec![server.primary, t.relay_ip];
    own.extend(server.alternate);
    own.extend(server.public_primary);
    own.extend(server.public_alternate);
    RelayConfig {
        credentials,
        user_quota: t.user_quota,
        max_allocations: t.max_allocations,
        bandwidth: t.bandwidth,
        policy: PeerPolicy { allowed: t.allowed.clone(), denied: t.denied.clone(), own, relay_ports: t.relay_ports },
        rate_limit: rate,
        // The relay sockets are bound to --relay-ip; behind a 1:1 NAT the public primary is what peers see.
        public_ip: server.public_primary.filter(|_| t.relay_ip == server.primary),
        relay_family: Some(if t.relay_ip.is_ipv4() { Family::V4 } else { Family::V6 }),
        ..RelayConfig::new(&t.realm)
    }
}

/// Reads the TURN REST secret file: its content, surrounding whitespace trimmed.
pub fn read_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path).map_err(|e| anyhow::anyhow!("--auth-secret-file {}: {e}", path.display()))?;
    let trimmed = text.trim_ascii().to_vec();
    if trimmed.is_empty() {
        anyhow::bail!("--auth-secret-file {} is empty", path.display());
    }
    Ok(trimmed)
}

/// The relay thread's state.
pub struct RelayThread {
    engine: RelayServer,
    queue: Receiver<Inbound>,
    control: Receiver<TcpControl>,
    /// TCP clients by (local, peer): where transmits to them go.
    tcp: HashMap<(SocketAddr, SocketAddr), TcpFrames>,
    shared: Arc<TurnShared>,
    epoll: OwnedFd,
    /// Relay sockets by slot (the epoll token) and by local address.
    relays: Vec<Option<(UdpSocket, SocketAddr)>>,
    free: Vec<usize>,
    by_addr: HashMap<SocketAddr, usize>,
    /// The listening sockets (by `LocalSocket::index`), for transmits towards clients.
    sockets: Arc<[Option<UdpSocket>; 4]>,
    config: ServerConfig,
    relay_ip: IpAddr,
    ports: (u16, u16),
    next_port: u32,
    outbox: Outbox,
    peer_batch: RecvBatch,
    /// The UDP worker of one listening socket, run by this thread: TURN datagrams arriving there reach the
    /// engine without the queue, the wake and a switch between threads.
    adopted: Option<(crate::udp::Worker, crate::udp::WorkerIo)>,
}

/// A socket the relay thread sends from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendFrom {
    /// A relay socket, by slot.
    Relay(usize),
    /// A listening socket, by `LocalSocket::index`.
    Listening(usize),
}

/// Transmits gathered per sending socket, sent with one `sendmmsg` each ([`RelayThread::send_pending`]).
/// The batches are allocated once, with the thread.
struct Outbox {
    lanes: Vec<(Option<SendFrom>, SendBatch)>,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox { lanes: (0..SEND_LANES).map(|_| (None, SendBatch::new(SEND_BURST, MAX_DATAGRAM))).collect() }
    }

    /// The lane of `from`, or a free one; None when every lane is taken by another socket.
    fn lane(&mut self, from: SendFrom) -> Option<usize> {
        if let Some(i) = self.lanes.iter().position(|(s, _)| *s == Some(from)) {
            return Some(i);
        }
        let i = self.lanes.iter().position(|(s, _)| s.is_none())?;
        self.lanes[i].0 = Some(from);
        Some(i)
    }
}
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl RelayThread {
    /// The engine, its queue and its epoll set; `seed` keys the engine's nonces and rate limiter.
    pub fn new(
        t: &Turn,
        relay: RelayConfig,
        config: ServerConfig,
        sockets: Arc<[Option<UdpSocket>; 4]>,
        seed: Seed,
        now: Instant,
    ) -> anyhow::Result<(RelayThread, Arc<TurnShared>)> {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let first_port = u32::from_be_bytes([seed[0], seed[1], seed[2], seed[3]]);
        let engine = RelayServer::new(relay, seed, now, unix).map_err(|e| anyhow::anyhow!("TURN rate limit: {e}"))?;
        // SAFETY: plain syscalls; the fds are owned right away.
        let (epoll, wake) = unsafe {
            let ep = cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
            let epoll = OwnedFd::from_raw_fd(ep);
            let ev = cvt(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
            (epoll, OwnedFd::from_raw_fd(ev))
        };
        let (tx, rx) = sync_channel(QUEUE);
        let (control_tx, control_rx) = channel();
        let shared = Arc::new(TurnShared {
            queue: tx,
            control: control_tx,
            wake,
            stats: Mutex::new(Stats::default()),
            relay_sockets: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            open_failures: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
        });
        let span = u32::from(t.relay_ports.1 - t.relay_ports.0) + 1;
        let thread = RelayThread {
            engine,
            queue: rx,
            control: control_rx,
            tcp: HashMap::new(),
            shared: shared.clone(),
            epoll,
            relays: Vec::new(),
            free: Vec::new(),
            by_addr: HashMap::new(),
            sockets,
            config,
            relay_ip: t.relay_ip,
            ports: t.relay_ports,
            next_port: first_port % span,
            outbox: Outbox::new(),
            peer_batch: RecvBatch::new(RECV_BURST, MAX_DATAGRAM),
            adopted: None,
        };
        thread.watch(thread.shared.wake.as_raw_fd(), WAKE_TOKEN)?;
        Ok((thread, shared))
    }

    fn watch(&self, fd: libc::c_int, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: a valid epoll fd and a pointer to a local event.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
    }

    /// Serves `worker`'s listening socket from this thread (Binding, rendezvous and TURN alike) instead of a
    /// thread of its own. Clients reaching other sockets still come through the queue.
    pub fn adopt(&mut self, worker: crate::udp::Worker) -> io::Result<()> {
        let fd = worker.socket().map(|s| s.as_raw_fd()).ok_or_else(|| io::Error::other("worker without socket"))?;
        self.watch(fd, LISTEN_TOKEN)?;
        self.adopted = Some((worker, crate::udp::WorkerIo::default()));
        Ok(())
    }

    /// The adopted worker's socket is readable: a few batches, their TURN datagrams fed to the engine here.
    fn serve_adopted(&mut self, out: &mut [u8]) {
        let Some((mut worker, mut wio)) = self.adopted.take() else { return };
        for _ in 0..LISTEN_BURST {
            let n = match worker.serve_batch(&mut wio, Wait::Never, true) {
                Ok(n) => n,
                Err(e) => {
                    log::debug!(target: LOG, "receive on the adopted socket failed: {e}");
                    break;
                }
            };
            let now = Instant::now();
            for (from, data) in wio.turn_datagrams() {
                self.engine.handle_input(now, Received::udp(worker.local_addr, from), data);
                self.flush(now, out);
            }
            if n < crate::udp::BATCH {
                break;
            }
        }
        self.adopted = Some((worker, wio));
    }

    /// Runs until `stop` is set (noticed within [`WAKE`]).
    pub fn run(mut self, stop: &AtomicBool) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut out = vec![0u8; MAX_DATAGRAM + 64];
        let mut last_publish = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = self.engine.poll_timeout().map_or(WAKE, |t| t.saturating_duration_since(now)).min(WAKE);
            // Round up: a timer 0.4 ms away must not become a busy loop of zero-millisecond waits.
            let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: a valid epoll fd and a buffer of `events.len()` events.
            let n = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, ms)
            };
            let now = Instant::now();
            for ev in &events[..n.max(0) as usize] {
                let token = ev.u64;
                if token == WAKE_TOKEN {
                    let mut count = 0u64;
                    // SAFETY: reading 8 bytes into a local from our non-blocking eventfd.
                    unsafe { libc::read(self.shared.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
                } else if token == LISTEN_TOKEN {
                    self.serve_adopted(&mut out);
                } else {
                    self.receive_from_peers(now, token as usize, &mut out);
                }
            }
            self.drain_control(now, &mut out);
            // Client datagrams: drained on every turn, not only when woken, so none waits for a later wake.
            for _ in 0..QUEUE {
                let Ok(d) = self.queue.try_recv() else { break };
                if d.transport == Transport::Tcp {
                    // Its connection's Open was sent before the frame: make sure it is known before the answer.
                    self.send_pending();
                    self.drain_control(now, &mut out);
                }
                let rx = Received { local: d.local, source: d.source, transport: d.transport };
                self.engine.handle_input(now, rx, &d.data[..usize::from(d.len)]);
                self.flush(now, &mut out);
            }
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
                self.flush(now, &mut out);
            }
            self.send_pending();
            if now.duration_since(last_publish) >= PUBLISH {
                self.publish();
                last_publish = now;
            }
        }
        self.publish();
    }

    fn drain_control(&mut self, now: Instant, out: &mut [u8]) {
        while let Ok(c) = self.control.try_recv() {
            match c {
                TcpControl::Open { local, peer, frames } => {
                    self.tcp.insert((local, peer), frames);
                }
                TcpControl::Close { local, peer } => {
                    self.send_pending();
                    self.tcp.remove(&(local, peer));
                    self.engine.connection_closed(peer, local);
                    self.flush(now, out);
                }
            }
        }
    }

    fn publish(&self) {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()) = self.engine.stats();
        self.shared.relay_sockets.store(self.by_addr.len() as u64, Ordering::Relaxed);
    }

    /// One `recvmmsg` on relay socket `slot` (what is left waits for the next turn: epoll is level-triggered).
    fn receive_from_peers(&mut self, now: Instant, slot: usize, out: &mut [u8]) {
        let Some(Some((sock, local))) = self.relays.get(slot) else { return };
        let local = *local;
        // WouldBlock: nothing there. Other errors (ICMP unreachable reported on a UDP socket): go on later.
        let Ok(n) = self.peer_batch.recv(sock, RECV_BURST, Wait::Never) else { return };
        for i in 0..n {
            let d = self.peer_batch.get(i);
            let (Some(from), false) = (d.source, d.truncated) else { continue };
            self.engine.handle_input(now, Received::udp(local, from), d.data);
            self.flush(now, out);
        }
    }

    /// Sends every gathered batch, one `sendmmsg` per socket.
    fn send_pending(&mut self) {
        for i in 0..self.outbox.lanes.len() {
            self.send_lane(i);
        }
    }

    fn send_lane(&mut self, i: usize) {
        let (from, batch) = &mut self.outbox.lanes[i];
        let Some(sender) = from.take() else { return };
        if batch.is_empty() {
            return;
        }
        let sock = match sender {
            SendFrom::Relay(slot) => self.relays.get(slot).and_then(|r| r.as_ref()).map(|(s, _)| s),
            SendFrom::Listening(index) => self.sockets[index].as_ref(),
        };
        let failed = match sock {
            Some(sock) => batch.send_all(sock).failed,
            None => {
                let n = batch.len();
                batch.clear();
                n
            }
        };
        if failed > 0 {
            self.shared.send_errors.fetch_add(failed as u64, Ordering::Relaxed);
        }
    }

    /// Gathers one transmit for `from`'s next `sendmmsg`.
    fn queue_send(&mut self, from: SendFrom, data: &[u8], dst: SocketAddr) {
        let lane = match self.outbox.lane(from) {
            Some(lane) => lane,
            None => {
                self.send_pending();
                self.outbox.lane(from).expect("every lane is free after sending")
            }
        };
        if self.outbox.lanes[lane].1.is_full() {
            self.send_lane(lane);
            self.outbox.lanes[lane].0 = Some(from);
        }
        self.outbox.lanes[lane].1.push_copy(data, Some(dst));
    }

    /// Acts on the engine's events (relay sockets first: an Allocate's answer waits for its socket) and
    /// sends its transmits.
    fn flush(&mut self, now: Instant, out: &mut [u8]) {
        while let Some(e) = self.engine.poll_event() {
            match e {
                Event::OpenRelay { id, family, even, reserve_next, client } => {
                    let (bound, reserved) = self.open_relay(family, even, reserve_next);
                    if bound.is_none() {
                        self.shared.open_failures.fetch_add(1, Ordering::Relaxed);
                        log::warn!(target: LOG, "no relay socket for {client} (ports {}-{} in use?)", self.ports.0, self.ports.1);
                    }
                    if !self.engine.relay_opened_with_reservation(now, id, bound, reserved) {
                        for addr in [bound, reserved].into_iter().flatten() {
                            self.close_relay(addr);
                        }
                    }
                }
                Event::CloseRelay { relay, .. } => self.close_relay(relay),
            }
        }
        while let Some(t) = self.engine.poll_transmit(out) {
            let data = &out[..t.len];
            // A TCP client (the one place a frame is copied into a new buffer: the connection's writer task
            // owns the stream). A UDP client on the same address and port as a TCP one would be answered over
            // TCP; one host using one port number for both towards the same server address is not a case.
            if let Some(frames) = self.tcp.get(&(t.local, t.dst)) {
                if frames.try_send(data.to_vec()).is_err() {
                    self.shared.send_errors.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let from = match self.by_addr.get(&t.local) {
                Some(&slot) => Some(SendFrom::Relay(slot)),
                None => self
                    .config
                    .local_socket(t.local)
                    .map(|l: LocalSocket| l.index())
                    .filter(|&i| self.sockets[i].is_some())
                    .map(SendFrom::Listening),
            };
            match from {
                Some(from) => self.queue_send(from, &out[..t.len], t.dst),
                None => {
                    self.shared.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Binds a relay socket in the port range (an even port when `even`, and with `reserve_next` the port
    /// after it too, RFC 8656 §7.2), starting after the last port handed out.
    fn open_relay(
        &mut self,
        family: Family,
        even: bool,
        reserve_next: bool,
    ) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let fits = matches!((family, self.relay_ip), (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)));
        if !fits {
            return (None, None);
        }
        let span = u32::from(self.ports.1 - self.ports.0) + 1;
        for _ in 0..BIND_TRIES.min(span as usize) {
            let port = self.ports.0 as u32 + self.next_port % span;
            self.next_port = (self.next_port + 1) % span;
            if even && port % 2 == 1 {
                continue;
            }
            let Some(first) = self.bind_relay(port as u16) else { continue };
            if !reserve_next {
                return (Some(first), None);
            }
            match (port < u32::from(self.ports.1)).then(|| self.bind_relay(port as u16 + 1)).flatten() {
                Some(second) => return (Some(first), Some(second)),
                None => self.close_relay(first),
            }
        }
        (None, None)
    }

    /// One non-blocking relay socket on `port`, watched by epoll.
    fn bind_relay(&mut self, port: u16) -> Option<SocketAddr> {
        let addr = SocketAddr::new(self.relay_ip, port);
        let sock = UdpSocket::bind(addr).ok()?;
        sock.set_nonblocking(true).ok()?;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.relays.push(None);
            self.relays.len() - 1
        });
        if self.watch(sock.as_raw_fd(), slot as u64).is_err() {
            self.free.push(slot);
            return None;
        }
        self.relays[slot] = Some((sock, addr));
        self.by_addr.insert(addr, slot);
        Some(addr)
    }

    fn close_relay(&mut self, addr: SocketAddr) {
        let Some(&slot) = self.by_addr.get(&addr) else { return };
        // What it still has to send leaves before the socket closes (its slot may be reused at once).
        self.send_pending();
        self.by_addr.remove(&addr);
        if let Some((sock, _)) = self.relays[slot].take() {
            // SAFETY: removing a registered fd from our epoll set; closing it would remove it too.
            unsafe {
                libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, sock.as_raw_fd(), std::ptr::null_mut())
            };
        }
        self.free.push(slot);
    }
}

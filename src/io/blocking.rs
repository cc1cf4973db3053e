//! The blocking driver: runs any [`Engine`] over one or several `std::net::UdpSocket`s with plain threads
//! (docs/io.md, "Drivers"). Portable (Linux, Windows), no async runtime.
//!
//! One receiver thread per socket feeds a channel, so the loop itself is the one every engine wants: send
//! what the engine has, report its events, wait for a datagram or its next timeout, feed it, repeat. The
//! loop ends when the caller's callback breaks, its deadline passes or its stop flag is set. On Linux every
//! socket reports ICMP errors (IP_RECVERR, see `io::icmp`) and a port unreachable goes to
//! [`Engine::handle_unreachable`]; elsewhere silence is found by the engine's timers alone, except on a
//! connected socket: there the system reports an ICMP error as a refused or reset send or receive, and the
//! only destination it can be about is the socket's peer, so the driver tells the engine that.
//!
//! Sockets can be added and removed while the loop runs, through a [`SocketControl`] (birthday probing's
//! extra sockets, docs/punchd.md): the loop takes the changes at each turn, each added socket gets its own
//! receiver thread, and a removed socket's thread stops and the socket closes.

use super::driver::{no_socket, socket_for, Exit, Notice, DEFAULT_WAKE, RECV_BUF, SEND_BUF};
use super::icmp::{self, IcmpError};
use crate::net::{Engine, Received};
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a receiver thread blocks before it looks at the stop flag: bounds the time `run` takes to
/// return after the loop ends.
const RECV_WAKE: Duration = Duration::from_millis(50);

/// Most sockets added at run time held at once; more are closed at once and logged (each costs a thread).
pub const MAX_ADDED_SOCKETS: usize = 1024;

/// Takes datagrams before the engine sees them, in the thread that received them: a data path beside the
/// engine's control path (punchd's tunnel takes its WireGuard messages here, docs/io.md, "Drivers"), so bulk
/// traffic never queues behind the engine's loop.
pub trait Intercept: Send + Sync {
    /// True when the datagram `data` from `from` on `socket` (bound to `local`) was taken; false hands it
    /// to the engine.
    fn intercept(&self, socket: &UdpSocket, local: SocketAddr, from: SocketAddr, data: &[u8]) -> bool;

    /// The receiving thread has no more datagrams queued for now (on Linux, the end of one recvmmsg batch):
    /// the moment to write out what `intercept` collected.
    fn flush(&self) {}
}

/// Runs engines over a set of sockets (see the module docs).
pub struct Driver {
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    /// The peer of each connected socket: datagrams to it leave with `send`, which every system accepts on
    /// a connected socket (`send_to` fails there on some), and its ICMP errors are about it.
    peers: Vec<Option<SocketAddr>>,
    deadline: Option<Instant>,
    stop: Option<Arc<AtomicBool>>,
    wake: Duration,
    /// Where [`SocketControl`]s send their changes; made by [`Driver::socket_control`].
    changes: Option<(mpsc::Sender<Change>, mpsc::Receiver<Change>)>,
    /// The running loop's input, for [`SocketControl::wake`]; `None` between runs.
    input: Arc<Mutex<Option<mpsc::Sender<Input>>>>,
    intercept: Option<Arc<dyn Intercept>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("locals", &self.locals)
            .field("deadline", &self.deadline)
            .field("intercept", &self.intercept.is_some())
            .finish_non_exhaustive()
    }
}

/// Adds sockets to and removes them from a driver, also while it runs and from another thread (see the module
/// docs). Changes sent while the loop waits take effect when it wakes (an input, a timeout, or at the latest
/// the wake interval); changes sent from the loop's own callback take effect before it next sends.
#[derive(Clone, Debug)]
pub struct SocketControl {
    tx: mpsc::Sender<Change>,
    input: Arc<Mutex<Option<mpsc::Sender<Input>>>>,
}

#[derive(Debug)]
enum Change {
    Add(UdpSocket),
    Remove(SocketAddr),
}

impl SocketControl {
    /// Hands `socket` to the driver for the rest of the current (or next) run; returns its local address, the
    /// one the engine names in [`crate::net::Transmit::local`] and hears in [`Received::local`]. At most
    /// [`MAX_ADDED_SOCKETS`] are held at once. Added sockets close when the run ends.
    pub fn add(&self, socket: UdpSocket) -> io::Result<SocketAddr> {
        let local = socket.local_addr()?;
        self.tx.send(Change::Add(socket)).map_err(|_| io::Error::other("the driver is gone"))?;
        Ok(local)
    }

    /// Removes the added socket bound to `local`: its receiver thread stops and the socket closes (within
    /// 50 ms). The sockets the driver was made with are not removed.
    pub fn remove(&self, local: SocketAddr) -> io::Result<()> {
        self.tx.send(Change::Remove(local)).map_err(|_| io::Error::other("the driver is gone"))
    }

    /// Makes the running loop turn now instead of at its next input, timeout or wake interval: the engine's
    /// `handle_timeout` runs and what it queued is sent. For engines fed from other threads (a command
    /// channel read in `handle_timeout`, as punchd's control socket). Does nothing between runs (the next
    /// run starts with a turn anyway).
    pub fn wake(&self) {
        if let Some(tx) = self.input.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(Input::Wake);
        }
    }
}

/// A socket added at run time, with what stops its receiver thread.
struct Added {
    local: SocketAddr,
    socket: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    pool: mpsc::Sender<Vec<u8>>,
}

/// The sockets added while a run goes on, keyed by the index their receiver thread reports (after the
/// driver's own sockets' indices).
struct AddedSockets {
    by_index: HashMap<usize, Added>,
    next: usize,
    /// For the new receiver threads.
    tx: Option<mpsc::Sender<Input>>,
    intercept: Option<Arc<dyn Intercept>>,
}

impl AddedSockets {
    fn find(&self, local: SocketAddr) -> Option<(usize, &Added)> {
        self.by_index.iter().find(|(_, a)| a.local == local).map(|(i, a)| (*i, a))
    }

    fn stop_all(&mut self) {
        for a in self.by_index.values() {
            a.stop.store(true, Ordering::Relaxed);
        }
        self.by_index.clear();
    }
}

impl Drop for AddedSockets {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What a receiver thread hands to the loop.
enum Input {
    Datagram {
        socket: usize,
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// ICMP port unreachable for a datagram `socket` sent to `dst`.
    Unreachable {
        socket: usize,
        dst: SocketAddr,
    },
    /// [`SocketControl::wake`].
    Wake,
}

impl Driver {
    /// A driver over `sockets`, in the order given; connected sockets stay connected. Asks each for ICMP
    /// error reports where the system has them (best effort: without them an unreachable destination is
    /// found by timeout only, or for a connected socket by its refused sends and receives).
    pub fn new(sockets: Vec<UdpSocket>) -> io::Result<Driver> {
        let locals = sockets.iter().map(UdpSocket::local_addr).collect::<io::Result<Vec<_>>>()?;
        let peers = sockets.iter().map(|s| s.peer_addr().ok()).collect();
        for (s, l) in sockets.iter().zip(&locals) {
            if let Err(e) = icmp::enable(s) {
                log::debug!(target: "holepunch::io", "{l}: ICMP error reports not available ({e})");
            }
        }
        Ok(Driver {
            sockets,
            locals,
            peers,
            deadline: None,
            stop: None,
            wake: DEFAULT_WAKE,
            changes: None,
            input: Arc::default(),
            intercept: None,
        })
    }

    /// Offers every received datagram to `intercept` first (see [`Intercept`]), on every socket, added
    /// ones included.
    pub fn intercept(mut self, intercept: Arc<dyn Intercept>) -> Driver {
        self.intercept = Some(intercept);
        self
    }

    /// A handle that adds and removes sockets while the driver runs (see [`SocketControl`]).
    pub fn socket_control(&mut self) -> SocketControl {
        let (tx, _) = self.changes.get_or_insert_with(mpsc::channel);
        SocketControl { tx: tx.clone(), input: Arc::clone(&self.input) }
    }

    /// The local address of each socket, in order: what the engine names as `Transmit::local`.
    pub fn locals(&self) -> &[SocketAddr] {
        &self.locals
    }

    pub fn sockets(&self) -> &[UdpSocket] {
        &self.sockets
    }

    /// The sockets back, for another use after the driver.
    pub fn into_sockets(self) -> Vec<UdpSocket> {
        self.sockets
    }

    /// `run` returns [`Exit::Deadline`] once `at` has passed.
    pub fn deadline(mut self, at: Instant) -> Driver {
        self.deadline = Some(at);
        self
    }

    /// [`Driver::deadline`] for a driver kept between runs (each run with a deadline of its own); None for
    /// none.
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.deadline = at;
    }

    /// `run` returns [`Exit::Stopped`] soon after `flag` is set (within the wake interval).
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Driver {
        self.stop = Some(flag);
        self
    }

    /// Longest one wait lasts before the stop flag and the deadline are looked at again.
    pub fn wake_every(mut self, wake: Duration) -> Driver {
        self.wake = wake.max(Duration::from_millis(1));
        self
    }

    /// Runs `engine` until `on` breaks, the deadline passes or the stop flag is set. `on` hears every event
    /// and every failed send. Errors are the driver's own (a socket that cannot be set up, a receiver thread
    /// that died), never the network's.
    pub fn run<E: Engine, T>(
        &self,
        engine: &mut E,
        mut on: impl FnMut(Notice<E::Event>) -> ControlFlow<T>,
    ) -> io::Result<Exit<T>> {
        for s in &self.sockets {
            s.set_read_timeout(Some(RECV_WAKE))?;
        }
        let stop_threads = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<Input>();
        thread::scope(|scope| {
            // Buffers go back to their thread after use, so a steady flow allocates nothing per datagram.
            let mut pools = Vec::with_capacity(self.sockets.len());
            for (i, sock) in self.sockets.iter().enumerate() {
                let (pool_tx, pool_rx) = mpsc::channel::<Vec<u8>>();
                pools.push(pool_tx);
                let tx = tx.clone();
                let stop = &stop_threads;
                let peer = self.peers[i];
                let intercept = self.intercept.clone();
                scope.spawn(move || receive(i, sock, peer, &tx, &pool_rx, stop, intercept.as_deref()));
            }
            // Added sockets' threads need a sender; without a socket control the last sender goes with the
            // threads, so a dead receiver thread is noticed.
            let mut added = AddedSockets {
                by_index: HashMap::new(),
                next: self.sockets.len(),
                tx: None,
                intercept: self.intercept.clone(),
            };
            if self.changes.is_some() {
                *self.input.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
                added.tx = Some(tx);
            } else {
                drop(tx);
            }
            let result = self.drive(engine, &mut on, &rx, &pools, &mut added);
            *self.input.lock().unwrap_or_else(|p| p.into_inner()) = None;
            stop_threads.store(true, Ordering::Relaxed);
            added.stop_all();
            result
        })
    }

    fn drive<E: Engine, T>(
        &self,
        engine: &mut E,
        on: &mut impl FnMut(Notice<E::Event>) -> ControlFlow<T>,
        rx: &mpsc::Receiver<Input>,
        pools: &[mpsc::Sender<Vec<u8>>],
        added: &mut AddedSockets,
    ) -> io::Result<Exit<T>> {
        let mut buf = [0u8; SEND_BUF];
        let mut unreachable: Vec<(usize, SocketAddr)> = Vec::new();
        loop {
            self.apply_changes(added);
            for (i, dst) in unreachable.drain(..) {
                if let Some(local) = self.local_of(added, i) {
                    engine.handle_unreachable(Instant::now(), local, dst);
                }
            }
            while let Some(t) = engine.poll_transmit(&mut buf) {
                let found = match self.locals.iter().position(|l| *l == t.local) {
                    Some(i) => Some((i, &self.sockets[i], self.peers[i])),
                    None => match added.find(t.local) {
                        Some((i, a)) => Some((i, &*a.socket, None)),
                        // With sockets coming and going, a transmit naming another port (a removed socket)
                        // must not leave from the one socket the driver was made with.
                        None => socket_for(&self.locals, t.local)
                            .filter(|&i| self.changes.is_none() || self.locals[i].port() == t.local.port())
                            .map(|i| (i, &self.sockets[i], self.peers[i])),
                    },
                };
                let Some((i, sock, peer)) = found else {
                    if let ControlFlow::Break(v) = on(Notice::SendFailed { transmit: t, error: no_socket(t.local) }) {
                        return Ok(Exit::Done(v));
                    }
                    continue;
                };
                let data = &buf[..t.len.min(buf.len())];
                let send = || match t.ttl {
                    Some(ttl) => super::send_with_ttl(sock, data, t.dst, ttl),
                    None if peer == Some(t.dst) => sock.send(data),
                    None => sock.send_to(data, t.dst),
                };
                let mut sent = send();
                if sent.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused) {
                    // With IP_RECVERR a queued ICMP error (for an earlier datagram, maybe to another address)
                    // fails the next send and that datagram is not sent. Taking the errors out of the queue
                    // clears the pending error; then send again. Without the queue, a connected socket's
                    // error is about its peer.
                    take_unreachable(i, sock, &mut unreachable);
                    if unreachable.is_empty() {
                        unreachable.extend(peer.map(|p| (i, p)));
                    }
                    sent = send();
                }
                if let Err(error) = sent {
                    log::debug!(target: "holepunch::io", "sending to {} from {} failed: {error}", t.dst, t.local);
                    if let ControlFlow::Break(v) = on(Notice::SendFailed { transmit: t, error }) {
                        return Ok(Exit::Done(v));
                    }
                }
            }
            if !unreachable.is_empty() {
                continue; // feed them now: they may end transactions and start others
            }
            while let Some(ev) = engine.poll_event() {
                if let ControlFlow::Break(v) = on(Notice::Event(ev)) {
                    return Ok(Exit::Done(v));
                }
            }
            if self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ok(Exit::Stopped);
            }
            if self.apply_changes(added) {
                continue; // the callback added sockets: the engine may have datagrams for them
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Ok(Exit::Deadline);
            }
            let mut wait = engine.poll_timeout().map_or(self.wake, |t| t.saturating_duration_since(now));
            wait = wait.min(self.wake);
            if let Some(d) = self.deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            match rx.recv_timeout(wait) {
                Ok(Input::Datagram { socket, from, data }) => {
                    // None: a removed socket's last datagram.
                    if let Some(local) = self.local_of(added, socket) {
                        let input = Received::udp(local, from);
                        if !engine.handle_input(Instant::now(), input, &data) {
                            log::debug!(target: "holepunch::io", "dropped {}-byte datagram from {from}", data.len());
                        }
                    }
                    let pool = pools.get(socket).or_else(|| added.by_index.get(&socket).map(|a| &a.pool));
                    if let Some(pool) = pool {
                        let _ = pool.send(data);
                    }
                }
                Ok(Input::Unreachable { socket, dst }) => {
                    if let Some(local) = self.local_of(added, socket) {
                        engine.handle_unreachable(Instant::now(), local, dst);
                    }
                }
                Ok(Input::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("the driver's receiver threads ended"));
                }
            }
            engine.handle_timeout(Instant::now());
        }
    }
}

impl Driver {
    /// The local address of socket index `i`, the driver's own or an added one still held.
    fn local_of(&self, added: &AddedSockets, i: usize) -> Option<SocketAddr> {
        self.locals.get(i).copied().or_else(|| added.by_index.get(&i).map(|a| a.local))
    }

    /// Takes the pending [`SocketControl`] changes; true when any socket was added.
    fn apply_changes(&self, added: &mut AddedSockets) -> bool {
        let Some((_, changes)) = &self.changes else { return false };
        let mut any = false;
        while let Ok(change) = changes.try_recv() {
            match change {
                Change::Add(socket) => any |= add_socket(added, socket),
                Change::Remove(local) => {
                    if let Some((i, _)) = added.find(local) {
                        if let Some(a) = added.by_index.remove(&i) {
                            a.stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        any
    }
}

/// Starts a receiver thread for `socket`; false (and the socket closed) when it cannot be used.
fn add_socket(added: &mut AddedSockets, socket: UdpSocket) -> bool {
    let Some(tx) = added.tx.clone() else { return false };
    let local = match socket.local_addr() {
        Ok(l) => l,
        Err(e) => {
            log::warn!(target: "holepunch::io", "added socket without a local address ({e}): closed");
            return false;
        }
    };
    if added.by_index.len() >= MAX_ADDED_SOCKETS || added.find(local).is_some() {
        log::warn!(target: "holepunch::io", "added socket {local} refused (a duplicate, or {MAX_ADDED_SOCKETS} held): closed");
        return false;
    }
    if let Err(e) = socket.set_read_timeout(Some(RECV_WAKE)) {
        log::warn!(target: "holepunch::io", "added socket {local}: {e}: closed");
        return false;
    }
    if let Err(e) = icmp::enable(&socket) {
        log::debug!(target: "holepunch::io", "{local}: ICMP error reports not available ({e})");
    }
    let i = added.next;
    added.next += 1;
    let socket = Arc::new(socket);
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, pool_rx) = mpsc::channel::<Vec<u8>>();
    let (sock, flag) = (Arc::clone(&socket), Arc::clone(&stop));
    let intercept = added.intercept.clone();
    let spawned = thread::Builder::new()
        .name(format!("udp-recv-{local}"))
        .spawn(move || receive(i, &sock, None, &tx, &pool_rx, &flag, intercept.as_deref()));
    if let Err(e) = spawned {
        log::warn!(target: "holepunch::io", "added socket {local}: no receiver thread ({e}): closed");
        return false;
    }
    added.by_index.insert(i, Added { local, socket, stop, pool });
    true
}

/// Drains `sock`'s error queue into `out` (port unreachable only; the rest is logged).
fn take_unreachable(i: usize, sock: &UdpSocket, out: &mut Vec<(usize, SocketAddr)>) {
    for err in icmp::drain(sock) {
        match err {
            IcmpError::PortUnreachable { dest, offender } => {
                log::debug!(target: "holepunch::io", "socket {i}: ICMP port unreachable for {dest} (from {offender:?})");
                out.push((i, dest));
            }
            other => log::debug!(target: "holepunch::io", "socket {i}: ignoring {other:?}"),
        }
    }
}

/// A receiver thread: datagrams and ICMP reports of socket `i` (connected to `peer`, if any) into `tx` until
/// `stop`.
fn receive(
    i: usize,
    sock: &UdpSocket,
    peer: Option<SocketAddr>,
    tx: &mpsc::Sender<Input>,
    pool: &mpsc::Receiver<Vec<u8>>,
    stop: &AtomicBool,
    intercept: Option<&dyn Intercept>,
) {
    #[cfg(target_os = "linux")]
    if let Some(x) = intercept {
        return receive_batched(i, sock, peer, tx, pool, stop, x);
    }
    #[cfg(windows)]
    if let Some(x) = intercept {
        if start_receive_coalescing(sock) {
            return receive_coalesced(i, sock, peer, tx, pool, stop, x);
        }
    }
    let mut unreachable = Vec::new();
    let local = sock.local_addr().ok();
    let mut data = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if data.capacity() == 0 {
            data = pool.try_recv().unwrap_or_else(|_| Vec::with_capacity(RECV_BUF));
        }
        data.resize(RECV_BUF, 0);
        match sock.recv_from(&mut data) {
            Ok((n, from)) => {
                if let (Some(x), Some(local)) = (intercept, local) {
                    if x.intercept(sock, local, from, &data[..n]) {
                        x.flush();
                        continue; // the buffer stays with this thread for the next datagram
                    }
                }
                data.truncate(n);
                let data = std::mem::take(&mut data);
                if tx.send(Input::Datagram { socket: i, from, data }).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                if !receive_error(i, sock, peer, &e, tx, &mut unreachable) {
                    return;
                }
            }
        }
    }
}

/// A receive error of socket `i`: the ICMP reports it stands for go to the loop; false when the loop is gone.
///
/// With IP_RECVERR a queued ICMP error surfaces as a receive error; the details are in the error queue.
/// Without the queue (other systems, or IP_RECVERR refused) a connected socket reports the error as refused
/// (Unix) or reset (Windows), and it can only be about the peer; an unconnected socket's reset on Windows
/// does not say for which destination: nothing to tell the engine.
fn receive_error(
    i: usize,
    sock: &UdpSocket,
    peer: Option<SocketAddr>,
    e: &io::Error,
    tx: &mpsc::Sender<Input>,
    unreachable: &mut Vec<(usize, SocketAddr)>,
) -> bool {
    log::debug!(target: "holepunch::io", "socket {i}: receive error: {e}");
    take_unreachable(i, sock, unreachable);
    if unreachable.is_empty() && matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset) {
        unreachable.extend(peer.map(|p| (i, p)));
    }
    if unreachable.is_empty() && e.kind() != ErrorKind::ConnectionReset {
        // Not an ICMP report: do not spin on a persistent error.
        thread::sleep(RECV_WAKE / 5);
    }
    unreachable.drain(..).all(|(socket, dst)| tx.send(Input::Unreachable { socket, dst }).is_ok())
}

/// Datagrams per recvmmsg(2) in [`receive_batched`].
#[cfg(target_os = "linux")]
const RECV_BATCH: usize = 64;

/// [`receive`] with an intercept, on Linux: up to [`RECV_BATCH`] datagrams per system call, each offered to
/// the intercept, which is flushed after each batch (a data path writes its collected packets at once).
#[cfg(target_os = "linux")]
fn receive_batched(
    i: usize,
    sock: &UdpSocket,
    peer: Option<SocketAddr>,
    tx: &mpsc::Sender<Input>,
    pool: &mpsc::Receiver<Vec<u8>>,
    stop: &AtomicBool,
    intercept: &dyn Intercept,
) {
    use super::batch::{RecvBatch, Wait};
    let Ok(local) = sock.local_addr() else { return };
    let mut batch = RecvBatch::new(RECV_BATCH, RECV_BUF);
    let mut unreachable = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match batch.recv(sock, RECV_BATCH, Wait::ForFirst) {
            Ok(n) => {
                for k in 0..n {
                    let d = batch.get(k);
                    let Some(from) = d.source else { continue };
                    if d.truncated || intercept.intercept(sock, local, from, d.data) {
                        continue;
                    }
                    let mut data = pool.try_recv().unwrap_or_else(|_| Vec::with_capacity(RECV_BUF));
                    data.clear();
                    data.extend_from_slice(d.data);
                    if tx.send(Input::Datagram { socket: i, from, data }).is_err() {
                        return;
                    }
                }
                intercept.flush();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                if !receive_error(i, sock, peer, &e, tx, &mut unreachable) {
                    return;
                }
            }
        }
    }
}

/// Most bytes one coalesced receive returns (UDP_RECV_MAX_COALESCED_SIZE is set to 64 KiB less one).
#[cfg(windows)]
const COALESCED_BUF: usize = 1 << 16;

/// Turns on receive coalescing (URO) for the socket of a data path, unless it is off for the process; false
/// when the system refuses it (before Windows 11, Wine): the plain receive loop then.
#[cfg(windows)]
fn start_receive_coalescing(sock: &UdpSocket) -> bool {
    use super::coalesce::{receive_coalescing_disabled, windows};
    if receive_coalescing_disabled() {
        return false;
    }
    match windows::enable_receive_coalescing(sock) {
        Ok(()) => true,
        Err(e) => {
            log::debug!(target: "holepunch::io", "UDP receive coalescing not available ({e}): one datagram per receive");
            false
        }
    }
}

/// [`receive`] with an intercept, on Windows with receive coalescing: one receive may carry several datagrams
/// of one source, split by the segment size the system reports; the intercept is flushed after each receive.
/// A receive coalesced without its segment size (a driver bug on some machines) turns coalescing off for the
/// process and is dropped, as the plain loop would truncate it.
#[cfg(windows)]
fn receive_coalesced(
    i: usize,
    sock: &UdpSocket,
    peer: Option<SocketAddr>,
    tx: &mpsc::Sender<Input>,
    pool: &mpsc::Receiver<Vec<u8>>,
    stop: &AtomicBool,
    intercept: &dyn Intercept,
) {
    use super::coalesce::{self, windows};
    let Ok(local) = sock.local_addr() else { return };
    let mut buf = vec![0u8; COALESCED_BUF];
    let mut unreachable = Vec::new();
    let mut enabled = true;
    while !stop.load(Ordering::Relaxed) {
        if enabled && coalesce::receive_coalescing_disabled() {
            windows::disable_receive_coalescing(sock);
            enabled = false;
        }
        match windows::recv(sock, &mut buf, RECV_WAKE) {
            Ok((n, stride, from)) => {
                if coalesce::coalescing_broken(n, stride, RECV_BUF) {
                    if enabled {
                        log::warn!(target: "holepunch::io", "socket {i}: the system coalesced {n} bytes without their datagram size: receive coalescing off");
                        coalesce::disable_receive_coalescing();
                    }
                    continue;
                }
                if stride < n {
                    coalesce::count_coalesced_receive();
                }
                for data in coalesce::segments(&buf[..n], stride) {
                    if intercept.intercept(sock, local, from, data) {
                        continue;
                    }
                    let mut owned = pool.try_recv().unwrap_or_else(|_| Vec::with_capacity(RECV_BUF));
                    owned.clear();
                    owned.extend_from_slice(data);
                    if tx.send(Input::Datagram { socket: i, from, data: owned }).is_err() {
                        return;
                    }
                }
                intercept.flush();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                if !receive_error(i, sock, peer, &e, tx, &mut unreachable) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::testing::{closed_port, pong_server, Ping, PingEvent};
    use super::*;

    fn bind() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    /// Takes the pong with sequence number 1 away from the engine and answers its sender itself.
    struct TakeSecond(std::sync::atomic::AtomicUsize);

    impl Intercept for TakeSecond {
        fn intercept(&self, socket: &UdpSocket, _local: SocketAddr, from: SocketAddr, data: &[u8]) -> bool {
            if data == [b'P', 1] {
                self.0.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(b"seen", from);
                return true;
            }
            false
        }
    }

    #[test]
    fn an_intercept_takes_datagrams_before_the_engine() {
        let server = bind();
        let peer = server.local_addr().unwrap();
        let answered = pong_server(server, 3);
        let taker = Arc::new(TakeSecond(Default::default()));
        let driver = Driver::new(vec![bind()])
            .unwrap()
            .intercept(Arc::clone(&taker) as Arc<dyn Intercept>)
            .deadline(Instant::now() + Duration::from_secs(5));
        let mut ping = Ping::new(driver.locals()[0], peer, 3, Instant::now());
        let mut seqs = Vec::new();
        driver
            .run(&mut ping, |n| match n {
                Notice::Event(PingEvent::Done) => ControlFlow::Break(()),
                Notice::Event(PingEvent::Pong { seq, .. }) => {
                    seqs.push(seq);
                    ControlFlow::Continue(())
                }
                _ => ControlFlow::Continue(()),
            })
            .unwrap();
        assert_eq!(seqs, [0, 2], "the engine never saw the intercepted pong");
        assert_eq!(taker.0.load(Ordering::Relaxed), 1);
        assert_eq!(answered.join().unwrap(), 3);
    }

    #[test]
    fn pings_until_the_engine_is_done() {
        let server = bind();
        let peer = server.local_addr().unwrap();
        let answered = pong_server(server, 3);
        let driver = Driver::new(vec![bind()]).unwrap().deadline(Instant::now() + Duration::from_secs(5));
        let local = driver.locals()[0];
        let mut ping = Ping::new(local, peer, 3, Instant::now());
        let mut pongs = Vec::new();
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(PingEvent::Done) => ControlFlow::Break("done"),
                Notice::Event(e) => {
                    pongs.push(e);
                    ControlFlow::Continue(())
                }
                Notice::SendFailed { error, .. } => panic!("send failed: {error}"),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done("done"));
        let want: Vec<_> = (0..3).map(|seq| PingEvent::Pong { local, from: peer, seq }).collect();
        assert_eq!(pongs, want);
        assert_eq!(answered.join().unwrap(), 3);
    }

    #[test]
    fn transmits_leave_from_the_socket_they_name() {
        let server = bind();
        let peer = server.local_addr().unwrap();
        let answered = pong_server(server, 2);
        let driver = Driver::new(vec![bind(), bind()]).unwrap().deadline(Instant::now() + Duration::from_secs(5));
        let second = driver.locals()[1];
        let mut ping = Ping::new(second, peer, 2, Instant::now());
        let mut seen = Vec::new();
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(PingEvent::Done) => ControlFlow::Break(()),
                Notice::Event(PingEvent::Pong { local, .. }) => {
                    seen.push(local);
                    ControlFlow::Continue(())
                }
                other => panic!("{other:?}"),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done(()));
        assert_eq!(seen, vec![second, second], "answers arrive on the socket that sent");
        assert_eq!(answered.join().unwrap(), 2);
    }

    #[test]
    fn foreign_datagrams_are_offered_and_dropped() {
        let driver = Driver::new(vec![bind()]).unwrap().deadline(Instant::now() + Duration::from_millis(300));
        let local = driver.locals()[0];
        let stranger = bind();
        let mut ping = Ping::new(local, closed_port(), 0, Instant::now());
        ping.next = None; // sends nothing
        stranger.send_to(b"hello", local).unwrap();
        let exit = driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())).unwrap();
        assert_eq!(exit, Exit::Deadline);
        assert_eq!(ping.foreign, 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn icmp_port_unreachable_reaches_the_engine() {
        let driver = Driver::new(vec![bind()]).unwrap().deadline(Instant::now() + Duration::from_secs(5));
        let local = driver.locals()[0];
        let dst = closed_port();
        let mut ping = Ping::new(local, dst, 1, Instant::now());
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(e) => ControlFlow::Break(e),
                Notice::SendFailed { .. } => ControlFlow::Continue(()),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done(PingEvent::Unreachable { local, dst }));
    }

    /// After an ICMP report the driver goes back to sleeping: it neither spins on the error nor on the
    /// socket (a handful of wake-ups in 300 ms, one per wake interval and input).
    #[cfg(target_os = "linux")]
    #[test]
    fn no_spinning_after_an_icmp_report() {
        let driver = Driver::new(vec![bind()]).unwrap().deadline(Instant::now() + Duration::from_millis(300));
        let mut ping = Ping::new(driver.locals()[0], closed_port(), 1, Instant::now());
        let exit = driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())).unwrap();
        assert_eq!(exit, Exit::Deadline);
        assert!(ping.wakeups < 20, "{} wake-ups", ping.wakeups);
    }

    /// An engine with no timers that ends at its first turn after `at`.
    struct WakeUntil {
        at: Instant,
        done: bool,
    }

    impl Engine for WakeUntil {
        type Event = Instant;
        fn handle_input(&mut self, _: Instant, _: Received, _: &[u8]) -> bool {
            false
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.done |= now >= self.at;
        }
        fn poll_transmit(&mut self, _: &mut [u8]) -> Option<crate::net::Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_event(&mut self) -> Option<Instant> {
            self.done.then(Instant::now)
        }
    }

    /// A wake from another thread turns the loop at once, not at the (here 10 s) wake interval.
    #[test]
    fn a_wake_turns_the_loop_at_once() {
        let mut driver = Driver::new(vec![bind()]).unwrap().wake_every(Duration::from_secs(10));
        let control = driver.socket_control();
        let driver = driver.deadline(Instant::now() + Duration::from_secs(5));
        let at = Instant::now() + Duration::from_millis(100);
        let mut engine = WakeUntil { at, done: false };
        let waker = thread::spawn(move || {
            thread::sleep(at.saturating_duration_since(Instant::now()));
            control.wake();
        });
        let exit = driver.run(&mut engine, |n| match n {
            Notice::Event(t) => ControlFlow::Break(t),
            Notice::SendFailed { .. } => ControlFlow::Continue(()),
        });
        waker.join().unwrap();
        let Exit::Done(t) = exit.unwrap() else { panic!("no turn after the wake") };
        assert!(t.duration_since(at) < Duration::from_secs(1), "turned {:?} after the wake", t.duration_since(at));
    }

    /// A socket connected to the pong server: its datagrams leave with `send`, its answers arrive.
    #[test]
    fn connected_socket_pings_its_peer() {
        let server = bind();
        let peer = server.local_addr().unwrap();
        let answered = pong_server(server, 2);
        let sock = bind();
        sock.connect(peer).unwrap();
        let mut driver = Driver::new(vec![sock]).unwrap();
        driver.set_deadline(Some(Instant::now() + Duration::from_secs(5)));
        let local = driver.locals()[0];
        let mut ping = Ping::new(local, peer, 2, Instant::now());
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(PingEvent::Done) => ControlFlow::Break(()),
                Notice::Event(_) => ControlFlow::Continue(()),
                Notice::SendFailed { error, .. } => panic!("send failed: {error}"),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done(()));
        assert_eq!(answered.join().unwrap(), 2);
    }

    /// Without the error queue (as on systems without IP_RECVERR), a connected socket still learns that its
    /// peer refused: the refused receive or send is reported for the peer, at once.
    #[cfg(target_os = "linux")]
    #[test]
    fn connected_socket_reports_its_peer_unreachable_without_the_error_queue() {
        use std::os::fd::AsRawFd;
        let dst = closed_port();
        let sock = bind();
        sock.connect(dst).unwrap();
        let mut driver = Driver::new(vec![sock]).unwrap();
        let off: libc::c_int = 0;
        // SAFETY: a valid socket descriptor and a c_int option value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                driver.sockets()[0].as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVERR,
                (&off as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let t0 = Instant::now();
        driver.set_deadline(Some(t0 + Duration::from_secs(5)));
        let local = driver.locals()[0];
        let mut ping = Ping::new(local, dst, 3, Instant::now());
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(e) => ControlFlow::Break(e),
                Notice::SendFailed { .. } => ControlFlow::Continue(()),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done(PingEvent::Unreachable { local, dst }));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn set_deadline_bounds_each_run() {
        let mut driver = Driver::new(vec![bind()]).unwrap();
        let local = driver.locals()[0];
        for _ in 0..2 {
            let mut ping = Ping::new(local, closed_port(), 0, Instant::now());
            ping.next = None;
            driver.set_deadline(Some(Instant::now() + Duration::from_millis(50)));
            assert_eq!(driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())).unwrap(), Exit::Deadline);
        }
        driver.set_deadline(None);
        assert!(driver.deadline.is_none());
    }

    #[test]
    fn stop_flag_ends_the_loop() {
        let flag = Arc::new(AtomicBool::new(false));
        let driver = Driver::new(vec![bind()])
            .unwrap()
            .stop_flag(flag.clone())
            .wake_every(Duration::from_millis(20))
            .deadline(Instant::now() + Duration::from_secs(5));
        let local = driver.locals()[0];
        let mut ping = Ping::new(local, closed_port(), 0, Instant::now());
        ping.next = None;
        let setter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::Relaxed);
        });
        let t0 = Instant::now();
        let exit = driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())).unwrap();
        setter.join().unwrap();
        assert_eq!(exit, Exit::Stopped);
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn transmit_for_an_unknown_socket_is_reported() {
        let driver = Driver::new(vec![bind(), bind()]).unwrap().deadline(Instant::now() + Duration::from_secs(5));
        let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut ping = Ping::new(elsewhere, closed_port(), 1, Instant::now());
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::SendFailed { transmit, error } => ControlFlow::Break((transmit.local, error.kind())),
                Notice::Event(e) => panic!("{e:?}"),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done((elsewhere, ErrorKind::AddrNotAvailable)));
    }

    /// A socket added from the loop's callback carries the engine's transmits and its answers; removing it
    /// closes it (its port can be bound again once the run is over).
    #[test]
    fn sockets_added_and_removed_while_running() {
        let server = bind();
        let peer = server.local_addr().unwrap();
        let answered = pong_server(server, 2);
        let mut driver = Driver::new(vec![bind()]).unwrap().deadline(Instant::now() + Duration::from_secs(5));
        let control = driver.socket_control();
        let extra = bind();
        let extra_local = extra.local_addr().unwrap();
        assert_eq!(control.add(extra).unwrap(), extra_local);
        let mut ping = Ping::new(extra_local, peer, 2, Instant::now());
        let mut seen = Vec::new();
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(PingEvent::Done) => ControlFlow::Break(()),
                Notice::Event(PingEvent::Pong { local, .. }) => {
                    seen.push(local);
                    ControlFlow::Continue(())
                }
                other => panic!("{other:?}"),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done(()));
        assert_eq!(seen, vec![extra_local, extra_local]);
        assert_eq!(answered.join().unwrap(), 2);

        // Removed while the run goes on (from another thread): the socket closes before the run ends.
        let extra = bind();
        let extra_local = control.add(extra).unwrap();
        let mut ping = Ping::new(driver.locals()[0], closed_port(), 0, Instant::now());
        ping.next = None;
        driver.set_deadline(Some(Instant::now() + Duration::from_millis(600)));
        let remover_control = control.clone();
        let remover = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            remover_control.remove(extra_local).unwrap();
            thread::sleep(RECV_WAKE * 4);
            UdpSocket::bind(extra_local).map(|_| ())
        });
        assert_eq!(driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())).unwrap(), Exit::Deadline);
        remover.join().unwrap().expect("the removed socket is closed while the run goes on");

        // A transmit naming the removed socket fails; it never leaves from the driver's own socket.
        let mut ping = Ping::new(extra_local, closed_port(), 1, Instant::now());
        driver.set_deadline(Some(Instant::now() + Duration::from_secs(5)));
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::SendFailed { transmit, error } => ControlFlow::Break((transmit.local, error.kind())),
                Notice::Event(e) => panic!("{e:?}"),
            })
            .unwrap();
        assert_eq!(exit, Exit::Done((extra_local, ErrorKind::AddrNotAvailable)));
        drop(control);
    }
}

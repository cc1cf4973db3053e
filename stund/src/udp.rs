//! The UDP hot path: one blocking thread per (worker, local socket), recvmmsg → responder → sendmmsg.
//!
//! Per batch (`holepunch::io::batch`): one `recvmmsg` (blocks until at least one datagram, then takes what
//! is queued, up to [`BATCH`]), one clock read, the responder for each datagram into a preallocated output
//! slot, one `sendmmsg` for every answer leaving from this socket, and a relaxed publish of the counters. Nothing is allocated and no lock
//! is taken. Answers that must leave from another local socket (RFC 5780 CHANGE-REQUEST) are sent one by
//! one with `sendto` on that socket; they are rare.
//!
//! TURN datagrams (`relay::is_turn_message`: ChannelData or a TURN method), when the relay is on, are copied
//! into the relay thread's bounded queue (`crate::turn`) and the thread is woken once per batch; Binding never
//! waits for them.
//!
//! Rendezvous messages (docs/signal.md) are told apart by their 20-byte header (`signal::is_signal_message`)
//! before the responder sees them, and go to the one shared rendezvous server (`crate::rendezvous`), which
//! takes a lock and may allocate; Binding never does either.

use crate::rendezvous::{self, Rendezvous};
use crate::turn::TurnShared;
use holepunch::io::batch::{RecvBatch, SendBatch, Wait};
use holepunch::net::{Received, Transmit};
use holepunch::relay::is_turn_message;
use holepunch::server::{LocalSocket, Responder, SharedCounters, MAX_REQUEST_LEN};
use holepunch::signal::is_signal_message;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 32;
/// Slot size: requests above MAX_REQUEST_LEN arrive truncated (MSG_TRUNC) and are dropped.
const SLOT: usize = MAX_REQUEST_LEN;
/// Datagram buffers of one worker (receive and send batches).
pub const WORKER_BUFFER_BYTES: usize = 2 * BATCH * SLOT;

/// One worker thread's state.
pub struct Worker {
    pub responder: Responder,
    /// The socket this worker receives on.
    pub local: LocalSocket,
    /// Its address, as the responder knows it (`ServerConfig::bind_addr`).
    pub local_addr: SocketAddr,
    /// This worker group's socket for each local address (by `LocalSocket::index`), for answers that leave
    /// from another one.
    pub sockets: Arc<[Option<UdpSocket>; 4]>,
    pub shared: Arc<SharedCounters>,
    pub stop: Arc<AtomicBool>,
    /// The rendezvous server, when `--secret-file` turned it on.
    pub rendezvous: Option<Arc<Rendezvous>>,
    /// Where rendezvous messages dropped while it is off are counted.
    pub rendezvous_counters: Arc<rendezvous::Counters>,
    /// The TURN relay's queue, when it is on (`crate::turn`).
    pub turn: Option<Arc<TurnShared>>,
}

/// A worker's receive and send batches, and which received datagrams were left for an inline relay.
pub struct WorkerIo {
    rx: RecvBatch,
    tx: SendBatch,
    turn: [u8; BATCH],
    turn_len: usize,
}

impl Default for WorkerIo {
    fn default() -> Self {
        WorkerIo { rx: RecvBatch::new(BATCH, SLOT), tx: SendBatch::new(BATCH, SLOT), turn: [0; BATCH], turn_len: 0 }
    }
}

impl WorkerIo {
    /// The TURN datagrams of the last batch (source, bytes), left by [`Worker::serve_batch`] with `inline_turn`.
    pub fn turn_datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.turn[..self.turn_len].iter().filter_map(|&i| {
            let d = self.rx.get(usize::from(i));
            d.source.map(|s| (s, d.data))
        })
    }
}

impl Worker {
    /// Serves until the stop flag is set (noticed within the socket's receive timeout).
    pub fn run(mut self) {
        let mut io = WorkerIo::default();
        let mut last_error_log: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.serve_batch(&mut io, Wait::ForFirst, false) {
                // Log at most once a second; back off briefly so a persistent error cannot spin a core.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    log::warn!(target: "stund::udp", "receive on {:?} failed: {e}", self.local);
                    last_error_log = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.shared.publish(self.responder.counters());
    }

    /// The socket this worker receives on.
    pub fn socket(&self) -> Option<&UdpSocket> {
        self.sockets[self.local.index()].as_ref()
    }

    /// One batch: a `recvmmsg` (waiting for the first datagram or not), every Binding answered and sent in one
    /// `sendmmsg`, rendezvous messages to the rendezvous server. TURN datagrams go to the relay thread's queue,
    /// or with `inline_turn` stay in `io` for the caller, which is the relay thread ([`WorkerIo::turn_datagrams`]).
    /// Returns how many datagrams arrived; a timeout or a signal is 0, other receive errors are returned.
    pub fn serve_batch(&mut self, io: &mut WorkerIo, wait: Wait, inline_turn: bool) -> io::Result<usize> {
        io.turn_len = 0;
        let Some(sock) = self.sockets[self.local.index()].as_ref() else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no socket for {:?}", self.local)));
        };
        let n = match io.rx.recv(sock, BATCH, wait) {
            Ok(n) => n,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => return Ok(0),
                _ => return Err(e),
            },
        };
        let now = Instant::now();
        let mut turn_queued = false;
        for i in 0..n {
            let d = io.rx.get(i);
            let (Some(from), false) = (d.source, d.truncated) else {
                self.responder.counters_mut().dropped_malformed += 1;
                continue;
            };
            if is_signal_message(d.data) {
                match &self.rendezvous {
                    Some(r) => r.handle(now, self.local_addr, from, d.data),
                    None => {
                        self.rendezvous_counters.ignored.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            if let Some(t) = self.turn.as_ref().filter(|_| is_turn_message(d.data)) {
                if inline_turn {
                    io.turn[io.turn_len] = i as u8;
                    io.turn_len += 1;
                } else {
                    turn_queued |= t.submit(self.local_addr, from, d.data);
                }
                continue;
            }
            let rxd = Received::udp(self.local_addr, from);
            // Never full: at most BATCH answers to BATCH requests, and the batch is sent below.
            let Some(out) = io.tx.next_slot() else { break };
            match self.responder.handle(now, rxd, d.data, out) {
                Ok(Transmit { len, local, dst: to, .. }) if local == self.local_addr => {
                    io.tx.push(len, Some(to));
                }
                Ok(Transmit { len, local, dst: to, .. }) => {
                    let source = self.responder.config().local_socket(local);
                    let sent = match (source.and_then(|s| self.sockets[s.index()].as_ref()), io.tx.next_slot()) {
                        (Some(other), Some(out)) => other.send_to(&out[..len], to).is_ok(),
                        _ => false,
                    };
                    if !sent {
                        self.responder.counters_mut().send_errors += 1;
                    }
                }
                Err(_) => {}
            }
        }
        if let Some(t) = self.turn.as_ref().filter(|_| turn_queued) {
            t.wake();
        }
        let sent = io.tx.send_all(sock);
        self.responder.counters_mut().send_errors += sent.failed as u64;
        self.shared.publish(self.responder.counters());
        Ok(n)
    }
}

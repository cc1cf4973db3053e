//! STUN over TCP (RFC 8489 §6.2.2): a stream of STUN messages, each framed by its own header length.
//! Not the hot path: one tokio task per connection, one shared responder behind a mutex.
//!
//! Connections are capped in total and per source (`holepunch::server::ConnectionLimit`): one source that
//! reconnects whenever a slot frees cannot hold every slot. Over either cap a connection is closed at once.

use holepunch::net::{Received, Transport};
use holepunch::server::{ConnectionLimit, Dropped, Refused, Responder, SharedCounters, MAX_REQUEST_LEN};
use holepunch::stun::{frame_len, HEADER_LEN};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Buffers of one connection (request and answer).
pub const CONNECTION_BUFFER_BYTES: usize = 2 * MAX_REQUEST_LEN;

/// State shared by every TCP connection.
pub struct TcpShared {
    pub responder: Mutex<Responder>,
    pub counters: Arc<SharedCounters>,
    pub limit: Mutex<ConnectionLimit>,
    pub idle: Duration,
    pub accepted: AtomicU64,
    /// Over the total cap (`--tcp-max-connections`).
    pub refused: AtomicU64,
    /// Over the per-source cap (`--tcp-max-connections-per-ip`).
    pub refused_per_ip: AtomicU64,
}

impl TcpShared {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limit.lock().unwrap_or_else(|p| p.into_inner()).open()
    }
}

/// An admitted connection's place under the caps, given back when the connection ends.
struct Slot {
    shared: Arc<TcpShared>,
    peer: SocketAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.limit.lock().unwrap_or_else(|p| p.into_inner()).close(self.peer.ip());
    }
}

/// Accepts connections on one local socket, bound to `local`, until the runtime stops.
pub async fn serve(listener: TcpListener, local: SocketAddr, shared: Arc<TcpShared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let admitted = shared.limit.lock().unwrap_or_else(|p| p.into_inner()).try_open(peer.ip());
                match admitted {
                    Ok(()) => {
                        shared.accepted.fetch_add(1, Ordering::Relaxed);
                        let slot = Slot { shared: shared.clone(), peer };
                        tokio::spawn(connection(stream, peer, local, shared.clone(), slot));
                    }
                    // Over a cap: close at once rather than queue (overload best practice).
                    Err(why) => {
                        let counter = match why {
                            Refused::Full => &shared.refused,
                            Refused::SourceFull => &shared.refused_per_ip,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        log::debug!(target: "stund::tcp", "refused {peer}: {why}");
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                log::warn!(target: "stund::tcp", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, local: SocketAddr, shared: Arc<TcpShared>, _slot: Slot) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_REQUEST_LEN];
    let mut out = vec![0u8; MAX_REQUEST_LEN];
    log::debug!(target: "stund::tcp", "connection from {peer}");
    loop {
        match timeout(shared.idle, stream.read_exact(&mut buf[..HEADER_LEN])).await {
            Ok(Ok(_)) => {}
            _ => break, // closed, error, or idle too long
        }
        let total = match frame_len(&buf[..HEADER_LEN]) {
            Some(n) if n <= MAX_REQUEST_LEN => n,
            // Not STUN or too big: the stream cannot be re-synchronised, so close it.
            _ => {
                count_malformed(&shared);
                break;
            }
        };
        match timeout(shared.idle, stream.read_exact(&mut buf[HEADER_LEN..total])).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let action = {
            let mut r = shared.responder.lock().unwrap_or_else(|p| p.into_inner());
            let rx = Received { local, source: peer, transport: Transport::Tcp };
            let a = r.handle(Instant::now(), rx, &buf[..total], &mut out);
            shared.counters.publish(r.counters());
            a
        };
        match action {
            Ok(t) => {
                let len = t.len;
                if !matches!(timeout(shared.idle, stream.write_all(&out[..len])).await, Ok(Ok(()))) {
                    let mut r = shared.responder.lock().unwrap_or_else(|p| p.into_inner());
                    r.counters_mut().send_errors += 1;
                    shared.counters.publish(r.counters());
                    break;
                }
            }
            Err(Dropped::Malformed) => break,
            Err(_) => {}
        }
    }
    log::debug!(target: "stund::tcp", "connection from {peer} closed");
}

fn count_malformed(shared: &TcpShared) {
    let mut r = shared.responder.lock().unwrap_or_else(|p| p.into_inner());
    r.counters_mut().dropped_malformed += 1;
    shared.counters.publish(r.counters());
}

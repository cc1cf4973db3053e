//! STUN over TCP (RFC 8489 §6.2.2): a stream of STUN messages, each framed by its own header length.
//! Not the hot path: one tokio task per connection, one shared responder behind a mutex.

use holepunch::net::{Received, Transport};
use holepunch::server::{Dropped, Responder, SharedCounters, MAX_REQUEST_LEN};
use holepunch::stun::{frame_len, HEADER_LEN};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

/// State shared by every TCP connection.
pub struct TcpShared {
    pub responder: Mutex<Responder>,
    pub counters: Arc<SharedCounters>,
    pub slots: Arc<Semaphore>,
    pub idle: Duration,
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
}

/// Accepts connections on one local socket, bound to `local`, until the runtime stops.
pub async fn serve(listener: TcpListener, local: SocketAddr, shared: Arc<TcpShared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match shared.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(connection(stream, peer, local, shared.clone(), permit));
                }
                Err(_) => {
                    // Over the connection cap: close at once rather than queue (overload best practice).
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    log::debug!(target: "stund::tcp", "refused {peer}: connection limit reached");
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                log::warn!(target: "stund::tcp", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<TcpShared>,
    _permit: OwnedSemaphorePermit,
) {
    shared.open.fetch_add(1, Ordering::Relaxed);
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
    shared.open.fetch_sub(1, Ordering::Relaxed);
    log::debug!(target: "stund::tcp", "connection from {peer} closed");
}

fn count_malformed(shared: &TcpShared) {
    let mut r = shared.responder.lock().unwrap_or_else(|p| p.into_inner());
    r.counters_mut().dropped_malformed += 1;
    shared.counters.publish(r.counters());
}

//! STUN over TCP (RFC 8489 §6.2.2): a stream of STUN messages, each framed by its own header length, and with
//! TURN on, TURN over TCP (RFC 8656 §3.1): TURN messages and ChannelData frames padded to 4 bytes (§12.5).
//! Not the hot path: one tokio task reading each connection, one shared responder behind a mutex for Binding,
//! and one writer task per connection that owns the write half, so Binding answers and what the relay thread
//! sends (`crate::turn`, through a bounded channel of frames) never interleave inside a frame.
//!
//! Connections are capped in total and per source (`holepunch::server::ConnectionLimit`): one source that
//! reconnects whenever a slot frees cannot hold every slot. Over either cap a connection is closed at once.

use crate::turn::{TcpControl, TurnShared};
use holepunch::net::{Received, Transport};
use holepunch::relay::is_turn_message;
use holepunch::server::{ConnectionLimit, Dropped, Refused, Responder, SharedCounters, MAX_REQUEST_LEN};
use holepunch::stun::channel::channel_frame_len;
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
    /// The TURN relay, when on.
    pub turn: Option<Arc<TurnShared>>,
}

/// Frames queued towards one connection (Binding answers and relayed data).
const FRAMES: usize = 256;
/// A connection carrying a TURN allocation may be silent for as long as an allocation lives without a refresh
/// (RFC 8656's maximum lifetime), not only `--tcp-idle-timeout`: a client that only receives relayed data
/// sends nothing but its refreshes.
const TURN_IDLE: Duration = Duration::from_secs(3600);

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

async fn connection(stream: TcpStream, peer: SocketAddr, local: SocketAddr, shared: Arc<TcpShared>, _slot: Slot) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (frames, mut queued) = tokio::sync::mpsc::channel::<Vec<u8>>(FRAMES);
    let idle = shared.idle;
    let writer = tokio::spawn(async move {
        while let Some(f) = queued.recv().await {
            if !matches!(timeout(idle, wr.write_all(&f)).await, Ok(Ok(()))) {
                break;
            }
        }
    });
    let mut buf = vec![0u8; MAX_REQUEST_LEN];
    let mut out = vec![0u8; MAX_REQUEST_LEN];
    let mut turn_open = false;
    log::debug!(target: "stund::tcp", "connection from {peer}");
    loop {
        let idle = if turn_open { TURN_IDLE } else { shared.idle };
        match timeout(idle, rd.read_exact(&mut buf[..4])).await {
            Ok(Ok(_)) => {}
            _ => break, // closed, error, or idle too long
        }
        let len = match (frame_len(&buf[..4]), &shared.turn) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => channel_frame_len(&buf[..4]),
            (None, None) => None,
        };
        let total = match len {
            Some(n) if (4..=MAX_REQUEST_LEN).contains(&n) => n,
            // Not STUN (or ChannelData) or too big: the stream cannot be re-synchronised, so close it.
            _ => {
                count_malformed(&shared);
                break;
            }
        };
        match timeout(idle, rd.read_exact(&mut buf[4..total])).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let frame = &buf[..total];
        if let Some(turn) = shared.turn.as_ref().filter(|_| is_turn_message(frame)) {
            if !turn_open {
                turn.tcp(TcpControl::Open { local, peer, frames: frames.clone() });
                turn_open = true;
            }
            if turn.submit_on(Transport::Tcp, local, peer, frame) {
                turn.wake();
            }
            continue;
        }
        if total < HEADER_LEN {
            count_malformed(&shared);
            break;
        }
        let action = {
            let mut r = shared.responder.lock().unwrap_or_else(|p| p.into_inner());
            let rx = Received { local, source: peer, transport: Transport::Tcp };
            let a = r.handle(Instant::now(), rx, frame, &mut out);
            shared.counters.publish(r.counters());
            a
        };
        match action {
            Ok(t) => {
                if frames.send(out[..t.len].to_vec()).await.is_err() {
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
    if let (true, Some(turn)) = (turn_open, &shared.turn) {
        turn.tcp(TcpControl::Close { local, peer });
    }
    // The writer finishes what is queued (each write bounded by the idle timeout), then ends with the channel.
    drop(frames);
    let _ = writer.await;
    log::debug!(target: "stund::tcp", "connection from {peer} closed");
}

fn count_malformed(shared: &TcpShared) {
    let mut r = shared.responder.lock().unwrap_or_else(|p| p.into_inner());
    r.counters_mut().dropped_malformed += 1;
    shared.counters.publish(r.counters());
}

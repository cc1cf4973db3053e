//! Linux: the data path in batches, with the TUN device's offloads (IFF_VNET_HDR), the way wireguard-go and
//! Tailscale's userspace WireGuard reach multi-gigabit speeds (docs/tunnel.md, "Data path").
//!
//! - Out: one read from the device may return a TCP segment of up to 64 KB (TSO); tun-rs splits it into
//!   MTU-sized packets (up to 128 per read), each is encrypted into a slot of one sendmmsg(2) batch.
//! - In: the socket receiver takes up to 64 datagrams per recvmmsg(2) (holepunch::io::blocking); each is
//!   decrypted into a slot of a batch that is written to the device when the receive batch ends, TCP segments
//!   coalesced by tun-rs's GRO table into few large writes.
//!
//! Buffers are allocated once per thread and reused.

use super::DataPath;
use holepunch::io::batch::SendBatch;
use holepunch::tunnel::{packet, Decapsulated, Encapsulated};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(test)]
use std::time::Duration;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Room for one packet or datagram in a batch slot.
const SLOT: usize = super::BUF + packet::DATA_OVERHEAD;

/// Decrypted packets waiting to be written to the device (the receive side's batch), and the state of the
/// queue management in front of it.
pub struct RxBatch {
    bufs: Vec<Vec<u8>>,
    count: usize,
    gro: GROTable,
    /// The socket's receive queue held more than [`STANDING_QUEUE`] after the last batch.
    congested: bool,
    /// TCP segments seen while congested, for dropping one in [`DROP_ONE_IN`].
    seen: u32,
}

/// Receive-queue memory (the kernel's accounting, about twice the payload) above which the queue stands
/// instead of absorbing a burst: 128 KiB is about half a millisecond of data at 1 Gbit/s (measured against
/// 256 and 512 KiB: docs/performance.md, "Tunnel throughput").
const STANDING_QUEUE: u32 = 128 << 10;
/// While the queue stands, one TCP data segment in this many is dropped, so TCP senders through the tunnel
/// slow down before the queue adds latency for everything else on it (queue management in the spirit of
/// RFC 7567; docs/tunnel.md, "Data path").
const DROP_ONE_IN: u32 = 16;

impl RxBatch {
    pub fn new() -> RxBatch {
        RxBatch {
            bufs: vec![vec![0u8; VIRTIO_NET_HDR_LEN + SLOT]; IDEAL_BATCH_SIZE],
            count: 0,
            gro: GROTable::default(),
            congested: false,
            seen: 0,
        }
    }
}

impl DataPath {
    /// The TUN reader in batches (see the module docs).
    pub(super) fn read_device_batched(&self, stop: &AtomicBool) {
        let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + 65535];
        let mut bufs = vec![vec![0u8; SLOT]; IDEAL_BATCH_SIZE];
        let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
        let mut batch = SendBatch::new(IDEAL_BATCH_SIZE, SLOT);
        while !stop.load(Ordering::Relaxed) {
            let n = match self.device.recv_multiple(&mut original, &mut bufs, &mut sizes, 0) {
                Ok(n) => n,
                Err(e) if self.read_failed(&e, stop) => continue,
                Err(_) => return,
            };
            for (buf, &size) in bufs.iter().zip(&sizes).take(n) {
                let Some(slot) = batch.next_slot() else { break };
                match self.tunnel.encapsulate(&buf[..size], slot) {
                    Encapsulated::Send(t, _) if t.local == self.sockets.main.0 => {
                        batch.push(t.len, Some(t.dst));
                    }
                    // A path on one of birthday probing's extra sockets: sent on its own.
                    Encapsulated::Send(t, _) => {
                        let data = slot[..t.len].to_vec();
                        self.send(t, &data);
                    }
                    Encapsulated::Queued(_) => {}
                    Encapsulated::Dropped(why) => self.device_packet_dropped(why),
                }
            }
            if !batch.is_empty() {
                let sent = batch.send_all(&*self.sockets.main.1);
                self.counters.sent.fetch_add(sent.sent as u64, Ordering::Relaxed);
                self.counters.send_errors.fetch_add(sent.failed as u64, Ordering::Relaxed);
            }
        }
    }

    /// One datagram from the socket receiver, decrypted into the receive batch; false when it is not for the
    /// device (a reply was sent, or it was dropped), so the caller handles what follows.
    pub(super) fn decapsulate_batched(
        &self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Option<holepunch::tunnel::PeerId>> {
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if rx.count == rx.bufs.len() {
            self.write_batch(&mut rx);
        }
        let i = rx.count;
        let buf = &mut rx.bufs[i];
        if buf.len() != VIRTIO_NET_HDR_LEN + SLOT {
            buf.resize(VIRTIO_NET_HDR_LEN + SLOT, 0); // GRO may have grown or shrunk it
        }
        match self.tunnel.decapsulate(local, from, data, &mut buf[VIRTIO_NET_HDR_LEN..]) {
            Decapsulated::ToTun { offset, len, .. } => {
                let start = VIRTIO_NET_HDR_LEN + offset;
                if offset != 0 {
                    buf.copy_within(start..start + len, VIRTIO_NET_HDR_LEN);
                }
                buf.truncate(VIRTIO_NET_HDR_LEN + len);
                let tcp_data = is_tcp_data(&buf[VIRTIO_NET_HDR_LEN..]);
                if rx.congested && tcp_data {
                    rx.seen = rx.seen.wrapping_add(1);
                    if rx.seen % DROP_ONE_IN == 0 {
                        self.counters.aqm_drops.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
                rx.count += 1;
                None
            }
            Decapsulated::Reply(t, peer) => {
                let reply = buf[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + t.len].to_vec();
                drop(rx);
                self.send(t, &reply);
                Some(peer)
            }
            Decapsulated::Done(peer) => Some(Some(peer)),
            Decapsulated::Dropped(why) => {
                drop(rx);
                self.refused(from, why);
                Some(None)
            }
        }
    }

    /// Writes the receive batch to the device.
    pub(super) fn flush_batched(&self) {
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if rx.count > 0 {
            self.write_batch(&mut rx);
        }
        rx.congested = receive_queue(&self.sockets.main.1) > STANDING_QUEUE;
    }

    fn write_batch(&self, rx: &mut RxBatch) {
        let RxBatch { bufs, count, gro, .. } = rx;
        if let Err(e) = self.device.send_multiple(gro, &mut bufs[..*count], VIRTIO_NET_HDR_LEN) {
            self.counters.device_errors.fetch_add(1, Ordering::Relaxed);
            log::debug!("tunnel: writing to the TUN device failed: {e}");
        }
        *count = 0;
    }
}

/// A TCP segment carrying data (not a bare ACK or a handshake): what the queue management may drop.
fn is_tcp_data(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9) == Some(&6) && packet.len() > 200,
        Some(6) => packet.get(6) == Some(&6) && packet.len() > 200,
        _ => false,
    }
}

/// Bytes of memory the socket's receive queue holds now (SO_MEMINFO); 0 when the kernel does not say.
fn receive_queue(socket: &std::net::UdpSocket) -> u32 {
    use std::os::fd::AsRawFd;
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that large.
    let r = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MEMINFO, info.as_mut_ptr().cast(), &mut len)
    };
    if r == 0 {
        info[libc::SK_MEMINFO_RMEM_ALLOC as usize]
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_data_is_dropped_by_the_queue_management() {
        let mut v4 = vec![0u8; 1400];
        v4[0] = 0x45;
        v4[9] = 6;
        assert!(is_tcp_data(&v4));
        assert!(!is_tcp_data(&v4[..60]), "a bare ACK stays");
        v4[9] = 1;
        assert!(!is_tcp_data(&v4), "ICMP (ping) stays");
        let mut v6 = vec![0u8; 1400];
        v6[0] = 0x60;
        v6[6] = 6;
        assert!(is_tcp_data(&v6));
        v6[6] = 17;
        assert!(!is_tcp_data(&v6), "UDP stays");
        assert!(!is_tcp_data(&[]));
    }

    #[test]
    fn the_receive_queue_is_measured() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(receive_queue(&a), 0);
        for _ in 0..10 {
            b.send_to(&[0u8; 1000], a.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(receive_queue(&a) >= 10_000, "{}", receive_queue(&a));
    }
}

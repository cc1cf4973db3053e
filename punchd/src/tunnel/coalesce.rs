//! Windows: the TUN reader in batches. Wintun has no offloads, but its ring usually holds several packets
//! under load: each wake takes up to [`BATCH`] of them (the first blocking, the rest while they are there),
//! encrypts them back to back, and sends each run of equal-size datagrams to one peer with one segmented call
//! (UDP Segmentation Offload), or one datagram per call where the system refuses it
//! (`holepunch::io::coalesce`; docs/windows.md, "Tunnel data path"). The receive side is the driver's
//! (receive coalescing, `holepunch::io::blocking`).

use super::DataPath;
use holepunch::io::coalesce::{self, Offload, SegmentBatch};
use holepunch::tunnel::{packet, Encapsulated};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};

/// Packets taken from the device per wake.
const BATCH: usize = 64;
/// Room for one encrypted datagram.
const SLOT: usize = super::BUF + packet::DATA_OVERHEAD;

impl DataPath {
    /// The TUN reader in batches (see the module docs); returns when `stop` is set or the device fails.
    pub(super) fn read_device_coalesced(&self, stop: &AtomicBool) {
        let mut packet = vec![0u8; super::BUF];
        let mut batch = SegmentBatch::new(BATCH, SLOT);
        let offload = Offload::new();
        let max_segments = coalesce::max_segments();
        while !stop.load(Ordering::Relaxed) {
            match self.device.recv(&mut packet) {
                Ok(n) => self.encapsulate_into(&packet[..n], &mut batch),
                Err(e) if self.read_failed(&e, stop) => continue,
                Err(_) => return,
            }
            while batch.len() < BATCH {
                match self.device.try_recv(&mut packet) {
                    Ok(n) => self.encapsulate_into(&packet[..n], &mut batch),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // Counted and logged by the next blocking read, which fails the same way.
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let sent = coalesce::send_batch(&batch, &*self.sockets.main.1, &offload, max_segments);
                self.counters.sent.fetch_add(sent.sent as u64, Ordering::Relaxed);
                self.counters.send_errors.fetch_add(sent.failed as u64, Ordering::Relaxed);
                batch.clear();
            }
        }
    }

    /// One packet from the device, encrypted into the batch when it leaves from the punching socket.
    fn encapsulate_into(&self, packet: &[u8], batch: &mut SegmentBatch) {
        let Some(slot) = batch.next_slot() else { return };
        match self.tunnel.encapsulate(packet, slot) {
            Encapsulated::Send(t, _) if t.local == self.sockets.main.0 => batch.push(t.len, t.dst),
            // A path on one of birthday probing's extra sockets, or through our relay: sent on its own.
            Encapsulated::Send(t, _) => {
                let data = slot[..t.len].to_vec();
                self.send(t, &data);
            }
            Encapsulated::Queued(_) => {}
            Encapsulated::Dropped(why) => self.device_packet_dropped(why),
        }
    }
}

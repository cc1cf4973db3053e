//! UDP segmentation and receive coalescing where the system offers it as one buffer of equal-size datagrams
//! (Windows USO and URO; docs/windows.md, "Tunnel data path"). Linux has its own batching (`io::batch`).
//!
//! The logic here is platform-neutral and tested everywhere: grouping consecutive datagrams of one size and
//! destination into runs ([`SegmentBatch`]), sending runs with the offload and falling back to one datagram
//! per call once the system refuses it ([`send_batch`], [`Offload`]), and splitting a coalesced receive by its
//! stride ([`segments`], [`coalescing_broken`]). The system calls themselves are in `coalesce/windows.rs`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(windows)]
pub(crate) mod windows;

/// Most bytes one segmented send carries: a UDP datagram's 64 KiB, less room for the headers (the limit
/// Linux's GSO and the Windows drivers' USO share in practice).
pub const MAX_RUN_BYTES: usize = 64_000;

/// Datagrams of one destination, written one after another into one buffer, in the order they are to leave.
/// Consecutive datagrams of the same size to the same destination form a run the system can send with one
/// call (the last of a run may be shorter: it ends the run).
#[derive(Debug)]
pub struct SegmentBatch {
    buf: Vec<u8>,
    used: usize,
    /// Each datagram: destination, offset into `buf`, length.
    items: Vec<(SocketAddr, usize, usize)>,
    capacity: usize,
    slot: usize,
}

/// One run of a [`SegmentBatch`]: `count` datagrams of `segment_size` bytes (the last may be shorter) to
/// `dst`, back to back in `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run<'a> {
    pub dst: SocketAddr,
    pub segment_size: usize,
    pub count: usize,
    pub data: &'a [u8],
}

impl SegmentBatch {
    /// Room for `capacity` datagrams of at most `slot` bytes each.
    pub fn new(capacity: usize, slot: usize) -> SegmentBatch {
        SegmentBatch { buf: vec![0u8; capacity * slot], used: 0, items: Vec::with_capacity(capacity), capacity, slot }
    }

    /// Where the next datagram is written (`slot` bytes); `None` when the batch is full.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.items.len() == self.capacity {
            return None;
        }
        Some(&mut self.buf[self.used..self.used + self.slot])
    }

    /// The datagram just written into [`next_slot`](Self::next_slot), `len` bytes to `dst`.
    pub fn push(&mut self, len: usize, dst: SocketAddr) {
        let len = len.min(self.slot);
        if self.items.len() < self.capacity {
            self.items.push((dst, self.used, len));
            self.used += len;
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.used = 0;
    }

    /// The runs, in order, each of at most `max_segments` datagrams and [`MAX_RUN_BYTES`] bytes.
    pub fn runs(&self, max_segments: usize) -> Runs<'_> {
        Runs { batch: self, next: 0, max_segments: max_segments.max(1) }
    }
}

/// Iterator of [`SegmentBatch::runs`].
#[derive(Debug)]
pub struct Runs<'a> {
    batch: &'a SegmentBatch,
    next: usize,
    max_segments: usize,
}

impl<'a> Iterator for Runs<'a> {
    type Item = Run<'a>;

    fn next(&mut self) -> Option<Run<'a>> {
        let items = &self.batch.items;
        let &(dst, start, segment_size) = items.get(self.next)?;
        let (mut count, mut bytes) = (1, segment_size);
        while let Some(&(d, _, len)) = items.get(self.next + count) {
            let fits = count < self.max_segments && bytes + len <= MAX_RUN_BYTES;
            if d != dst || len > segment_size || len == 0 || !fits {
                break;
            }
            count += 1;
            bytes += len;
            if len < segment_size {
                break; // a shorter datagram can only end a run
            }
        }
        self.next += count;
        Some(Run { dst, segment_size, count, data: &self.batch.buf[start..start + bytes] })
    }
}

/// Whether segmented sends are still worth trying: on until the system refuses one, then off for good
/// (older Windows, Wine), so the refusal costs one failed call, not one per batch.
#[derive(Debug, Default)]
pub struct Offload {
    refused: AtomicBool,
}

impl Offload {
    pub const fn new() -> Offload {
        Offload { refused: AtomicBool::new(false) }
    }

    pub fn usable(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
    }

    /// Turns the offload off; true for the call that did (to log it once).
    pub fn refuse(&self) -> bool {
        !self.refused.swap(true, Ordering::Relaxed)
    }
}

/// A socket as [`send_batch`] uses it; the system's segmented send, or a test double.
pub trait SegmentSocket {
    /// `data` as datagrams of `segment_size` bytes (the last may be shorter) to `dst` with one call.
    fn send_segments(&self, dst: SocketAddr, data: &[u8], segment_size: usize) -> io::Result<()>;
    /// One datagram.
    fn send_one(&self, dst: SocketAddr, data: &[u8]) -> io::Result<usize>;
}

impl SegmentSocket for UdpSocket {
    /// No segmentation on this system: one datagram per call.
    #[cfg(not(windows))]
    fn send_segments(&self, dst: SocketAddr, data: &[u8], segment_size: usize) -> io::Result<()> {
        let _ = (dst, data, segment_size);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    #[cfg(windows)]
    fn send_segments(&self, dst: SocketAddr, data: &[u8], segment_size: usize) -> io::Result<()> {
        windows::send_segments(self, dst, data, segment_size)
    }

    fn send_one(&self, dst: SocketAddr, data: &[u8]) -> io::Result<usize> {
        self.send_to(data, dst)
    }
}

/// What [`send_batch`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams handed to the system.
    pub sent: usize,
    /// Datagrams that failed.
    pub failed: usize,
    /// Segmented calls that carried more than one datagram.
    pub coalesced: usize,
}

/// Sends the batch: each run of several datagrams with one segmented call while `offload` is usable (and
/// `max_segments` > 1), every other datagram on its own. A segmented call that fails is retried as single
/// datagrams; when those go out, the offload was at fault and is turned off for good (logged once), when
/// they fail too, the network was (the offload stays).
pub fn send_batch(batch: &SegmentBatch, socket: &impl SegmentSocket, offload: &Offload, max_segments: usize) -> Sent {
    let mut sent = Sent::default();
    let max_segments = if offload.usable() { max_segments } else { 1 };
    for run in batch.runs(max_segments) {
        if run.count > 1 && offload.usable() {
            match socket.send_segments(run.dst, run.data, run.segment_size) {
                Ok(()) => {
                    sent.sent += run.count;
                    sent.coalesced += 1;
                    COALESCED_SENDS.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    let singles = send_singles(&run, socket);
                    if singles.sent > 0 && offload.refuse() {
                        log::info!(target: "holepunch::io", "UDP segmentation offload refused ({e}): one datagram per call from now on");
                    }
                    sent.sent += singles.sent;
                    sent.failed += singles.failed;
                    continue;
                }
            }
        }
        let singles = send_singles(&run, socket);
        sent.sent += singles.sent;
        sent.failed += singles.failed;
    }
    sent
}

fn send_singles(run: &Run<'_>, socket: &impl SegmentSocket) -> Sent {
    let mut sent = Sent::default();
    for datagram in run.data.chunks(run.segment_size.max(1)) {
        match socket.send_one(run.dst, datagram) {
            Ok(_) => sent.sent += 1,
            Err(e) => {
                sent.failed += 1;
                log::debug!(target: "holepunch::io", "send to {} failed: {e}", run.dst);
            }
        }
    }
    sent
}

/// The datagrams of a receive of `data` whose segment size the system reported as `stride` (0, or at least
/// the length, for a single datagram).
pub fn segments(data: &[u8], stride: usize) -> std::slice::Chunks<'_, u8> {
    let stride = if stride == 0 || stride >= data.len() { data.len().max(1) } else { stride };
    data.chunks(stride)
}

/// A receive the system coalesced without saying so: one "datagram" longer than any we take (`largest`).
/// Some drivers do this (Windows on ARM with WSL, some dock NICs); the boundaries are lost, so receive
/// coalescing is turned off.
pub fn coalescing_broken(len: usize, stride: usize, largest: usize) -> bool {
    len > largest && (stride == 0 || stride >= len)
}

/// Process-wide switch of the receive side (the driver's receiver threads), and counters for the status.
static RECEIVE_COALESCING_OFF: AtomicBool = AtomicBool::new(false);
static COALESCED_RECEIVES: AtomicU64 = AtomicU64::new(0);
static COALESCED_SENDS: AtomicU64 = AtomicU64::new(0);

/// Segmented sends of several datagrams ([`send_batch`]), since the start of the process.
pub fn coalesced_sends() -> u64 {
    COALESCED_SENDS.load(Ordering::Relaxed)
}

/// Turns receive coalescing off for sockets the driver starts receiving on from now on, and for those
/// already receiving at their next receive (for comparisons, or after [`coalescing_broken`]).
pub fn disable_receive_coalescing() {
    RECEIVE_COALESCING_OFF.store(true, Ordering::Relaxed);
}

pub fn receive_coalescing_disabled() -> bool {
    RECEIVE_COALESCING_OFF.load(Ordering::Relaxed)
}

/// Receives that carried more than one datagram, since the start of the process.
pub fn coalesced_receives() -> u64 {
    COALESCED_RECEIVES.load(Ordering::Relaxed)
}

#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn count_coalesced_receive() {
    COALESCED_RECEIVES.fetch_add(1, Ordering::Relaxed);
}

/// Most datagrams one segmented send may carry on this system: 1 where there is no segmentation offload
/// (not Windows, or Windows before 10 2004, or Wine).
pub fn max_segments() -> usize {
    #[cfg(windows)]
    return windows::max_segments();
    #[cfg(not(windows))]
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Writes datagrams of the given sizes (filled with their index) to the given ports.
    fn batch(datagrams: &[(u16, usize)]) -> SegmentBatch {
        let mut b = SegmentBatch::new(64, 1500);
        for (i, &(port, len)) in datagrams.iter().enumerate() {
            let slot = b.next_slot().unwrap();
            slot[..len].fill(i as u8);
            b.push(len, addr(port));
        }
        b
    }

    fn shape(b: &SegmentBatch, max: usize) -> Vec<(u16, usize, usize, usize)> {
        b.runs(max).map(|r| (r.dst.port(), r.segment_size, r.count, r.data.len())).collect()
    }

    #[test]
    fn runs_group_equal_sizes_to_one_destination_in_order() {
        let b = batch(&[(1, 100), (1, 100), (1, 100), (2, 100), (2, 100), (1, 100)]);
        assert_eq!(shape(&b, 64), vec![(1, 100, 3, 300), (2, 100, 2, 200), (1, 100, 1, 100)]);
        let first = b.runs(64).next().unwrap();
        assert_eq!(&first.data[100..200], &[1u8; 100][..], "datagrams lie back to back");
    }

    #[test]
    fn a_shorter_datagram_ends_a_run_and_a_longer_one_starts_one() {
        let b = batch(&[(1, 100), (1, 100), (1, 60), (1, 100), (1, 120), (1, 120)]);
        assert_eq!(shape(&b, 64), vec![(1, 100, 3, 260), (1, 100, 1, 100), (1, 120, 2, 240)]);
    }

    #[test]
    fn runs_are_bounded_by_segments_and_bytes() {
        let b = batch(&[(1, 100); 5]);
        assert_eq!(shape(&b, 2), vec![(1, 100, 2, 200), (1, 100, 2, 200), (1, 100, 1, 100)]);
        assert_eq!(shape(&b, 1).len(), 5);
        assert_eq!(shape(&b, 0).len(), 5, "0 means no segmentation");
        let big = batch(&[(1, 1500); 50]);
        for (_, _, _, bytes) in shape(&big, 64) {
            assert!(bytes <= MAX_RUN_BYTES, "{bytes}");
        }
        assert_eq!(shape(&big, 64)[0].2, MAX_RUN_BYTES / 1500);
    }

    #[test]
    fn a_full_batch_takes_no_more() {
        let mut b = SegmentBatch::new(2, 100);
        for _ in 0..2 {
            b.next_slot().unwrap();
            b.push(100, addr(1));
        }
        assert!(b.next_slot().is_none());
        b.push(100, addr(1));
        assert_eq!(b.len(), 2);
        b.clear();
        assert!(b.is_empty() && b.next_slot().is_some());
    }

    /// Records what was sent; refuses segmented sends, or everything.
    #[derive(Default)]
    struct Fake {
        refuse_segments: bool,
        network_down: bool,
        calls: RefCell<Vec<(u16, usize, Option<usize>)>>,
    }

    impl SegmentSocket for Fake {
        fn send_segments(&self, dst: SocketAddr, data: &[u8], segment_size: usize) -> io::Result<()> {
            self.calls.borrow_mut().push((dst.port(), data.len(), Some(segment_size)));
            if self.refuse_segments || self.network_down {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            }
            Ok(())
        }
        fn send_one(&self, dst: SocketAddr, data: &[u8]) -> io::Result<usize> {
            self.calls.borrow_mut().push((dst.port(), data.len(), None));
            if self.network_down {
                return Err(io::Error::from(io::ErrorKind::HostUnreachable));
            }
            Ok(data.len())
        }
    }

    #[test]
    fn runs_leave_with_one_call_each() {
        let b = batch(&[(1, 100), (1, 100), (1, 80), (2, 100)]);
        let (fake, offload) = (Fake::default(), Offload::new());
        let before = coalesced_sends();
        assert_eq!(send_batch(&b, &fake, &offload, 64), Sent { sent: 4, failed: 0, coalesced: 1 });
        assert!(coalesced_sends() > before);
        assert_eq!(*fake.calls.borrow(), vec![(1, 280, Some(100)), (2, 100, None)]);
    }

    #[test]
    fn a_refused_offload_falls_back_once_and_is_remembered() {
        let b = batch(&[(1, 100), (1, 100), (1, 100)]);
        let fake = Fake { refuse_segments: true, ..Fake::default() };
        let offload = Offload::new();
        assert_eq!(send_batch(&b, &fake, &offload, 64), Sent { sent: 3, failed: 0, coalesced: 0 });
        assert!(!offload.usable());
        assert_eq!(fake.calls.borrow().len(), 4, "one refused call, then the three datagrams");
        fake.calls.borrow_mut().clear();
        assert_eq!(send_batch(&b, &fake, &offload, 64).sent, 3);
        assert!(fake.calls.borrow().iter().all(|c| c.2.is_none()), "no segmented call after the refusal");
    }

    #[test]
    fn a_network_failure_does_not_turn_the_offload_off() {
        let b = batch(&[(1, 100), (1, 100)]);
        let fake = Fake { network_down: true, ..Fake::default() };
        let offload = Offload::new();
        assert_eq!(send_batch(&b, &fake, &offload, 64), Sent { sent: 0, failed: 2, coalesced: 0 });
        assert!(offload.usable());
    }

    #[test]
    fn without_segmentation_every_datagram_is_its_own_call() {
        let b = batch(&[(1, 100), (1, 100)]);
        let fake = Fake::default();
        assert_eq!(send_batch(&b, &fake, &Offload::new(), 1), Sent { sent: 2, failed: 0, coalesced: 0 });
        assert!(fake.calls.borrow().iter().all(|c| c.2.is_none()));
    }

    #[test]
    fn the_system_socket_sends_each_datagram_where_it_cannot_segment() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = SegmentBatch::new(4, 100);
        for (i, len) in [100usize, 100, 40].into_iter().enumerate() {
            b.next_slot().unwrap()[..len].fill(i as u8);
            b.push(len, rx.local_addr().unwrap());
        }
        let sent = send_batch(&b, &tx, &Offload::new(), max_segments());
        assert_eq!((sent.sent, sent.failed), (3, 0));
        let mut buf = [0u8; 2048];
        for (i, len) in [100usize, 100, 40].into_iter().enumerate() {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (len, i as u8));
        }
    }

    #[test]
    fn a_coalesced_receive_splits_by_its_stride() {
        let data: Vec<u8> = (0..250u8).collect();
        let parts: Vec<usize> = segments(&data, 100).map(<[u8]>::len).collect();
        assert_eq!(parts, vec![100, 100, 50]);
        assert_eq!(segments(&data, 100).nth(1).unwrap()[0], 100);
        assert_eq!(segments(&data, 0).count(), 1, "no stride: one datagram");
        assert_eq!(segments(&data, 250).count(), 1);
        assert_eq!(segments(&data, 4000).count(), 1);
        assert_eq!(segments(&[], 100).count(), 0);
    }

    #[test]
    fn a_silent_coalescing_is_recognised() {
        assert!(coalescing_broken(2900, 2900, 2048), "two datagrams' worth reported as one");
        assert!(coalescing_broken(2900, 0, 2048));
        assert!(!coalescing_broken(2900, 1450, 2048), "a stride is reported");
        assert!(!coalescing_broken(1450, 1450, 2048));
    }

    #[test]
    fn coalesced_receives_are_counted() {
        let before = coalesced_receives();
        count_coalesced_receive();
        assert!(coalesced_receives() > before);
    }
}

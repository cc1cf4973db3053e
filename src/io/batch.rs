//! Batched UDP on Linux: many datagrams per system call with recvmmsg(2) and sendmmsg(2), from buffers,
//! iovecs, addresses and message headers wired together once, so a batch allocates nothing.
//!
//! [`RecvBatch`] receives up to its capacity in one call (waiting for the first datagram or not at all) and
//! can send what it received back to the sources in place (an echo). [`SendBatch`] collects datagrams
//! written straight into its slots and sends them with one call. stund's hot path and the load generator
//! `stunload` both run on these.

use super::sockaddr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr;

/// Linux caps one recvmmsg/sendmmsg call at UIO_MAXIOV messages.
pub const MAX_BATCH: usize = 1024;

const NAME_LEN: libc::socklen_t = size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// How a receive waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block until the first datagram (or the socket's receive timeout), then take whatever else is already
    /// queued (MSG_WAITFORONE).
    ForFirst,
    /// Never block: take what is queued, WouldBlock when nothing is (MSG_DONTWAIT).
    Never,
}

/// Errors a datagram socket reports for one datagram without being broken: a full queue, or an ICMP error
/// from an earlier send to a closed port, an unreachable host or a filtered destination.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EPERM)
    )
}

/// `count` slots of `size` bytes with one iovec, one address and one message header each. The headers point
/// into the boxed slices, whose heap storage never moves while the batch lives.
struct Slots {
    bufs: Box<[u8]>,
    size: usize,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside point only into heap memory owned by the same value, which moves with it;
// nothing is shared with another thread.
unsafe impl Send for Slots {}

impl Slots {
    fn new(count: usize, size: usize) -> Slots {
        let count = count.clamp(1, MAX_BATCH);
        let mut s = Slots {
            bufs: vec![0u8; count * size].into_boxed_slice(),
            size,
            iovs: (0..count).map(|_| libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }).collect(),
            // SAFETY: all-zero bytes are a valid value of these plain C structs.
            names: (0..count).map(|_| unsafe { zeroed::<libc::sockaddr_storage>() }).collect(),
            // SAFETY: as above.
            hdrs: (0..count).map(|_| unsafe { zeroed::<libc::mmsghdr>() }).collect(),
        };
        let base = s.bufs.as_mut_ptr();
        for i in 0..count {
            // SAFETY: i * size is within the buffer of count * size bytes.
            s.iovs[i].iov_base = unsafe { base.add(i * size) }.cast();
            s.iovs[i].iov_len = size;
            let h = &mut s.hdrs[i].msg_hdr;
            h.msg_name = (&mut s.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = NAME_LEN;
            h.msg_iov = &mut s.iovs[i];
            h.msg_iovlen = 1;
        }
        s
    }

    fn capacity(&self) -> usize {
        self.hdrs.len()
    }
}

/// Up to `capacity` received datagrams of at most `slot_size` bytes each (longer ones are truncated and
/// flagged), with their sources.
pub struct RecvBatch {
    s: Slots,
    /// Headers the last receive filled: their lengths must be reset before the next one.
    filled: usize,
}

/// One datagram of a [`RecvBatch`].
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub data: &'a [u8],
    /// None when the kernel gave no IP source (not expected on a UDP socket).
    pub source: Option<SocketAddr>,
    /// The datagram was longer than the slot; `data` is its start.
    pub truncated: bool,
}

impl RecvBatch {
    /// `count` (1..=[`MAX_BATCH`]) slots of `slot_size` bytes.
    pub fn new(count: usize, slot_size: usize) -> RecvBatch {
        let s = Slots::new(count, slot_size);
        let filled = s.capacity();
        RecvBatch { s, filled }
    }

    pub fn capacity(&self) -> usize {
        self.s.capacity()
    }

    /// One recvmmsg(2) for up to `max` datagrams (at most the capacity). Returns how many arrived; a
    /// timeout comes back as WouldBlock (or TimedOut), a signal as Interrupted.
    pub fn recv(&mut self, sock: &impl AsFd, max: usize, wait: Wait) -> io::Result<usize> {
        // recvmmsg overwrote the address lengths of the headers it filled last time.
        for h in self.s.hdrs[..self.filled].iter_mut() {
            h.msg_hdr.msg_namelen = NAME_LEN;
        }
        self.filled = 0;
        let max = max.min(self.s.capacity());
        let flags = match wait {
            Wait::ForFirst => libc::MSG_WAITFORONE,
            Wait::Never => libc::MSG_DONTWAIT,
        };
        let fd = sock.as_fd().as_raw_fd();
        // SAFETY: hdrs[..max] point at live iovecs, buffers and names owned by self, sized as declared.
        let n = unsafe { libc::recvmmsg(fd, self.s.hdrs.as_mut_ptr(), max as libc::c_uint, flags, ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// Datagram `i` (< the count the last [`recv`](RecvBatch::recv) returned).
    pub fn get(&self, i: usize) -> Datagram<'_> {
        let h = &self.s.hdrs[i];
        let len = (h.msg_len as usize).min(self.s.size);
        let start = i * self.s.size;
        Datagram {
            data: &self.s.bufs[start..start + len],
            source: sockaddr::read(&self.s.names[i], h.msg_hdr.msg_namelen),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }

    /// Sends datagrams `[0, n)` of the last receive back to their sources, as received, from the buffers they
    /// arrived in (the echo loop). Returns how many were sent; a datagram the kernel refuses with a
    /// [transient](is_transient) error is skipped rather than retried.
    pub fn echo_back(&mut self, sock: &impl AsFd, n: usize) -> io::Result<usize> {
        let n = n.min(self.filled);
        for i in 0..n {
            self.s.iovs[i].iov_len = (self.s.hdrs[i].msg_len as usize).min(self.s.size);
        }
        let fd = sock.as_fd().as_raw_fd();
        let mut off = 0;
        let mut sent = 0;
        let result = loop {
            if off >= n {
                break Ok(sent);
            }
            // SAFETY: hdrs[off..n] are valid and carry the source addresses filled in by recvmmsg.
            let r = unsafe { libc::sendmmsg(fd, self.s.hdrs.as_mut_ptr().add(off), (n - off) as libc::c_uint, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    _ if is_transient(&e) => off += 1,
                    _ => break Err(e),
                }
            } else {
                off += r as usize;
                sent += r as usize;
            }
        };
        for iov in self.s.iovs[..n].iter_mut() {
            iov.iov_len = self.s.size;
        }
        result
    }
}

/// Up to `capacity` datagrams to send, each written into its own slot of `slot_size` bytes.
pub struct SendBatch {
    s: Slots,
    len: usize,
}

/// What [`SendBatch::send_all`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    /// Datagrams the kernel refused (an unreachable destination, a full buffer); they were skipped.
    pub failed: usize,
}

impl SendBatch {
    /// `count` (1..=[`MAX_BATCH`]) slots of `slot_size` bytes.
    pub fn new(count: usize, slot_size: usize) -> SendBatch {
        SendBatch { s: Slots::new(count, slot_size), len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.s.capacity()
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.s.capacity()
    }

    /// Forgets every queued datagram.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The slot the next [`push`](SendBatch::push) queues, to write a datagram into; None when full. What is
    /// written stays there until pushed or overwritten, so a caller may also send it some other way.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.len * self.s.size;
        Some(&mut self.s.bufs[start..start + self.s.size])
    }

    /// Queues the first `len` bytes of the next slot for `dst`, or for the peer of a connected socket when
    /// `dst` is None. Returns false (and queues nothing) when the batch is full.
    pub fn push(&mut self, len: usize, dst: Option<SocketAddr>) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.len;
        self.s.iovs[i].iov_len = len.min(self.s.size);
        self.s.hdrs[i].msg_hdr.msg_namelen = match dst {
            Some(dst) => sockaddr::write(dst, &mut self.s.names[i]),
            None => 0,
        };
        self.len += 1;
        true
    }

    /// Copies `data` into the next slot and queues it (see [`push`](SendBatch::push)).
    pub fn push_copy(&mut self, data: &[u8], dst: Option<SocketAddr>) -> bool {
        let Some(slot) = self.next_slot() else { return false };
        let n = data.len().min(slot.len());
        slot[..n].copy_from_slice(&data[..n]);
        self.push(n, dst)
    }

    /// One sendmmsg(2) of the queued datagrams from index `from` on. Returns how many the kernel took (it
    /// may take fewer when its queue fills); the error of the datagram at `from` when it took none. Queued
    /// datagrams stay queued: the caller decides what to retry and when to [`clear`](SendBatch::clear).
    pub fn send_from(&mut self, sock: &impl AsFd, from: usize) -> io::Result<usize> {
        if from >= self.len {
            return Ok(0);
        }
        let fd = sock.as_fd().as_raw_fd();
        // SAFETY: hdrs[from..len] point into our own buffers with the lengths set by `push`.
        let r = unsafe { libc::sendmmsg(fd, self.s.hdrs.as_mut_ptr().add(from), (self.len - from) as libc::c_uint, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Sends every queued datagram, skipping one the kernel refuses, then clears the batch. Retries after a
    /// signal; bounded by the number of datagrams queued.
    pub fn send_all(&mut self, sock: &impl AsFd) -> Sent {
        let mut out = Sent::default();
        let mut at = 0;
        while at < self.len {
            match self.send_from(sock, at) {
                Ok(n) if n > 0 => {
                    out.sent += n;
                    at += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => {
                    out.failed += 1;
                    at += 1;
                }
            }
        }
        self.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn pair(ip: &str) -> Option<(UdpSocket, UdpSocket)> {
        let a = UdpSocket::bind((ip, 0)).ok()?;
        let b = UdpSocket::bind((ip, 0)).ok()?;
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        Some((a, b))
    }

    fn send_recv(ip: &str) {
        let Some((a, b)) = pair(ip) else {
            eprintln!("SKIP: no loopback for {ip}");
            return;
        };
        let (la, lb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut tx = SendBatch::new(8, 64);
        for i in 0..5u8 {
            let slot = tx.next_slot().unwrap();
            slot[..3].copy_from_slice(&[i, i, i]);
            assert!(tx.push(3 + usize::from(i), Some(lb)));
        }
        assert!(tx.push_copy(b"last", Some(lb)));
        assert_eq!(tx.send_all(&a), Sent { sent: 6, failed: 0 });
        assert!(tx.is_empty());

        let mut rx = RecvBatch::new(4, 16);
        let mut got = Vec::new();
        while got.len() < 6 {
            let n = rx.recv(&b, 4, Wait::ForFirst).unwrap();
            for i in 0..n {
                let d = rx.get(i);
                assert_eq!(d.source, Some(la));
                assert!(!d.truncated);
                got.push(d.data.to_vec());
            }
        }
        assert_eq!(got[0], [0, 0, 0]);
        assert_eq!(&got[4][..3], &[4, 4, 4]);
        assert_eq!(got[4].len(), 7);
        assert_eq!(got[5], b"last");
    }

    #[test]
    fn batch_round_trip_v4() {
        send_recv("127.0.0.1");
    }

    #[test]
    fn batch_round_trip_v6() {
        send_recv("::1");
    }

    #[test]
    fn truncation_flagged_and_echo_back() {
        let (a, b) = pair("127.0.0.1").unwrap();
        let lb = b.local_addr().unwrap();
        let mut rx = RecvBatch::new(4, 16);
        let mut buf = [0u8; 64];
        for (sent, echoed, truncated) in [(&[7u8; 40][..], &[7u8; 16][..], true), (b"hi", b"hi", false)] {
            a.send_to(sent, lb).unwrap();
            assert_eq!(rx.recv(&b, 4, Wait::ForFirst).unwrap(), 1);
            assert_eq!(rx.get(0).truncated, truncated);
            assert_eq!(rx.get(0).data, echoed);
            assert_eq!(rx.echo_back(&b, 1).unwrap(), 1);
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], echoed, "echoed as received");
        }
    }

    #[test]
    fn never_wait_on_an_empty_socket() {
        let (_a, b) = pair("127.0.0.1").unwrap();
        let mut rx = RecvBatch::new(2, 16);
        let e = rx.recv(&b, 2, Wait::Never).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn connected_socket_without_destinations() {
        let (a, b) = pair("127.0.0.1").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        let mut tx = SendBatch::new(2, 8);
        assert!(tx.push_copy(b"one", None));
        assert!(tx.push_copy(b"two", None));
        assert!(!tx.push_copy(b"three", None), "full");
        assert!(tx.next_slot().is_none());
        assert_eq!(tx.send_from(&a, 0).unwrap(), 2);
        let mut buf = [0u8; 8];
        assert_eq!(b.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
    }

    #[test]
    fn refused_datagrams_are_skipped() {
        // A connected socket to a closed port: the ICMP error fails a later send; send_all skips it.
        let (a, b) = pair("127.0.0.1").unwrap();
        let closed = b.local_addr().unwrap();
        drop(b);
        a.connect(closed).unwrap();
        a.send(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut tx = SendBatch::new(4, 8);
        for _ in 0..3 {
            tx.push_copy(b"y", None);
        }
        let out = tx.send_all(&a);
        assert_eq!(out.sent + out.failed, 3);
        assert!(out.failed >= 1, "{out:?}");
    }
}

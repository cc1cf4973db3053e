//! The UDP hot path: one blocking thread per (worker, local socket), recvmmsg → responder → sendmmsg.
//!
//! Per batch: one `recvmmsg` (blocks until at least one datagram, then takes what is queued, up to [`BATCH`]),
//! one clock read, the responder for each datagram into a preallocated output slot, one `sendmmsg` for every
//! answer leaving from this socket, and a relaxed publish of the counters. Nothing is allocated and no lock
//! is taken. Answers that must leave from another local socket (RFC 5780 CHANGE-REQUEST) are sent one by
//! one with `sendto` on that socket; they are rare.

use holepunch::net::{Received, Transmit};
use holepunch::server::{LocalSocket, Responder, SharedCounters, MAX_REQUEST_LEN};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 32;
/// Slot size: requests above MAX_REQUEST_LEN arrive with MSG_TRUNC and are dropped.
const SLOT: usize = MAX_REQUEST_LEN;
/// Datagram buffers of one worker (receive and send batches).
pub const WORKER_BUFFER_BYTES: usize = 2 * BATCH * SLOT;

/// Buffers and message headers for one direction, allocated once; the headers point into the boxed slices,
/// whose heap storage never moves.
struct Batch {
    bufs: Box<[u8]>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl Batch {
    fn new() -> Self {
        let mut b = Batch {
            bufs: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            // SAFETY: all-zero bytes are a valid value of these plain C structs.
            names: (0..BATCH).map(|_| unsafe { zeroed::<libc::sockaddr_storage>() }).collect(),
            iovs: (0..BATCH).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect(),
            hdrs: (0..BATCH).map(|_| unsafe { zeroed::<libc::mmsghdr>() }).collect(),
        };
        for i in 0..BATCH {
            b.iovs[i].iov_base = b.bufs[i * SLOT..].as_mut_ptr().cast();
            b.iovs[i].iov_len = SLOT;
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
        }
        b
    }

    fn slot(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * SLOT..(i + 1) * SLOT]
    }
}

/// Reads a kernel socket address.
fn read_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is large and aligned enough.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Writes a socket address for the kernel; returns its length.
fn write_sockaddr(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
            sin.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = 0;
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

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
}

impl Worker {
    /// Serves until the stop flag is set (noticed within the socket's receive timeout).
    pub fn run(mut self) {
        let Some(sock) = self.sockets[self.local.index()].as_ref() else {
            log::error!(target: "stund::udp", "no socket for {:?}", self.local);
            return;
        };
        let fd = sock.as_raw_fd();
        let mut rx = Batch::new();
        let mut tx = Batch::new();
        let mut last_error_log: Option<Instant> = None;

        let mut used = BATCH;
        while !self.stop.load(Ordering::Relaxed) {
            // recvmmsg overwrote the name lengths of the headers it filled last time.
            for h in rx.hdrs[..used].iter_mut() {
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
            used = 0;
            // SAFETY: every header points into `rx`'s live buffers, sized as declared.
            let n = unsafe {
                libc::recvmmsg(fd, rx.hdrs.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => continue,
                    _ => {
                        // Log at most once a second; back off briefly so a persistent error cannot spin a core.
                        if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                            log::warn!(target: "stund::udp", "receive on {:?} failed: {e}", self.local);
                            last_error_log = Some(Instant::now());
                        }
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
            }
            used = n as usize;
            let now = Instant::now();
            let mut m = 0;
            for i in 0..n as usize {
                let len = rx.hdrs[i].msg_len as usize;
                let flags = rx.hdrs[i].msg_hdr.msg_flags;
                let from = read_sockaddr(&rx.names[i]);
                let (Some(from), false) = (from, flags & libc::MSG_TRUNC != 0) else {
                    self.responder.counters_mut().dropped_malformed += 1;
                    continue;
                };
                let rxd = Received::udp(self.local_addr, from);
                let req = &rx.bufs[i * SLOT..i * SLOT + len.min(SLOT)];
                let out = &mut tx.bufs[m * SLOT..(m + 1) * SLOT];
                match self.responder.handle(now, rxd, req, out) {
                    Ok(Transmit { len, local, dst: to }) if local == self.local_addr => {
                        tx.iovs[m].iov_len = len;
                        tx.hdrs[m].msg_hdr.msg_namelen = if to == from {
                            // The usual case: back to the sender, whose address the kernel already wrote.
                            tx.names[m] = rx.names[i];
                            rx.hdrs[i].msg_hdr.msg_namelen
                        } else {
                            write_sockaddr(to, &mut tx.names[m])
                        };
                        m += 1;
                    }
                    Ok(Transmit { len, local, dst: to }) => {
                        let source = self.responder.config().local_socket(local);
                        let sent = match source.and_then(|s| self.sockets[s.index()].as_ref()) {
                            Some(other) => other.send_to(&tx.slot(m)[..len], to).is_ok(),
                            None => false,
                        };
                        if !sent {
                            self.responder.counters_mut().send_errors += 1;
                        }
                    }
                    Err(_) => {}
                }
            }
            let mut sent = 0;
            while sent < m {
                // SAFETY: headers sent..m point into `tx`'s buffers with lengths set above.
                let r = unsafe { libc::sendmmsg(fd, tx.hdrs[sent..].as_mut_ptr(), (m - sent) as u32, 0) };
                if r > 0 {
                    sent += r as usize;
                } else if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                } else {
                    // The message at `sent` failed (unreachable destination, full buffer): skip it.
                    self.responder.counters_mut().send_errors += 1;
                    sent += 1;
                }
            }
            self.shared.publish(self.responder.counters());
        }
        self.shared.publish(self.responder.counters());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["192.0.2.1:3478", "[2001:db8::1]:65535", "[fe80::1%3]:1", "0.0.0.0:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            // SAFETY: zeroed storage is valid.
            let mut s = unsafe { zeroed::<libc::sockaddr_storage>() };
            let len = write_sockaddr(addr, &mut s);
            assert!(len as usize <= size_of::<libc::sockaddr_storage>());
            assert_eq!(read_sockaddr(&s), Some(addr), "{a}");
        }
        // SAFETY: zeroed storage is valid; family 0 is not an IP family.
        let s = unsafe { zeroed::<libc::sockaddr_storage>() };
        assert_eq!(read_sockaddr(&s), None);
    }
}

//! Thin, allocation-free-per-call wrappers over recvmmsg/sendmmsg and the socket options the rig needs.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, RawFd};
use std::ptr;
use std::time::Duration;

/// Linux caps one recvmmsg/sendmmsg call at UIO_MAXIOV messages.
pub const MAX_BATCH: usize = 1024;

/// Refuses anything but 127.0.0.0/8 and ::1: this tool must never load a host other than this one.
pub fn require_loopback(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        anyhow::bail!("{what} {addr} is not a loopback address: stunload only works on 127.0.0.0/8 and ::1")
    }
}

/// `count` receive slots of `size` bytes each, with their iovecs and (optionally) source addresses, wired
/// together once so that a receive is a single syscall with no setup beyond resetting lengths.
pub struct RecvBatch {
    bufs: Vec<u8>,
    size: usize,
    // Boxed slices never move or grow, so the raw pointers between them stay valid.
    iovs: Box<[libc::iovec]>,
    /// Storage that `msg_name` of each header points to.
    _names: Box<[libc::sockaddr_storage]>,
    hdrs: Box<[libc::mmsghdr]>,
    with_names: bool,
}

// SAFETY: the raw pointers inside only point into heap memory owned by the same RecvBatch, which moves
// with it; nothing is shared with another thread.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(count: usize, size: usize, with_names: bool) -> Self {
        let count = count.clamp(1, MAX_BATCH);
        let mut bufs = vec![0u8; count * size];
        let mut iovs: Box<[libc::iovec]> = (0..count)
            .map(|i| libc::iovec {
                // SAFETY: i * size is within the buffer of count * size bytes.
                iov_base: unsafe { bufs.as_mut_ptr().add(i * size) }.cast(),
                iov_len: size,
            })
            .collect();
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all-zero is a valid value.
        let mut names: Box<[libc::sockaddr_storage]> = (0..count).map(|_| unsafe { mem::zeroed() }).collect();
        let hdrs: Box<[libc::mmsghdr]> = (0..count)
            .map(|i| {
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                if with_names {
                    h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                }
                h
            })
            .collect();
        RecvBatch { bufs, size, iovs, _names: names, hdrs, with_names }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// One recvmmsg(2) call for up to `max` datagrams. Returns how many arrived; WouldBlock/TimedOut
    /// errors are passed through for the caller to treat as "nothing yet".
    pub fn recv(&mut self, fd: RawFd, max: usize, flags: libc::c_int) -> io::Result<usize> {
        let max = max.min(self.hdrs.len());
        for i in 0..max {
            self.iovs[i].iov_len = self.size;
            if self.with_names {
                self.hdrs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
            self.hdrs[i].msg_hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: hdrs[..max] point at live iovecs, buffers and names owned by self.
        let n = unsafe { libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), max as libc::c_uint, flags, ptr::null_mut()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Datagram `i` of the last receive and whether the kernel truncated it.
    pub fn get(&self, i: usize) -> (&[u8], bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.size);
        let start = i * self.size;
        (&self.bufs[start..start + len], h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }

    /// Sends datagrams [0, n) of the last receive back to their sources, as received: the echo loop.
    /// Returns how many were sent; a datagram the kernel refuses is skipped rather than retried forever.
    pub fn echo_back(&mut self, fd: RawFd, n: usize) -> io::Result<usize> {
        for i in 0..n {
            self.iovs[i].iov_len = (self.hdrs[i].msg_len as usize).min(self.size);
        }
        let mut off = 0;
        let mut sent = 0;
        while off < n {
            // SAFETY: hdrs[off..n] are valid and carry the source names filled in by recvmmsg.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr().add(off), (n - off) as libc::c_uint, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    _ if is_transient(&e) => off += 1,
                    _ => return Err(e),
                }
            } else {
                off += r as usize;
                sent += r as usize;
            }
        }
        Ok(sent)
    }
}

/// Errors a datagram socket may report for one datagram without being broken (a full queue, an ICMP
/// error from an earlier send to a closed port).
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EPERM)
    )
}

/// Up to `capacity` outgoing datagrams from caller-owned buffers on a connected socket.
pub struct SendBatch {
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the iovecs point into the batch's own header array or at buffers borrowed only for the duration
// of one `send` call; they are never dereferenced outside it.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_BATCH);
        let mut iovs: Box<[libc::iovec]> =
            (0..capacity).map(|_| libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }).collect();
        let hdrs = (0..capacity)
            .map(|i| {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        SendBatch { iovs, hdrs }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Sends `bufs` (at most `capacity`) with one sendmmsg(2); returns how many the kernel took.
    pub fn send<'a>(&mut self, fd: RawFd, bufs: impl Iterator<Item = &'a [u8]>) -> io::Result<usize> {
        let mut n = 0;
        for (iov, b) in self.iovs.iter_mut().zip(bufs) {
            iov.iov_base = b.as_ptr() as *mut libc::c_void;
            iov.iov_len = b.len();
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: hdrs[..n] point at iovecs that reference buffers borrowed for the duration of this call.
        let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; we write a sockaddr_in/in6 that fits in it.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            unsafe { ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            unsafe { ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A UDP socket bound to `addr`, with SO_REUSEPORT when `reuse_port` so several threads can each own a
/// socket on the same port (the kernel spreads flows across them by 4-tuple hash).
pub fn bind_udp(addr: SocketAddr, reuse_port: bool, recv_timeout: Option<Duration>) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2) call; the fd is owned by the UdpSocket below or closed on error.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    if reuse_port {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if addr.is_ipv6() {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    // Bigger queues absorb bursts of a whole in-flight window; best effort (capped by rmem_max).
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 21);
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 1 << 21);
    let (ss, len) = sockaddr_of(addr);
    // SAFETY: ss holds a valid sockaddr of length len.
    if unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    sock.set_read_timeout(recv_timeout)?;
    Ok(sock)
}

/// poll(2) for readability on `fds`, waiting at most `timeout_ms`.
pub fn poll_readable(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: fds is a valid slice of pollfd.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        Err(e)
    } else {
        Ok(r as usize)
    }
}

//! ICMP errors for unconnected UDP sockets (RFC 1122 §3.2.2.1, RFC 4443 §3.1). Linux reports an ICMP error to an unconnected UDP socket only
//! when IP_RECVERR (IPv4) or IPV6_RECVERR (IPv6) is set (ip(7), ipv6(7)); the error then waits in the socket's
//! error queue with the destination of the datagram that caused it (msg_name) and the ICMP type and code
//! (struct sock_extended_err). Only "port unreachable" is passed on to the engine: it is a hard error from
//! the destination (RFC 1122 §3.2.2.1), while host or network unreachable can be transient.
//! Elsewhere this is a no-op and silent servers are found by the retransmission schedule alone.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

#[cfg(target_os = "linux")]
use super::sockaddr;

/// One entry of a socket's error queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// ICMP destination unreachable / port unreachable (ICMPv6 code 4): nothing listens on `dest`.
    PortUnreachable { dest: SocketAddr, offender: Option<IpAddr> },
    /// Anything else (another ICMP type or code, or a local error); logged, not acted on.
    Other { dest: Option<SocketAddr>, origin: u8, kind: u8, code: u8, errno: u32 },
}

/// Ask the kernel to queue ICMP errors on `sock` (IP_RECVERR / IPV6_RECVERR).
#[cfg(target_os = "linux")]
pub fn enable(sock: &UdpSocket) -> io::Result<()> {
    enable_fd(sock.as_fd(), sock.local_addr()?)
}

#[cfg(target_os = "linux")]
pub(crate) fn enable_fd(sock: BorrowedFd<'_>, local: SocketAddr) -> io::Result<()> {
    if local.is_ipv4() {
        set_int(sock, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
    } else {
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
    }
}

#[cfg(target_os = "linux")]
fn set_int(sock: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn enable(_sock: &UdpSocket) -> io::Result<()> {
    Ok(())
}

/// Read everything queued in `sock`'s error queue (bounded, never blocks). Reading the queue also clears
/// the socket's pending error, which would otherwise fail its next send or receive.
#[cfg(target_os = "linux")]
pub fn drain(sock: &UdpSocket) -> Vec<IcmpError> {
    drain_fd(sock.as_fd())
}

#[cfg(target_os = "linux")]
pub(crate) fn drain_fd(sock: BorrowedFd<'_>) -> Vec<IcmpError> {
    let fd = sock.as_raw_fd();
    let mut out = Vec::new();
    // The queue holds one entry per ICMP error; a few dozen at most in a run, so a bound costs nothing.
    for _ in 0..64 {
        // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // The offending datagram's start; not needed beyond being read out.
        let mut data = [0u8; 64];
        // u64 elements: cmsg headers need their alignment.
        let mut control = [0u64; 64];
        let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
        // SAFETY: see above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at buffers that live across the call, with their true sizes.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            break; // EAGAIN: the queue is empty
        }
        let dest = sockaddr::read(&name, msg.msg_namelen);
        // SAFETY: walking the control buffer the kernel filled, with the libc CMSG macros.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: non-null cmsg inside the control buffer.
            let hdr = unsafe { std::ptr::read_unaligned(cmsg) };
            let is_err = (hdr.cmsg_level == libc::IPPROTO_IP && hdr.cmsg_type == libc::IP_RECVERR)
                || (hdr.cmsg_level == libc::IPPROTO_IPV6 && hdr.cmsg_type == libc::IPV6_RECVERR);
            let ee_len = std::mem::size_of::<libc::sock_extended_err>();
            // SAFETY: CMSG_LEN only computes a length.
            if is_err && hdr.cmsg_len as usize >= unsafe { libc::CMSG_LEN(ee_len as u32) } as usize {
                // SAFETY: the length check above covers the struct.
                let ee_ptr = unsafe { libc::CMSG_DATA(cmsg) } as *const libc::sock_extended_err;
                let ee = unsafe { std::ptr::read_unaligned(ee_ptr) };
                // SO_EE_OFFENDER follows the struct; only read it if the cmsg is long enough.
                // SAFETY: CMSG_LEN only computes a length.
                let room = hdr.cmsg_len as usize - unsafe { libc::CMSG_LEN(ee_len as u32) } as usize;
                let offender = if room >= std::mem::size_of::<libc::sockaddr_in>() {
                    // SAFETY: `room` bytes follow the struct inside the cmsg.
                    unsafe { sockaddr::read_raw(libc::SO_EE_OFFENDER(ee_ptr), room) }.map(|a| a.ip())
                } else {
                    None
                };
                out.push(classify(dest, offender, &ee));
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
    }
    out
}

#[cfg(not(target_os = "linux"))]
pub fn drain(_sock: &UdpSocket) -> Vec<IcmpError> {
    Vec::new()
}

#[cfg(target_os = "linux")]
fn classify(dest: Option<SocketAddr>, offender: Option<IpAddr>, ee: &libc::sock_extended_err) -> IcmpError {
    // ICMP type 3 code 3 (RFC 792); ICMPv6 type 1 code 4 (RFC 4443 §3.1).
    let port_unreachable = (ee.ee_origin == libc::SO_EE_ORIGIN_ICMP && ee.ee_type == 3 && ee.ee_code == 3)
        || (ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6 && ee.ee_type == 1 && ee.ee_code == 4);
    match dest {
        Some(dest) if port_unreachable => IcmpError::PortUnreachable { dest, offender },
        _ => IcmpError::Other { dest, origin: ee.ee_origin, kind: ee.ee_type, code: ee.ee_code, errno: ee.ee_errno },
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Loopback only: a port nothing listens on answers with ICMP port unreachable.
    fn closed_port(ip: &str) -> SocketAddr {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        let a = s.local_addr().unwrap();
        drop(s);
        a
    }

    fn wait_for(sock: &UdpSocket, limit: Duration) -> Vec<IcmpError> {
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            // The pending error surfaces as a receive error first; the queue then holds the details.
            let _ = sock.recv_from(&mut buf);
            let got = drain(sock);
            if !got.is_empty() {
                return got;
            }
        }
        Vec::new()
    }

    #[test]
    fn port_unreachable_on_loopback_v4() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&sock).unwrap();
        let dest = closed_port("127.0.0.1");
        sock.send_to(b"hello", dest).unwrap();
        let got = wait_for(&sock, Duration::from_secs(2));
        assert_eq!(got, vec![IcmpError::PortUnreachable { dest, offender: Some(dest.ip()) }]);
    }

    #[test]
    fn port_unreachable_on_loopback_v6() {
        let Ok(sock) = UdpSocket::bind("[::1]:0") else {
            eprintln!("SKIP: no IPv6 loopback");
            return;
        };
        enable(&sock).unwrap();
        let dest = closed_port("::1");
        sock.send_to(b"hello", dest).unwrap();
        let got = wait_for(&sock, Duration::from_secs(2));
        assert_eq!(got, vec![IcmpError::PortUnreachable { dest, offender: Some(dest.ip()) }]);
    }

    #[test]
    fn nothing_without_recverr() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(b"hello", closed_port("127.0.0.1")).unwrap();
        assert!(wait_for(&sock, Duration::from_millis(300)).is_empty());
    }
}

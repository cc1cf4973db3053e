//! One datagram with its own IP TTL (hop limit): a [`Transmit`](crate::net::Transmit) whose `ttl` is set, such
//! as punching's primer, which must open our NAT's mapping and die before the peer's router
//! (docs/punchd.md, "Permissive routers").
//!
//! Linux: the TTL travels as ancillary data of that one `sendmsg` (IP_TTL, RFC 3542's IPV6_HOPLIMIT), so no
//! other datagram on the socket (the tunnel's, sent from other threads) is touched. Elsewhere the socket's
//! TTL is lowered for the send and put back; a datagram another thread sends in between dies with it, which
//! costs the tunnel one retransmitted packet at worst, once per punch.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Sends `data` to `dst` from `sock` with IP TTL (or IPv6 hop limit) `ttl`.
#[cfg(target_os = "linux")]
pub fn send_with_ttl(sock: &UdpSocket, data: &[u8], dst: SocketAddr, ttl: u8) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // An IPv4 destination from an IPv6 socket is IPv4-mapped: the IPv6 option applies to it.
    let v6 = sock.local_addr()?.is_ipv6();
    let dst = match (dst, v6) {
        (SocketAddr::V4(v4), true) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        _ => dst,
    };
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let name_len = super::sockaddr::write(dst, &mut name);
    // An IPv4-mapped destination leaves by the IPv4 path, which reads IP_TTL only.
    let ipv4_out = match dst {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(d) => d.ip().to_ipv4_mapped().is_some(),
    };
    let (level, kind) =
        if ipv4_out { (libc::IPPROTO_IP, libc::IP_TTL) } else { (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) };
    let value = libc::c_int::from(ttl);
    // Room for one cmsghdr with an int, aligned as CMSG_SPACE wants (u64 alignment covers cmsghdr's).
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: zeroed msghdr is valid; every pointer set below points at a live local of the stated size.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = name_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control holds `space` bytes, enough for the one header CMSG_FIRSTHDR returns and its int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), value);
    }
    // SAFETY: a valid socket and a msghdr whose buffers outlive the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends `data` to `dst` from `sock` with IP TTL `ttl` (IPv4; an IPv6 socket sends with its own hop limit,
/// which std cannot change: the datagram is not sent and 0 is returned).
#[cfg(not(target_os = "linux"))]
pub fn send_with_ttl(sock: &UdpSocket, data: &[u8], dst: SocketAddr, ttl: u8) -> io::Result<usize> {
    if sock.local_addr()?.is_ipv6() {
        return Ok(0);
    }
    let old = sock.ttl()?;
    sock.set_ttl(u32::from(ttl))?;
    let sent = sock.send_to(data, dst);
    sock.set_ttl(old)?;
    sent
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The TTL a datagram arrived with, read with IP_RECVTTL (IPV6_RECVHOPLIMIT).
    fn received_ttl(sock: &UdpSocket) -> u8 {
        use std::os::fd::AsRawFd;
        let v6 = sock.local_addr().unwrap().is_ipv6();
        let (level, opt, kind) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, libc::IPV6_HOPLIMIT)
        } else {
            (libc::IPPROTO_IP, libc::IP_RECVTTL, libc::IP_TTL)
        };
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a live int.
        let r = unsafe { libc::setsockopt(sock.as_raw_fd(), level, opt, (&on as *const libc::c_int).cast(), 4) };
        assert_eq!(r, 0);
        let mut buf = [0u8; 64];
        let mut control = [0u64; 8];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: pointers to live locals of the stated sizes.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: as above; the socket has a read timeout.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        assert!(n > 0, "{}", io::Error::last_os_error());
        // SAFETY: walking the control data recvmsg filled.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == level && (*c).cmsg_type == kind {
                    return std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) as u8;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        panic!("no TTL in the control data");
    }

    fn check(bind: &str) {
        let rx = UdpSocket::bind(bind).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind(bind).unwrap();
        let to = rx.local_addr().unwrap();
        assert_eq!(send_with_ttl(&tx, b"primer", to, 3).unwrap(), 6);
        assert_eq!(received_ttl(&rx), 3, "the datagram carried its own TTL");
        tx.send_to(b"plain", to).unwrap();
        assert_ne!(received_ttl(&rx), 3, "the socket's own TTL is untouched");
    }

    #[test]
    fn one_datagram_carries_its_own_ttl_v4() {
        check("127.0.0.1:0");
    }

    #[test]
    fn one_datagram_carries_its_own_hop_limit_v6() {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("SKIP: no IPv6 loopback");
            return;
        }
        check("[::1]:0");
    }

    #[test]
    fn an_ipv4_destination_from_a_dual_stack_socket() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let Ok(tx) = UdpSocket::bind("[::]:0") else { return };
        assert_eq!(send_with_ttl(&tx, b"primer", rx.local_addr().unwrap(), 2).unwrap(), 6);
        assert_eq!(received_ttl(&rx), 2);
    }
}

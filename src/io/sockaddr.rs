//! Socket addresses to and from the kernel's `sockaddr_in` / `sockaddr_in6` (ip(7), ipv6(7)), for the
//! system calls std does not wrap (recvmmsg, sendmmsg, the error queue).

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Reads a kernel socket address of `len` bytes; None for other families or a short length.
pub(crate) fn read(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(s.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is large and aligned enough.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Reads a kernel socket address from a raw pointer (inside a control message); None as for [`read`].
///
/// # Safety
/// `sa` must be null or point at `len` readable bytes.
pub(crate) unsafe fn read_raw(sa: *const libc::sockaddr, len: usize) -> Option<SocketAddr> {
    if sa.is_null() || len < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: zeroed storage is valid; we copy at most its size from `len` readable bytes.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = len.min(size_of::<libc::sockaddr_storage>());
    // SAFETY: both regions are valid for `n` bytes and do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(sa.cast::<u8>(), (&mut s as *mut libc::sockaddr_storage).cast(), n) };
    read(&s, n as libc::socklen_t)
}

/// Writes a socket address for the kernel; returns its length.
pub(crate) fn write(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
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
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::zeroed;

    #[test]
    fn round_trip() {
        for a in ["192.0.2.1:3478", "[2001:db8::1]:65535", "[fe80::1%3]:1", "0.0.0.0:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            // SAFETY: zeroed storage is valid.
            let mut s = unsafe { zeroed::<libc::sockaddr_storage>() };
            let len = write(addr, &mut s);
            assert!(len as usize <= size_of::<libc::sockaddr_storage>());
            assert_eq!(read(&s, len), Some(addr), "{a}");
            // SAFETY: `s` is readable for its whole size.
            let raw = unsafe { read_raw((&s as *const libc::sockaddr_storage).cast(), len as usize) };
            assert_eq!(raw, Some(addr), "{a}");
            assert_eq!(read(&s, len - 1), None, "short length");
        }
        // SAFETY: zeroed storage is valid; family 0 is not an IP family.
        let s = unsafe { zeroed::<libc::sockaddr_storage>() };
        assert_eq!(read(&s, size_of::<libc::sockaddr_storage>() as libc::socklen_t), None);
    }
}

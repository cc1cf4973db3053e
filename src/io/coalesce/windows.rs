//! Windows: UDP Segmentation Offload (WSASendMsg with UDP_SEND_MSG_SIZE, Windows 10 2004 and later) and UDP
//! Receive Offload (UDP_RECV_MAX_COALESCED_SIZE and the UDP_COALESCED_INFO control message), through
//! quinn-udp (docs/dependencies.md). Untested on real Windows; under Wine both are refused and the callers
//! fall back (docs/windows.md, "Tunnel data path").

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::windows::io::AsRawSocket;
use std::sync::OnceLock;
use std::time::Duration;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

/// quinn-udp's state, made once on a loopback probe socket rather than on ours: `UdpSocketState::new`
/// switches the socket it is given to non-blocking and sets don't-fragment, which the shared punching socket
/// (blocking, with a read timeout, used by the driver's threads) must not get. On Windows the state holds
/// nothing about a socket (only when it last logged), so it serves every socket. `None` where the system
/// lacks WSARecvMsg or refuses the probe's options (Wine).
fn state() -> Option<&'static UdpSocketState> {
    static STATE: OnceLock<Option<UdpSocketState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
            match UdpSocketState::new((&probe).into()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::info!(target: "holepunch::io", "no UDP offloads on this system ({e}): one datagram per call");
                    None
                }
            }
        })
        .as_ref()
}

/// 1 when the system has no segmentation offload (before Windows 10 2004, Wine).
pub fn max_segments() -> usize {
    state().map_or(1, UdpSocketState::max_gso_segments)
}

pub fn send_segments(socket: &UdpSocket, dst: SocketAddr, data: &[u8], segment_size: usize) -> io::Result<()> {
    let state = state().ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
    let transmit =
        Transmit { destination: dst, ecn: None, contents: data, segment_size: Some(segment_size), src_ip: None };
    state.try_send(socket.into(), &transmit)
}

/// Asks the system to coalesce received datagrams on `socket` (up to 64 KiB per receive); an error when it
/// cannot (older Windows, Wine).
pub fn enable_receive_coalescing(socket: &UdpSocket) -> io::Result<()> {
    let state = state().ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
    state.set_gro(socket.into(), true)
}

pub fn disable_receive_coalescing(socket: &UdpSocket) {
    if let Some(state) = state() {
        let _ = state.set_gro(socket.into(), false);
    }
}

/// One receive into `buf`: (bytes, segment size, source). The segment size equals the length for a receive
/// of one datagram. Waits at most `wait` for a datagram (then `TimedOut`), whatever the socket's own read
/// timeout does to `WSARecvMsg`.
pub fn recv(socket: &UdpSocket, buf: &mut [u8], wait: Duration) -> io::Result<(usize, usize, SocketAddr)> {
    let state = state().ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
    if !readable(socket, wait)? {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    let mut meta = [RecvMeta::default()];
    state.recv(socket.into(), &mut [IoSliceMut::new(buf)], &mut meta)?;
    Ok((meta[0].len, meta[0].stride, meta[0].addr))
}

/// Whether `socket` has a datagram (or an error) to receive within `wait`.
fn readable(socket: &UdpSocket, wait: Duration) -> io::Result<bool> {
    use windows_sys::Win32::Networking::WinSock::{WSAGetLastError, WSAPoll, POLLRDNORM, WSAPOLLFD};
    let mut fd = WSAPOLLFD { fd: socket.as_raw_socket() as usize, events: POLLRDNORM, revents: 0 };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid WSAPOLLFD, alive for the call.
    let n = unsafe { WSAPoll(&mut fd, 1, ms) };
    if n < 0 {
        // SAFETY: no arguments; reads this thread's last Winsock error.
        return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
    }
    Ok(n > 0)
}

//! The tokio driver: runs any [`Engine`] over one or several `tokio::net::UdpSocket`s inside a task
//! (docs/io.md, "Drivers"). The same loop as the blocking driver, awaiting instead of blocking.
//!
//! The future it returns can be dropped at any await point (in a `select!` with a shutdown signal, say):
//! it holds nothing but borrows, and the engine stays consistent, so a stop condition is the caller's
//! `select!`, and only a deadline is built in. On Linux the sockets report ICMP errors (IP_RECVERR, see
//! `io::icmp`) and a port unreachable goes to [`Engine::handle_unreachable`].

use super::driver::{no_socket, socket_for, Exit, Notice, DEFAULT_WAKE, RECV_BUF, SEND_BUF};
use crate::net::{Engine, Received};
use ::tokio::io::{Interest, ReadBuf, Ready};
use ::tokio::net::UdpSocket;
use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

/// Runs engines over a set of tokio sockets (see the module docs).
pub struct Driver {
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    deadline: Option<Instant>,
}

/// What one wait brought.
enum Input {
    Datagram {
        socket: usize,
        from: SocketAddr,
        len: usize,
    },
    Error {
        socket: usize,
        error: io::Error,
    },
    /// The socket's error queue has entries (an ICMP report).
    Queued {
        socket: usize,
    },
    Timeout,
}

impl Driver {
    /// A driver over `sockets`, in the order given. Asks each for ICMP error reports where the system has
    /// them (best effort).
    pub fn new(sockets: Vec<UdpSocket>) -> io::Result<Driver> {
        let locals = sockets.iter().map(UdpSocket::local_addr).collect::<io::Result<Vec<_>>>()?;
        #[cfg(target_os = "linux")]
        for (s, l) in sockets.iter().zip(&locals) {
            use std::os::fd::AsFd;
            if let Err(e) = super::icmp::enable_fd(s.as_fd(), *l) {
                log::debug!(target: "holepunch::io", "{l}: ICMP error reports not available ({e})");
            }
        }
        Ok(Driver { sockets, locals, deadline: None })
    }

    /// A driver over std sockets, made non-blocking and registered with the current tokio runtime.
    pub fn from_std(sockets: Vec<std::net::UdpSocket>) -> io::Result<Driver> {
        let sockets = sockets
            .into_iter()
            .map(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Driver::new(sockets)
    }

    /// The local address of each socket, in order: what the engine names as `Transmit::local`.
    pub fn locals(&self) -> &[SocketAddr] {
        &self.locals
    }

    pub fn sockets(&self) -> &[UdpSocket] {
        &self.sockets
    }

    /// `run` returns [`Exit::Deadline`] once `at` has passed.
    pub fn deadline(mut self, at: Instant) -> Driver {
        self.deadline = Some(at);
        self
    }

    /// Runs `engine` until `on` breaks or the deadline passes. `on` hears every event and every failed send.
    /// Errors are the driver's own, never the network's. It never returns [`Exit::Stopped`].
    pub async fn run<E: Engine, T>(
        &self,
        engine: &mut E,
        mut on: impl FnMut(Notice<E::Event>) -> ControlFlow<T>,
    ) -> io::Result<Exit<T>> {
        let mut out = [0u8; SEND_BUF];
        let mut inbuf = [0u8; RECV_BUF];
        let mut unreachable: Vec<(usize, SocketAddr)> = Vec::new();
        let mut first = 0;
        // tokio wakes a receive for readability only, never for a queued error: one wait for the error
        // readiness of each socket, made anew after it fires (so only an ICMP report allocates).
        type ErrorWait<'a> = Option<Pin<Box<dyn Future<Output = io::Result<Ready>> + Send + 'a>>>;
        let mut error_waits: Vec<ErrorWait<'_>> = self.sockets.iter().map(|_| None).collect();
        loop {
            for (i, dst) in unreachable.drain(..) {
                engine.handle_unreachable(Instant::now(), self.locals[i], dst);
            }
            while let Some(t) = engine.poll_transmit(&mut out) {
                let Some(i) = socket_for(&self.locals, t.local) else {
                    if let ControlFlow::Break(v) = on(Notice::SendFailed { transmit: t, error: no_socket(t.local) }) {
                        return Ok(Exit::Done(v));
                    }
                    continue;
                };
                let data = &out[..t.len.min(out.len())];
                if let Some(ttl) = t.ttl {
                    // Rare (a punching primer): the socket's TTL for one send, IPv4 only (see `send_with_ttl`).
                    let sock = &self.sockets[i];
                    if let (Ok(old), true) = (sock.ttl(), t.dst.is_ipv4()) {
                        if sock.set_ttl(u32::from(ttl)).is_ok() {
                            let _ = sock.send_to(data, t.dst).await;
                            let _ = sock.set_ttl(old);
                        }
                    }
                    continue;
                }
                let mut sent = self.sockets[i].send_to(data, t.dst).await;
                if sent.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused) {
                    // A queued ICMP error failed this send (see the blocking driver); clear it and retry.
                    self.take_unreachable(i, &mut unreachable);
                    sent = self.sockets[i].send_to(data, t.dst).await;
                }
                if let Err(error) = sent {
                    log::debug!(target: "holepunch::io", "sending to {} from {} failed: {error}", t.dst, t.local);
                    if let ControlFlow::Break(v) = on(Notice::SendFailed { transmit: t, error }) {
                        return Ok(Exit::Done(v));
                    }
                }
            }
            if !unreachable.is_empty() {
                continue;
            }
            while let Some(ev) = engine.poll_event() {
                if let ControlFlow::Break(v) = on(Notice::Event(ev)) {
                    return Ok(Exit::Done(v));
                }
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Ok(Exit::Deadline);
            }
            let mut wake = engine.poll_timeout().unwrap_or(now + DEFAULT_WAKE);
            if let Some(d) = self.deadline {
                wake = wake.min(d);
            }
            let sleep = ::tokio::time::sleep_until(::tokio::time::Instant::from_std(wake));
            let mut sleep = std::pin::pin!(sleep);
            // Start with another socket each time, so a busy one cannot starve the rest.
            first = (first + 1) % self.sockets.len().max(1);
            for (w, sock) in error_waits.iter_mut().zip(&self.sockets) {
                if w.is_none() {
                    *w = Some(Box::pin(sock.ready(Interest::ERROR)));
                }
            }
            let input = poll_fn(|cx| {
                let n = self.sockets.len();
                for k in 0..n {
                    let socket = (first + k) % n;
                    let mut rb = ReadBuf::new(&mut inbuf);
                    match self.sockets[socket].poll_recv_from(cx, &mut rb) {
                        Poll::Ready(Ok(from)) => {
                            return Poll::Ready(Input::Datagram { socket, from, len: rb.filled().len() })
                        }
                        Poll::Ready(Err(error)) => return Poll::Ready(Input::Error { socket, error }),
                        Poll::Pending => {}
                    }
                }
                for (socket, w) in error_waits.iter_mut().enumerate() {
                    if let Some(f) = w {
                        if f.as_mut().poll(cx).is_ready() {
                            *w = None;
                            return Poll::Ready(Input::Queued { socket });
                        }
                    }
                }
                sleep.as_mut().poll(cx).map(|()| Input::Timeout)
            })
            .await;
            match input {
                Input::Datagram { socket, from, len } => {
                    let received = Received::udp(self.locals[socket], from);
                    if !engine.handle_input(Instant::now(), received, &inbuf[..len]) {
                        log::debug!(target: "holepunch::io", "dropped {len}-byte datagram from {from}");
                    }
                }
                Input::Error { socket, error } => {
                    log::debug!(target: "holepunch::io", "socket {socket}: receive error: {error}");
                    self.take_unreachable(socket, &mut unreachable);
                }
                Input::Queued { socket } => {
                    // Reading the queue inside try_io clears the error readiness, so the next wait sleeps.
                    let _ = self.sockets[socket].try_io(Interest::ERROR, || {
                        self.take_unreachable(socket, &mut unreachable);
                        Err::<(), _>(ErrorKind::WouldBlock.into())
                    });
                }
                Input::Timeout => {}
            }
            engine.handle_timeout(Instant::now());
        }
    }

    /// Drains socket `i`'s error queue into `out` (port unreachable only). A no-op off Linux.
    fn take_unreachable(&self, i: usize, out: &mut Vec<(usize, SocketAddr)>) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsFd;
            for err in super::icmp::drain_fd(self.sockets[i].as_fd()) {
                match err {
                    super::icmp::IcmpError::PortUnreachable { dest, .. } => out.push((i, dest)),
                    other => log::debug!(target: "holepunch::io", "socket {i}: ignoring {other:?}"),
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (i, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::testing::{closed_port, pong_server, Ping, PingEvent};
    use super::*;
    use std::time::Duration;

    fn std_bind() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    #[::tokio::test(flavor = "current_thread")]
    async fn pings_over_two_sockets() {
        let server = std_bind();
        let peer = server.local_addr().unwrap();
        let answered = pong_server(server, 3);
        let driver =
            Driver::from_std(vec![std_bind(), std_bind()]).unwrap().deadline(Instant::now() + Duration::from_secs(5));
        let second = driver.locals()[1];
        let mut ping = Ping::new(second, peer, 3, Instant::now());
        let mut pongs = Vec::new();
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(PingEvent::Done) => ControlFlow::Break(()),
                Notice::Event(e) => {
                    pongs.push(e);
                    ControlFlow::Continue(())
                }
                Notice::SendFailed { error, .. } => panic!("{error}"),
            })
            .await
            .unwrap();
        assert_eq!(exit, Exit::Done(()));
        let want: Vec<_> = (0..3).map(|seq| PingEvent::Pong { local: second, from: peer, seq }).collect();
        assert_eq!(pongs, want);
        assert_eq!(answered.join().unwrap(), 3);
    }

    #[::tokio::test(flavor = "current_thread")]
    async fn deadline_and_cancellation() {
        let driver = Driver::from_std(vec![std_bind()]).unwrap().deadline(Instant::now() + Duration::from_millis(100));
        let mut ping = Ping::new(driver.locals()[0], closed_port(), 0, Instant::now());
        ping.next = None;
        let exit = driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())).await.unwrap();
        assert_eq!(exit, Exit::Deadline);

        // Without a deadline, the caller stops it by dropping the future.
        let driver = Driver::from_std(vec![std_bind()]).unwrap();
        let stopped = ::tokio::time::timeout(
            Duration::from_millis(100),
            driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())),
        )
        .await;
        assert!(stopped.is_err(), "still running when cancelled");
    }

    #[cfg(target_os = "linux")]
    #[::tokio::test(flavor = "current_thread")]
    async fn icmp_port_unreachable_reaches_the_engine() {
        let driver = Driver::from_std(vec![std_bind()]).unwrap().deadline(Instant::now() + Duration::from_secs(5));
        let local = driver.locals()[0];
        let dst = closed_port();
        let mut ping = Ping::new(local, dst, 1, Instant::now());
        let exit = driver
            .run(&mut ping, |n| match n {
                Notice::Event(e) => ControlFlow::Break(e),
                Notice::SendFailed { .. } => ControlFlow::Continue(()),
            })
            .await
            .unwrap();
        assert_eq!(exit, Exit::Done(PingEvent::Unreachable { local, dst }));
    }

    /// After an ICMP report the error readiness is cleared: the driver sleeps instead of spinning.
    #[cfg(target_os = "linux")]
    #[::tokio::test(flavor = "current_thread")]
    async fn no_spinning_after_an_icmp_report() {
        let driver = Driver::from_std(vec![std_bind()]).unwrap().deadline(Instant::now() + Duration::from_millis(300));
        let mut ping = Ping::new(driver.locals()[0], closed_port(), 1, Instant::now());
        let exit = driver.run(&mut ping, |_| ControlFlow::<()>::Continue(())).await.unwrap();
        assert_eq!(exit, Exit::Deadline);
        assert!(ping.wakeups < 20, "{} wake-ups", ping.wakeups);
    }
}

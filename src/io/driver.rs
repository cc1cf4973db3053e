//! What the blocking and the tokio drivers share: how they report to their caller and how a transmit finds
//! its socket (docs/io.md, "Drivers").

use crate::net::Transmit;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest the largest datagram a driver receives may be; longer ones are cut and then usually refused by
/// the engine's parser. 2048 bytes cover every message of this library with a margin over a 1500-byte MTU.
pub const RECV_BUF: usize = 2048;

/// Longest a datagram an engine writes may be.
pub const SEND_BUF: usize = 1500;

/// Longest a driver waits without looking at its stop condition and deadline.
pub const DEFAULT_WAKE: Duration = Duration::from_millis(200);

/// Something the caller of a driver hears about while the engine runs.
#[derive(Debug)]
pub enum Notice<Ev> {
    /// The engine reported an event.
    Event(Ev),
    /// A datagram could not be sent (no route, a full buffer, no socket bound to `transmit.local`). The
    /// engine is not told: its retransmission schedule treats the datagram as lost.
    SendFailed { transmit: Transmit, error: io::Error },
}

/// Why a driver returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit<T> {
    /// The caller's callback said so with `ControlFlow::Break(T)`.
    Done(T),
    /// The caller's deadline passed first.
    Deadline,
    /// The caller's stop condition became true first.
    Stopped,
}

/// The socket of `locals` that `local` names: the exact address, else the only socket (an engine that
/// knows one wildcard-bound socket by another spelling of its address).
pub(crate) fn socket_for(locals: &[SocketAddr], local: SocketAddr) -> Option<usize> {
    locals.iter().position(|l| *l == local).or(if locals.len() == 1 { Some(0) } else { None })
}

/// The error a [`Notice::SendFailed`] carries when no socket is bound to the transmit's local address.
pub(crate) fn no_socket(local: SocketAddr) -> io::Error {
    io::Error::new(io::ErrorKind::AddrNotAvailable, format!("no socket bound to {local}"))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small engine for the drivers' tests: it sends `count` pings to a peer, one per `interval`, counts
    //! the pongs and the unreachable reports, and reports each pong as an event.

    use crate::net::{Engine, Received, Transmit};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    #[derive(Debug, PartialEq, Eq)]
    pub enum PingEvent {
        Pong { local: SocketAddr, from: SocketAddr, seq: u8 },
        Unreachable { local: SocketAddr, dst: SocketAddr },
        Done,
    }

    pub struct Ping {
        pub local: SocketAddr,
        pub peer: SocketAddr,
        pub count: u8,
        pub sent: u8,
        pub interval: Duration,
        pub next: Option<Instant>,
        pub due: bool,
        pub events: Vec<PingEvent>,
        pub foreign: usize,
        /// Calls of `handle_timeout`: a driver that spins shows here.
        pub wakeups: usize,
    }

    impl Ping {
        pub fn new(local: SocketAddr, peer: SocketAddr, count: u8, now: Instant) -> Ping {
            Ping {
                local,
                peer,
                count,
                sent: 0,
                interval: Duration::from_millis(20),
                next: Some(now),
                due: false,
                events: Vec::new(),
                foreign: 0,
                wakeups: 0,
            }
        }
    }

    impl Engine for Ping {
        type Event = PingEvent;

        fn handle_input(&mut self, _now: Instant, input: Received, data: &[u8]) -> bool {
            match data {
                [b'P', seq] if input.source == self.peer => {
                    self.events.push(PingEvent::Pong { local: input.local, from: input.source, seq: *seq });
                    if *seq + 1 == self.count {
                        self.events.push(PingEvent::Done);
                    }
                    true
                }
                _ => {
                    self.foreign += 1;
                    false
                }
            }
        }

        fn handle_unreachable(&mut self, _now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
            self.events.push(PingEvent::Unreachable { local, dst });
            self.next = None;
            true
        }

        fn handle_timeout(&mut self, now: Instant) {
            self.wakeups += 1;
            if self.next.is_some_and(|t| t <= now) {
                self.due = true;
                self.next = if self.sent + 1 < self.count { Some(now + self.interval) } else { None };
            }
        }

        fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
            if !std::mem::take(&mut self.due) {
                return None;
            }
            buf[0] = b'p';
            buf[1] = self.sent;
            self.sent += 1;
            Some(Transmit { local: self.local, dst: self.peer, len: 2, ttl: None })
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.next
        }

        fn poll_event(&mut self) -> Option<PingEvent> {
            if self.events.is_empty() {
                None
            } else {
                Some(self.events.remove(0))
            }
        }
    }

    /// Answers every `p N` with `P N` until it has answered `count`, or the socket's timeout passes.
    pub fn pong_server(sock: std::net::UdpSocket, count: usize) -> std::thread::JoinHandle<usize> {
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let mut answered = 0;
            while answered < count {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
                if n == 2 && buf[0] == b'p' {
                    let _ = sock.send_to(&[b'P', buf[1]], from);
                    answered += 1;
                }
            }
            answered
        })
    }

    /// A loopback address nothing listens on (ICMP port unreachable when sent to).
    pub fn closed_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    }
}

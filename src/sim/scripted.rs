//! An engine made of a closure: for the odd peer a test needs once — a server that breaks a rule, an RFC 3489
//! server answering in its own dialect, a gateway answering port mapping requests — without writing a whole
//! engine. No timers, no events.

use crate::net::{Engine, Received, Transmit};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

/// One answer: send `data` from the local address `local` to `dst`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub local: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// Calls `F` for each datagram: `None` leaves it for the next engine on the socket, `Some(replies)` takes
/// it and sends the replies.
pub struct Scripted<F> {
    script: F,
    outbox: VecDeque<Reply>,
}

impl<F> Scripted<F>
where
    F: FnMut(Instant, Received, &[u8]) -> Option<Vec<Reply>>,
{
    pub fn new(script: F) -> Scripted<F> {
        Scripted { script, outbox: VecDeque::new() }
    }
}

impl<F> Engine for Scripted<F>
where
    F: FnMut(Instant, Received, &[u8]) -> Option<Vec<Reply>>,
{
    type Event = Infallible;

    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        match (self.script)(now, input, data) {
            Some(replies) => {
                self.outbox.extend(replies);
                true
            }
            None => false,
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let r = self.outbox.pop_front()?;
        let len = r.data.len().min(buf.len());
        buf[..len].copy_from_slice(&r.data[..len]);
        Some(Transmit { local: r.local, dst: r.dst, len, ttl: None })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn poll_event(&mut self) -> Option<Infallible> {
        None
    }
}

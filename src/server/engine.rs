//! The responder as a [`net::Engine`](crate::net::Engine), for drivers that run every engine the same way (the
//! simulator, a dispatcher that owns several engines on one socket). The answers are the ones
//! [`Responder::handle`] gives; they wait in a short queue until the driver drains them. The responder has no
//! timers and no events.

use super::responder::{Dropped, Responder, MAX_QUEUED_REPLIES};
use super::MAX_REQUEST_LEN;
use crate::net::{Engine, Received, Transmit};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

impl Engine for Responder {
    type Event = Infallible;

    /// Binding requests (and the ones the rate limiter refuses) are ours; anything else — not STUN, other
    /// STUN methods, another address — is left for the next engine on the socket (RFC 7983-style
    /// demultiplexing: the rendezvous speaks STUN framing with methods of its own). Malformed input is
    /// still counted here.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        // Answers are at most max(MAX_RESPONSE_LEN, request length), and requests above MAX_REQUEST_LEN
        // are dropped, so one request-sized buffer always fits.
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.resize(MAX_REQUEST_LEN, 0);
        match self.handle(now, input, data, &mut buf) {
            Ok(t) => {
                if self.queue.len() < MAX_QUEUED_REPLIES {
                    buf.truncate(t.len);
                    self.queue.push_back((t, buf));
                } else {
                    self.counters_mut().send_errors += 1;
                    self.spare.push(buf);
                }
                true
            }
            Err(dropped) => {
                self.spare.push(buf);
                dropped == Dropped::RateLimited
            }
        }
    }

    fn handle_unreachable(&mut self, _now: Instant, _local: SocketAddr, _dst: SocketAddr) -> bool {
        // Nothing in flight: a server forgets each request once answered.
        false
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((t, data)) = self.queue.pop_front() {
            let fits = data.len() <= buf.len();
            if fits {
                buf[..data.len()].copy_from_slice(&data);
            } else {
                self.counters_mut().send_errors += 1;
            }
            self.spare.push(data);
            if fits {
                return Some(t);
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn poll_event(&mut self) -> Option<Infallible> {
        None
    }
}

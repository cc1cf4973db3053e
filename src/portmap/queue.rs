//! Request queue shared by the NAT-PMP and PCP engines: one request on the wire at a time, the rest queued,
//! each with its retransmission [`Timer`] (RFC 6886 §3.1, RFC 6887 §8.1.1).
//!
//! NAT-PMP has no transaction id, so a reply can only be matched against the request in flight; PCP keeps the
//! same discipline so both engines share the driving contract. The protocol part (parsing, matching, epochs)
//! stays in each engine; this is the timer, queue and event plumbing.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::timer::{Tick, Timer};
use super::{PortmapError, RequestId};
use crate::net::{Retransmit, Transmit};

/// An engine's event type: the queue builds its `Completed` events through this.
pub(crate) trait Completion {
    type Request;
    type Response;
    fn completed(id: RequestId, request: Self::Request, result: Result<Self::Response, PortmapError>) -> Self;
}

#[derive(Debug)]
struct Pending<R> {
    id: RequestId,
    request: R,
    timer: Timer,
}

/// Queue of requests to one server plus the engine's event queue. `M` is the engine's parse error, kept to
/// explain a later timeout.
#[derive(Debug)]
pub(crate) struct RequestQueue<Ev: Completion, M> {
    local: SocketAddr,
    server: SocketAddr,
    retransmit: Retransmit,
    queue: VecDeque<Pending<Ev::Request>>,
    events: VecDeque<Ev>,
    next_id: u64,
    now: Option<Instant>,
    last_malformed: Option<M>,
}

impl<Ev: Completion, M: fmt::Display> RequestQueue<Ev, M> {
    pub(crate) fn new(local: SocketAddr, server: SocketAddr, retransmit: Retransmit) -> Self {
        RequestQueue {
            local,
            server,
            retransmit,
            queue: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            now: None,
            last_malformed: None,
        }
    }

    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Remember the latest time the engine was given: `poll_transmit` stamps sends with it.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    pub(crate) fn request(&mut self, now: Instant, request: Ev::Request) -> RequestId {
        self.now = Some(now);
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.queue.push_back(Pending { id, request, timer: Timer::new(self.retransmit) });
        id
    }

    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The request in flight, which a reply must answer.
    pub(crate) fn head(&self) -> Option<&Ev::Request> {
        self.queue.front().map(|p| &p.request)
    }

    /// A datagram from the server could not be parsed; the last one is quoted if the request times out.
    pub(crate) fn malformed(&mut self, error: M) {
        self.last_malformed = Some(error);
    }

    pub(crate) fn push_event(&mut self, event: Ev) {
        self.events.push_back(event);
    }

    /// The server answered the request in flight: complete it with `result`.
    pub(crate) fn answer(&mut self, result: Result<Ev::Response, PortmapError>) {
        if let Some(head) = self.queue.pop_front() {
            self.last_malformed = None;
            self.events.push_back(Ev::completed(head.id, head.request, result));
        }
    }

    /// Fail the request in flight without an answer to it; false when there was none.
    pub(crate) fn fail(&mut self, error: PortmapError) -> bool {
        match self.queue.pop_front() {
            Some(head) => {
                // A malformed datagram seen for this request must not be quoted in the next one's timeout.
                self.last_malformed = None;
                self.events.push_back(Ev::completed(head.id, head.request, Err(error)));
                true
            }
            None => false,
        }
    }

    /// ICMP port unreachable from the server: nothing listens there, so waiting out the schedule would only
    /// delay the same outcome. Fails the request in flight with [`PortmapError::Refused`]; false when nothing
    /// had been sent to `dst`.
    pub(crate) fn unreachable(&mut self, now: Instant, dst: SocketAddr) -> bool {
        self.now = Some(now);
        let sent = self.queue.front().is_some_and(|p| p.timer.sends() > 0);
        if dst != self.server || !sent {
            return false;
        }
        self.fail(PortmapError::Refused { server: self.server })
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        let Some(head) = self.queue.front_mut() else { return };
        if let Tick::GiveUp { sends, waited } = head.timer.handle_timeout(now) {
            let malformed = self.last_malformed.take().map(|e| e.to_string());
            self.fail(PortmapError::Timeout { server: self.server, sends, waited, malformed });
        }
    }

    /// Next datagram to send, written into `buf` by `encode`.
    pub(crate) fn poll_transmit(
        &mut self,
        buf: &mut [u8],
        mut encode: impl FnMut(&Ev::Request, &mut [u8]) -> Result<usize, PortmapError>,
    ) -> Option<Transmit> {
        let now = self.now?;
        loop {
            let head = self.queue.front_mut()?;
            if !head.timer.wants_send() {
                return None;
            }
            match encode(&head.request, buf) {
                Ok(len) => {
                    head.timer.sent(now);
                    return Some(Transmit { local: self.local, dst: self.server, len, ttl: None });
                }
                // An unencodable request fails on its own instead of blocking the queue.
                Err(e) => {
                    self.fail(e);
                }
            }
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.queue.front().and_then(|p| p.timer.deadline())
    }

    pub(crate) fn poll_event(&mut self) -> Option<Ev> {
        self.events.pop_front()
    }
}

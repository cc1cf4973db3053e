//! The simplest engine: sends what the test tells it to and reports what arrives. In echo mode it answers every
//! datagram with the source address it saw, as text — a STUN Binding without the encoding, enough to probe
//! mappings, filtering and hairpinning in the simulator's own tests.

use crate::net::{Engine, Received, Transmit};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// What a probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    /// A datagram arrived on `local` from `source`.
    Received { at: Instant, local: SocketAddr, source: SocketAddr, data: Vec<u8> },
    /// An ICMP error said `dst` is unreachable from `local`.
    Unreachable { at: Instant, local: SocketAddr, dst: SocketAddr },
}

/// A test engine (see the module docs). Consumes every datagram offered to it.
#[derive(Debug, Default)]
pub struct Probe {
    echo: bool,
    outbox: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    events: VecDeque<ProbeEvent>,
}

impl Probe {
    pub fn new() -> Probe {
        Probe::default()
    }

    /// A probe that answers each datagram with the text of its source address ([`Probe::observed`] reads it).
    pub fn echo() -> Probe {
        Probe { echo: true, ..Probe::default() }
    }

    /// Queue `data` to be sent from `local` to `dst`.
    pub fn send(&mut self, local: SocketAddr, dst: SocketAddr, data: &[u8]) {
        self.outbox.push_back((local, dst, data.to_vec()));
    }

    /// The address an echo probe reported in its answer.
    pub fn observed(data: &[u8]) -> Option<SocketAddr> {
        std::str::from_utf8(data).ok()?.parse().ok()
    }
}

impl Engine for Probe {
    type Event = ProbeEvent;

    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if self.echo {
            self.outbox.push_back((input.local, input.source, input.source.to_string().into_bytes()));
        }
        self.events.push_back(ProbeEvent::Received {
            at: now,
            local: input.local,
            source: input.source,
            data: data.to_vec(),
        });
        true
    }

    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        self.events.push_back(ProbeEvent::Unreachable { at: now, local, dst });
        true
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let (local, dst, data) = self.outbox.pop_front()?;
        let len = data.len().min(buf.len());
        buf[..len].copy_from_slice(&data[..len]);
        Some(Transmit { local, dst, len, ttl: None })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.pop_front()
    }
}

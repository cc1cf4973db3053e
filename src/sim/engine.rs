//! Engines of any type on simulated hosts: the simulator drives every [`Engine`] through one object-safe
//! wrapper and keeps each engine's events until the test takes them; [`EngineId`] gets the concrete engine
//! back.

use crate::net::{Engine, Received, Transmit};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Instant;

/// A handle to an engine added to the simulator, typed so that [`Sim::engine`](super::Sim::engine) returns
/// the engine itself.
pub struct EngineId<E> {
    pub(crate) index: usize,
    _engine: PhantomData<fn() -> E>,
}

impl<E> EngineId<E> {
    pub(crate) fn new(index: usize) -> Self {
        EngineId { index, _engine: PhantomData }
    }
}

impl<E> Clone for EngineId<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for EngineId<E> {}

impl<E> PartialEq for EngineId<E> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}

impl<E> Eq for EngineId<E> {}

impl<E> fmt::Debug for EngineId<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EngineId({})", self.index)
    }
}

/// The engine contract without the associated type, so engines of different types share one host.
pub(crate) trait Node {
    fn input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool;
    fn unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool;
    fn timeout(&mut self, now: Instant);
    fn transmit(&mut self, buf: &mut [u8]) -> Option<Transmit>;
    fn next_timeout(&self) -> Option<Instant>;
    /// Moves the engine's pending events into its slot; returns how many.
    fn collect_events(&mut self) -> usize;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// An engine and the events it produced that the test has not taken yet.
pub(crate) struct Slot<E: Engine> {
    pub(crate) engine: E,
    pub(crate) events: Vec<E::Event>,
}

impl<E> Node for Slot<E>
where
    E: Engine + 'static,
    E::Event: 'static,
{
    fn input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        self.engine.handle_input(now, input, data)
    }

    fn unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        self.engine.handle_unreachable(now, local, dst)
    }

    fn timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now)
    }

    fn transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.engine.poll_transmit(buf)
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    fn collect_events(&mut self) -> usize {
        let before = self.events.len();
        // Bounded: an engine that never stops producing events is a bug the run should not hang on.
        for _ in 0..super::MAX_BURST {
            match self.engine.poll_event() {
                Some(e) => self.events.push(e),
                None => break,
            }
        }
        self.events.len() - before
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// One engine on one host, bound to its local socket addresses.
pub(crate) struct Attached {
    pub(crate) host: usize,
    pub(crate) locals: Vec<SocketAddr>,
    pub(crate) node: Box<dyn Node>,
}

/// Whether a socket bound to `bound` receives datagrams addressed to `addr`: the same address, or the
/// wildcard of `addr`'s family on the same port.
pub(crate) fn binds(bound: SocketAddr, addr: SocketAddr) -> bool {
    bound.port() == addr.port()
        && (bound.ip() == addr.ip() || (bound.ip().is_unspecified() && bound.is_ipv4() == addr.is_ipv4()))
}

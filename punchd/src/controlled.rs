//! The daemon's engine with the control socket attached: commands from the control thread are fed to the
//! engine, and the engine's view is published to the status snapshot, both from inside the driver's loop so
//! the engine itself stays single-threaded and sans-IO.
//!
//! The blocking driver calls `handle_timeout` after every input and at least once per wake interval
//! (holepunch::io::blocking), so a command waits at most one wake interval (200 ms in punchd) and the snapshot
//! is at most that old.

use crate::control::Command;
use crate::status::{Snapshot, Status};
use holepunch::net::{Engine, Received, Transmit};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Instant;

/// What an engine must do to run under the control socket.
pub trait Controllable: Engine {
    /// A command from the control socket; the answer goes through the command's reply channel.
    fn command(&mut self, now: Instant, command: Command);
    /// Writes what the engine knows into the status (the fields it owns; the rest stays as the daemon set it).
    fn fill_status(&self, now: Instant, status: &mut Status);
}

/// An engine plus its command channel and status snapshot; an `Engine` itself, for the drivers.
pub struct Controlled<E> {
    engine: E,
    commands: Option<mpsc::Receiver<Command>>,
    snapshot: Snapshot,
}

impl<E: Controllable> Controlled<E> {
    /// `commands` is `None` when there is no control socket; the snapshot is still kept.
    pub fn new(engine: E, commands: Option<mpsc::Receiver<Command>>, snapshot: Snapshot) -> Controlled<E> {
        Controlled { engine, commands, snapshot }
    }

    fn publish(&self, now: Instant) {
        let mut status = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        self.engine.fill_status(now, &mut status);
    }
}

impl<E: Controllable> Engine for Controlled<E> {
    type Event = E::Event;

    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        self.engine.handle_input(now, input, data)
    }

    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        self.engine.handle_unreachable(now, local, dst)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(rx) = &self.commands {
            // Bounded by what the control thread can have queued: each client waits for its answer.
            while let Ok(command) = rx.try_recv() {
                self.engine.command(now, command);
            }
        }
        self.engine.handle_timeout(now);
        self.publish(now);
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.engine.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    fn poll_event(&mut self) -> Option<E::Event> {
        let event = self.engine.poll_event();
        if event.is_some() {
            // A state change: visible to `punchd status` before the caller even reports it.
            self.publish(Instant::now());
        }
        event
    }
}

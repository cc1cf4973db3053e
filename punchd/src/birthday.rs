//! Peer mode's birthday probing sockets (docs/punchd.md, "Birthday probing"): when the punch agent, on the
//! hard side of a random symmetric NAT against a cone, asks for extra sockets, the daemon binds them (ephemeral
//! ports, the punching socket's address), hands them to the running driver (holepunch::io::blocking's
//! SocketControl) and their addresses to the node; when the agent says it no longer needs them (a path opened
//! or the attempt ended), they are closed. The agent asks for at most `BirthdayParams::sockets` (256);
//! [`MAX_SOCKETS`] bounds it here as well.

use crate::control::Command;
use crate::tunnel::Sockets;
use holepunch::io::blocking::SocketControl;
use holepunch::signal::PeerName;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{mpsc, Arc};

/// Most extra sockets held for one peer.
pub const MAX_SOCKETS: u16 = 256;

/// The extra sockets of each peer, and where they go.
pub struct Birthday {
    /// Where the extra sockets are bound: the punching socket's address, port 0.
    bind: SocketAddr,
    control: SocketControl,
    commands: mpsc::Sender<Command>,
    held: BTreeMap<PeerName, Vec<SocketAddr>>,
    /// The tunnel sends from the socket a path runs on: it gets a handle of each.
    sockets: Arc<Sockets>,
}

impl Birthday {
    /// For punching socket `local`; sockets go to the driver through `control`, their addresses to the node
    /// through `commands`.
    pub fn new(
        local: SocketAddr,
        control: SocketControl,
        commands: mpsc::Sender<Command>,
        sockets: Arc<Sockets>,
    ) -> Birthday {
        Birthday { bind: SocketAddr::new(local.ip(), 0), control, commands, held: BTreeMap::new(), sockets }
    }

    /// The agent asks for `count` sockets for `peer` (any it still holds for the peer are closed first).
    pub fn open(&mut self, peer: PeerName, count: u16) {
        if let Some(old) = self.held.remove(&peer) {
            self.remove(&old);
        }
        let mut sockets = Vec::new();
        for _ in 0..count.min(MAX_SOCKETS) {
            let added = UdpSocket::bind(self.bind).and_then(|s| {
                let handle = s.try_clone()?;
                let local = self.control.add(s)?;
                Ok((local, handle))
            });
            match added {
                Ok((local, handle)) => {
                    self.sockets.add(local, handle);
                    sockets.push(local);
                }
                Err(e) => {
                    log::warn!("{peer}: birthday probing: could not open an extra socket on {}: {e}", self.bind);
                    break;
                }
            }
        }
        log::info!("{peer}: birthday probing: {} extra sockets opened", sockets.len());
        if sockets.is_empty() {
            return;
        }
        self.held.insert(peer.clone(), sockets.clone());
        let _ = self.commands.send(Command::SocketsOpened { peer, sockets });
    }

    /// The agent no longer needs `sockets` of `peer`.
    pub fn close(&mut self, peer: &PeerName, sockets: &[SocketAddr]) {
        if let Some(held) = self.held.get_mut(peer) {
            held.retain(|s| !sockets.contains(s));
            if held.is_empty() {
                self.held.remove(peer);
            }
        }
        self.remove(sockets);
        log::info!("{peer}: birthday probing: {} extra sockets closed", sockets.len());
    }

    fn remove(&self, sockets: &[SocketAddr]) {
        for s in sockets {
            self.sockets.remove(*s);
            let _ = self.control.remove(*s);
        }
    }
}

//! Peer mode: the library's `punch::Node` (rendezvous client and punch agent on the punching socket) under
//! the control socket, and its events as one output line each (docs/punchd.md, "Peer mode"). With the tunnel
//! on, [`PeerEngine`] moves each peer's WireGuard endpoint along with the path the node verified.

use crate::control::Command;
use crate::controlled::Controllable;
use crate::status::{self, PairStatus, PathKind, Status};
use holepunch::identity::PublicKey;
use holepunch::net::{Engine, Received, Transmit};
use holepunch::punch::{self, AgentEvent, Node, NodeEvent, PeerStatus as NodePeer, Phase, RemoteKind};
use holepunch::signal::PeerName;
use holepunch::text::escape_controls;
use holepunch::tunnel::{PeerId, Tunnel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node, and the tunnel whose endpoints follow its paths.
pub struct PeerEngine {
    node: Node,
    tunnel: Option<Arc<Tunnel>>,
    /// Where the data path finds our relay's channels (crate::tunnel::RelayRoute).
    relay_route: Option<Arc<crate::tunnel::RelayRoute>>,
    /// Each configured peer's place in the tunnel.
    ids: Vec<(PeerName, PeerId)>,
}

impl PeerEngine {
    pub fn new(
        node: Node,
        tunnel: Option<Arc<Tunnel>>,
        relay_route: Option<Arc<crate::tunnel::RelayRoute>>,
        peers: &[(PeerName, PublicKey)],
    ) -> PeerEngine {
        let ids = match &tunnel {
            Some(t) => peers.iter().filter_map(|(n, k)| t.peer_by_key(k).map(|id| (n.clone(), id))).collect(),
            None => Vec::new(),
        };
        PeerEngine { node, tunnel, relay_route, ids }
    }

    /// The tunnel follows the node: a path opened or changed is where the peer's datagrams go now; a dead
    /// path leaves only a configured endpoint.
    fn follow(&self, event: &NodeEvent) {
        if let Some(route) = &self.relay_route {
            match event {
                NodeEvent::RelayAllocated { server, relayed } => route.allocated(*server, *relayed),
                NodeEvent::RelayFailed { .. } => route.lost(),
                NodeEvent::RelayChannel { peer, channel } => route.bound(*peer, *channel),
                _ => {}
            }
        }
        let Some(tunnel) = &self.tunnel else { return };
        let (peer, path) = match event {
            NodeEvent::Punch(AgentEvent::PathOpened { peer, local, remote, .. }, _)
            | NodeEvent::Punch(AgentEvent::PathChanged { peer, local, remote, .. }, _) => {
                (peer, Some((*local, *remote)))
            }
            NodeEvent::Punch(AgentEvent::PathDied { peer, .. }, _) => (peer, None),
            _ => return,
        };
        if let Some((_, id)) = self.ids.iter().find(|(n, _)| n == peer) {
            tunnel.set_path(*id, path);
        }
    }
}

impl Engine for PeerEngine {
    type Event = NodeEvent;

    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        self.node.handle_input(now, input, data)
    }

    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        self.node.handle_unreachable(now, local, dst)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.node.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    fn poll_event(&mut self) -> Option<NodeEvent> {
        let event = self.node.poll_event()?;
        self.follow(&event);
        Some(event)
    }
}

impl Controllable for PeerEngine {
    fn command(&mut self, now: Instant, command: Command) {
        self.node.command(now, command);
    }

    fn fill_status(&self, now: Instant, status: &mut Status) {
        self.node.fill_status(now, status);
        status.relayed = self.node.relayed();
        if let Some(device) = status.tunnel.as_mut() {
            device.coalesced_sends = holepunch::io::coalesce::coalesced_sends();
            device.coalesced_receives = holepunch::io::coalesce::coalesced_receives();
        }
        let Some(tunnel) = &self.tunnel else { return };
        for t in tunnel.status() {
            let Some(s) = status.peers.iter_mut().find(|s| s.key == t.key.to_base64()) else { continue };
            s.tunnel = Some(status::PeerTunnel {
                address: t.allowed_ips.first().map(|p| p.addr().to_string()).unwrap_or_default(),
                endpoint: t.endpoint.map(|e| e.remote),
                handshake_ms_ago: t.last_handshake.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                tx_bytes: t.tx_bytes,
                rx_bytes: t.rx_bytes,
            });
        }
    }
}

impl Controllable for Node {
    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Connect { peer, reply } => {
                let _ = reply.send(self.connect(now, &peer).map_err(|e| e.to_string()));
            }
            Command::PortMapping(external) => {
                match external {
                    Some(e) => log::info!("port-mapped candidate {e} (router port mapping)"),
                    None => log::info!("no port-mapped candidate (no or lost router port mapping)"),
                }
                self.set_port_mapping(now, external);
            }
            Command::SocketsOpened { peer, sockets } => {
                if let Err(e) = self.add_sockets(now, &peer, &sockets) {
                    log::warn!("birthday sockets for {peer}: {e}");
                }
            }
        }
    }

    fn fill_status(&self, _now: Instant, status: &mut Status) {
        status.reflexive = self.reflexive();
        status.registered = self.is_registered();
        status.server = Some(self.server());
        status.port_mapped = self.port_mapping();
        for p in self.status() {
            if let Some(s) = status.peers.iter_mut().find(|s| s.name == p.name.as_str()) {
                fill_peer(&p, s);
            }
        }
    }
}

fn fill_peer(p: &NodePeer, s: &mut status::PeerStatus) {
    s.path = match p.path {
        punch::PathKind::Lan => PathKind::Lan,
        punch::PathKind::Direct => PathKind::Direct,
        punch::PathKind::Relay => PathKind::Relay,
        punch::PathKind::None => PathKind::None,
    };
    s.remote = p.remote;
    s.rtt_ms = p.rtt.map(|r| r.as_secs_f64() * 1000.0);
    s.last_keepalive = p.last_keepalive;
    s.prediction = p.prediction.map(|x| x.to_string());
    let backing_off = matches!(p.phase, Phase::Backoff { .. });
    s.pairs = p
        .pairs
        .iter()
        .map(|pair| PairStatus {
            local: pair.local,
            remote: pair.remote,
            kind: pair.kind.as_str().to_string(),
            state: match pair.state {
                punch::PairState::Waiting => status::PairState::Waiting,
                punch::PairState::InProgress => status::PairState::Probing,
                punch::PairState::Succeeded => status::PairState::Verified,
                punch::PairState::Failed if backing_off => status::PairState::BackingOff,
                punch::PairState::Failed => status::PairState::Failed,
            },
        })
        .collect();
}

fn ms(d: Option<Duration>) -> String {
    d.map_or(String::new(), |r| format!(", rtt {:.0} ms", r.as_secs_f64() * 1000.0))
}

/// " via reflexive": the kind of remote candidate a path runs to.
fn via(kind: Option<RemoteKind>) -> String {
    kind.map_or(String::new(), |k| format!(" via {k}"))
}

/// One line (text) or one JSON object for `event`.
pub fn line(event: &NodeEvent, local: SocketAddr, json: bool) -> String {
    use serde_json::json;
    let (text, value) = match event {
        NodeEvent::Registered { reflexive } => (
            format!("registered with the server: public endpoint {reflexive} (local {local})"),
            json!({"event": "registered", "public": reflexive.to_string(), "local": local.to_string()}),
        ),
        NodeEvent::ReflexiveChanged { old, new } => (
            format!("public endpoint changed: {old} -> {new}: punching again"),
            json!({"event": "changed", "old": old.to_string(), "public": new.to_string()}),
        ),
        NodeEvent::ServerLost => (
            "server does not answer (still trying; open paths keep working)".to_string(),
            json!({"event": "server-lost"}),
        ),
        NodeEvent::ServerChanged { from, to } => (
            format!("rendezvous server {from} does not answer: registering at {to} (open paths keep working)"),
            json!({"event": "server-changed", "from": from.to_string(), "server": to.to_string()}),
        ),
        NodeEvent::Refused(r) => (r.to_string(), json!({"event": "refused", "reason": r.to_string()})),
        NodeEvent::PeerNotRegistered { peer, retry_in } => (
            format!("{peer} is not registered with the server; asking again in {:.0} s", retry_in.as_secs_f64()),
            json!({"event": "peer-not-registered", "peer": peer.as_str()}),
        ),
        NodeEvent::ConnectFailed { peer, reason, retry_in } => (
            format!("connect to {peer} failed: {reason}; asking again in {:.0} s", retry_in.as_secs_f64()),
            json!({"event": "connect-failed", "peer": peer.as_str(), "reason": reason.to_string()}),
        ),
        NodeEvent::IntroductionRefused { peer, why } => (
            format!("introduction of {peer} refused: {why}"),
            json!({"event": "introduction-refused", "peer": peer.as_str(), "reason": why.to_string()}),
        ),
        NodeEvent::RelayAllocated { server, relayed } => (
            format!("relayed address {relayed} on TURN server {server} (used when no direct path opens)"),
            json!({"event": "relay-allocated", "server": server.to_string(), "relayed": relayed.to_string()}),
        ),
        NodeEvent::RelayFailed { server, why, retry_in } => (
            format!("TURN server {server}: {why}; trying again in {:.0} s", retry_in.as_secs_f64()),
            json!({"event": "relay-failed", "server": server.to_string(), "why": why.to_string()}),
        ),
        NodeEvent::RelayChannel { peer, channel } => (
            format!("relay channel {channel:#06x} bound to {peer}"),
            json!({"event": "relay-channel", "peer": peer.to_string(), "channel": channel}),
        ),
        NodeEvent::Punch(e, kind) => punch_line(e, *kind),
    };
    if json {
        value.to_string()
    } else {
        // Reasons may carry the server's text: escaped, so they cannot drive the terminal or forge lines.
        escape_controls(&text).into_owned()
    }
}

fn punch_line(e: &AgentEvent, remote_kind: Option<RemoteKind>) -> (String, serde_json::Value) {
    use serde_json::json;
    match e {
        AgentEvent::PathOpened { peer, kind, local, remote, rtt } => (
            format!("path to {peer} opened: {kind} {remote}{}{} (local {local})", via(remote_kind), ms(*rtt)),
            json!({"event": "path-opened", "peer": peer.as_str(), "path": kind.as_str(), "remote": remote.to_string(),
                   "local": local.to_string(), "rtt_ms": rtt.map(|r| r.as_secs_f64() * 1000.0)}),
        ),
        AgentEvent::PathChanged { peer, kind, local, remote, rtt, why } => (
            format!("path to {peer} changed: {kind} {remote}{}{} (local {local}): {why}", via(remote_kind), ms(*rtt)),
            json!({"event": "path-changed", "peer": peer.as_str(), "path": kind.as_str(), "remote": remote.to_string(),
                   "local": local.to_string(), "rtt_ms": rtt.map(|r| r.as_secs_f64() * 1000.0), "why": why.to_string()}),
        ),
        AgentEvent::PathDied { peer, remote, why } => (
            format!("path to {peer} ({remote}) died: {why}; punching again"),
            json!({"event": "path-died", "peer": peer.as_str(), "remote": remote.to_string(), "why": why.to_string()}),
        ),
        AgentEvent::NeedsRelay { peer, why } => (
            format!("{peer}: needs relay: {why}"),
            json!({"event": "needs-relay", "peer": peer.as_str(), "why": why.to_string()}),
        ),
        AgentEvent::Prediction { peer, prediction } => (
            format!("{peer}: prediction: {prediction}"),
            json!({"event": "prediction", "peer": peer.as_str(), "prediction": prediction.to_string()}),
        ),
        AgentEvent::PredictionWrong { peer, prediction, direct } => {
            let outcome = if *direct { "a direct path opened" } else { "no direct path" };
            (
                format!("{peer}: prediction was wrong: {prediction}, but {outcome}"),
                json!({"event": "prediction-wrong", "peer": peer.as_str(), "prediction": prediction.to_string(),
                       "direct": direct}),
            )
        }
        AgentEvent::OpenSockets { peer, count } => (
            format!("{peer}: birthday probing: opening {count} extra sockets"),
            json!({"event": "open-sockets", "peer": peer.as_str(), "sockets": count}),
        ),
        AgentEvent::PathMtuTooSmall { peer, probed, minimum, minimum_ok } => {
            let mtu = probed.saturating_sub(32);
            let text = if *minimum_ok {
                format!(
                    "path to {peer} lost a full-size {probed}-byte datagram while {minimum}-byte ones get through: \
                     tunnel packets near the MTU ({mtu}) will be lost; set --mtu {} on both peers",
                    minimum.saturating_sub(32)
                )
            } else {
                format!(
                    "path to {peer} lost {probed}- and {minimum}-byte datagrams while small ones get through: large \
                     tunnel packets will be lost even at --mtu {} (a link with a small MTU that blocks ICMP?)",
                    minimum.saturating_sub(32)
                )
            };
            (
                text,
                json!({"event": "path-mtu-too-small", "peer": peer.as_str(), "probed": probed, "minimum": minimum,
                       "minimum_ok": minimum_ok}),
            )
        }
        AgentEvent::CloseSockets { peer, sockets } => (
            format!("{peer}: {} extra sockets no longer needed", sockets.len()),
            json!({"event": "close-sockets", "peer": peer.as_str(), "sockets": sockets.len()}),
        ),
    }
}

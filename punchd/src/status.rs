//! What `punchd status` shows: the daemon's own identity and endpoints, and per configured peer the path, the
//! candidate pairs and their states. The JSON form is the control socket's schema (docs/punchd.md, "Control
//! socket and status"); the daemon loop keeps one [`Status`] up to date in a shared snapshot and the control
//! thread copies it out per request.
// On Windows there is no control socket yet to read the status (control/mod.rs).
#![cfg_attr(not(unix), allow(dead_code))]

use holepunch::signal::CandidateKind;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The snapshot the daemon loop writes and the control thread reads.
pub type Snapshot = Arc<Mutex<Status>>;

/// The daemon as a whole.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// This peer's name (`--peer-id`); absent in keeper mode.
    pub name: Option<String>,
    /// This peer's public key, base64 (`punchd pubkey`); absent in keeper mode.
    pub key: Option<String>,
    /// The punching socket's local address.
    pub local: Option<SocketAddr>,
    /// The punching socket's public (server-reflexive) endpoint, as the server last saw it.
    pub reflexive: Option<SocketAddr>,
    /// The router's port mapping of the punching socket (NAT-PMP, PCP or UPnP IGD), reported as a
    /// port-mapped candidate; absent when the router maps nothing or `--no-portmap`.
    #[serde(default)]
    pub port_mapped: Option<SocketAddr>,
    /// The server's resolved address.
    pub server: Option<SocketAddr>,
    /// Whether the rendezvous server holds a current registration of this peer.
    pub registered: bool,
    /// Every configured peer, in configuration order.
    pub peers: Vec<PeerStatus>,
    /// The tunnel device, when the tunnel is on.
    #[serde(default)]
    pub tunnel: Option<TunnelStatus>,
    /// The TURN server (`--relay`), resolved.
    #[serde(default)]
    pub relay_server: Option<SocketAddr>,
    /// Our relayed address on it, while the allocation lives.
    #[serde(default)]
    pub relayed: Option<SocketAddr>,
}

/// The tunnel device.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    /// The device's name.
    pub device: String,
    /// Our tunnel address with the overlay's prefix length.
    pub address: String,
    pub mtu: u16,
    /// Sends that carried several datagrams in one segmented call, and receives that brought several
    /// (Windows USO/URO, docs/windows.md, "Tunnel data path"); 0 elsewhere.
    #[serde(default)]
    pub coalesced_sends: u64,
    #[serde(default)]
    pub coalesced_receives: u64,
}

/// One peer's side of the tunnel.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerTunnel {
    /// The peer's tunnel address.
    pub address: String,
    /// Where its WireGuard datagrams go now.
    pub endpoint: Option<SocketAddr>,
    /// Milliseconds since the last completed WireGuard handshake; absent without a session.
    pub handshake_ms_ago: Option<u64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// One configured peer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    /// Its public key, base64.
    pub key: String,
    pub path: PathKind,
    /// The peer's address on the current path.
    pub remote: Option<SocketAddr>,
    /// Round-trip time on the current path (smoothed), milliseconds.
    pub rtt_ms: Option<f64>,
    /// Milliseconds since the last keepalive from the peer was verified; computed when the status is read
    /// (from `last_keepalive`).
    pub last_keepalive_ms_ago: Option<u64>,
    /// When the last keepalive from the peer was verified (the daemon loop sets this, not the JSON).
    #[serde(skip)]
    pub last_keepalive: Option<Instant>,
    /// The predicted outcome before punching ("direct expected", "direct via birthday probing, ~N s",
    /// "needs relay"), as the punch engine words it.
    pub prediction: Option<String>,
    /// The candidate pairs being or having been checked, best first.
    pub pairs: Vec<PairStatus>,
    /// The tunnel to the peer, when the tunnel is on.
    #[serde(default)]
    pub tunnel: Option<PeerTunnel>,
}

/// Which kind of path carries a peer's traffic.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Both ends on one LAN (host candidates).
    Lan,
    /// Through the NATs (reflexive, port-mapped or predicted candidates).
    Direct,
    /// Through a relay.
    Relay,
    /// No verified path.
    #[default]
    None,
}

/// One candidate pair: our socket and one of the peer's candidates.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PairStatus {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The remote candidate's kind: "host", "port-mapped", "reflexive", "predicted", "relayed".
    pub kind: String,
    pub state: PairState,
}

/// Where a candidate pair's check stands.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PairState {
    /// Not probed yet.
    Waiting,
    /// Probes sent, no verified answer yet.
    Probing,
    /// A verified round trip: usable.
    Verified,
    /// Given up for now; retried after a back-off.
    BackingOff,
    /// Given up.
    Failed,
}

impl PeerStatus {
    /// A configured peer with no path yet.
    pub fn configured(name: String, key: String) -> PeerStatus {
        PeerStatus {
            name,
            key,
            path: PathKind::None,
            remote: None,
            rtt_ms: None,
            last_keepalive_ms_ago: None,
            last_keepalive: None,
            prediction: None,
            pairs: Vec::new(),
            tunnel: None,
        }
    }
}

impl PairStatus {
    /// For the punch engine's pairs (the node fills `PeerStatus::pairs` with these).
    #[allow(dead_code)]
    pub fn new(local: SocketAddr, remote: SocketAddr, kind: CandidateKind, state: PairState) -> PairStatus {
        PairStatus { local, remote, kind: kind.as_str().to_string(), state }
    }
}

impl Status {
    /// A copy to hand out at `now`: ages filled in from the instants the loop recorded.
    pub fn at(&self, now: Instant) -> Status {
        let mut s = self.clone();
        for p in &mut s.peers {
            p.last_keepalive_ms_ago = p
                .last_keepalive
                .map(|t| u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX));
        }
        s
    }

    /// The human form of `punchd status`: the daemon's line, then one line per peer and one per pair.
    pub fn render(&self) -> String {
        let opt = |v: &Option<SocketAddr>| v.map_or("-".to_string(), |a| a.to_string());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {}  local {}  reflexive {}  server {}  registered {}",
            self.name.as_deref().unwrap_or("(no peer id)"),
            self.key.as_deref().unwrap_or("-"),
            opt(&self.local),
            opt(&self.reflexive),
            opt(&self.server),
            if self.registered { "yes" } else { "no" },
        );
        if let Some(m) = self.port_mapped {
            let _ = writeln!(out, "port-mapped {m} (router port mapping)");
        }
        if let Some(t) = &self.tunnel {
            let _ = write!(out, "tunnel {} {} mtu {}", t.device, t.address, t.mtu);
            if t.coalesced_sends > 0 || t.coalesced_receives > 0 {
                let _ = write!(out, "  coalesced sends {} receives {}", t.coalesced_sends, t.coalesced_receives);
            }
            let _ = writeln!(out);
        }
        if let Some(server) = self.relay_server {
            let _ = writeln!(out, "relay {server}  relayed {}", opt(&self.relayed));
        }
        if self.peers.is_empty() {
            return out;
        }
        let _ =
            writeln!(out, "{:<16} {:<6} {:<24} {:>9} {:>10}  PREDICTION", "PEER", "PATH", "REMOTE", "RTT", "KEEPALIVE");
        for p in &self.peers {
            let path = serde_json::to_value(p.path).ok().and_then(|v| v.as_str().map(str::to_string));
            let _ = writeln!(
                out,
                "{:<16} {:<6} {:<24} {:>9} {:>10}  {}",
                p.name,
                path.unwrap_or_default(),
                opt(&p.remote),
                p.rtt_ms.map_or("-".to_string(), |r| format!("{r:.1}ms")),
                p.last_keepalive_ms_ago.map_or("-".to_string(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0)),
                p.prediction.as_deref().unwrap_or("-"),
            );
            if let Some(t) = &p.tunnel {
                let _ = writeln!(
                    out,
                    "  tunnel {} endpoint {}  handshake {}  sent {} B  received {} B",
                    t.address,
                    opt(&t.endpoint),
                    t.handshake_ms_ago.map_or("none".to_string(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0)),
                    t.tx_bytes,
                    t.rx_bytes
                );
            }
            for pair in &p.pairs {
                let state = serde_json::to_value(pair.state).ok().and_then(|v| v.as_str().map(str::to_string));
                let _ =
                    writeln!(out, "  {} -> {} ({}) {}", pair.local, pair.remote, pair.kind, state.unwrap_or_default());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_schema_names() {
        let now = Instant::now();
        let mut bob = PeerStatus::configured("bob".into(), "KEY".into());
        bob.path = PathKind::Lan;
        bob.last_keepalive = Some(now - Duration::from_millis(1500));
        bob.pairs.push(PairStatus::new(
            "10.0.0.1:6666".parse().unwrap(),
            "10.0.0.2:6666".parse().unwrap(),
            CandidateKind::PortMapped,
            PairState::BackingOff,
        ));
        let s = Status { name: Some("alice".into()), peers: vec![bob], ..Status::default() }.at(now);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["peers"][0]["path"], "lan");
        assert_eq!(v["peers"][0]["last_keepalive_ms_ago"], 1500);
        assert_eq!(v["peers"][0]["pairs"][0]["kind"], "port-mapped");
        assert_eq!(v["peers"][0]["pairs"][0]["state"], "backing-off");
        assert_eq!(v["peers"][0]["pairs"][0]["local"], "10.0.0.1:6666");
        assert!(v["peers"][0].get("last_keepalive").is_none());
        assert_eq!(v["registered"], false);
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back.peers[0].path, PathKind::Lan);
        assert!(s.render().contains("bob"));
    }

    #[test]
    fn coalesced_counts_show_where_there_are_any() {
        let tunnel = TunnelStatus {
            device: "punchd0".into(),
            address: "100.64.0.1/10".into(),
            mtu: 1400,
            coalesced_sends: 0,
            coalesced_receives: 0,
        };
        let mut s = Status { tunnel: Some(tunnel), ..Status::default() }.at(Instant::now());
        assert!(s.render().contains("tunnel punchd0 100.64.0.1/10 mtu 1400\n"), "{}", s.render());
        let t = s.tunnel.as_mut().unwrap();
        (t.coalesced_sends, t.coalesced_receives) = (7, 3);
        assert!(s.render().contains("mtu 1400  coalesced sends 7 receives 3\n"), "{}", s.render());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (v["tunnel"]["coalesced_sends"].as_u64(), v["tunnel"]["coalesced_receives"].as_u64()),
            (Some(7), Some(3))
        );
        let mut old = v.clone();
        old["tunnel"].as_object_mut().unwrap().retain(|k, _| k != "coalesced_sends" && k != "coalesced_receives");
        let back: Status = serde_json::from_value(old).unwrap();
        assert_eq!(back.tunnel.unwrap().coalesced_sends, 0, "a status without them still parses");
    }
}

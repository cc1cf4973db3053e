//! The WireGuard tunnel of a peer (docs/tunnel.md): one boringtun `Tunn` session per configured peer,
//! cryptokey routing between them, and where each peer's datagrams go. Sans-IO: IP packets and datagrams in,
//! datagrams and IP packets out, in caller-owned buffers.
//!
//! Shared by the data-path threads (`Sync`): each peer's session sits behind its own lock, taken once per
//! packet, so the TUN reader (encrypting) and the socket reader (decrypting) only meet on the same peer.
//!
//! The session is independent of the path: the node moves a peer between LAN, public and relayed endpoints
//! with [`Tunnel::set_path`], and packets simply leave for the new endpoint; no rekey, nothing lost. Until
//! the node knows a path, a peer's endpoint is its configured static one (a plain WireGuard peer) or the
//! source of its last authenticated datagram (WireGuard's roaming, whitepaper §2.1).
//!
//! Clock: boringtun reads the monotonic clock itself for its handshake timers (REKEY and friends,
//! whitepaper §6); [`Tunnel::update_timers`] only has to be called often (every [`TIMER_TICK`]). The
//! simulator's virtual time therefore does not reach those timers: simulated runs exercise handshakes and
//! data, and the timers run in real time (docs/architecture.md, "The tunnel and the clock").

use super::packet::{self, HANDSHAKE_INIT, HANDSHAKE_INIT_LEN};
use super::routes::AllowedIps;
use crate::identity::{PublicKey, SecretKey};
use crate::net::{IpPrefix, Transmit};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often [`Tunnel::update_timers`] wants to run (boringtun's own device ticks every 250 ms).
pub const TIMER_TICK: Duration = Duration::from_millis(250);

/// Handshakes per second per peer before cookies are demanded (boringtun's device default).
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// Smallest buffer a call may be given: a handshake initiation, the largest message boringtun writes
/// without a payload.
pub const MIN_BUFFER: usize = HANDSHAKE_INIT_LEN;

/// A peer of the tunnel.
#[derive(Clone, Debug)]
pub struct TunnelPeerConfig {
    /// For logs and status.
    pub name: String,
    /// Its static public key (the punchd identity, pinned).
    pub key: PublicKey,
    /// The inner source addresses it may use and the destinations routed to it (its tunnel address /32).
    pub allowed_ips: Vec<IpPrefix>,
    /// A fixed endpoint (a plain WireGuard peer that is not punched), used until the node knows a path.
    pub endpoint: Option<SocketAddr>,
}

/// The tunnel's settings.
#[derive(Debug)]
pub struct TunnelConfig {
    pub key: SecretKey,
    /// The punching socket: where datagrams to a static or learned endpoint leave from.
    pub local: SocketAddr,
    pub peers: Vec<TunnelPeerConfig>,
    /// WireGuard's persistent keepalive in seconds; off by default, the punch agent keeps paths alive.
    pub persistent_keepalive: Option<u16>,
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("peer {peer}: allowed IP {prefix} is already {other}'s")]
    AllowedIpTaken { peer: String, prefix: IpPrefix, other: String },
    #[error("peer {0} is configured twice (same key)")]
    DuplicateKey(String),
    #[error("peer {0} has our own key")]
    OwnKey(String),
    #[error("more than {max} peers")]
    TooManyPeers { max: usize },
}

/// A peer, by its place in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// Where a peer's datagrams go and which socket they leave from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub source: EndpointSource,
}

/// How the endpoint was learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// Configured.
    Static,
    /// The source of the peer's last authenticated datagram.
    Learned,
    /// The path the node verified (LAN, direct or relayed).
    Path,
}

/// What became of an IP packet from the TUN device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encapsulated {
    /// Send `transmit` (the encrypted packet, or a handshake initiation while the packet waits for it).
    Send(Transmit, PeerId),
    /// Queued until the handshake in flight completes (sent by [`Tunnel::flush`] after the response).
    Queued(PeerId),
    Dropped(Drop),
}

/// What became of a datagram from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decapsulated {
    /// Write `out[offset..offset + len]` to the TUN device.
    ToTun {
        offset: usize,
        len: usize,
        peer: PeerId,
    },
    /// Send `transmit` (a handshake response or cookie), then call [`Tunnel::flush`] for `peer` until it is
    /// empty (packets that waited for the handshake).
    Reply(Transmit, Option<PeerId>),
    /// Authenticated, nothing to deliver (a keepalive, a completed handshake); call [`Tunnel::flush`].
    Done(PeerId),
    Dropped(Drop),
}

/// Why a packet or datagram was dropped; counted, never answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Not an IPv4 or IPv6 packet.
    NotIp,
    /// No peer owns the destination.
    NoRoute(IpAddr),
    /// The peer owning the destination has no endpoint yet (no path, none configured).
    NoPath(PeerId),
    /// The caller's buffer is too small for the result.
    BufferTooSmall,
    /// Not of WireGuard's form.
    NotWireGuard,
    /// A handshake from a key we do not know, or one not made for our key.
    UnknownPeer,
    /// A message for a session index we never gave out.
    UnknownIndex,
    /// Decrypted, but the inner source is not among the peer's allowed IPs.
    SourceNotAllowed(PeerId),
    /// Refused by the WireGuard session (bad MAC or tag, replay, expired, under load).
    Rejected(Option<PeerId>, Rejection),
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drop::NotIp => f.write_str("not an IP packet"),
            Drop::NoRoute(ip) => write!(f, "no peer for {ip}"),
            Drop::NoPath(p) => write!(f, "no path to peer #{}", p.0),
            Drop::BufferTooSmall => f.write_str("buffer too small"),
            Drop::NotWireGuard => f.write_str("not a WireGuard message"),
            Drop::UnknownPeer => f.write_str("handshake from an unknown key or not for our key"),
            Drop::UnknownIndex => f.write_str("unknown session index"),
            Drop::SourceNotAllowed(p) => write!(f, "inner source not allowed for peer #{}", p.0),
            Drop::Rejected(_, e) => write!(f, "rejected: {e}"),
        }
    }
}

/// Why the WireGuard session refused a datagram (boringtun's error, in words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// MAC1/MAC2 or the AEAD tag did not verify: not from the peer, or altered.
    Authentication,
    /// A counter or timestamp seen before (a replay).
    Replay,
    /// No session for the index (expired, or the peer restarted).
    NoSession,
    /// Too many handshakes: a cookie is demanded.
    UnderLoad,
    /// Anything else boringtun refuses (lengths, types, keys).
    Malformed,
}

impl From<WireGuardError> for Rejection {
    fn from(e: WireGuardError) -> Rejection {
        use WireGuardError as E;
        match e {
            E::InvalidMac | E::InvalidAeadTag | E::WrongKey => Rejection::Authentication,
            E::InvalidCounter | E::DuplicateCounter | E::WrongTai64nTimestamp => Rejection::Replay,
            E::NoCurrentSession | E::ConnectionExpired | E::WrongIndex => Rejection::NoSession,
            E::UnderLoad => Rejection::UnderLoad,
            _ => Rejection::Malformed,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::Authentication => "authentication failed",
            Rejection::Replay => "replayed",
            Rejection::NoSession => "no session",
            Rejection::UnderLoad => "under load (cookie required)",
            Rejection::Malformed => "malformed",
        })
    }
}

/// Per-peer counters, read by the status.
#[derive(Debug, Default)]
struct Counters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    dropped: AtomicU64,
}

/// A peer's tunnel state for the status.
#[derive(Clone, Debug, PartialEq)]
pub struct TunnelPeerStatus {
    pub name: String,
    pub key: PublicKey,
    pub allowed_ips: Vec<IpPrefix>,
    pub endpoint: Option<Endpoint>,
    /// Time since the last completed handshake, when a session is up.
    pub last_handshake: Option<Duration>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub dropped: u64,
}

struct PeerState {
    tunn: Tunn,
    endpoint: Option<Endpoint>,
    /// The static endpoint to fall back to when the node's path goes.
    configured: Option<SocketAddr>,
}

struct Peer {
    name: String,
    key: PublicKey,
    allowed: Vec<IpPrefix>,
    state: Mutex<PeerState>,
    counters: Counters,
}

impl Peer {
    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A panic elsewhere cannot leave a session half-updated in a way that matters more than stopping
        // the tunnel would: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Totals over every peer and the datagrams no peer took.
#[derive(Debug, Default)]
struct TunnelCounters {
    unknown: AtomicU64,
}

/// The tunnel (see the module docs).
pub struct Tunnel {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    local: SocketAddr,
    peers: Vec<Peer>,
    routes: AllowedIps<usize>,
    limiter: Arc<RateLimiter>,
    counters: TunnelCounters,
}

/// Most peers: session indices carry the peer in their upper 24 bits.
pub const MAX_PEERS: usize = 1 << 20;

impl Tunnel {
    pub fn new(config: TunnelConfig) -> Result<Tunnel, TunnelError> {
        if config.peers.len() > MAX_PEERS {
            return Err(TunnelError::TooManyPeers { max: MAX_PEERS });
        }
        let secret = x25519::StaticSecret::from(config.key.to_bytes());
        let public = x25519::PublicKey::from(&secret);
        let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        let mut routes = AllowedIps::default();
        let mut peers: Vec<Peer> = Vec::with_capacity(config.peers.len());
        for (i, p) in config.peers.into_iter().enumerate() {
            if p.key.0 == *public.as_bytes() {
                return Err(TunnelError::OwnKey(p.name));
            }
            if peers.iter().any(|q| q.key == p.key) {
                return Err(TunnelError::DuplicateKey(p.name));
            }
            for prefix in &p.allowed_ips {
                if let Err(other) = routes.insert(*prefix, i) {
                    return Err(TunnelError::AllowedIpTaken {
                        peer: p.name,
                        prefix: *prefix,
                        other: peers[other].name.clone(),
                    });
                }
            }
            let tunn = Tunn::new(
                secret.clone(),
                x25519::PublicKey::from(p.key.0),
                None,
                config.persistent_keepalive,
                i as u32,
                Some(Arc::clone(&limiter)),
            );
            let endpoint =
                p.endpoint.map(|remote| Endpoint { local: config.local, remote, source: EndpointSource::Static });
            peers.push(Peer {
                name: p.name,
                key: p.key,
                allowed: p.allowed_ips,
                state: Mutex::new(PeerState { tunn, endpoint, configured: p.endpoint }),
                counters: Counters::default(),
            });
        }
        Ok(Tunnel { secret, public, local: config.local, peers, routes, limiter, counters: TunnelCounters::default() })
    }

    /// The peer with `key`.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.peers.iter().position(|p| p.key == *key).map(PeerId)
    }

    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> {
        (0..self.peers.len()).map(PeerId)
    }

    /// The node verified a path to `peer` (`Some`), or lost it (`None`: back to the configured endpoint, or
    /// none). Packets simply follow; the session is untouched.
    pub fn set_path(&self, peer: PeerId, path: Option<(SocketAddr, SocketAddr)>) {
        let Some(p) = self.peers.get(peer.0) else { return };
        let mut s = p.lock();
        s.endpoint = match path {
            Some((local, remote)) => Some(Endpoint { local, remote, source: EndpointSource::Path }),
            None => s.configured.map(|remote| Endpoint { local: self.local, remote, source: EndpointSource::Static }),
        };
    }

    /// Encrypts the IP packet `packet` for the peer owning its destination, into `out` (at least
    /// `packet.len() + 32` and [`MIN_BUFFER`] bytes).
    pub fn encapsulate(&self, packet: &[u8], out: &mut [u8]) -> Encapsulated {
        let Some((_, dst)) = packet::ip_addresses(packet) else { return Encapsulated::Dropped(Drop::NotIp) };
        let Some(i) = self.routes.lookup(dst) else {
            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
            return Encapsulated::Dropped(Drop::NoRoute(dst));
        };
        let peer = &self.peers[i];
        if out.len() < (packet.len() + packet::DATA_OVERHEAD).max(MIN_BUFFER) {
            peer.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Encapsulated::Dropped(Drop::BufferTooSmall);
        }
        let mut s = peer.lock();
        let Some(ep) = s.endpoint else {
            drop(s);
            peer.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Encapsulated::Dropped(Drop::NoPath(PeerId(i)));
        };
        let result = match s.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(b) => Ok(region(out_ptr(b), b.len())),
            TunnResult::Err(e) => Err(e),
            _ => return Encapsulated::Queued(PeerId(i)),
        };
        drop(s);
        match result {
            Ok((ptr, len)) => {
                let len = move_to_front(out, ptr, len);
                peer.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                peer.counters.tx_bytes.fetch_add(packet.len() as u64, Ordering::Relaxed);
                Encapsulated::Send(Transmit { local: ep.local, dst: ep.remote, len, ttl: None }, PeerId(i))
            }
            Err(e) => {
                peer.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Encapsulated::Dropped(Drop::Rejected(Some(PeerId(i)), e.into()))
            }
        }
    }

    /// Takes a WireGuard datagram that arrived on socket `local` from `source`; `out` receives a decrypted
    /// packet or a reply (at least `datagram.len()` and [`MIN_BUFFER`] bytes).
    pub fn decapsulate(&self, local: SocketAddr, source: SocketAddr, datagram: &[u8], out: &mut [u8]) -> Decapsulated {
        let Some(kind) = packet::wireguard_type(datagram) else { return self.unknown_drop(Drop::NotWireGuard) };
        if out.len() < datagram.len().max(MIN_BUFFER) {
            return self.unknown_drop(Drop::BufferTooSmall);
        }
        let i = if kind == HANDSHAKE_INIT {
            match self.initiator(source, datagram, out) {
                Ok(i) => i,
                Err(d) => return d,
            }
        } else {
            let Some(index) = packet::receiver_index(datagram) else { return self.unknown_drop(Drop::NotWireGuard) };
            let i = (index >> 8) as usize;
            if i >= self.peers.len() {
                return self.unknown_drop(Drop::UnknownIndex);
            }
            i
        };
        let peer = &self.peers[i];
        let id = PeerId(i);
        let mut s = peer.lock();
        let result = match s.tunn.decapsulate(Some(source.ip()), datagram, out) {
            TunnResult::Done => Ok(None),
            TunnResult::Err(e) => Err(e),
            TunnResult::WriteToNetwork(b) => Ok(Some((true, region(out_ptr(b), b.len()), None))),
            TunnResult::WriteToTunnelV4(b, src) => {
                Ok(Some((false, region(out_ptr(b), b.len()), Some(IpAddr::V4(src)))))
            }
            TunnResult::WriteToTunnelV6(b, src) => {
                Ok(Some((false, region(out_ptr(b), b.len()), Some(IpAddr::V6(src)))))
            }
        };
        let authenticated = result.is_ok();
        // Roaming: an authenticated datagram from a new address is where the peer is now, unless the node's
        // verified path says where to send (the node moves paths itself and knows LAN from public).
        if authenticated && s.endpoint.is_none_or(|e| e.source != EndpointSource::Path && e.remote != source) {
            s.endpoint = Some(Endpoint { local, remote: source, source: EndpointSource::Learned });
        }
        drop(s);
        match result {
            Err(e) => {
                peer.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Decapsulated::Dropped(Drop::Rejected(Some(id), e.into()))
            }
            Ok(None) => Decapsulated::Done(id),
            Ok(Some((true, (ptr, len), _))) => {
                let len = move_to_front(out, ptr, len);
                // A handshake response or cookie answers the datagram's source, where the peer is now.
                Decapsulated::Reply(Transmit { local, dst: source, len, ttl: None }, Some(id))
            }
            Ok(Some((false, (ptr, len), src))) => {
                let offset = ptr.wrapping_sub(out.as_ptr() as usize);
                if src.is_none_or(|ip| self.routes.lookup(ip) != Some(i)) {
                    peer.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return Decapsulated::Dropped(Drop::SourceNotAllowed(id));
                }
                peer.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                peer.counters.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                Decapsulated::ToTun { offset, len, peer: id }
            }
        }
    }

    /// The next packet that waited for `peer`'s handshake, encrypted into `out`; call after a
    /// [`Decapsulated::Reply`] or [`Decapsulated::Done`] until `None`.
    pub fn flush(&self, peer: PeerId, out: &mut [u8]) -> Option<Transmit> {
        let p = self.peers.get(peer.0)?;
        if out.len() < MIN_BUFFER {
            return None;
        }
        let mut s = p.lock();
        let ep = s.endpoint?;
        let (ptr, len) = match s.tunn.decapsulate(None, &[], out) {
            TunnResult::WriteToNetwork(b) => region(out_ptr(b), b.len()),
            _ => return None,
        };
        drop(s);
        let len = move_to_front(out, ptr, len);
        p.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
        Some(Transmit { local: ep.local, dst: ep.remote, len, ttl: None })
    }

    /// Runs `peer`'s WireGuard timers (handshake retries, rekeys, keepalives): a datagram to send, if any.
    /// Call every [`TIMER_TICK`] for every peer, then [`Tunnel::tick_limiter`] once.
    pub fn update_timers(&self, peer: PeerId, out: &mut [u8]) -> Option<Transmit> {
        let p = self.peers.get(peer.0)?;
        if out.len() < MIN_BUFFER {
            return None;
        }
        let mut s = p.lock();
        let ep = s.endpoint;
        let (ptr, len) = match s.tunn.update_timers(out) {
            TunnResult::WriteToNetwork(b) => region(out_ptr(b), b.len()),
            _ => return None,
        };
        drop(s);
        let ep = ep?;
        let len = move_to_front(out, ptr, len);
        Some(Transmit { local: ep.local, dst: ep.remote, len, ttl: None })
    }

    /// Ages the handshake rate limiter (once a second is what boringtun's device does).
    pub fn tick_limiter(&self) {
        self.limiter.reset_count();
    }

    /// Every peer's state.
    pub fn status(&self) -> Vec<TunnelPeerStatus> {
        self.peers
            .iter()
            .map(|p| {
                let s = p.lock();
                let (last_handshake, ..) = s.tunn.stats();
                TunnelPeerStatus {
                    name: p.name.clone(),
                    key: p.key,
                    allowed_ips: p.allowed.clone(),
                    endpoint: s.endpoint,
                    last_handshake,
                    tx_packets: p.counters.tx_packets.load(Ordering::Relaxed),
                    tx_bytes: p.counters.tx_bytes.load(Ordering::Relaxed),
                    rx_packets: p.counters.rx_packets.load(Ordering::Relaxed),
                    rx_bytes: p.counters.rx_bytes.load(Ordering::Relaxed),
                    dropped: p.counters.dropped.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Datagrams and packets no peer took (unknown keys or indices, no route).
    pub fn unknown(&self) -> u64 {
        self.counters.unknown.load(Ordering::Relaxed)
    }

    fn unknown_drop(&self, d: Drop) -> Decapsulated {
        self.counters.unknown.fetch_add(1, Ordering::Relaxed);
        Decapsulated::Dropped(d)
    }

    /// The peer a handshake initiation comes from: MAC1 (and, under load, the cookie's MAC2) checked first,
    /// so a stranger costs no Diffie-Hellman; then the initiator's static key decrypted and looked up.
    fn initiator(&self, source: SocketAddr, datagram: &[u8], out: &mut [u8]) -> Result<usize, Decapsulated> {
        let mut cookie = [0u8; packet::COOKIE_REPLY_LEN];
        let packet = match self.limiter.verify_packet(Some(source.ip()), datagram, &mut cookie) {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(c)) => {
                let len = c.len();
                out[..len].copy_from_slice(c);
                return Err(Decapsulated::Reply(Transmit { local: self.local, dst: source, len, ttl: None }, None));
            }
            Err(TunnResult::Err(e)) => return Err(self.unknown_drop(Drop::Rejected(None, e.into()))),
            Err(_) => return Err(self.unknown_drop(Drop::NotWireGuard)),
        };
        let Packet::HandshakeInit(init) = packet else { return Err(self.unknown_drop(Drop::NotWireGuard)) };
        let half = parse_handshake_anon(&self.secret, &self.public, &init)
            .map_err(|_| self.unknown_drop(Drop::UnknownPeer))?;
        let key = PublicKey(half.peer_static_public);
        self.peers.iter().position(|p| p.key == key).ok_or_else(|| self.unknown_drop(Drop::UnknownPeer))
    }
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel").field("local", &self.local).field("peers", &self.peers.len()).finish()
    }
}

fn out_ptr(b: &[u8]) -> usize {
    b.as_ptr() as usize
}

fn region(ptr: usize, len: usize) -> (usize, usize) {
    (ptr, len)
}

/// boringtun returns its result as a part of `out`; a transmit is read from the buffer's start.
fn move_to_front(out: &mut [u8], ptr: usize, len: usize) -> usize {
    let offset = ptr.wrapping_sub(out.as_ptr() as usize);
    if offset != 0 && offset.checked_add(len).is_some_and(|end| end <= out.len()) {
        out.copy_within(offset..offset + len, 0);
    }
    len
}

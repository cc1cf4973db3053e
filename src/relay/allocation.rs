//! One TURN allocation's state (RFC 8656 §2.2, §5): its relayed address, lifetime, permissions (§9) and
//! channel bindings (§12), and its bandwidth budget.
//!
//! Memory is bounded per allocation: at most [`MAX_PERMISSIONS`] permissions and [`MAX_CHANNELS`] channels,
//! kept in small vectors reserved on first use (a linear scan over a few dozen entries is faster than a hash
//! lookup and allocates nothing per packet). See [`Allocation::MAX_BYTES`].

use super::auth::Key;
use crate::net::Transport;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Permissions one allocation may hold (more: 508 Insufficient Capacity).
pub const MAX_PERMISSIONS: usize = 64;
/// Channels one allocation may bind (more: 508 Insufficient Capacity).
pub const MAX_CHANNELS: usize = 64;
/// RFC 8656 §12: after a channel binding expires, neither its number nor its peer may be bound to anything
/// else for 5 minutes, so late packets are never delivered to the wrong peer.
pub const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);

/// A permission (RFC 8656 §9): the peer IP, port ignored.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

/// A channel binding (RFC 8656 §12).
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// A byte budget refilled at a fixed rate (the per-allocation bandwidth limit), burst one second's worth.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u64, now: Instant) -> Bucket {
        Bucket { rate, tokens: rate, last: now }
    }

    /// Take `n` bytes if the budget allows (rate 0: unlimited).
    pub fn take(&mut self, now: Instant, n: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.last);
        if !dt.is_zero() {
            let add = (u128::from(self.rate) * dt.as_micros() / 1_000_000) as u64;
            if add > 0 {
                self.tokens = (self.tokens + add).min(self.rate);
                self.last = now;
            }
        }
        let n = n as u64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Allocation state. `relay` is None until the driver has opened the relay socket.
#[derive(Debug)]
pub struct Allocation {
    pub id: u64,
    pub client: SocketAddr,
    /// The server address the client talks to (the 5-tuple's server side).
    pub server: SocketAddr,
    pub relay: Option<SocketAddr>,
    /// The client-to-server transport (ChannelData is padded over TCP, RFC 8656 §12.5).
    pub transport: Transport,
    /// The USERNAME that created it: later requests must use the same (441 otherwise).
    pub username: Box<str>,
    /// The name the per-user quota counts.
    pub quota_name: Box<str>,
    pub key: Key,
    pub expires: Instant,
    /// The Allocate transaction that created it, so a retransmission gets the same success (RFC 8656 §7.2).
    pub transaction: [u8; 12],
    /// Whether the creating request carried FINGERPRINT (then the answer does too).
    pub fingerprint: bool,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    pub bucket: Bucket,
}

impl Allocation {
    /// Upper bound of one allocation's memory: the struct, both vectors full, the username (at most 512
    /// bytes, twice), and its entries in the server's two maps (generously 64 bytes each).
    pub const MAX_BYTES: usize = std::mem::size_of::<Allocation>()
        + MAX_PERMISSIONS * std::mem::size_of::<Permission>()
        + MAX_CHANNELS * std::mem::size_of::<Channel>()
        + 2 * 512
        + 2 * 64;

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.iter().any(|p| p.ip == ip && p.expires > now)
    }

    /// Install or refresh a permission; false when the table is full.
    pub fn permit(&mut self, ip: IpAddr, until: Instant) -> bool {
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = until;
            return true;
        }
        if self.permissions.len() >= MAX_PERMISSIONS {
            return false;
        }
        if self.permissions.capacity() == 0 {
            self.permissions.reserve_exact(8);
        }
        self.permissions.push(Permission { ip, expires: until });
        true
    }

    /// The live channel bound to `peer`.
    pub fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels.iter().find(|c| c.peer == peer && c.expires > now).map(|c| c.number)
    }

    /// The live peer of channel `number`.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels.iter().find(|c| c.number == number && c.expires > now).map(|c| c.peer)
    }

    /// Drop what has expired (channels after their quarantine). Returns true when the allocation itself
    /// has.
    pub fn sweep(&mut self, now: Instant) -> bool {
        self.permissions.retain(|p| p.expires > now);
        self.channels.retain(|c| c.expires + CHANNEL_QUARANTINE > now);
        self.expires <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert!(b.take(t0, 1000));
        assert!(!b.take(t0, 1));
        assert!(b.take(t0 + Duration::from_millis(500), 500));
        assert!(!b.take(t0 + Duration::from_millis(500), 1));
        let mut free = Bucket::new(0, t0);
        assert!(free.take(t0, usize::MAX));
    }

    #[test]
    fn memory_bound_is_small() {
        const { assert!(Allocation::MAX_BYTES < 8 * 1024) };
    }
}

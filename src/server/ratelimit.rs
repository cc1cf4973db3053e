//! Per-source-IP token bucket with bounded memory.
//!
//! The table is a fixed array of `sets × WAYS` slots chosen at construction, so memory never grows, whatever
//! the number of (possibly spoofed) sources. A source hashes (keyed, so an attacker cannot aim collisions) to
//! one set of [`WAYS`] slots. When its set is full, the slot that would forget the least is evicted: the one
//! whose bucket has refilled the most (an idle or one-request source), oldest first on ties. A source that is
//! being limited has an empty bucket and is evicted last, so a flood of spoofed one-shot sources pushes out
//! other one-shot sources before it frees an abuser.
//!
//! IPv6 sources are keyed by their /64 ([`Source`]): one host usually owns a whole /64 and could otherwise
//! rotate addresses to escape the limit.
//!
//! Sans-IO: the caller passes `now`; the limiter never reads a clock.

use super::source::Source;
use std::net::IpAddr;
use std::time::Instant;

/// Slots per set (set-associative table).
pub(crate) const WAYS: usize = 4;

/// Bytes of table memory per slot (see [`RateLimiter::memory_bytes`]).
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Token bucket parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per second allowed per source (IPv4 address or IPv6 /64). Must be > 0.
    pub rate_per_sec: u32,
    /// Requests a source may send in a burst above the sustained rate. Must be > 0.
    pub burst: u32,
    /// Table slots (rounded up to a power of two, at least 4, one set). Memory is `slots × SLOT_BYTES`.
    pub slots: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { rate_per_sec: 100, burst: 200, slots: 65536 }
    }
}

impl RateLimitConfig {
    /// The checks [`RateLimiter::new`] makes, without building the table (which may be hundreds of MiB).
    pub fn validate(&self) -> Result<(), RateLimitError> {
        if self.rate_per_sec == 0 {
            return Err(RateLimitError::ZeroRate);
        }
        if self.rate_per_sec > MAX_RATE {
            return Err(RateLimitError::RateTooHigh(self.rate_per_sec));
        }
        if self.burst == 0 || self.burst > MAX_BURST {
            return Err(RateLimitError::BadBurst(self.burst));
        }
        if self.slots > MAX_SLOTS {
            return Err(RateLimitError::TooManySlots(self.slots));
        }
        Ok(())
    }

    /// Slots the table really has: `slots` rounded up to a power of two, at least one set of 4.
    pub fn table_slots(&self) -> usize {
        self.slots.max(WAYS).next_power_of_two()
    }

    /// Bytes the limiter's table will take ([`table_slots`](Self::table_slots) × the size of one slot).
    pub fn memory_bytes(&self) -> usize {
        self.table_slots() * SLOT_BYTES
    }
}

/// Tokens are counted in thousandths so refill per millisecond is an integer: `rate_per_sec` milli-tokens/ms.
const TOKEN: u32 = 1000;
/// Upper bound on `burst` so `burst × TOKEN` fits a u32.
pub const MAX_BURST: u32 = 4_000_000;
/// Upper bound on `rate_per_sec`: a bucket must hold at least one second's worth of requests, so the rate
/// cannot usefully exceed the largest burst.
pub const MAX_RATE: u32 = MAX_BURST;
/// Upper bound on `slots` (16 Mi slots, 256 MiB): a typo in a flag must not take the host's memory.
pub const MAX_SLOTS: usize = 1 << 24;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Keyed hash of the source; 0 means empty.
    tag: u64,
    /// Milli-tokens left at `last_ms`.
    tokens: u32,
    /// Milliseconds since the limiter's epoch (wrapping), when `tokens` was computed.
    last_ms: u32,
}

/// Errors in a [`RateLimitConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    /// Rate of zero: use no limiter instead.
    #[error("rate limit must be at least 1 request per second")]
    ZeroRate,
    /// Rate above [`MAX_RATE`].
    #[error("rate limit of {0} requests per second is more than {MAX_RATE}")]
    RateTooHigh(u32),
    /// Burst of zero or above [`MAX_BURST`].
    #[error("rate-limit burst of {0} is not between 1 and {MAX_BURST}")]
    BadBurst(u32),
    /// Slots above [`MAX_SLOTS`].
    #[error("rate-limit table of {0} slots is more than {MAX_SLOTS}")]
    TooManySlots(usize),
}

/// Per-source token buckets in a fixed-size table.
pub struct RateLimiter {
    slots: Box<[Slot]>,
    /// `sets - 1`; sets is a power of two.
    set_mask: usize,
    seed: u64,
    epoch: Instant,
    rate: u32,
    capacity: u32,
}

impl RateLimiter {
    /// A limiter whose clock starts at `now`. `seed` keys the hash: pass a random value so outsiders cannot
    /// predict which sources share a set.
    pub fn new(config: RateLimitConfig, seed: u64, now: Instant) -> Result<Self, RateLimitError> {
        config.validate()?;
        let slots = config.table_slots();
        Ok(RateLimiter {
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            set_mask: slots / WAYS - 1,
            seed,
            epoch: now,
            rate: config.rate_per_sec,
            capacity: config.burst * TOKEN,
        })
    }

    /// Bytes held by the table (the whole memory bound of the limiter).
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * SLOT_BYTES
    }

    /// Number of slots in the table.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Milliseconds since the epoch, wrapping every ~49 days; ages are computed with wrapping subtraction.
    pub fn clock_ms(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// Takes one token for `ip` at `now`; false when the source is over its limit.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let now_ms = self.clock_ms(now);
        self.allow_ms(now_ms, ip)
    }

    /// [`allow`](Self::allow) with the time already converted by [`clock_ms`](Self::clock_ms) (once per batch).
    pub fn allow_ms(&mut self, now_ms: u32, ip: IpAddr) -> bool {
        let tag = self.tag(ip);
        let set = (tag as usize) & self.set_mask;
        let base = set * WAYS;
        let (rate, capacity) = (self.rate, self.capacity);
        let ways = &mut self.slots[base..base + WAYS];

        if let Some(slot) = ways.iter_mut().find(|s| s.tag == tag) {
            let tokens = refill(slot, now_ms, rate, capacity);
            slot.last_ms = now_ms;
            if tokens >= TOKEN {
                slot.tokens = tokens - TOKEN;
                return true;
            }
            slot.tokens = tokens;
            return false;
        }

        // New source: take an empty slot, else evict the fullest bucket (oldest on ties).
        let mut victim = 0;
        let mut best = (0u32, 0u32);
        for (i, slot) in ways.iter().enumerate() {
            if slot.tag == 0 {
                victim = i;
                break;
            }
            let key = (refill(slot, now_ms, rate, capacity), now_ms.wrapping_sub(slot.last_ms));
            if i == 0 || key > best {
                best = key;
                victim = i;
            }
        }
        ways[victim] = Slot { tag, tokens: capacity - TOKEN, last_ms: now_ms };
        true
    }

    fn tag(&self, ip: IpAddr) -> u64 {
        // Family goes into the input so an IPv4 address and an IPv6 prefix never share a key.
        let x = match Source::of(ip) {
            Source::V4(v4) => u64::from(u32::from(v4)) | (1 << 32),
            Source::V6Prefix(prefix) => prefix ^ 0x5bd1_e995_0000_0000,
        };
        let h = mix(x ^ self.seed).wrapping_add(self.seed.rotate_left(17));
        let h = mix(h);
        if h == 0 {
            1
        } else {
            h
        }
    }
}

/// Tokens a slot holds at `now_ms` (does not store them).
fn refill(slot: &Slot, now_ms: u32, rate: u32, capacity: u32) -> u32 {
    let elapsed = now_ms.wrapping_sub(slot.last_ms);
    // A wrapped or huge gap just means "full".
    let added = u64::from(elapsed) * u64::from(rate);
    (u64::from(slot.tokens) + added).min(u64::from(capacity)) as u32
}

/// A strong 64-bit mixer (the splitmix64 finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn limiter(rate: u32, burst: u32, slots: usize) -> (RateLimiter, Instant) {
        let t0 = Instant::now();
        (RateLimiter::new(RateLimitConfig { rate_per_sec: rate, burst, slots }, 42, t0).unwrap(), t0)
    }

    #[test]
    fn burst_then_limited_then_refill() {
        let (mut rl, t0) = limiter(10, 5, 64);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        for _ in 0..5 {
            assert!(rl.allow(t0, ip));
        }
        assert!(!rl.allow(t0, ip));
        // 10/s: one token per 100 ms.
        assert!(!rl.allow(t0 + Duration::from_millis(99), ip));
        // The 0.99 token from the refused attempt is kept: 2 tokens at 200 ms.
        assert!(rl.allow(t0 + Duration::from_millis(200), ip));
        assert!(rl.allow(t0 + Duration::from_millis(200), ip));
        assert!(!rl.allow(t0 + Duration::from_millis(200), ip));
        // Long idle refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(rl.allow(later, ip));
        }
        assert!(!rl.allow(later, ip));
    }

    #[test]
    fn sources_are_independent() {
        let (mut rl, t0) = limiter(1, 1, 64);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert!(rl.allow(t0, a));
        assert!(!rl.allow(t0, a));
        assert!(rl.allow(t0, b));
    }

    #[test]
    fn ipv6_keyed_by_slash64() {
        let (mut rl, t0) = limiter(1, 1, 64);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(rl.allow(t0, a));
        assert!(!rl.allow(t0, b), "same /64 shares the bucket");
        assert!(rl.allow(t0, c));
        // An IPv4-mapped address is the IPv4 source.
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        assert!(rl.allow(t0, v4));
        assert!(!rl.allow(t0, mapped));
        assert!(rl.allow(t0, IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn memory_is_fixed_under_spoofed_flood_and_abuser_stays_limited() {
        let (mut rl, t0) = limiter(1, 2, 256);
        let before = rl.memory_bytes();
        assert_eq!(rl.slots(), 256);
        let abuser = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
        assert!(rl.allow(t0, abuser));
        assert!(rl.allow(t0, abuser));
        assert!(!rl.allow(t0, abuser));
        // One million spoofed one-shot sources, all in the same millisecond: every one is allowed once.
        for i in 0..1_000_000u32 {
            assert!(rl.allow(t0, IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))));
        }
        assert_eq!(rl.memory_bytes(), before);
        // The abuser's empty bucket was never the eviction victim.
        assert!(!rl.allow(t0, abuser));
    }

    #[test]
    fn clock_wrap_and_time_going_backwards_do_not_panic() {
        let (mut rl, t0) = limiter(5, 1, 8);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(rl.allow_ms(u32::MAX - 1, ip));
        assert!(rl.allow_ms(500, ip), "wrapped clock counts as elapsed time");
        // An Instant before the epoch saturates to 0 instead of panicking.
        let cfg = RateLimitConfig { rate_per_sec: 1, burst: 1, slots: 8 };
        let mut rl = RateLimiter::new(cfg, 1, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(rl.clock_ms(t0), 0);
        assert!(rl.allow(t0, ip));
    }

    #[test]
    fn config_is_checked() {
        let t0 = Instant::now();
        let c = |rate, burst, slots| RateLimiter::new(RateLimitConfig { rate_per_sec: rate, burst, slots }, 1, t0);
        assert_eq!(c(0, 1, 8).err(), Some(RateLimitError::ZeroRate));
        assert_eq!(c(1, 0, 8).err(), Some(RateLimitError::BadBurst(0)));
        assert_eq!(c(1, MAX_BURST + 1, 8).err(), Some(RateLimitError::BadBurst(MAX_BURST + 1)));
        assert_eq!(c(1, 1, MAX_SLOTS + 1).err(), Some(RateLimitError::TooManySlots(MAX_SLOTS + 1)));
        // The rate is judged before the burst: a huge rate is reported as such, not as a bad burst.
        assert_eq!(c(u32::MAX, u32::MAX, 8).err(), Some(RateLimitError::RateTooHigh(u32::MAX)));
        assert!(c(MAX_RATE, MAX_BURST, 8).is_ok());
        let cfg = RateLimitConfig { rate_per_sec: 1, burst: 1, slots: 100 };
        assert_eq!(cfg.memory_bytes(), 128 * SLOT_BYTES);
        assert_eq!(c(1, 1, 5).unwrap().slots(), 8);
        assert_eq!(c(1, 1, 0).unwrap().slots(), WAYS);
    }
}

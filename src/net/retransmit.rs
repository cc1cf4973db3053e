//! Request retransmission: the RFC 8489 §6.2.1 schedule, which also expresses the NAT-PMP (RFC 6886 §3.1)
//! and PCP (RFC 6887 §8.1.1) schedules, and the RTO cache of §6.2.1.
//!
//! A request is sent at 0, RTO, 3·RTO, 7·RTO, … (the interval doubles, up to `max_interval`) until Rc
//! requests have been sent; after the last one the client waits Rm·RTO more (also at most `max_interval`) and
//! then declares the transaction failed. Defaults: RTO 500 ms, Rc 7, Rm 16, no cap, so a transaction with no
//! answer fails after 39.5 s.
//!
//! [`RtoCache`] implements the rest of §6.2.1: the RTO is computed as in RFC 6298 (with the two exceptions
//! §6.2.1 makes: no rounding up to 1 s, and an initial RTO of at least 500 ms) and cached per server IP
//! address, so a transaction to a server that already answered starts with an RTO fitted to its round trip.

use std::net::IpAddr;
use std::time::Duration;

/// Retransmission parameters (RFC 8489 §6.2.1, with the interval cap RFC 6887 §8.1.1 calls MRT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmit {
    /// Initial retransmission timeout (RFC 8489 RTO, RFC 6887 IRT).
    pub rto: Duration,
    /// Number of requests sent in total (Rc), at least 1.
    pub rc: u32,
    /// Multiple of RTO waited after the last request (Rm).
    pub rm: u32,
    /// Upper bound of any one wait (RFC 6887 MRT); `Duration::MAX` for none (RFC 8489).
    pub max_interval: Duration,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit::rfc8489()
    }
}

impl Retransmit {
    /// Largest Rc accepted: past 2^63·RTO every wait saturates anyway.
    pub const MAX_RC: u32 = 64;

    /// RFC 8489 §6.2.1 defaults: RTO 500 ms, Rc 7, Rm 16 (39.5 s without an answer).
    pub const fn rfc8489() -> Self {
        Retransmit { rto: Duration::from_millis(500), rc: 7, rm: 16, max_interval: Duration::MAX }
    }

    /// RFC 6886 §3.1 exactly: 250 ms doubling, nine sends, the last wait 64 s (127.75 s in all).
    pub const fn natpmp_rfc6886() -> Self {
        Retransmit { rto: Duration::from_millis(250), rc: 9, rm: 256, max_interval: Duration::from_secs(64) }
    }

    /// RFC 6887 §8.1.1 (IRT 3 s, MRT 1024 s) with a count bound, which the RFC leaves to the application (it
    /// retransmits forever). The last wait doubles like the others. Random jitter (RAND) is left out.
    pub const fn pcp_rfc6887(sends: u32) -> Self {
        let sends = if sends == 0 { 1 } else { sends };
        let shift = if sends - 1 > 31 { 31 } else { sends - 1 };
        Retransmit { rto: Duration::from_secs(3), rc: sends, rm: 1 << shift, max_interval: Duration::from_secs(1024) }
    }

    /// Short schedule for port-mapping diagnostics: 250 ms doubling, four sends, 3.75 s in all.
    pub const fn diagnostic() -> Self {
        Retransmit { rto: Duration::from_millis(250), rc: 4, rm: 8, max_interval: Duration::MAX }
    }

    fn sends(&self) -> u32 {
        self.rc.clamp(1, Self::MAX_RC)
    }

    /// The wait that follows send number `k` (1-based): RTO·2^(k-1) before the last send, Rm·RTO after it,
    /// never more than `max_interval`.
    pub fn interval_after(&self, k: u32) -> Duration {
        let wait = if k >= self.sends() {
            mul(self.rto, u64::from(self.rm))
        } else {
            mul(self.rto, 1u64 << (k.max(1) - 1).min(63))
        };
        wait.min(self.max_interval)
    }

    /// Offset from the first send at which send number `n` (0-based) goes out; `None` once `n >= rc`.
    pub fn send_offset(&self, n: u32) -> Option<Duration> {
        if n >= self.sends() {
            return None;
        }
        Some((1..=n).fold(Duration::ZERO, |acc, k| acc.saturating_add(self.interval_after(k))))
    }

    /// Offset from the first send at which the transaction is declared failed.
    pub fn give_up_after(&self) -> Duration {
        let last = self.sends();
        let offset = self.send_offset(last - 1).unwrap_or_default();
        offset.saturating_add(self.interval_after(last))
    }

    /// This schedule with another initial RTO (a transaction's RTO from the [`RtoCache`]).
    pub fn with_rto(self, rto: Duration) -> Self {
        Retransmit { rto, ..self }
    }
}

/// RFC 6298 clock granularity G. RFC 8489 §6.2.1 asks for 1 ms accuracy; our clocks are finer than that.
pub const CLOCK_GRANULARITY: Duration = Duration::from_millis(1);

/// Default floor of a learned RTO. A loopback or LAN round trip is well under 1 ms, so RFC 6298 alone would
/// give an RTO of a few milliseconds; but the answer also waits for the server's and our own threads to be
/// scheduled, which on a loaded machine takes tens of milliseconds now and then. 100 ms keeps those late
/// answers from being taken for losses while still cutting a silent transaction from 39.5 s to 7.9 s.
pub const DEFAULT_MIN_RTO: Duration = Duration::from_millis(100);

/// Smoothed round-trip time and its variation (RFC 6298 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimate {
    pub srtt: Duration,
    pub rttvar: Duration,
}

impl RttEstimate {
    /// RFC 6298 §2.2: the first measurement R gives SRTT = R, RTTVAR = R/2.
    pub fn first(r: Duration) -> Self {
        RttEstimate { srtt: r, rttvar: r / 2 }
    }

    /// RFC 6298 §2.3 with alpha = 1/8, beta = 1/4: RTTVAR first (it uses the old SRTT), then SRTT.
    pub fn update(&mut self, r: Duration) {
        let diff = self.srtt.abs_diff(r);
        self.rttvar = (self.rttvar * 3 + diff) / 4;
        self.srtt = (self.srtt * 7 + r) / 8;
    }

    /// RTO = SRTT + max(G, 4 * RTTVAR), without RFC 6298's 1 s minimum (RFC 8489 §6.2.1).
    pub fn rto(&self) -> Duration {
        self.srtt.saturating_add(CLOCK_GRANULARITY.max(self.rttvar.saturating_mul(4)))
    }
}

/// RTT estimates per server IP address (RFC 8489 §6.2.1: "based on equality of IP address"), and the RTO a
/// new transaction to an address starts with.
///
/// Only answers to requests that were sent once are measured (Karn's algorithm): with the same transaction id
/// on every retransmission, an answer after a retransmission cannot say which send it answers. A transaction
/// that goes unanswered does not back the cached RTO off: here that is usually a negative test result (a filter
/// at work), not congestion, and each transaction still doubles its own RTO along the §6.2.1 schedule.
#[derive(Clone, Debug)]
pub struct RtoCache {
    initial: Duration,
    min: Duration,
    entries: Vec<(IpAddr, RttEstimate)>,
}

impl RtoCache {
    /// `initial`: the RTO of the first transaction to an address, and the ceiling of every learned one.
    /// `min`: the floor of a learned RTO (see [`DEFAULT_MIN_RTO`]); a floor above `initial` counts as `initial`.
    pub fn new(initial: Duration, min: Duration) -> Self {
        RtoCache { initial, min: min.min(initial), entries: Vec::new() }
    }

    /// A round trip to `ip` took `rtt` (the request was sent exactly once).
    pub fn sample(&mut self, ip: IpAddr, rtt: Duration) {
        match self.entries.iter_mut().find(|(a, _)| *a == ip) {
            Some((_, e)) => e.update(rtt),
            None => self.entries.push((ip, RttEstimate::first(rtt))),
        }
    }

    /// Give `ip` the estimate of `from` if `ip` has none yet (another address of the same server).
    pub fn seed(&mut self, ip: IpAddr, from: IpAddr) {
        if self.estimate(ip).is_some() {
            return;
        }
        if let Some(e) = self.estimate(from) {
            self.entries.push((ip, e));
        }
    }

    pub fn estimate(&self, ip: IpAddr) -> Option<RttEstimate> {
        self.entries.iter().find(|(a, _)| *a == ip).map(|(_, e)| *e)
    }

    /// The RTO a transaction to `ip` starts with: the initial RTO until `ip` answered once, then the RFC 6298
    /// value kept within [min, initial].
    pub fn rto(&self, ip: IpAddr) -> Duration {
        match self.estimate(ip) {
            Some(e) => e.rto().clamp(self.min, self.initial),
            None => self.initial,
        }
    }
}

fn mul(d: Duration, factor: u64) -> Duration {
    let nanos = d.as_nanos().saturating_mul(u128::from(factor));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8489_default_schedule() {
        let r = Retransmit::default();
        let offsets: Vec<u64> = (0..8).filter_map(|n| r.send_offset(n)).map(|d| d.as_millis() as u64).collect();
        // RFC 8489 §6.2.1: "requests would be sent at times 0 ms, 500 ms, 1500 ms, 3500 ms, 7500 ms,
        // 15500 ms, and 31500 ms", failure at 39500 ms.
        assert_eq!(offsets, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(r.give_up_after(), Duration::from_millis(39500));
    }

    #[test]
    fn custom_schedule() {
        let r = Retransmit { rto: Duration::from_millis(100), rc: 3, rm: 4, ..Retransmit::default() };
        assert_eq!(r.send_offset(2), Some(Duration::from_millis(300)));
        assert_eq!(r.send_offset(3), None);
        assert_eq!(r.give_up_after(), Duration::from_millis(700));
    }

    #[test]
    fn rfc6298_estimator() {
        let ms = Duration::from_millis;
        let mut e = RttEstimate::first(ms(20));
        assert_eq!((e.srtt, e.rttvar, e.rto()), (ms(20), ms(10), ms(60)));
        e.update(ms(20));
        // RTTVAR = 3/4 * 10 + 1/4 * |20 - 20| = 7.5 ms; SRTT stays 20 ms.
        assert_eq!((e.srtt, e.rttvar, e.rto()), (ms(20), Duration::from_micros(7500), ms(50)));
        e.update(ms(100));
        // RTTVAR = 3/4 * 7.5 + 1/4 * 80 = 25.625 ms; SRTT = 7/8 * 20 + 1/8 * 100 = 30 ms.
        assert_eq!((e.srtt, e.rttvar), (ms(30), Duration::from_micros(25625)));
        assert_eq!(e.rto(), Duration::from_micros(132_500));
        // A zero round trip still leaves G.
        assert_eq!(RttEstimate { srtt: Duration::ZERO, rttvar: Duration::ZERO }.rto(), CLOCK_GRANULARITY);
    }

    #[test]
    fn cache_per_ip_with_floor_and_ceiling() {
        let ms = Duration::from_millis;
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut c = RtoCache::new(ms(500), ms(100));
        assert_eq!(c.rto(a), ms(500), "nothing learned: the configured initial RTO");
        c.sample(a, ms(20));
        assert_eq!(c.rto(a), ms(100), "60 ms computed, floored");
        assert_eq!(c.rto(b), ms(500), "another IP learns nothing from it");
        c.seed(b, a);
        assert_eq!(c.estimate(b), c.estimate(a));
        c.sample(b, ms(1000));
        assert_eq!(c.rto(b), ms(500), "capped at the initial RTO");
        c.seed(b, a);
        assert_eq!(c.estimate(b).unwrap().srtt, Duration::from_micros(142_500), "seed never overwrites");
        let mut low = RtoCache::new(ms(50), ms(100));
        low.sample(a, Duration::from_micros(100));
        assert_eq!(low.rto(a), ms(50), "a floor above the initial RTO is the initial RTO");
        let mut fine = RtoCache::new(ms(500), ms(1));
        fine.sample(a, ms(20));
        assert_eq!(fine.rto(a), ms(60));
    }

    #[test]
    fn zero_rc_still_sends_once() {
        let r = Retransmit { rto: Duration::from_millis(100), rc: 0, rm: 1, ..Retransmit::default() };
        assert_eq!(r.send_offset(0), Some(Duration::ZERO));
        assert_eq!(r.send_offset(1), None);
        assert_eq!(r.give_up_after(), Duration::from_millis(100));
    }

    #[test]
    fn rfc6886_schedule_is_250ms_doubling_to_64s() {
        let r = Retransmit::natpmp_rfc6886();
        let waits: Vec<u64> = (1..=9).map(|k| r.interval_after(k).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000]);
        assert_eq!(r.give_up_after(), Duration::from_millis(127_750));
    }

    #[test]
    fn diagnostic_total_is_short() {
        let r = Retransmit::diagnostic();
        let waits: Vec<u64> = (1..=4).map(|k| r.interval_after(k).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000]);
        assert_eq!(r.give_up_after(), Duration::from_millis(3750));
    }

    #[test]
    fn pcp_cap_and_huge_counts_do_not_overflow() {
        let r = Retransmit::pcp_rfc6887(100);
        assert_eq!(r.rc, 100);
        assert_eq!(r.interval_after(1), Duration::from_secs(3));
        assert_eq!(r.interval_after(9), Duration::from_secs(768));
        assert_eq!(r.interval_after(10), Duration::from_secs(1024));
        assert_eq!(r.interval_after(u32::MAX), Duration::from_secs(1024));
        assert!(r.give_up_after() > Duration::from_secs(1024 * 50));
        let short = Retransmit::pcp_rfc6887(2);
        assert_eq!(short.give_up_after(), Duration::from_secs(3 + 6));
        let huge = Retransmit { rto: Duration::MAX, rc: u32::MAX, rm: u32::MAX, max_interval: Duration::MAX };
        assert!(huge.give_up_after() >= Duration::from_nanos(u64::MAX), "saturates, never panics");
    }
}

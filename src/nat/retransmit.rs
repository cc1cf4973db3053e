//! RFC 8489 §6.2.1 client retransmission schedule for requests over UDP.
//!
//! A request is sent at 0, RTO, 3·RTO, 7·RTO, … (the interval doubles) until Rc requests have been sent; after
//! the last one the client waits Rm·RTO more and then declares the transaction failed. Defaults: RTO 500 ms,
//! Rc 7, Rm 16, so a transaction with no answer fails after 39.5 s.

use std::time::Duration;

/// Retransmission parameters (RFC 8489 §6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmit {
    /// Initial retransmission timeout.
    pub rto: Duration,
    /// Number of requests sent in total (Rc), at least 1.
    pub rc: u32,
    /// Multiple of RTO waited after the last request (Rm).
    pub rm: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit { rto: Duration::from_millis(500), rc: 7, rm: 16 }
    }
}

impl Retransmit {
    /// Largest Rc accepted: 2^31·RTO would overflow any useful wait anyway.
    pub const MAX_RC: u32 = 30;

    /// Offset from the first send at which send number `n` (0-based) goes out; `None` once `n >= rc`.
    pub fn send_offset(&self, n: u32) -> Option<Duration> {
        if n >= self.rc.clamp(1, Self::MAX_RC) {
            return None;
        }
        let factor = (1u64 << n) - 1;
        Some(mul(self.rto, factor))
    }

    /// Offset from the first send at which the transaction is declared failed.
    pub fn give_up_after(&self) -> Duration {
        let rc = self.rc.clamp(1, Self::MAX_RC);
        let last = self.send_offset(rc - 1).unwrap_or_default();
        last.saturating_add(mul(self.rto, u64::from(self.rm)))
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
        let r = Retransmit { rto: Duration::from_millis(100), rc: 3, rm: 4 };
        assert_eq!(r.send_offset(2), Some(Duration::from_millis(300)));
        assert_eq!(r.send_offset(3), None);
        assert_eq!(r.give_up_after(), Duration::from_millis(700));
    }

    #[test]
    fn zero_rc_still_sends_once() {
        let r = Retransmit { rto: Duration::from_millis(100), rc: 0, rm: 1 };
        assert_eq!(r.send_offset(0), Some(Duration::ZERO));
        assert_eq!(r.send_offset(1), None);
        assert_eq!(r.give_up_after(), Duration::from_millis(100));
    }
}

//! Server epoch checks: has the gateway lost its mapping state (rebooted) since the last response?
//!
//! NAT-PMP: RFC 6886 §3.6 (seconds since start of epoch must grow by at least 7/8 of the client's elapsed time,
//! 2 s slack). PCP: RFC 6887 §8.5 (no going back by more than 1 s; deltas agree within 1/16 plus 2 s).

use std::time::Instant;

/// Which RFC's rule to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochRule {
    /// RFC 6886 §3.6.
    NatPmp,
    /// RFC 6887 §8.5.
    Pcp,
}

/// Remembers the last epoch value a server sent and when it arrived.
#[derive(Debug, Clone)]
pub struct EpochTracker {
    rule: EpochRule,
    last: Option<(u32, Instant)>,
}

impl EpochTracker {
    pub fn new(rule: EpochRule) -> Self {
        EpochTracker { rule, last: None }
    }

    /// Last epoch value seen.
    pub fn last(&self) -> Option<u32> {
        self.last.map(|(e, _)| e)
    }

    /// Record an epoch value received at `now`. Returns true when it shows the server lost its state, so every
    /// mapping must be renewed. The first value is always valid.
    pub fn observe(&mut self, server_epoch: u32, now: Instant) -> bool {
        let lost = match self.last {
            None => false,
            Some((prev, at)) => {
                let client_ms = now.saturating_duration_since(at).as_millis().min(i64::MAX as u128) as i64;
                let server_ms = (i64::from(server_epoch) - i64::from(prev)) * 1000;
                match self.rule {
                    // SSSoE < prev + 7/8 × elapsed − 2 s
                    EpochRule::NatPmp => server_ms < client_ms * 7 / 8 - 2000,
                    EpochRule::Pcp => {
                        if server_ms < -1000 {
                            true
                        } else {
                            client_ms + 2000 < server_ms - server_ms / 16
                                || server_ms + 2000 < client_ms - client_ms / 16
                        }
                    }
                }
            }
        };
        self.last = Some((server_epoch, now));
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn natpmp_rule() {
        let t0 = Instant::now();
        let mut e = EpochTracker::new(EpochRule::NatPmp);
        assert!(!e.observe(1000, t0));
        // 100 s later the server must show at least 1000 + 87.5 - 2.
        assert!(!e.observe(1086, t0 + Duration::from_secs(100)));
        let mut e = EpochTracker::new(EpochRule::NatPmp);
        e.observe(1000, t0);
        assert!(e.observe(1085, t0 + Duration::from_secs(100)));
        // A reboot: the epoch restarts near zero.
        let mut e = EpochTracker::new(EpochRule::NatPmp);
        e.observe(1000, t0);
        assert!(e.observe(3, t0 + Duration::from_secs(5)));
        assert_eq!(e.last(), Some(3));
    }

    #[test]
    fn pcp_rule() {
        let t0 = Instant::now();
        let mut e = EpochTracker::new(EpochRule::Pcp);
        assert!(!e.observe(500, t0));
        // Reordering by one second is tolerated.
        assert!(!e.observe(499, t0));
        let mut e = EpochTracker::new(EpochRule::Pcp);
        e.observe(500, t0);
        assert!(e.observe(498, t0));
        // Server time running far ahead of the client's is invalid too.
        let mut e = EpochTracker::new(EpochRule::Pcp);
        e.observe(500, t0);
        assert!(e.observe(600, t0 + Duration::from_secs(10)));
        let mut e = EpochTracker::new(EpochRule::Pcp);
        e.observe(500, t0);
        assert!(!e.observe(511, t0 + Duration::from_secs(10)));
        assert!(!e.observe(u32::MAX, t0 + Duration::from_secs(u64::from(u32::MAX) - 511 + 10)));
    }
}

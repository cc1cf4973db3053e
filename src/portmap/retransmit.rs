//! Request retransmission schedule shared by the NAT-PMP and PCP engines.
//!
//! RFC 6886 §3.1: first wait 250 ms, doubling, give up after the ninth send (64 s wait). RFC 6887 §8.1.1: IRT 3 s,
//! MRT 1024 s, no count bound. Both are the same shape (initial interval, doubling, cap, count); a diagnostic
//! tool wants a short bound, long-running daemons the RFC's, so the bound is the caller's.

use std::time::{Duration, Instant};

/// How often and how long a request is sent before the engine gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Wait after the first send.
    pub initial: Duration,
    /// Upper bound of one wait (the doubling stops here).
    pub max_interval: Duration,
    /// Total sends, the first included; at least 1.
    pub max_sends: u32,
}

impl Retransmit {
    /// RFC 6886 §3.1 exactly: 250 ms doubling, nine sends, the last wait 64 s (about 128 s in all).
    pub const fn natpmp_rfc6886() -> Self {
        Retransmit { initial: Duration::from_millis(250), max_interval: Duration::from_secs(64), max_sends: 9 }
    }

    /// RFC 6887 §8.1.1 (IRT 3 s, MRT 1024 s) with a count bound, which the RFC leaves to the application
    /// (it retransmits forever). Random jitter is left out: an engine has no randomness of its own.
    pub const fn pcp_rfc6887(max_sends: u32) -> Self {
        Retransmit { initial: Duration::from_secs(3), max_interval: Duration::from_secs(1024), max_sends }
    }

    /// Short schedule for diagnostics (the default): 250 ms doubling, four sends, 3.75 s in all.
    pub const fn diagnostic() -> Self {
        Retransmit { initial: Duration::from_millis(250), max_interval: Duration::from_secs(2), max_sends: 4 }
    }

    /// Wait that follows send number `sends` (1-based).
    pub fn interval_after(&self, sends: u32) -> Duration {
        let shift = sends.saturating_sub(1).min(31);
        let doubled = self.initial.checked_mul(1u32 << shift).unwrap_or(self.max_interval);
        doubled.min(self.max_interval).max(Duration::from_millis(1))
    }

    /// Time from the first send until the engine gives up.
    pub fn total(&self) -> Duration {
        (1..=self.max_sends.max(1)).map(|k| self.interval_after(k)).sum()
    }
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit::diagnostic()
    }
}

/// State of one request on the wire: when it is due again and how often it went out.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    schedule: Retransmit,
    sends: u32,
    first_send: Option<Instant>,
    /// When to send next (or give up); `None` before the first send.
    deadline: Option<Instant>,
    /// A send is owed (start, or a retransmission that came due).
    due: bool,
}

/// What a timeout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    Nothing,
    Resend,
    GiveUp { sends: u32, waited: Duration },
}

impl Timer {
    pub(crate) fn new(schedule: Retransmit) -> Self {
        Timer { schedule, sends: 0, first_send: None, deadline: None, due: true }
    }

    pub(crate) fn wants_send(&self) -> bool {
        self.due
    }

    /// Record a send at `now` and arm the next deadline.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.sends += 1;
        self.due = false;
        self.first_send.get_or_insert(now);
        self.deadline = Some(now + self.schedule.interval_after(self.sends));
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.due {
            None
        } else {
            self.deadline
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Tick {
        match self.deadline {
            Some(d) if !self.due && now >= d => {
                if self.sends >= self.schedule.max_sends.max(1) {
                    let waited = self.first_send.map(|f| now.saturating_duration_since(f)).unwrap_or_default();
                    self.deadline = None;
                    Tick::GiveUp { sends: self.sends, waited }
                } else {
                    self.due = true;
                    Tick::Resend
                }
            }
            _ => Tick::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6886_schedule_is_250ms_doubling_to_64s() {
        let r = Retransmit::natpmp_rfc6886();
        let waits: Vec<u64> = (1..=9).map(|k| r.interval_after(k).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000]);
        assert_eq!(r.total(), Duration::from_millis(127_750));
    }

    #[test]
    fn diagnostic_total_is_short() {
        assert_eq!(Retransmit::diagnostic().total(), Duration::from_millis(3750));
    }

    #[test]
    fn cap_and_huge_counts_do_not_overflow() {
        let r = Retransmit::pcp_rfc6887(100);
        assert_eq!(r.interval_after(1), Duration::from_secs(3));
        assert_eq!(r.interval_after(9), Duration::from_secs(768));
        assert_eq!(r.interval_after(10), Duration::from_secs(1024));
        assert_eq!(r.interval_after(u32::MAX), Duration::from_secs(1024));
    }

    #[test]
    fn timer_gives_up_after_max_sends() {
        let t0 = Instant::now();
        let mut t = Timer::new(Retransmit {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_secs(1),
            max_sends: 2,
        });
        assert!(t.wants_send());
        t.sent(t0);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(t.handle_timeout(t0 + Duration::from_millis(99)), Tick::Nothing);
        assert_eq!(t.handle_timeout(t0 + Duration::from_millis(100)), Tick::Resend);
        assert!(t.wants_send());
        t.sent(t0 + Duration::from_millis(100));
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_millis(300)),
            Tick::GiveUp { sends: 2, waited: Duration::from_millis(300) }
        );
        assert_eq!(t.deadline(), None);
    }
}

//! The retransmission state of one NAT-PMP or PCP request (RFC 6886 §3.1, RFC 6887 §8.1.1) on the library's
//! one schedule, [`net::Retransmit`](crate::net::Retransmit): when it is due again, how often it went out, when
//! to give up.
//!
//! RFC 6886 §3.1 is `Retransmit::natpmp_rfc6886()`; RFC 6887 §8.1.1 retransmits forever, so its count bound is
//! the caller's (`Retransmit::pcp_rfc6887(n)`); a diagnostic tool wants `Retransmit::diagnostic()`.

use std::time::{Duration, Instant};

use crate::net::Retransmit;

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

    /// Sends so far.
    pub(crate) fn sends(&self) -> u32 {
        self.sends
    }

    pub(crate) fn wants_send(&self) -> bool {
        self.due
    }

    /// Record a send at `now` and arm the next deadline.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.sends += 1;
        self.due = false;
        self.first_send.get_or_insert(now);
        // A schedule without a cap may ask for a wait past what `Instant` holds: a year is forever enough.
        let wait = self.schedule.interval_after(self.sends).min(Duration::from_secs(365 * 24 * 3600));
        self.deadline = Some(now + wait);
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
                if self.sends >= self.schedule.rc.clamp(1, Retransmit::MAX_RC) {
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
    fn timer_gives_up_after_rc_sends() {
        let t0 = Instant::now();
        let mut t = Timer::new(Retransmit {
            rto: Duration::from_millis(100),
            rc: 2,
            rm: 2,
            max_interval: Duration::from_secs(1),
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

    #[test]
    fn diagnostic_schedule_sends_at_0_250_750_1750_and_gives_up_at_3750() {
        let t0 = Instant::now();
        let mut t = Timer::new(Retransmit::diagnostic());
        let mut now = t0;
        let mut sends = vec![];
        for _ in 0..10 {
            if t.wants_send() {
                sends.push(now.duration_since(t0).as_millis());
                t.sent(now);
            }
            let Some(d) = t.deadline() else { break };
            now = d;
            if let Tick::GiveUp { sends: n, waited } = t.handle_timeout(now) {
                assert_eq!((n, waited), (4, Duration::from_millis(3750)));
                break;
            }
        }
        assert_eq!(sends, [0, 250, 750, 1750]);
    }
}

//! Bounded birthday probing between a random dependent mapping (the hard side) and an endpoint-independent
//! one that filters by address and port (the easy side), RFC 5128 §3.4's "port prediction" made
//! probabilistic (docs/punchd.md, "Symmetric NATs"):
//!
//! - the hard side opens `sockets` extra sockets (through its driver) and sends one check from each to the
//!   easy side's public endpoint: each makes a mapping on its NAT at a random port, open to that endpoint;
//! - the easy side sends checks from its one endpoint to random ports of the hard side's public address.
//!
//! A check of the easy side that lands on one of the hard side's open mappings gets in and is answered: with
//! s mappings open among 65536 ports, n probes hit with probability 1 − (1 − s/65536)^n (≈ 98 % for s = 256,
//! n = 1024). Both sides send at most `rate` checks per second, the easy side at most `probes`, and
//! everything stops at `deadline` or as soon as a path opens.

use super::predict::{BirthdayParams, BirthdayRole};
use crate::net::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after its last probe a side still listens for an answer.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Birthday {
    pub role: BirthdayRole,
    pub params: BirthdayParams,
    /// Hard side: the easy side's public endpoint. Easy side: the hard side's public address (port ignored).
    pub target: SocketAddr,
    pub deadline: Instant,
    /// Over: the deadline passed or a path opened.
    pub expired: bool,
    pub next: Instant,
    /// Probes sent (easy side) or sockets probed from (hard side).
    pub sent: u32,
    /// Hard side: the extra sockets the driver opened for us, in order.
    pub sockets: Vec<SocketAddr>,
}

impl Birthday {
    pub fn new(role: BirthdayRole, params: BirthdayParams, target: SocketAddr, now: Instant) -> Birthday {
        let params = params.bounded();
        Birthday {
            role,
            params,
            target,
            deadline: now + params.max_duration() + ANSWER_WAIT,
            expired: false,
            next: now,
            sent: 0,
            sockets: Vec::new(),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.params.rate))
    }

    /// True while probes may still go out or answers come back.
    pub fn active(&self, now: Instant) -> bool {
        !self.expired && now < self.deadline
    }

    /// The next probe due at `now`, if any: (local socket, destination). Paced at `rate`, bounded by the
    /// socket or probe count and the deadline.
    pub fn next_probe(&mut self, now: Instant, rng: &mut Rng, main: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
        if now < self.next || !self.active(now) {
            return None;
        }
        let probe = match self.role {
            BirthdayRole::Hard => {
                let local = *self.sockets.get(self.sent as usize)?;
                (local, self.target)
            }
            BirthdayRole::Easy => {
                if self.sent >= self.params.probes {
                    return None;
                }
                // Ports below 1024 are never handed out by the NATs we meet.
                let port = 1024 + rng.below(64512) as u16;
                (main, SocketAddr::new(self.target.ip(), port))
            }
        };
        self.sent += 1;
        // Pace from the schedule, so a slightly late wake-up keeps the rate; after a long stall restart from
        // `now` instead of catching up in a burst.
        let base = if now > self.next + self.interval() { now } else { self.next };
        self.next = base + self.interval();
        Some(probe)
    }

    /// When the next probe is due (None when none will be).
    pub fn next_due(&self) -> Option<Instant> {
        let more = match self.role {
            BirthdayRole::Hard => (self.sent as usize) < self.sockets.len(),
            BirthdayRole::Easy => self.sent < self.params.probes,
        };
        (more && !self.expired && self.next < self.deadline).then_some(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easy_side_is_paced_and_capped() {
        let t0 = Instant::now();
        let params = BirthdayParams { sockets: 4, probes: 10, rate: 100 };
        let mut b = Birthday::new(BirthdayRole::Easy, params, "198.51.100.9:1".parse().unwrap(), t0);
        let mut rng = Rng::from_seed([1; 32]);
        let main = "10.0.0.1:6666".parse().unwrap();
        let mut sent = Vec::new();
        let mut now = t0;
        for _ in 0..1000 {
            let Some(due) = b.next_due() else { break };
            now = now.max(due);
            while let Some((l, d)) = b.next_probe(now, &mut rng, main) {
                assert_eq!(l, main);
                assert!(d.port() >= 1024);
                sent.push(now);
            }
        }
        assert_eq!(sent.len(), 10, "capped at `probes`");
        assert!(sent.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(10)), "at most `rate` per second");
        assert!(b.active(now));
        assert!(!b.active(t0 + Duration::from_millis(100) + ANSWER_WAIT));
    }

    #[test]
    fn hard_side_probes_once_from_each_socket() {
        let t0 = Instant::now();
        let params = BirthdayParams { sockets: 3, probes: 10, rate: 1000 };
        let target = "203.0.113.5:6666".parse().unwrap();
        let mut b = Birthday::new(BirthdayRole::Hard, params, target, t0);
        let mut rng = Rng::from_seed([1; 32]);
        let main = "10.0.0.1:6666".parse().unwrap();
        assert_eq!(b.next_probe(t0, &mut rng, main), None, "no socket opened yet");
        b.sockets = vec!["10.0.0.1:40000".parse().unwrap(), "10.0.0.1:40001".parse().unwrap()];
        let mut got = Vec::new();
        let mut now = t0;
        while let Some(due) = b.next_due() {
            now = now.max(due);
            got.extend(b.next_probe(now, &mut rng, main));
        }
        assert_eq!(got, vec![(b.sockets[0], target), (b.sockets[1], target)]);
    }
}

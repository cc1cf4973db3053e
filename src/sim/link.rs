//! One network link of the simulator: delay, jitter, random loss and reordering, drawn from the simulator's
//! seeded generator so a run replays exactly.

use crate::net::Rng;
use std::time::{Duration, Instant};

/// What a link does to every datagram crossing it (both directions). A datagram from a host behind a NAT to a
/// public server crosses the host's link, the NAT's uplink and the server's link, in that order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `0..=jitter`, per datagram. Datagrams overtake each other when it exceeds
    /// the gap between them, as on a real path.
    pub jitter: Duration,
    /// Probability (0.0..=1.0) that a datagram is lost.
    pub loss: f64,
    /// Probability (0.0..=1.0) that a datagram is held back by [`reorder_delay`](Link::reorder_delay), so
    /// later ones overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
}

impl Default for Link {
    /// 1 ms, nothing lost, nothing reordered.
    fn default() -> Self {
        Link::new(Duration::from_millis(1))
    }
}

impl Link {
    /// A perfect link with a fixed one-way `delay`.
    pub const fn new(delay: Duration) -> Link {
        Link { delay, jitter: Duration::ZERO, loss: 0.0, reorder: 0.0, reorder_delay: Duration::ZERO }
    }

    pub fn with_jitter(self, jitter: Duration) -> Link {
        Link { jitter, ..self }
    }

    pub fn with_loss(self, loss: f64) -> Link {
        Link { loss, ..self }
    }

    /// Hold back a fraction `probability` of datagrams by `by`.
    pub fn with_reordering(self, probability: f64, by: Duration) -> Link {
        Link { reorder: probability, reorder_delay: by, ..self }
    }

    /// When a datagram entering the link at `now` comes out, or None when it is lost.
    pub(crate) fn transit(&self, rng: &mut Rng, now: Instant) -> Option<Instant> {
        if chance(rng, self.loss) {
            return None;
        }
        let mut at = now + self.delay;
        if !self.jitter.is_zero() {
            let nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
            at += Duration::from_nanos(rng.below(nanos.saturating_add(1)));
        }
        if chance(rng, self.reorder) {
            at += self.reorder_delay;
        }
        Some(at)
    }
}

/// True with probability `p`; draws nothing when `p` is 0 or below, so a perfect link leaves the generator's
/// stream (and with it every other random choice of the run) untouched.
fn chance(rng: &mut Rng, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    const SCALE: u64 = 1 << 32;
    rng.below(SCALE) < (p * SCALE as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_link_draws_nothing() {
        let mut a = Rng::from_seed([1; 32]);
        let mut b = Rng::from_seed([1; 32]);
        let now = Instant::now();
        assert_eq!(Link::new(Duration::from_millis(5)).transit(&mut a, now), Some(now + Duration::from_millis(5)));
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let mut rng = Rng::from_seed([2; 32]);
        let now = Instant::now();
        let link = Link::new(Duration::from_millis(10)).with_jitter(Duration::from_millis(4));
        for _ in 0..1000 {
            let at = link.transit(&mut rng, now).unwrap();
            assert!(at >= now + Duration::from_millis(10) && at <= now + Duration::from_millis(14));
        }
    }
}

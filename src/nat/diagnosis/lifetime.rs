//! The mapping lifetime test (RFC 5780 §4.6), a sub-machine of the diagnosis: fresh sockets each make a
//! mapping, stay idle for a different time, and then a probe from another socket asks the server to answer
//! to the idle mapping's public port (RESPONSE-PORT, §7.5). An answer that arrives means the mapping lived
//! that long. A first round spreads the waits over the bound; later rounds refine the bracket between the
//! longest wait that lived and the shortest that did not.

use super::probe::{Got, Probe, ProbeSpec};
use super::Diagnosis;
use crate::nat::report::LifetimeRange;
use crate::transaction::FailReason;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Waits of the first round, in sixteenths of the bound (0 = calibration: proves RESPONSE-PORT works).
const LIFETIME_FIRST_ROUND: [u32; 6] = [0, 1, 2, 4, 8, 16];
const LIFETIME_REFINE_ROUNDS: usize = 3;
const LIFETIME_REFINE_PROBES: usize = 4;

/// Sockets the test needs: one prober and one per idle mapping.
pub(crate) const LIFETIME_SOCKETS: usize =
    1 + LIFETIME_FIRST_ROUND.len() + LIFETIME_REFINE_ROUNDS * LIFETIME_REFINE_PROBES;

#[derive(Clone, Debug)]
struct LifeProbe {
    wait: Duration,
    socket: usize,
    map_tx: usize,
    probe_tx: Option<usize>,
    /// Some(true) alive, Some(false) expired.
    alive: Option<bool>,
    /// Resolved without a usable result (mapping request failed, cancelled).
    void: bool,
}

#[derive(Clone, Debug)]
pub(super) struct LifeState {
    max_wait: Duration,
    start: Instant,
    prober: usize,
    free: VecDeque<usize>,
    probes: Vec<LifeProbe>,
    pub(super) result: Option<Result<LifetimeRange, String>>,
}

impl Diagnosis {
    /// Start the test at `now` on the plan's lifetime sockets.
    pub(super) fn life_start(&mut self, now: Instant, max_wait: Duration) {
        let mut sockets: VecDeque<usize> = self.plan.lifetime.clone().collect();
        let Some(prober) = sockets.pop_front() else { return };
        self.life = Some(LifeState { max_wait, start: now, prober, free: sockets, probes: Vec::new(), result: None });
        let waits: Vec<Duration> =
            LIFETIME_FIRST_ROUND.iter().map(|&k| max_wait.mul_f64(f64::from(k) / 16.0)).collect();
        self.life_round(now, &waits);
    }

    fn life_round(&mut self, now: Instant, waits: &[Duration]) {
        let Some(server) = self.reference.map(|r| self.cfg.servers[r]) else { return };
        for &wait in waits {
            let Some(life) = self.life.as_mut() else { return };
            let Some(socket) = life.free.pop_front() else { break };
            let idx = life.probes.len();
            let map_tx = self.start(now, ProbeSpec::new(Probe::LifeMap(idx), socket, server));
            if let Some(life) = self.life.as_mut() {
                life.probes.push(LifeProbe { wait, socket, map_tx, probe_tx: None, alive: None, void: false });
            }
        }
    }

    pub(super) fn advance_lifetime(&mut self, now: Instant, server: std::net::SocketAddr) {
        let Some(life) = self.life.as_ref() else { return };
        if life.result.is_some() {
            return;
        }
        let prober = life.prober;
        // Schedule probes whose mapping just arrived, collect outcomes.
        let mut schedule = Vec::new();
        let mut updates = Vec::new();
        for (i, p) in life.probes.iter().enumerate() {
            if p.alive.is_some() || p.void {
                continue;
            }
            match (self.outcome(p.map_tx), p.probe_tx) {
                (None, _) => {}
                (Some(Ok(Got::Answer(a))), None) => match a.mapped() {
                    Some(m) => schedule.push((i, m.port(), p.socket, p.wait)),
                    None => updates.push((i, None)),
                },
                (Some(_), None) => updates.push((i, None)),
                (Some(_), Some(t)) => match self.outcome(t) {
                    None => {}
                    Some(Ok(_)) => updates.push((i, Some(true))),
                    Some(Err(FailReason::NoAnswer { .. })) => updates.push((i, Some(false))),
                    Some(Err(r)) if p.wait.is_zero() && *r != FailReason::Cancelled => {
                        let why = format!("the server refused RESPONSE-PORT (RFC 5780 §7.5): {r}");
                        self.life_finish(Err(why));
                        return;
                    }
                    Some(Err(_)) => updates.push((i, None)),
                },
            }
        }
        for (i, port, socket, wait) in schedule {
            let spec = ProbeSpec::new(Probe::LifeCheck(i), prober, server).response_port(port, socket).after(wait);
            let t = self.start(now, spec);
            if let Some(life) = self.life.as_mut() {
                life.probes[i].probe_tx = Some(t);
            }
        }
        let Some(life) = self.life.as_mut() else { return };
        for (i, alive) in updates {
            match alive {
                Some(a) => life.probes[i].alive = Some(a),
                None => life.probes[i].void = true,
            }
        }
        // The immediate probe proves the method works; without it an expired-looking mapping means nothing.
        if let Some(cal) = life.probes.first() {
            if cal.void || cal.alive == Some(false) {
                self.life_finish(Err(
                    "a RESPONSE-PORT probe sent right after the mapping was made never arrived: the server does \
                     not support RESPONSE-PORT (RFC 5780 §7.5) or it was lost"
                        .into(),
                ));
                return;
            }
            if cal.alive.is_none() {
                return;
            }
        }
        let alive_max = life.probes.iter().filter(|p| p.alive == Some(true)).map(|p| p.wait).max().unwrap_or_default();
        let dead_min = life.probes.iter().filter(|p| p.alive == Some(false)).map(|p| p.wait).min();
        if let Some(dead) = dead_min {
            // Longer waits cannot tell more: stop them and free nothing (sockets were used already).
            let cancel: Vec<usize> = life
                .probes
                .iter()
                .filter(|p| p.wait > dead && p.alive.is_none() && !p.void)
                .flat_map(|p| [Some(p.map_tx), p.probe_tx])
                .flatten()
                .collect();
            for t in cancel {
                self.cancel(t);
            }
            let Some(life) = self.life.as_mut() else { return };
            for p in life.probes.iter_mut().filter(|p| p.wait > dead && p.alive.is_none()) {
                p.void = true;
            }
            let shorter_pending = life.probes.iter().any(|p| p.wait < dead && p.alive.is_none() && !p.void);
            if shorter_pending {
                return;
            }
            let gap = dead.saturating_sub(alive_max);
            let resolution = (dead / 10).max(Duration::from_secs(1));
            let deadline = life.start + life.max_wait;
            if gap > resolution && life.free.len() >= LIFETIME_REFINE_PROBES && now + dead <= deadline {
                let n = LIFETIME_REFINE_PROBES as u32 + 1;
                let waits: Vec<Duration> = (1..n).map(|k| alive_max + gap * k / n).collect();
                self.life_round(now, &waits);
                return;
            }
            self.life_finish(Ok(LifetimeRange { alive: alive_max, expired: Some(dead) }));
            return;
        }
        if life.probes.iter().all(|p| p.alive.is_some() || p.void) {
            if life.probes.iter().any(|p| p.void) && alive_max < life.max_wait {
                self.life_finish(Err(format!(
                    "some probes failed; the mapping was still alive after {:.1} s",
                    alive_max.as_secs_f64()
                )));
            } else {
                self.life_finish(Ok(LifetimeRange { alive: alive_max, expired: None }));
            }
        }
    }

    fn life_finish(&mut self, result: Result<LifetimeRange, String>) {
        let Some(life) = self.life.as_mut() else { return };
        let open: Vec<usize> = life.probes.iter().flat_map(|p| [Some(p.map_tx), p.probe_tx]).flatten().collect();
        life.result = Some(result);
        for t in open {
            self.cancel(t);
        }
        self.events.push_back(super::Event::Progress("lifetime test finished".into()));
    }
}

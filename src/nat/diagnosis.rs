//! The diagnosis engine: RFC 5780 §4.3 (mapping), §4.4 (filtering), §4.5 (hairpinning), §4.6 (lifetime),
//! plus port allocation, ALG detection and the multi-server inference for plain RFC 5389 servers, run as one
//! sans-IO [`Engine`] over several local sockets.
//!
//! Socket roles (see [`SocketPlan`]; the caller binds the sockets and passes their local addresses, so
//! `locals[i]` identifies socket `i` in every [`Transmit`] and [`Received`]):
//! - primary: bound to the chosen local port; test I against every server, mapping tests II/III, hairpin
//!   target.
//! - filtering: fresh, so no earlier contact opens its filter; filtering tests I/II/III.
//! - hairpin: fresh; learns its own mapping, then both sockets send to each other's public endpoint.
//! - allocation: fresh sockets, one Binding each, in order: how the NAT picks ports.
//! - lifetime (opt-in): one prober plus fresh sockets, each idle for a different time before the probe.
//!
//! Every request is a transaction of [`crate::transaction`]: RFC 8489 §6.2.1 retransmission starting from
//! the RTO cached per server IP, and a typed outcome; a test whose requests all go unanswered is reported as
//! such, never guessed. Two decisions beyond the RFC on which address's RTO a transaction uses:
//! - the reference server's alternate address (OTHER-ADDRESS / CHANGED-ADDRESS) starts with the estimate of
//!   its primary address: RFC 5780 §7.4 says it is the same server, normally the same host, so the path
//!   differs at most in the last hop; its own answers then refine its own entry;
//! - hairpin requests go to our own public address; they use the reference server's RTO, since the NAT that
//!   turns them around is on the path to the server, so a hairpinned packet needs at most that round trip.
//!
//! [`Engine::handle_unreachable`] takes ICMP port-unreachable reports from the caller: a transaction sent
//! from that socket to that address fails at once ("port unreachable (ICMP)") instead of waiting out its
//! schedule. Hairpin requests ignore it: an ICMP error there comes from our own router and proves no more
//! than silence does, so those tests keep judging by arrival only.

mod findings;
pub(super) mod lifetime;
mod probe;

use super::config::{Config, ConfigError, SocketPlan};
use super::report::Report;
use crate::net::{Engine, Received, RttEstimate, Transmit};
use crate::stun::{Class, Message, Method};
use crate::transaction::{check_target, FailReason, Handled, Spec, Transactions};
use lifetime::LifeState;
use log::{debug, info};
use probe::{decode_answer, Answer, Got, HairpinPath, Probe, ProbeSpec, Tx};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const LOG: &str = "holepunch::nat";

/// Things worth telling the user while the tests run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A server answered test I (or never did).
    ServerResult { server: SocketAddr, mapped: Option<SocketAddr> },
    /// A test finished; a line for `--verbose`.
    Progress(String),
    /// All tests are over; [`Diagnosis::report`] is ready.
    Finished,
}

/// The NAT diagnosis state machine. See the module docs.
#[derive(Debug)]
pub struct Diagnosis {
    cfg: Config,
    plan: SocketPlan,
    locals: Vec<SocketAddr>,
    client: Transactions<Got>,
    /// Every probe started, in order; lifetime probes refer to them by index.
    txs: Vec<Tx>,
    /// Some transaction ran out its schedule unanswered (later steps may wait for that).
    saw_timeout: bool,
    events: VecDeque<Event>,
    reference: Option<usize>,
    started: bool,
    filter_started: bool,
    mapping_iii_started: bool,
    hairpin_started: bool,
    hairpin_skip: Option<String>,
    alloc_next: usize,
    life: Option<LifeState>,
    server_reported: Vec<bool>,
    report: Option<Report>,
}

impl Diagnosis {
    /// Set up the tests; `locals[i]` is the local address of socket `i` (see [`Config::plan`]). The first
    /// requests are due at `now`.
    pub fn new(cfg: Config, locals: Vec<SocketAddr>, now: Instant) -> Result<Self, ConfigError> {
        if cfg.servers.is_empty() {
            return Err(ConfigError::NoServer);
        }
        let plan = cfg.plan();
        if locals.len() != plan.count() {
            return Err(ConfigError::SocketCount { got: locals.len(), want: plan.count() });
        }
        if let Some(s) = cfg.servers.iter().find(|s| s.is_ipv4() != locals[0].is_ipv4()) {
            return Err(ConfigError::MixedFamilies(*s));
        }
        if let Some(l) = locals.iter().enumerate().find_map(|(i, l)| locals[..i].contains(l).then_some(*l)) {
            return Err(ConfigError::DuplicateSocket(l));
        }
        if cfg.lifetime == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroLifetime);
        }
        let mut d = Diagnosis {
            client: Transactions::new(cfg.retransmit, cfg.min_rto, cfg.seed),
            plan,
            locals,
            txs: Vec::new(),
            saw_timeout: false,
            events: VecDeque::new(),
            reference: None,
            started: false,
            filter_started: false,
            mapping_iii_started: false,
            hairpin_started: false,
            hairpin_skip: None,
            alloc_next: 0,
            life: None,
            server_reported: vec![false; cfg.servers.len()],
            report: None,
            cfg,
        };
        for i in 0..d.cfg.servers.len() {
            let dest = d.cfg.servers[i];
            d.start(now, ProbeSpec::new(Probe::Basic(i), d.plan.primary, dest));
        }
        d.fire(now);
        Ok(d)
    }

    /// The RTT estimate learned for `ip` so far (RFC 6298 via RFC 8489 §6.2.1), if it answered.
    pub fn rtt_estimate(&self, ip: IpAddr) -> Option<RttEstimate> {
        self.client.rto_cache().estimate(ip)
    }

    /// The RTO the next transaction to `ip` would start with.
    pub fn rto_for(&self, ip: IpAddr) -> Duration {
        self.client.rto_cache().rto(ip)
    }

    /// The report, once [`Event::Finished`] was emitted.
    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    /// True once every test is over.
    pub fn is_finished(&self) -> bool {
        self.report.is_some()
    }

    /// The socket layout this diagnosis uses.
    pub fn plan(&self) -> &SocketPlan {
        &self.plan
    }

    // ---- transactions ----

    fn start(&mut self, now: Instant, p: ProbeSpec) -> usize {
        debug!(target: LOG, "start {:?}: socket {} -> {} change={:?} response_port={:?}",
            p.probe, p.socket, p.dest, p.change, p.response_port);
        let mut spec = Spec::new(self.locals[p.socket], p.dest).answer_on(self.locals[p.expect]).any_source();
        if p.is_hairpin() {
            spec = spec.ignore_unreachable().completed_externally();
            if let Some(r) = self.reference {
                spec = spec.rto_of(self.cfg.servers[r].ip());
            }
        }
        let key = match self.client.start(now + p.delay, spec, Method::BINDING, |w| p.write(w)) {
            Ok(key) => key,
            // A Binding request with at most CHANGE-REQUEST and RESPONSE-PORT (28 bytes) always fits the
            // layer's 1500-byte buffer: this is a bug, not an input to handle.
            Err(e) => unreachable!("a Binding request always fits: {e}"),
        };
        self.txs.push(Tx { probe: p.probe, key, dest: p.dest, expect: p.expect });
        self.txs.len() - 1
    }

    /// Send whatever is due and time out what is over.
    fn fire(&mut self, now: Instant) {
        if self.client.handle_timeout(now) {
            self.saw_timeout = true;
        }
        while self.client.poll_completed().is_some() {}
        // Time-outs can unblock later steps.
        if self.saw_timeout {
            self.advance(now);
        }
    }

    fn outcome(&self, idx: usize) -> Option<&Result<Got, FailReason>> {
        self.client.outcome(self.txs[idx].key)
    }

    fn cancel(&mut self, idx: usize) {
        self.client.cancel(self.txs[idx].key);
    }

    fn waiting(&self, tx: &Tx) -> bool {
        self.client.is_waiting(tx.key)
    }

    fn tx_answer(&self, tx: &Tx) -> Option<&Answer> {
        match self.client.outcome(tx.key) {
            Some(Ok(Got::Answer(a))) => Some(a),
            _ => None,
        }
    }

    fn tx_failure(&self, tx: &Tx) -> Option<&FailReason> {
        self.client.outcome(tx.key)?.as_ref().err()
    }

    /// One line on what became of it, for reasons.
    fn describe_failure(&self, tx: &Tx) -> String {
        match self.tx_failure(tx) {
            Some(r) => r.to_string(),
            None => "not finished".into(),
        }
    }

    fn find(&self, p: Probe) -> Option<&Tx> {
        self.txs.iter().rev().find(|t| t.probe == p)
    }

    fn answer(&self, p: Probe) -> Option<&Answer> {
        self.find(p).and_then(|t| self.tx_answer(t))
    }

    fn resolved(&self, p: Probe) -> bool {
        self.find(p).is_some_and(|t| !self.waiting(t))
    }

    /// A hairpin request (RFC 5780 §4.5) arrived where it was sent to: that ends its transaction.
    fn hairpin_arrival(&mut self, socket: usize, from: SocketAddr, data: &[u8]) -> bool {
        let Ok(msg) = Message::parse(data) else { return false };
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            return false;
        }
        let Some(key) = self.client.find(msg.transaction_id()) else { return false };
        let Some(tx) = self.txs.iter().find(|t| t.key == key && matches!(t.probe, Probe::Hairpin(_))) else {
            return false;
        };
        if tx.expect != socket {
            debug!(target: LOG, "socket {socket}: {:?} arrived on the wrong socket", tx.probe);
            return false;
        }
        debug!(target: LOG, "{:?}: arrived on socket {socket} from {from}", tx.probe);
        self.client.complete(key, Ok(Got::Arrived { socket, from }))
    }

    // ---- the tests ----

    fn primary_mapped(&self) -> Option<SocketAddr> {
        self.reference.and_then(|r| self.answer(Probe::Basic(r))).and_then(Answer::mapped)
    }

    fn alternate(&self) -> Option<SocketAddr> {
        self.usable_alternate(self.reference?)
    }

    /// The alternate address server `i` advertised, if the tests may send there: another address than the
    /// server's, and one [`check_target`] allows (a hostile or broken server must not aim us elsewhere).
    fn usable_alternate(&self, i: usize) -> Option<SocketAddr> {
        let alt = self.answer(Probe::Basic(i))?.alternate()?;
        let server = self.cfg.servers[i];
        (alt != server && check_target(server, alt).is_ok()).then_some(alt)
    }

    fn choose_reference(&mut self) {
        if self.reference.is_some() {
            return;
        }
        let n = self.cfg.servers.len();
        let answered = |i: usize| self.answer(Probe::Basic(i)).and_then(Answer::mapped).is_some();
        let with_alt = (0..n).find(|&i| answered(i) && self.usable_alternate(i).is_some());
        self.reference = with_alt.or_else(|| {
            let all_done = (0..n).all(|i| self.resolved(Probe::Basic(i)));
            if all_done {
                (0..n).find(|&i| answered(i))
            } else {
                None
            }
        });
        if let Some(r) = self.reference {
            info!(target: LOG, "reference server {}", self.cfg.servers[r]);
        }
    }

    /// Start whatever the answers so far make possible; build the report when nothing is left.
    fn advance(&mut self, now: Instant) {
        if self.report.is_some() {
            return;
        }
        self.choose_reference();
        if let Some(r) = self.reference {
            let server = self.cfg.servers[r];
            let primary = self.plan.primary;
            if !self.started {
                self.started = true;
                if let Some(alt) = self.alternate() {
                    self.client.rto_cache_mut().seed(alt.ip(), server.ip());
                    if alt.ip() != server.ip() {
                        let d2 = SocketAddr::new(alt.ip(), server.port());
                        self.start(now, ProbeSpec::new(Probe::MappingII, primary, d2));
                    }
                    self.start(now, ProbeSpec::new(Probe::FilterI, self.plan.filtering, server));
                }
                if self.cfg.hairpin {
                    self.start(now, ProbeSpec::new(Probe::HairpinMap, self.plan.hairpin, server));
                }
                if let Some(max_wait) = self.cfg.lifetime {
                    self.life_start(now, max_wait);
                }
            }
            self.advance_mapping_iii(now, server);
            self.advance_filtering(now, server);
            self.advance_allocation(now, server);
            self.advance_hairpin(now);
            self.advance_lifetime(now, server);
        } else if (0..self.cfg.servers.len()).all(|i| self.resolved(Probe::Basic(i))) {
            // Nobody answered: finish with what there is (the report says so).
        } else {
            return;
        }
        self.emit_server_results();
        if !self.client.any_waiting() && self.life.as_ref().is_none_or(|l| l.result.is_some()) {
            let report = self.build_report();
            info!(target: LOG, "diagnosis finished: {}", report.verdict);
            self.report = Some(report);
            self.events.push_back(Event::Finished);
        }
    }

    fn emit_server_results(&mut self) {
        for i in 0..self.cfg.servers.len() {
            if self.server_reported[i] {
                continue;
            }
            if let Some(tx) = self.find(Probe::Basic(i)) {
                if !self.waiting(tx) {
                    let mapped = self.tx_answer(tx).and_then(Answer::mapped);
                    self.server_reported[i] = true;
                    self.events.push_back(Event::ServerResult { server: self.cfg.servers[i], mapped });
                }
            }
        }
    }

    /// Mapping test III (RFC 5780 §4.3) goes to the alternate address exactly as advertised. When test II
    /// already went to the alternate IP address and nothing answered, the alternate is not started on again:
    /// a server naming someone else's address gets at most one unanswered transaction sent there.
    fn advance_mapping_iii(&mut self, now: Instant, server: SocketAddr) {
        if self.mapping_iii_started {
            return;
        }
        let Some(alt) = self.alternate() else { return };
        if alt.port() == server.port() {
            return;
        }
        if alt.ip() != server.ip() && !self.resolved(Probe::MappingII) {
            return;
        }
        self.mapping_iii_started = true;
        if alt.ip() != server.ip() && self.answer(Probe::MappingII).is_none() {
            return;
        }
        self.start(now, ProbeSpec::new(Probe::MappingIII, self.plan.primary, alt));
    }

    fn advance_filtering(&mut self, now: Instant, server: SocketAddr) {
        if self.filter_started {
            return;
        }
        let Some(alt) = self.alternate() else { return };
        if !self.resolved(Probe::FilterI) {
            return;
        }
        self.filter_started = true;
        if self.answer(Probe::FilterI).is_none() {
            return;
        }
        let f = self.plan.filtering;
        // Tests II and III run together: neither sends anywhere new, so neither can open the other's path.
        if alt.ip() != server.ip() && alt.port() != server.port() {
            self.start(now, ProbeSpec::new(Probe::FilterII, f, server).change(true, true));
        }
        if alt.port() != server.port() {
            self.start(now, ProbeSpec::new(Probe::FilterIII, f, server).change(false, true));
        }
        self.events.push_back(Event::Progress("filtering: waiting for responses from changed addresses".into()));
    }

    fn advance_allocation(&mut self, now: Instant, server: SocketAddr) {
        // One socket after the other, so the order of the public ports is the order of allocation.
        if self.alloc_next >= self.plan.allocation.len()
            || (self.alloc_next > 0 && !self.resolved(Probe::Alloc(self.alloc_next - 1)))
        {
            return;
        }
        let s = self.plan.allocation.start + self.alloc_next;
        self.start(now, ProbeSpec::new(Probe::Alloc(self.alloc_next), s, server));
        self.alloc_next += 1;
    }

    fn advance_hairpin(&mut self, now: Instant) {
        if self.hairpin_started || !self.cfg.hairpin {
            return;
        }
        let Some(m0) = self.primary_mapped() else { return };
        if !self.resolved(Probe::HairpinMap) {
            return;
        }
        self.hairpin_started = true;
        let primary = self.plan.primary;
        let h = self.plan.hairpin;
        if m0 == self.locals[primary] {
            self.hairpin_skip = Some("not applicable: no NAT, the public endpoint is the local one".into());
            return;
        }
        let Some(mh) = self.answer(Probe::HairpinMap).and_then(Answer::mapped) else {
            self.hairpin_skip = Some(format!(
                "the second socket got no mapping: {}",
                self.find(Probe::HairpinMap).map(|t| self.describe_failure(t)).unwrap_or_default()
            ));
            return;
        };
        self.start(now, ProbeSpec::new(Probe::Hairpin(HairpinPath::SelfLoop), primary, m0));
        self.start(now, ProbeSpec::new(Probe::Hairpin(HairpinPath::ToPrimary), h, m0).answer_on(primary));
        self.start(now, ProbeSpec::new(Probe::Hairpin(HairpinPath::ToHelper), primary, mh).answer_on(h));
    }
}

impl Engine for Diagnosis {
    type Event = Event;

    /// A datagram arrived on the socket bound to `input.local`. True when it belonged to a transaction.
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        if self.report.is_some() {
            return false;
        }
        let Some(socket) = self.locals.iter().position(|l| *l == input.local) else { return false };
        match self.client.handle_input(now, input, data, decode_answer) {
            Handled::Completed(_) => {}
            Handled::Ignored => return true,
            Handled::NotOurs => {
                if !self.hairpin_arrival(socket, input.source, data) {
                    debug!(target: LOG, "socket {socket}: dropping a datagram from {} that matches no request", input.source);
                    return false;
                }
            }
        }
        self.advance(now);
        self.fire(now);
        true
    }

    /// An ICMP port unreachable (ICMPv6 code 4) arrived for a datagram that the socket bound to `local` sent
    /// to `dst`: nothing listens there. Every transaction from that socket to that address that has sent a
    /// request fails now with that reason (never read as a filtering or mapping result: a failed test is
    /// "unknown"). Hairpin requests are not affected (see the module docs). The caller should report only
    /// port unreachable: other ICMP errors (host or network unreachable, too big) can be transient.
    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        if self.report.is_some() {
            return false;
        }
        if !self.client.handle_unreachable(local, dst) {
            debug!(target: LOG, "{local}: ICMP port unreachable for {dst} matches no open request");
            return false;
        }
        self.advance(now);
        self.fire(now);
        true
    }

    /// Time has passed: retransmit, give up on silent transactions, start what is due.
    fn handle_timeout(&mut self, now: Instant) {
        if self.report.is_some() {
            return;
        }
        self.fire(now);
        self.advance(now);
        self.fire(now);
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.client.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.report.is_some() {
            return None;
        }
        self.client.poll_timeout()
    }

    /// Progress and the final [`Event::Finished`].
    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

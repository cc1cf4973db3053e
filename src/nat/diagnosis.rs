//! The diagnosis engine: RFC 5780 §4.3 (mapping), §4.4 (filtering), §4.5 (hairpinning), §4.6 (lifetime),
//! plus port allocation, ALG detection and the multi-server inference for plain RFC 5389 servers, run as one
//! sans-IO state machine over several local sockets.
//!
//! Socket roles (indices; the caller binds them and maps them to real sockets, see [`SocketPlan`]):
//! - primary: bound to `--local-port`; test I against every server, mapping tests II/III, hairpin target.
//! - filtering: fresh, so no earlier contact opens its filter; filtering tests I/II/III.
//! - hairpin: fresh; learns its own mapping, then both sockets send to each other's public endpoint.
//! - allocation: fresh sockets, one Binding each, in order: how the NAT picks ports.
//! - lifetime (opt-in): one prober plus fresh sockets, each idle for a different time before the probe.
//!
//! Every request follows the RFC 8489 §6.2.1 schedule ([`Retransmit`]); a test whose requests all go
//! unanswered is reported as such, never guessed. The RTO a transaction starts with comes from [`RtoCache`]:
//! `retransmit.rto` until the destination IP answered once, then RFC 6298 from the measured round trips, kept
//! between [`Config::min_rto`] and `retransmit.rto`. Two decisions beyond the RFC:
//! - the reference server's alternate address (OTHER-ADDRESS / CHANGED-ADDRESS) starts with the estimate of
//!   its primary address: RFC 5780 §7.4 says it is the same server, normally the same host, so the path
//!   differs at most in the last hop; its own answers then refine its own entry;
//! - hairpin requests go to our own public address; they use the reference server's RTO, since the NAT that
//!   turns them around is on the path to the server, so a hairpinned packet needs at most that round trip.
//!
//! [`Diagnosis::handle_unreachable`] takes ICMP port-unreachable reports from the caller: a transaction sent
//! from that socket to that address fails at once ("port unreachable (ICMP)") instead of waiting out its
//! schedule. Hairpin requests ignore it: an ICMP error there comes from our own router and proves no more
//! than silence does, so those tests keep judging by arrival only.

use super::behaviour::{
    classify_allocation, infer_filtering, infer_mapping, Allocation, FilterOutcome, Filtering, Mapping, Observation,
    Verdict,
};
use super::report::{LifetimeRange, NatKind, Report, ServerReport};
use crate::net::{Retransmit, Rng, RtoCache, RttEstimate, Seed, DEFAULT_MIN_RTO};
use crate::stun::{Attribute, ChangeRequest, Class, Message, MessageType, MessageWriter, Method};
use log::{debug, info};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use thiserror::Error;

const LOG: &str = "holepunch::nat";

/// Diagnosis settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// STUN servers, already resolved; all of one address family. The first one that advertises an
    /// alternate address carries the RFC 5780 tests.
    pub servers: Vec<SocketAddr>,
    /// Request retransmission (RFC 8489 §6.2.1). `retransmit.rto` is the RTO of the first transaction to each
    /// address and the ceiling of every learned one.
    pub retransmit: Retransmit,
    /// Floor of an RTO learned from measured round trips ([`DEFAULT_MIN_RTO`]); `retransmit.rto` or more
    /// turns learning off (every transaction uses `retransmit.rto`).
    pub min_rto: Duration,
    /// Fresh sockets used to classify port allocation (0 skips the test).
    pub allocation_samples: usize,
    /// Run the hairpinning test (RFC 5780 §4.5).
    pub hairpin: bool,
    /// Run the lifetime test (RFC 5780 §4.6) bounded by this wait.
    pub lifetime: Option<Duration>,
    /// Seed for transaction ids; the caller supplies randomness so the engine stays deterministic.
    pub seed: Seed,
}

impl Config {
    /// Defaults for `servers`: RFC 8489 retransmission, 4 allocation samples, hairpin on, no lifetime.
    pub fn new(servers: Vec<SocketAddr>, seed: Seed) -> Self {
        Config {
            servers,
            retransmit: Retransmit::default(),
            min_rto: DEFAULT_MIN_RTO,
            allocation_samples: 4,
            hairpin: true,
            lifetime: None,
            seed,
        }
    }

    /// Which socket index plays which role.
    pub fn plan(&self) -> SocketPlan {
        let alloc_start = 3;
        let lifetime_start = alloc_start + self.allocation_samples;
        let lifetime_len = if self.lifetime.is_some() {
            1 + LIFETIME_FIRST_ROUND.len() + LIFETIME_REFINE_ROUNDS * LIFETIME_REFINE_PROBES
        } else {
            0
        };
        SocketPlan {
            primary: 0,
            filtering: 1,
            hairpin: 2,
            allocation: alloc_start..lifetime_start,
            lifetime: lifetime_start..lifetime_start + lifetime_len,
        }
    }
}

/// Socket indices by role. Index 0 is the only one that should be bound to a chosen port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketPlan {
    pub primary: usize,
    pub filtering: usize,
    pub hairpin: usize,
    pub allocation: std::ops::Range<usize>,
    /// First index is the prober, the rest are the idle sockets.
    pub lifetime: std::ops::Range<usize>,
}

impl SocketPlan {
    /// How many sockets the caller must open.
    pub fn count(&self) -> usize {
        self.lifetime.end.max(self.allocation.end).max(3)
    }
}

/// Why a [`Diagnosis`] could not be set up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no STUN server given")]
    NoServer,
    #[error("{got} local sockets given, the plan needs {want}")]
    SocketCount { got: usize, want: usize },
    #[error("server {0} and the local sockets are of different address families")]
    MixedFamilies(SocketAddr),
    #[error("--max-wait must be longer than zero")]
    ZeroLifetime,
}

/// A datagram to send: write `buf[..len]` from local socket `socket` to `dest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub socket: usize,
    pub dest: SocketAddr,
    pub len: usize,
}

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

/// Hairpin paths (RFC 5780 §4.5), tried together; any arrival proves hairpinning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HairpinPath {
    /// primary -> its own public endpoint.
    SelfLoop,
    /// hairpin socket -> primary's public endpoint.
    ToPrimary,
    /// primary -> hairpin socket's public endpoint (opens the primary's filter for the path above).
    ToHelper,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// Test I from the primary socket to server `i`.
    Basic(usize),
    MappingII,
    MappingIII,
    FilterI,
    FilterII,
    FilterIII,
    Alloc(usize),
    HairpinMap,
    Hairpin(HairpinPath),
    LifeMap(usize),
    LifeCheck(usize),
}

/// A decoded Binding success response.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    from: SocketAddr,
    xor: Option<SocketAddr>,
    plain: Option<SocketAddr>,
    other: Option<SocketAddr>,
    changed: Option<SocketAddr>,
    software: Option<String>,
    rfc3489: bool,
}

impl Answer {
    fn mapped(&self) -> Option<SocketAddr> {
        self.xor.or(self.plain)
    }
    fn alternate(&self) -> Option<SocketAddr> {
        self.other.or(self.changed)
    }
    fn legacy(&self) -> bool {
        self.rfc3489 || self.xor.is_none() || (self.other.is_none() && self.changed.is_some())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TxState {
    Waiting,
    Answered(Answer),
    /// A hairpin request reached `socket`.
    Arrived {
        socket: usize,
        from: SocketAddr,
    },
    Failed(String),
    TimedOut,
    Cancelled,
}

#[derive(Clone, Debug)]
struct Tx {
    id: [u8; 12],
    probe: Probe,
    socket: usize,
    dest: SocketAddr,
    change: Option<ChangeRequest>,
    response_port: Option<u16>,
    /// When the first request is due; once sent, when it actually went out (the schedule counts from there).
    first_send: Instant,
    sent: u32,
    /// The address whose RTT estimate this transaction uses and feeds.
    rto_ip: IpAddr,
    /// RTO of this transaction, fixed when its first request goes out.
    rto: Duration,
    /// Where the answer (or, for hairpin, the request itself) must arrive.
    expect: usize,
    state: TxState,
}

impl Tx {
    fn waiting(&self) -> bool {
        self.state == TxState::Waiting
    }
    fn answer(&self) -> Option<&Answer> {
        match &self.state {
            TxState::Answered(a) => Some(a),
            _ => None,
        }
    }
    /// The §6.2.1 schedule of this transaction: the configured one with its own RTO.
    fn schedule(&self, rt: &Retransmit) -> Retransmit {
        Retransmit { rto: self.rto, ..*rt }
    }
    fn deadline(&self, rt: &Retransmit) -> Option<Instant> {
        if !self.waiting() {
            return None;
        }
        let rt = self.schedule(rt);
        Some(match rt.send_offset(self.sent) {
            Some(off) => self.first_send + off,
            None => self.first_send + rt.give_up_after(),
        })
    }
    /// One line on what became of it, for reasons.
    fn describe_failure(&self, rt: &Retransmit) -> String {
        match &self.state {
            TxState::TimedOut => format!(
                "no answer from {} after {} requests over {:.1} s",
                self.dest,
                self.sent,
                self.schedule(rt).give_up_after().as_secs_f64()
            ),
            TxState::Failed(r) => r.clone(),
            TxState::Cancelled => "cancelled".into(),
            _ => "not finished".into(),
        }
    }
}

const LIFETIME_FIRST_ROUND: [u32; 6] = [0, 1, 2, 4, 8, 16]; // sixteenths of --max-wait (0 = calibration)
const LIFETIME_REFINE_ROUNDS: usize = 3;
const LIFETIME_REFINE_PROBES: usize = 4;

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
struct LifeState {
    max_wait: Duration,
    start: Instant,
    prober: usize,
    free: VecDeque<usize>,
    probes: Vec<LifeProbe>,
    result: Option<Result<LifetimeRange, String>>,
}

/// The NAT diagnosis state machine. See the module docs.
#[derive(Debug)]
pub struct Diagnosis {
    cfg: Config,
    plan: SocketPlan,
    locals: Vec<SocketAddr>,
    ids: Rng,
    txs: Vec<Tx>,
    pending: VecDeque<usize>,
    events: VecDeque<Event>,
    reference: Option<usize>,
    started: bool,
    filter_started: bool,
    hairpin_started: bool,
    hairpin_skip: Option<String>,
    alloc_next: usize,
    life: Option<LifeState>,
    server_reported: Vec<bool>,
    rtt: RtoCache,
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
        if cfg.lifetime == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroLifetime);
        }
        let mut d = Diagnosis {
            ids: Rng::from_seed(cfg.seed),
            plan,
            locals,
            txs: Vec::new(),
            pending: VecDeque::new(),
            events: VecDeque::new(),
            reference: None,
            started: false,
            filter_started: false,
            hairpin_started: false,
            hairpin_skip: None,
            alloc_next: 0,
            life: None,
            server_reported: vec![false; cfg.servers.len()],
            rtt: RtoCache::new(cfg.retransmit.rto, cfg.min_rto),
            report: None,
            cfg,
        };
        for i in 0..d.cfg.servers.len() {
            let dest = d.cfg.servers[i];
            d.start(now, Probe::Basic(i), d.plan.primary, dest, None, None, d.plan.primary, Duration::ZERO);
        }
        d.fire(now);
        Ok(d)
    }

    /// A datagram arrived on local socket `socket` from `from` at `now`.
    pub fn handle_datagram(&mut self, now: Instant, socket: usize, from: SocketAddr, data: &[u8]) {
        if self.report.is_some() {
            return;
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                debug!(target: LOG, "socket {socket}: dropping non-STUN datagram from {from}: {e}");
                return;
            }
        };
        if msg.method() != Method::BINDING {
            debug!(target: LOG, "socket {socket}: dropping non-Binding message from {from}");
            return;
        }
        let id = msg.transaction_id();
        let Some(idx) = self.txs.iter().position(|t| &t.id == id) else {
            debug!(target: LOG, "socket {socket}: dropping message with unknown transaction id from {from}");
            return;
        };
        let tx = &self.txs[idx];
        if !tx.waiting() {
            return; // a retransmission's duplicate answer
        }
        let class = msg.class();
        let hairpin = matches!(tx.probe, Probe::Hairpin(_));
        let new_state = match class {
            Class::Request if hairpin && socket == tx.expect => TxState::Arrived { socket, from },
            Class::Success if !hairpin && socket == tx.expect => match decode_answer(&msg, from) {
                Ok(a) => TxState::Answered(a),
                Err(e) => TxState::Failed(format!("unusable answer from {from}: {e}")),
            },
            Class::Error if !hairpin && (socket == tx.expect || socket == tx.socket) => {
                let reason = match msg.error_code() {
                    Some(ec) => format!("{from} answered with error {} {}", ec.code, ec.reason),
                    None => format!("{from} answered with an error response without ERROR-CODE"),
                };
                TxState::Failed(reason)
            }
            _ => {
                debug!(target: LOG, "socket {socket}: unexpected {class:?} for {:?} from {from}", tx.probe);
                return;
            }
        };
        debug!(target: LOG, "{:?}: {:?}", tx.probe, new_state);
        // Karn's algorithm: only a request sent once gives an unambiguous round trip. A hairpin arrival is
        // one way, not a round trip.
        if !hairpin && tx.sent == 1 {
            let rtt = now.saturating_duration_since(tx.first_send);
            let ip = tx.rto_ip;
            self.rtt.sample(ip, rtt);
            debug!(target: LOG, "rtt {ip}: {rtt:?} -> next rto {:?}", self.rtt.rto(ip));
        }
        self.txs[idx].state = new_state;
        self.advance(now);
        self.fire(now);
    }

    /// An ICMP port unreachable (ICMPv6 code 4) arrived for a datagram that local socket `socket` sent to
    /// `dest`: nothing listens there. Every transaction from that socket to that address that has sent a request
    /// fails now with that reason (never read as a filtering or mapping result: a failed test is "unknown").
    /// Hairpin requests are not affected (see the module docs). The caller should report only port
    /// unreachable: other ICMP errors (host or network unreachable, too big) can be transient.
    pub fn handle_unreachable(&mut self, now: Instant, socket: usize, dest: SocketAddr) {
        if self.report.is_some() {
            return;
        }
        let mut hit = false;
        for tx in &mut self.txs {
            if tx.socket == socket
                && tx.dest == dest
                && tx.waiting()
                && tx.sent > 0
                && !matches!(tx.probe, Probe::Hairpin(_))
            {
                debug!(target: LOG, "{:?}: port unreachable (ICMP) from {dest}", tx.probe);
                tx.state = TxState::Failed(format!("nothing listens on {dest}: port unreachable (ICMP)"));
                hit = true;
            }
        }
        if !hit {
            debug!(target: LOG, "socket {socket}: ICMP port unreachable for {dest} matches no open request");
            return;
        }
        self.advance(now);
        self.fire(now);
    }

    /// The RTT estimate learned for `ip` so far (RFC 6298 via RFC 8489 §6.2.1), if it answered.
    pub fn rtt_estimate(&self, ip: IpAddr) -> Option<RttEstimate> {
        self.rtt.estimate(ip)
    }

    /// The RTO the next transaction to `ip` would start with.
    pub fn rto_for(&self, ip: IpAddr) -> Duration {
        self.rtt.rto(ip)
    }

    /// Time has passed: retransmit, give up on silent transactions, start what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.report.is_some() {
            return;
        }
        self.fire(now);
        self.advance(now);
        self.fire(now);
    }

    /// Next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(idx) = self.pending.pop_front() {
            let tx = &self.txs[idx];
            if !tx.waiting() {
                continue;
            }
            match encode_request(buf, &tx.id, tx.change, tx.response_port) {
                Ok(len) => return Some(Transmit { socket: tx.socket, dest: tx.dest, len }),
                Err(e) => debug!(target: LOG, "cannot encode request: {e}"),
            }
        }
        None
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.report.is_some() {
            return None;
        }
        self.txs.iter().filter_map(|t| t.deadline(&self.cfg.retransmit)).min()
    }

    /// Progress and the final [`Event::Finished`].
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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

    // ---- internals ----

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        now: Instant,
        probe: Probe,
        socket: usize,
        dest: SocketAddr,
        change: Option<ChangeRequest>,
        response_port: Option<u16>,
        expect: usize,
        delay: Duration,
    ) -> usize {
        let id = self.ids.transaction_id();
        debug!(target: LOG, "start {probe:?}: socket {socket} -> {dest} change={change:?} response_port={response_port:?}");
        let rto_ip = match (probe, self.reference) {
            (Probe::Hairpin(_), Some(r)) => self.cfg.servers[r].ip(),
            _ => dest.ip(),
        };
        self.txs.push(Tx {
            id,
            probe,
            socket,
            dest,
            change,
            response_port,
            first_send: now + delay,
            sent: 0,
            rto_ip,
            rto: self.cfg.retransmit.rto,
            expect,
            state: TxState::Waiting,
        });
        self.txs.len() - 1
    }

    /// Send whatever is due and time out what is over.
    fn fire(&mut self, now: Instant) {
        let rt = self.cfg.retransmit;
        for (idx, tx) in self.txs.iter_mut().enumerate() {
            while let Some(due) = tx.deadline(&rt) {
                if due > now {
                    break;
                }
                if tx.sent == 0 {
                    // RFC 8489 §6.2.1: start from the RTO cached for this address, and count the schedule from
                    // the moment the request really goes out.
                    tx.rto = self.rtt.rto(tx.rto_ip);
                    tx.first_send = now;
                    tx.sent = 1;
                    self.pending.push_back(idx);
                    debug!(target: LOG, "{:?}: rto {:?}", tx.probe, tx.rto);
                } else if tx.schedule(&rt).send_offset(tx.sent).is_some() {
                    tx.sent += 1;
                    self.pending.push_back(idx);
                } else {
                    debug!(target: LOG, "{:?} timed out", tx.probe);
                    tx.state = TxState::TimedOut;
                }
            }
        }
        // Time-outs can unblock later steps.
        if self.txs.iter().any(|t| t.state == TxState::TimedOut) {
            self.advance(now);
        }
    }

    fn find(&self, p: Probe) -> Option<&Tx> {
        self.txs.iter().rev().find(|t| t.probe == p)
    }

    fn answer(&self, p: Probe) -> Option<&Answer> {
        self.find(p).and_then(Tx::answer)
    }

    fn resolved(&self, p: Probe) -> bool {
        self.find(p).is_some_and(|t| !t.waiting())
    }

    fn primary_mapped(&self) -> Option<SocketAddr> {
        self.reference.and_then(|r| self.answer(Probe::Basic(r))).and_then(Answer::mapped)
    }

    fn alternate(&self) -> Option<SocketAddr> {
        let r = self.reference?;
        let alt = self.answer(Probe::Basic(r))?.alternate()?;
        let server = self.cfg.servers[r];
        (alt.is_ipv4() == server.is_ipv4() && alt != server).then_some(alt)
    }

    fn choose_reference(&mut self) {
        if self.reference.is_some() {
            return;
        }
        let n = self.cfg.servers.len();
        let answered = |i: usize| self.answer(Probe::Basic(i)).and_then(Answer::mapped).is_some();
        let with_alt = (0..n).find(|&i| {
            self.answer(Probe::Basic(i)).is_some_and(|a| {
                a.mapped().is_some()
                    && a.alternate()
                        .is_some_and(|alt| alt.is_ipv4() == self.cfg.servers[i].is_ipv4() && alt != self.cfg.servers[i])
            })
        });
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
                    self.rtt.seed(alt.ip(), server.ip());
                    if alt.ip() != server.ip() {
                        let d2 = SocketAddr::new(alt.ip(), server.port());
                        self.start(now, Probe::MappingII, primary, d2, None, None, primary, Duration::ZERO);
                    }
                    if alt.port() != server.port() {
                        self.start(now, Probe::MappingIII, primary, alt, None, None, primary, Duration::ZERO);
                    }
                    let f = self.plan.filtering;
                    self.start(now, Probe::FilterI, f, server, None, None, f, Duration::ZERO);
                }
                if self.cfg.hairpin {
                    let h = self.plan.hairpin;
                    self.start(now, Probe::HairpinMap, h, server, None, None, h, Duration::ZERO);
                }
                if let Some(max_wait) = self.cfg.lifetime {
                    let mut sockets: VecDeque<usize> = self.plan.lifetime.clone().collect();
                    if let Some(prober) = sockets.pop_front() {
                        self.life = Some(LifeState {
                            max_wait,
                            start: now,
                            prober,
                            free: sockets,
                            probes: Vec::new(),
                            result: None,
                        });
                        let waits: Vec<Duration> =
                            LIFETIME_FIRST_ROUND.iter().map(|&k| max_wait.mul_f64(f64::from(k) / 16.0)).collect();
                        self.life_round(now, &waits);
                    }
                }
            }
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
        if self.txs.iter().all(|t| !t.waiting()) && self.life.as_ref().is_none_or(|l| l.result.is_some()) {
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
                if !tx.waiting() {
                    let mapped = tx.answer().and_then(Answer::mapped);
                    self.server_reported[i] = true;
                    self.events.push_back(Event::ServerResult { server: self.cfg.servers[i], mapped });
                }
            }
        }
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
            let c = ChangeRequest { change_ip: true, change_port: true };
            self.start(now, Probe::FilterII, f, server, Some(c), None, f, Duration::ZERO);
        }
        if alt.port() != server.port() {
            let c = ChangeRequest { change_ip: false, change_port: true };
            self.start(now, Probe::FilterIII, f, server, Some(c), None, f, Duration::ZERO);
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
        self.start(now, Probe::Alloc(self.alloc_next), s, server, None, None, s, Duration::ZERO);
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
                self.find(Probe::HairpinMap).map(|t| t.describe_failure(&self.cfg.retransmit)).unwrap_or_default()
            ));
            return;
        };
        let z = Duration::ZERO;
        self.start(now, Probe::Hairpin(HairpinPath::SelfLoop), primary, m0, None, None, primary, z);
        self.start(now, Probe::Hairpin(HairpinPath::ToPrimary), h, m0, None, None, primary, z);
        self.start(now, Probe::Hairpin(HairpinPath::ToHelper), primary, mh, None, None, h, z);
    }

    fn hairpin_result(&self) -> (Option<bool>, String) {
        if !self.cfg.hairpin {
            return (None, "not run".into());
        }
        if let Some(r) = &self.hairpin_skip {
            return (None, r.clone());
        }
        let paths = [HairpinPath::SelfLoop, HairpinPath::ToPrimary, HairpinPath::ToHelper];
        let txs: Vec<&Tx> = paths.iter().filter_map(|p| self.find(Probe::Hairpin(*p))).collect();
        if txs.is_empty() {
            return (None, "not run: no public endpoint was learned".into());
        }
        for t in &txs {
            if let TxState::Arrived { from, .. } = t.state {
                let how = match t.probe {
                    Probe::Hairpin(HairpinPath::SelfLoop) => "a packet sent to our own public endpoint came back",
                    _ => "a packet sent from one local socket to another's public endpoint arrived",
                };
                let src = if from.ip() == t.dest.ip() {
                    "with the public source address"
                } else {
                    "with the internal source address (not translated)"
                };
                return (Some(true), format!("{how} {src}: {from} (RFC 5780 §4.5)"));
            }
        }
        if txs.iter().all(|t| t.state == TxState::TimedOut) {
            return (Some(false), "packets sent to our own public endpoints never came back (RFC 5780 §4.5)".into());
        }
        (None, txs.iter().map(|t| t.describe_failure(&self.cfg.retransmit)).collect::<Vec<_>>().join("; "))
    }

    fn life_round(&mut self, now: Instant, waits: &[Duration]) {
        let Some(server) = self.reference.map(|r| self.cfg.servers[r]) else { return };
        for &wait in waits {
            let Some(life) = self.life.as_mut() else { return };
            let Some(socket) = life.free.pop_front() else { break };
            let idx = life.probes.len();
            let map_tx = self.start(now, Probe::LifeMap(idx), socket, server, None, None, socket, Duration::ZERO);
            if let Some(life) = self.life.as_mut() {
                life.probes.push(LifeProbe { wait, socket, map_tx, probe_tx: None, alive: None, void: false });
            }
        }
    }

    fn advance_lifetime(&mut self, now: Instant, server: SocketAddr) {
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
            let map = &self.txs[p.map_tx];
            match (&map.state, p.probe_tx) {
                (TxState::Waiting, _) => {}
                (TxState::Answered(a), None) => match a.mapped() {
                    Some(m) => schedule.push((i, m.port(), p.socket, p.wait)),
                    None => updates.push((i, None)),
                },
                (_, None) => updates.push((i, None)),
                (_, Some(t)) => match &self.txs[t].state {
                    TxState::Waiting => {}
                    TxState::Answered(_) => updates.push((i, Some(true))),
                    TxState::TimedOut => updates.push((i, Some(false))),
                    TxState::Failed(r) if p.wait.is_zero() => {
                        let r = r.clone();
                        self.life_finish(Err(format!("the server refused RESPONSE-PORT (RFC 5780 §7.5): {r}")));
                        return;
                    }
                    _ => updates.push((i, None)),
                },
            }
        }
        for (i, port, socket, wait) in schedule {
            let t = self.start(now, Probe::LifeCheck(i), prober, server, None, Some(port), socket, wait);
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
                if self.txs[t].waiting() {
                    self.txs[t].state = TxState::Cancelled;
                }
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
            if self.txs[t].waiting() {
                self.txs[t].state = TxState::Cancelled;
            }
        }
        self.events.push_back(Event::Progress("lifetime test finished".into()));
    }

    fn filter_outcome(&self, p: Probe, expected_from: SocketAddr, contacted: SocketAddr) -> FilterOutcome {
        let Some(tx) = self.find(p) else {
            return FilterOutcome::NotRun(match p {
                Probe::FilterII => "the server's alternate address shares its IP or port".into(),
                _ => "the server's alternate address has the same port".into(),
            });
        };
        match &tx.state {
            TxState::Answered(a) if a.from == expected_from => FilterOutcome::Received,
            TxState::Answered(a) if a.from == contacted => FilterOutcome::Failed(format!(
                "the server ignored CHANGE-REQUEST (the response came from {contacted}, the address contacted)"
            )),
            TxState::Answered(a) => {
                FilterOutcome::Failed(format!("the response came from {}, expected {expected_from}", a.from))
            }
            TxState::TimedOut => FilterOutcome::NotReceived,
            other => FilterOutcome::Failed(match other {
                TxState::Failed(r) => r.clone(),
                _ => "did not finish".into(),
            }),
        }
    }

    fn build_report(&self) -> Report {
        let rt = &self.cfg.retransmit;
        let primary = self.plan.primary;
        let local = self.locals[primary];
        let mut not_tested = Vec::new();
        let mut notes = Vec::new();

        let servers: Vec<ServerReport> = (0..self.cfg.servers.len())
            .map(|i| {
                let tx = self.find(Probe::Basic(i));
                let a = tx.and_then(Tx::answer);
                ServerReport {
                    addr: self.cfg.servers[i],
                    mapped: a.and_then(Answer::mapped),
                    alternate: a.and_then(Answer::alternate),
                    legacy: a.is_some_and(Answer::legacy),
                    software: a.and_then(|a| a.software.clone()),
                    error: match (a, tx) {
                        (Some(a), _) if a.mapped().is_none() => Some("answer carried no mapped address".into()),
                        (Some(_), _) => None,
                        (None, Some(t)) => Some(t.describe_failure(rt)),
                        (None, None) => Some("not tried".into()),
                    },
                    srtt: self.rtt.estimate(self.cfg.servers[i].ip()).map(|e| e.srtt),
                    rto: self.rtt.rto(self.cfg.servers[i].ip()),
                }
            })
            .collect();
        for s in &servers {
            if let Some(e) = &s.error {
                notes.push(format!("server {}: {e}", s.addr));
            }
        }

        let reference = self.reference.map(|r| self.cfg.servers[r]);
        let public = self.primary_mapped();
        let Some(public) = public else {
            let reason = "no STUN server answered: UDP may be blocked, or the servers are down or wrong".to_string();
            return Report {
                local,
                public: None,
                reference,
                nat: None,
                nat_reason: reason.clone(),
                kind: NatKind::Unknown,
                mapping: Mapping::Unknown,
                mapping_reason: reason.clone(),
                filtering: Filtering::Unknown,
                filtering_reason: reason.clone(),
                port_preserved: None,
                allocation: Allocation::Unknown,
                allocation_reason: reason.clone(),
                allocation_samples: Vec::new(),
                hairpin: None,
                hairpin_reason: reason.clone(),
                alg: None,
                alg_reason: reason.clone(),
                lifetime: self.cfg.lifetime.map(|_| Err(reason.clone())),
                rfc5780: false,
                legacy: false,
                observations: Vec::new(),
                servers,
                verdict: Verdict::Unknown,
                verdict_reason: reason.clone(),
                not_tested: vec![format!("everything: {reason}")],
                notes,
            };
        };

        // NAT presence: the public endpoint is the local one or not.
        let nat = public != local;
        let nat_reason = if nat {
            format!("the server saw {public}, the socket is bound to {local}")
        } else {
            format!("the server saw the socket's own address {local}")
        };

        // Mapping from every destination the primary socket reached.
        let mut observations = Vec::new();
        for i in 0..self.cfg.servers.len() {
            if let Some(m) = self.answer(Probe::Basic(i)).and_then(Answer::mapped) {
                observations.push(Observation { dest: self.cfg.servers[i], mapped: m });
            }
        }
        let alt = self.alternate();
        let mut mapping_failures = Vec::new();
        for p in [Probe::MappingII, Probe::MappingIII] {
            if let Some(tx) = self.find(p) {
                match tx.answer().and_then(Answer::mapped) {
                    Some(m) => {
                        if !observations.iter().any(|o| o.dest == tx.dest) {
                            observations.push(Observation { dest: tx.dest, mapped: m });
                        }
                    }
                    None => mapping_failures.push(format!(
                        "mapping test {}: {}",
                        if p == Probe::MappingII { "II" } else { "III" },
                        tx.describe_failure(rt)
                    )),
                }
            }
        }
        let (mut mapping, mut mapping_reason) = if nat {
            infer_mapping(&observations)
        } else {
            let destinations = observations.len();
            (
                Mapping::EndpointIndependent,
                format!(
                    "no NAT: the public endpoint is the local address{}",
                    if destinations > 1 {
                        format!(", as {destinations} destinations confirmed")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        if nat && !mapping_failures.is_empty() && mapping == Mapping::Unknown {
            mapping_reason = format!("{mapping_reason}; {}", mapping_failures.join("; "));
        }
        if nat && alt.is_none() && observations.len() < 2 {
            mapping = Mapping::Unknown;
            mapping_reason = "the server does not support RFC 5780 (no OTHER-ADDRESS) and no second server \
                              answered: give two or more --server to compare mappings"
                .into();
        }
        if mapping == Mapping::Unknown {
            not_tested.push(format!("mapping: {mapping_reason}"));
        }
        let mut public_ips: Vec<_> = observations.iter().map(|o| o.mapped.ip()).collect();
        public_ips.sort();
        public_ips.dedup();
        if public_ips.len() > 1 {
            notes.push(format!(
                "the NAT used {} different public IP addresses for different destinations",
                public_ips.len()
            ));
        }

        // Filtering (RFC 5780 §4.4).
        let (filtering, filtering_reason) = match (alt, reference) {
            (None, _) | (_, None) => (
                Filtering::Unknown,
                "not tested: the server does not support RFC 5780 (no OTHER-ADDRESS), so no response can come \
                 from an address we did not contact"
                    .to_string(),
            ),
            (Some(alt), Some(server)) => match self.find(Probe::FilterI) {
                Some(t) if t.answer().is_none() => {
                    (Filtering::Unknown, format!("filtering test I failed: {}", t.describe_failure(rt)))
                }
                None => (Filtering::Unknown, "not run".to_string()),
                Some(_) => {
                    let t2 = self.filter_outcome(Probe::FilterII, alt, server);
                    let t3 = self.filter_outcome(Probe::FilterIII, SocketAddr::new(server.ip(), alt.port()), server);
                    let alt_ok = self.answer(Probe::MappingIII).is_some() || self.answer(Probe::MappingII).is_some();
                    infer_filtering(&t2, &t3, alt_ok)
                }
            },
        };
        if filtering == Filtering::Unknown {
            not_tested.push(format!("filtering: {filtering_reason}"));
        }

        // Port preservation and allocation.
        let port_preserved = Some(public.port() == local.port());
        let mut samples = Vec::new();
        for i in 0..self.plan.allocation.len() {
            if let Some(m) = self.answer(Probe::Alloc(i)).and_then(Answer::mapped) {
                samples.push((self.locals[self.plan.allocation.start + i], m));
            }
        }
        let ports: Vec<(u16, u16)> = samples.iter().map(|(l, p)| (l.port(), p.port())).collect();
        let (allocation, allocation_reason) = if self.plan.allocation.is_empty() {
            (Allocation::Unknown, "not run (no allocation sockets)".to_string())
        } else {
            classify_allocation(&ports)
        };
        if allocation == Allocation::Unknown {
            not_tested.push(format!("port allocation: {allocation_reason}"));
        }

        // Hairpin.
        let (hairpin, hairpin_reason) = self.hairpin_result();
        if hairpin.is_none() && nat {
            not_tested.push(format!("hairpinning: {hairpin_reason}"));
        }

        // ALG: MAPPED-ADDRESS rewritten while XOR-MAPPED-ADDRESS (obfuscated) was not.
        let both: Vec<(SocketAddr, SocketAddr)> =
            self.txs.iter().filter_map(Tx::answer).filter_map(|a| Some((a.xor?, a.plain?))).collect();
        let (alg, alg_reason) = match both.iter().find(|(x, p)| x != p) {
            Some((x, p)) => (
                Some(true),
                format!(
                    "MAPPED-ADDRESS said {p} but XOR-MAPPED-ADDRESS said {x}: something on the path rewrites \
                     addresses inside packets"
                ),
            ),
            None if !both.is_empty() => {
                (Some(false), "MAPPED-ADDRESS and XOR-MAPPED-ADDRESS agree in every answer".to_string())
            }
            None => (None, "the servers did not send both MAPPED-ADDRESS and XOR-MAPPED-ADDRESS".to_string()),
        };
        if alg.is_none() {
            not_tested.push(format!("ALG detection: {alg_reason}"));
        }

        let lifetime = self
            .life
            .as_ref()
            .map(|l| l.result.clone().unwrap_or_else(|| Err("the lifetime test did not finish".into())));
        if let Some(Err(e)) = &lifetime {
            not_tested.push(format!("mapping lifetime: {e}"));
        }

        let legacy = self.reference.and_then(|r| self.answer(Probe::Basic(r))).is_some_and(Answer::legacy);
        if legacy {
            notes.push(
                "legacy: the reference server answered like an RFC 3489 server (CHANGED-ADDRESS instead of \
                 OTHER-ADDRESS, or no XOR-MAPPED-ADDRESS); the classic tests I/II/III ran with CHANGED-ADDRESS as \
                 the alternate address, and RESPONSE-PORT (lifetime test) is not available from it"
                    .into(),
            );
        }
        if alt.is_none() && observations.len() >= 2 {
            notes.push(format!(
                "no server supports RFC 5780: mapping was inferred by comparing what {} servers saw from one socket",
                observations.len()
            ));
        }

        let kind = match (nat, mapping, filtering) {
            (false, _, Filtering::EndpointIndependent) => NatKind::OpenInternet,
            (false, _, Filtering::Unknown) => NatKind::NoNat,
            (false, _, _) => NatKind::FirewallWithoutNat,
            (true, Mapping::EndpointIndependent, Filtering::EndpointIndependent) => NatKind::FullCone,
            (true, Mapping::EndpointIndependent, Filtering::AddressDependent) => NatKind::RestrictedCone,
            (true, Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => NatKind::PortRestrictedCone,
            (true, Mapping::EndpointIndependent, Filtering::Unknown) => NatKind::Cone,
            (true, m, _) if m.is_dependent() => NatKind::Symmetric,
            _ => NatKind::Unknown,
        };
        let (verdict, verdict_reason) = verdict(nat, mapping, filtering, allocation);

        Report {
            local,
            public: Some(public),
            reference,
            nat: Some(nat),
            nat_reason,
            kind,
            mapping,
            mapping_reason,
            filtering,
            filtering_reason,
            port_preserved,
            allocation,
            allocation_reason,
            allocation_samples: samples,
            hairpin,
            hairpin_reason,
            alg,
            alg_reason,
            lifetime,
            rfc5780: alt.is_some(),
            legacy,
            observations,
            servers,
            verdict,
            verdict_reason,
            not_tested,
            notes,
        }
    }
}

/// The plain-words verdict and why.
fn verdict(nat: bool, mapping: Mapping, filtering: Filtering, allocation: Allocation) -> (Verdict, String) {
    if !nat {
        return (
            Verdict::Direct,
            match filtering {
                Filtering::EndpointIndependent => {
                    "no NAT and nothing filters inbound UDP: peers can reach your address directly".into()
                }
                Filtering::Unknown => "no NAT: your address is public (inbound filtering was not tested)".into(),
                _ => "no NAT, but a stateful firewall: it lets a peer in once you have sent to it, which is what \
                      hole punching does"
                    .into(),
            },
        );
    }
    match mapping {
        Mapping::EndpointIndependent => (
            Verdict::Direct,
            match filtering {
                Filtering::EndpointIndependent => {
                    "full cone: one public endpoint for every peer and no filtering; anyone who learns it can \
                     reach you"
                        .into()
                }
                Filtering::AddressDependent => "restricted cone: one public endpoint for every peer; hole \
                                                punching works even with a peer behind a symmetric NAT"
                    .into(),
                Filtering::AddressAndPortDependent => "port-restricted cone: one public endpoint for every peer; \
                    hole punching works with any peer whose NAT is a cone, a peer behind a symmetric NAT with \
                    random ports would need a relay"
                    .into(),
                Filtering::Unknown => "endpoint-independent mapping: one public endpoint for every peer, so hole \
                                       punching works (filtering was not tested)"
                    .into(),
            },
        ),
        m if m.is_dependent() => {
            let predictable = match allocation {
                Allocation::Preserved => Some("ports are preserved".to_string()),
                Allocation::Sequential { delta } => Some(format!("ports are allocated sequentially (delta {delta})")),
                _ => None,
            };
            match (predictable, filtering) {
                (Some(p), _) => (
                    Verdict::PeerMustBeCone,
                    format!(
                        "symmetric NAT ({m} mapping): a peer learns a public endpoint your NAT will not use for \
                         it, so the peer must be behind a cone NAT; {p}, so port prediction may also work"
                    ),
                ),
                (None, Filtering::AddressAndPortDependent) => (
                    Verdict::Relay,
                    format!(
                        "symmetric NAT ({m} mapping) with unpredictable ports and address-and-port-dependent \
                         filtering: only a peer with no port filtering (full cone or restricted cone) could reach \
                         you directly; most pairs will need a relay"
                    ),
                ),
                (None, _) => (
                    Verdict::PeerMustBeCone,
                    format!(
                        "symmetric NAT ({m} mapping) with unpredictable ports: a direct path needs a peer behind \
                         a cone NAT"
                    ),
                ),
            }
        }
        _ => (Verdict::Unknown, "the mapping behaviour could not be determined, and the verdict depends on it".into()),
    }
}

fn encode_request(
    buf: &mut [u8],
    id: &[u8; 12],
    change: Option<ChangeRequest>,
    response_port: Option<u16>,
) -> Result<usize, crate::stun::Error> {
    let mut w = MessageWriter::new(buf, MessageType::new(Method::BINDING, Class::Request), id)?;
    if let Some(c) = change {
        w.add(&Attribute::ChangeRequest(c))?;
    }
    if let Some(p) = response_port {
        w.add(&Attribute::ResponsePort(p))?;
    }
    Ok(w.finish())
}

fn decode_answer(msg: &Message<'_>, from: SocketAddr) -> Result<Answer, &'static str> {
    let a = Answer {
        from,
        xor: msg.xor_mapped_address(),
        plain: msg.mapped_address(),
        other: msg.other_address(),
        changed: msg.changed_address(),
        software: msg.software().map(|s| s.trim_end_matches(char::from(0)).to_owned()),
        rfc3489: msg.is_rfc3489(),
    };
    if a.mapped().is_none() {
        return Err("no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS");
    }
    Ok(a)
}

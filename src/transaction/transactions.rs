//! The transaction table: ids, stored requests, the RFC 8489 §6.2.1 schedule with the RTO cache, matching of
//! responses (§6.3), and typed outcomes.

use super::{FailReason, Spec};
use crate::net::{Received, Retransmit, Rng, RtoCache, Seed, Transmit};
use crate::stun::{self, Class, Message, MessageType, MessageWriter, Method};
use log::debug;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LOG: &str = "holepunch::transaction";

/// Largest request a transaction may hold (one unfragmented datagram on any path we use).
const MAX_REQUEST: usize = 1500;

/// A handle to one transaction of a [`Transactions`] table; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey(u64);

/// What [`Transactions::handle_input`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Not a response to any of our transactions (or not from where its answer must come): offer it to the
    /// next engine.
    NotOurs,
    /// Ours, but it changed nothing: a duplicate answer to a finished transaction, or a response to a
    /// transaction that only [`Transactions::complete`] may end.
    Ignored,
    /// It ended this transaction (successfully or not); [`Transactions::outcome`] says how.
    Completed(TxKey),
}

#[derive(Debug)]
struct Entry<A> {
    key: TxKey,
    id: [u8; 12],
    method: Method,
    spec: Spec,
    request: Vec<u8>,
    /// When the first request is due; once sent, when it actually went out (the schedule counts from there).
    first: Instant,
    sent: u32,
    /// RTO of this transaction, fixed when its first request goes out.
    rto: Duration,
    outcome: Option<Result<A, FailReason>>,
}

/// STUN client transactions whose success responses decode into `A` (see the module docs).
#[derive(Debug)]
pub struct Transactions<A> {
    schedule: Retransmit,
    rtt: RtoCache,
    ids: Rng,
    next_key: u64,
    entries: Vec<Entry<A>>,
    pending: VecDeque<TxKey>,
    completed: VecDeque<TxKey>,
}

impl<A> Transactions<A> {
    /// `schedule.rto` is the RTO of the first transaction to each address and the ceiling of every learned
    /// one; `min_rto` the floor of a learned one ([`crate::net::DEFAULT_MIN_RTO`]; `schedule.rto` or more turns
    /// learning off). `seed` feeds the transaction id generator.
    pub fn new(schedule: Retransmit, min_rto: Duration, seed: Seed) -> Self {
        Transactions {
            schedule,
            rtt: RtoCache::new(schedule.rto, min_rto),
            ids: Rng::from_seed(seed),
            next_key: 0,
            entries: Vec::new(),
            pending: VecDeque::new(),
            completed: VecDeque::new(),
        }
    }

    /// The configured schedule (each transaction runs it with its own RTO).
    pub fn schedule(&self) -> Retransmit {
        self.schedule
    }

    /// RTT estimates per server IP address, and the RTO a new transaction to one starts with.
    pub fn rto_cache(&self) -> &RtoCache {
        &self.rtt
    }

    /// For seeding an address from another of the same server ([`RtoCache::seed`]).
    pub fn rto_cache_mut(&mut self) -> &mut RtoCache {
        &mut self.rtt
    }

    /// A new transaction whose first request is due at `due` (send it by calling [`Self::handle_timeout`] at
    /// or after `due`). `build` adds the attributes (and MESSAGE-INTEGRITY, FINGERPRINT) to a `method` request
    /// that already carries a fresh transaction id.
    pub fn start<F>(&mut self, due: Instant, spec: Spec, method: Method, build: F) -> Result<TxKey, stun::Error>
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), stun::Error>,
    {
        let id = self.ids.transaction_id();
        let mut buf = [0u8; MAX_REQUEST];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), &id)?;
        build(&mut w)?;
        let len = w.finish();
        let key = TxKey(self.next_key);
        self.next_key += 1;
        debug!(target: LOG, "{key:?}: {} -> {}, due {:?}", spec.local, spec.dst, due);
        self.entries.push(Entry {
            key,
            id,
            method,
            spec,
            request: buf[..len].to_vec(),
            first: due,
            sent: 0,
            rto: self.schedule.rto,
            outcome: None,
        });
        Ok(key)
    }

    /// A datagram arrived. Responses (success or error) of the request's method to a waiting transaction end it: success responses
    /// through `decode` (an `Err` is an [`FailReason::UnusableAnswer`]) unless they carry unknown
    /// comprehension-required attributes (RFC 8489 §6.3.3), error responses as [`FailReason::ErrorResponse`].
    /// Requests and indications are never ours.
    pub fn handle_input<F>(&mut self, now: Instant, input: Received, data: &[u8], decode: F) -> Handled
    where
        F: FnOnce(&Message<'_>, SocketAddr) -> Result<A, String>,
    {
        let Ok(msg) = Message::parse(data) else { return Handled::NotOurs };
        let class = msg.class();
        if !matches!(class, Class::Success | Class::Error) {
            return Handled::NotOurs;
        }
        let id = msg.transaction_id();
        let Some(idx) = self.entries.iter().position(|e| &e.id == id && e.method == msg.method()) else {
            return Handled::NotOurs;
        };
        let e = &mut self.entries[idx];
        let from = input.source;
        let local_ok = input.local == e.spec.answer_on || (class == Class::Error && input.local == e.spec.local);
        if !local_ok || e.spec.answer_from.is_some_and(|s| s != from) {
            debug!(target: LOG, "{:?}: {class:?} from {from} on {} is not where its answer must come", e.key, input.local);
            return Handled::NotOurs;
        }
        if e.outcome.is_some() || e.spec.external || e.sent == 0 {
            return Handled::Ignored;
        }
        // Karn's algorithm: only a request sent once gives an unambiguous round trip.
        if e.sent == 1 {
            let rtt = now.saturating_duration_since(e.first);
            self.rtt.sample(e.spec.rto_of, rtt);
            debug!(target: LOG, "rtt {}: {rtt:?} -> next rto {:?}", e.spec.rto_of, self.rtt.rto(e.spec.rto_of));
        }
        let outcome = if class == Class::Error {
            Err(match msg.error_code() {
                Some(ec) => FailReason::ErrorResponse { from, code: Some(ec.code), reason: ec.reason.to_owned() },
                None => FailReason::ErrorResponse { from, code: None, reason: String::new() },
            })
        } else {
            let unknown: Vec<u16> = msg.unknown_comprehension_required().collect();
            if unknown.is_empty() {
                decode(&msg, from).map_err(|problem| FailReason::UnusableAnswer { from, problem })
            } else {
                Err(FailReason::UnknownComprehensionRequired { from, attributes: unknown })
            }
        };
        let key = e.key;
        if let Err(r) = &outcome {
            debug!(target: LOG, "{key:?}: {r}");
        }
        e.outcome = Some(outcome);
        self.completed.push_back(key);
        Handled::Completed(key)
    }

    /// ICMP port unreachable for a datagram `local` sent to `dst`: every waiting transaction from there to
    /// there that has sent a request and does not ignore the hint fails with [`FailReason::Unreachable`].
    /// Returns true when one did.
    pub fn handle_unreachable(&mut self, local: SocketAddr, dst: SocketAddr) -> bool {
        let mut hit = false;
        for e in &mut self.entries {
            if e.outcome.is_none()
                && e.sent > 0
                && e.spec.fail_on_unreachable
                && e.spec.local == local
                && e.spec.dst == dst
            {
                debug!(target: LOG, "{:?}: port unreachable (ICMP) from {dst}", e.key);
                e.outcome = Some(Err(FailReason::Unreachable { dst }));
                self.completed.push_back(e.key);
                hit = true;
            }
        }
        hit
    }

    /// Send what is due and give up on what is over (RFC 8489 §6.2.1). Returns true when a transaction ended.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let mut ended = false;
        for e in &mut self.entries {
            while let Some(due) = deadline(e, &self.schedule) {
                if due > now {
                    break;
                }
                let schedule = self.schedule.with_rto(e.rto);
                if e.sent == 0 {
                    // Start from the RTO cached for this address, and count the schedule from the moment the
                    // request really goes out.
                    e.rto = self.rtt.rto(e.spec.rto_of);
                    e.first = now;
                    e.sent = 1;
                    self.pending.push_back(e.key);
                    debug!(target: LOG, "{:?}: first send, rto {:?}", e.key, e.rto);
                } else if schedule.send_offset(e.sent).is_some() {
                    e.sent += 1;
                    self.pending.push_back(e.key);
                } else {
                    let reason =
                        FailReason::NoAnswer { dst: e.spec.dst, sends: e.sent, waited: schedule.give_up_after() };
                    debug!(target: LOG, "{:?}: {reason}", e.key);
                    e.outcome = Some(Err(reason));
                    self.completed.push_back(e.key);
                    ended = true;
                }
            }
        }
        ended
    }

    /// The next request (or retransmission) to send, copied into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(key) = self.pending.pop_front() {
            let Some(e) = self.entries.iter().find(|e| e.key == key) else { continue };
            if e.outcome.is_some() {
                continue;
            }
            let Some(out) = buf.get_mut(..e.request.len()) else {
                debug!(target: LOG, "{key:?}: a {}-byte buffer cannot hold the request", buf.len());
                continue;
            };
            out.copy_from_slice(&e.request);
            return Some(Transmit { local: e.spec.local, dst: e.spec.dst, len: e.request.len(), ttl: None });
        }
        None
    }

    /// When [`Self::handle_timeout`] must run next: the earliest send or give-up of a waiting transaction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.iter().filter_map(|e| deadline(e, &self.schedule)).min()
    }

    /// The next transaction that ended, in the order they ended.
    pub fn poll_completed(&mut self) -> Option<TxKey> {
        self.completed.pop_front()
    }

    /// End a waiting transaction from outside (for [`Spec::external`] ones: the request arrived where it was
    /// sent to). Returns false when it was not waiting.
    pub fn complete(&mut self, key: TxKey, outcome: Result<A, FailReason>) -> bool {
        let Some(e) = self.entries.iter_mut().find(|e| e.key == key && e.outcome.is_none()) else { return false };
        e.outcome = Some(outcome);
        self.completed.push_back(key);
        true
    }

    /// Stop a waiting transaction ([`FailReason::Cancelled`]). Returns false when it was not waiting.
    pub fn cancel(&mut self, key: TxKey) -> bool {
        self.complete(key, Err(FailReason::Cancelled))
    }

    /// How the transaction ended; None while it waits (or for an unknown key).
    pub fn outcome(&self, key: TxKey) -> Option<&Result<A, FailReason>> {
        self.entries.iter().find(|e| e.key == key)?.outcome.as_ref()
    }

    /// True while the transaction has no outcome.
    pub fn is_waiting(&self, key: TxKey) -> bool {
        self.entries.iter().any(|e| e.key == key && e.outcome.is_none())
    }

    /// True while any transaction has no outcome.
    pub fn any_waiting(&self) -> bool {
        self.entries.iter().any(|e| e.outcome.is_none())
    }

    /// Forget a transaction (a waiting one is dropped without an outcome), returning its outcome. Answers
    /// arriving later are [`Handled::NotOurs`].
    pub fn remove(&mut self, key: TxKey) -> Option<Result<A, FailReason>> {
        let idx = self.entries.iter().position(|e| e.key == key)?;
        self.entries.remove(idx).outcome
    }

    /// The transaction's id (the request's bytes 8..20).
    pub fn transaction_id(&self, key: TxKey) -> Option<&[u8; 12]> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.id)
    }

    /// The transaction with this id.
    pub fn find(&self, id: &[u8; 12]) -> Option<TxKey> {
        self.entries.iter().find(|e| &e.id == id).map(|e| e.key)
    }

    pub fn spec(&self, key: TxKey) -> Option<&Spec> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.spec)
    }

    /// Requests sent so far.
    pub fn sends(&self, key: TxKey) -> u32 {
        self.entries.iter().find(|e| e.key == key).map_or(0, |e| e.sent)
    }
}

/// When a waiting entry's next send or give-up is due.
fn deadline<A>(e: &Entry<A>, schedule: &Retransmit) -> Option<Instant> {
    if e.outcome.is_some() {
        return None;
    }
    let schedule = schedule.with_rto(e.rto);
    Some(match schedule.send_offset(e.sent) {
        Some(off) => e.first + off,
        None => e.first + schedule.give_up_after(),
    })
}

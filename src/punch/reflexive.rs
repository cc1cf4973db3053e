//! Learn and keep the server-reflexive endpoint (RFC 8489 Binding, §6.2.1 retransmission) and keep the NAT
//! mapping warm with a request every keepalive interval. A sans-IO engine: no sockets, no clock.
//!
//! A Binding request (not an indication) is used as the keepalive because its answer also tells whether the
//! mapping moved: a NAT that rebooted or timed the mapping out hands out a new public port, which is exactly
//! what the peer needs to learn to re-punch.

use crate::net::{Engine, Received, Retransmit, Seed, Transmit, DEFAULT_MIN_RTO};
use crate::stun::{Message, Method};
use crate::transaction::{check_target, FailReason, Handled, Spec, Transactions, TxKey};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the keeper needs to know.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// The punching socket's local address (the `local` of every transmit, and where answers must arrive).
    pub local: SocketAddr,
    /// The STUN server (stund) whose view of our endpoint we track.
    pub server: SocketAddr,
    /// Interval between keepalive Binding requests (docs/architecture.md, "Numbers": 3 s).
    pub keepalive: Duration,
    /// Retransmission of each request (RFC 8489 §6.2.1). `retransmit.rto` starts the first transaction and
    /// caps the RTO learned from the server's answers.
    pub retransmit: Retransmit,
    /// Floor of the learned RTO ([`DEFAULT_MIN_RTO`]).
    pub min_rto: Duration,
}

impl KeeperConfig {
    pub fn new(local: SocketAddr, server: SocketAddr) -> KeeperConfig {
        KeeperConfig {
            local,
            server,
            keepalive: Duration::from_secs(3),
            retransmit: Retransmit::default(),
            min_rto: DEFAULT_MIN_RTO,
        }
    }
}

/// Things the application must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first public endpoint, or the first after the server was lost.
    Discovered(SocketAddr),
    /// The NAT mapping moved: peers must be told and paths re-punched.
    Changed { old: SocketAddr, new: SocketAddr },
    /// A whole transaction went unanswered (RFC 8489 §6.2.1 gave up) or the server's port was reported
    /// unreachable: the server or the path is down.
    ServerLost,
    /// The server answered, but not with an endpoint we can use: an error response (RFC 8489 §6.3.4), a
    /// success without a mapped address or with one [`check_target`] refuses (unspecified, broadcast, port
    /// 0, someone's private address), or unknown comprehension-required attributes (§6.3.3). The public
    /// endpoint stays as it was; the next keepalive asks again.
    Refused(FailReason),
}

/// The engine ([`Engine`]): feed datagrams and timeouts, drain transmits and events.
#[derive(Debug)]
pub struct ReflexiveKeeper {
    config: KeeperConfig,
    public: Option<SocketAddr>,
    lost: bool,
    tx: Option<TxKey>,
    next_keepalive: Instant,
    txs: Transactions<SocketAddr>,
    events: VecDeque<Event>,
}

impl ReflexiveKeeper {
    /// Start at `now`; the first request goes out immediately. `seed` makes transaction ids unpredictable to
    /// off-path attackers (pass OS randomness) while tests stay deterministic.
    pub fn new(config: KeeperConfig, now: Instant, seed: Seed) -> ReflexiveKeeper {
        let mut k = ReflexiveKeeper {
            txs: Transactions::new(config.retransmit, config.min_rto, seed),
            config,
            public: None,
            lost: false,
            tx: None,
            next_keepalive: now,
            events: VecDeque::new(),
        };
        k.handle_timeout(now);
        k
    }

    /// The public endpoint as last seen by the server.
    pub fn public(&self) -> Option<SocketAddr> {
        self.public
    }

    /// Take what ended out of the transaction table and turn it into events.
    fn settle(&mut self, now: Instant) {
        while let Some(key) = self.txs.poll_completed() {
            if self.tx == Some(key) {
                self.tx = None;
            }
            match self.txs.remove(key) {
                Some(Ok(mapped)) => {
                    match self.public {
                        Some(old) if old != mapped => self.events.push_back(Event::Changed { old, new: mapped }),
                        Some(_) if !self.lost => {}
                        _ => self.events.push_back(Event::Discovered(mapped)),
                    }
                    self.public = Some(mapped);
                    self.lost = false;
                }
                Some(Err(r @ (FailReason::NoAnswer { .. } | FailReason::Unreachable { .. }))) => {
                    log::debug!(target: "punch", "keepalive: {r}");
                    // Pace the next attempt: a dead server gets one transaction per keepalive interval, not a
                    // storm.
                    self.next_keepalive = now + self.config.keepalive;
                    if !self.lost {
                        self.lost = true;
                        self.events.push_back(Event::ServerLost);
                    }
                }
                Some(Err(FailReason::Cancelled)) | None => {}
                Some(Err(r)) => {
                    log::debug!(target: "punch", "keepalive to {}: {r}", self.config.server);
                    self.events.push_back(Event::Refused(r));
                }
            }
        }
    }
}

/// A Binding success response's mapped address. Servers that predate RFC 5389 send only MAPPED-ADDRESS; an
/// ALG may rewrite that one, so XOR-MAPPED-ADDRESS comes first. Peers will be told to send to it, so it must
/// be an address [`check_target`] allows for a client of `server`.
fn mapped(server: SocketAddr, msg: &Message<'_>) -> Result<SocketAddr, String> {
    let m = msg.xor_mapped_address().or_else(|| msg.mapped_address()).ok_or("carries no mapped address")?;
    check_target(server, m).map_err(|why| format!("mapped address {m} is {why}"))?;
    Ok(m)
}

impl Engine for ReflexiveKeeper {
    type Event = Event;

    /// True when it was the answer to our request (and so consumed).
    fn handle_input(&mut self, now: Instant, input: Received, data: &[u8]) -> bool {
        let server = self.config.server;
        match self.txs.handle_input(now, input, data, |msg, _| mapped(server, msg)) {
            Handled::NotOurs => false,
            Handled::Ignored => true,
            Handled::Completed(_) => {
                self.settle(now);
                true
            }
        }
    }

    fn handle_unreachable(&mut self, now: Instant, local: SocketAddr, dst: SocketAddr) -> bool {
        let hit = self.txs.handle_unreachable(local, dst);
        self.settle(now);
        hit
    }

    /// Fire due timers: start a keepalive transaction, retransmit, or give up.
    fn handle_timeout(&mut self, now: Instant) {
        self.txs.handle_timeout(now);
        self.settle(now);
        if self.tx.is_none() && now >= self.next_keepalive {
            // A Binding request with FINGERPRINT (RFC 8489 §7): tells our answer apart from other traffic on
            // the punching socket.
            let spec = Spec::new(self.config.local, self.config.server);
            match self.txs.start(now, spec, Method::BINDING, |w| w.add_fingerprint()) {
                Ok(key) => self.tx = Some(key),
                Err(e) => log::warn!(target: "punch", "cannot encode a Binding request: {e}"),
            }
            self.txs.handle_timeout(now);
            self.next_keepalive = now + self.config.keepalive;
        }
    }

    /// The request to send, if one is due.
    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.txs.poll_transmit(buf)
    }

    /// The next resend or give-up while a transaction runs, else the next keepalive.
    fn poll_timeout(&self) -> Option<Instant> {
        match self.tx {
            Some(_) => self.txs.poll_timeout(),
            None => Some(self.next_keepalive),
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Attribute, Class, MessageType, MessageWriter};

    const SERVER: &str = "203.0.113.10:3478";
    const LOCAL: &str = "0.0.0.0:6666";

    fn keeper(now: Instant) -> ReflexiveKeeper {
        ReflexiveKeeper::new(KeeperConfig::new(LOCAL.parse().unwrap(), SERVER.parse().unwrap()), now, [42; 32])
    }

    /// A datagram from `from` on the punching socket.
    fn from(addr: &str) -> Received {
        Received::udp(LOCAL.parse().unwrap(), addr.parse().unwrap())
    }

    /// What the server would answer to `req`, reporting `mapped`.
    fn answer(req: &[u8], mapped: SocketAddr) -> Vec<u8> {
        let m = Message::parse(req).unwrap();
        let mut out = [0u8; 128];
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let mut w = MessageWriter::new(&mut out, ty, m.transaction_id()).unwrap();
        w.add(&Attribute::XorMappedAddress(mapped)).unwrap();
        let n = w.finish();
        out[..n].to_vec()
    }

    fn send(k: &mut ReflexiveKeeper) -> Vec<u8> {
        let mut buf = [0u8; 128];
        let t = k.poll_transmit(&mut buf).expect("a request is due");
        assert_eq!((t.local, t.dst), (LOCAL.parse().unwrap(), SERVER.parse().unwrap()));
        buf[..t.len].to_vec()
    }

    #[test]
    fn discovers_then_keeps_alive_every_interval() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let req = send(&mut k);
        let public: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        assert!(k.handle_input(t0, from(SERVER), &answer(&req, public)));
        assert_eq!(k.poll_event(), Some(Event::Discovered(public)));
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        k.handle_timeout(t0 + Duration::from_secs(3));
        let req2 = send(&mut k);
        assert_ne!(req[8..20], req2[8..20], "each keepalive is a new transaction");
        assert!(k.handle_input(t0, from(SERVER), &answer(&req2, public)));
        assert_eq!(k.poll_event(), None, "an unchanged endpoint is not news");
    }

    #[test]
    fn reports_a_moved_mapping() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let a: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:40123".parse().unwrap();
        let req = send(&mut k);
        k.handle_input(t0, from(SERVER), &answer(&req, a));
        k.poll_event();
        k.handle_timeout(t0 + Duration::from_secs(3));
        let req = send(&mut k);
        k.handle_input(t0, from(SERVER), &answer(&req, b));
        assert_eq!(k.poll_event(), Some(Event::Changed { old: a, new: b }));
        assert_eq!(k.public(), Some(b));
    }

    #[test]
    fn ignores_strangers_and_stale_answers() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let req = send(&mut k);
        let public: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let resp = answer(&req, public);
        assert!(!k.handle_input(t0, from("203.0.113.99:3478"), &resp), "wrong source");
        let mut forged = resp.clone();
        forged[19] ^= 1;
        assert!(!k.handle_input(t0, from(SERVER), &forged), "wrong transaction id");
        assert!(!k.handle_input(t0, from(SERVER), b"garbage"), "not STUN");
        assert_eq!(k.poll_event(), None);
        assert!(k.handle_input(t0, from(SERVER), &resp));
        assert!(!k.handle_input(t0, from(SERVER), &resp), "duplicate answer");
    }

    #[test]
    fn retransmits_per_rfc8489_then_reports_loss_and_recovers() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        send(&mut k);
        let mut sends = vec![0u64];
        let mut now = t0;
        for _ in 0..100 {
            let Some(next) = k.poll_timeout() else { break };
            now = next;
            k.handle_timeout(now);
            let mut buf = [0u8; 128];
            if k.poll_transmit(&mut buf).is_some() {
                sends.push((now - t0).as_millis() as u64);
            }
            if let Some(e) = k.poll_event() {
                assert_eq!(e, Event::ServerLost);
                break;
            }
        }
        assert_eq!(sends, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(now - t0, Duration::from_millis(39500));
        // The next keepalive, one interval later, starts a new transaction; an answer brings the endpoint back.
        assert_eq!(k.poll_timeout(), Some(now + Duration::from_secs(3)));
        k.handle_timeout(now);
        assert!(k.poll_transmit(&mut [0u8; 128]).is_none());
        let now = now + Duration::from_secs(3);
        k.handle_timeout(now);
        let req = send(&mut k);
        let public: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        k.handle_input(now, from(SERVER), &answer(&req, public));
        assert_eq!(k.poll_event(), Some(Event::Discovered(public)));
    }

    #[test]
    fn icmp_unreachable_loses_the_server_at_once_and_paces_the_retry() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        send(&mut k);
        let t1 = t0 + Duration::from_millis(5);
        assert!(!k.handle_unreachable(t1, LOCAL.parse().unwrap(), "203.0.113.99:3478".parse().unwrap()));
        assert!(k.handle_unreachable(t1, LOCAL.parse().unwrap(), SERVER.parse().unwrap()));
        assert_eq!(k.poll_event(), Some(Event::ServerLost));
        assert_eq!(k.poll_timeout(), Some(t1 + Duration::from_secs(3)), "one attempt per keepalive interval");
    }

    #[test]
    fn error_response_ends_the_transaction_with_a_refusal() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let req = send(&mut k);
        let m = Message::parse(&req).unwrap();
        let mut out = [0u8; 128];
        let ty = MessageType::new(Method::BINDING, Class::Error);
        let mut w = MessageWriter::new(&mut out, ty, m.transaction_id()).unwrap();
        w.add(&Attribute::ErrorCode(crate::stun::ErrorCode { code: 500, reason: "Server Error" })).unwrap();
        let n = w.finish();
        assert!(k.handle_input(t0, from(SERVER), &out[..n]));
        let Some(Event::Refused(r)) = k.poll_event() else { panic!("an error response is news") };
        assert_eq!(r.to_string(), "203.0.113.10:3478 answered with error 500 Server Error");
        assert_eq!(k.poll_event(), None);
        assert_eq!(k.public(), None);
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(3)), "the next keepalive, no retransmission");
    }

    #[test]
    fn unusable_or_missing_mapped_address_is_refused_not_announced() {
        for bad in ["0.0.0.0:0", "255.255.255.255:9", "192.168.1.20:6666", "127.0.0.1:6666", "198.51.100.7:0"] {
            let t0 = Instant::now();
            let mut k = keeper(t0);
            let req = send(&mut k);
            assert!(k.handle_input(t0, from(SERVER), &answer(&req, bad.parse().unwrap())));
            let Some(Event::Refused(r)) = k.poll_event() else { panic!("{bad}: must be refused") };
            assert!(r.to_string().contains(&format!("mapped address {bad} is")), "{r}");
            assert_eq!(k.public(), None, "{bad} never becomes the public endpoint");
            assert_eq!(k.poll_event(), None);
        }
        // No mapped address at all.
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let req = send(&mut k);
        let m = Message::parse(&req).unwrap();
        let mut out = [0u8; 64];
        let w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Success), m.transaction_id());
        let n = w.unwrap().finish();
        assert!(k.handle_input(t0, from(SERVER), &out[..n]));
        assert!(matches!(k.poll_event(), Some(Event::Refused(FailReason::UnusableAnswer { .. }))));
    }

    #[test]
    fn unknown_comprehension_required_attribute_fails_the_transaction() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let req = send(&mut k);
        let m = Message::parse(&req).unwrap();
        let mut out = [0u8; 128];
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let mut w = MessageWriter::new(&mut out, ty, m.transaction_id()).unwrap();
        w.add(&Attribute::XorMappedAddress("198.51.100.7:40000".parse().unwrap())).unwrap();
        w.add_raw(0x7f01, b"none").unwrap();
        let n = w.finish();
        assert!(k.handle_input(t0, from(SERVER), &out[..n]));
        assert!(matches!(
            k.poll_event(),
            Some(Event::Refused(FailReason::UnknownComprehensionRequired { ref attributes, .. })) if attributes == &[0x7f01]
        ));
        assert_eq!(k.public(), None);
    }
}

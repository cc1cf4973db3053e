//! Learn and keep the server-reflexive endpoint (RFC 8489 Binding, §6.2.1 retransmission) and keep the NAT
//! mapping warm with a request every keepalive interval. A sans-IO engine: no sockets, no clock.
//!
//! A Binding request (not an indication) is used as the keepalive because its answer also tells whether the
//! mapping moved: a NAT that rebooted or timed the mapping out hands out a new public port, which is exactly
//! what the peer needs to learn to re-punch.

use crate::net::{Retransmit, Rng, Seed};
use crate::stun::{Class, Message, MessageType, MessageWriter, Method};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the keeper needs to know.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// The STUN server (stund) whose view of our endpoint we track.
    pub server: SocketAddr,
    /// Interval between keepalive Binding requests (docs/architecture.md, "Numbers": 3 s).
    pub keepalive: Duration,
    /// Retransmission of each request (RFC 8489 §6.2.1).
    pub retransmit: Retransmit,
}

impl KeeperConfig {
    pub fn new(server: SocketAddr) -> KeeperConfig {
        KeeperConfig { server, keepalive: Duration::from_secs(3), retransmit: Retransmit::default() }
    }
}

/// Things the application must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first public endpoint, or the first after the server was lost.
    Discovered(SocketAddr),
    /// The NAT mapping moved: peers must be told and paths re-punched.
    Changed { old: SocketAddr, new: SocketAddr },
    /// A whole transaction went unanswered (RFC 8489 §6.2.1 gave up): the server or the path is down.
    ServerLost,
}

/// A datagram to send to `dest` from the punching socket; its bytes are `buf[..len]` of `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub len: usize,
}

#[derive(Debug)]
struct Transaction {
    id: [u8; 12],
    started: Instant,
    /// Requests sent so far.
    sent: u32,
}

/// The engine. Drive it like every engine here (docs/architecture.md, "Engines"): feed datagrams and timeouts,
/// drain transmits/events.
#[derive(Debug)]
pub struct ReflexiveKeeper {
    config: KeeperConfig,
    public: Option<SocketAddr>,
    lost: bool,
    tx: Option<Transaction>,
    next_keepalive: Instant,
    send_due: bool,
    ids: Rng,
    events: VecDeque<Event>,
}

impl ReflexiveKeeper {
    /// Start at `now`; the first request goes out immediately. `seed` makes transaction ids unpredictable to
    /// off-path attackers (pass OS randomness) while tests stay deterministic.
    pub fn new(config: KeeperConfig, now: Instant, seed: Seed) -> ReflexiveKeeper {
        let mut k = ReflexiveKeeper {
            config,
            public: None,
            lost: false,
            tx: None,
            next_keepalive: now,
            send_due: false,
            ids: Rng::from_seed(seed),
            events: VecDeque::new(),
        };
        k.handle_timeout(now);
        k
    }

    /// The public endpoint as last seen by the server.
    pub fn public(&self) -> Option<SocketAddr> {
        self.public
    }

    /// Offer a received datagram. Returns true when it was the answer to our request (and so consumed).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let _ = now;
        if from != self.config.server {
            return false;
        }
        let Some(tx) = &self.tx else { return false };
        let Ok(msg) = Message::parse(data) else { return false };
        if msg.method() != Method::BINDING || msg.transaction_id() != &tx.id || msg.is_rfc3489() {
            return false;
        }
        self.tx = None;
        if msg.class() != Class::Success {
            log::warn!(target: "punch", "server {} answered the keepalive with an error", self.config.server);
            return true;
        }
        // Servers that predate RFC 5389 send only MAPPED-ADDRESS; an ALG may rewrite that one, so prefer XOR.
        let Some(mapped) = msg.xor_mapped_address().or_else(|| msg.mapped_address()) else {
            log::warn!(target: "punch", "Binding response from {} carries no mapped address", self.config.server);
            return true;
        };
        match self.public {
            Some(old) if old != mapped => self.events.push_back(Event::Changed { old, new: mapped }),
            Some(_) if !self.lost => {}
            _ => self.events.push_back(Event::Discovered(mapped)),
        }
        self.public = Some(mapped);
        self.lost = false;
        true
    }

    /// Fire due timers: start a keepalive transaction, retransmit, or give up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(tx) = &mut self.tx {
            let r = &self.config.retransmit;
            if now >= tx.started + r.give_up_after() {
                self.tx = None;
                // Pace the next attempt: a dead server gets one transaction per keepalive interval, not a storm.
                self.next_keepalive = now + self.config.keepalive;
                if !self.lost {
                    self.lost = true;
                    self.events.push_back(Event::ServerLost);
                }
            } else if let Some(at) = r.send_offset(tx.sent) {
                if now >= tx.started + at {
                    tx.sent += 1;
                    self.send_due = true;
                }
            }
        }
        if self.tx.is_none() && now >= self.next_keepalive {
            let id = self.ids.transaction_id();
            self.tx = Some(Transaction { id, started: now, sent: 1 });
            self.send_due = true;
            self.next_keepalive = now + self.config.keepalive;
        }
    }

    /// The request to send, if one is due.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if !self.send_due {
            return None;
        }
        let tx = self.tx.as_ref()?;
        let ty = MessageType::new(Method::BINDING, Class::Request);
        let mut w = MessageWriter::new(buf, ty, &tx.id).ok()?;
        w.add_fingerprint().ok()?;
        self.send_due = false;
        Some(Transmit { dest: self.config.server, len: w.finish() })
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = self.next_keepalive;
        let Some(tx) = &self.tx else { return Some(keepalive) };
        let r = &self.config.retransmit;
        // The next resend, or giving up once every request is out (a resend always comes before giving up).
        Some(tx.started + r.send_offset(tx.sent).unwrap_or_else(|| r.give_up_after()))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::Attribute;

    const SERVER: &str = "203.0.113.10:3478";

    fn keeper(now: Instant) -> ReflexiveKeeper {
        ReflexiveKeeper::new(KeeperConfig::new(SERVER.parse().unwrap()), now, [42; 32])
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
        assert_eq!(t.dest, SERVER.parse().unwrap());
        buf[..t.len].to_vec()
    }

    #[test]
    fn discovers_then_keeps_alive_every_interval() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let req = send(&mut k);
        let public: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        assert!(k.handle_datagram(t0, SERVER.parse().unwrap(), &answer(&req, public)));
        assert_eq!(k.poll_event(), Some(Event::Discovered(public)));
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        k.handle_timeout(t0 + Duration::from_secs(3));
        let req2 = send(&mut k);
        assert_ne!(req[8..20], req2[8..20], "each keepalive is a new transaction");
        assert!(k.handle_datagram(t0, SERVER.parse().unwrap(), &answer(&req2, public)));
        assert_eq!(k.poll_event(), None, "an unchanged endpoint is not news");
    }

    #[test]
    fn reports_a_moved_mapping() {
        let t0 = Instant::now();
        let mut k = keeper(t0);
        let a: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:40123".parse().unwrap();
        let req = send(&mut k);
        k.handle_datagram(t0, SERVER.parse().unwrap(), &answer(&req, a));
        k.poll_event();
        k.handle_timeout(t0 + Duration::from_secs(3));
        let req = send(&mut k);
        k.handle_datagram(t0, SERVER.parse().unwrap(), &answer(&req, b));
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
        assert!(!k.handle_datagram(t0, "203.0.113.99:3478".parse().unwrap(), &resp), "wrong source");
        let mut forged = resp.clone();
        forged[19] ^= 1;
        assert!(!k.handle_datagram(t0, SERVER.parse().unwrap(), &forged), "wrong transaction id");
        assert!(!k.handle_datagram(t0, SERVER.parse().unwrap(), b"garbage"), "not STUN");
        assert_eq!(k.poll_event(), None);
        assert!(k.handle_datagram(t0, SERVER.parse().unwrap(), &resp));
        assert!(!k.handle_datagram(t0, SERVER.parse().unwrap(), &resp), "duplicate answer");
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
        k.handle_datagram(now, SERVER.parse().unwrap(), &answer(&req, public));
        assert_eq!(k.poll_event(), Some(Event::Discovered(public)));
    }
}

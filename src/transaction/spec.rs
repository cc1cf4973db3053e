//! What one transaction sends, and where its answer must come from (RFC 8489 §6.3: a response is matched to
//! its request by transaction id; we also require the socket and source we expect, so an off-path guess of
//! the id from elsewhere cannot end a transaction).

use std::net::{IpAddr, SocketAddr};

/// How a transaction is sent and matched. Build with [`Spec::new`] and adjust with the builder methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The local socket the request leaves from.
    pub local: SocketAddr,
    /// Where it goes.
    pub dst: SocketAddr,
    /// The local socket a success response must arrive on (normally `local`; RESPONSE-PORT, RFC 5780 §7.5,
    /// sends it elsewhere). Error responses are also accepted on `local`.
    pub answer_on: SocketAddr,
    /// The source a response must come from; None accepts any (CHANGE-REQUEST answers come from the
    /// server's other address, RFC 5780 §7.2).
    pub answer_from: Option<SocketAddr>,
    /// The address whose RTT estimate the transaction starts from and feeds (RFC 8489 §6.2.1 caches per IP).
    pub rto_of: IpAddr,
    /// End the transaction at once on an ICMP port unreachable for `local` -> `dst`.
    pub fail_on_unreachable: bool,
    /// Never matched by a response: only [`Transactions::complete`](super::Transactions::complete), a
    /// time-out or a cancel ends it (a request we send to ourselves, such as a hairpinning probe).
    pub external: bool,
}

impl Spec {
    /// A request from `local` to `dst`, answered by `dst` on `local`, with `dst`'s RTO, failing fast on ICMP.
    pub fn new(local: SocketAddr, dst: SocketAddr) -> Spec {
        Spec {
            local,
            dst,
            answer_on: local,
            answer_from: Some(dst),
            rto_of: dst.ip(),
            fail_on_unreachable: true,
            external: false,
        }
    }

    pub fn answer_on(mut self, local: SocketAddr) -> Spec {
        self.answer_on = local;
        self
    }

    /// Accept a response from any source.
    pub fn any_source(mut self) -> Spec {
        self.answer_from = None;
        self
    }

    pub fn rto_of(mut self, ip: IpAddr) -> Spec {
        self.rto_of = ip;
        self
    }

    /// Keep to the schedule even when the network reports `dst` unreachable.
    pub fn ignore_unreachable(mut self) -> Spec {
        self.fail_on_unreachable = false;
        self
    }

    /// Completed only from outside (see [`Spec::external`]).
    pub fn completed_externally(mut self) -> Spec {
        self.external = true;
        self
    }
}

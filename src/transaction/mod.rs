//! STUN client transactions (RFC 8489 §6.2 sending, §6.3 receiving), shared by every engine that asks a STUN
//! server something: the NAT diagnosis, the reflexive keeper, and the rendezvous and punch engines.
//!
//! [`Transactions`] owns, per request: a transaction id from the library's CSPRNG ([`crate::net::Rng`],
//! RFC 8489 §6 wants them "cryptographically random"), the encoded request bytes (so a retransmission is a
//! copy, not a re-encoding), the §6.2.1 retransmission schedule ([`crate::net::Retransmit`]) started from the
//! RTO cached for the server's IP address ([`crate::net::RtoCache`], RFC 6298, sampled only from requests sent
//! once: Karn's rule), and the matching of answers by transaction id *and* the local socket and source they
//! must arrive on. Every transaction ends with a typed outcome: the owner's decoded answer, or a
//! [`FailReason`].
//!
//! It is a component, not an [`Engine`](crate::net::Engine) of its own: the owning engine forwards its
//! `handle_input`, `handle_unreachable`, `handle_timeout`, `poll_transmit` and `poll_timeout` calls, decodes
//! success responses with a closure of its own, and learns what ended from [`Transactions::poll_completed`].

mod fail;
mod spec;
mod target;
mod transactions;

#[cfg(test)]
mod tests;

pub use fail::FailReason;
pub use spec::Spec;
pub use target::{check_target, Unusable};
pub use transactions::{Handled, Transactions, TxKey};

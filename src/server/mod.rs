//! STUN server engine (sans-IO): Binding responses (RFC 8489/5389, RFC 3489 legacy form), RFC 5780 NAT
//! behaviour discovery, the amplification bound, per-source rate limiting, connection caps and counters.
//!
//! The caller (the `stund` binary, the simulator, or a test) owns sockets and clocks: it hands
//! [`Responder::handle`] one received datagram or TCP frame with the local address it arrived on and its
//! source ([`net::Received`](crate::net::Received)), and gets back either "send these bytes from this local
//! address to that one" ([`net::Transmit`](crate::net::Transmit)) or why not ([`Dropped`]). Which of the (up
//! to four) RFC 5780 sockets a local address is comes from the [`ServerConfig`]. The responder also
//! implements [`net::Engine`](crate::net::Engine) (src/server/engine.rs).

mod amplification;
mod connlimit;
mod counters;
mod engine;
mod ratelimit;
mod responder;
mod source;

pub use amplification::AMPLIFICATION_FACTOR;
pub use connlimit::{ConnectionLimit, Refused};
pub use counters::{Counters, SharedCounters};
pub use ratelimit::{RateLimitConfig, RateLimitError, RateLimiter, MAX_BURST, MAX_RATE, MAX_SLOTS};
pub use responder::{
    ConfigError, Dropped, Field, LocalSocket, Responder, ServerConfig, MAX_QUEUED_REPLIES, MAX_REQUEST_LEN,
    MAX_RESPONSE_LEN, MAX_SOFTWARE_LEN, MAX_UNKNOWN_LISTED,
};
pub use source::Source;

//! STUN server engine (sans-IO): Binding responses (RFC 8489/5389, RFC 3489 legacy form), RFC 5780 NAT
//! behaviour discovery, the amplification bound, per-source rate limiting, connection caps and counters.
//!
//! The caller (the `stund` binary, or a test) owns sockets and clocks: it hands [`Responder::handle`] one
//! received datagram or TCP frame, which of its (up to four) local sockets it arrived on and from whom, and gets
//! back either "send these bytes from this local socket to this address" or "drop".

mod amplification;
mod connlimit;
mod counters;
mod ratelimit;
mod responder;
mod source;

pub use amplification::AMPLIFICATION_FACTOR;
pub use connlimit::{ConnectionLimit, Refused};
pub use counters::{Counters, SharedCounters};
pub use ratelimit::{RateLimitConfig, RateLimitError, RateLimiter, MAX_BURST, MAX_RATE, MAX_SLOTS, SLOT_BYTES, WAYS};
pub use responder::{
    Action, ConfigError, Dropped, LocalSocket, Received, Responder, ServerConfig, Transport, MAX_REQUEST_LEN,
    MAX_RESPONSE_LEN, MAX_SOFTWARE_LEN, MAX_UNKNOWN_LISTED,
};
pub use source::Source;

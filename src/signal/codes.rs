//! The ERROR-CODE values the rendezvous uses (RFC 8489 §14.8 classes; docs/signal.md, "Error codes").

/// Malformed request (a missing or broken attribute).
pub const BAD_REQUEST: u16 = 400;
/// MESSAGE-INTEGRITY-SHA256 missing or wrong: the sender does not hold the network secret (or uses another
/// name's key). Sent without integrity, since the server cannot know a key the client would share.
pub const UNAUTHORIZED: u16 = 401;
/// The name is registered with another PEER-KEY.
pub const FORBIDDEN: u16 = 403;
/// CONNECT to a peer that is not registered.
pub const UNKNOWN_PEER: u16 = 404;
/// CONNECT from a peer that has not registered (the server has nothing to push it).
pub const NOT_REGISTERED: u16 = 412;
/// Comprehension-required attributes the server does not know (RFC 8489 §14.13).
pub const UNKNOWN_ATTRIBUTE: u16 = 420;
/// NONCE missing, stale, or issued to another source: the challenge; it carries a fresh NONCE.
pub const STALE_NONCE: u16 = 438;
/// The registry or the introduction table is full.
pub const INSUFFICIENT_CAPACITY: u16 = 508;

/// The reason phrase sent with `code` (short: unauthenticated answers must stay smaller than the request).
pub fn reason(code: u16) -> &'static str {
    match code {
        BAD_REQUEST => "Bad Request",
        UNAUTHORIZED => "Unauthorized",
        FORBIDDEN => "Name Taken",
        UNKNOWN_PEER => "Unknown Peer",
        NOT_REGISTERED => "Not Registered",
        UNKNOWN_ATTRIBUTE => "Unknown Attribute",
        STALE_NONCE => "Stale Nonce",
        INSUFFICIENT_CAPACITY => "Full",
        _ => "",
    }
}

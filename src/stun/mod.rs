//! STUN wire format (RFC 8489, RFC 5389, RFC 3489 framing, RFC 5780 and RFC 8656 attributes): parse by
//! borrowing, build into a caller's buffer. No policy lives here; see `crate::server` and `crate::nat`.
//! docs/stun-codec.md describes what is validated, the RFC sections, and how the codec is tested.
//!
//! ```
//! use holepunch::stun::{Attribute, Class, Message, MessageType, MessageWriter, Method};
//! use std::net::SocketAddr;
//!
//! // A client's Binding request.
//! let mut req = [0u8; 64];
//! let mut w = MessageWriter::new(&mut req, MessageType::new(Method::BINDING, Class::Request), &[7; 12]).unwrap();
//! w.add_fingerprint().unwrap();
//! let n = w.finish();
//!
//! // The server: parse without copying, check, answer into its own buffer.
//! let from: SocketAddr = "203.0.113.5:40000".parse().unwrap();
//! let m = Message::parse(&req[..n]).unwrap();
//! assert_eq!((m.method(), m.class()), (Method::BINDING, Class::Request));
//! assert_eq!(m.unknown_comprehension_required().count(), 0); // otherwise: 420 + UNKNOWN-ATTRIBUTES
//! assert!(m.check_fingerprint().unwrap());
//! let mut resp = [0u8; 128];
//! let mut w = MessageWriter::new(&mut resp, MessageType::new(Method::BINDING, Class::Success), m.transaction_id())
//!     .unwrap();
//! w.add(&Attribute::XorMappedAddress(from)).unwrap();
//! w.add(&Attribute::Software("holepunch")).unwrap();
//! w.add_fingerprint().unwrap();
//! let len = w.finish();
//!
//! // The client reads its reflexive address.
//! let r = Message::parse(&resp[..len]).unwrap();
//! assert_eq!(r.xor_mapped_address(), Some(from));
//! assert_eq!(r.software(), Some("holepunch"));
//! ```

mod address;
pub mod attr;
pub mod channel;
mod error;
mod header;
pub mod integrity;
mod message;
mod writer;

pub use attr::{
    Attribute, ChangeRequest, ErrorCode, Family, Icmp, PasswordAlgorithm, PasswordAlgorithms, RawAttribute, TypeList,
};
pub use channel::{looks_like_channel_data, ChannelData, CHANNEL_DATA_HEADER_LEN};
pub use error::Error;
pub use header::{Class, MessageType, Method, HEADER_LEN, MAGIC_COOKIE};
pub use message::{frame_len, looks_like_stun, Attributes, Message};
pub use writer::MessageWriter;

#[cfg(test)]
mod tests;

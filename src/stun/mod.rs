//! STUN wire format (RFC 8489, RFC 5389, RFC 3489 framing, RFC 5780 and RFC 8656 attributes): parse by
//! borrowing, build into a caller's buffer. No policy lives here; see `crate::server` and `crate::nat`.
//!
//! ```
//! use holepunch::stun::{Attribute, Class, Message, MessageType, MessageWriter, Method};
//! let mut buf = [0u8; 64];
//! let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), &[7; 12]).unwrap();
//! w.add_fingerprint().unwrap();
//! let n = w.finish();
//! let m = Message::parse(&buf[..n]).unwrap();
//! assert_eq!(m.method(), Method::BINDING);
//! assert!(m.check_fingerprint().unwrap());
//! ```

mod address;
pub mod attr;
mod error;
mod header;
pub mod integrity;
mod message;
mod writer;

pub use attr::{
    Attribute, ChangeRequest, ErrorCode, Family, Icmp, PasswordAlgorithm, PasswordAlgorithms, RawAttribute,
    TypeList,
};
pub use error::Error;
pub use header::{Class, MessageType, Method, HEADER_LEN, MAGIC_COOKIE};
pub use message::{frame_len, looks_like_stun, Attributes, Message};
pub use writer::MessageWriter;

#[cfg(test)]
mod tests;

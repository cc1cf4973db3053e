//! What can be wrong with a STUN message or a buffer it is written into.

use thiserror::Error;

/// A STUN codec error: always about the input bytes (or the output buffer), never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Error {
    #[error("message shorter than the 20-byte STUN header ({0} bytes)")]
    TooShort(usize),
    #[error("first two bits of the message are not zero (not STUN)")]
    NotStun,
    #[error("message length field {field} does not match the {actual} bytes after the header")]
    LengthMismatch { field: usize, actual: usize },
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(usize),
    #[error("attribute 0x{kind:04x} at offset {offset} runs past the end of the message")]
    AttributeOverrun { kind: u16, offset: usize },
    #[error("attribute 0x{kind:04x} follows FINGERPRINT, which must be last")]
    AfterFingerprint { kind: u16 },
    #[error("attribute 0x{kind:04x} has a value of invalid length {len}")]
    BadAttributeLength { kind: u16, len: usize },
    #[error("attribute 0x{kind:04x} has an invalid value: {what}")]
    BadAttributeValue { kind: u16, what: &'static str },
    #[error("address family 0x{0:02x} is neither IPv4 (0x01) nor IPv6 (0x02)")]
    BadFamily(u8),
    #[error("output buffer too small")]
    BufferFull,
    #[error("value too long for a STUN attribute ({0} bytes)")]
    ValueTooLong(usize),
    #[error("message has no {0} attribute")]
    Missing(&'static str),
    #[error("integrity check failed")]
    IntegrityMismatch,
    #[error("0x{0:04x} is not a ChannelData channel number (0x4000-0x7FFF)")]
    NotChannelData(u16),
}

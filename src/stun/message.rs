//! Zero-copy view of a received STUN message (RFC 8489 §5–§6, RFC 3489 §11).

use super::attr::{self, Attribute, ChangeRequest, ErrorCode, RawAttribute};
use super::header::{Class, MessageType, Method, HEADER_LEN, MAGIC_COOKIE};
use super::Error;
use std::net::SocketAddr;

/// A validated STUN message borrowed from a datagram. Parsing walks the attribute framing once; typed
/// accessors decode on demand and never allocate.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
}

/// Cheap test for the RFC 7983-style demultiplexer: top two bits zero and the magic cookie present.
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] & 0xC0 == 0 && buf[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// For stream transports (RFC 8489 §6.2.2): the total size of the message that starts `buf`, once the
/// length field is there. `None` until 4 bytes have arrived or when the first bits say it is not STUN.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 || buf[0] & 0xC0 != 0 {
        return None;
    }
    Some(HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]])))
}

impl<'a> Message<'a> {
    /// Validate header and attribute framing. The buffer must hold exactly one message (a UDP datagram, or
    /// one frame cut with [`frame_len`]).
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::TooShort(buf.len()));
        }
        if buf[0] & 0xC0 != 0 {
            return Err(Error::NotStun);
        }
        let field = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let actual = buf.len() - HEADER_LEN;
        if field != actual {
            return Err(Error::LengthMismatch { field, actual });
        }
        if field % 4 != 0 {
            return Err(Error::UnalignedLength(field));
        }
        let mut seen_fingerprint = false;
        let mut off = HEADER_LEN;
        while off < buf.len() {
            // `off` stays 4-aligned and the length is a multiple of 4, so 4 header bytes are there.
            let kind = u16::from_be_bytes([buf[off], buf[off + 1]]);
            let len = usize::from(u16::from_be_bytes([buf[off + 2], buf[off + 3]]));
            if seen_fingerprint {
                return Err(Error::AfterFingerprint { kind });
            }
            let end = off + 4 + len;
            if end > buf.len() {
                return Err(Error::AttributeOverrun { kind, offset: off });
            }
            seen_fingerprint = kind == attr::FINGERPRINT;
            off = (end + 3) & !3;
        }
        if off != buf.len() {
            // Padding of the last attribute ran past the end.
            return Err(Error::AttributeOverrun { kind: 0, offset: off });
        }
        Ok(Message { buf })
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    pub fn message_type(&self) -> MessageType {
        MessageType::from_u16(u16::from_be_bytes([self.buf[0], self.buf[1]]))
    }

    pub fn method(&self) -> Method {
        self.message_type().method
    }

    pub fn class(&self) -> Class {
        self.message_type().class
    }

    /// True for a classic RFC 3489 message: no magic cookie, a 128-bit transaction id.
    pub fn is_rfc3489(&self) -> bool {
        self.buf[4..8] != MAGIC_COOKIE.to_be_bytes()
    }

    /// The 96-bit transaction id (bytes 8..20). For RFC 3489 messages use [`Self::raw_id`].
    pub fn transaction_id(&self) -> &'a [u8; 12] {
        self.buf[8..20].try_into().expect("header length checked in parse")
    }

    /// Header bytes 4..20: the magic cookie and transaction id (RFC 5389), or the 128-bit RFC 3489 id.
    /// This is also the mask of the XOR address attributes.
    pub fn raw_id(&self) -> &'a [u8; 16] {
        self.buf[4..20].try_into().expect("header length checked in parse")
    }

    /// Every attribute in wire order, including any after MESSAGE-INTEGRITY.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes { buf: self.buf, off: HEADER_LEN }
    }

    /// The attributes a receiver must act on: RFC 8489 §14.5/§14.6 say attributes after MESSAGE-INTEGRITY
    /// are ignored except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and after MESSAGE-INTEGRITY-SHA256 all
    /// but FINGERPRINT.
    pub fn effective_attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + 'a {
        let mut after_mi = false;
        let mut after_mi256 = false;
        self.attributes().filter(move |a| {
            let keep = match a.kind {
                attr::FINGERPRINT => true,
                attr::MESSAGE_INTEGRITY_SHA256 => !after_mi256,
                _ => !after_mi && !after_mi256,
            };
            after_mi |= a.kind == attr::MESSAGE_INTEGRITY;
            after_mi256 |= a.kind == attr::MESSAGE_INTEGRITY_SHA256;
            keep
        })
    }

    /// The first effective attribute of type `kind`, raw.
    pub fn raw(&self, kind: u16) -> Option<RawAttribute<'a>> {
        self.effective_attributes().find(|a| a.kind == kind)
    }

    /// The first effective attribute of type `kind`, decoded; `Ok(None)` when absent.
    pub fn get(&self, kind: u16) -> Result<Option<Attribute<'a>>, Error> {
        match self.raw(kind) {
            Some(raw) => Attribute::decode(raw, self.raw_id()).map(Some),
            None => Ok(None),
        }
    }

    /// Comprehension-required attribute types (below 0x8000) this codec does not know, for a 420 answer.
    pub fn unknown_comprehension_required(&self) -> impl Iterator<Item = u16> + 'a {
        self.effective_attributes()
            .map(|a| a.kind)
            .filter(|&k| attr::is_comprehension_required(k) && !attr::is_known(k))
    }

    fn address(&self, kind: u16) -> Option<SocketAddr> {
        match self.get(kind) {
            Ok(Some(
                Attribute::MappedAddress(a)
                | Attribute::XorMappedAddress(a)
                | Attribute::OtherAddress(a)
                | Attribute::ResponseOrigin(a)
                | Attribute::ChangedAddress(a)
                | Attribute::SourceAddress(a)
                | Attribute::AlternateServer(a)
                | Attribute::XorPeerAddress(a)
                | Attribute::XorRelayedAddress(a),
            )) => Some(a),
            _ => None,
        }
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.address(attr::XOR_MAPPED_ADDRESS)
    }

    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.address(attr::MAPPED_ADDRESS)
    }

    pub fn other_address(&self) -> Option<SocketAddr> {
        self.address(attr::OTHER_ADDRESS)
    }

    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.address(attr::RESPONSE_ORIGIN)
    }

    pub fn changed_address(&self) -> Option<SocketAddr> {
        self.address(attr::CHANGED_ADDRESS)
    }

    pub fn source_address(&self) -> Option<SocketAddr> {
        self.address(attr::SOURCE_ADDRESS)
    }

    pub fn alternate_server(&self) -> Option<SocketAddr> {
        self.address(attr::ALTERNATE_SERVER)
    }

    pub fn change_request(&self) -> Option<ChangeRequest> {
        match self.get(attr::CHANGE_REQUEST) {
            Ok(Some(Attribute::ChangeRequest(c))) => Some(c),
            _ => None,
        }
    }

    pub fn response_port(&self) -> Option<u16> {
        match self.get(attr::RESPONSE_PORT) {
            Ok(Some(Attribute::ResponsePort(p))) => Some(p),
            _ => None,
        }
    }

    /// Length of the PADDING attribute's value, if present.
    pub fn padding_len(&self) -> Option<usize> {
        self.raw(attr::PADDING).map(|a| a.value.len())
    }

    pub fn error_code(&self) -> Option<ErrorCode<'a>> {
        match self.get(attr::ERROR_CODE) {
            Ok(Some(Attribute::ErrorCode(e))) => Some(e),
            _ => None,
        }
    }

    pub fn software(&self) -> Option<&'a str> {
        match self.get(attr::SOFTWARE) {
            Ok(Some(Attribute::Software(s))) => Some(s),
            _ => None,
        }
    }

    pub fn username(&self) -> Option<&'a str> {
        match self.get(attr::USERNAME) {
            Ok(Some(Attribute::Username(s))) => Some(s),
            _ => None,
        }
    }
}

/// Iterator over the attributes of a parsed message.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        // Framing was validated by `Message::parse`; `get` keeps this safe even so.
        let h = self.buf.get(self.off..self.off + 4)?;
        let kind = u16::from_be_bytes([h[0], h[1]]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let value = self.buf.get(self.off + 4..self.off + 4 + len)?;
        let offset = self.off;
        self.off = (self.off + 4 + len + 3) & !3;
        Some(RawAttribute { kind, value, offset })
    }
}

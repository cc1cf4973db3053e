//! Writing a STUN message into a caller's buffer: header first, attributes appended with the length field
//! kept current, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT computed over what precedes them.

use super::attr::{self, Attribute};
use super::header::{MessageType, HEADER_LEN, MAGIC_COOKIE};
use super::integrity;
use super::Error;

/// Builds one message in place. Nothing is allocated; running out of buffer is an error, never a panic.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    /// FINGERPRINT has been written: RFC 8489 §14.7 makes it the last attribute, and `Message::parse`
    /// rejects anything after it, so the writer refuses to append more.
    sealed: bool,
}

impl<'b> MessageWriter<'b> {
    /// Start an RFC 5389/8489 message with the magic cookie.
    pub fn new(buf: &'b mut [u8], ty: MessageType, transaction_id: &[u8; 12]) -> Result<Self, Error> {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        raw[4..].copy_from_slice(transaction_id);
        Self::new_rfc3489(buf, ty, &raw)
    }

    /// Start a message whose header bytes 4..20 are `raw_id`: an RFC 3489 128-bit transaction id (or cookie
    /// and id, which is what [`Self::new`] passes).
    pub fn new_rfc3489(buf: &'b mut [u8], ty: MessageType, raw_id: &[u8; 16]) -> Result<Self, Error> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferFull)?;
        header[..2].copy_from_slice(&ty.to_u16().to_be_bytes());
        header[2..4].fill(0);
        header[4..20].copy_from_slice(raw_id);
        Ok(MessageWriter { buf, len: HEADER_LEN, sealed: false })
    }

    fn key(&self) -> [u8; 16] {
        self.buf[4..20].try_into().expect("header written in new")
    }

    /// Header bytes 4..20 of the message being written (cookie and transaction id): the mask of XOR-encoded
    /// addresses, for attributes written with [`Self::add_raw`].
    pub fn raw_id(&self) -> [u8; 16] {
        self.key()
    }

    /// Reserve a TLV of `value_len` bytes (padding zeroed), fix the length field, return the value slice.
    fn reserve(&mut self, kind: u16, value_len: usize) -> Result<&mut [u8], Error> {
        if self.sealed {
            return Err(Error::AfterFingerprint { kind });
        }
        let wire_len = u16::try_from(value_len).map_err(|_| Error::ValueTooLong(value_len))?;
        let padded = (value_len + 3) & !3;
        let start = self.len;
        let end = start + 4 + padded;
        if end > self.buf.len() || end - HEADER_LEN > usize::from(u16::MAX) {
            return Err(Error::BufferFull);
        }
        self.buf[start..start + 2].copy_from_slice(&kind.to_be_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&wire_len.to_be_bytes());
        self.buf[start + 4 + value_len..end].fill(0);
        self.len = end;
        self.sealed = kind == attr::FINGERPRINT;
        let body = (end - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
        Ok(&mut self.buf[start + 4..start + 4 + value_len])
    }

    /// Append a typed attribute. Values that [`Attribute::decode`] would reject (text over its RFC limit,
    /// an error code outside 300–699, a MESSAGE-INTEGRITY-SHA256 of invalid length) are refused, so what
    /// we write we can also read.
    pub fn add(&mut self, a: &Attribute<'_>) -> Result<(), Error> {
        a.validate()?;
        let key = self.key();
        let out = self.reserve(a.kind(), a.value_len())?;
        a.encode_value(out, &key);
        Ok(())
    }

    /// Append an attribute from its raw value bytes (not validated: this is the escape hatch for types the
    /// codec does not know, and for tests that need malformed values).
    pub fn add_raw(&mut self, kind: u16, value: &[u8]) -> Result<(), Error> {
        self.reserve(kind, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Append UNKNOWN-ATTRIBUTES listing `kinds` (RFC 8489 §14.13).
    pub fn add_unknown_attributes(&mut self, kinds: &[u16]) -> Result<(), Error> {
        let out = self.reserve(attr::UNKNOWN_ATTRIBUTES, kinds.len() * 2)?;
        for (chunk, k) in out.chunks_exact_mut(2).zip(kinds) {
            chunk.copy_from_slice(&k.to_be_bytes());
        }
        Ok(())
    }

    /// Append MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) over everything written so far.
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), Error> {
        let offset = self.len;
        self.reserve(attr::MESSAGE_INTEGRITY, 20)?;
        let mac = integrity::hmac_sha1(self.buf, offset, key);
        self.buf[offset + 4..offset + 24].copy_from_slice(&mac);
        Ok(())
    }

    /// Append MESSAGE-INTEGRITY-SHA256 (full 32 bytes) over everything written so far.
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), Error> {
        let offset = self.len;
        self.reserve(attr::MESSAGE_INTEGRITY_SHA256, 32)?;
        let mac = integrity::hmac_sha256(self.buf, offset, key, 32);
        self.buf[offset + 4..offset + 36].copy_from_slice(&mac);
        Ok(())
    }

    /// Append FINGERPRINT; it must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<(), Error> {
        let offset = self.len;
        self.reserve(attr::FINGERPRINT, 4)?;
        let crc = integrity::fingerprint(&self.buf[..offset]);
        self.buf[offset + 4..offset + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when only the header has been written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Finish: the message is `buf[..n]`.
    pub fn finish(self) -> usize {
        self.len
    }
}

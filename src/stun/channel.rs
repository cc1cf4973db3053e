//! ChannelData framing (RFC 8656 §12.4): a 4-byte header — channel number (0x4000–0x4FFF) and the length
//! of the application data — then the data. Over UDP the datagram may carry up to 3 padding bytes after the
//! data; over TCP (and TLS) every message is padded to a multiple of 4 bytes (§12.5), which is how a stream
//! receiver finds the next frame.

use super::Error;

/// RFC 5766 §11 (the TURN of before RFC 8656) allowed channels up to 0x7FFF, and coturn and its clients still
/// bind numbers up to there; a server that refused them would not interoperate.
pub const MAX_CHANNEL_RFC5766: u16 = 0x7FFF;

/// Size of the ChannelData header.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;
/// RFC 8656 §12: the channel numbers a client may bind.
pub const MIN_CHANNEL: u16 = 0x4000;
pub const MAX_CHANNEL: u16 = 0x4FFF;

/// Whether `number` is a channel number a client may bind (RFC 8656 §12).
pub fn is_valid_channel(number: u16) -> bool {
    (MIN_CHANNEL..=MAX_CHANNEL).contains(&number)
}

/// Whether `number` is a channel a server accepts: the RFC 8656 range or the wider RFC 5766 one.
pub fn is_bindable_channel(number: u16) -> bool {
    (MIN_CHANNEL..=MAX_CHANNEL_RFC5766).contains(&number)
}

/// Cheap demultiplexing test: the datagram starts like ChannelData (first byte 64–127; RFC 7983 §7 gives
/// TURN channels 64–79, RFC 5766 channels use up to 127, and nothing else we receive starts there).
pub fn looks_like_channel_data(buf: &[u8]) -> bool {
    buf.len() >= CHANNEL_DATA_HEADER_LEN && (0x40..=0x7F).contains(&buf[0])
}

/// For stream transports (RFC 8656 §12.5): the total size of the padded ChannelData frame that starts `buf`,
/// once its header is there; `None` before that or when it is not ChannelData.
pub fn channel_frame_len(buf: &[u8]) -> Option<usize> {
    if !looks_like_channel_data(buf) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    Some((CHANNEL_DATA_HEADER_LEN + len + 3) & !3)
}

/// A ChannelData message borrowed from a datagram or a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parse one message (channels 0x4000–0x7FFF, see [`is_bindable_channel`]). Bytes after the announced length (padding) are ignored, at most 3 of them
    /// (RFC 8656 §12.4 lets a UDP sender omit the padding; more would be a malformed frame).
    pub fn parse(buf: &'a [u8]) -> Result<ChannelData<'a>, Error> {
        if buf.len() < CHANNEL_DATA_HEADER_LEN {
            return Err(Error::TooShort(buf.len()));
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !is_bindable_channel(channel) {
            return Err(Error::NotChannelData(channel));
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let end = CHANNEL_DATA_HEADER_LEN + len;
        if end > buf.len() {
            return Err(Error::LengthMismatch { field: len, actual: buf.len() - CHANNEL_DATA_HEADER_LEN });
        }
        if buf.len() - end > 3 {
            return Err(Error::LengthMismatch { field: len, actual: buf.len() - CHANNEL_DATA_HEADER_LEN });
        }
        Ok(ChannelData { channel, data: &buf[CHANNEL_DATA_HEADER_LEN..end] })
    }

    /// Write header and `data` into `out`; with `pad` (stream transports), zero padding up to a multiple of
    /// 4. Returns the bytes written.
    pub fn write(channel: u16, data: &[u8], pad: bool, out: &mut [u8]) -> Result<usize, Error> {
        let len = u16::try_from(data.len()).map_err(|_| Error::ValueTooLong(data.len()))?;
        let end = CHANNEL_DATA_HEADER_LEN + data.len();
        let total = if pad { (end + 3) & !3 } else { end };
        let out = out.get_mut(..total).ok_or(Error::BufferFull)?;
        out[..2].copy_from_slice(&channel.to_be_bytes());
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out[CHANNEL_DATA_HEADER_LEN..end].copy_from_slice(data);
        out[end..].fill(0);
        Ok(total)
    }

    /// Write the header for `len` bytes of data that the caller has already put at
    /// `out[CHANNEL_DATA_HEADER_LEN..]` (the relay receives peer datagrams straight into that place, so
    /// nothing is copied), and the padding when `pad`. Returns the bytes of the message.
    pub fn write_header(channel: u16, len: usize, pad: bool, out: &mut [u8]) -> Result<usize, Error> {
        let wire = u16::try_from(len).map_err(|_| Error::ValueTooLong(len))?;
        let end = CHANNEL_DATA_HEADER_LEN + len;
        let total = if pad { (end + 3) & !3 } else { end };
        let out = out.get_mut(..total).ok_or(Error::BufferFull)?;
        out[..2].copy_from_slice(&channel.to_be_bytes());
        out[2..4].copy_from_slice(&wire.to_be_bytes());
        out[end..].fill(0);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_padding() {
        let mut out = [0u8; 16];
        let n = ChannelData::write(0x4001, b"hello", false, &mut out).unwrap();
        assert_eq!(&out[..n], b"\x40\x01\x00\x05hello");
        assert_eq!(ChannelData::parse(&out[..n]).unwrap(), ChannelData { channel: 0x4001, data: b"hello" });
        let n = ChannelData::write(0x4FFF, b"hello", true, &mut out).unwrap();
        assert_eq!(n, 12);
        assert_eq!(channel_frame_len(&out[..4]), Some(12));
        assert_eq!(ChannelData::parse(&out[..n]).unwrap().data, b"hello");
    }

    #[test]
    fn rejects_bad_numbers_and_lengths() {
        assert!(ChannelData::parse(b"\x3f\xff\x00\x00").is_err());
        assert!(ChannelData::parse(b"\x80\x00\x00\x00").is_err());
        assert!(ChannelData::parse(b"\x7f\xff\x00\x00").is_ok(), "RFC 5766 range");
        assert!(ChannelData::parse(b"\x40\x00\x00\x05abc").is_err());
        assert!(ChannelData::parse(b"\x40\x00\x00\x01a\0\0\0\0").is_err());
        assert!(ChannelData::parse(b"\x40\x00").is_err());
        assert!(ChannelData::write(0x4000, b"abc", false, &mut [0u8; 6]).is_err());
        assert!(!looks_like_channel_data(b"\x00\x01\x00\x00"));
    }
}

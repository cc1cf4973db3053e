//! The few bytes of STUN (RFC 8489 §5, §14.2) the load generator needs, written here on purpose instead of
//! using the holepunch codec: the yardstick must not share code (or bugs) with one of the servers it measures.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const HEADER_LEN: usize = 20;
/// RFC 8489 §5.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
/// RFC 8489 §14.2.
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// The pre-RFC draft code point that Vovida stund 0.97 still sends for XOR-MAPPED-ADDRESS.
const XOR_MAPPED_ADDRESS_DRAFT: u16 = 0x8020;

/// Writes a Binding request with no attributes: type, length 0, magic cookie, transaction id.
pub fn write_binding_request(buf: &mut [u8; HEADER_LEN], tid: &[u8; 12]) {
    buf[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    buf[2..4].copy_from_slice(&0u16.to_be_bytes());
    buf[4..8].copy_from_slice(&MAGIC_COOKIE);
    buf[8..20].copy_from_slice(tid);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Binding success response with a sane header.
    Success,
    /// Our own request came back unchanged (only meaningful against the echo loop).
    Echo,
    /// Binding error response: a valid answer, but not a completed request.
    ErrorResponse,
    /// Anything else: not STUN, wrong length, wrong cookie, wrong type.
    Invalid,
}

/// Cheap header-level validation (RFC 8489 §6.3): leading zero bits, length field consistent with the
/// datagram and a multiple of four, magic cookie, Binding method and class.
pub fn classify(msg: &[u8]) -> Verdict {
    if msg.len() < HEADER_LEN || msg[0] & 0xC0 != 0 || msg[4..8] != MAGIC_COOKIE {
        return Verdict::Invalid;
    }
    let body = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    if body % 4 != 0 || HEADER_LEN + body != msg.len() {
        return Verdict::Invalid;
    }
    match u16::from_be_bytes([msg[0], msg[1]]) {
        BINDING_SUCCESS => Verdict::Success,
        BINDING_ERROR => Verdict::ErrorResponse,
        BINDING_REQUEST if body == 0 => Verdict::Echo,
        _ => Verdict::Invalid,
    }
}

/// The transaction id of a message that `classify` accepted.
pub fn transaction_id(msg: &[u8]) -> Option<&[u8; 12]> {
    msg.get(8..20).and_then(|s| s.try_into().ok())
}

/// Decodes the first XOR-MAPPED-ADDRESS of a message whose header `classify` accepted. Returns None when
/// the attribute is absent or malformed (the caller counts that as a failed check).
pub fn xor_mapped_address(msg: &[u8]) -> Option<SocketAddr> {
    let tid = transaction_id(msg)?;
    let mut at = HEADER_LEN;
    while at + 4 <= msg.len() {
        let kind = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]));
        let value = msg.get(at + 4..at + 4 + len)?;
        if kind == XOR_MAPPED_ADDRESS || kind == XOR_MAPPED_ADDRESS_DRAFT {
            return decode_xor_address(value, tid);
        }
        // Attributes are padded to a multiple of four bytes (RFC 8489 §14).
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

fn decode_xor_address(value: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut b = [0u8; 4];
            for (i, out) in b.iter_mut().enumerate() {
                *out = value[4 + i] ^ MAGIC_COOKIE[i];
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        (0x02, 20) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE);
            key[4..].copy_from_slice(tid);
            let mut b = [0u8; 16];
            for (i, out) in b.iter_mut().enumerate() {
                *out = value[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// xorshift64*: fast, allocation-free, good enough for transaction ids of a benchmark (they only have
/// to be unpredictable enough not to collide, not secret).
pub struct Rng(u64);

impl Rng {
    /// Seeds from the OS's random source (`holepunch::io::os_seed`); falls back to the clock if it fails.
    pub fn from_entropy(stream: u64) -> Self {
        let mut s = if let Ok(seed) = holepunch::io::os_seed() {
            u64::from_ne_bytes([seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7]])
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15)
        };
        s ^= stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Rng(if s == 0 { 0x2545_F491_4F6C_DD1D } else { s })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // RFC 5769 §2.2 sample IPv4 response, cut after XOR-MAPPED-ADDRESS (length patched accordingly).
    const RFC5769_V4: &str = "0101 001c 2112a442 b7e7a701 bc34d686 fa87dfae
        8022 000b 74657374 20766563 746f7220
        0020 0008 0001 a147 e112a643";
    // RFC 5769 §2.3 sample IPv6 response, same cut.
    const RFC5769_V6: &str = "0101 0028 2112a442 b7e7a701 bc34d686 fa87dfae
        8022 000b 74657374 20766563 746f7220
        0020 0014 0002 a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9";

    #[test]
    fn rfc5769_ipv4_xor_mapped_address() {
        let m = hex(RFC5769_V4);
        assert_eq!(classify(&m), Verdict::Success);
        assert_eq!(xor_mapped_address(&m), Some("192.0.2.1:32853".parse().unwrap()));
    }

    #[test]
    fn rfc5769_ipv6_xor_mapped_address() {
        let m = hex(RFC5769_V6);
        assert_eq!(classify(&m), Verdict::Success);
        assert_eq!(xor_mapped_address(&m), Some("[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap()));
    }

    #[test]
    fn request_round_trips_as_echo() {
        let mut buf = [0u8; HEADER_LEN];
        let tid = [7u8; 12];
        write_binding_request(&mut buf, &tid);
        assert_eq!(&buf[..8], &[0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(classify(&buf), Verdict::Echo);
        assert_eq!(transaction_id(&buf), Some(&tid));
        assert_eq!(xor_mapped_address(&buf), None);
    }

    #[test]
    fn rejects_malformed_headers() {
        let good = hex(RFC5769_V4);
        assert_eq!(classify(&good[..19]), Verdict::Invalid);
        let mut bad_len = good.clone();
        bad_len[3] = 0x18;
        assert_eq!(classify(&bad_len), Verdict::Invalid);
        let mut bad_cookie = good.clone();
        bad_cookie[4] = 0;
        assert_eq!(classify(&bad_cookie), Verdict::Invalid);
        let mut bad_bits = good.clone();
        bad_bits[0] |= 0x80;
        assert_eq!(classify(&bad_bits), Verdict::Invalid);
        let mut error = good.clone();
        error[1] = 0x11;
        assert_eq!(classify(&error), Verdict::ErrorResponse);
        // Binding indication (0x0011): valid STUN, but not an answer.
        let mut indication = good;
        indication[0] = 0x00;
        indication[1] = 0x11;
        assert_eq!(classify(&indication), Verdict::Invalid);
    }

    #[test]
    fn truncated_attribute_is_not_decoded() {
        let mut m = hex(RFC5769_V4);
        // Claim a longer XOR-MAPPED-ADDRESS than the datagram holds.
        let at = m.len() - 10;
        m[at + 1] = 0x20;
        assert_eq!(xor_mapped_address(&m), None);
    }

    #[test]
    fn rng_is_not_constant() {
        let mut r = Rng::from_entropy(1);
        let a = r.next_u64();
        let b = r.next_u64();
        assert_ne!(a, b);
    }
}

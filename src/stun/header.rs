//! The 20-byte STUN header: message type (method + class), length, magic cookie, transaction id.
//! RFC 8489 §5 (and RFC 3489 §11.1, where the cookie bytes are part of a 128-bit transaction id).

use std::fmt;

/// RFC 8489 §5: fixed value in bytes 4..8 of every RFC 5389/8489 message; absent in RFC 3489.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;

/// Message class, encoded in bits C0 and C1 of the message type (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A 12-bit STUN method.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    /// RFC 8489 §18.2.
    pub const BINDING: Method = Method(0x001);
    /// RFC 3489 §11.1 (Shared Secret, deprecated; recognised so it can be refused).
    pub const SHARED_SECRET: Method = Method(0x002);
    /// RFC 8656 §17 (TURN).
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// RFC 6062 (TURN over TCP).
    pub const CONNECT: Method = Method(0x00A);
    pub const CONNECTION_BIND: Method = Method(0x00B);
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// A method from its 12-bit number; `None` if it does not fit in 12 bits.
    pub const fn new(number: u16) -> Option<Method> {
        if number <= 0x0FFF {
            Some(Method(number))
        } else {
            None
        }
    }

    pub const fn number(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Method::BINDING => "Binding",
            Method::SHARED_SECRET => "SharedSecret",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            Method::CONNECT => "Connect",
            Method::CONNECTION_BIND => "ConnectionBind",
            Method::CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => return write!(f, "Method(0x{:03x})", self.0),
        };
        f.write_str(name)
    }
}

/// Method and class together: the 14-bit message type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub method: Method,
    pub class: Class,
}

impl MessageType {
    pub const fn new(method: Method, class: Class) -> MessageType {
        MessageType { method, class }
    }

    /// The wire form: method bits M0–M11 interleaved with class bits C0 (bit 4) and C1 (bit 8).
    pub fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
    }

    /// From the wire form; the top two bits must already be known to be zero.
    pub fn from_u16(t: u16) -> MessageType {
        let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
        let class = ((t >> 4) & 1) | ((t >> 7) & 2);
        MessageType { method: Method(method), class: Class::from_bits(class) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_types_match_rfc8489() {
        assert_eq!(MessageType::new(Method::BINDING, Class::Request).to_u16(), 0x0001);
        assert_eq!(MessageType::new(Method::BINDING, Class::Indication).to_u16(), 0x0011);
        assert_eq!(MessageType::new(Method::BINDING, Class::Success).to_u16(), 0x0101);
        assert_eq!(MessageType::new(Method::BINDING, Class::Error).to_u16(), 0x0111);
        assert_eq!(MessageType::new(Method::ALLOCATE, Class::Error).to_u16(), 0x0113);
    }

    #[test]
    fn every_type_round_trips() {
        for t in 0..0x4000u16 {
            assert_eq!(MessageType::from_u16(t).to_u16(), t);
        }
    }
}

//! STUN attribute types (RFC 8489 §14 and §18.3, RFC 5780 §7, RFC 8656 §18, RFC 3489 §11.2, RFC 8445 §16)
//! and their typed, borrowed views.

use super::address;
use super::Error;
use std::net::SocketAddr;

// RFC 8489 §18.3.1: comprehension-required range 0x0000–0x7FFF.
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// RFC 3489 §11.2.2; never honoured by our server (it would make us a reflector).
pub const RESPONSE_ADDRESS: u16 = 0x0002;
/// RFC 5780 §7.2 (and RFC 3489 §11.2.4).
pub const CHANGE_REQUEST: u16 = 0x0003;
/// RFC 3489 §11.2.5.
pub const SOURCE_ADDRESS: u16 = 0x0004;
/// RFC 3489 §11.2.3.
pub const CHANGED_ADDRESS: u16 = 0x0005;
pub const USERNAME: u16 = 0x0006;
/// RFC 3489 §11.2.7.
pub const PASSWORD: u16 = 0x0007;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// RFC 3489 §11.2.11.
pub const REFLECTED_FROM: u16 = 0x000B;
/// RFC 8656 §18 (TURN).
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// RFC 8445 §16.1 (ICE).
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
/// RFC 5780 §7.6.
pub const PADDING: u16 = 0x0026;
/// RFC 5780 §7.5.
pub const RESPONSE_PORT: u16 = 0x0027;
/// RFC 6062 §6.2.1.
pub const CONNECTION_ID: u16 = 0x002A;
// RFC 8489 §18.3.2: comprehension-optional range 0x8000–0xFFFF.
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ICMP: u16 = 0x8004;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// RFC 5780 §7.7.
pub const CACHE_TIMEOUT: u16 = 0x8027;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;
/// RFC 5780 §7.3.
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// RFC 5780 §7.4.
pub const OTHER_ADDRESS: u16 = 0x802C;

/// RFC 8489 §14.3, §14.9, §14.10: at most 763 bytes (128 characters) for these text attributes.
pub const MAX_TEXT_LEN: usize = 763;
/// RFC 5389 §15.3: USERNAME is fewer than 513 bytes (RFC 8489 says 509; we accept the older bound).
pub const MAX_USERNAME_LEN: usize = 512;

/// Whether this codec knows attribute type `kind` (anything else that is comprehension-required earns a
/// 420 with UNKNOWN-ATTRIBUTES, RFC 8489 §6.3.1).
pub fn is_known(kind: u16) -> bool {
    matches!(
        kind,
        MAPPED_ADDRESS
            | RESPONSE_ADDRESS
            | CHANGE_REQUEST
            | SOURCE_ADDRESS
            | CHANGED_ADDRESS
            | USERNAME
            | PASSWORD
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | REFLECTED_FROM
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | MESSAGE_INTEGRITY_SHA256
            | PASSWORD_ALGORITHM
            | USERHASH
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
            | PRIORITY
            | USE_CANDIDATE
            | PADDING
            | RESPONSE_PORT
            | CONNECTION_ID
            | ADDITIONAL_ADDRESS_FAMILY
            | ADDRESS_ERROR_CODE
            | PASSWORD_ALGORITHMS
            | ALTERNATE_DOMAIN
            | ICMP
            | SOFTWARE
            | ALTERNATE_SERVER
            | CACHE_TIMEOUT
            | FINGERPRINT
            | ICE_CONTROLLED
            | ICE_CONTROLLING
            | RESPONSE_ORIGIN
            | OTHER_ADDRESS
    )
}

/// RFC 8489 §14: types below 0x8000 must be understood by the receiver.
pub fn is_comprehension_required(kind: u16) -> bool {
    kind < 0x8000
}

/// An attribute as it sits in the message: its type and its value bytes (padding excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
    /// Offset of the attribute's 4-byte TLV header from the start of the message.
    pub offset: usize,
}

/// CHANGE-REQUEST flags (RFC 5780 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeRequest {
    pub change_ip: bool,
    pub change_port: bool,
}

/// ERROR-CODE (RFC 8489 §14.8): a code from 300 to 699 and a reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    pub code: u16,
    pub reason: &'a str,
}

impl ErrorCode<'_> {
    pub const TRY_ALTERNATE: u16 = 300;
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const FORBIDDEN: u16 = 403;
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    pub const ALLOCATION_MISMATCH: u16 = 437;
    pub const STALE_NONCE: u16 = 438;
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    pub const WRONG_CREDENTIALS: u16 = 441;
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    pub const SERVER_ERROR: u16 = 500;
    pub const INSUFFICIENT_CAPACITY: u16 = 508;
}

/// Address family as carried by REQUESTED-ADDRESS-FAMILY and friends (RFC 8656 §18.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn from_byte(kind: u16, b: u8) -> Result<Family, Error> {
        match b {
            address::FAMILY_IPV4 => Ok(Family::V4),
            address::FAMILY_IPV6 => Ok(Family::V6),
            _ => Err(Error::BadAttributeValue { kind, what: "unknown address family" }),
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Family::V4 => address::FAMILY_IPV4,
            Family::V6 => address::FAMILY_IPV6,
        }
    }
}

/// A list of 16-bit attribute types, as in UNKNOWN-ATTRIBUTES (RFC 8489 §14.13), borrowed from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeList<'a>(&'a [u8]);

impl<'a> TypeList<'a> {
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// PASSWORD-ALGORITHM (RFC 8489 §14.12): algorithm number and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithm<'a> {
    pub algorithm: u16,
    pub params: &'a [u8],
}

impl PasswordAlgorithm<'_> {
    pub const MD5: u16 = 0x0001;
    pub const SHA256: u16 = 0x0002;
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.11), borrowed from the wire; validated when decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithms<'a>(&'a [u8]);

impl<'a> PasswordAlgorithms<'a> {
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let (alg, used) = split_algorithm(rest)?;
            rest = &rest[used..];
            Some(alg)
        })
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// One algorithm entry from the front of `b`: the entry and the bytes it used (parameters padded to 4).
fn split_algorithm(b: &[u8]) -> Option<(PasswordAlgorithm<'_>, usize)> {
    if b.len() < 4 {
        return None;
    }
    let algorithm = u16::from_be_bytes([b[0], b[1]]);
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let params = b.get(4..4 + len)?;
    let used = (4 + len + 3) & !3;
    Some((PasswordAlgorithm { algorithm, params }, used.min(b.len())))
}

/// ICMP (RFC 8656 §18.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    pub icmp_type: u8,
    pub code: u8,
    pub error_data: u32,
}

/// A decoded attribute. Borrowed variants point into the received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    ResponseAddress(SocketAddr),
    ChangeRequest(ChangeRequest),
    SourceAddress(SocketAddr),
    ChangedAddress(SocketAddr),
    Username(&'a str),
    Password(&'a [u8]),
    MessageIntegrity(&'a [u8; 20]),
    ErrorCode(ErrorCode<'a>),
    UnknownAttributes(TypeList<'a>),
    ReflectedFrom(SocketAddr),
    ChannelNumber(u16),
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(&'a [u8]),
    Realm(&'a str),
    Nonce(&'a str),
    XorRelayedAddress(SocketAddr),
    RequestedAddressFamily(Family),
    /// The R bit: reserve the next-higher port too.
    EvenPort(bool),
    /// An IP protocol number (17 for UDP).
    RequestedTransport(u8),
    DontFragment,
    MessageIntegritySha256(&'a [u8]),
    PasswordAlgorithm(PasswordAlgorithm<'a>),
    Userhash(&'a [u8; 32]),
    XorMappedAddress(SocketAddr),
    ReservationToken(u64),
    Priority(u32),
    UseCandidate,
    /// The number of padding bytes; their content carries no meaning and is written as zeros.
    Padding(u16),
    ResponsePort(u16),
    ConnectionId(u32),
    AdditionalAddressFamily(Family),
    AddressErrorCode(Family, ErrorCode<'a>),
    PasswordAlgorithms(PasswordAlgorithms<'a>),
    AlternateDomain(&'a str),
    Icmp(Icmp),
    Software(&'a str),
    AlternateServer(SocketAddr),
    CacheTimeout(u32),
    Fingerprint(u32),
    IceControlled(u64),
    IceControlling(u64),
    ResponseOrigin(SocketAddr),
    OtherAddress(SocketAddr),
    /// A type this codec does not know; the caller decides whether that matters.
    Unknown {
        kind: u16,
        value: &'a [u8],
    },
}

fn exact<const N: usize>(kind: u16, v: &[u8]) -> Result<[u8; N], Error> {
    v.try_into().map_err(|_| Error::BadAttributeLength { kind, len: v.len() })
}

fn text(kind: u16, v: &[u8], max: usize) -> Result<&str, Error> {
    if v.len() > max {
        return Err(Error::BadAttributeLength { kind, len: v.len() });
    }
    std::str::from_utf8(v).map_err(|_| Error::BadAttributeValue { kind, what: "not UTF-8" })
}

fn error_code(kind: u16, v: &[u8]) -> Result<ErrorCode<'_>, Error> {
    if v.len() < 4 {
        return Err(Error::BadAttributeLength { kind, len: v.len() });
    }
    let class = u16::from(v[2] & 0x07);
    let number = u16::from(v[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(Error::BadAttributeValue { kind, what: "error class must be 3-6 and number 0-99" });
    }
    let reason = text(kind, &v[4..], MAX_TEXT_LEN)?;
    Ok(ErrorCode { code: class * 100 + number, reason })
}

impl<'a> Attribute<'a> {
    /// Decode `raw`; `key` is the message's header bytes 4..20 (cookie and transaction id) used by XOR forms.
    pub fn decode(raw: RawAttribute<'a>, key: &[u8; 16]) -> Result<Attribute<'a>, Error> {
        let (kind, v) = (raw.kind, raw.value);
        let addr = |v| address::decode(kind, v, None);
        let xaddr = |v| address::decode(kind, v, Some(key));
        Ok(match kind {
            MAPPED_ADDRESS => Attribute::MappedAddress(addr(v)?),
            RESPONSE_ADDRESS => Attribute::ResponseAddress(addr(v)?),
            SOURCE_ADDRESS => Attribute::SourceAddress(addr(v)?),
            CHANGED_ADDRESS => Attribute::ChangedAddress(addr(v)?),
            REFLECTED_FROM => Attribute::ReflectedFrom(addr(v)?),
            ALTERNATE_SERVER => Attribute::AlternateServer(addr(v)?),
            RESPONSE_ORIGIN => Attribute::ResponseOrigin(addr(v)?),
            OTHER_ADDRESS => Attribute::OtherAddress(addr(v)?),
            XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(xaddr(v)?),
            XOR_PEER_ADDRESS => Attribute::XorPeerAddress(xaddr(v)?),
            XOR_RELAYED_ADDRESS => Attribute::XorRelayedAddress(xaddr(v)?),
            CHANGE_REQUEST => {
                let b = exact::<4>(kind, v)?;
                Attribute::ChangeRequest(ChangeRequest { change_ip: b[3] & 0x04 != 0, change_port: b[3] & 0x02 != 0 })
            }
            USERNAME => Attribute::Username(text(kind, v, MAX_USERNAME_LEN)?),
            PASSWORD => Attribute::Password(v),
            MESSAGE_INTEGRITY => {
                Attribute::MessageIntegrity(v.try_into().map_err(|_| Error::BadAttributeLength { kind, len: v.len() })?)
            }
            MESSAGE_INTEGRITY_SHA256 => {
                // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4.
                if v.len() < 16 || v.len() > 32 || v.len() % 4 != 0 {
                    return Err(Error::BadAttributeLength { kind, len: v.len() });
                }
                Attribute::MessageIntegritySha256(v)
            }
            ERROR_CODE => Attribute::ErrorCode(error_code(kind, v)?),
            UNKNOWN_ATTRIBUTES => {
                if v.len() % 2 != 0 {
                    return Err(Error::BadAttributeLength { kind, len: v.len() });
                }
                Attribute::UnknownAttributes(TypeList(v))
            }
            CHANNEL_NUMBER => {
                let b = exact::<4>(kind, v)?;
                Attribute::ChannelNumber(u16::from_be_bytes([b[0], b[1]]))
            }
            LIFETIME => Attribute::Lifetime(u32::from_be_bytes(exact(kind, v)?)),
            DATA => Attribute::Data(v),
            REALM => Attribute::Realm(text(kind, v, MAX_TEXT_LEN)?),
            NONCE => Attribute::Nonce(text(kind, v, MAX_TEXT_LEN)?),
            SOFTWARE => Attribute::Software(text(kind, v, MAX_TEXT_LEN)?),
            ALTERNATE_DOMAIN => Attribute::AlternateDomain(text(kind, v, MAX_TEXT_LEN)?),
            REQUESTED_ADDRESS_FAMILY => {
                Attribute::RequestedAddressFamily(Family::from_byte(kind, exact::<4>(kind, v)?[0])?)
            }
            ADDITIONAL_ADDRESS_FAMILY => {
                Attribute::AdditionalAddressFamily(Family::from_byte(kind, exact::<4>(kind, v)?[0])?)
            }
            ADDRESS_ERROR_CODE => {
                if v.len() < 4 {
                    return Err(Error::BadAttributeLength { kind, len: v.len() });
                }
                Attribute::AddressErrorCode(Family::from_byte(kind, v[0])?, error_code(kind, v)?)
            }
            EVEN_PORT => Attribute::EvenPort(exact::<1>(kind, v)?[0] & 0x80 != 0),
            REQUESTED_TRANSPORT => Attribute::RequestedTransport(exact::<4>(kind, v)?[0]),
            DONT_FRAGMENT => {
                exact::<0>(kind, v)?;
                Attribute::DontFragment
            }
            USE_CANDIDATE => {
                exact::<0>(kind, v)?;
                Attribute::UseCandidate
            }
            PASSWORD_ALGORITHM => {
                let (alg, used) = split_algorithm(v).ok_or(Error::BadAttributeLength { kind, len: v.len() })?;
                if used != v.len() && 4 + alg.params.len() != v.len() {
                    return Err(Error::BadAttributeLength { kind, len: v.len() });
                }
                Attribute::PasswordAlgorithm(alg)
            }
            PASSWORD_ALGORITHMS => {
                let mut rest = v;
                while !rest.is_empty() {
                    let (_, used) = split_algorithm(rest)
                        .ok_or(Error::BadAttributeValue { kind, what: "truncated algorithm entry" })?;
                    rest = &rest[used..];
                }
                Attribute::PasswordAlgorithms(PasswordAlgorithms(v))
            }
            USERHASH => {
                Attribute::Userhash(v.try_into().map_err(|_| Error::BadAttributeLength { kind, len: v.len() })?)
            }
            RESERVATION_TOKEN => Attribute::ReservationToken(u64::from_be_bytes(exact(kind, v)?)),
            PRIORITY => Attribute::Priority(u32::from_be_bytes(exact(kind, v)?)),
            PADDING => {
                let len = u16::try_from(v.len()).map_err(|_| Error::BadAttributeLength { kind, len: v.len() })?;
                Attribute::Padding(len)
            }
            RESPONSE_PORT => {
                // RFC 5780 §7.5: "a 16-bit unsigned integer followed by 2 bytes of padding". We send a 4-byte
                // value; some implementations (stun-rs) send a 2-byte value and leave the 2 bytes to the TLV
                // padding. Both readings are accepted.
                if v.len() != 4 && v.len() != 2 {
                    return Err(Error::BadAttributeLength { kind, len: v.len() });
                }
                Attribute::ResponsePort(u16::from_be_bytes([v[0], v[1]]))
            }
            CONNECTION_ID => Attribute::ConnectionId(u32::from_be_bytes(exact(kind, v)?)),
            ICMP => {
                let b = exact::<8>(kind, v)?;
                Attribute::Icmp(Icmp {
                    icmp_type: b[2],
                    code: b[3],
                    error_data: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                })
            }
            CACHE_TIMEOUT => Attribute::CacheTimeout(u32::from_be_bytes(exact(kind, v)?)),
            FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(exact(kind, v)?)),
            ICE_CONTROLLED => Attribute::IceControlled(u64::from_be_bytes(exact(kind, v)?)),
            ICE_CONTROLLING => Attribute::IceControlling(u64::from_be_bytes(exact(kind, v)?)),
            _ => Attribute::Unknown { kind, value: v },
        })
    }

    /// Check that this value can be written and read back: the limits [`Attribute::decode`] enforces on
    /// receipt (text lengths of RFC 8489 §14, ERROR-CODE range of §14.8, MESSAGE-INTEGRITY-SHA256 length of
    /// §14.6) are enforced on sending too.
    pub fn validate(&self) -> Result<(), Error> {
        let kind = self.kind();
        let too_long = |len: usize, max: usize| {
            if len > max {
                Err(Error::BadAttributeLength { kind, len })
            } else {
                Ok(())
            }
        };
        let code = |e: &ErrorCode<'_>| {
            if !(300..=699).contains(&e.code) {
                return Err(Error::BadAttributeValue { kind, what: "error code must be 300-699" });
            }
            too_long(e.reason.len(), MAX_TEXT_LEN)
        };
        match self {
            Attribute::Username(s) => too_long(s.len(), MAX_USERNAME_LEN),
            Attribute::Realm(s) | Attribute::Nonce(s) | Attribute::Software(s) | Attribute::AlternateDomain(s) => {
                too_long(s.len(), MAX_TEXT_LEN)
            }
            Attribute::ErrorCode(e) | Attribute::AddressErrorCode(_, e) => code(e),
            Attribute::MessageIntegritySha256(m) if m.len() < 16 || m.len() > 32 || m.len() % 4 != 0 => {
                Err(Error::BadAttributeLength { kind, len: m.len() })
            }
            _ => Ok(()),
        }
    }

    /// The attribute's type number.
    pub fn kind(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::ResponseAddress(_) => RESPONSE_ADDRESS,
            Attribute::ChangeRequest(_) => CHANGE_REQUEST,
            Attribute::SourceAddress(_) => SOURCE_ADDRESS,
            Attribute::ChangedAddress(_) => CHANGED_ADDRESS,
            Attribute::Username(_) => USERNAME,
            Attribute::Password(_) => PASSWORD,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::ErrorCode(_) => ERROR_CODE,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::ReflectedFrom(_) => REFLECTED_FROM,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::Data(_) => DATA,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Attribute::EvenPort(_) => EVEN_PORT,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::DontFragment => DONT_FRAGMENT,
            Attribute::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Attribute::PasswordAlgorithm(_) => PASSWORD_ALGORITHM,
            Attribute::Userhash(_) => USERHASH,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::ReservationToken(_) => RESERVATION_TOKEN,
            Attribute::Priority(_) => PRIORITY,
            Attribute::UseCandidate => USE_CANDIDATE,
            Attribute::Padding(_) => PADDING,
            Attribute::ResponsePort(_) => RESPONSE_PORT,
            Attribute::ConnectionId(_) => CONNECTION_ID,
            Attribute::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Attribute::AddressErrorCode(..) => ADDRESS_ERROR_CODE,
            Attribute::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Attribute::AlternateDomain(_) => ALTERNATE_DOMAIN,
            Attribute::Icmp(_) => ICMP,
            Attribute::Software(_) => SOFTWARE,
            Attribute::AlternateServer(_) => ALTERNATE_SERVER,
            Attribute::CacheTimeout(_) => CACHE_TIMEOUT,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::IceControlled(_) => ICE_CONTROLLED,
            Attribute::IceControlling(_) => ICE_CONTROLLING,
            Attribute::ResponseOrigin(_) => RESPONSE_ORIGIN,
            Attribute::OtherAddress(_) => OTHER_ADDRESS,
            Attribute::Unknown { kind, .. } => *kind,
        }
    }

    /// Length of the encoded value (without TLV header or padding).
    pub fn value_len(&self) -> usize {
        match self {
            Attribute::MappedAddress(a)
            | Attribute::ResponseAddress(a)
            | Attribute::SourceAddress(a)
            | Attribute::ChangedAddress(a)
            | Attribute::ReflectedFrom(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a)
            | Attribute::XorMappedAddress(a)
            | Attribute::AlternateServer(a)
            | Attribute::ResponseOrigin(a)
            | Attribute::OtherAddress(a) => address::encoded_len(a),
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::AlternateDomain(s)
            | Attribute::Software(s) => s.len(),
            Attribute::Password(b) | Attribute::Data(b) | Attribute::MessageIntegritySha256(b) => b.len(),
            Attribute::Unknown { value, .. } => value.len(),
            Attribute::MessageIntegrity(_) => 20,
            Attribute::ErrorCode(e) => 4 + e.reason.len(),
            Attribute::AddressErrorCode(_, e) => 4 + e.reason.len(),
            Attribute::UnknownAttributes(l) => l.0.len(),
            Attribute::PasswordAlgorithms(l) => l.0.len(),
            Attribute::PasswordAlgorithm(a) => 4 + a.params.len(),
            Attribute::Userhash(_) => 32,
            Attribute::EvenPort(_) => 1,
            Attribute::DontFragment | Attribute::UseCandidate => 0,
            Attribute::Padding(n) => usize::from(*n),
            Attribute::ReservationToken(_)
            | Attribute::IceControlled(_)
            | Attribute::IceControlling(_)
            | Attribute::Icmp(_) => 8,
            Attribute::ChangeRequest(_)
            | Attribute::ChannelNumber(_)
            | Attribute::Lifetime(_)
            | Attribute::RequestedAddressFamily(_)
            | Attribute::RequestedTransport(_)
            | Attribute::Priority(_)
            | Attribute::ResponsePort(_)
            | Attribute::ConnectionId(_)
            | Attribute::AdditionalAddressFamily(_)
            | Attribute::CacheTimeout(_)
            | Attribute::Fingerprint(_) => 4,
        }
    }

    /// Write the value into `out`, which is exactly `value_len()` long. `key` as for `decode`.
    pub(crate) fn encode_value(&self, out: &mut [u8], key: &[u8; 16]) {
        match self {
            Attribute::MappedAddress(a)
            | Attribute::ResponseAddress(a)
            | Attribute::SourceAddress(a)
            | Attribute::ChangedAddress(a)
            | Attribute::ReflectedFrom(a)
            | Attribute::AlternateServer(a)
            | Attribute::ResponseOrigin(a)
            | Attribute::OtherAddress(a) => address::encode(a, out, None),
            Attribute::XorPeerAddress(a) | Attribute::XorRelayedAddress(a) | Attribute::XorMappedAddress(a) => {
                address::encode(a, out, Some(key))
            }
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::AlternateDomain(s)
            | Attribute::Software(s) => out.copy_from_slice(s.as_bytes()),
            Attribute::Password(b) | Attribute::Data(b) | Attribute::MessageIntegritySha256(b) => {
                out.copy_from_slice(b)
            }
            Attribute::Unknown { value, .. } => out.copy_from_slice(value),
            Attribute::MessageIntegrity(m) => out.copy_from_slice(&m[..]),
            Attribute::ErrorCode(e) => encode_error_code(out, 0, e),
            Attribute::AddressErrorCode(f, e) => encode_error_code(out, f.to_byte(), e),
            Attribute::UnknownAttributes(l) => out.copy_from_slice(l.0),
            Attribute::PasswordAlgorithms(l) => out.copy_from_slice(l.0),
            Attribute::PasswordAlgorithm(a) => {
                out[..2].copy_from_slice(&a.algorithm.to_be_bytes());
                out[2..4].copy_from_slice(&(a.params.len() as u16).to_be_bytes());
                out[4..].copy_from_slice(a.params);
            }
            Attribute::Userhash(h) => out.copy_from_slice(&h[..]),
            Attribute::EvenPort(r) => out[0] = if *r { 0x80 } else { 0 },
            Attribute::DontFragment | Attribute::UseCandidate => {}
            Attribute::Padding(_) => out.fill(0),
            Attribute::ReservationToken(v) | Attribute::IceControlled(v) | Attribute::IceControlling(v) => {
                out.copy_from_slice(&v.to_be_bytes())
            }
            Attribute::Icmp(i) => {
                out[..2].fill(0);
                out[2] = i.icmp_type;
                out[3] = i.code;
                out[4..].copy_from_slice(&i.error_data.to_be_bytes());
            }
            Attribute::ChangeRequest(c) => {
                out.fill(0);
                out[3] = (u8::from(c.change_ip) << 2) | (u8::from(c.change_port) << 1);
            }
            Attribute::ChannelNumber(n) | Attribute::ResponsePort(n) => {
                out[..2].copy_from_slice(&n.to_be_bytes());
                out[2..].fill(0);
            }
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                out.fill(0);
                out[0] = f.to_byte();
            }
            Attribute::RequestedTransport(p) => {
                out.fill(0);
                out[0] = *p;
            }
            Attribute::Lifetime(v)
            | Attribute::Priority(v)
            | Attribute::ConnectionId(v)
            | Attribute::CacheTimeout(v)
            | Attribute::Fingerprint(v) => out.copy_from_slice(&v.to_be_bytes()),
        }
    }
}

fn encode_error_code(out: &mut [u8], first: u8, e: &ErrorCode<'_>) {
    out[0] = first;
    out[1] = 0;
    out[2] = ((e.code / 100) & 0x07) as u8;
    out[3] = (e.code % 100) as u8;
    out[4..].copy_from_slice(e.reason.as_bytes());
}

impl<'a> TypeList<'a> {
    /// Wrap wire bytes (an even number of them) as a type list.
    pub fn from_bytes(b: &'a [u8]) -> Option<TypeList<'a>> {
        (b.len() % 2 == 0).then_some(TypeList(b))
    }
}

impl<'a> PasswordAlgorithms<'a> {
    /// Wrap wire bytes as an algorithm list, validating every entry.
    pub fn from_bytes(b: &'a [u8]) -> Option<PasswordAlgorithms<'a>> {
        let mut rest = b;
        while !rest.is_empty() {
            let (_, used) = split_algorithm(rest)?;
            rest = &rest[used..];
        }
        Some(PasswordAlgorithms(b))
    }
}

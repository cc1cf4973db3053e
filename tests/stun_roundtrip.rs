//! Property tests of the STUN codec (src/stun/): every attribute variant survives encode → parse → decode
//! unchanged (IPv4 and IPv6 for every address kind, RFC 5389 and RFC 3489 headers), integrity and fingerprint
//! verify after arbitrary attributes, and no input, however malformed, and no buffer size makes the parser,
//! the attribute decoder, the integrity checks or the writer panic.

use holepunch::stun::attr::{self, is_known};
use holepunch::stun::{
    Attribute, ChangeRequest, Class, Error, ErrorCode, Family, Icmp, Message, MessageType, MessageWriter, Method,
    PasswordAlgorithm, PasswordAlgorithms, TypeList, HEADER_LEN,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Owned material from which any `Attribute` variant can be borrowed; `sel` picks the variant.
#[derive(Debug, Clone)]
struct Spec {
    sel: usize,
    addr: SocketAddr,
    text: String,
    bytes: Vec<u8>,
    wide: u64,
    word: u32,
    half: u16,
    byte: u8,
    flag: bool,
    flag2: bool,
    code: u16,
    hash: [u8; 32],
    mi: [u8; 20],
    list: Vec<u8>,
    algs: Vec<u8>,
    alg: (u16, Vec<u8>),
    unknown_kind: u16,
}

/// Number of variants `Spec::attribute` can produce (all of `Attribute`).
const VARIANTS: usize = 46;

fn family(flag: bool) -> Family {
    if flag {
        Family::V6
    } else {
        Family::V4
    }
}

impl Spec {
    fn attribute(&self) -> Attribute<'_> {
        let a = self.addr;
        let ec = ErrorCode { code: self.code, reason: &self.text };
        match self.sel % VARIANTS {
            0 => Attribute::MappedAddress(a),
            1 => Attribute::ResponseAddress(a),
            2 => Attribute::ChangeRequest(ChangeRequest { change_ip: self.flag, change_port: self.flag2 }),
            3 => Attribute::SourceAddress(a),
            4 => Attribute::ChangedAddress(a),
            5 => Attribute::Username(&self.text),
            6 => Attribute::Password(&self.bytes),
            7 => Attribute::MessageIntegrity(&self.mi),
            8 => Attribute::ErrorCode(ec),
            9 => Attribute::UnknownAttributes(TypeList::from_bytes(&self.list).expect("even length")),
            10 => Attribute::ReflectedFrom(a),
            11 => Attribute::ChannelNumber(self.half),
            12 => Attribute::Lifetime(self.word),
            13 => Attribute::XorPeerAddress(a),
            14 => Attribute::Data(&self.bytes),
            15 => Attribute::Realm(&self.text),
            16 => Attribute::Nonce(&self.text),
            17 => Attribute::XorRelayedAddress(a),
            18 => Attribute::RequestedAddressFamily(family(self.flag)),
            19 => Attribute::EvenPort(self.flag),
            20 => Attribute::RequestedTransport(self.byte),
            21 => Attribute::DontFragment,
            22 => Attribute::MessageIntegritySha256(&self.hash[..16 + 4 * usize::from(self.byte % 5)]),
            23 => Attribute::PasswordAlgorithm(PasswordAlgorithm { algorithm: self.alg.0, params: &self.alg.1 }),
            24 => Attribute::Userhash(&self.hash),
            25 => Attribute::XorMappedAddress(a),
            26 => Attribute::ReservationToken(self.wide),
            27 => Attribute::Priority(self.word),
            28 => Attribute::UseCandidate,
            29 => Attribute::Padding(self.half % 1024),
            30 => Attribute::ResponsePort(self.half),
            31 => Attribute::ConnectionId(self.word),
            32 => Attribute::AdditionalAddressFamily(family(self.flag)),
            33 => Attribute::AddressErrorCode(family(self.flag), ec),
            34 => Attribute::PasswordAlgorithms(PasswordAlgorithms::from_bytes(&self.algs).expect("well formed")),
            35 => Attribute::AlternateDomain(&self.text),
            36 => Attribute::Icmp(Icmp { icmp_type: self.byte, code: self.half as u8, error_data: self.word }),
            37 => Attribute::Software(&self.text),
            38 => Attribute::AlternateServer(a),
            39 => Attribute::CacheTimeout(self.word),
            40 => Attribute::Fingerprint(self.word),
            41 => Attribute::IceControlled(self.wide),
            42 => Attribute::IceControlling(self.wide),
            43 => Attribute::ResponseOrigin(a),
            44 => Attribute::OtherAddress(a),
            _ => Attribute::Unknown { kind: self.unknown_kind, value: &self.bytes },
        }
    }
}

/// Exhaustive over `Attribute` (no wildcard), so a new variant fails to compile here until `Spec` covers it.
fn variant_index(a: &Attribute<'_>) -> usize {
    match a {
        Attribute::MappedAddress(_) => 0,
        Attribute::ResponseAddress(_) => 1,
        Attribute::ChangeRequest(_) => 2,
        Attribute::SourceAddress(_) => 3,
        Attribute::ChangedAddress(_) => 4,
        Attribute::Username(_) => 5,
        Attribute::Password(_) => 6,
        Attribute::MessageIntegrity(_) => 7,
        Attribute::ErrorCode(_) => 8,
        Attribute::UnknownAttributes(_) => 9,
        Attribute::ReflectedFrom(_) => 10,
        Attribute::ChannelNumber(_) => 11,
        Attribute::Lifetime(_) => 12,
        Attribute::XorPeerAddress(_) => 13,
        Attribute::Data(_) => 14,
        Attribute::Realm(_) => 15,
        Attribute::Nonce(_) => 16,
        Attribute::XorRelayedAddress(_) => 17,
        Attribute::RequestedAddressFamily(_) => 18,
        Attribute::EvenPort(_) => 19,
        Attribute::RequestedTransport(_) => 20,
        Attribute::DontFragment => 21,
        Attribute::MessageIntegritySha256(_) => 22,
        Attribute::PasswordAlgorithm(_) => 23,
        Attribute::Userhash(_) => 24,
        Attribute::XorMappedAddress(_) => 25,
        Attribute::ReservationToken(_) => 26,
        Attribute::Priority(_) => 27,
        Attribute::UseCandidate => 28,
        Attribute::Padding(_) => 29,
        Attribute::ResponsePort(_) => 30,
        Attribute::ConnectionId(_) => 31,
        Attribute::AdditionalAddressFamily(_) => 32,
        Attribute::AddressErrorCode(..) => 33,
        Attribute::PasswordAlgorithms(_) => 34,
        Attribute::AlternateDomain(_) => 35,
        Attribute::Icmp(_) => 36,
        Attribute::Software(_) => 37,
        Attribute::AlternateServer(_) => 38,
        Attribute::CacheTimeout(_) => 39,
        Attribute::Fingerprint(_) => 40,
        Attribute::IceControlled(_) => 41,
        Attribute::IceControlling(_) => 42,
        Attribute::ResponseOrigin(_) => 43,
        Attribute::OtherAddress(_) => 44,
        Attribute::Unknown { .. } => 45,
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)),
    ]
}

/// Up to 128 characters of any kind: within every text limit of RFC 8489 (at most 512 bytes).
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=128).prop_map(String::from_iter)
}

/// A PASSWORD-ALGORITHMS value: entries with parameters, each padded to 4 bytes (RFC 8489 §14.11).
fn algorithms() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..9)), 0..4).prop_map(|entries| {
        let mut out = Vec::new();
        for (alg, params) in entries {
            out.extend_from_slice(&alg.to_be_bytes());
            out.extend_from_slice(&(params.len() as u16).to_be_bytes());
            out.extend_from_slice(&params);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
    })
}

fn spec_with(sel: impl Strategy<Value = usize>) -> impl Strategy<Value = Spec> {
    (
        (sel, socket_addr(), text(), prop::collection::vec(any::<u8>(), 0..300), any::<u64>(), any::<u32>()),
        (any::<u16>(), any::<u8>(), any::<bool>(), any::<bool>(), 300u16..=699, any::<[u8; 32]>()),
        (
            any::<[u8; 20]>(),
            prop::collection::vec(any::<u16>(), 0..8),
            algorithms(),
            (any::<u16>(), prop::collection::vec(any::<u8>(), 0..12)),
            any::<u16>().prop_filter("an attribute type the codec does not know", |k| !is_known(*k)),
        ),
    )
        .prop_map(|((sel, addr, text, bytes, wide, word), (half, byte, flag, flag2, code, hash), rest)| {
            let (mi, kinds, algs, alg, unknown_kind) = rest;
            Spec {
                sel,
                addr,
                text,
                bytes,
                wide,
                word,
                half,
                byte,
                flag,
                flag2,
                code,
                hash,
                mi,
                list: kinds.iter().flat_map(|k| k.to_be_bytes()).collect(),
                algs,
                alg,
                unknown_kind,
            }
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    spec_with(0..VARIANTS)
}

/// A spec for the body of a message that is then signed: no integrity or fingerprint attributes of its own.
fn body_spec() -> impl Strategy<Value = Spec> {
    spec_with((0..VARIANTS).prop_filter("not MI / MI-SHA256 / FINGERPRINT", |s| ![7, 22, 40].contains(s)))
}

fn message_type() -> impl Strategy<Value = MessageType> {
    (0u16..0x1000, 0u8..4).prop_map(|(m, c)| {
        let class = [Class::Request, Class::Indication, Class::Success, Class::Error][usize::from(c)];
        MessageType::new(Method::new(m).expect("12 bits"), class)
    })
}

/// Header bytes 4..20: either the magic cookie and a 96-bit id, or an RFC 3489 128-bit id.
fn raw_id() -> impl Strategy<Value = [u8; 16]> {
    prop_oneof![
        any::<[u8; 12]>().prop_map(|t| {
            let mut r = [0u8; 16];
            r[..4].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            r[4..].copy_from_slice(&t);
            r
        }),
        any::<[u8; 16]>(),
    ]
}

/// Everything a receiver could call on a message: must never panic, whatever the bytes.
fn exercise(buf: &[u8]) {
    let Ok(m) = Message::parse(buf) else { return };
    let _ = (m.message_type(), m.is_rfc3489(), m.transaction_id(), m.raw_id());
    for a in m.attributes() {
        if let Ok(attr) = Attribute::decode(a, m.raw_id()) {
            assert_eq!(attr.kind(), a.kind);
        }
    }
    for a in m.effective_attributes() {
        let _ = m.get(a.kind);
    }
    let _ = m.unknown_comprehension_required().count();
    let _ = (m.xor_mapped_address(), m.mapped_address(), m.other_address(), m.response_origin());
    let _ = (m.changed_address(), m.source_address(), m.alternate_server(), m.change_request());
    let _ = (m.response_port(), m.padding_len(), m.error_code(), m.software(), m.username());
    let _ = m.check_fingerprint();
    let _ = m.check_integrity(b"key");
    let _ = m.check_integrity_sha256(b"key");
}

proptest! {
    /// One attribute of any variant, alone in a message: what the writer wrote is what the parser decodes.
    #[test]
    fn every_attribute_round_trips(s in spec(), ty in message_type(), id in raw_id()) {
        let a = s.attribute();
        prop_assert_eq!(variant_index(&a), s.sel);
        let mut buf = [0u8; 1500];
        let mut w = MessageWriter::new_rfc3489(&mut buf, ty, &id).unwrap();
        w.add(&a).unwrap();
        let n = w.finish();
        prop_assert_eq!(n, HEADER_LEN + 4 + ((a.value_len() + 3) & !3));
        let m = Message::parse(&buf[..n]).unwrap();
        prop_assert_eq!(m.message_type(), ty);
        prop_assert_eq!(m.raw_id(), &id);
        let raw = m.attributes().next().unwrap();
        prop_assert_eq!(raw.kind, a.kind());
        prop_assert_eq!(raw.value.len(), a.value_len());
        prop_assert_eq!(Attribute::decode(raw, m.raw_id()).unwrap(), a);
        prop_assert_eq!(m.attributes().count(), 1);
    }

    /// XOR address attributes really are masked (RFC 8489 §14.2): the wire bytes differ from the plain form
    /// wherever the mask is non-zero, and the plain and XOR forms decode to the same address.
    #[test]
    fn xor_addresses_are_masked(addr in socket_addr(), id in raw_id()) {
        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new_rfc3489(&mut buf, MessageType::new(Method::BINDING, Class::Success), &id)
            .unwrap();
        w.add(&Attribute::MappedAddress(addr)).unwrap();
        w.add(&Attribute::XorMappedAddress(addr)).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let raws: Vec<_> = m.attributes().collect();
        let (plain, xored) = (raws[0].value, raws[1].value);
        prop_assert_eq!(&plain[..2], &xored[..2]);
        // Port masked with the cookie's top 16 bits, address with the cookie (and transaction id for IPv6).
        let mask = id[..2].iter().chain(id.iter());
        for ((p, x), m) in plain[2..].iter().zip(&xored[2..]).zip(mask) {
            prop_assert_eq!(p ^ x, *m);
        }
        prop_assert_eq!(m.mapped_address(), Some(addr));
        prop_assert_eq!(m.xor_mapped_address(), Some(addr));
    }

    /// Arbitrary attributes, then MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT: all decode
    /// in order and all three checks pass; a wrong key or a flipped bit fails them.
    #[test]
    fn integrity_and_fingerprint_verify_after_arbitrary_attributes(
        specs in prop::collection::vec(body_spec(), 0..8),
        ty in message_type(),
        id in raw_id(),
        key in prop::collection::vec(any::<u8>(), 0..80),
        with_sha1 in any::<bool>(),
        with_sha256 in any::<bool>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let attrs: Vec<Attribute<'_>> = specs.iter().map(Spec::attribute).collect();
        let mut buf = vec![0u8; 8192];
        let mut w = MessageWriter::new_rfc3489(&mut buf, ty, &id).unwrap();
        for a in &attrs {
            w.add(a).unwrap();
        }
        if with_sha1 {
            w.add_message_integrity(&key).unwrap();
        }
        if with_sha256 {
            w.add_message_integrity_sha256(&key).unwrap();
        }
        w.add_fingerprint().unwrap();
        // Nothing may follow FINGERPRINT.
        prop_assert_eq!(w.add(&Attribute::Software("x")), Err(Error::AfterFingerprint { kind: attr::SOFTWARE }));
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let decoded: Vec<_> = m.attributes().take(attrs.len()).map(|r| Attribute::decode(r, m.raw_id()).unwrap()).collect();
        prop_assert_eq!(&decoded, &attrs);
        prop_assert_eq!(m.check_fingerprint(), Ok(true));
        let mut wrong = key.clone();
        wrong.push(1);
        if with_sha1 {
            prop_assert_eq!(m.check_integrity(&key), Ok(()));
            prop_assert_eq!(m.check_integrity(&wrong), Err(Error::IntegrityMismatch));
        } else {
            prop_assert_eq!(m.check_integrity(&key), Err(Error::Missing("MESSAGE-INTEGRITY")));
        }
        if with_sha256 {
            prop_assert_eq!(m.check_integrity_sha256(&key), Ok(()));
            prop_assert_eq!(m.check_integrity_sha256(&wrong), Err(Error::IntegrityMismatch));
        }
        // A single flipped bit anywhere is caught: either the framing no longer parses or the CRC differs.
        let mut bad = buf[..n].to_vec();
        bad[flip.index(n)] ^= 0x01;
        if let Ok(m) = Message::parse(&bad) {
            prop_assert_ne!(m.check_fingerprint(), Ok(true));
        }
    }

    /// Completely arbitrary bytes.
    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&buf);
    }

    /// A valid header and framing around arbitrary attribute types and values, so the attribute decoders, not
    /// just the framing checks, see garbage.
    #[test]
    fn arbitrary_attribute_values_never_panic(
        ty in message_type(),
        id in raw_id(),
        attrs in prop::collection::vec(
            (
                prop_oneof![0u16..0x40, 0x8000u16..0x8040, any::<u16>()],
                prop::collection::vec(any::<u8>(), 0..48),
            ),
            0..10,
        ),
    ) {
        let mut buf = [0u8; 1024];
        let mut w = MessageWriter::new_rfc3489(&mut buf, ty, &id).unwrap();
        for (kind, value) in &attrs {
            let _ = w.add_raw(*kind, value);
        }
        let n = w.finish();
        exercise(&buf[..n]);
        // Also every truncation and a corrupted length field.
        for cut in [n / 2, n.saturating_sub(1), n.saturating_sub(4)] {
            exercise(&buf[..cut]);
        }
        let mut bad = buf[..n].to_vec();
        if bad.len() > 22 {
            bad[22] ^= 0x80;
            exercise(&bad);
        }
    }

    /// Decoding raw attribute values directly (no framing around them) never panics.
    #[test]
    fn attribute_decode_never_panics(kind in any::<u16>(), value in prop::collection::vec(any::<u8>(), 0..64),
                                     id in any::<[u8; 16]>()) {
        let raw = holepunch::stun::RawAttribute { kind, value: &value, offset: HEADER_LEN };
        if let Ok(a) = Attribute::decode(raw, &id) {
            prop_assert_eq!(a.kind(), kind);
            // Whatever decodes re-encodes to a value that decodes the same (values may normalise: reserved
            // bits are dropped, PADDING content is zeroed).
            let mut buf = [0u8; 256];
            let mut w = MessageWriter::new_rfc3489(&mut buf, MessageType::new(Method::BINDING, Class::Request), &id)
                .unwrap();
            w.add(&a).unwrap();
            let n = w.finish();
            let m = Message::parse(&buf[..n]).unwrap();
            prop_assert_eq!(Attribute::decode(m.attributes().next().unwrap(), m.raw_id()).unwrap(), a);
        }
    }

    /// The writer never panics for any buffer size: every step either succeeds or reports `BufferFull`
    /// (leaving the message as it was), and whatever it has written so far is always a valid message.
    #[test]
    fn writer_never_panics_on_any_buffer_size(
        size in 0usize..400,
        specs in prop::collection::vec(body_spec(), 0..6),
        ty in message_type(),
        id in raw_id(),
    ) {
        let mut buf = vec![0u8; size];
        let w = MessageWriter::new_rfc3489(&mut buf, ty, &id);
        if size < HEADER_LEN {
            prop_assert_eq!(w.err(), Some(Error::BufferFull));
            return Ok(());
        }
        let mut w = w.unwrap();
        let mut expect = Vec::new();
        for s in &specs {
            let a = s.attribute();
            let before = w.len();
            match w.add(&a) {
                Ok(()) => expect.push(a),
                Err(e) => {
                    prop_assert_eq!(e, Error::BufferFull);
                    prop_assert_eq!(w.len(), before);
                }
            }
        }
        let before = w.len();
        if w.add_message_integrity(b"k").is_err() {
            prop_assert_eq!(w.len(), before);
        }
        let before = w.len();
        if w.add_fingerprint().is_err() {
            prop_assert_eq!(w.len(), before);
        }
        let n = w.finish();
        prop_assert!(n <= size);
        let m = Message::parse(&buf[..n]).unwrap();
        let decoded: Vec<_> = m.attributes().take(expect.len()).map(|r| Attribute::decode(r, m.raw_id()).unwrap()).collect();
        prop_assert_eq!(decoded, expect);
    }
}

/// Values the decoder would refuse are refused by the writer too, so nothing we send is malformed.
#[test]
fn writer_refuses_what_the_decoder_rejects() {
    let mut buf = [0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Error), &[1; 12]).unwrap();
    let long = "x".repeat(764);
    assert!(matches!(w.add(&Attribute::Software(&long)), Err(Error::BadAttributeLength { .. })));
    assert!(matches!(w.add(&Attribute::Username(&long[..513])), Err(Error::BadAttributeLength { .. })));
    assert!(w.add(&Attribute::Username(&long[..512])).is_ok());
    let bad = ErrorCode { code: 700, reason: "" };
    assert!(matches!(w.add(&Attribute::ErrorCode(bad)), Err(Error::BadAttributeValue { .. })));
    let bad = ErrorCode { code: 299, reason: "" };
    assert!(matches!(w.add(&Attribute::AddressErrorCode(Family::V4, bad)), Err(Error::BadAttributeValue { .. })));
    assert!(matches!(w.add(&Attribute::MessageIntegritySha256(&[0; 18])), Err(Error::BadAttributeLength { .. })));
    assert_eq!(w.len(), HEADER_LEN + 4 + 512, "refused attributes leave the message unchanged");
}

proptest! {
    /// ChannelData (RFC 8656 §12.4–§12.5): what we write, with or without stream padding, parses back to the
    /// same channel and data, and a stream reader finds the frame's end from its first four bytes.
    #[test]
    fn channel_data_round_trips(
        channel in 0x4000u16..=0x7FFF,
        data in proptest::collection::vec(any::<u8>(), 0..1500),
        pad in any::<bool>(),
    ) {
        use holepunch::stun::channel::{channel_frame_len, ChannelData};
        let mut out = vec![0u8; 1600];
        let n = ChannelData::write(channel, &data, pad, &mut out).unwrap();
        let cd = ChannelData::parse(&out[..n]).unwrap();
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &data[..]);
        if pad {
            prop_assert_eq!(n % 4, 0);
            prop_assert_eq!(channel_frame_len(&out[..4]), Some(n));
        }
    }

    /// Arbitrary bytes never panic the ChannelData parser.
    #[test]
    fn channel_data_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = holepunch::stun::ChannelData::parse(&data);
        let _ = holepunch::stun::channel::channel_frame_len(&data);
    }
}

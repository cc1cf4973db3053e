//! RFC 5769 test vectors (§2.1–§2.4), RFC 8489 Appendix B.1, and malformed-input cases.

use super::attr::{self, Attribute};
use super::integrity::{long_term_key_md5, long_term_key_sha256};
use super::*;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const TID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];
const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

fn sample_request() -> Vec<u8> {
    unhex(
        "00010058 2112a442 b7e7a701 bc34d686 fa87dfae
         80220010 5354554e 20746573 7420636c 69656e74
         00240004 6e0001ff
         80290008 932ff9b1 51263b36
         00060009 6576746a 3a683676 59202020
         00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
         80280004 e57a3bcf",
    )
}

fn sample_ipv4_response() -> Vec<u8> {
    unhex(
        "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200008 0001a147 e112a643
         00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
         80280004 c07d4c96",
    )
}

fn sample_ipv6_response() -> Vec<u8> {
    unhex(
        "01010048 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
         00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
         80280004 c8fb0b4c",
    )
}

#[test]
fn rfc5769_sample_request() {
    let buf = sample_request();
    let m = Message::parse(&buf).unwrap();
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.class(), Class::Request);
    assert!(!m.is_rfc3489());
    assert_eq!(m.transaction_id(), &TID);
    assert_eq!(m.software(), Some("STUN test client"));
    assert_eq!(m.get(attr::PRIORITY).unwrap(), Some(Attribute::Priority(0x6e0001ff)));
    assert_eq!(m.get(attr::ICE_CONTROLLED).unwrap(), Some(Attribute::IceControlled(0x932ff9b151263b36)));
    assert_eq!(m.username(), Some("evtj:h6vY"));
    m.check_integrity(PASSWORD.as_bytes()).unwrap();
    assert_eq!(m.check_integrity(b"wrong"), Err(Error::IntegrityMismatch));
    assert!(m.check_fingerprint().unwrap());
    assert_eq!(m.unknown_comprehension_required().count(), 0);
}

#[test]
fn rfc5769_sample_request_rebuilt_byte_exact() {
    let mut out = [0u8; 256];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    w.add(&Attribute::Software("STUN test client")).unwrap();
    w.add(&Attribute::Priority(0x6e0001ff)).unwrap();
    w.add(&Attribute::IceControlled(0x932ff9b151263b36)).unwrap();
    w.add(&Attribute::Username("evtj:h6vY")).unwrap();
    w.add_message_integrity(PASSWORD.as_bytes()).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let mut expect = sample_request();
    // The RFC pads USERNAME with spaces (any padding value is allowed); we pad with zeros.
    expect[73..76].fill(0);
    // MESSAGE-INTEGRITY covers the padding, so compare everything up to it and check the rest by verifying.
    assert_eq!(&out[..76], &expect[..76]);
    let m = Message::parse(&out[..n]).unwrap();
    m.check_integrity(PASSWORD.as_bytes()).unwrap();
    assert!(m.check_fingerprint().unwrap());
}

#[test]
fn rfc5769_sample_ipv4_response() {
    let buf = sample_ipv4_response();
    let m = Message::parse(&buf).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.software(), Some("test vector"));
    assert_eq!(m.xor_mapped_address(), Some("192.0.2.1:32853".parse().unwrap()));
    m.check_integrity(PASSWORD.as_bytes()).unwrap();
    assert!(m.check_fingerprint().unwrap());

    let mut out = [0u8; 128];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Success), &TID).unwrap();
    w.add(&Attribute::Software("test vector")).unwrap();
    w.add(&Attribute::XorMappedAddress("192.0.2.1:32853".parse().unwrap())).unwrap();
    w.add_message_integrity(PASSWORD.as_bytes()).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let mut expect = buf.clone();
    expect[35] = 0; // the RFC pads SOFTWARE with a space; we pad with zero (padding is covered by the MAC)
    assert_eq!(&out[..44], &expect[..44]);
    let m = Message::parse(&out[..n]).unwrap();
    m.check_integrity(PASSWORD.as_bytes()).unwrap();
    assert!(m.check_fingerprint().unwrap());
}

#[test]
fn rfc5769_sample_ipv6_response() {
    let buf = sample_ipv6_response();
    let m = Message::parse(&buf).unwrap();
    let expect: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap();
    assert_eq!(m.xor_mapped_address(), Some(expect));
    m.check_integrity(PASSWORD.as_bytes()).unwrap();
    assert!(m.check_fingerprint().unwrap());

    let mut out = [0u8; 128];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Success), &TID).unwrap();
    w.add(&Attribute::Software("test vector")).unwrap();
    w.add(&Attribute::XorMappedAddress(expect)).unwrap();
    w.add_message_integrity(PASSWORD.as_bytes()).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let mut expect = buf.clone();
    expect[35] = 0; // SOFTWARE padding: the RFC uses a space, we write zero
                    // Byte-exact up to MESSAGE-INTEGRITY (which covers the padding byte, so it differs from the RFC's).
    assert_eq!(n, expect.len());
    assert_eq!(&out[..60], &expect[..60]);
    let m = Message::parse(&out[..n]).unwrap();
    m.check_integrity(PASSWORD.as_bytes()).unwrap();
    assert!(m.check_fingerprint().unwrap());
}

const LT_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
const LT_PASSWORD: &str = "TheMatrIX"; // after SASLprep / OpaqueString, as the RFCs give it
const LT_REALM: &str = "example.org";

#[test]
fn rfc5769_sample_request_long_term() {
    let buf = unhex(
        "00010060 2112a442 78ad3433 c6ad72c0 29da412e
         00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
         0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
         0014000b 6578616d 706c652e 6f726700
         00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666",
    );
    let m = Message::parse(&buf).unwrap();
    assert_eq!(m.username(), Some(LT_USERNAME));
    assert_eq!(m.get(attr::NONCE).unwrap(), Some(Attribute::Nonce("f//499k954d6OL34oL9FSTvy64sA")));
    assert_eq!(m.get(attr::REALM).unwrap(), Some(Attribute::Realm(LT_REALM)));
    let key = long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);
    m.check_integrity(&key).unwrap();
    assert_eq!(m.check_fingerprint(), Err(Error::Missing("FINGERPRINT")));
}

#[test]
fn rfc8489_b1_sample_request_sha256() {
    let buf = unhex(
        "00010088 2112a442 78ad3433 c6ad72c0 29da412e
         001e0020 4a3cf38f ef6992bd a952c678 0417da0f 24819415 569e60b2 05c46e41 407f1704
         00150029 6f624d61 744a6f73 32414141 43662f2f 3439396b 39353464 364f4c33 346f4c39
                  46535476 79363473 41000000
         0014000b 6578616d 706c652e 6f726700
         001c0020 fd8c2738 60d2e18e bca4c89b 6973befa 7ee8ecc6 9e9642db 326fab65 a0b955ba",
    );
    let m = Message::parse(&buf).unwrap();
    let userhash: [u8; 32] = Sha256::digest(format!("{LT_USERNAME}:{LT_REALM}")).into();
    assert_eq!(m.get(attr::USERHASH).unwrap(), Some(Attribute::Userhash(&userhash)));
    assert_eq!(m.get(attr::NONCE).unwrap(), Some(Attribute::Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")));
    // No PASSWORD-ALGORITHM in the request, so the default (MD5) long-term key applies (RFC 8489 §9.2.2);
    // the SHA-256 key must not verify.
    let md5 = long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);
    let sha = long_term_key_sha256(LT_USERNAME, LT_REALM, LT_PASSWORD);
    m.check_integrity_sha256(&md5).unwrap();
    assert_eq!(m.check_integrity_sha256(&sha), Err(Error::IntegrityMismatch));
}

#[test]
fn rfc3489_request_is_recognised() {
    // A classic RFC 3489 Binding Request: 128-bit transaction id, no cookie, CHANGE-REQUEST(ip+port).
    let buf = unhex("00010008 0102030405060708090a0b0c0d0e0f10 00030004 00000006");
    let m = Message::parse(&buf).unwrap();
    assert!(m.is_rfc3489());
    assert_eq!(m.raw_id()[0], 1);
    assert_eq!(m.change_request(), Some(ChangeRequest { change_ip: true, change_port: true }));
    let mut out = [0u8; 64];
    let mut w =
        MessageWriter::new_rfc3489(&mut out, MessageType::new(Method::BINDING, Class::Success), m.raw_id()).unwrap();
    w.add(&Attribute::MappedAddress("198.51.100.7:4242".parse().unwrap())).unwrap();
    let n = w.finish();
    assert_eq!(&out[..n], &unhex("0101000c 0102030405060708090a0b0c0d0e0f10 00010008 00011092 c6336407")[..]);
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let good = sample_request();
    assert_eq!(Message::parse(&good[..19]).unwrap_err(), Error::TooShort(19));
    let mut bad = good.clone();
    bad[0] = 0x80;
    assert_eq!(Message::parse(&bad).unwrap_err(), Error::NotStun);
    assert!(matches!(Message::parse(&good[..good.len() - 4]).unwrap_err(), Error::LengthMismatch { .. }));
    let mut bad = good.clone();
    bad[22] = 0x00;
    bad[23] = 0xff; // SOFTWARE length runs past the end
    assert!(matches!(Message::parse(&bad).unwrap_err(), Error::AttributeOverrun { .. }));
    // Attribute after FINGERPRINT.
    let mut bad = good.clone();
    bad.extend_from_slice(&[0x80, 0x22, 0, 0]);
    let len = (bad.len() - 20) as u16;
    bad[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(Message::parse(&bad).unwrap_err(), Error::AfterFingerprint { .. }));
    // Unaligned length.
    let mut bad = vec![0, 1, 0, 2, 0x21, 0x12, 0xa4, 0x42];
    bad.extend_from_slice(&[0; 12]);
    bad.extend_from_slice(&[0, 0]);
    assert_eq!(Message::parse(&bad).unwrap_err(), Error::UnalignedLength(2));
    // Every truncation and every single-byte corruption of a real message is handled without panicking.
    for cut in 0..good.len() {
        let _ = Message::parse(&good[..cut]);
    }
    for i in 0..good.len() {
        for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] = v;
            if let Ok(m) = Message::parse(&b) {
                for a in m.attributes() {
                    let _ = Attribute::decode(a, m.raw_id());
                }
                let _ = m.check_integrity(b"k");
                let _ = m.check_fingerprint();
            }
        }
    }
}

#[test]
fn bad_attribute_values_are_reported() {
    let mut out = [0u8; 64];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Success), &TID).unwrap();
    w.add_raw(attr::XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]).unwrap(); // family 3
    w.add_raw(attr::ERROR_CODE, &[0, 0, 7, 0]).unwrap(); // class 7
    w.add_raw(attr::CHANGE_REQUEST, &[0, 0, 6]).unwrap(); // 3 bytes
    let n = w.finish();
    let m = Message::parse(&out[..n]).unwrap();
    assert_eq!(m.get(attr::XOR_MAPPED_ADDRESS), Err(Error::BadFamily(3)));
    assert!(matches!(m.get(attr::ERROR_CODE), Err(Error::BadAttributeValue { .. })));
    assert!(matches!(m.get(attr::CHANGE_REQUEST), Err(Error::BadAttributeLength { .. })));
    assert_eq!(m.xor_mapped_address(), None);
}

#[test]
fn unknown_comprehension_required_attributes_are_listed() {
    let mut out = [0u8; 64];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    w.add_raw(0x7ff0, b"x").unwrap();
    w.add_raw(0xfff0, b"y").unwrap(); // comprehension-optional: ignored
    let n = w.finish();
    let m = Message::parse(&out[..n]).unwrap();
    assert_eq!(m.unknown_comprehension_required().collect::<Vec<_>>(), vec![0x7ff0]);
    assert_eq!(m.get(0x7ff0).unwrap(), Some(Attribute::Unknown { kind: 0x7ff0, value: b"x" }));
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let mut out = [0u8; 128];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    w.add_message_integrity(b"key").unwrap();
    w.add(&Attribute::Software("late")).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let m = Message::parse(&out[..n]).unwrap();
    assert_eq!(m.software(), None);
    assert_eq!(m.attributes().count(), 3);
    m.check_integrity(b"key").unwrap();
    assert!(m.check_fingerprint().unwrap());
}

#[test]
fn writer_reports_full_buffer() {
    let mut small = [0u8; 19];
    assert!(MessageWriter::new(&mut small, MessageType::new(Method::BINDING, Class::Request), &TID).is_err());
    let mut out = [0u8; 27];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    assert_eq!(w.add_fingerprint(), Err(Error::BufferFull));
    assert_eq!(w.len(), 20, "a failed add leaves the message unchanged");
    assert_eq!(w.add(&Attribute::Padding(0)), Ok(()));
    assert_eq!(w.add(&Attribute::Padding(1)), Err(Error::BufferFull));
    assert_eq!(w.finish(), 24);
}

#[test]
fn writer_refuses_attributes_after_fingerprint() {
    let mut out = [0u8; 128];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.len();
    assert_eq!(w.add(&Attribute::Software("late")), Err(Error::AfterFingerprint { kind: attr::SOFTWARE }));
    assert_eq!(w.add_raw(0x8030, b"x"), Err(Error::AfterFingerprint { kind: 0x8030 }));
    assert_eq!(w.add_message_integrity(b"k"), Err(Error::AfterFingerprint { kind: attr::MESSAGE_INTEGRITY }));
    assert_eq!(w.add_fingerprint(), Err(Error::AfterFingerprint { kind: attr::FINGERPRINT }));
    assert_eq!(w.finish(), n);
    assert!(Message::parse(&out[..n]).unwrap().check_fingerprint().unwrap());
}

#[test]
fn response_port_accepts_both_readings_of_rfc5780() {
    let mut out = [0u8; 64];
    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    w.add_raw(attr::RESPONSE_PORT, &[0x9c, 0x40]).unwrap(); // 2-byte value, TLV padding after it
    let n = w.finish();
    assert_eq!(Message::parse(&out[..n]).unwrap().response_port(), Some(40000));

    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    w.add(&Attribute::ResponsePort(40000)).unwrap();
    assert_eq!(w.finish(), 28);
    assert_eq!(&out[20..28], &[0x00, 0x27, 0x00, 0x04, 0x9c, 0x40, 0x00, 0x00], "we send the 4-byte form");

    let mut w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), &TID).unwrap();
    w.add_raw(attr::RESPONSE_PORT, &[0x9c, 0x40, 0]).unwrap();
    let n3 = w.finish();
    assert!(matches!(
        Message::parse(&out[..n3]).unwrap().get(attr::RESPONSE_PORT),
        Err(Error::BadAttributeLength { len: 3, .. })
    ));
}

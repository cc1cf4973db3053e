//! Structure-aware round trip: the fuzzer picks a header and a list of (type, value) attributes, which are
//! framed with the writer (so parsing always succeeds and the attribute decoders see the fuzzer's values),
//! optionally signed. Invariants: the message parses back with the same attributes; every value that decodes
//! re-encodes with `MessageWriter::add` and decodes to the same `Attribute`; the integrity and fingerprint
//! checks pass on what the writer signed.
#![no_main]

use arbitrary::Arbitrary;
use holepunch::stun::{Attribute, Class, Message, MessageType, MessageWriter, Method};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    method: u16,
    class: u8,
    raw_id: [u8; 16],
    attrs: Vec<(u16, Vec<u8>)>,
    key: Vec<u8>,
    sha1: bool,
    sha256: bool,
    fingerprint: bool,
}

fuzz_target!(|input: Input| {
    let class = [Class::Request, Class::Indication, Class::Success, Class::Error][usize::from(input.class & 3)];
    let ty = MessageType::new(Method::new(input.method & 0x0FFF).expect("12 bits"), class);
    let mut buf = [0u8; 2048];
    let mut w = MessageWriter::new_rfc3489(&mut buf, ty, &input.raw_id).expect("buffer holds a header");
    let mut written = Vec::new();
    for (kind, value) in &input.attrs {
        if w.add_raw(*kind, value).is_ok() {
            written.push((*kind, value.as_slice()));
        }
    }
    let sha1 = input.sha1 && w.add_message_integrity(&input.key).is_ok();
    let sha256 = input.sha256 && w.add_message_integrity_sha256(&input.key).is_ok();
    let fingerprint = input.fingerprint && w.add_fingerprint().is_ok();
    let n = w.finish();

    let m = match Message::parse(&buf[..n]) {
        Ok(m) => m,
        // A raw FINGERPRINT followed by more attributes is the only framing the parser rejects.
        Err(holepunch::stun::Error::AfterFingerprint { .. }) => return,
        Err(e) => panic!("writer produced an unparseable message: {e}"),
    };
    assert_eq!(m.message_type(), ty);
    let got: Vec<_> = m.attributes().take(written.len()).map(|r| (r.kind, r.value)).collect();
    assert_eq!(got, written);

    let mut out = [0u8; 2048];
    for raw in m.attributes() {
        let Ok(a) = Attribute::decode(raw, m.raw_id()) else { continue };
        let mut w2 = MessageWriter::new_rfc3489(&mut out, ty, m.raw_id()).expect("header fits");
        w2.add(&a).expect("a decoded attribute re-encodes");
        let n2 = w2.finish();
        let m2 = Message::parse(&out[..n2]).expect("re-encoded message parses");
        let again = Attribute::decode(m2.attributes().next().expect("one attribute"), m2.raw_id());
        assert_eq!(again, Ok(a));
    }

    // The checks only see effective attributes (RFC 8489 §14.5/§14.6): a raw MESSAGE-INTEGRITY the fuzzer
    // wrote before ours takes precedence, and MESSAGE-INTEGRITY after a MESSAGE-INTEGRITY-SHA256 is ignored.
    let first = |kind| m.attributes().position(|r| r.kind == kind);
    let ours = written.len();
    if sha1 && first(0x0008) == Some(ours) && first(0x001C).is_none_or(|p| p > ours) {
        assert_eq!(m.check_integrity(&input.key), Ok(()));
    }
    if sha256 && first(0x001C) == Some(ours + usize::from(sha1)) {
        assert_eq!(m.check_integrity_sha256(&input.key), Ok(()));
    }
    if fingerprint {
        assert_eq!(m.check_fingerprint(), Ok(true));
    }
});

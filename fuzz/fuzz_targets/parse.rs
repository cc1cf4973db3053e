//! Arbitrary bytes into everything a receiver does with a datagram: `Message::parse`, every attribute decoded
//! (all of them and the effective ones through `get`), every typed accessor, the 420 scan, and the
//! FINGERPRINT / MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 checks. Any panic is a bug.
#![no_main]

use holepunch::stun::{frame_len, looks_like_stun, Attribute, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_stun(data);
    let _ = frame_len(data);
    let Ok(m) = Message::parse(data) else { return };
    let _ = (m.message_type(), m.is_rfc3489(), m.transaction_id(), m.raw_id());
    for raw in m.attributes() {
        if let Ok(a) = Attribute::decode(raw, m.raw_id()) {
            assert_eq!(a.kind(), raw.kind);
        }
    }
    for raw in m.effective_attributes() {
        let _ = m.get(raw.kind);
    }
    let _ = m.unknown_comprehension_required().count();
    let _ = (m.xor_mapped_address(), m.mapped_address(), m.other_address(), m.response_origin());
    let _ = (m.changed_address(), m.source_address(), m.alternate_server(), m.change_request());
    let _ = (m.response_port(), m.padding_len(), m.error_code(), m.software(), m.username());
    let _ = m.check_fingerprint();
    let _ = m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBt");
    let _ = m.check_integrity_sha256(b"VOkJxbRl1RmTxUk/WvJxBt");
});

//! The amplification bound (RFC 8489 §16.2.1: DDoS against a target through STUN servers; RFC 5780 §9 on
//! PADDING and RESPONSE-PORT). Anyone can send a Binding request with a spoofed source and the server answers
//! the victim, so an answer to an unauthenticated request is at most [`AMPLIFICATION_FACTOR`] × the request's
//! length.
//!
//! What an answer must carry for its client to work is always spent; everything else is offered in a fixed
//! order ([`SuccessAttributes`], [`error_has_room_for`]) and added only while the answer stays within the
//! budget. docs/stund.md ("Amplification bound") lists the factor of every kind of answer.

/// Largest answer, as a multiple of the request's length (coturn's answer to a minimal request is 4.6×).
pub const AMPLIFICATION_FACTOR: usize = 4;

/// Bytes an answer may still take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    left: usize,
}

impl Budget {
    /// The budget for answering a request of `request_len` bytes.
    pub(crate) fn for_request(request_len: usize) -> Budget {
        Budget { left: request_len.saturating_mul(AMPLIFICATION_FACTOR) }
    }

    /// Spends `n` bytes the answer cannot do without. The responder's minimal answers fit in every budget
    /// (src/server/responder/tests.rs checks that for every kind of request), so this never needs to refuse.
    pub(crate) fn require(&mut self, n: usize) {
        self.left = self.left.saturating_sub(n);
    }

    /// Spends `n` bytes on something optional, if they fit; whether they did.
    pub(crate) fn offer(&mut self, n: usize) -> bool {
        let fits = n <= self.left;
        if fits {
            self.left -= n;
        }
        fits
    }
}

/// Bytes an attribute with a `value_len`-byte value takes on the wire (header and padding to 4).
pub(crate) fn attribute_len(value_len: usize) -> usize {
    4 + value_len.div_ceil(4) * 4
}

/// FINGERPRINT on the wire: header 4, CRC 4.
const FINGERPRINT_LEN: usize = 8;

/// What decides a success answer's size: the request, the server's mode and the attributes' wire sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SuccessShape {
    pub request_len: usize,
    /// The request has no magic cookie: answered in RFC 3489 form.
    pub rfc3489: bool,
    /// The server has an alternate address.
    pub rfc5780: bool,
    /// (XOR-)MAPPED-ADDRESS of the client.
    pub mapped_len: usize,
    /// RESPONSE-ORIGIN / SOURCE-ADDRESS.
    pub origin_len: usize,
    /// OTHER-ADDRESS / CHANGED-ADDRESS.
    pub other_len: usize,
    /// The request carries PADDING (the answer then carries at least an empty one).
    pub padding: bool,
    /// SOFTWARE, when configured.
    pub software_len: Option<usize>,
}

/// The optional attributes of a success answer: the amplification decision.
///
/// Always sent, because the client cannot work without them: XOR-MAPPED-ADDRESS (RFC 8489 §14.2), in
/// RFC 5780 mode OTHER-ADDRESS (RFC 5780 §6: how a behaviour-discovery client finds the alternate address),
/// FINGERPRINT in RFC 5389 form, and in RFC 3489 form MAPPED-ADDRESS and, with an alternate, CHANGED-ADDRESS
/// (what the classic tests I-III of RFC 3489 §10.1 use). Then, in this order, each while the answer stays
/// within [`AMPLIFICATION_FACTOR`] × the request: RESPONSE-ORIGIN (RFC 5780: SHOULD), MAPPED-ADDRESS next to
/// XOR-MAPPED-ADDRESS in RFC 5780 mode (lets a client spot an ALG rewriting addresses), SOURCE-ADDRESS in
/// RFC 3489 form (classic clients do not use it), SOFTWARE (the operator's text, never in RFC 3489 form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SuccessAttributes {
    pub response_origin: bool,
    pub mapped_address: bool,
    pub source_address: bool,
    pub software: bool,
}

impl SuccessAttributes {
    pub(crate) fn choose(shape: &SuccessShape) -> SuccessAttributes {
        let mut budget = Budget::for_request(shape.request_len);
        let mut a = SuccessAttributes::default();
        // Header, the client's address, an empty PADDING's header; PADDING's content is cut to the request's
        // own size afterwards.
        budget.require(crate::stun::HEADER_LEN + shape.mapped_len + if shape.padding { 4 } else { 0 });
        if shape.rfc5780 {
            budget.require(shape.other_len);
        }
        if shape.rfc3489 {
            a.source_address = budget.offer(shape.origin_len);
        } else {
            budget.require(FINGERPRINT_LEN);
            a.response_origin = shape.rfc5780 && budget.offer(shape.origin_len);
            a.mapped_address = shape.rfc5780 && budget.offer(shape.mapped_len);
            // RFC 3489 has no SOFTWARE, and classic parsers (Vovida's) misread 0x8022.
            a.software = shape.software_len.is_some_and(|n| budget.offer(n));
        }
        a
    }
}

/// Whether an RFC 5389-form error answer of `written` bytes so far (ERROR-CODE, UNKNOWN-ATTRIBUTES: what the
/// client needs) has room for a `software_len`-byte SOFTWARE before its FINGERPRINT.
pub(crate) fn error_has_room_for(request_len: usize, written: usize, software_len: usize) -> bool {
    let mut budget = Budget::for_request(request_len);
    budget.require(written + FINGERPRINT_LEN);
    budget.offer(software_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_stop_at_the_budget() {
        let mut b = Budget::for_request(20);
        b.require(52);
        assert!(b.offer(12));
        assert!(b.offer(12));
        assert!(!b.offer(12), "80 bytes for a 20-byte request is the limit");
        assert!(b.offer(4));
        b.require(100);
        assert!(!b.offer(1));
        assert_eq!(attribute_len(0), 4);
        assert_eq!(attribute_len(21), 28);
    }
}

//! The amplification bound (RFC 8489 §16.2.1: DDoS against a target through STUN servers; RFC 5780 §9 on
//! PADDING and RESPONSE-PORT). Anyone can send a Binding request with a spoofed source and the server answers
//! the victim, so an answer to an unauthenticated request is at most [`AMPLIFICATION_FACTOR`] × the request's
//! length.
//!
//! What an answer must carry for its client to work is always spent; everything else is offered in the
//! responder's priority order and added only while the answer stays within the budget. docs/stund.md
//! ("Amplification bound") lists the factor of every kind of answer.

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

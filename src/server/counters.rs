//! Server counters: plain integers on the hot path, published per thread, summed on read.
//!
//! Each worker thread owns a [`Counters`] (ordinary `u64` fields, no atomics, no sharing) and copies it into its
//! own [`SharedCounters`] after each batch with relaxed stores. Readers (log summary, metrics endpoint) load every
//! thread's block and add them up. No locked instruction and no shared cache line is written per request.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Totals since start, for one thread or summed over all.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            /// Names of the fields, in declaration order (same order as [`Counters::values`]).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Field values in declaration order.
            pub fn values(&self) -> [u64; Self::NAMES.len()] {
                [$(self.$name),*]
            }

            fn from_values(v: [u64; Self::NAMES.len()]) -> Self {
                let mut it = v.into_iter();
                Counters { $( $name: it.next().unwrap_or(0), )* }
            }

            /// Adds `other` field by field (wrapping: a counter that wraps is still monotonic modulo 2^64).
            pub fn add(&mut self, other: &Counters) {
                $( self.$name = self.$name.wrapping_add(other.$name); )*
            }
        }
    };
}

counters! {
    /// Binding requests in RFC 5389/8489 form (with the magic cookie), every transport.
    requests_binding,
    /// Binding requests in RFC 3489 form (no magic cookie).
    requests_rfc3489,
    /// Requests that arrived over TCP (subset of the two above).
    requests_tcp,
    /// Requests carrying CHANGE-REQUEST with at least one flag set.
    requests_change_request,
    /// Requests carrying RESPONSE-PORT.
    requests_response_port,
    /// Requests carrying PADDING.
    requests_padding,
    /// Success responses produced.
    responses_success,
    /// Error responses produced (400, 420).
    responses_error,
    /// Requests dropped by the per-source rate limiter.
    dropped_rate_limited,
    /// Datagrams or stream frames that are not valid STUN (bad header, framing, FINGERPRINT, truncated, too big).
    dropped_malformed,
    /// Valid STUN that is not a Binding request (indications, responses, other methods): ignored.
    dropped_not_request,
    /// Responses the kernel refused to send (I/O layer).
    send_errors,
}

/// One thread's published counters, readable from any thread.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct SharedCounters {
    values: [AtomicU64; Counters::NAMES.len()],
}

impl SharedCounters {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes a thread's totals. Only the owning thread calls this, so plain stores are enough.
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.values.iter().zip(c.values()) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The last published totals.
    pub fn load(&self) -> Counters {
        let mut v = [0u64; Counters::NAMES.len()];
        for (out, slot) in v.iter_mut().zip(&self.values) {
            *out = slot.load(Ordering::Relaxed);
        }
        Counters::from_values(v)
    }

    /// Sum over several threads' blocks.
    pub fn sum<'a>(blocks: impl IntoIterator<Item = &'a SharedCounters>) -> Counters {
        let mut total = Counters::default();
        for b in blocks {
            total.add(&b.load());
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_load_and_sum() {
        let a = SharedCounters::new();
        let b = SharedCounters::new();
        let c1 = Counters { requests_binding: 5, responses_success: 4, dropped_malformed: 1, ..Default::default() };
        let c2 = Counters { requests_binding: 2, requests_rfc3489: 7, send_errors: 3, ..Default::default() };
        a.publish(&c1);
        b.publish(&c2);
        assert_eq!(a.load(), c1);
        let s = SharedCounters::sum([&a, &b]);
        assert_eq!(s.requests_binding, 7);
        assert_eq!(s.requests_rfc3489, 7);
        assert_eq!(s.responses_success, 4);
        assert_eq!(s.send_errors, 3);
        assert_eq!(s.dropped_malformed, 1);
    }

    #[test]
    fn names_match_values() {
        let c = Counters { send_errors: 9, requests_binding: 1, ..Default::default() };
        let v = c.values();
        assert_eq!(Counters::NAMES.len(), v.len());
        assert_eq!(Counters::NAMES[0], "requests_binding");
        assert_eq!(v[0], 1);
        assert_eq!(*Counters::NAMES.last().unwrap(), "send_errors");
        assert_eq!(*v.last().unwrap(), 9);
    }
}

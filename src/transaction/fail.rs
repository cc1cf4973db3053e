//! Why a STUN client transaction failed (RFC 8489 §6.2.1 time-out, §6.3.3 and §6.3.4 responses, and the ICMP
//! hint RFC 8489 §6.2.1 allows a client to act on).

use crate::text::escape_controls;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The typed end of a failed transaction. `Display` gives one line for people, with the server's text
/// escaped ([`escape_controls`]); the fields keep it as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// Every request of the RFC 8489 §6.2.1 schedule went out and nothing answered: `sends` requests to `dst`,
    /// `waited` from the first send until giving up.
    NoAnswer { dst: SocketAddr, sends: u32, waited: Duration },
    /// The network said nothing listens on `dst` (ICMP port unreachable), after at least one send.
    Unreachable { dst: SocketAddr },
    /// An error response (RFC 8489 §6.3.4); `code` is None when it carried no ERROR-CODE.
    ErrorResponse { from: SocketAddr, code: Option<u16>, reason: String },
    /// A success response the owner could not use (a Binding answer without a mapped address, ...).
    UnusableAnswer { from: SocketAddr, problem: String },
    /// A success response with comprehension-required attributes we do not know (RFC 8489 §6.3.3: the
    /// transaction fails).
    UnknownComprehensionRequired { from: SocketAddr, attributes: Vec<u16> },
    /// The owner ended the transaction before it finished.
    Cancelled,
}

impl FailReason {
    /// True for silence: the whole schedule went unanswered.
    pub fn is_no_answer(&self) -> bool {
        matches!(self, FailReason::NoAnswer { .. })
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::NoAnswer { dst, sends, waited } => {
                write!(f, "no answer from {dst} after {sends} requests over {:.1} s", waited.as_secs_f64())
            }
            FailReason::Unreachable { dst } => write!(f, "nothing listens on {dst}: port unreachable (ICMP)"),
            FailReason::ErrorResponse { from, code: Some(code), reason } => {
                // The reason phrase is the server's free text: never let it drive the terminal.
                write!(f, "{from} answered with error {code} {}", escape_controls(reason))
            }
            FailReason::ErrorResponse { from, code: None, .. } => {
                write!(f, "{from} answered with an error response without ERROR-CODE")
            }
            FailReason::UnusableAnswer { from, problem } => {
                write!(f, "unusable answer from {from}: {}", escape_controls(problem))
            }
            FailReason::UnknownComprehensionRequired { from, attributes } => {
                write!(f, "{from} answered with unknown comprehension-required attributes")?;
                for (i, a) in attributes.iter().enumerate() {
                    write!(f, "{}{a:#06x}", if i == 0 { " " } else { ", " })?;
                }
                f.write_str(" (RFC 8489 §6.3.3)")
            }
            FailReason::Cancelled => f.write_str("cancelled"),
        }
    }
}

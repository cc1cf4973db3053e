//! NAT behaviour names (RFC 4787 terms, tested as in RFC 5780 §4.3–4.4) and the pure inference from test
//! outcomes to a behaviour. No I/O and no clock: the diagnosis engine feeds these functions what it saw.

use std::fmt;
use std::net::SocketAddr;

/// Mapping behaviour (RFC 4787 §4.1, tested per RFC 5780 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The same public endpoint for every destination ("cone").
    EndpointIndependent,
    /// One public endpoint per destination IP address.
    AddressDependent,
    /// One public endpoint per destination IP address and port ("symmetric").
    AddressAndPortDependent,
    /// Different destination addresses got different public endpoints, but no test could tell whether the
    /// port matters too (no two destinations shared an IP address).
    EndpointDependent,
    /// Not enough answers to tell.
    Unknown,
}

impl Mapping {
    /// Stable name used in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::AddressDependent => "address-dependent",
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
            Mapping::EndpointDependent => "endpoint-dependent",
            Mapping::Unknown => "unknown",
        }
    }

    /// True for the mappings that give each destination its own public endpoint.
    pub fn is_dependent(self) -> bool {
        matches!(self, Mapping::AddressDependent | Mapping::AddressAndPortDependent | Mapping::EndpointDependent)
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Filtering behaviour (RFC 4787 §5, tested per RFC 5780 §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Any source may send to the public endpoint once it exists.
    EndpointIndependent,
    /// Only IP addresses the inside host has sent to.
    AddressDependent,
    /// Only exact IP address and port pairs the inside host has sent to.
    AddressAndPortDependent,
    /// Not tested or no conclusive answer.
    Unknown,
}

impl Filtering {
    /// Stable name used in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
            Filtering::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the NAT picks public ports for new mappings from different local sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Public port equals the local port every time.
    Preserved,
    /// Public ports follow each other with a fixed step (`delta`, most common difference).
    Sequential {
        /// Most common difference between consecutive public ports.
        delta: i32,
    },
    /// No pattern: prediction is hopeless.
    Random,
    /// Too few samples.
    Unknown,
}

impl Allocation {
    /// Stable name used in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Preserved => "preserved",
            Allocation::Sequential { .. } => "sequential",
            Allocation::Random => "random",
            Allocation::Unknown => "unknown",
        }
    }
}

/// The plain-words answer to "will peer-to-peer work from here?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hole punching (or plain inbound) should work with most peers.
    Direct,
    /// Works only when the peer's NAT is a cone (endpoint-independent mapping).
    PeerMustBeCone,
    /// Expect traffic to go through a relay (TURN).
    Relay,
    /// The tests that decide it did not run or got no answer.
    Unknown,
}

impl Verdict {
    /// Stable text used both by the human output and the JSON `verdict` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Direct => "direct peer-to-peer likely",
            Verdict::PeerMustBeCone => "needs the peer to be cone",
            Verdict::Relay => "needs a relay",
            Verdict::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One mapping seen from one local socket: the destination asked and the public endpoint it reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Where the Binding request went.
    pub dest: SocketAddr,
    /// The public (reflexive) endpoint the answer reported.
    pub mapped: SocketAddr,
}

/// Infers the mapping behaviour from the mappings one local socket got towards several destinations.
///
/// This is RFC 5780 §4.3 generalised: test I vs II (different IP) decides endpoint-independence, test II vs III
/// (same IP, different port) decides address- vs address-and-port-dependence. The same comparison works for
/// several plain RFC 5389 servers.
pub fn infer_mapping(obs: &[Observation]) -> (Mapping, String) {
    if obs.len() < 2 {
        return (
            Mapping::Unknown,
            "only one destination answered; telling mappings apart needs answers from at least two".into(),
        );
    }
    let mut diff_ip = (0usize, 0usize); // (equal, different) among pairs with different destination IPs
    let mut same_ip = (0usize, 0usize); // pairs with the same IP and a different port
    for (i, a) in obs.iter().enumerate() {
        for b in &obs[i + 1..] {
            let counter = if a.dest.ip() != b.dest.ip() {
                &mut diff_ip
            } else if a.dest.port() != b.dest.port() {
                &mut same_ip
            } else {
                continue;
            };
            if a.mapped == b.mapped {
                counter.0 += 1;
            } else {
                counter.1 += 1;
            }
        }
    }
    let list = || obs.iter().map(|o| format!("{} saw {}", o.dest, o.mapped)).collect::<Vec<_>>().join(", ");
    let all_equal = obs.iter().all(|o| o.mapped == obs[0].mapped);
    if diff_ip.0 + diff_ip.1 > 0 {
        if all_equal {
            return (
                Mapping::EndpointIndependent,
                format!(
                    "the same public endpoint {} for destinations with different IP addresses (RFC 5780 §4.3)",
                    obs[0].mapped
                ),
            );
        }
        if diff_ip.0 > 0 {
            return (
                Mapping::Unknown,
                format!("inconsistent mappings (some destinations share one, others do not): {}", list()),
            );
        }
        return match same_ip {
            (0, 0) => (
                Mapping::EndpointDependent,
                format!(
                    "different public endpoints for different destination addresses ({}); no two destinations \
                     shared an IP address, so whether the port matters too could not be tested",
                    list()
                ),
            ),
            (_, 0) => (
                Mapping::AddressDependent,
                format!(
                    "a new public endpoint per destination IP address, reused across ports of one address \
                     (RFC 5780 §4.3): {}",
                    list()
                ),
            ),
            (0, _) => (
                Mapping::AddressAndPortDependent,
                format!("a new public endpoint per destination IP address and port (RFC 5780 §4.3): {}", list()),
            ),
            _ => (Mapping::Unknown, format!("inconsistent mappings across ports of one address: {}", list())),
        };
    }
    match same_ip {
        (_, 0) => (
            Mapping::Unknown,
            format!(
                "every answering destination has the same IP address ({}) and all saw {}: endpoint-independent \
                 or address-dependent, a second server address is needed to tell",
                obs[0].dest.ip(),
                obs[0].mapped
            ),
        ),
        (0, _) => (
            Mapping::AddressAndPortDependent,
            format!("a new public endpoint per destination port on the same address (RFC 5780 §4.3): {}", list()),
        ),
        _ => (Mapping::Unknown, format!("inconsistent mappings across ports of one address: {}", list())),
    }
}

/// What happened to one filtering test (RFC 5780 §4.4 test II or III).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterOutcome {
    /// The test could not be sent (the reason says why).
    NotRun(String),
    /// The response from the changed address arrived.
    Received,
    /// Every retransmission went unanswered.
    NotReceived,
    /// The server answered in a way that makes the test meaningless (error, unchanged source, ...).
    Failed(String),
}

/// Infers filtering from test II (CHANGE-REQUEST ip+port) and test III (port only).
///
/// `alternate_answers` says whether the server's alternate address answered direct requests: without that, a
/// missing response could be the server's fault and proves nothing about the NAT.
pub fn infer_filtering(test2: &FilterOutcome, test3: &FilterOutcome, alternate_answers: bool) -> (Filtering, String) {
    use FilterOutcome::*;
    let distrust = || {
        (
            Filtering::Unknown,
            "no response from a changed address, but the server's alternate address did not answer direct \
             requests either, so the missing responses prove nothing about the NAT"
                .to_string(),
        )
    };
    match (test2, test3) {
        (Received, _) => (
            Filtering::EndpointIndependent,
            "a response from an IP address and port never contacted came through (RFC 5780 §4.4 test II)".into(),
        ),
        (Failed(r), _) => (Filtering::Unknown, format!("test II failed: {r}")),
        (_, Failed(r)) => (Filtering::Unknown, format!("test III failed: {r}")),
        (NotReceived, Received) => (
            Filtering::AddressDependent,
            "responses from a new IP address were dropped, from a new port of a contacted address they came \
             through (RFC 5780 §4.4 tests II and III)"
                .into(),
        ),
        (NotReceived | NotRun(_), NotReceived) => {
            if alternate_answers {
                (
                    Filtering::AddressAndPortDependent,
                    "responses from a port never contacted were dropped (RFC 5780 §4.4 test III)".into(),
                )
            } else {
                distrust()
            }
        }
        (NotRun(r), Received) => (
            Filtering::Unknown,
            format!(
                "a response from a new port came through, so filtering is endpoint-independent or \
                 address-dependent; the address change could not be tested: {r}"
            ),
        ),
        (NotReceived, NotRun(r)) => {
            if alternate_answers {
                (
                    Filtering::Unknown,
                    format!(
                        "responses from a new address were dropped (address-dependent or address-and-port-dependent); \
                         the port-only change could not be tested: {r}"
                    ),
                )
            } else {
                distrust()
            }
        }
        (NotRun(r), NotRun(_)) => (Filtering::Unknown, r.clone()),
    }
}

/// Classifies port allocation from (local port, public port) samples taken in order from fresh sockets.
pub fn classify_allocation(samples: &[(u16, u16)]) -> (Allocation, String) {
    if samples.len() < 2 {
        return (
            Allocation::Unknown,
            format!("only {} socket(s) got an answer; at least two are needed", samples.len()),
        );
    }
    let pairs = samples.iter().map(|(l, p)| format!("{l}->{p}")).collect::<Vec<_>>().join(", ");
    if samples.iter().all(|(l, p)| l == p) {
        return (Allocation::Preserved, format!("every public port equals its local port ({pairs})"));
    }
    let deltas: Vec<i32> = samples.windows(2).map(|w| i32::from(w[1].1) - i32::from(w[0].1)).collect();
    // A sequential allocator moves by a small step in one direction; other hosts behind the same NAT may add
    // gaps, so accept any small step and report the most common one.
    const MAX_STEP: i32 = 64;
    let up = deltas.iter().all(|d| (1..=MAX_STEP).contains(d));
    let down = deltas.iter().all(|d| (-MAX_STEP..=-1).contains(d));
    if up || down {
        let mut best = (deltas[0], 0usize);
        for d in &deltas {
            let n = deltas.iter().filter(|x| *x == d).count();
            if n > best.1 || (n == best.1 && d.abs() < best.0.abs()) {
                best = (*d, n);
            }
        }
        return (
            Allocation::Sequential { delta: best.0 },
            format!("public ports advance by {} per new mapping ({pairs})", best.0),
        );
    }
    (Allocation::Random, format!("public ports follow no pattern ({pairs})"))
}

/// Compares the external address a router's port mapping service reports with the public address the STUN
/// servers saw. `Some(true)`: another NAT sits beyond the router (double NAT, often carrier-grade NAT).
pub fn double_nat(router_external: std::net::IpAddr, public: std::net::IpAddr) -> (Option<bool>, String) {
    use std::net::IpAddr;
    if router_external.is_unspecified() {
        return (None, "the router reports no external address (it has none yet, or hides it)".into());
    }
    if router_external == public {
        return (
            Some(false),
            format!("the router's external address {router_external} is the public address: one NAT"),
        );
    }
    let private = match router_external {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(_) => false,
    };
    let kind = if private { " (a private or carrier-grade NAT range, RFC 1918 / RFC 6598)" } else { "" };
    (
        Some(true),
        format!(
            "the router's external address is {router_external}{kind} but the servers see {public}: another NAT \
             sits beyond the router (double NAT)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(dest: &str, mapped: &str) -> Observation {
        Observation { dest: dest.parse().unwrap(), mapped: mapped.parse().unwrap() }
    }

    #[test]
    fn mapping_rfc5780_three_tests() {
        let eim =
            [o("1.1.1.1:3478", "9.9.9.9:1000"), o("2.2.2.2:3478", "9.9.9.9:1000"), o("2.2.2.2:3479", "9.9.9.9:1000")];
        assert_eq!(infer_mapping(&eim).0, Mapping::EndpointIndependent);
        let adm =
            [o("1.1.1.1:3478", "9.9.9.9:1000"), o("2.2.2.2:3478", "9.9.9.9:1001"), o("2.2.2.2:3479", "9.9.9.9:1001")];
        assert_eq!(infer_mapping(&adm).0, Mapping::AddressDependent);
        let apdm =
            [o("1.1.1.1:3478", "9.9.9.9:1000"), o("2.2.2.2:3478", "9.9.9.9:1001"), o("2.2.2.2:3479", "9.9.9.9:1002")];
        assert_eq!(infer_mapping(&apdm).0, Mapping::AddressAndPortDependent);
    }

    #[test]
    fn mapping_two_plain_servers() {
        let same = [o("1.1.1.1:3478", "9.9.9.9:1000"), o("2.2.2.2:19302", "9.9.9.9:1000")];
        assert_eq!(infer_mapping(&same).0, Mapping::EndpointIndependent);
        let diff = [o("1.1.1.1:3478", "9.9.9.9:1000"), o("2.2.2.2:19302", "9.9.9.9:1001")];
        assert_eq!(infer_mapping(&diff).0, Mapping::EndpointDependent);
        // Same IP, two ports: a different mapping proves port dependence; the same mapping proves little.
        let ports = [o("1.1.1.1:3478", "9.9.9.9:1000"), o("1.1.1.1:3479", "9.9.9.9:1001")];
        assert_eq!(infer_mapping(&ports).0, Mapping::AddressAndPortDependent);
        let ports_same = [o("1.1.1.1:3478", "9.9.9.9:1000"), o("1.1.1.1:3479", "9.9.9.9:1000")];
        assert_eq!(infer_mapping(&ports_same).0, Mapping::Unknown);
        assert_eq!(infer_mapping(&same[..1]).0, Mapping::Unknown);
    }

    #[test]
    fn mapping_inconsistent_is_unknown() {
        let weird =
            [o("1.1.1.1:3478", "9.9.9.9:1000"), o("2.2.2.2:3478", "9.9.9.9:1000"), o("2.2.2.2:3479", "9.9.9.9:1002")];
        assert_eq!(infer_mapping(&weird).0, Mapping::Unknown);
    }

    #[test]
    fn filtering_table() {
        use FilterOutcome::*;
        assert_eq!(infer_filtering(&Received, &Received, true).0, Filtering::EndpointIndependent);
        assert_eq!(infer_filtering(&NotReceived, &Received, true).0, Filtering::AddressDependent);
        assert_eq!(infer_filtering(&NotReceived, &NotReceived, true).0, Filtering::AddressAndPortDependent);
        assert_eq!(infer_filtering(&NotReceived, &NotReceived, false).0, Filtering::Unknown);
        assert_eq!(infer_filtering(&NotRun("x".into()), &NotReceived, true).0, Filtering::AddressAndPortDependent);
        assert_eq!(infer_filtering(&NotRun("x".into()), &Received, true).0, Filtering::Unknown);
        assert_eq!(infer_filtering(&Failed("e".into()), &Received, true).0, Filtering::Unknown);
    }

    #[test]
    fn double_nat_detection() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(double_nat(ip("203.0.113.1"), ip("203.0.113.1")).0, Some(false));
        assert_eq!(double_nat(ip("100.64.0.5"), ip("203.0.113.1")).0, Some(true));
        assert_eq!(double_nat(ip("0.0.0.0"), ip("203.0.113.1")).0, None);
    }

    #[test]
    fn allocation_classes() {
        assert_eq!(classify_allocation(&[(5000, 5000), (6000, 6000)]).0, Allocation::Preserved);
        assert_eq!(
            classify_allocation(&[(5000, 1000), (6000, 1001), (7000, 1002), (8000, 1004)]).0,
            Allocation::Sequential { delta: 1 }
        );
        assert_eq!(
            classify_allocation(&[(5000, 1000), (6000, 998), (7000, 996)]).0,
            Allocation::Sequential { delta: -2 }
        );
        assert_eq!(classify_allocation(&[(5000, 1000), (6000, 31000), (7000, 2500)]).0, Allocation::Random);
        assert_eq!(classify_allocation(&[(5000, 1000)]).0, Allocation::Unknown);
    }
}

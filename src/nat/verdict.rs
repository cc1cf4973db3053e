//! The plain-words verdict (what a peer behind this NAT can expect from hole punching) and the classic NAT
//! name, as pure functions of the measured behaviours (RFC 4787 terms; RFC 5780 §4 tests).

use super::behaviour::{Allocation, Filtering, Mapping, Verdict};
use super::report::NatKind;

/// The classic (RFC 3489-style) name of what was measured.
pub fn nat_kind(nat: bool, mapping: Mapping, filtering: Filtering) -> NatKind {
    match (nat, mapping, filtering) {
        (false, _, Filtering::EndpointIndependent) => NatKind::OpenInternet,
        (false, _, Filtering::Unknown) => NatKind::NoNat,
        (false, _, _) => NatKind::FirewallWithoutNat,
        (true, Mapping::EndpointIndependent, Filtering::EndpointIndependent) => NatKind::FullCone,
        (true, Mapping::EndpointIndependent, Filtering::AddressDependent) => NatKind::RestrictedCone,
        (true, Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => NatKind::PortRestrictedCone,
        (true, Mapping::EndpointIndependent, Filtering::Unknown) => NatKind::Cone,
        (true, m, _) if m.is_dependent() => NatKind::Symmetric,
        _ => NatKind::Unknown,
    }
}

/// The plain-words verdict and why.
pub fn verdict(nat: bool, mapping: Mapping, filtering: Filtering, allocation: Allocation) -> (Verdict, String) {
    if !nat {
        return (
            Verdict::Direct,
            match filtering {
                Filtering::EndpointIndependent => {
                    "no NAT and nothing filters inbound UDP: peers can reach your address directly".into()
                }
                Filtering::Unknown => "no NAT: your address is public (inbound filtering was not tested)".into(),
                _ => "no NAT, but a stateful firewall: it lets a peer in once you have sent to it, which is what \
                      hole punching does"
                    .into(),
            },
        );
    }
    match mapping {
        Mapping::EndpointIndependent => (
            Verdict::Direct,
            match filtering {
                Filtering::EndpointIndependent => {
                    "full cone: one public endpoint for every peer and no filtering; anyone who learns it can \
                     reach you"
                        .into()
                }
                Filtering::AddressDependent => "restricted cone: one public endpoint for every peer; hole \
                                                punching works even with a peer behind a symmetric NAT"
                    .into(),
                Filtering::AddressAndPortDependent => "port-restricted cone: one public endpoint for every peer; \
                    hole punching works with any peer whose NAT is a cone, a peer behind a symmetric NAT with \
                    random ports would need a relay"
                    .into(),
                Filtering::Unknown => "endpoint-independent mapping: one public endpoint for every peer, so hole \
                                       punching works (filtering was not tested)"
                    .into(),
            },
        ),
        m if m.is_dependent() => {
            let predictable = match allocation {
                Allocation::Preserved => Some("ports are preserved".to_string()),
                Allocation::Sequential { delta } => Some(format!("ports are allocated sequentially (delta {delta})")),
                _ => None,
            };
            match (predictable, filtering) {
                (Some(p), _) => (
                    Verdict::PeerMustBeCone,
                    format!(
                        "symmetric NAT ({m} mapping): a peer learns a public endpoint your NAT will not use for \
                         it, so the peer must be behind a cone NAT; {p}, so port prediction may also work"
                    ),
                ),
                (None, Filtering::AddressAndPortDependent) => (
                    Verdict::Relay,
                    format!(
                        "symmetric NAT ({m} mapping) with unpredictable ports and address-and-port-dependent \
                         filtering: only a peer with no port filtering (full cone or restricted cone) could reach \
                         you directly; most pairs will need a relay"
                    ),
                ),
                (None, _) => (
                    Verdict::PeerMustBeCone,
                    format!(
                        "symmetric NAT ({m} mapping) with unpredictable ports: a direct path needs a peer behind \
                         a cone NAT"
                    ),
                ),
            }
        }
        _ => (Verdict::Unknown, "the mapping behaviour could not be determined, and the verdict depends on it".into()),
    }
}

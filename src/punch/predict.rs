//! Predict how a direct path will open, from both peers' NAT behaviour (RFC 4787 terms, as the diagnosis of
//! RFC 5780 §4.3–4.4 reports them) before any probe is sent; the reasoning is RFC 5128 §3.3–3.5 and §4.1
//! (docs/punchd.md, "Prediction").
//!
//! - A peer whose NAT maps endpoint-independently (or that has no NAT, or a router port mapping) keeps one
//!   public endpoint for every destination: the one the rendezvous saw. Two such peers punch directly by
//!   simultaneous open, whatever their filtering.
//! - A peer with a dependent mapping gets a new public port towards the other peer. The other peer learns it
//!   from the first check that reaches it (a peer-reflexive candidate) if its filter lets that check in:
//!   endpoint-independent filtering always does, address-dependent filtering does once it sent to the
//!   peer's IP address (it does: to the reflexive candidate). Only address-and-port-dependent filtering needs
//!   the new port in advance: predicted from a sequential allocation, or met by birthday probing when the
//!   allocation is random.
//! - Two dependent mappings: an address-dependent one is still stable towards the peer's address, which opens
//!   a path in some combinations (see [`both_dependent`]); two address-and-port-dependent ones ("symmetric")
//!   move their ports with every new destination, and a relay is needed.

use crate::nat::{Allocation, Filtering, Mapping};
use crate::signal::NatProfile;
use std::fmt;
use std::time::Duration;

/// The expected outcome of punching towards a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// Both mappings are stable (or one side's filter lets the other in): direct by simultaneous open.
    Direct,
    /// One side allocates ports sequentially: direct through the predicted ports.
    DirectViaPrediction,
    /// One side allocates randomly against an endpoint-independent side that filters by address and port:
    /// direct through birthday probing, in about `expected`.
    DirectViaBirthday { expected: Duration },
    /// Both mappings depend on the destination: a relay is needed.
    NeedsRelay,
    /// Not enough is known about one side's NAT: try everything.
    Unknown,
}

impl Prediction {
    /// Stable name for the status JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Prediction::Direct => "direct",
            Prediction::DirectViaPrediction => "direct-via-prediction",
            Prediction::DirectViaBirthday { .. } => "direct-via-birthday",
            Prediction::NeedsRelay => "needs-relay",
            Prediction::Unknown => "unknown",
        }
    }

    /// True when the prediction expects a direct path.
    pub fn expects_direct(&self) -> bool {
        matches!(self, Prediction::Direct | Prediction::DirectViaPrediction | Prediction::DirectViaBirthday { .. })
    }

    /// Whether an outcome (`direct`: a path opened) bears the prediction out. `Unknown` is never wrong.
    pub fn holds(&self, direct: bool) -> bool {
        match self {
            Prediction::Unknown => true,
            Prediction::NeedsRelay => !direct,
            _ => direct,
        }
    }
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prediction::Direct => f.write_str("direct expected"),
            Prediction::DirectViaPrediction => f.write_str("direct via predicted ports expected"),
            Prediction::DirectViaBirthday { expected } => {
                write!(f, "direct via birthday probing, ~{:.1} s", expected.as_secs_f64())
            }
            Prediction::NeedsRelay => f.write_str("needs relay"),
            Prediction::Unknown => f.write_str("unknown: trying every candidate"),
        }
    }
}

/// Bounds of birthday probing (docs/punchd.md, "Symmetric NATs").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BirthdayParams {
    /// Extra sockets the random-mapping side opens, one probe from each (at most [`Self::MAX_SOCKETS`]).
    pub sockets: u16,
    /// Probes the endpoint-independent side sends to random ports, at most (at most [`Self::MAX_PROBES`]).
    pub probes: u32,
    /// Probes per second on either side (at most [`Self::MAX_RATE`]).
    pub rate: u32,
}

impl BirthdayParams {
    pub const MAX_SOCKETS: u16 = 256;
    pub const MAX_PROBES: u32 = 4096;
    pub const MAX_RATE: u32 = 1000;
    /// The port space a random allocation draws from, as the success formula counts it (real NATs use
    /// 1024–65535 or less, which only raises the odds).
    pub const PORT_SPACE: f64 = 65536.0;

    /// 256 sockets, 2048 probes at 200 per second (~10 s at most).
    pub const DEFAULT: BirthdayParams = BirthdayParams { sockets: 256, probes: 2048, rate: 200 };

    /// These parameters within the hard caps.
    pub fn bounded(self) -> BirthdayParams {
        BirthdayParams {
            sockets: self.sockets.clamp(1, Self::MAX_SOCKETS),
            probes: self.probes.clamp(1, Self::MAX_PROBES),
            rate: self.rate.clamp(1, Self::MAX_RATE),
        }
    }

    /// Probability that at least one of `n` probes to random ports hits one of the open mappings:
    /// 1 − (1 − sockets/65536)^n.
    pub fn success_probability(&self, n: u32) -> f64 {
        let p = f64::from(self.bounded().sockets) / Self::PORT_SPACE;
        1.0 - (1.0 - p).powf(f64::from(n))
    }

    /// Longest time the probing may take: every probe sent at `rate`.
    pub fn max_duration(&self) -> Duration {
        let b = self.bounded();
        Duration::from_secs_f64(f64::from(b.probes) / f64::from(b.rate))
    }

    /// Expected time to the first hit, counting that the hard side's mappings open at `rate` too (both sides
    /// start at the same instant), so early probes have fewer targets. Conditional on success within the
    /// probe cap. A bounded sum over the probes.
    pub fn expected_time(&self) -> Duration {
        let b = self.bounded();
        let dt = 1.0 / f64::from(b.rate);
        let (mut survive, mut expect, mut hit) = (1.0f64, 0.0f64, 0.0f64);
        for j in 1..=b.probes {
            let open = f64::from(j).min(f64::from(b.sockets));
            let p = open / Self::PORT_SPACE;
            let now_hit = survive * p;
            expect += now_hit * f64::from(j) * dt;
            hit += now_hit;
            survive *= 1.0 - p;
        }
        if hit <= 0.0 {
            return b.max_duration();
        }
        Duration::from_secs_f64(expect / hit)
    }
}

impl Default for BirthdayParams {
    fn default() -> Self {
        BirthdayParams::DEFAULT
    }
}

/// The side a peer plays in birthday probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BirthdayRole {
    /// Random dependent mapping: opens extra sockets and sends one probe from each to the peer's endpoint.
    Hard,
    /// Endpoint-independent mapping: probes random ports of the peer's public address.
    Easy,
}

/// A stable public endpoint for every destination: endpoint-independent mapping or no NAT at all.
fn stable(p: &NatProfile) -> bool {
    p.no_nat || p.mapping == Mapping::EndpointIndependent
}

fn known(p: &NatProfile) -> bool {
    p.no_nat || p.mapping != Mapping::Unknown
}

/// Predict the outcome of punching between a peer with NAT `local` and one with NAT `remote` (symmetric:
/// both peers predict the same).
pub fn predict(local: &NatProfile, remote: &NatProfile) -> Prediction {
    predict_with(local, remote, &BirthdayParams::DEFAULT)
}

/// [`predict`] with the birthday bounds in use (they set the expected time).
pub fn predict_with(local: &NatProfile, remote: &NatProfile, birthday: &BirthdayParams) -> Prediction {
    // A router port mapping takes anyone's datagrams: the other side's checks reach it whatever its own NAT
    // does, and the answers leave through the same mapping (RFC 6886 §3.3, RFC 6887 §11).
    if local.port_mapping || remote.port_mapping {
        return Prediction::Direct;
    }
    if !known(local) || !known(remote) {
        return Prediction::Unknown;
    }
    match (stable(local), stable(remote)) {
        (true, true) => Prediction::Direct,
        (false, false) => both_dependent(local, remote),
        (true, false) => stable_vs_dependent(local, remote, birthday),
        (false, true) => stable_vs_dependent(remote, local, birthday),
    }
}

/// `easy` keeps one endpoint, `hard` gets a new port towards it (see the module docs).
fn stable_vs_dependent(easy: &NatProfile, hard: &NatProfile, birthday: &BirthdayParams) -> Prediction {
    // No NAT on the easy side means at most a firewall: its filtering is what the profile says (a public
    // host without a firewall reports endpoint-independent filtering).
    match easy.filtering {
        Filtering::EndpointIndependent | Filtering::AddressDependent => Prediction::Direct,
        Filtering::AddressAndPortDependent => match hard.allocation {
            Allocation::Preserved | Allocation::Sequential { .. } => Prediction::DirectViaPrediction,
            Allocation::Random => Prediction::DirectViaBirthday { expected: birthday.expected_time() },
            Allocation::Unknown => Prediction::Unknown,
        },
        Filtering::Unknown => Prediction::Unknown,
    }
}

fn predictable(a: Allocation) -> Option<bool> {
    match a {
        Allocation::Preserved | Allocation::Sequential { .. } => Some(true),
        Allocation::Random => Some(false),
        Allocation::Unknown => None,
    }
}

/// Neither side keeps one endpoint. An address-dependent mapping (RFC 4787 §4.1) still gives one port for
/// every port of the peer's address, so towards the peer it is stable once the first check left; with one
/// such side (the anchor) the path opens in one of three ways:
/// - both allocations are predictable: each side checks the other's predicted ports;
/// - one side filters endpoint-independently: the other's check to its reflexive endpoint (the mapping the
///   rendezvous saw, still open) gets in and teaches it the sender's port, and the answers it triggers get
///   back unless the sender filters by address and port;
/// - one side's allocation is predictable and it does not filter by port: the random side's checks to its
///   predicted ports get in, whatever port they come from.
///
/// Two address-and-port-dependent mappings ("symmetric" NATs) move their ports with every new destination
/// port, so what each side learns is stale when it answers: relay (RFC 5128 §3.5).
fn both_dependent(a: &NatProfile, b: &NatProfile) -> Prediction {
    let anchor = a.mapping == Mapping::AddressDependent || b.mapping == Mapping::AddressDependent;
    if !anchor {
        let unsure = a.mapping == Mapping::EndpointDependent || b.mapping == Mapping::EndpointDependent;
        return if unsure { Prediction::Unknown } else { Prediction::NeedsRelay };
    }
    let (Some(pa), Some(pb)) = (predictable(a.allocation), predictable(b.allocation)) else {
        return Prediction::Unknown;
    };
    if pa && pb {
        return Prediction::DirectViaPrediction;
    }
    if a.filtering == Filtering::Unknown || b.filtering == Filtering::Unknown {
        return Prediction::Unknown;
    }
    let port_filter = |p: &NatProfile| p.filtering == Filtering::AddressAndPortDependent;
    let open = |p: &NatProfile| p.filtering == Filtering::EndpointIndependent;
    if (open(a) && !port_filter(b)) || (open(b) && !port_filter(a)) {
        return Prediction::Direct;
    }
    if (pa && !port_filter(a)) || (pb && !port_filter(b)) {
        return Prediction::DirectViaPrediction;
    }
    Prediction::NeedsRelay
}

/// The role `local` plays in birthday probing against `remote`, when the prediction calls for it.
pub fn birthday_role(local: &NatProfile, remote: &NatProfile) -> Option<BirthdayRole> {
    if !matches!(predict(local, remote), Prediction::DirectViaBirthday { .. }) {
        return None;
    }
    Some(if stable(local) { BirthdayRole::Easy } else { BirthdayRole::Hard })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Allocation::*;

    /// A profile from RFC 4787 abbreviations: EIM/ADM/APDM, EIF/ADF/APDF.
    fn nat(mapping: &str, filtering: &str, allocation: Allocation) -> NatProfile {
        let mapping = match mapping {
            "EIM" => Mapping::EndpointIndependent,
            "ADM" => Mapping::AddressDependent,
            "APDM" => Mapping::AddressAndPortDependent,
            _ => Mapping::Unknown,
        };
        let filtering = match filtering {
            "EIF" => Filtering::EndpointIndependent,
            "ADF" => Filtering::AddressDependent,
            "APDF" => Filtering::AddressAndPortDependent,
            _ => Filtering::Unknown,
        };
        NatProfile { mapping, filtering, allocation, ..NatProfile::UNKNOWN }
    }

    #[test]
    fn prediction_table() {
        let seq = Sequential { delta: 1 };
        let bday = Prediction::DirectViaBirthday { expected: BirthdayParams::DEFAULT.expected_time() };
        let public = NatProfile { no_nat: true, filtering: Filtering::EndpointIndependent, ..NatProfile::UNKNOWN };
        let mapped = NatProfile { port_mapping: true, ..nat("APDM", "APDF", Random) };
        #[rustfmt::skip]
        let table: &[(NatProfile, NatProfile, Prediction)] = &[
            // Both endpoint-independent: any filtering opens by simultaneous open (RFC 5128 §3.3).
            (nat("EIM", "EIF", Preserved), nat("EIM", "EIF", Preserved), Prediction::Direct),
            (nat("EIM", "APDF", Random), nat("EIM", "APDF", Random), Prediction::Direct),
            (nat("EIM", "ADF", seq), nat("EIM", "APDF", Preserved), Prediction::Direct),
            // Dependent against a filter that lets the new port in: learnt as peer-reflexive.
            (nat("EIM", "EIF", Preserved), nat("APDM", "APDF", Random), Prediction::Direct),
            (nat("EIM", "ADF", Preserved), nat("ADM", "ADF", Random), Prediction::Direct),
            // Dependent against address-and-port-dependent filtering: predicted ports or birthday.
            (nat("EIM", "APDF", Preserved), nat("APDM", "APDF", seq), Prediction::DirectViaPrediction),
            (nat("ADM", "ADF", Preserved), nat("EIM", "APDF", Random), Prediction::DirectViaPrediction),
            (nat("EIM", "APDF", Preserved), nat("APDM", "APDF", Random), bday),
            (nat("APDM", "APDF", Random), nat("EIM", "APDF", Preserved), bday),
            (nat("EIM", "APDF", Preserved), nat("APDM", "APDF", Unknown), Prediction::Unknown),
            // Both address-and-port-dependent ("symmetric"): relay (RFC 5128 §3.5).
            (nat("APDM", "APDF", Random), nat("APDM", "APDF", Random), Prediction::NeedsRelay),
            (nat("APDM", "EIF", seq), nat("APDM", "EIF", Preserved), Prediction::NeedsRelay),
            (nat("APDM", "EIF", Random), nat("APDM", "ADF", Random), Prediction::NeedsRelay),
            // An address-dependent anchor: predicted ports, a peer-reflexive port, or relay.
            (nat("ADM", "APDF", seq), nat("APDM", "APDF", Preserved), Prediction::DirectViaPrediction),
            (nat("ADM", "EIF", Random), nat("APDM", "ADF", Random), Prediction::Direct),
            (nat("ADM", "EIF", Random), nat("APDM", "APDF", Random), Prediction::NeedsRelay),
            (nat("ADM", "ADF", seq), nat("APDM", "APDF", Random), Prediction::DirectViaPrediction),
            (nat("ADM", "APDF", seq), nat("APDM", "APDF", Random), Prediction::NeedsRelay),
            (nat("ADM", "ADF", Random), nat("ADM", "ADF", Random), Prediction::NeedsRelay),
            // No NAT, or a port mapping, is a stable endpoint.
            (public, nat("APDM", "APDF", Random), Prediction::Direct),
            (mapped, nat("APDM", "APDF", Random), Prediction::Direct),
            // Nothing known: try.
            (NatProfile::UNKNOWN, nat("EIM", "EIF", Preserved), Prediction::Unknown),
        ];
        for (i, (a, b, want)) in table.iter().enumerate() {
            assert_eq!(predict(a, b), *want, "row {i}: {a:?} vs {b:?}");
            assert_eq!(predict(b, a), *want, "row {i} mirrored");
        }
    }

    #[test]
    fn birthday_roles() {
        let easy = nat("EIM", "APDF", Preserved);
        let hard = nat("APDM", "APDF", Random);
        assert_eq!(birthday_role(&easy, &hard), Some(BirthdayRole::Easy));
        assert_eq!(birthday_role(&hard, &easy), Some(BirthdayRole::Hard));
        assert_eq!(birthday_role(&easy, &easy), None);
    }

    #[test]
    fn birthday_odds_and_time() {
        let b = BirthdayParams::DEFAULT;
        // 1 - (1 - 256/65536)^1024 = 1 - e^(1024 * ln(1 - 1/256)) ≈ 0.982.
        assert!((b.success_probability(1024) - 0.982).abs() < 0.001, "{}", b.success_probability(1024));
        assert!(b.success_probability(2048) > 0.999);
        assert_eq!(b.max_duration(), Duration::from_millis(10240));
        let t = b.expected_time().as_secs_f64();
        // 256 probes on average once all 256 mappings are open, plus the ramp: about 2 s at 200/s.
        assert!((1.5..3.0).contains(&t), "{t}");
        let capped = BirthdayParams { sockets: 60000, probes: 1 << 20, rate: 1 << 20 }.bounded();
        assert_eq!(capped, BirthdayParams { sockets: 256, probes: 4096, rate: 1000 });
    }
}
